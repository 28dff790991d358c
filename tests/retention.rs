//! The retention job through the public interfaces: real servers on port 0 (SQLite
//! and, when configured, PostgreSQL), real WebSocket clients, the admin API, the
//! metrics, and the database tables themselves (a deleted row must be gone, not
//! hidden). Time moves with the server's injected clock, so "two days later" is a
//! jump, not a wait.

mod common;

use std::time::Duration;

use common::client::{Closed, TestClient, TestUser, connect, new_event_id, try_connect};
use common::db::{TestDb, databases};
use common::http::{Api, admin_keys_env};
use common::server::TestServer;
use ferry::clock::JumpingClock;
use ferry_proto::b64u;
use ferry_proto::message::ServerMessage;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection as _;

const READ: &str = "retention-read-key-0123456789abcdef";
const WRITE: &str = "retention-write-key-0123456789abcdef";
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// A server on `db` with the admin keys and `extra`, reading `clock`.
async fn start(
    db: &TestDb,
    clock: &std::sync::Arc<JumpingClock>,
    extra: &[(&str, &str)],
) -> (TestServer, Api) {
    let keys = admin_keys_env(READ, WRITE);
    let mut env: Vec<(&str, &str)> = vec![
        ("FERRY_ADMIN_KEYS", keys.as_str()),
        // The background job stays out of the way unless a test wants it.
        ("FERRY_RETENTION_INTERVAL", "1d"),
        // Tests publish hundreds of events as fast as they are acked.
        ("FERRY_LIMITS_BURST", "100000"),
    ];
    env.extend_from_slice(extra);
    let srv =
        TestServer::start_clocked(db.url(), &env, clock.clone() as ferry::clock::SharedClock).await;
    let api = Api::new(&srv);
    (srv, api)
}

/// `POST /admin/v1/retention/run`: the report's `deleted` object.
async fn run(api: &Api) -> Value {
    let r = api
        .admin(Method::POST, "/admin/v1/retention/run", Some(WRITE))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.ok().clone();
    assert_eq!(body["skipped"], false);
    body["deleted"].clone()
}

/// One number from the database, outside the server.
async fn scalar(db: &TestDb, sql: &str) -> i64 {
    match db.backend() {
        ferry::store::Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(db.url()).await.unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
        ferry::store::Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(db.url()).await.unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    }
}

/// Publishes one event with the extra JSON fields in `extra`; returns the reply.
async fn publish(c: &mut TestClient, extra: Value) -> ServerMessage {
    let mut msg = json!({
        "type": "publish",
        "rid": "p",
        "id": new_event_id(),
        "payload": b64u::encode(b"ciphertext"),
    });
    for (k, v) in extra.as_object().unwrap() {
        msg[k] = v.clone();
    }
    c.request(&msg.to_string()).await
}

/// Publishes and expects an ack; returns its seq.
async fn stored(c: &mut TestClient, extra: Value) -> u64 {
    match publish(c, extra).await {
        ServerMessage::Ack { seq: Some(seq), .. } => seq,
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// Publishes and expects a conflict; returns the key's head.
async fn conflict(c: &mut TestClient, extra: Value) -> u64 {
    match publish(c, extra).await {
        ServerMessage::Conflict { head, .. } => head,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// One `sync` page from `after`: `(seqs, head, truncated oldest)`.
async fn sync(c: &mut TestClient, after: u64) -> (Vec<u64>, u64, Option<u64>) {
    let reply = c
        .request(&json!({"type": "sync", "rid": "s", "after": after, "limit": 1000}).to_string())
        .await;
    let ServerMessage::Events {
        events,
        head,
        truncated,
        ..
    } = reply
    else {
        panic!("expected events, got {reply:?}");
    };
    (
        events.iter().map(|e| e.seq.expect("stored")).collect(),
        head,
        truncated.map(|t| t.oldest),
    )
}

/// A metric's value in the admin listener's `/metrics` (0 when absent).
async fn metric(api: &Api, series: &str) -> f64 {
    let text = api.admin(Method::GET, "/metrics", None).await.text;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Polls `check` every 50 ms for up to 10 s; panics with `what` if it never holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

/// `POST /admin/v1/retention/run?dry_run=true`: the counts.
async fn dry_run(api: &Api) -> Value {
    let r = api
        .admin(
            Method::POST,
            "/admin/v1/retention/run?dry_run=true",
            Some(WRITE),
        )
        .await;
    assert_eq!(r.ok()["dry_run"], true);
    r.ok()["deleted"].clone()
}

/// `GET /admin/v1/users/{user}`.
async fn user_detail(api: &Api, user: &str) -> Value {
    api.admin(Method::GET, &format!("/admin/v1/users/{user}"), Some(READ))
        .await
        .ok()
        .clone()
}

/// `GET /admin/v1/retention`.
async fn retention_status(api: &Api) -> Value {
    api.admin(Method::GET, "/admin/v1/retention", Some(READ))
        .await
        .ok()
        .clone()
}

async fn events(db: &TestDb) -> i64 {
    scalar(db, "SELECT count(*) FROM events").await
}

fn key(k: &str) -> String {
    b64u::encode(k.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_events_leave_the_table_and_conflicts_stay_exact() {
    for db in databases().await {
        let clock = JumpingClock::new();
        let (srv, api) = start(&db, &clock, &[]).await;
        let user = TestUser::random();
        let mut c = connect(&srv.ws_url(), user.device()).await;
        let keep1 = stored(&mut c, json!({})).await;
        for _ in 0..3 {
            stored(&mut c, json!({"ttl": 1})).await;
        }
        // The newest event of key "k" expires: the key's head must stay its seq.
        let k1 = stored(&mut c, json!({"key": key("k"), "base": 0, "ttl": 1})).await;
        let keep2 = stored(&mut c, json!({})).await;
        assert_eq!(events(&db).await, 6);

        // Nothing has expired yet: a run deletes nothing.
        assert_eq!(run(&api).await["expired"], 0);
        clock.jump_wall(2_000);

        // A dry run counts and deletes nothing.
        assert_eq!(dry_run(&api).await["expired"], 4);
        assert_eq!(events(&db).await, 6);

        let deleted = run(&api).await;
        assert_eq!(deleted["expired"], 4, "{deleted}");
        // Gone from the table, not only hidden.
        assert_eq!(events(&db).await, 2);
        assert_eq!(
            scalar(
                &db,
                "SELECT count(*) FROM events WHERE expires_at IS NOT NULL"
            )
            .await,
            0
        );
        assert_eq!(run(&api).await["expired"], 0, "idempotent");

        // Holes, not truncation; the head did not move.
        assert_eq!(sync(&mut c, 0).await, (vec![keep1, keep2], keep2, None));
        // Compare-and-set still sees the expired event as the key's newest.
        assert_eq!(
            conflict(&mut c, json!({"key": key("k"), "base": 0})).await,
            k1
        );
        let k2 = stored(&mut c, json!({"key": key("k"), "base": k1})).await;
        assert_eq!(
            conflict(&mut c, json!({"key": key("k"), "base": k1})).await,
            k2
        );

        assert_eq!(
            metric(&api, "ferry_retention_deleted_total{reason=\"expired\"}").await,
            4.0
        );
        assert_eq!(
            metric(&api, "ferry_retention_runs_total{outcome=\"ok\"}").await,
            3.0
        );
        assert!(metric(&api, "ferry_retention_last_success_timestamp_seconds").await > 0.0);
        assert!(metric(&api, "ferry_database_size_bytes").await > 0.0);
        let status = retention_status(&api).await;
        assert_eq!(status["last_run"]["deleted"]["expired"], 0);
        assert_eq!(status["running"], false);
        assert!(status["last_success_at"].as_i64().unwrap() > 0);
        assert!(status["next_run_at"].as_i64().unwrap() > 0);
        assert!(status.get("last_error").is_none());
        // The run endpoint needs the write scope.
        api.admin(Method::POST, "/admin/v1/retention/run", Some(READ))
            .await
            .error(403, "forbidden");

        srv.stop().await;
        db.finish("expired_events_leave_the_table_and_conflicts_stay_exact")
            .await;
    }
}

/// Batches smaller than the work: several transactions per policy, pages of a
/// user's log, and the policies one after another in one pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_cross_transaction_and_page_boundaries() {
    for db in databases().await {
        let clock = JumpingClock::new();
        let (srv, api) = start(
            &db,
            &clock,
            &[
                ("FERRY_RETENTION_BATCH", "100"),
                ("FERRY_RETENTION_MAX_AGE", "1h"),
                ("FERRY_RETENTION_MAX_EVENTS_PER_USER", "5"),
            ],
        )
        .await;
        let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
        for _ in 0..250 {
            stored(&mut c, json!({"ttl": 1})).await;
        }
        clock.jump_wall(2_000);
        // Count finds nothing to keep apart: every stored event is gone first.
        let deleted = run(&api).await;
        assert_eq!(
            (deleted["expired"].as_u64(), deleted["count"].as_u64()),
            (Some(250), Some(0))
        );
        assert_eq!(events(&db).await, 0);

        for _ in 0..250 {
            stored(&mut c, json!({})).await;
        }
        clock.jump_wall(2 * HOUR_MS);
        for _ in 0..10 {
            stored(&mut c, json!({})).await;
        }
        // A dry run counts each policy on its own.
        let counted = dry_run(&api).await;
        assert_eq!(counted["age"], 250, "{counted}");
        assert_eq!(counted["count"], 255, "{counted}");
        assert_eq!(events(&db).await, 260);
        // Age takes the 250 old ones (three pages of 100), then count keeps 5 of
        // the 10 young ones.
        let deleted = run(&api).await;
        assert_eq!(
            (deleted["age"].as_u64(), deleted["count"].as_u64()),
            (Some(250), Some(5))
        );
        assert_eq!(
            sync(&mut c, 0).await,
            ((506..=510).collect::<Vec<u64>>(), 510, Some(506))
        );
        assert_eq!(sync(&mut c, 505).await.2, None);
        srv.stop().await;
        db.finish("passes_cross_transaction_and_page_boundaries")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_job_deletes_expired_events_within_an_interval() {
    for db in databases().await {
        let clock = JumpingClock::new();
        let (srv, api) = start(&db, &clock, &[("FERRY_RETENTION_INTERVAL", "1s")]).await;
        let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
        for _ in 0..5 {
            stored(&mut c, json!({"ttl": 1})).await;
        }
        clock.jump_wall(1_500);
        // The job runs every second by itself; it must get to them.
        eventually("the background job deleted the expired events", || async {
            events(&db).await == 0
        })
        .await;
        assert!(metric(&api, "ferry_retention_runs_total{outcome=\"ok\"}").await >= 1.0);
        srv.stop().await;
        db.finish("the_background_job_deletes_expired_events_within_an_interval")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_truncates_sync_and_the_head_never_moves_back() {
    for db in databases().await {
        let clock = JumpingClock::new();
        let (srv, api) = start(&db, &clock, &[("FERRY_RETENTION_MAX_AGE", "1h")]).await;
        let user = TestUser::random();
        let mut c = connect(&srv.ws_url(), user.device()).await;
        for _ in 0..5 {
            stored(&mut c, json!({"key": key("old")})).await;
        }
        clock.jump_wall(2 * HOUR_MS);
        let young: Vec<u64> = vec![
            stored(&mut c, json!({})).await,
            stored(&mut c, json!({})).await,
        ];
        assert_eq!(young, vec![6, 7]);
        assert_eq!(run(&api).await["age"], 5);
        assert_eq!(events(&db).await, 2);
        // A device behind the watermark is told; one past it is not.
        assert_eq!(sync(&mut c, 0).await, (vec![6, 7], 7, Some(6)));
        assert_eq!(sync(&mut c, 5).await, (vec![6, 7], 7, None));
        // The pruned key's newest event is remembered for conflict checks.
        assert_eq!(
            conflict(&mut c, json!({"key": key("old"), "base": 0})).await,
            5
        );

        // Everything ages out: the log is empty, the head stays.
        clock.jump_wall(2 * HOUR_MS);
        assert_eq!(run(&api).await["age"], 2);
        assert_eq!(sync(&mut c, 0).await, (vec![], 7, Some(8)));
        let u = b64u::encode(&user.key.verifying_key().to_bytes());
        let detail = user_detail(&api, &u).await;
        assert_eq!(detail["user"]["head"], 7);
        assert_eq!(detail["user"]["pruned_through"], 7);
        assert_eq!(stored(&mut c, json!({})).await, 8, "seqs are never reused");

        srv.stop().await;
        db.finish("max_age_truncates_sync_and_the_head_never_moves_back")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_events_per_user_keeps_the_newest() {
    for db in databases().await {
        let clock = JumpingClock::new();
        let (srv, api) = start(&db, &clock, &[("FERRY_RETENTION_MAX_EVENTS_PER_USER", "3")]).await;
        let mut a = connect(&srv.ws_url(), TestUser::random().device()).await;
        let mut b = connect(&srv.ws_url(), TestUser::random().device()).await;
        for _ in 0..5 {
            stored(&mut a, json!({})).await;
        }
        for _ in 0..2 {
            stored(&mut b, json!({})).await;
        }
        assert_eq!(dry_run(&api).await["count"], 2);
        assert_eq!(run(&api).await["count"], 2);
        assert_eq!(sync(&mut a, 0).await, (vec![3, 4, 5], 5, Some(3)));
        assert_eq!(sync(&mut b, 0).await, (vec![1, 2], 2, None));
        assert_eq!(run(&api).await["count"], 0, "idempotent");
        srv.stop().await;
        db.finish("max_events_per_user_keeps_the_newest").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_newest_of_each_key() {
    for db in databases().await {
        let clock = JumpingClock::new();
        let (srv, api) = start(
            &db,
            &clock,
            &[
                ("FERRY_RETENTION_COMPACT_KEYS", "true"),
                ("FERRY_RETENTION_COMPACT_AFTER", "1m"),
            ],
        )
        .await;
        let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
        let a1 = stored(&mut c, json!({"key": key("a"), "base": 0})).await;
        let a2 = stored(&mut c, json!({"key": key("a"), "base": a1})).await;
        let a3 = stored(&mut c, json!({"key": key("a"), "base": a2})).await;
        let b1 = stored(&mut c, json!({"key": key("b")})).await;
        let plain = stored(&mut c, json!({})).await;
        // Superseded, but not for a minute yet.
        assert_eq!(run(&api).await["compacted"], 0);
        clock.jump_wall(2 * 60_000);
        assert_eq!(run(&api).await["compacted"], 2);
        assert_eq!(sync(&mut c, 0).await, (vec![a3, b1, plain], plain, None));
        // Conflict checks are exact: the kept newest is the head of each key.
        assert_eq!(
            conflict(&mut c, json!({"key": key("a"), "base": a2})).await,
            a3
        );
        assert_eq!(
            conflict(&mut c, json!({"key": key("b"), "base": 0})).await,
            b1
        );
        let a4 = stored(&mut c, json!({"key": key("a"), "base": a3})).await;
        // The new one is younger than compact_after: a3 stays for now.
        assert_eq!(run(&api).await["compacted"], 0);
        clock.jump_wall(2 * 60_000);
        assert_eq!(run(&api).await["compacted"], 1);
        assert_eq!(sync(&mut c, 0).await.0, vec![b1, plain, a4]);
        srv.stop().await;
        db.finish("compaction_keeps_the_newest_of_each_key").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_devices_go_and_a_revoked_one_stays_refused() {
    for db in databases().await {
        let clock = JumpingClock::new();
        let (srv, api) = start(
            &db,
            &clock,
            &[("FERRY_RETENTION_INACTIVE_DEVICE_AFTER", "1d")],
        )
        .await;
        let user = TestUser::random();
        let u = b64u::encode(&user.key.verifying_key().to_bytes());
        let (live, stolen, idle) = (user.device(), user.device(), user.device());
        let stolen_key = b64u::encode(stolen.device_key.verifying_key().as_bytes());
        let mut l = connect(&srv.ws_url(), live.clone()).await;
        for _ in 0..3 {
            stored(&mut l, json!({})).await;
        }
        drop(connect(&srv.ws_url(), stolen.clone()).await);
        {
            let mut i = connect(&srv.ws_url(), idle.clone()).await;
            i.send_json(&json!({"type": "cursor", "seq": 3}).to_string())
                .await;
            assert_eq!(sync(&mut i, 3).await.0, Vec::<u64>::new());
        }
        let r = api
            .admin(
                Method::DELETE,
                &format!("/admin/v1/users/{u}/devices/{stolen_key}"),
                Some(WRITE),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        let devices = |r: &Value| r["devices"].as_array().unwrap().len();
        assert_eq!(devices(&user_detail(&api, &u).await), 3);

        clock.jump_wall(2 * DAY_MS);
        // The live device was last seen as long ago, but it is connected.
        assert_eq!(run(&api).await["inactive_device"], 2);
        let detail = user_detail(&api, &u).await;
        assert_eq!(devices(&detail), 1);
        assert_eq!(scalar(&db, "SELECT count(*) FROM devices").await, 1);
        assert_eq!(detail["user"]["head"], 3, "the user and its log stay");

        // The revoked device is still refused.
        assert_eq!(
            try_connect(&srv.ws_url(), stolen.clone()).await.err(),
            Some(Closed::Code(4002))
        );
        // The idle one comes back as a new device: cursor 0.
        let mut i = connect(&srv.ws_url(), idle.clone()).await;
        assert_eq!(sync(&mut i, 0).await.0, vec![1, 2, 3]);
        let idle_key = b64u::encode(idle.device_key.verifying_key().as_bytes());
        let back = user_detail(&api, &u).await["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device"] == idle_key.as_str())
            .cloned()
            .expect("registered anew");
        assert_eq!(back["cursor"], 0);
        assert!(back.get("revoked_at").is_none_or(Value::is_null));
        drop(l);

        srv.stop().await;
        db.finish("inactive_devices_go_and_a_revoked_one_stays_refused")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_and_expired_auth_rows_are_purged() {
    for db in databases().await {
        let clock = JumpingClock::new();
        let (srv, api) = start(&db, &clock, &[]).await;
        let creds = TestUser::random().device();
        drop(connect(&srv.ws_url(), creds.clone()).await);
        let _challenge = common::http::challenge(&api, &creds).await;
        let _tokens = common::http::login(&api, &creds).await;
        assert_eq!(
            scalar(&db, "SELECT count(*) FROM auth_challenges").await,
            1,
            "the first challenge was never redeemed"
        );
        assert_eq!(run(&api).await["auth"], 0);
        // Past every challenge and refresh token (30 days by default).
        clock.jump_wall(31 * DAY_MS);
        let deleted = run(&api).await;
        assert_eq!(deleted["auth"], 2, "{deleted}");
        assert_eq!(scalar(&db, "SELECT count(*) FROM auth_challenges").await, 0);
        assert_eq!(scalar(&db, "SELECT count(*) FROM refresh_tokens").await, 0);
        assert_eq!(
            metric(&api, "ferry_retention_deleted_total{reason=\"auth\"}").await,
            2.0
        );
        // A pass that meets a storage error answers with it (here a table gone:
        // 500; an unreachable database: 503) and records it.
        db.exec(
            "ALTER TABLE kept_revocations RENAME TO kept_revocations_away",
            "ALTER TABLE kept_revocations RENAME TO kept_revocations_away",
        )
        .await;
        api.admin(Method::POST, "/admin/v1/retention/run", Some(WRITE))
            .await
            .error(500, "internal");
        assert!(retention_status(&api).await["last_error"]["message"].is_string());
        db.exec(
            "ALTER TABLE kept_revocations_away RENAME TO kept_revocations",
            "ALTER TABLE kept_revocations_away RENAME TO kept_revocations",
        )
        .await;
        run(&api).await;
        assert!(retention_status(&api).await.get("last_error").is_none());
        srv.stop().await;
        db.finish("spent_and_expired_auth_rows_are_purged").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_is_counted_and_retried() {
    for db in databases().await {
        let clock = JumpingClock::new();
        let (srv, api) = start(&db, &clock, &[("FERRY_RETENTION_INTERVAL", "1s")]).await;
        let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
        stored(&mut c, json!({"ttl": 1})).await;
        // Break the first table a pass touches.
        db.exec(
            "ALTER TABLE kept_revocations RENAME TO kept_revocations_away",
            "ALTER TABLE kept_revocations RENAME TO kept_revocations_away",
        )
        .await;
        clock.jump_wall(2_000);
        eventually("a failed run is counted", || async {
            metric(&api, "ferry_retention_runs_total{outcome=\"error\"}").await >= 1.0
        })
        .await;
        let message = retention_status(&api).await["last_error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains("kept_revocations"), "{message}");
        // The server keeps serving while the job fails.
        stored(&mut c, json!({})).await;
        assert_eq!(events(&db).await, 2);

        db.exec(
            "ALTER TABLE kept_revocations_away RENAME TO kept_revocations",
            "ALTER TABLE kept_revocations_away RENAME TO kept_revocations",
        )
        .await;
        eventually(
            "the next interval retried and deleted the expired event",
            || async { events(&db).await == 1 },
        )
        .await;
        // The error is cleared by the first pass that succeeds (polled: a pass may be
        // between its delete and its bookkeeping).
        eventually("a successful pass cleared last_error", || async {
            retention_status(&api).await.get("last_error").is_none()
        })
        .await;
        srv.stop().await;
        db.finish("a_failing_run_is_counted_and_retried").await;
    }
}

/// Two instances on one PostgreSQL database: while one holds the retention lock,
/// the other's pass is skipped (and counted), never run alongside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_postgres_database_take_turns() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let clock = JumpingClock::new();
    let (one, api1) = start(&db, &clock, &[]).await;
    let (two, api2) = start(&db, &clock, &[]).await;
    let mut c = connect(&one.ws_url(), TestUser::random().device()).await;
    for _ in 0..10 {
        stored(&mut c, json!({"ttl": 1})).await;
    }
    clock.jump_wall(2_000);

    // Hold the lock as a third party would (the key is "ferry-rt" in ASCII).
    let mut holder = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(0x6665_7272_792d_7274_i64)
        .execute(&mut holder)
        .await
        .unwrap();
    for api in [&api1, &api2] {
        api.admin(Method::POST, "/admin/v1/retention/run", Some(WRITE))
            .await
            .error(409, "conflict");
        assert_eq!(
            metric(api, "ferry_retention_runs_total{outcome=\"skipped\"}").await,
            1.0
        );
    }
    assert_eq!(events(&db).await, 10);
    // Released for certain before the next step (a dropped connection's session
    // may end a moment later).
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(0x6665_7272_792d_7274_i64)
        .execute(&mut holder)
        .await
        .unwrap();
    holder.close().await.unwrap();

    // Both at once: the passes never overlap, so the rows are deleted exactly
    // once between them.
    let (r1, r2) = tokio::join!(
        api1.admin(Method::POST, "/admin/v1/retention/run", Some(WRITE)),
        api2.admin(Method::POST, "/admin/v1/retention/run", Some(WRITE)),
    );
    let done: Vec<u64> = [&r1, &r2]
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.ok()["deleted"]["expired"].as_u64().unwrap())
        .collect();
    assert!(
        [&r1, &r2]
            .iter()
            .all(|r| r.status == 200 || r.status == 409),
        "{} {}",
        r1.text,
        r2.text
    );
    assert_eq!(done.iter().sum::<u64>(), 10);
    assert_eq!(events(&db).await, 0);
    one.stop().await;
    two.stop().await;
    db.finish("instances_on_one_postgres_database_take_turns")
        .await;
}

/// A deletion that fails never costs a publish: on SQLite the job's deletions ride
/// the relay's transactions, in a savepoint that rolls back alone; a publish sent
/// while the pass fails is acked, and the expired event stays for the next pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_deletion_never_costs_a_publish() {
    for db in databases().await {
        let clock = JumpingClock::new();
        let (srv, api) = start(&db, &clock, &[]).await;
        let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
        // An expired keyed event: deleting it writes `retired_keys`, which is gone.
        stored(&mut c, json!({"key": key("k"), "ttl": 1})).await;
        clock.jump_wall(2_000);
        db.exec(
            "ALTER TABLE retired_keys RENAME TO retired_keys_away",
            "ALTER TABLE retired_keys RENAME TO retired_keys_away",
        )
        .await;
        let ws = srv.ws_url();
        let publisher = tokio::spawn(async move {
            let mut p = connect(&ws, TestUser::random().device()).await;
            let mut acked = 0;
            for _ in 0..100 {
                stored(&mut p, json!({})).await;
                acked += 1;
            }
            acked
        });
        for _ in 0..3 {
            api.admin(Method::POST, "/admin/v1/retention/run", Some(WRITE))
                .await
                .error(500, "internal");
        }
        assert_eq!(publisher.await.unwrap(), 100);
        assert_eq!(
            scalar(
                &db,
                "SELECT count(*) FROM events WHERE expires_at IS NOT NULL"
            )
            .await,
            1,
            "the failed deletion was rolled back"
        );
        db.exec(
            "ALTER TABLE retired_keys_away RENAME TO retired_keys",
            "ALTER TABLE retired_keys_away RENAME TO retired_keys",
        )
        .await;
        assert_eq!(run(&api).await["expired"], 1);
        assert_eq!(events(&db).await, 100);
        srv.stop().await;
        db.finish("a_failing_deletion_never_costs_a_publish").await;
    }
}

/// Deleted ciphertext leaves the SQLite file, not only the table: the bytes of an
/// expired payload are not in the database file once a pass deleted it and the
/// write-ahead log was checkpointed into the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_ciphertext_bytes_leave_the_sqlite_file() {
    let db = TestDb::sqlite().await;
    let clock = JumpingClock::new();
    let (srv, api) = start(&db, &clock, &[]).await;
    let mut c = connect(&srv.ws_url(), TestUser::random().device()).await;
    let marker = b"expired-ciphertext-marker-7f3a91c2";
    let keep = b"kept-ciphertext-marker-0b55d7e4";
    for payload in [&marker[..], &keep[..]] {
        let ttl = if payload == marker {
            json!(1)
        } else {
            json!(null)
        };
        let mut msg = json!({
            "type": "publish", "rid": "p", "id": new_event_id(),
            "payload": b64u::encode(payload),
        });
        if !ttl.is_null() {
            msg["ttl"] = ttl;
        }
        assert!(matches!(
            c.request(&msg.to_string()).await,
            ServerMessage::Ack { .. }
        ));
    }
    let file = db.url().trim_start_matches("sqlite://").to_string();
    let contains = |needle: &[u8]| {
        let bytes = std::fs::read(&file).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle)
    };
    let checkpoint = || async {
        let mut conn = sqlx::SqliteConnection::connect(db.url()).await.unwrap();
        sqlx::query("PRAGMA wal_checkpoint(FULL)")
            .execute(&mut conn)
            .await
            .unwrap();
    };
    checkpoint().await;
    assert!(
        contains(marker) && contains(keep),
        "both payloads are in the file"
    );
    clock.jump_wall(2_000);
    assert_eq!(run(&api).await["expired"], 1);
    checkpoint().await;
    assert!(contains(keep));
    assert!(
        !contains(marker),
        "the expired ciphertext is still in the file"
    );
    srv.stop().await;
}
