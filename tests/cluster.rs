//! Cluster mode: three instances on one PostgreSQL database with a Redis server the
//! test starts itself (so it can stop and restart it). Limits hold across the
//! instances; a Redis outage degrades instead of failing and loses nothing; a
//! device's sessions, `online` and revocation span the instances.
//!
//! Needs `FERRY_TEST_POSTGRES_URL` and `redis-server`; with `CI` set, either missing
//! fails the suite.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::client::{Closed, TestClient, TestUser, connect, new_event_id, now_secs};
use common::db::PgTestDb;
use common::http::{Api, login};
use common::redis::RedisServer;
use common::server::TestServer;
use ferry_proto::b64u;
use ferry_proto::message::ServerMessage;
use serde_json::json;

/// A PostgreSQL database and a Redis server, or `None` (outside CI) without them.
async fn services() -> Option<(PgTestDb, RedisServer)> {
    let db = common::db::postgres().await?;
    let Some(redis) = RedisServer::start().await else {
        db.drop_db().await;
        return None;
    };
    Some((db, redis))
}

/// Three instances on `db` with Redis at `redis`, and `extra` settings.
async fn cluster(db: &PgTestDb, redis: &RedisServer, extra: &[(&str, &str)]) -> Vec<TestServer> {
    let url = redis.url();
    let mut env = vec![("FERRY_REDIS_URL", url.as_str())];
    env.extend_from_slice(extra);
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(TestServer::start(db.url(), &env).await);
    }
    servers
}

async fn stop_all(servers: Vec<TestServer>) {
    for s in servers {
        s.stop().await;
    }
}

/// `(allowed, refused)` of `attempt`s made as fast as they answer for `window`,
/// alternating over the instances; `attempt(i)` targets instance `i % 3` and says
/// whether it was allowed. Also the time the attempts took.
async fn hammer<F, Fut>(window: Duration, mut attempt: F) -> (u32, u32, Duration)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    let (mut allowed, mut refused) = (0, 0);
    let mut i = 0;
    while started.elapsed() < window {
        if attempt(i).await {
            allowed += 1;
        } else {
            refused += 1;
        }
        i += 1;
    }
    (allowed, refused, started.elapsed())
}

/// At most 1.1× what one rule of `per_sec` with bursts of `burst` allows in
/// `elapsed` (and at least half of it, so the rule did not just refuse everything).
fn assert_held(
    what: &str,
    allowed: u32,
    refused: u32,
    per_sec: f64,
    burst: f64,
    elapsed: Duration,
) {
    let budget = per_sec * elapsed.as_secs_f64() + burst;
    eprintln!(
        "{what}: {allowed} allowed, {refused} refused in {:.2} s; one rule allows {budget:.0}",
        elapsed.as_secs_f64()
    );
    assert!(refused > 0, "{what}: nothing was refused");
    assert!(
        f64::from(allowed) <= 1.1 * budget,
        "{what}: {allowed} allowed over three instances, more than 1.1 × {budget:.0}"
    );
    assert!(
        f64::from(allowed) >= 0.5 * budget,
        "{what}: only {allowed} allowed of {budget:.0}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_three_instances() {
    let Some((db, redis)) = services().await else {
        return;
    };
    let servers = cluster(
        &db,
        &redis,
        &[
            ("FERRY_LIMITS_EVENTS_PER_SEC", "20"),
            ("FERRY_LIMITS_BURST", "10"),
            ("FERRY_LIMITS_REST_REQUESTS_PER_IP_PER_SEC", "100000"),
            ("FERRY_LIMITS_REST_REQUESTS_PER_TOKEN_PER_SEC", "30"),
            ("FERRY_LIMITS_HANDSHAKES_PER_IP_PER_SEC", "10"),
        ],
    )
    .await;
    let apis: Vec<Api> = servers.iter().map(Api::new).collect();
    let user = TestUser::random();
    let window = Duration::from_secs(2);

    // Publishes of one device, alternating over the instances.
    let publisher = login(&apis[0], &user.device()).await;
    let (allowed, refused, took) = hammer(window, |i| {
        let (api, token) = (apis[i % 3].clone(), publisher.access.clone());
        async move {
            let body = json!({"id": new_event_id(), "payload": b64u::encode(b"x")});
            let r = api.post("/v1/events", Some(&token), body).await;
            match r.status {
                200 | 201 => true,
                429 => {
                    assert!(r.header("retry-after").is_some(), "{}", r.text);
                    false
                }
                s => panic!("publish answered {s}: {}", r.text),
            }
        }
    })
    .await;
    // The token's own limit (30/s) may refuse some first; the publish rule (20/s,
    // burst 10) bounds what is stored either way.
    assert_held("publishes per device", allowed, refused, 20.0, 10.0, took);

    // Requests with one access token.
    let reader = login(&apis[1], &user.device()).await;
    let (allowed, refused, took) = hammer(window, |i| {
        let (api, token) = (apis[i % 3].clone(), reader.access.clone());
        async move {
            let r = api.get("/v1/devices", Some(&token)).await;
            match r.status {
                200 => {
                    assert!(r.header("ratelimit-remaining").is_some());
                    true
                }
                429 => false,
                s => panic!("devices answered {s}: {}", r.text),
            }
        }
    })
    .await;
    assert_held(
        "REST requests per token",
        allowed,
        refused,
        30.0,
        60.0,
        took,
    );

    // WebSocket handshakes from one address.
    let addrs: Vec<String> = servers.iter().map(TestServer::ws_url).collect();
    let (allowed, refused, took) = hammer(window, |i| {
        let url = addrs[i % 3].clone();
        async move {
            match tokio_tungstenite::connect_async(url.as_str()).await {
                Ok(_) => true,
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                    assert_eq!(r.status(), 429);
                    false
                }
                Err(e) => panic!("upgrade failed: {e}"),
            }
        }
    })
    .await;
    assert_held("handshakes per IP", allowed, refused, 10.0, 20.0, took);

    // Every decision was made in Redis.
    for api in &apis {
        let m = metrics(api).await;
        assert!(metric(&m, "ferry_rate_limit_decisions_total{source=\"shared\"}") > 0.0);
        assert_eq!(
            metric(&m, "ferry_rate_limit_decisions_total{source=\"fallback\"}"),
            0.0
        );
    }
    stop_all(servers).await;
    db.drop_db().await;
}

/// The `/metrics` text of an instance.
async fn metrics(api: &Api) -> String {
    let r = api
        .client
        .get(format!("{}/metrics", api.admin))
        .send()
        .await
        .unwrap();
    r.text().await.unwrap()
}

/// A sample's value (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `/health/ready` of an instance: status and body.
async fn ready(api: &Api) -> (u16, serde_json::Value) {
    let r = api
        .client
        .get(format!("{}/health/ready", api.admin))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// What one device saw: its own acked seqs and the relayed events' seqs in arrival
/// order.
#[derive(Default)]
struct Seen {
    own: Vec<u64>,
    relayed: Vec<u64>,
}

impl Seen {
    fn take(&mut self, msg: ServerMessage) {
        match msg {
            ServerMessage::Ack { seq: Some(s), .. } => self.own.push(s),
            ServerMessage::Event(e) => self.relayed.push(e.seq.expect("stored")),
            ServerMessage::Presence { .. } => {}
            ServerMessage::Error { code, .. } => panic!("publish refused: {code:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Publishes `n` events in windows of `window`, recording what arrives.
async fn publish_some(c: &mut TestClient, seen: &mut Seen, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(5) {
        let w: Vec<(String, Vec<u8>)> = chunk
            .iter()
            .map(|_| (new_event_id(), b"cluster".to_vec()))
            .collect();
        c.publish_window(&w, |m| seen.take(m))
            .await
            .expect("session stays up");
    }
}

/// Every device publishes 20 events at once, so events of the three instances
/// interleave in the user's log.
async fn round(clients: &mut [TestClient], seen: &mut [Seen]) {
    let futs = clients
        .iter_mut()
        .zip(seen.iter_mut())
        .map(|(c, s)| publish_some(c, s, 20));
    futures_util::future::join_all(futs).await;
}

/// Reads what arrives until nothing has for `quiet`.
async fn drain(c: &mut TestClient, seen: &mut Seen, quiet: Duration) {
    while let Ok(r) = tokio::time::timeout(quiet, c.try_recv(Duration::from_secs(30))).await {
        seen.take(r.expect("session stays up"));
    }
}

/// Every device has every event `1..=total` exactly once, in order: its own as
/// acks, the others' relayed in seq order.
fn check_exactly_once_in_order(seen: &[Seen], total: usize) {
    for (i, s) in seen.iter().enumerate() {
        let mut relayed_sorted = s.relayed.clone();
        relayed_sorted.sort_unstable();
        assert_eq!(
            s.relayed, relayed_sorted,
            "device {i}: relayed out of order"
        );
        let all: BTreeSet<u64> = s.own.iter().chain(&s.relayed).copied().collect();
        assert_eq!(
            all.len(),
            s.own.len() + s.relayed.len(),
            "device {i}: an event arrived twice"
        );
        assert_eq!(
            all,
            (1..=total as u64).collect::<BTreeSet<_>>(),
            "device {i}: events missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_degrades_and_loses_nothing() {
    let Some((db, mut redis)) = services().await else {
        return;
    };
    let servers = cluster(
        &db,
        &redis,
        // A high rate with a small burst: leases of two publishes, so the
        // publishes during the outage keep asking Redis (and fall back).
        &[
            ("FERRY_LIMITS_EVENTS_PER_SEC", "5000"),
            ("FERRY_LIMITS_BURST", "8"),
        ],
    )
    .await;
    let apis: Vec<Api> = servers.iter().map(Api::new).collect();
    let user = TestUser::random();
    let mut clients = Vec::new();
    for s in &servers {
        clients.push(connect(&s.ws_url(), user.device()).await);
    }
    let mut seen: Vec<Seen> = (0..3).map(|_| Seen::default()).collect();
    round(&mut clients, &mut seen).await;
    for a in &apis {
        assert_eq!(ready(a).await.1["checks"]["redis"], "ok");
    }

    // Redis goes away mid-run.
    redis.stop().await;
    let stopped = Instant::now();
    round(&mut clients, &mut seen).await;
    let publishing_took = stopped.elapsed();
    for a in &apis {
        let (status, body) = ready(a).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["checks"]["redis"], "degraded", "{body}");
        assert!(
            metric(
                &metrics(a).await,
                "ferry_rate_limit_decisions_total{source=\"fallback\"}"
            ) > 0.0
        );
    }
    // The limits fell back at once: sixty publishes, each deciding locally, did
    // not wait for Redis (a generous bound; the decision timeout is 200 ms).
    eprintln!("60 publishes during the outage took {publishing_took:?}");
    assert!(
        publishing_took < Duration::from_secs(10),
        "{publishing_took:?}"
    );
    round(&mut clients, &mut seen).await;

    // Redis is back: the bus resubscribes and the limits are shared again.
    redis.resume().await;
    for a in &apis {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, body) = ready(a).await;
            if body["checks"]["redis"] == "ok" {
                break;
            }
            assert!(Instant::now() < deadline, "redis still degraded: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Nothing is published now: what the outage kept from each session reaches it
    // by the catch-up that follows the bus's resubscription.
    for (c, s) in clients.iter_mut().zip(seen.iter_mut()) {
        drain(c, s, Duration::from_secs(2)).await;
    }
    check_exactly_once_in_order(&seen, 3 * 3 * 20);
    let shared = |a: &Api| {
        let a = a.clone();
        async move {
            metric(
                &metrics(&a).await,
                "ferry_rate_limit_decisions_total{source=\"shared\"}",
            )
        }
    };
    let before: Vec<f64> = futures_util::future::join_all(apis.iter().map(shared)).await;
    // Each instance's limiter reconnects on its own and its breaker probes Redis
    // again after half a second: the limits are shared again within a few rounds.
    let mut rounds = 3;
    loop {
        round(&mut clients, &mut seen).await;
        rounds += 1;
        let now: Vec<f64> = futures_util::future::join_all(apis.iter().map(shared)).await;
        if now.iter().zip(&before).all(|(n, b)| n > b) {
            break;
        }
        assert!(rounds < 30, "limits not shared again: {before:?} → {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (c, s) in clients.iter_mut().zip(seen.iter_mut()) {
        drain(c, s, Duration::from_secs(2)).await;
    }

    // Each instance resubscribed and made its sessions catch up from the store:
    // what the outage kept from them came from there.
    for a in &apis {
        let m = metrics(a).await;
        assert!(metric(&m, "ferry_bus_resyncs_total") >= 1.0);
        assert!(metric(&m, "ferry_relay_gap_fills_total") > 0.0);
        assert_eq!(metric(&m, "ferry_bus_connected"), 1.0);
    }
    check_exactly_once_in_order(&seen, 3 * rounds * 20);
    stop_all(servers).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_online_and_revocation_span_the_instances() {
    let Some((db, redis)) = services().await else {
        return;
    };
    let read_key = "cluster-read-key-0123456789abcdef";
    let write_key = "cluster-write-key-0123456789abcdef";
    let keys = common::http::admin_keys_env(read_key, write_key);
    let servers = cluster(&db, &redis, &[("FERRY_ADMIN_KEYS", keys.as_str())]).await;
    let apis: Vec<Api> = servers.iter().map(Api::new).collect();
    let user = TestUser::random();
    let phone = user.device();
    let phone_id = b64u::encode(&phone.device_key.verifying_key().to_bytes());

    // A device that connects on instance 1 replaces its session on instance 0.
    let mut first = connect(&servers[0].ws_url(), phone.clone()).await;
    let mut laptop = connect(&servers[2].ws_url(), user.device()).await;
    let second = connect(&servers[1].ws_url(), phone.clone()).await;
    assert_eq!(
        common::client::expect_close(&mut first.ws).await,
        Closed::Code(4011)
    );

    // The laptop on instance 2 sees the phone online (its session is on instance 1).
    let online = |msg: ServerMessage| match msg {
        ServerMessage::Devices { devices, .. } => devices
            .into_iter()
            .find(|d| d.device == phone_id)
            .map(|d| d.online),
        other => panic!("{other:?}"),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if online(laptop.request(r#"{"type":"devices"}"#).await) == Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "the phone never showed online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every instance counts both sessions.
    for a in &apis {
        let r = a
            .admin(reqwest::Method::GET, "/admin/v1/stats", Some(read_key))
            .await;
        assert_eq!(r.ok()["live_sessions"], 2, "{}", r.text);
    }
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if online(laptop.request(r#"{"type":"devices"}"#).await) == Some(false) {
            break;
        }
        assert!(Instant::now() < deadline, "the phone stayed online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Revocation from one instance closes the device's session on another, within
    // one second (p99 over 100 revocations).
    let mut took = Vec::new();
    for i in 0..100usize {
        let creds = user.device();
        let dev = creds.device_key.verifying_key().to_bytes();
        let mut victim = connect(&servers[i % 3].ws_url(), creds).await;
        let ts = now_secs() * 1000;
        let sig = ferry_proto::keys::sign_revocation(&user.key, &dev, ts);
        let req = format!(
            r#"{{"type":"revoke","device":"{}","ts":{ts},"sig":"{}"}}"#,
            b64u::encode(&dev),
            b64u::encode(&sig)
        );
        let started = Instant::now();
        // The laptop (instance 2) revokes; the victim is on instance i % 3.
        let revoke = laptop.request(&req);
        let closed = common::client::expect_close(&mut victim.ws);
        let (reply, code) = tokio::join!(revoke, closed);
        took.push(started.elapsed());
        assert!(matches!(reply, ServerMessage::Ok { .. }), "{reply:?}");
        assert_eq!(code, Closed::Code(4003));
    }
    took.sort_unstable();
    let p99 = took[98];
    eprintln!(
        "revocation → close across instances: p50 {:?}, p99 {p99:?}, max {:?}",
        took[49], took[99]
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    drop(laptop);
    stop_all(servers).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_during_an_outage_closes_the_session_once_redis_is_back() {
    let Some((db, mut redis)) = services().await else {
        return;
    };
    let servers = cluster(&db, &redis, &[]).await;
    let user = TestUser::random();
    let mut admin = connect(&servers[0].ws_url(), user.device()).await;
    let creds = user.device();
    let dev = creds.device_key.verifying_key().to_bytes();
    let mut victim = connect(&servers[1].ws_url(), creds).await;
    redis.stop().await;
    let ts = now_secs() * 1000;
    let sig = ferry_proto::keys::sign_revocation(&user.key, &dev, ts);
    let req = format!(
        r#"{{"type":"revoke","device":"{}","ts":{ts},"sig":"{}"}}"#,
        b64u::encode(&dev),
        b64u::encode(&sig)
    );
    assert!(matches!(
        admin.request(&req).await,
        ServerMessage::Ok { .. }
    ));
    // The close for instance 1 was lost with Redis; once the bus is back, instance 1
    // finds the revocation in the store and closes the session.
    redis.resume().await;
    assert_eq!(
        common::client::expect_close(&mut victim.ws).await,
        Closed::Code(4003)
    );
    drop(admin);
    stop_all(servers).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_redis_times_out_into_local_limits() {
    let Some((db, redis)) = services().await else {
        return;
    };
    // Leases of one publish each, so every publish asks Redis.
    let servers = cluster(
        &db,
        &redis,
        &[
            ("FERRY_LIMITS_EVENTS_PER_SEC", "5000"),
            ("FERRY_LIMITS_BURST", "4"),
        ],
    )
    .await;
    let api = Api::new(&servers[0]);
    let user = TestUser::random();
    let mut c = connect(&servers[0].ws_url(), user.device()).await;
    // Redis stops answering without closing its connections: decisions time out
    // (200 ms each) until the breaker opens, then are local at once.
    redis.freeze();
    for _ in 0..20 {
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            c.request(&common::client::publish_json(&new_event_id(), b"x")),
        )
        .await
        .expect("a publish is answered while Redis hangs");
        assert!(matches!(reply, ServerMessage::Ack { .. }), "{reply:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let m = metrics(&api).await;
    assert!(metric(&m, "ferry_rate_limit_decisions_total{source=\"fallback\"}") > 0.0);
    assert_eq!(
        metric(&m, "ferry_breaker_state{breaker=\"redis\"}"),
        2.0,
        "{m}"
    );
    redis.thaw();
    drop(c);
    stop_all(servers).await;
    db.drop_db().await;
}
