//! The circuit breaker around the database, on a real server and a real PostgreSQL
//! database that is stopped under it (it refuses new connections and its open ones
//! are terminated) and started again.
//!
//! While it is down, REST requests and WebSocket publishes are answered (quickly:
//! they never wait on a dead pool) with `unavailable`, and once the breaker is open
//! with `retry_after_ms` (REST: `Retry-After` and `details.retry_after_ms`);
//! readiness is 503 naming `database`; `/metrics` shows the breaker open. Once the
//! database accepts connections again, the breaker closes by itself: readiness is
//! 200, publishing works, and every acked event is in `sync`.
//!
//! PostgreSQL only (SQLite has no server to stop): skipped without
//! `FERRY_TEST_POSTGRES_URL`, failing under `CI` without it.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use ferry_proto::message::{ErrorCode, ServerMessage};
use reqwest::Method;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use common::client::{TestClient, TestUser, connect, new_event_id, publish_json};
use common::http::{Api, Resp, login};
use common::server::TestServer;

/// How long any one answer may take while the database is down: generous, since
/// only that an answer comes at all is asserted, never how fast.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// How long the breaker may take to open, or the server to recover.
const DEADLINE: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test when it takes longer than [`ANSWER_WITHIN`].
async fn answered<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(ANSWER_WITHIN, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {ANSWER_WITHIN:?}"))
}

/// An admin connection to the server's maintenance database (`postgres`, from
/// `FERRY_TEST_POSTGRES_URL`), where the test database can be stopped from.
async fn admin_connection() -> PgConnection {
    let url = std::env::var(common::db::POSTGRES_URL_VAR).expect("set when postgres() gave a db");
    PgConnection::connect(&url).await.unwrap()
}

/// Stops the database for the server: no new connections, and the open ones
/// terminated.
async fn stop_database(name: &str) {
    let mut admin = admin_connection().await;
    admin
        .execute(AssertSqlSafe(format!(
            r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS false"#
        )))
        .await
        .unwrap();
    let terminated: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!terminated.is_empty(), "the server held no connection");
    admin.close().await.unwrap();
}

/// Lets the server connect to its database again.
async fn start_database(name: &str) {
    let mut admin = admin_connection().await;
    admin
        .execute(AssertSqlSafe(format!(
            r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS true"#
        )))
        .await
        .unwrap();
    admin.close().await.unwrap();
}

/// A publish of `id` and its reply.
async fn publish(c: &mut TestClient, id: &str, payload: &[u8]) -> ServerMessage {
    answered("publish", c.request(&publish_json(id, payload))).await
}

/// The seq of an `ack`, or a panic naming what came instead.
#[track_caller]
fn acked(reply: &ServerMessage) -> u64 {
    match reply {
        ServerMessage::Ack { seq: Some(seq), .. } => *seq,
        other => panic!("expected an ack, got {other:?}"),
    }
}

async fn ready(api: &Api) -> Resp {
    answered(
        "readiness",
        api.send_to(&api.admin, Method::GET, "/health/ready", &[], None),
    )
    .await
}

async fn metrics(api: &Api) -> String {
    answered(
        "metrics",
        api.send_to(&api.admin, Method::GET, "/metrics", &[], None),
    )
    .await
    .text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_fails_fast_with_retry_after_and_recovers_by_itself() {
    let Some(db) = common::db::postgres().await else {
        return;
    };
    let name = db.name().to_owned();
    let srv = TestServer::start(db.url(), &[("FERRY_DATABASE_CONNECT_TIMEOUT", "2s")]).await;
    let api = Api::new(&srv);
    let creds = TestUser::random().device();
    let tokens = login(&api, &creds).await;
    let mut c = connect(&srv.ws_url(), creds).await;
    let mut ids = vec![new_event_id()];
    assert_eq!(acked(&publish(&mut c, &ids[0], b"before").await), 1);
    let body = ready(&api).await;
    assert_eq!(
        body.ok()["checks"]["database_breaker"],
        "closed",
        "{}",
        body.text
    );

    stop_database(&name).await;

    // REST: `unavailable` at once for each request; after a few the breaker opens
    // and the answers say when to come back.
    let started = Instant::now();
    let wait_ms = loop {
        let r = answered(
            "GET /v1/devices",
            api.get("/v1/devices", Some(&tokens.access)),
        )
        .await;
        r.error(503, "unavailable");
        assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
        if let Some(ms) = r.json["error"]["details"]["retry_after_ms"].as_u64() {
            assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
            break ms;
        }
        assert!(started.elapsed() < DEADLINE, "the breaker never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!((1..=1000).contains(&wait_ms), "{wait_ms}");

    // WebSocket: the live session stays, its publish is refused with the wait
    // (retried under the same id, as a client does). A publish that happens to be
    // the breaker's half-open probe fails without a wait: try again.
    let retried = new_event_id();
    let started = Instant::now();
    loop {
        match publish(&mut c, &retried, b"during").await {
            ServerMessage::Error {
                code: ErrorCode::Unavailable,
                retry_after_ms: Some(ms),
                ..
            } => {
                assert!((1..=1000).contains(&ms), "{ms}");
                break;
            }
            ServerMessage::Error {
                code: ErrorCode::Unavailable,
                retry_after_ms: None,
                ..
            } => {}
            other => panic!("expected unavailable, got {other:?}"),
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no retry_after_ms on the socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Readiness: 503 naming the database (and the migrations, which cannot be read
    // without it).
    let r = ready(&api).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(
        r.json["failed"],
        serde_json::json!(["database", "migrations"]),
        "{}",
        r.text
    );
    assert_eq!(r.json["checks"]["database"], "unavailable", "{}", r.text);
    let state = r.json["checks"]["database_breaker"]
        .as_str()
        .unwrap_or_default();
    assert!(matches!(state, "open" | "half_open"), "{}", r.text);

    // Metrics: the breaker is open (between its probes) and its opening was counted.
    let started = Instant::now();
    loop {
        let text = metrics(&api).await;
        if text.contains("ferry_breaker_state{breaker=\"database\"} 2") {
            assert!(
                text.contains("ferry_breaker_transitions_total{breaker=\"database\",to=\"open\"}"),
                "{text}"
            );
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "breaker never shown open:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    start_database(&name).await;

    // Recovery, by itself: the retried publish is stored once the breaker's probe
    // finds the database back.
    let started = Instant::now();
    let seq = loop {
        match publish(&mut c, &retried, b"during").await {
            ServerMessage::Error {
                code: ErrorCode::Unavailable,
                ..
            } => {}
            reply => break acked(&reply),
        }
        assert!(started.elapsed() < DEADLINE, "publishing never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(seq, 2, "nothing was stored while the database was down");
    ids.push(retried);
    let started = Instant::now();
    loop {
        let r = ready(&api).await;
        if r.status == 200 {
            assert_eq!(r.json["checks"]["database"], "ok", "{}", r.text);
            assert_eq!(r.json["checks"]["database_breaker"], "closed", "{}", r.text);
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "never ready again: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = metrics(&api).await;
    assert!(
        text.contains("ferry_breaker_state{breaker=\"database\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("ferry_breaker_transitions_total{breaker=\"database\",to=\"closed\"}"),
        "{text}"
    );
    api.get("/v1/devices", Some(&tokens.access)).await.ok();
    ids.push(new_event_id());
    assert_eq!(acked(&publish(&mut c, &ids[2], b"after").await), 3);

    // Nothing acked was lost.
    let (events, head) = answered("sync", c.sync_all(100)).await;
    assert_eq!(head, 3);
    let got: Vec<(u64, &str)> = events
        .iter()
        .map(|e| (e.seq.unwrap(), e.id.as_str()))
        .collect();
    let want: Vec<(u64, &str)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (i as u64 + 1, id.as_str()))
        .collect();
    assert_eq!(got, want);

    drop(c);
    srv.stop().await;
    // Connections are allowed again (above), so the database can be dropped.
    db.drop_db().await;
    common::db::ran_on_postgres("database_down_fails_fast_with_retry_after_and_recovers_by_itself");
}
