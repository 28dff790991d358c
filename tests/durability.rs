//! Crash durability (BAD-INPUTS §3.5 F1): the real `ferry serve` binary is killed
//! with SIGKILL while devices publish under load, then restarted on the same
//! database. Every acked event survives exactly once at its acked seq, seqs stay
//! contiguous, unacked events are stored at most once, and retrying them is
//! idempotent. On SQLite and (when configured) PostgreSQL.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::{TestClient, TestUser, connect, new_event_id};
use common::db::databases;
use common::server::{SERVER_SEED, http_get};
use ferry::store::Backend;
use ferry_proto::b64u;
use ferry_proto::handshake::DeviceCredentials;
use ferry_proto::message::{ErrorCode, ServerMessage};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// One `ferry serve` process.
struct Relay {
    child: Child,
    addr: SocketAddr,
}

/// A port that was free a moment ago.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Relay {
    /// Starts the binary on `db_url` and waits until `/health/ready` answers 200.
    /// Its log goes to `dir/ferry.log`.
    async fn start(db_url: &str, dir: &Path) -> Self {
        Self::start_with(db_url, dir, &[]).await
    }

    /// [`Self::start`] with extra `FERRY_*` settings.
    async fn start_with(db_url: &str, dir: &Path, extra: &[(&str, &str)]) -> Self {
        // A port taken between probing and binding makes the server exit: try anew.
        for _ in 0..3 {
            let (addr, admin) = (free_addr(), free_addr());
            let log_path = dir.join("ferry.log");
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("FERRY_") {
                    cmd.env_remove(key);
                }
            }
            let key = b64u::encode(&SERVER_SEED);
            let env = [
                ("FERRY_DATA_DIR", dir.to_str().unwrap()),
                ("FERRY_DATABASE_URL", db_url),
                ("FERRY_SERVER_KEY", &key),
                ("FERRY_SERVER_LISTEN", &addr.to_string()),
                ("FERRY_SERVER_ADMIN_LISTEN", &admin.to_string()),
                ("FERRY_LIMITS_EVENTS_PER_SEC", "100000"),
                ("FERRY_LIMITS_BURST", "100000"),
                ("FERRY_LIMITS_OUTBOUND_QUEUE", "100000"),
                ("FERRY_LIMITS_HANDSHAKES_PER_IP_PER_SEC", "10000"),
                ("FERRY_LOG", "warn"),
            ];
            let mut child = cmd
                .arg("serve")
                .envs(env)
                .envs(extra.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("start the ferry binary");
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if let Ok(resp) = http_get(addr, "/health/ready").await
                    && resp.starts_with("HTTP/1.1 200")
                {
                    return Self { child, addr };
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if !text.contains("in use") {
                panic!("ferry exited during start:\n{text}");
            }
        }
        panic!("no free ports for ferry");
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Sends `signal` (`STOP`, `CONT`) to the process.
    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }

    /// SIGKILL, and reap the process.
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// What the devices sent and what the server acked, across every run.
#[derive(Default)]
struct Ledger {
    /// Every event ever sent: id → payload.
    sent: HashMap<String, Vec<u8>>,
    /// Every ack received: id → seq.
    acked: HashMap<String, u64>,
    /// `unavailable` errors received instead of an ack.
    unavailable: usize,
}

type Shared = Arc<Mutex<Ledger>>;

/// Publishes fresh events in windows of `window` until the connection ends (or
/// `limit` events were sent), recording every send and ack in `ledger` and
/// counting acks in `acks`.
async fn publish_until_gone(
    mut c: TestClient,
    ledger: Shared,
    acks: watch::Sender<usize>,
    window: usize,
    limit: usize,
) {
    let mut sent = 0;
    while sent < limit {
        let out: Vec<(String, Vec<u8>)> = (0..window)
            .map(|i| (new_event_id(), format!("load {sent} {i}").into_bytes()))
            .collect();
        ledger.lock().unwrap().sent.extend(out.iter().cloned());
        sent += window;
        let done = c
            .publish_window(&out, |m| match m {
                ServerMessage::Ack {
                    id,
                    seq: Some(seq),
                    duplicate: false,
                    ..
                } => {
                    let old = ledger.lock().unwrap().acked.insert(id.clone(), seq);
                    assert!(old.is_none(), "{id} acked twice");
                    acks.send_modify(|n| *n += 1);
                }
                ServerMessage::Event(_) | ServerMessage::Presence { .. } => {}
                // Storage failed (a fault test's doing): no ack, the event stays
                // unacked and is retried later with its id.
                ServerMessage::Error {
                    code: ErrorCode::Unavailable,
                    ..
                } => {
                    ledger.lock().unwrap().unavailable += 1;
                }
                other => panic!("expected an ack, got {other:?}"),
            })
            .await;
        if done.is_err() {
            return;
        }
    }
}

/// What [`verify_and_retry`] found.
struct Found {
    /// The head before the retries.
    head: u64,
    /// Acks received before the retries.
    acked: usize,
    /// Events stored although their ack never arrived.
    stored_unacked: usize,
    /// Events never stored (their publish was lost): stored by the retry.
    lost_unacked: usize,
}

/// Checks the log against the ledger, then retries every unacked event as a client
/// would after a lost ack: a stored one must come back `duplicate` with its seq,
/// a lost one gets the next seq.
async fn verify_and_retry(c: &mut TestClient, ledger: &Shared) -> Found {
    let (log, head) = c.sync_all(1000).await;
    let (in_log, unacked, acked) = {
        let l = ledger.lock().unwrap();
        let seqs: Vec<u64> = log.iter().map(|e| e.seq.unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=head).collect::<Vec<_>>(),
            "seqs are not 1..=head"
        );
        let mut in_log = HashMap::new();
        for e in &log {
            let payload = l
                .sent
                .get(&e.id)
                .unwrap_or_else(|| panic!("{} never sent", e.id));
            assert_eq!(&b64u::decode(&e.payload).unwrap(), payload, "{}", e.id);
            assert!(
                in_log.insert(e.id.clone(), e.seq.unwrap()).is_none(),
                "{} stored twice",
                e.id
            );
        }
        for (id, seq) in &l.acked {
            assert_eq!(in_log.get(id), Some(seq), "acked event {id} lost or moved");
        }
        let unacked: Vec<(String, Vec<u8>)> = l
            .sent
            .iter()
            .filter(|(id, _)| !l.acked.contains_key(*id))
            .map(|(id, p)| (id.clone(), p.clone()))
            .collect();
        let acked = l.acked.len();
        (in_log, unacked, acked)
    };
    let stored_unacked = unacked
        .iter()
        .filter(|(id, _)| in_log.contains_key(id))
        .count();
    let mut next = head;
    for chunk in unacked.chunks(100) {
        c.publish_window(chunk, |m| match m {
            ServerMessage::Ack {
                id,
                seq: Some(seq),
                duplicate,
                ..
            } => {
                match in_log.get(&id) {
                    Some(s) => assert!(duplicate && *s == seq, "retry of {id}: {seq}"),
                    None => {
                        next += 1;
                        assert!(!duplicate && seq == next, "retry of {id}: {seq}");
                    }
                }
                ledger.lock().unwrap().acked.insert(id, seq);
            }
            ServerMessage::Event(_) | ServerMessage::Presence { .. } => {}
            other => panic!("expected an ack, got {other:?}"),
        })
        .await
        .expect("retries are answered");
    }
    Found {
        head,
        acked,
        stored_unacked,
        lost_unacked: unacked.len() - stored_unacked,
    }
}

/// F1: three devices publish pipelined; after a few hundred acks the server gets
/// SIGKILL mid-stream and is restarted on the same database. Three times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acked_event() {
    const CYCLES: usize = 3;
    const ACKS_PER_CYCLE: usize = 300;
    for db in databases().await {
        let dir = tempfile::tempdir().unwrap();
        let user = TestUser::random();
        let devices: Vec<DeviceCredentials> = (0..3).map(|_| user.device()).collect();
        let ledger = Shared::default();
        let mut relay = Relay::start(db.url(), dir.path()).await;
        let mut in_flight = 0;
        for cycle in 0..CYCLES {
            let (acks, mut acked) = watch::channel(0usize);
            let mut load = Vec::new();
            for creds in &devices {
                let c = connect(&relay.ws_url(), creds.clone()).await;
                let (ledger, acks) = (ledger.clone(), acks.clone());
                load.push(tokio::spawn(publish_until_gone(
                    c,
                    ledger,
                    acks,
                    50,
                    usize::MAX,
                )));
            }
            drop(acks);
            acked
                .wait_for(|n| *n >= ACKS_PER_CYCLE)
                .await
                .expect("publishers alive");
            relay.kill().await;
            for t in load {
                t.await.unwrap();
            }
            let restarted = Instant::now();
            relay = Relay::start(db.url(), dir.path()).await;
            let ready_after = restarted.elapsed();
            let mut checker = connect(&relay.ws_url(), user.device()).await;
            let found = verify_and_retry(&mut checker, &ledger).await;
            in_flight += found.stored_unacked + found.lost_unacked;
            let l = ledger.lock().unwrap();
            assert_eq!(l.acked.len(), l.sent.len(), "every retry was acked");
            eprintln!(
                "{:?} kill {}: head {}, {} acked, {} stored without ack, {} lost \
                 without ack (retried); ready again after {ready_after:?}",
                db.backend(),
                cycle + 1,
                found.head,
                found.acked,
                found.stored_unacked,
                found.lost_unacked,
            );
        }
        // The kills did land mid-stream: some publishes were unanswered.
        assert!(in_flight > 0, "no publish was in flight at any kill");
        relay.kill().await;
        db.finish("sigkill_mid_stream_loses_no_acked_event").await;
    }
}

/// Two `ferry serve` processes on one PostgreSQL database, a device of the same
/// user on each, 1,000 pipelined publishes each: one gap-free order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_binaries_on_one_postgres_share_one_gap_free_order() {
    const N: usize = 1000;
    for db in databases().await {
        if db.backend() == Backend::Sqlite {
            continue; // About PostgreSQL: one SQLite file belongs to one server.
        }
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let relays = [
            Relay::start(db.url(), dirs[0].path()).await,
            Relay::start(db.url(), dirs[1].path()).await,
        ];
        let user = TestUser::random();
        let ledger = Shared::default();
        let (acks, _) = watch::channel(0usize);
        let mut load = Vec::new();
        for r in &relays {
            let c = connect(&r.ws_url(), user.device()).await;
            load.push(tokio::spawn(publish_until_gone(
                c,
                ledger.clone(),
                acks.clone(),
                100,
                N,
            )));
        }
        for t in load {
            t.await.unwrap();
        }
        let mut checker = connect(&relays[0].ws_url(), user.device()).await;
        {
            let l = ledger.lock().unwrap();
            assert_eq!(l.acked.len(), 2 * N, "every publish was acked");
            let mut seqs: Vec<u64> = l.acked.values().copied().collect();
            seqs.sort_unstable();
            assert_eq!(seqs, (1..=2 * N as u64).collect::<Vec<_>>());
        }
        let found = verify_and_retry(&mut checker, &ledger).await;
        assert_eq!(found.head, 2 * N as u64);
        for r in relays {
            r.kill().await;
        }
        db.finish("two_binaries_on_one_postgres_share_one_gap_free_order")
            .await;
    }
}

/// Reads live events on `c` until its session ends; returns their seqs in arrival
/// order.
async fn listen(mut c: TestClient) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Ok(m) = c.try_recv(Duration::from_secs(30)).await {
        if let ServerMessage::Event(e) = m
            && let Some(seq) = e.seq
        {
            seqs.push(seq);
        }
    }
    seqs
}

/// F8: the server is paused (SIGSTOP) past `limits.idle_timeout` while devices
/// publish and another listens, then resumed. No restart: the sessions that the
/// pause outlived end and are reconnected, every acked event is stored once at its
/// acked seq, unacked ones are retried idempotently, and no seq is delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_paused_past_the_idle_timeout_resumes_without_loss() {
    for db in databases().await {
        let dir = tempfile::tempdir().unwrap();
        let user = TestUser::random();
        let publishers: Vec<DeviceCredentials> = (0..2).map(|_| user.device()).collect();
        let ledger = Shared::default();
        let settings = [
            ("FERRY_LIMITS_PING_INTERVAL", "1s"),
            ("FERRY_LIMITS_IDLE_TIMEOUT", "2s"),
        ];
        let relay = Relay::start_with(db.url(), dir.path(), &settings).await;
        let listener = tokio::spawn(listen(connect(&relay.ws_url(), user.device()).await));
        let (acks, mut acked) = watch::channel(0usize);
        let mut load = Vec::new();
        for creds in &publishers {
            let c = connect(&relay.ws_url(), creds.clone()).await;
            let (ledger, acks) = (ledger.clone(), acks.clone());
            load.push(tokio::spawn(publish_until_gone(c, ledger, acks, 20, 400)));
        }
        drop(acks);
        let _ = acked.wait_for(|n| *n >= 100).await;
        relay.signal("STOP");
        tokio::time::sleep(Duration::from_secs(4)).await;
        relay.signal("CONT");
        for t in load {
            t.await.unwrap();
        }
        // The same process serves on: a checker finds every ack in the log and
        // retries what was not acked. Publishes of the sessions the pause ended may
        // still be committing (their acks are lost, the events may land): wait until
        // the log stops moving first.
        let mut checker = connect(&relay.ws_url(), user.device()).await;
        let mut last = u64::MAX;
        for _ in 0..50 {
            let (_, head) = checker.sync_all(1000).await;
            if head == last {
                break;
            }
            last = head;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let found = verify_and_retry(&mut checker, &ledger).await;
        {
            let l = ledger.lock().unwrap();
            assert_eq!(l.acked.len(), l.sent.len(), "every retry was acked");
        }
        drop(checker);
        let seqs = listener.await.unwrap();
        let mut unique = seqs.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seqs.len(), "a seq was delivered twice");
        eprintln!(
            "{:?} pause: head {}, {} acked before the retries, {} delivered live",
            db.backend(),
            found.head,
            found.acked,
            seqs.len()
        );
        relay.kill().await;
        db.finish("a_server_paused_past_the_idle_timeout_resumes_without_loss")
            .await;
    }
}

/// F2 under load: every PostgreSQL connection of the server's database is
/// terminated, five times, while devices publish. The server does not crash or
/// restart; a publish caught by it gets `unavailable` (no ack) and is retried with
/// its id; every acked event is stored once at its acked seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_terminated_under_load_lose_no_acked_event() {
    use sqlx::Connection as _;
    for db in databases().await {
        if db.backend() == Backend::Sqlite {
            continue; // About PostgreSQL's connections.
        }
        let dir = tempfile::tempdir().unwrap();
        let user = TestUser::random();
        let ledger = Shared::default();
        let relay = Relay::start(db.url(), dir.path()).await;
        let (acks, mut acked) = watch::channel(0usize);
        let mut load = Vec::new();
        for _ in 0..2 {
            let c = connect(&relay.ws_url(), user.device()).await;
            let (ledger, acks) = (ledger.clone(), acks.clone());
            load.push(tokio::spawn(publish_until_gone(c, ledger, acks, 20, 1000)));
        }
        drop(acks);
        let name = db.url().rsplit('/').next().unwrap().to_string();
        let mut admin = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let mut terminated = 0u64;
        for round in 0..5 {
            let _ = acked.wait_for(|n| *n >= 100 * (round + 1)).await;
            let killed: Vec<(bool,)> = sqlx::query_as(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&name)
            .fetch_all(&mut admin)
            .await
            .unwrap();
            terminated += killed.len() as u64;
        }
        drop(admin);
        for t in load {
            t.await.unwrap();
        }
        assert!(terminated > 0, "no connection of the server was terminated");
        let mut checker = connect(&relay.ws_url(), user.device()).await;
        let found = verify_and_retry(&mut checker, &ledger).await;
        let unavailable = {
            let l = ledger.lock().unwrap();
            assert_eq!(l.acked.len(), l.sent.len(), "every retry was acked");
            l.unavailable
        };
        eprintln!(
            "postgres: {terminated} connections terminated; head {}, {} acked, \
             {unavailable} unavailable replies, {} stored without ack, {} retried",
            found.head, found.acked, found.stored_unacked, found.lost_unacked
        );
        relay.kill().await;
        db.finish("postgres_connections_terminated_under_load_lose_no_acked_event")
            .await;
    }
}
