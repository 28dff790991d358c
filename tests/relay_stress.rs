//! The relay under load (BAD-INPUTS §3.3 S1, S2; §3.1 W15): concurrent publishers
//! against one per-user log, isolation between many users, a slow consumer, and two
//! server instances on one PostgreSQL database. Real WebSocket clients against
//! port-0 servers, on SQLite and (when configured) PostgreSQL.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::client::{Closed, TestClient, TestUser, connect, new_event_id};
use common::db::databases;
use common::server::{TestServer, http_get};
use ferry::store::Backend;
use ferry_proto::b64u;
use ferry_proto::handshake::DeviceCredentials;
use ferry_proto::message::{EventMsg, ServerMessage};

/// Limits high enough that pipelined publishers are never throttled and fast
/// listeners never closed as slow consumers.
const HIGH_LIMITS: &[(&str, &str)] = &[
    ("FERRY_LIMITS_EVENTS_PER_SEC", "100000"),
    ("FERRY_LIMITS_BURST", "100000"),
    ("FERRY_LIMITS_OUTBOUND_QUEUE", "100000"),
];

/// Publishes in flight per device (below the server's 256 in-flight publishes).
const WINDOW: usize = 100;

/// An event id and its payload.
type Outgoing = (String, Vec<u8>);

/// `n` events with fresh ids; payload `tag|i`.
fn events(tag: &str, n: usize) -> Vec<Outgoing> {
    (0..n)
        .map(|i| (new_event_id(), format!("{tag}|{i}").into_bytes()))
        .collect()
}

fn device_id(creds: &DeviceCredentials) -> String {
    b64u::encode(creds.device_key.verifying_key().as_bytes())
}

fn seqs(events: &[EventMsg]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.seq.expect("stored event"))
        .collect()
}

/// Publishes `out` in windows of `window`; returns the acks `(id, seq)` and the
/// live `event`s that arrived meanwhile. Anything but an ack is a failure.
async fn publish_all(
    c: &mut TestClient,
    out: &[Outgoing],
    window: usize,
) -> (Vec<(String, u64)>, Vec<EventMsg>) {
    let (mut acks, mut live) = (Vec::new(), Vec::new());
    for chunk in out.chunks(window) {
        c.publish_window(chunk, |m| match m {
            ServerMessage::Ack {
                id,
                seq: Some(seq),
                duplicate: false,
                ..
            } => acks.push((id, seq)),
            ServerMessage::Event(e) => live.push(e),
            ServerMessage::Presence { .. } => {}
            other => panic!("expected an ack, got {other:?}"),
        })
        .await
        .expect("publisher stays connected");
    }
    (acks, live)
}

/// Reads live `event`s (skipping presence) until `live` holds `n`.
async fn read_events(c: &mut TestClient, live: &mut Vec<EventMsg>, n: usize) {
    while live.len() < n {
        match c.recv().await {
            ServerMessage::Event(e) => live.push(e),
            ServerMessage::Presence { .. } => {}
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// Checks that the acks are exactly seqs 1..=n, one per distinct id, and that the
/// log holds each acked id exactly once, at its acked seq, in order.
async fn check_acks_against_log(
    acks: &[(String, u64)],
    n: u64,
    reader: &mut TestClient,
    page: u32,
) {
    let by_id: HashMap<&str, u64> = acks.iter().map(|(id, s)| (id.as_str(), *s)).collect();
    assert_eq!(by_id.len(), acks.len(), "an id was acked twice");
    let mut acked: Vec<u64> = acks.iter().map(|(_, s)| *s).collect();
    acked.sort_unstable();
    assert_eq!(
        acked,
        (1..=n).collect::<Vec<_>>(),
        "acked seqs are not 1..={n}"
    );
    let (log, head) = reader.sync_all(page).await;
    assert_eq!(head, n);
    assert_eq!(
        seqs(&log),
        (1..=n).collect::<Vec<_>>(),
        "log is not 1..={n}"
    );
    for e in &log {
        assert_eq!(by_id.get(e.id.as_str()), e.seq.as_ref(), "id {}", e.id);
    }
}

/// S2: two devices publish 1,000 events each at once, pipelined; two more only
/// listen. One gap-free order, seen the same by everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_share_one_gap_free_order() {
    const N: usize = 1000;
    for db in databases().await {
        let srv = TestServer::start(db.url(), HIGH_LIMITS).await;
        let user = TestUser::random();
        let (a_creds, b_creds) = (user.device(), user.device());
        let ids = [device_id(&a_creds), device_id(&b_creds)];
        let listeners: Vec<_> = {
            let mut v = Vec::new();
            for _ in 0..2 {
                let mut c = connect(&srv.ws_url(), user.device()).await;
                v.push(tokio::spawn(async move {
                    let mut live = Vec::new();
                    read_events(&mut c, &mut live, 2 * N).await;
                    live
                }));
            }
            v
        };
        // Both publishers are online before either publishes.
        let mut publishers = Vec::new();
        for creds in [a_creds, b_creds] {
            publishers.push(connect(&srv.ws_url(), creds).await);
        }
        let publishers: Vec<_> = publishers
            .into_iter()
            .map(|mut c| {
                tokio::spawn(async move {
                    let (acks, mut live) = publish_all(&mut c, &events("x", N), WINDOW).await;
                    read_events(&mut c, &mut live, N).await;
                    (c, acks, live)
                })
            })
            .collect();
        let mut all_acks = Vec::new();
        let mut per_device = Vec::new();
        let mut reader = None;
        for p in publishers {
            let (c, acks, live) = p.await.unwrap();
            all_acks.extend(acks.iter().cloned());
            per_device.push((acks, live));
            reader = Some(c);
        }
        check_acks_against_log(&all_acks, 2 * N as u64, reader.as_mut().unwrap(), 1000).await;
        let ack_of: HashMap<&str, u64> = all_acks.iter().map(|(i, s)| (i.as_str(), *s)).collect();
        for l in listeners {
            let live = l.await.unwrap();
            assert_eq!(seqs(&live), (1..=2 * N as u64).collect::<Vec<_>>());
            assert!(live.iter().all(|e| ack_of[e.id.as_str()] == e.seq.unwrap()));
        }
        // Each publisher hears exactly the other's events, in order.
        for (me, (_, live)) in per_device.iter().enumerate() {
            let (other_acks, _) = &per_device[1 - me];
            assert!(
                live.iter().all(|e| e.device == ids[1 - me]),
                "own event relayed back"
            );
            let mut expect: Vec<u64> = other_acks.iter().map(|(_, s)| *s).collect();
            expect.sort_unstable();
            assert_eq!(seqs(live), expect);
        }
        srv.stop().await;
        db.finish("concurrent_publishers_share_one_gap_free_order")
            .await;
    }
}

/// S1: 50 users × 3 devices publish payloads tagged with their owner; nobody ever
/// sees another user's event, live or through `sync`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_never_see_each_others_events() {
    const USERS: usize = 50;
    const DEVICES: usize = 3;
    const EACH: usize = 10;
    for db in databases().await {
        let srv = TestServer::start(db.url(), &[]).await;
        // Everyone is online before anyone publishes (connected one by one: this is
        // about isolation, not a handshake storm).
        let mut devices = Vec::new();
        for _ in 0..USERS {
            let user = TestUser::random();
            let tag = b64u::encode(user.key.verifying_key().as_bytes());
            for d in 0..DEVICES {
                let creds = user.device();
                let me = device_id(&creds);
                let c = connect(&srv.ws_url(), creds).await;
                devices.push((c, tag.clone(), me, d));
            }
        }
        // Whether an event's payload carries `tag` as its owner.
        fn owned_by(e: &EventMsg, tag: &str) -> bool {
            let p = b64u::decode(&e.payload).unwrap();
            p.starts_with(format!("{tag}|").as_bytes())
        }
        // Phase 1: publish, and read live events until the siblings' 20 arrived.
        let tasks: Vec<_> = devices
            .into_iter()
            .map(|(mut c, tag, me, d)| {
                tokio::spawn(async move {
                    let out = events(&format!("{tag}|{d}"), EACH);
                    let (acks, mut live) = publish_all(&mut c, &out, EACH).await;
                    assert_eq!(acks.len(), EACH);
                    while live.iter().filter(|e| owned_by(e, &tag)).count() < (DEVICES - 1) * EACH {
                        let more = live.len() + 1;
                        read_events(&mut c, &mut live, more).await;
                    }
                    (c, tag, me, live)
                })
            })
            .collect();
        let mut devices = Vec::new();
        for t in tasks {
            devices.push(t.await.unwrap());
        }
        // Phase 2: every ack is in, so everything relayed is queued; what is still on
        // its way arrives before the pong. Then sync from 0.
        let tasks: Vec<_> = devices
            .into_iter()
            .map(|(mut c, tag, me, mut live)| {
                tokio::spawn(async move {
                    c.send_json(r#"{"type":"ping"}"#).await;
                    loop {
                        match c.recv().await {
                            ServerMessage::Pong { .. } => break,
                            ServerMessage::Event(e) => live.push(e),
                            ServerMessage::Presence { .. } => {}
                            other => panic!("{other:?}"),
                        }
                    }
                    let (log, _) = c.sync_all(1000).await;
                    let own_live: HashSet<&str> = live
                        .iter()
                        .filter(|e| owned_by(e, &tag))
                        .map(|e| e.id.as_str())
                        .collect();
                    assert_eq!(own_live.len(), (DEVICES - 1) * EACH, "live from siblings");
                    assert!(
                        live.iter().all(|e| e.device != me),
                        "own event relayed back"
                    );
                    let payloads: HashSet<Vec<u8>> = log
                        .iter()
                        .map(|e| b64u::decode(&e.payload).unwrap())
                        .collect();
                    let expect: HashSet<Vec<u8>> = (0..DEVICES)
                        .flat_map(|d| (0..EACH).map(move |i| (d, i)))
                        .map(|(d, i)| format!("{tag}|{d}|{i}").into_bytes())
                        .collect();
                    assert_eq!(payloads, expect, "sync returns exactly the user's events");
                    assert_eq!(
                        seqs(&log),
                        (1..=(DEVICES * EACH) as u64).collect::<Vec<_>>()
                    );
                    let cross_live = live.iter().filter(|e| !owned_by(e, &tag)).count();
                    let cross_sync = log.iter().filter(|e| !owned_by(e, &tag)).count();
                    (cross_live, cross_sync)
                })
            })
            .collect();
        let (mut cross_live, mut cross_sync) = (0, 0);
        for t in tasks {
            let (l, s) = t.await.unwrap();
            cross_live += l;
            cross_sync += s;
        }
        assert_eq!((cross_live, cross_sync), (0, 0), "cross-user deliveries");
        srv.stop().await;
        db.finish("users_never_see_each_others_events").await;
    }
}

/// The Prometheus counter of sessions the server closed with `code`.
async fn closed_with(srv: &TestServer, code: u16) -> u64 {
    let text = http_get(srv.admin, "/metrics").await.unwrap();
    let needle = format!("sessions_closed_total{{code=\"{code}\"}} ");
    text.lines()
        .find_map(|l| {
            l.split_once(&needle)
                .map(|(_, v)| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// W15: a device that stops reading is closed 4009 without slowing the others, and
/// catches up with `sync` after reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_and_catches_up_with_sync() {
    const N: usize = 200;
    const PAYLOAD: usize = 32 * 1024;
    // ~44 KB per event message, ~8.8 MB for all: more than twice what the socket
    // buffers (up to 4 MB server side here), the server's write buffer (cut to one
    // message) and the queue of 16 hold together.
    let limits = &[
        ("FERRY_LIMITS_EVENTS_PER_SEC", "100000"),
        ("FERRY_LIMITS_BURST", "100000"),
        ("FERRY_LIMITS_OUTBOUND_QUEUE", "16"),
        ("FERRY_LIMITS_MAX_PAYLOAD", "32768"),
        ("FERRY_LIMITS_MAX_MESSAGE_SIZE", "65536"),
        ("FERRY_LIMITS_MAX_WRITE_BUFFER_SIZE", "69632"),
    ];
    for db in databases().await {
        let srv = TestServer::start(db.url(), limits).await;
        let user = TestUser::random();
        let s_creds = user.device();
        let mut slow = connect(&srv.ws_url(), s_creds.clone()).await;
        let mut fast = connect(&srv.ws_url(), user.device()).await;
        let mut publisher = connect(&srv.ws_url(), user.device()).await;
        let reader = tokio::spawn(async move {
            let mut live = Vec::new();
            read_events(&mut fast, &mut live, N).await;
            live
        });
        let out: Vec<Outgoing> = (0..N)
            .map(|i| {
                let mut p = format!("{i}|").into_bytes();
                p.resize(PAYLOAD, b'a' + (i % 26) as u8);
                (new_event_id(), p)
            })
            .collect();
        // Small windows: one commit relays at most 8 events, well inside the queue of
        // a reader that keeps up.
        let t0 = std::time::Instant::now();
        let (acks, _) = publish_all(&mut publisher, &out, 8).await;
        eprintln!("TIMING publish {:?}", t0.elapsed());
        let live = reader.await.unwrap();
        eprintln!("TIMING reader {:?}", t0.elapsed());
        assert_eq!(seqs(&live), (1..=N as u64).collect::<Vec<_>>());
        for (e, (id, p)) in live.iter().zip(&out) {
            assert_eq!((&e.id, b64u::decode(&e.payload).unwrap()), (id, p.clone()));
        }
        // Now the slow device reads what reached it: a prefix of the log, then the
        // end of the connection.
        let mut got = Vec::new();
        let end = loop {
            match slow.try_recv(Duration::from_secs(20)).await {
                Ok(ServerMessage::Event(e)) => got.push(e),
                Ok(ServerMessage::Presence { .. }) => {}
                Ok(other) => panic!("{other:?}"),
                Err(closed) => break closed,
            }
        };
        assert!(got.len() < N, "the slow consumer was never cut off");
        assert_eq!(seqs(&got), (1..=got.len() as u64).collect::<Vec<_>>());
        // The close frame sits behind the data the device never read, so it only
        // arrives if the device reads again before the server's close timeout (3 s);
        // otherwise the socket just ends. The server's own count says why it closed.
        assert!(
            matches!(end, Closed::Code(4009) | Closed::NoFrame),
            "{end:?}"
        );
        assert_eq!(
            closed_with(&srv, 4009).await,
            1,
            "exactly one slow consumer"
        );
        eprintln!(
            "slow consumer ({:?}): read {} of {N} events, then {end:?}",
            db.backend(),
            got.len()
        );
        eprintln!("TIMING slow read {:?}", t0.elapsed());
        let mut again = connect(&srv.ws_url(), s_creds).await;
        check_acks_against_log(&acks, N as u64, &mut again, 4).await;
        eprintln!("TIMING sync {:?}", t0.elapsed());
        srv.stop().await;
        db.finish("slow_consumer_is_cut_off_and_catches_up_with_sync")
            .await;
    }
}

/// S2 across processes' worth of state: two server instances on one PostgreSQL
/// database, a device of the same user on each, publishing 1,000 events at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_share_one_gap_free_order() {
    const N: usize = 1000;
    for db in databases().await {
        if db.backend() == Backend::Sqlite {
            // One SQLite file is one server's: this is about PostgreSQL.
            continue;
        }
        let servers = [
            TestServer::start(db.url(), HIGH_LIMITS).await,
            TestServer::start(db.url(), HIGH_LIMITS).await,
        ];
        let user = TestUser::random();
        let mut tasks = Vec::new();
        for srv in &servers {
            let mut c = connect(&srv.ws_url(), user.device()).await;
            tasks.push(tokio::spawn(async move {
                let (acks, _) = publish_all(&mut c, &events("x", N), WINDOW).await;
                (c, acks)
            }));
        }
        let mut all = Vec::new();
        let mut reader = None;
        for t in tasks {
            let (c, acks) = t.await.unwrap();
            assert_eq!(acks.len(), N);
            all.extend(acks);
            reader = Some(c);
        }
        check_acks_against_log(&all, 2 * N as u64, reader.as_mut().unwrap(), 1000).await;
        for srv in servers {
            srv.stop().await;
        }
        db.finish("two_servers_on_one_postgres_share_one_gap_free_order")
            .await;
    }
}
