//! The relay end to end (§4): publish, ack, live relay, sync, cursor, devices,
//! presence, revocation, ephemeral events and limits — real WebSocket clients
//! against a port-0 server, on SQLite and (when configured) PostgreSQL.

mod common;

use std::time::Duration;

use common::client::{Closed, TestClient, TestUser, connect, expect_close, try_connect};
use common::server::TestServer;
use ferry_proto::b64u;
use ferry_proto::message::{ErrorCode, ServerMessage};

fn uuid(n: u128) -> String {
    ferry_proto::message::format_uuid(&n.to_be_bytes())
}

fn publish(id: &str, payload: &[u8], extra: &str) -> String {
    format!(
        r#"{{"type":"publish","rid":"{id}","id":"{id}","payload":"{}"{extra}}}"#,
        b64u::encode(payload)
    )
}

async fn ack_seq(c: &mut TestClient, id: &str, payload: &[u8]) -> u64 {
    match c.request(&publish(id, payload, "")).await {
        ServerMessage::Ack {
            seq: Some(seq),
            duplicate: false,
            ..
        } => seq,
        other => panic!("expected ack, got {other:?}"),
    }
}

/// A new user with two devices connected; `a` has seen `b` come online.
async fn two_online(url: &str) -> (TestUser, TestClient, TestClient) {
    let user = TestUser::random();
    let mut a = connect(url, user.device()).await;
    let b = connect(url, user.device()).await;
    assert!(matches!(
        a.recv().await,
        ServerMessage::Presence { online: true, .. }
    ));
    (user, a, b)
}

/// Next message that is not presence.
async fn next_event(c: &mut TestClient) -> ServerMessage {
    loop {
        match c.recv().await {
            ServerMessage::Presence { .. } => continue,
            m => return m,
        }
    }
}

each_backend!(publish_ack_relay_sync_and_duplicates, &[], |srv| {
    let (user, mut a, mut b) = two_online(&srv.ws_url()).await;
    for i in 1..=5u64 {
        assert_eq!(
            ack_seq(&mut a, &uuid(i as u128), format!("p{i}").as_bytes()).await,
            i
        );
    }
    for i in 1..=5u64 {
        match next_event(&mut b).await {
            ServerMessage::Event(e) => {
                assert_eq!(e.seq, Some(i));
                assert_eq!(
                    b64u::decode(&e.payload).unwrap(),
                    format!("p{i}").as_bytes()
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // Duplicate: the original ack, nothing relayed again.
    match a.request(&publish(&uuid(3), b"other", "")).await {
        ServerMessage::Ack { seq, duplicate, .. } => {
            assert_eq!(seq, Some(3));
            assert!(duplicate);
        }
        other => panic!("{other:?}"),
    }
    // Sync pages.
    match b
        .request(r#"{"type":"sync","rid":1,"after":1,"limit":2}"#)
        .await
    {
        ServerMessage::Events {
            events,
            head,
            more,
            truncated,
            ..
        } => {
            assert_eq!(
                events.iter().map(|e| e.seq.unwrap()).collect::<Vec<_>>(),
                vec![2, 3]
            );
            assert_eq!(head, 5);
            assert!(more);
            assert!(truncated.is_none());
        }
        other => panic!("{other:?}"),
    }
    match b.request(r#"{"type":"sync","rid":2,"after":3}"#).await {
        ServerMessage::Events { events, more, .. } => {
            assert_eq!(events.len(), 2);
            assert!(!more);
        }
        other => panic!("{other:?}"),
    }
    // A new session's auth_ok carries the head.
    let c = connect(&srv.ws_url(), user.device()).await;
    assert!(matches!(c.auth_ok, ServerMessage::AuthOk { head: 5, .. }));
});

each_backend!(conflicts_and_keys, &[], |srv| {
    let user = TestUser::random();
    let mut a = connect(&srv.ws_url(), user.device()).await;
    let key = b64u::encode(b"settings");
    let with =
        |id: u128, base: u64| publish(&uuid(id), b"v", &format!(r#","key":"{key}","base":{base}"#));
    assert!(matches!(
        a.request(&with(1, 0)).await,
        ServerMessage::Ack { seq: Some(1), .. }
    ));
    match a.request(&with(2, 0)).await {
        ServerMessage::Conflict { head, key: k, .. } => {
            assert_eq!(head, 1);
            assert_eq!(k, key);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        a.request(&with(3, 1)).await,
        ServerMessage::Ack { seq: Some(2), .. }
    ));
    // Nothing was stored for the conflict: head is 2.
    assert!(matches!(
        a.request(r#"{"type":"sync","after":0}"#).await,
        ServerMessage::Events { head: 2, .. }
    ));
});

// A session gone quiet parks its sealing keys (frees the expanded keys until the
// next frame, `Sealer::park`): right after the greeting, and at a ping tick with no
// frame since the previous one. After several quiet ticks both sessions still
// publish, relay and reply, on the same frame counters.
each_backend!(
    sessions_work_after_their_keys_are_parked,
    &[("FERRY_LIMITS_PING_INTERVAL", "1s")],
    |srv| {
        let (_, mut a, mut b) = two_online(&srv.ws_url()).await;
        tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
        assert_eq!(ack_seq(&mut a, &uuid(1), b"after a quiet spell").await, 1);
        match next_event(&mut b).await {
            ServerMessage::Event(e) => assert_eq!(e.seq, Some(1)),
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
        assert_eq!(ack_seq(&mut b, &uuid(2), b"and another").await, 2);
        match next_event(&mut a).await {
            ServerMessage::Event(e) => assert_eq!(e.seq, Some(2)),
            other => panic!("{other:?}"),
        }
    }
);

each_backend!(ephemeral_events_are_relayed_not_stored, &[], |srv| {
    let user = TestUser::random();
    let mut a = connect(&srv.ws_url(), user.device()).await;
    let b_creds = user.device();
    let b_key = b64u::encode(b_creds.device_key.verifying_key().as_bytes());
    let mut b = connect(&srv.ws_url(), b_creds).await;
    let mut c = connect(&srv.ws_url(), user.device()).await;
    match a
        .request(&publish(&uuid(1), b"typing", r#","ephemeral":true"#))
        .await
    {
        ServerMessage::Ack {
            ephemeral: true,
            delivered: Some(2),
            seq: None,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    match a
        .request(&publish(
            &uuid(2),
            b"only-b",
            &format!(r#","ephemeral":true,"to":["{b_key}"]"#),
        ))
        .await
    {
        ServerMessage::Ack {
            delivered: Some(1), ..
        } => {}
        other => panic!("{other:?}"),
    }
    for (client, expect) in [(&mut b, vec!["typing", "only-b"]), (&mut c, vec!["typing"])] {
        for want in expect {
            match next_event(client).await {
                ServerMessage::Event(e) => {
                    assert!(e.ephemeral);
                    assert_eq!(e.seq, None);
                    assert_eq!(b64u::decode(&e.payload).unwrap(), want.as_bytes());
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(matches!(
        a.request(r#"{"type":"sync","after":0}"#).await,
        ServerMessage::Events { head: 0, ref events, .. } if events.is_empty()
    ));
});

each_backend!(ttl_expired_events_are_not_served, &[], |srv| {
    let user = TestUser::random();
    let mut a = connect(&srv.ws_url(), user.device()).await;
    assert!(matches!(
        a.request(&publish(&uuid(1), b"short", r#","ttl":1"#)).await,
        ServerMessage::Ack { seq: Some(1), .. }
    ));
    assert!(matches!(
        a.request(&publish(&uuid(2), b"long", "")).await,
        ServerMessage::Ack { seq: Some(2), .. }
    ));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    match a.request(r#"{"type":"sync","after":0}"#).await {
        ServerMessage::Events { events, head, .. } => {
            assert_eq!(head, 2);
            assert_eq!(
                events.iter().map(|e| e.seq.unwrap()).collect::<Vec<_>>(),
                vec![2]
            );
        }
        other => panic!("{other:?}"),
    }
    // ttl beyond max_ttl is refused.
    match a
        .request(&publish(&uuid(3), b"x", r#","ttl":999999999"#))
        .await
    {
        ServerMessage::Error {
            code: ErrorCode::BadRequest,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
});

each_backend!(devices_presence_cursor_and_revocation, &[], |srv| {
    let user = TestUser::random();
    let mut a = connect(&srv.ws_url(), user.device()).await;
    let b_creds = user.device();
    let b_dev = b_creds.device_key.verifying_key().to_bytes();
    let mut b = connect(&srv.ws_url(), b_creds.clone()).await;
    assert!(matches!(
        a.recv().await,
        ServerMessage::Presence { online: true, .. }
    ));
    ack_seq(&mut a, &uuid(1), b"x").await;
    b.send_json(r#"{"type":"cursor","seq":1}"#).await;
    b.send_json(r#"{"type":"cursor","seq":0}"#).await; // never backwards
    // b handles its frames in order: once the ping is answered, both cursors are stored.
    assert!(matches!(
        b.request(r#"{"type":"ping"}"#).await,
        ServerMessage::Pong { .. }
    ));
    match a.request(r#"{"type":"devices","rid":9}"#).await {
        ServerMessage::Devices { devices, .. } => {
            assert_eq!(devices.len(), 2);
            let bd = devices
                .iter()
                .find(|d| d.device == b64u::encode(&b_dev))
                .unwrap();
            assert!(bd.online);
            assert_eq!(bd.cursor, 1);
            assert!(bd.revoked_at.is_none());
        }
        other => panic!("{other:?}"),
    }
    // Forged (signed by another user) and out-of-window revocations are refused.
    let now_ms = common::client::now_secs() * 1000;
    let revoke = |sig: [u8; 64], ts: u64| {
        format!(
            r#"{{"type":"revoke","rid":1,"device":"{}","ts":{ts},"sig":"{}"}}"#,
            b64u::encode(&b_dev),
            b64u::encode(&sig)
        )
    };
    let forged = ferry_proto::keys::sign_revocation(&TestUser::random().key, &b_dev, now_ms);
    assert!(matches!(
        a.request(&revoke(forged, now_ms)).await,
        ServerMessage::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    let old = now_ms - 6 * 60 * 1000;
    let stale = ferry_proto::keys::sign_revocation(&user.key, &b_dev, old);
    assert!(matches!(
        a.request(&revoke(stale, old)).await,
        ServerMessage::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    // A good one: b is closed 4003, a hears presence revoked.
    let sig = ferry_proto::keys::sign_revocation(&user.key, &b_dev, now_ms);
    assert!(matches!(
        a.request(&revoke(sig, now_ms)).await,
        ServerMessage::Ok { .. }
    ));
    assert_eq!(expect_close(&mut b.ws).await, Closed::Code(4003));
    match a.recv().await {
        ServerMessage::Presence {
            online: false,
            revoked: true,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    // Replayed: refused.
    assert!(matches!(
        a.request(&revoke(sig, now_ms)).await,
        ServerMessage::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    // Re-auth refused.
    assert_eq!(
        try_connect(&srv.ws_url(), b_creds).await.err(),
        Some(Closed::Code(4002))
    );
    // Offline presence when a device leaves.
    let c = connect(&srv.ws_url(), user.device()).await;
    assert!(matches!(
        a.recv().await,
        ServerMessage::Presence { online: true, .. }
    ));
    drop(c);
    assert!(matches!(
        a.recv().await,
        ServerMessage::Presence {
            online: false,
            revoked: false,
            ..
        }
    ));
});

each_backend!(
    bad_requests_keep_the_session,
    &[("FERRY_LIMITS_MAX_PAYLOAD", "1024")],
    |srv| {
        let mut a = connect(&srv.ws_url(), TestUser::random().device()).await;
        let id = uuid(1);
        let cases = [
            (
                r#"{"type":"publish","id":"not-a-uuid","payload":""}"#.to_string(),
                ErrorCode::BadRequest,
            ),
            (publish(&id, &[0u8; 1025], ""), ErrorCode::PayloadTooLarge),
            (publish(&id, b"x", r#","base":1"#), ErrorCode::BadRequest),
            (
                r#"{"type":"sync","after":"x"}"#.to_string(),
                ErrorCode::BadRequest,
            ),
            ("[]".to_string(), ErrorCode::BadRequest),
            (r#"{"type":"warp"}"#.to_string(), ErrorCode::UnknownType),
        ];
        for (req, code) in cases {
            match a.request(&req).await {
                ServerMessage::Error { code: c, .. } => assert_eq!(c, code, "{req}"),
                other => panic!("{req}: {other:?}"),
            }
        }
        assert_eq!(ack_seq(&mut a, &id, b"fine").await, 1);
    }
);

// At the default limits a full-size publish (64 KiB of payload, ~87 KiB of JSON) is
// read in many pieces of the 1.5 KiB read buffer; it is stored and relayed intact,
// and one byte more is refused without ending the session.
each_backend!(full_size_payload_at_default_limits, &[], |srv| {
    let user = TestUser::random();
    let mut a = connect(&srv.ws_url(), user.device()).await;
    let mut b = connect(&srv.ws_url(), user.device()).await;
    let payload: Vec<u8> = (0..65_536u32).map(|i| (i * 7 + i / 251) as u8).collect();
    assert_eq!(ack_seq(&mut a, &uuid(1), &payload).await, 1);
    match next_event(&mut b).await {
        ServerMessage::Event(e) => {
            assert_eq!(e.seq, Some(1));
            assert_eq!(b64u::decode(&e.payload).unwrap(), payload);
        }
        other => panic!("{other:?}"),
    }
    let over = [payload.as_slice(), b"!"].concat();
    match a.request(&publish(&uuid(2), &over, "")).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::PayloadTooLarge),
        other => panic!("{other:?}"),
    }
    assert_eq!(ack_seq(&mut a, &uuid(3), b"after").await, 2);
});

each_backend!(
    rate_limit_says_when_to_retry,
    &[
        ("FERRY_LIMITS_EVENTS_PER_SEC", "5"),
        ("FERRY_LIMITS_BURST", "5")
    ],
    |srv| {
        let mut a = connect(&srv.ws_url(), TestUser::random().device()).await;
        let mut retry = None;
        for i in 0..10u128 {
            match a.request(&publish(&uuid(i), b"x", "")).await {
                ServerMessage::Ack { .. } => {}
                ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    retry_after_ms,
                    ..
                } => {
                    retry = retry_after_ms;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        let wait = retry.expect("the burst runs out");
        assert!(wait > 0 && wait <= 1000, "{wait}");
        tokio::time::sleep(Duration::from_millis(wait + 20)).await;
        assert!(matches!(
            a.request(&publish(&uuid(100), b"x", "")).await,
            ServerMessage::Ack { .. }
        ));
        // Ignoring retry_after entirely gets the session closed 4008.
        for i in 200..300u128 {
            a.send_json(&publish(&uuid(i), b"x", "")).await;
        }
        assert_eq!(expect_close(&mut a.ws).await, Closed::Code(4008));
    }
);

/// Storage that cannot take writes answers `unavailable` (no ack), the session goes
/// on, and a retry with the same id succeeds once storage is back — exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_down_means_no_ack_and_a_safe_retry() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ferry.db", dir.path().display());
    let srv = TestServer::start(&url, &[]).await;
    let mut a = connect(&srv.ws_url(), TestUser::random().device()).await;
    assert_eq!(ack_seq(&mut a, &uuid(1), b"before").await, 1);
    // Another process holds the database's write lock longer than the busy timeout.
    let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    match a.request(&publish(&uuid(2), b"during", "")).await {
        ServerMessage::Error {
            code: ErrorCode::Unavailable,
            ..
        } => {}
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(matches!(
        a.request(r#"{"type":"ping"}"#).await,
        ServerMessage::Pong { .. }
    ));
    sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();
    // The client retries under the same id.
    assert_eq!(ack_seq(&mut a, &uuid(2), b"during").await, 2);
    match a.request(r#"{"type":"sync","after":0}"#).await {
        ServerMessage::Events { events, head, .. } => {
            assert_eq!(head, 2);
            assert_eq!(events.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    srv.stop().await;
}

// A device that connects while another device of its user publishes: the head in
// its `auth_ok` and the events relayed to it leave no gap, whether the greeting
// reused the head read during admission or read it again (see `Hub::generation`).
// The first connection registers the device (no head from admission); the rest
// are a known device's.
each_backend!(
    auth_ok_head_and_relay_leave_no_gap,
    &[
        ("FERRY_LIMITS_EVENTS_PER_SEC", "100000"),
        ("FERRY_LIMITS_BURST", "100000")
    ],
    |srv| {
        let user = TestUser::random();
        let mut publisher = connect(&srv.ws_url(), user.device()).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let publishing = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0u128;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let window: Vec<_> = (0..8)
                        .map(|_| {
                            n += 1;
                            (uuid(n), vec![7u8; 32])
                        })
                        .collect();
                    publisher.publish_window(&window, |_| {}).await.unwrap();
                }
                n
            })
        };
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        for round in 0..100 {
            let mut c = connect(&srv.ws_url(), user.device_with(key.clone())).await;
            let ServerMessage::AuthOk { head, .. } = c.auth_ok else {
                panic!("{:?}", c.auth_ok)
            };
            let first = loop {
                match c.recv().await {
                    ServerMessage::Event(e) => break e.seq.unwrap(),
                    ServerMessage::Presence { .. } => continue,
                    other => panic!("{other:?}"),
                }
            };
            assert!(
                first <= head + 1,
                "round {round}: auth_ok head {head}, first relayed seq {first}: a gap"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(publishing.await.unwrap() > 0);
    }
);

// A device that connects again is greeted with its user's head as it is now, both
// when nothing was stored since its last session and when another device published
// meanwhile (a remembered admission's head holds only while nothing was stored).
each_backend!(
    a_returning_device_is_greeted_with_the_current_head,
    &[],
    |srv| {
        let user = TestUser::random();
        let a = user.device();
        let mut b = connect(&srv.ws_url(), user.device()).await;
        let head_of = |c: &TestClient| match c.auth_ok {
            ServerMessage::AuthOk { head, .. } => head,
            ref other => panic!("{other:?}"),
        };
        let mut n = 0u64;
        for round in 0..4u64 {
            for _ in 0..2 {
                let c = connect(&srv.ws_url(), a.clone()).await;
                assert_eq!(head_of(&c), n, "round {round}");
                drop(c);
            }
            for _ in 0..=round {
                n += 1;
                assert_eq!(ack_seq(&mut b, &uuid(u128::from(n)), b"x").await, n);
            }
        }
    }
);

/// Holds the database's write lock from a connection of its own until dropped (or
/// `release`d): SQLite's `BEGIN IMMEDIATE`; on PostgreSQL an `EXCLUSIVE` lock on
/// `events`, which lets reads through and makes inserts wait.
enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    async fn take(db: &common::db::TestDb) -> Self {
        use sqlx::Connection as _;
        match db.backend() {
            ferry::store::Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(db.url()).await.unwrap();
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                Self::Sqlite(c)
            }
            ferry::store::Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(db.url()).await.unwrap();
                sqlx::raw_sql("BEGIN; LOCK TABLE events IN EXCLUSIVE MODE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                Self::Postgres(c)
            }
        }
    }

    async fn release(self) {
        match self {
            Self::Sqlite(mut c) => drop(sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap()),
            Self::Postgres(mut c) => drop(sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap()),
        }
    }
}

/// A device's publishes reach the group-commit writer in the order it sent them even
/// when the writer's queue is full: while another connection holds the database's
/// write lock, ten devices (one per user) send 512 publishes each, far more than the
/// writer's batch and queue hold, so a session's later publishes wait for room
/// behind its earlier ones. Once the lock is gone every publish is acked, and each
/// device's acks carry seqs 1..=512 in the order it sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_publishes_keep_their_order_while_the_writer_queue_is_full() {
    const DEVICES: usize = 10;
    const EACH: usize = 512;
    for db in common::db::databases().await {
        let srv = TestServer::start(
            db.url(),
            &[
                ("FERRY_LIMITS_EVENTS_PER_SEC", "100000"),
                ("FERRY_LIMITS_BURST", "100000"),
            ],
        )
        .await;
        let mut clients = Vec::new();
        for _ in 0..DEVICES {
            clients.push(connect(&srv.ws_url(), TestUser::random().device()).await);
        }
        let lock = WriteLock::take(&db).await;
        let mut sends = Vec::new();
        for (d, mut c) in clients.into_iter().enumerate() {
            sends.push(tokio::spawn(async move {
                let window: Vec<(String, Vec<u8>)> = (0..EACH)
                    .map(|i| (uuid((d * EACH + i + 1) as u128), vec![d as u8; 16]))
                    .collect();
                let mut acks = Vec::new();
                c.publish_window(&window, |m| match m {
                    ServerMessage::Ack {
                        id, seq: Some(seq), ..
                    } => acks.push((id, seq)),
                    ServerMessage::Presence { .. } => {}
                    other => panic!("device {d}: expected acks, got {other:?}"),
                })
                .await
                .unwrap_or_else(|e| panic!("device {d}: {e:?}"));
                (window, acks)
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        lock.release().await;
        for send in sends {
            let (window, acks) = send.await.unwrap();
            assert_eq!(acks.len(), EACH, "{:?}", db.backend());
            // The n-th publish sent is the n-th acked and got seq n.
            let first_out_of_order = window
                .iter()
                .zip(&acks)
                .zip(1u64..)
                .find(|(((sent, _), (acked, seq)), n)| sent != acked || seq != n);
            assert!(
                first_out_of_order.is_none(),
                "{:?}: publish acked out of order: {first_out_of_order:?}",
                db.backend()
            );
        }
        srv.stop().await;
        db.finish("a_devices_publishes_keep_their_order_while_the_writer_queue_is_full")
            .await;
    }
}
