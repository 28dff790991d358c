//! Store append throughput per backend: one event per transaction versus
//! group-committed batches, with events interleaved across 1,000 users.
//!
//! Event ids are time-ordered, as the client SDK's UUIDv7 ids are; `batch_500_random_ids`
//! repeats the largest batch with random (UUIDv4-like) ids, which land anywhere in the
//! idempotency index.
//!
//! SQLite always; PostgreSQL when `FERRY_TEST_POSTGRES_URL` is set (a fresh
//! database is created and dropped).
//!
//! `cargo bench --bench store`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ferry::store::{DeviceCert, DeviceId, NewEvent, Store, StoreOptions, UserId};

const USERS: usize = 1000;

fn user(i: usize) -> UserId {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(i as u64).to_be_bytes());
    UserId(k)
}

struct Events {
    next: AtomicU64,
}

impl Events {
    fn batch(&self, n: usize, random_ids: bool) -> Vec<NewEvent> {
        (0..n)
            .map(|_| {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                NewEvent {
                    user: user((i as usize * 7919) % USERS),
                    id: if random_ids {
                        uuid::Uuid::new_v4()
                    } else {
                        uuid::Uuid::from_u128(u128::from(i) + 1)
                    },
                    device: DeviceId([1; 32]),
                    payload: vec![0xab; 256],
                    key: None,
                    base: None,
                    ttl: None,
                    ts: 1_767_225_600_000,
                }
            })
            .collect()
    }
}

async fn prepare(store: &Arc<dyn Store>) {
    let cert = DeviceCert {
        issued_at: 0,
        expires_at: 0,
        sig: [0; 64],
    };
    for i in 0..USERS {
        store
            .register_device(&user(i), &DeviceId([1; 32]), &cert, 0)
            .await
            .unwrap();
    }
}

fn bench_backend(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, url: &str) {
    let store = rt.block_on(async {
        let s = ferry::store::connect(url, &StoreOptions::default())
            .await
            .unwrap();
        prepare(&s).await;
        s
    });
    let events = Events {
        next: AtomicU64::new(0),
    };
    let mut g = c.benchmark_group(format!("append/{name}"));
    g.measurement_time(Duration::from_secs(8)).sample_size(20);
    for (batch, random_ids) in [(1usize, false), (100, false), (500, false), (500, true)] {
        let name = if random_ids {
            format!("batch_{batch}_random_ids")
        } else {
            format!("batch_{batch}")
        };
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(name, |b| {
            b.to_async(rt).iter_batched(
                || events.batch(batch, random_ids),
                |evs| {
                    let store = store.clone();
                    async move {
                        store.append(&evs).await.unwrap();
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn store_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/bench.db", dir.path().display());
    bench_backend(c, &rt, "sqlite", &sqlite);
    if let Ok(admin) = std::env::var("FERRY_TEST_POSTGRES_URL") {
        let name = format!("ferry_bench_{}", std::process::id());
        let url = rt.block_on(async {
            use sqlx::Executor as _;
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                .await
                .unwrap();
            conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .await
                .unwrap();
            let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
            format!("{base}/{name}")
        });
        bench_backend(c, &rt, "postgres", &url);
        rt.block_on(async {
            use sqlx::Executor as _;
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                .await
                .unwrap();
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE {name} WITH (FORCE)"
                )))
                .await;
        });
    }
}

criterion_group!(benches, store_benches);
criterion_main!(benches);
