//! The relay under load (BAD-INPUTS §3.3 S1, S2; §3.1 W15): concurrent publishers
//! against one per-user log, isolation between many users, a slow consumer, `sync`
//! pages of large events, and two server instances on one PostgreSQL database
//! (`tests/durability.rs` runs the same with two `ferry serve` processes). Real
//! WebSocket clients against port-0 servers, on SQLite and (when configured)
//! PostgreSQL.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::client::{Closed, TestClient, TestUser, connect, new_event_id};
use common::db::databases;
use common::server::{TestServer, http_get};
use ferry::store::Backend;
use ferry_proto::b64u;
use ferry_proto::handshake::{ClientEphemeral, ClientHandshake, DeviceCredentials, ServerPin};
use ferry_proto::message::{EventMsg, ServerMessage};
use futures_util::{SinkExt as _, StreamExt as _};
use rand::rngs::OsRng;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

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
        // Everyone is online before anyone publishes. Eight handshakes at a time:
        // this is about isolation, not a handshake storm.
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
        let mut connecting = Vec::new();
        for _ in 0..USERS {
            let user = TestUser::random();
            let tag = b64u::encode(user.key.verifying_key().as_bytes());
            for d in 0..DEVICES {
                let (url, creds, tag) = (srv.ws_url(), user.device(), tag.clone());
                let permits = permits.clone();
                connecting.push(tokio::spawn(async move {
                    let _permit = permits.acquire().await.unwrap();
                    let me = device_id(&creds);
                    (connect(&url, creds).await, tag, me, d)
                }));
            }
        }
        let mut devices = Vec::new();
        for c in connecting {
            devices.push(c.await.unwrap());
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

/// A device whose socket has a tiny receive buffer, so the server's send buffer
/// stays small as well and a stalled reader is found after little data.
async fn connect_small_window(srv: &TestServer, creds: DeviceCredentials) -> TestClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(srv.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(srv.ws_url(), MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    let pin = ServerPin::Key(common::server::server_key().verifying_key().to_bytes());
    let mut hs = ClientHandshake::new(creds, pin, ClientEphemeral::random(&mut OsRng));
    ws.send(Message::text(hs.client_hello().unwrap()))
        .await
        .unwrap();
    let Some(Ok(Message::Text(hello))) = ws.next().await else {
        panic!("server_hello expected")
    };
    ws.send(Message::text(hs.handle_text(&hello).unwrap()))
        .await
        .unwrap();
    let mut est = hs.into_established().unwrap();
    let Some(Ok(Message::Binary(b))) = ws.next().await else {
        panic!("auth_ok expected")
    };
    let auth_ok = serde_json::from_slice(&est.opener.open(&b).unwrap()).unwrap();
    TestClient { ws, est, auth_ok }
}

/// W15: a device that stops reading is closed 4009 without slowing the others, and
/// catches up with `sync` after reconnecting.
///
/// How much data a stalled reader absorbs depends on the kernel's socket buffers,
/// so the publisher goes on until the server reports the cut (its 4009 counter),
/// then publishes `TAIL` more events, the last one marked `end`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_and_catches_up_with_sync() {
    const PAYLOAD: usize = 32 * 1024;
    const WINDOW: usize = 8;
    const TAIL: usize = 2 * WINDOW;
    // ~44 KB per event message: ~66 MB without a cut means none is coming.
    const MAX: usize = 1500;
    let limits = &[
        ("FERRY_LIMITS_EVENTS_PER_SEC", "100000"),
        ("FERRY_LIMITS_BURST", "100000"),
        ("FERRY_LIMITS_OUTBOUND_QUEUE", "16"),
        ("FERRY_LIMITS_MAX_PAYLOAD", "32768"),
        ("FERRY_LIMITS_MAX_MESSAGE_SIZE", "65536"),
        // The smallest write buffer that still holds one full message.
        ("FERRY_LIMITS_MAX_WRITE_BUFFER_SIZE", "69632"),
    ];
    let event = |i: usize, tag: &str| {
        let mut p = format!("{tag}|{i}|").into_bytes();
        p.resize(PAYLOAD, b'a' + (i % 26) as u8);
        (new_event_id(), p)
    };
    for db in databases().await {
        let srv = TestServer::start(db.url(), limits).await;
        let user = TestUser::random();
        let s_creds = user.device();
        let mut slow = connect_small_window(&srv, s_creds.clone()).await;
        let mut fast = connect(&srv.ws_url(), user.device()).await;
        let mut publisher = connect(&srv.ws_url(), user.device()).await;
        let reader = tokio::spawn(async move {
            let mut live: Vec<EventMsg> = Vec::new();
            while !live
                .last()
                .is_some_and(|e| b64u::decode(&e.payload).unwrap().starts_with(b"end|"))
            {
                let more = live.len() + 1;
                read_events(&mut fast, &mut live, more).await;
            }
            live
        });
        // Small windows: one commit relays at most 8 events, well inside the queue of
        // a reader that keeps up.
        let mut out = Vec::new();
        let mut acks = Vec::new();
        while closed_with(&srv, 4009).await == 0 {
            assert!(out.len() < MAX, "the slow consumer was never cut off");
            let window: Vec<Outgoing> = (out.len()..out.len() + WINDOW)
                .map(|i| event(i, "x"))
                .collect();
            acks.extend(publish_all(&mut publisher, &window, WINDOW).await.0);
            out.extend(window);
        }
        let cut = out.len();
        let tail: Vec<Outgoing> = (cut..cut + TAIL)
            .map(|i| event(i, if i + 1 == cut + TAIL { "end" } else { "x" }))
            .collect();
        acks.extend(publish_all(&mut publisher, &tail, WINDOW).await.0);
        out.extend(tail);
        let n = out.len();
        let live = reader.await.unwrap();
        assert_eq!(seqs(&live), (1..=n as u64).collect::<Vec<_>>());
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
        assert!(got.len() < cut, "{} events after the cut", got.len());
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
            "slow consumer ({:?}): cut after {cut} published, read {} of {n}, then {end:?}",
            db.backend(),
            got.len()
        );
        // Pages of one event: a page must fit the server's one-message write buffer
        // (see `sync_pages_of_large_events_fit_the_write_buffer`).
        let mut again = connect(&srv.ws_url(), s_creds).await;
        check_acks_against_log(&acks, n as u64, &mut again, 1).await;
        srv.stop().await;
        db.finish("slow_consumer_is_cut_off_and_catches_up_with_sync")
            .await;
    }
}

/// A `sync` page is one message: with large events, a page of `limit` events must
/// still be sendable (cut short, `more: true`), not end the session. With the
/// default limits 40 events of 32 KiB make a 1.8 MB page, beyond the 1 MiB write
/// buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_pages_of_large_events_fit_the_write_buffer() {
    const N: usize = 40;
    for db in databases().await {
        let srv = TestServer::start(db.url(), HIGH_LIMITS).await;
        let user = TestUser::random();
        let mut publisher = connect(&srv.ws_url(), user.device()).await;
        let out: Vec<Outgoing> = (0..N)
            .map(|i| (new_event_id(), vec![b'a' + (i % 26) as u8; 32 * 1024]))
            .collect();
        let (acks, _) = publish_all(&mut publisher, &out, 8).await;
        let mut reader = connect(&srv.ws_url(), user.device()).await;
        reader
            .send_json(r#"{"type":"sync","after":0,"limit":1000}"#)
            .await;
        let page = loop {
            match reader.try_recv(Duration::from_secs(20)).await {
                Ok(ServerMessage::Presence { .. }) => continue,
                Ok(m) => break m,
                Err(closed) => panic!("sync of large events closed the session: {closed:?}"),
            }
        };
        let ServerMessage::Events { events, more, .. } = page else {
            panic!("{page:?}")
        };
        assert!(!events.is_empty());
        assert_eq!(more, events.len() < N);
        check_acks_against_log(&acks, N as u64, &mut reader, 1000).await;
        srv.stop().await;
        db.finish("sync_pages_of_large_events_fit_the_write_buffer")
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
