//! REST API throughput, in process:
//! - `token/verify`: access-token verification alone (header checks, EdDSA
//!   signature, claims) — what every authenticated request pays before the store;
//! - `token/authenticate`: the same plus the per-request revocation lookup (jti
//!   denylist and device status) on SQLite;
//! - `publish/sequential`: `POST /v1/events` through the whole router
//!   (`tower::ServiceExt::oneshot`: middleware, auth, JSON, group commit on SQLite),
//!   one request at a time;
//! - `publish/concurrent_64`: 64 requests in flight, so the group-commit writer
//!   batches them.
//!
//! `cargo bench --bench rest`

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry::config::Config;
use ferry::keys::ServerKey;
use ferry::store::{DeviceCert, DeviceId, StoreOptions, UserId};
use tower::ServiceExt as _;

const USER: UserId = UserId([1; 32]);
const DEVICE: DeviceId = DeviceId([2; 32]);

fn config(dir: &tempfile::TempDir) -> Config {
    let env: HashMap<String, String> = [
        ("FERRY_DATA_DIR", dir.path().display().to_string()),
        ("FERRY_LIMITS_EVENTS_PER_SEC", "1000000".into()),
        ("FERRY_LIMITS_BURST", "10000000".into()),
        (
            "FERRY_LIMITS_REST_REQUESTS_PER_IP_PER_SEC",
            "1000000".into(),
        ),
        (
            "FERRY_LIMITS_REST_REQUESTS_PER_TOKEN_PER_SEC",
            "1000000".into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Config::load(None, &env).expect("bench config")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir);
    let (app, router, token) = rt.block_on(async {
        let store = ferry::store::connect(&cfg.database.url, &StoreOptions::default())
            .await
            .unwrap();
        let cert = DeviceCert {
            issued_at: 0,
            expires_at: 0,
            sig: [0; 64],
        };
        store
            .register_device(&USER, &DEVICE, &cert, 0)
            .await
            .unwrap();
        let (app, _writer) =
            ferry::server::build_app(cfg.clone(), ServerKey::from_seed([7; 32]), store);
        let pair = app
            .auth
            .issue_pair(&USER, &DEVICE, ferry::clock::unix_ms())
            .await
            .unwrap();
        let router = ferry::api::router(app.clone());
        (app, router, pair.access_token)
    });

    let mut g = c.benchmark_group("token");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify", |b| {
        b.iter(|| {
            app.auth
                .verify_token(&token, ferry::clock::unix_ms())
                .expect("valid token")
        })
    });
    g.bench_function("authenticate", |b| {
        b.to_async(&rt).iter(|| async {
            app.auth
                .authenticate(&token, ferry::clock::unix_ms())
                .await
                .expect("valid token")
        })
    });
    g.finish();

    let next = AtomicU64::new(1);
    let request = || {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let id = ferry_proto::message::format_uuid(&u128::from(n).to_be_bytes());
        let body = format!(r#"{{"id":"{id}","payload":"{}"}}"#, "A".repeat(342));
        Request::post("/v1/events")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let mut g = c.benchmark_group("publish");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sequential", |b| {
        b.to_async(&rt).iter(|| async {
            let resp = router.clone().oneshot(request()).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("concurrent_64", |b| {
        b.to_async(&rt).iter(|| async {
            let all = (0..64).map(|_| {
                let r = router.clone();
                let req = request();
                tokio::spawn(async move { r.oneshot(req).await.unwrap().status() })
            });
            for h in futures_util::future::join_all(all).await {
                assert_eq!(h.unwrap(), StatusCode::OK);
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
