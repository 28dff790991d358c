//! The client SDK (`ferry_client`) and the `ferry-client` command line against a
//! real server on port 0, on SQLite and (when configured) PostgreSQL.

/// The server crate's test harness (`tests/common` at the workspace root): a real
/// server on port 0 and the test databases.
#[path = "../../../tests/common"]
mod common {
    #![allow(dead_code, unreachable_pub)]

    pub mod backends;
    pub mod db;
    pub mod server;
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use common::server::{TestServer, server_key};
use ferry_client::{
    Client, ClientError, ClientOptions, Connection, DeviceKey, Event, EventStream, Profile,
    PublishOptions, ServerPin, UserKey,
};
use ferry_proto::b64u;
use ferry_proto::handshake::HandshakeError;
use ferry_proto::message::{ClientMessage, ServerMessage};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(15);

/// Awaits `f` for at most 15 s.
async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f).await.expect("in time")
}

fn pinned() -> ServerPin {
    ServerPin::Key(server_key().verifying_key().to_bytes())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Options for a new device of `user`, through `url`; `holds_user_key` for devices
/// that may revoke.
fn device_opts(url: &str, user: &UserKey, holds_user_key: bool) -> ClientOptions {
    let device = DeviceKey::generate();
    let cert = user.certify(&device.public(), now_secs() - 10, 0);
    let mut opts = ClientOptions::new(url, device.credentials(user.public(), cert), pinned());
    if holds_user_key {
        opts.user_key = Some(user.clone());
    }
    opts.backoff.max = Duration::from_millis(500);
    opts.retry_deadline = Duration::from_secs(20);
    opts
}

async fn next_event(stream: &mut EventStream) -> Event {
    match within(stream.next()).await {
        Some(Ok(e)) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn publish(client: &Client, payload: &str) -> u64 {
    let ack = within(client.publish(payload.as_bytes().to_vec(), PublishOptions::default()))
        .await
        .expect("publish acks");
    assert!(!ack.duplicate);
    ack.seq.expect("stored events have a seq")
}

/// Lets the stream sync and wait for live events (nothing is there yet).
async fn settle(stream: &mut EventStream) {
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.next())
            .await
            .is_err(),
        "no event expected yet"
    );
}

each_backend!(connects_with_pinning_and_refuses_a_wrong_key, &[], |srv| {
    let user = UserKey::generate();
    // Wrong pin: refused before client_auth, so no session and no device record.
    let mut wrong = device_opts(&srv.ws_url(), &user, false);
    wrong.pin = ServerPin::Key([1; 32]);
    let wrong_device = wrong.credentials.device_key.verifying_key().to_bytes();
    match within(Client::connect(wrong)).await {
        Err(ClientError::Handshake(HandshakeError::ServerKeyMismatch)) => {}
        other => panic!("expected a key mismatch, got {other:?}"),
    }
    let device = DeviceKey::generate();
    let creds = device.credentials(user.public(), user.certify(&device.public(), now_secs(), 0));
    match within(Connection::connect(
        &srv.ws_url(),
        creds.clone(),
        ServerPin::Key([2; 32]),
        None,
    ))
    .await
    {
        Err(e) => assert!(e.is_final(), "{e}"),
        Ok(_) => panic!("connected with a wrong pin"),
    }

    // The low-level connection with the right pin.
    let (conn, auth) = within(Connection::connect(&srv.ws_url(), creds, pinned(), None))
        .await
        .unwrap();
    assert_eq!(auth.user, user.public());
    assert_eq!(auth.device, device.public());
    assert_eq!(auth.head, 0);
    assert_eq!(auth.server_key, server_key().verifying_key().to_bytes());
    assert!(matches!(
        within(conn.request(ClientMessage::Ping)).await.unwrap(),
        ServerMessage::Pong { .. }
    ));
    // Trust on first use: the key seen is pinned and reported.
    let mut tofu = device_opts(&srv.ws_url(), &user, false);
    tofu.pin = ServerPin::FirstUse;
    let client = within(Client::connect(tofu)).await.unwrap();
    assert_eq!(client.server_key(), server_key().verifying_key().to_bytes());
    let devices = within(client.devices()).await.unwrap();
    assert_eq!(devices.len(), 2, "{devices:?}");
    assert!(
        devices
            .iter()
            .all(|d| d.device != b64u::encode(&wrong_device))
    );
    within(conn.close()).await;
    within(client.close()).await;
    // A closed client says so.
    assert!(matches!(
        within(client.ping()).await,
        Err(ClientError::Shutdown)
    ));
});

each_backend!(
    publish_acks_in_order_and_repeats_are_duplicates,
    &[],
    |srv| {
        let user = UserKey::generate();
        let client = within(Client::connect(device_opts(&srv.ws_url(), &user, false)))
            .await
            .unwrap();
        for (i, text) in ["one", "two", "three"].iter().enumerate() {
            assert_eq!(publish(&client, text).await, i as u64 + 1);
        }
        // The same id again: the original ack, nothing new stored.
        let id = "0190a5c4-7c1e-4c3a-9b5e-2f3d4c5b6a79".to_string();
        let first = within(client.publish(
            b"four".to_vec(),
            PublishOptions {
                id: Some(id.clone()),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
        assert_eq!((first.seq, first.duplicate), (Some(4), false));
        assert_eq!(first.id, id);
        let again = within(client.publish(
            b"four".to_vec(),
            PublishOptions {
                id: Some(id.clone()),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
        assert_eq!((again.seq, again.duplicate), (Some(4), true));
        assert_eq!(again.ts, first.ts);
        // Compare-and-set on a key.
        let keyed = |base| PublishOptions {
            key: Some(b"title".to_vec()),
            base: Some(base),
            ..Default::default()
        };
        let ack = within(client.publish(b"v1".to_vec(), keyed(0)))
            .await
            .unwrap();
        assert_eq!(ack.seq, Some(5));
        match within(client.publish(b"v1'".to_vec(), keyed(0))).await {
            Err(ClientError::Conflict { head }) => assert_eq!(head, 5),
            other => panic!("expected a conflict, got {other:?}"),
        }
        // Invalid ids are refused locally.
        assert!(matches!(
            client
                .publish(
                    b"x".to_vec(),
                    PublishOptions {
                        id: Some("NOT-A-UUID".into()),
                        ..Default::default()
                    }
                )
                .await,
            Err(ClientError::Invalid(_))
        ));
        let page = within(client.sync(0, 10)).await.unwrap();
        let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(page.head, 5);
        within(client.close()).await;
    }
);

each_backend!(
    a_second_device_tails_in_order_and_reports_its_cursor,
    &[],
    |srv| {
        let user = UserKey::generate();
        let a = within(Client::connect(device_opts(&srv.ws_url(), &user, false)))
            .await
            .unwrap();
        let b = within(Client::connect(device_opts(&srv.ws_url(), &user, false)))
            .await
            .unwrap();
        let mut tail = b.sync_from(0);
        settle(&mut tail).await;
        for i in 1..=5 {
            assert_eq!(publish(&a, &format!("event {i}")).await, i);
        }
        for i in 1..=5u64 {
            let e = next_event(&mut tail).await;
            assert_eq!(e.seq, i);
            assert_eq!(e.payload, format!("event {i}").into_bytes());
            assert_eq!(e.device, a.device());
        }
        // The device's own events are part of its stream too.
        assert_eq!(publish(&b, "mine").await, 6);
        let own = next_event(&mut tail).await;
        assert_eq!((own.seq, own.device), (6, b.device()));
        assert_eq!(tail.gaps_detected(), 0);
        // Asking for the next event marks the previous one processed: the cursor.
        settle(&mut tail).await;
        let me = b64u::encode(&b.device());
        let mut cursor = 0;
        for _ in 0..100 {
            let devices = within(a.devices()).await.unwrap();
            cursor = devices.iter().find(|d| d.device == me).unwrap().cursor;
            if cursor == 6 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(cursor, 6);
        within(a.close()).await;
        within(b.close()).await;
    }
);

each_backend!(sync_pages_with_a_small_page_size, &[], |srv| {
    let user = UserKey::generate();
    let a = within(Client::connect(device_opts(&srv.ws_url(), &user, false)))
        .await
        .unwrap();
    for i in 1..=7 {
        publish(&a, &format!("p{i}")).await;
    }
    let page = within(a.sync(2, 3)).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert!(page.more);
    assert_eq!(page.head, 7);

    let mut opts = device_opts(&srv.ws_url(), &user, false);
    opts.sync_limit = 2;
    let b = within(Client::connect(opts)).await.unwrap();
    let mut stream = b.sync_from(0);
    for i in 1..=7u64 {
        let e = next_event(&mut stream).await;
        assert_eq!((e.seq, e.payload), (i, format!("p{i}").into_bytes()));
    }
    settle(&mut stream).await;
    assert_eq!(stream.syncs(), 4, "pages of 2, 2, 2, 1");
    // Starting from a cursor.
    let mut later = b.sync_from(5);
    assert_eq!(next_event(&mut later).await.seq, 6);
    assert_eq!(next_event(&mut later).await.seq, 7);
    within(a.close()).await;
    within(b.close()).await;
});

each_backend!(a_gap_in_live_events_triggers_a_resync, &[], |srv| {
    let user = UserKey::generate();
    let a = within(Client::connect(device_opts(&srv.ws_url(), &user, false)))
        .await
        .unwrap();
    let b = within(Client::connect(device_opts(&srv.ws_url(), &user, false)))
        .await
        .unwrap();
    let mut tail = b.sync_from(0);
    settle(&mut tail).await;
    let syncs = tail.syncs();
    // The live copy of seq 2 is lost on the way in.
    b.debug_drop_live_event(2);
    for i in 1..=3 {
        publish(&a, &format!("g{i}")).await;
    }
    for i in 1..=3u64 {
        let e = next_event(&mut tail).await;
        assert_eq!((e.seq, e.payload), (i, format!("g{i}").into_bytes()));
    }
    assert_eq!(tail.gaps_detected(), 1);
    assert_eq!(tail.syncs(), syncs + 1);
    // No duplicates afterwards: seq 3 arrived live and by sync.
    publish(&a, "g4").await;
    assert_eq!(next_event(&mut tail).await.seq, 4);
    within(a.close()).await;
    within(b.close()).await;
});

each_backend!(
    reconnects_resyncs_and_resends_under_the_same_id,
    &[],
    |srv| {
        let proxy = Proxy::start(srv.addr).await;
        let user = UserKey::generate();
        let a = within(Client::connect(device_opts(&srv.ws_url(), &user, false)))
            .await
            .unwrap();
        let b_opts = device_opts(&proxy.ws_url(), &user, false);
        let b = within(Client::connect(b_opts)).await.unwrap();
        let mut tail = b.sync_from(0);
        settle(&mut tail).await;

        // B is offline while A publishes: the reconnect's sync fills it in.
        proxy.set(Mode::Refuse);
        proxy.cut();
        for i in 1..=2 {
            publish(&a, &format!("while away {i}")).await;
        }
        // B's publish waits for the connection to come back.
        let b2 = b.clone();
        let pending = tokio::spawn(async move {
            b2.publish(b"from b".to_vec(), PublishOptions::default())
                .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!b.is_connected());
        proxy.set(Mode::Pass);
        let ack = within(pending).await.unwrap().unwrap();
        assert_eq!((ack.seq, ack.duplicate), (Some(3), false));
        for i in 1..=3u64 {
            assert_eq!(next_event(&mut tail).await.seq, i);
        }

        // The ack is lost with the connection: the publish is sent again under the
        // same id after reconnecting, and the server says it was already stored.
        proxy.set(Mode::Swallow);
        let b2 = b.clone();
        let pending = tokio::spawn(async move {
            b2.publish(b"lost ack".to_vec(), PublishOptions::default())
                .await
        });
        let mut stored = false;
        for _ in 0..200 {
            if within(a.sync(3, 10)).await.unwrap().head == 4 {
                stored = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(stored, "the publish reached the server");
        proxy.set(Mode::Pass);
        proxy.cut();
        let ack = within(pending).await.unwrap().unwrap();
        assert_eq!((ack.seq, ack.duplicate), (Some(4), true));
        let e = next_event(&mut tail).await;
        assert_eq!((e.seq, e.payload), (4, b"lost ack".to_vec()));
        let page = within(a.sync(0, 100)).await.unwrap();
        assert_eq!(page.head, 4, "nothing was stored twice");
        within(a.close()).await;
        within(b.close()).await;
    }
);

each_backend!(
    rate_limited_publishes_wait_and_succeed,
    &[
        ("FERRY_LIMITS_EVENTS_PER_SEC", "5"),
        ("FERRY_LIMITS_BURST", "1")
    ],
    |srv| {
        let user = UserKey::generate();
        let client = within(Client::connect(device_opts(&srv.ws_url(), &user, false)))
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        for i in 1..=4 {
            assert_eq!(publish(&client, &format!("r{i}")).await, i);
        }
        // 5/s with a burst of 1: the SDK waited out `retry_after_ms` in between.
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert!(client.is_connected());
        within(client.close()).await;
    }
);

each_backend!(replacement_by_a_newer_session_is_final_4011, &[], |srv| {
    let user = UserKey::generate();
    let opts = device_opts(&srv.ws_url(), &user, false);
    let creds = opts.credentials.clone();
    let client = within(Client::connect(opts)).await.unwrap();
    let mut tail = client.sync_from(0);
    settle(&mut tail).await;
    // Another session of the same device takes over.
    let (conn, _) = within(Connection::connect(&srv.ws_url(), creds, pinned(), None))
        .await
        .unwrap();
    assert!(matches!(
        within(client.closed()).await,
        ClientError::Closed(4011)
    ));
    assert!(matches!(
        within(tail.next()).await,
        Some(Err(ClientError::Closed(4011)))
    ));
    assert!(within(tail.next()).await.is_none());
    assert!(matches!(
        within(client.ping()).await,
        Err(ClientError::Closed(4011))
    ));
    // It did not reconnect (which would have replaced the newer session in turn).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(conn.close_reason().is_none());
    assert!(matches!(
        within(conn.request(ClientMessage::Ping)).await.unwrap(),
        ServerMessage::Pong { .. }
    ));
    within(conn.close()).await;
});

each_backend!(
    revocation_closes_4003_and_the_device_cannot_return,
    &[],
    |srv| {
        let user = UserKey::generate();
        let owner = within(Client::connect(device_opts(&srv.ws_url(), &user, true)))
            .await
            .unwrap();
        let mut presence = owner.presence();
        let b_opts = device_opts(&srv.ws_url(), &user, false);
        let b = within(Client::connect(b_opts.clone())).await.unwrap();
        let b_device = b.device();
        // Without the user key, no revocation.
        assert!(matches!(
            within(b.revoke(&owner.device())).await,
            Err(ClientError::NoUserKey)
        ));
        within(owner.revoke(&b_device)).await.unwrap();
        assert!(matches!(
            within(b.closed()).await,
            ClientError::Closed(4003)
        ));
        loop {
            let p = within(presence.recv()).await.unwrap();
            if p.device == b_device && p.revoked {
                assert!(!p.online);
                break;
            }
        }
        match within(Client::connect(b_opts)).await {
            Err(ClientError::Closed(4002)) => {}
            other => panic!("a revoked device must not authenticate: {other:?}"),
        }
        let devices = within(owner.devices()).await.unwrap();
        let entry = devices
            .iter()
            .find(|d| d.device == b64u::encode(&b_device))
            .unwrap();
        assert!(entry.revoked_at.is_some());
        within(owner.close()).await;
    }
);

each_backend!(cli_init_link_publish_sync_devices_revoke, &[], |srv| {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    let url = srv.ws_url();
    let out = cli(&["init", "--server", &url], &first, None).await;
    assert!(out.ok, "{out:?}");
    let profile_file = first.join("profile.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&profile_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(Profile::load(&profile_file).unwrap().server_key.is_none());

    let out = cli(&["publish", "hello"], &first, None).await;
    assert!(out.ok, "{out:?}");
    assert!(out.stdout.starts_with("seq 1 id "), "{out:?}");
    assert!(out.stderr.contains("trust on first use"), "{out:?}");
    assert!(out.stderr.contains("encrypt"), "{out:?}");
    // Trust on first use: pinned and saved.
    let profile = Profile::load(&profile_file).unwrap();
    assert_eq!(
        profile.server_key,
        Some(server_key().verifying_key().to_bytes())
    );
    let out = cli(&["publish", "-"], &first, Some(&[0xff, 0])).await;
    assert!(out.stdout.starts_with("seq 2 "), "{out:?}");

    let me = &b64u::encode(&profile.device_public())[..8];
    let out = cli(&["sync"], &first, None).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.stdout, format!("1 {me} hello\n2 {me} b64u:_wA\n"));
    let out = cli(&["sync", "--after", "1"], &first, None).await;
    assert_eq!(out.stdout, format!("2 {me} b64u:_wA\n"));

    // Link a second device.
    let out = cli(&["init", "--join", "--server", &url], &second, None).await;
    assert!(out.ok, "{out:?}");
    let new_key = out.stdout.trim().to_string();
    assert_eq!(new_key.len(), 43);
    let out = cli(&["link", "--device-key", &new_key], &first, None).await;
    assert!(out.ok, "{out:?}");
    let blob = out.stdout.trim().to_string();
    let out = cli(&["accept", "--cert", &blob], &second, None).await;
    assert!(out.ok, "{out:?}");
    let joined = Profile::load(second.join("profile.json")).unwrap();
    assert_eq!(joined.user_public, profile.user_public);
    assert!(joined.user_secret.is_none());
    assert_eq!(
        joined.server_key, profile.server_key,
        "the pin travels along"
    );
    let out = cli(&["sync"], &second, None).await;
    assert_eq!(out.stdout, format!("1 {me} hello\n2 {me} b64u:_wA\n"));

    // `tail` on the new device prints what the first one publishes.
    let mut tail = spawn_cli(&["tail"], &second);
    let mut lines = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    let mut errs = tokio::io::BufReader::new(tail.stderr.take().unwrap()).lines();
    let ready = within(errs.next_line()).await.unwrap().unwrap_or_default();
    assert!(ready.contains("tailing after seq 2"), "{ready}");
    let out = cli(&["publish", "live!"], &first, None).await;
    assert!(out.stdout.starts_with("seq 3 "), "{out:?}");
    let line = within(lines.next_line()).await.unwrap();
    assert_eq!(line.as_deref(), Some(format!("3 {me} live!").as_str()));
    tail.kill().await.unwrap();

    let out = cli(&["devices"], &first, None).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.stdout.lines().count(), 2, "{out:?}");
    assert!(out.stdout.contains(&new_key), "{out:?}");
    assert!(out.stdout.contains("(this device)"), "{out:?}");

    // The linked device holds no user key; the first one revokes it by prefix.
    let out = cli(&["revoke", &new_key[..12]], &second, None).await;
    assert!(!out.ok, "{out:?}");
    let out = cli(&["revoke", &new_key[..12]], &first, None).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.stdout.trim(), format!("revoked {new_key}"));
    let out = cli(&["sync"], &second, None).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("4002"), "{out:?}");

    // A wrong pinned key is refused.
    let third = dir.path().join("third");
    let wrong = b64u::encode(&[5u8; 32]);
    let out = cli(
        &["init", "--server", &url, "--server-key", &wrong],
        &third,
        None,
    )
    .await;
    assert!(out.ok, "{out:?}");
    let out = cli(&["publish", "x"], &third, None).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("pinned"), "{out:?}");
});

#[derive(Debug)]
struct Output {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Starts the `ferry-client` binary with `--profile dir`, every stream piped.
fn spawn_cli(args: &[&str], profile: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry-client"))
        .args(args)
        .arg("--profile")
        .arg(profile)
        .env_remove("FERRY_CLIENT_PROFILE")
        .env_remove("FERRY_CLIENT_CA_FILE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ferry-client runs")
}

/// Runs the `ferry-client` binary with `--profile dir` to the end.
async fn cli(args: &[&str], profile: &std::path::Path, stdin: Option<&[u8]>) -> Output {
    let mut child = spawn_cli(args, profile);
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("ferry-client finishes")
        .unwrap();
    Output {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What the proxy does.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Forward both ways.
    Pass = 0,
    /// Drop new connections at once.
    Refuse = 1,
    /// Forward client → server, discard server → client.
    Swallow = 2,
}

/// A TCP proxy in front of the server that can cut its connections, refuse new
/// ones, or lose what the server sends: a network for the client to fail on.
struct Proxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (m, c) = (mode.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    return;
                };
                if m.load(Ordering::SeqCst) == Mode::Refuse as u8 {
                    drop(down);
                    continue;
                }
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (down_r, down_w) = down.into_split();
                let (up_r, up_w) = up.into_split();
                let to_server = tokio::spawn(pump(down_r, up_w, m.clone(), false));
                let to_client = tokio::spawn(pump(up_r, down_w, m.clone(), true));
                let mut list = c.lock().unwrap();
                list.push(to_server.abort_handle());
                list.push(to_client.abort_handle());
            }
        });
        Self {
            addr,
            mode,
            conns,
            accept,
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Drops every open connection (no close frame: the client sees the socket end).
    fn cut(&self) {
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
    to_client: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to_client && mode.load(Ordering::SeqCst) == Mode::Swallow as u8 {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_needs_and_uses_the_given_roots() {
    let certs = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_path = certs.path().join("cert.pem");
    let key_path = certs.path().join("key.pem");
    std::fs::write(&cert_path, ck.cert.pem()).unwrap();
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).unwrap();
    let db = common::db::TestDb::sqlite().await;
    let cert = cert_path.display().to_string();
    let key = key_path.display().to_string();
    let srv = TestServer::start(
        db.url(),
        &[("FERRY_TLS_CERT", &cert), ("FERRY_TLS_KEY", &key)],
    )
    .await;
    let wss = format!("wss://127.0.0.1:{}/v1/ws", srv.addr.port());
    let user = UserKey::generate();

    // No roots are built in: wss without a TLS configuration is refused up front.
    let opts = device_opts(&wss, &user, false);
    assert!(matches!(
        within(Client::connect(opts.clone())).await,
        Err(ClientError::Tls(_))
    ));
    // Roots that do not include the server's certificate: the TLS handshake fails.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let untrusted = ferry_client::tls_config([other.cert.der().clone()]).unwrap();
    match within(Client::connect(opts.clone().with_tls(untrusted))).await {
        Err(e @ ClientError::Tls(_)) => assert!(e.is_final()),
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    // The right root.
    let trusted = ferry_client::tls_config([ck.cert.der().clone()]).unwrap();
    let client = within(Client::connect(opts.with_tls(trusted)))
        .await
        .unwrap();
    assert_eq!(publish(&client, "over tls").await, 1);
    within(client.close()).await;

    // The CLI takes the roots as a PEM file.
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p");
    let out = cli(&["init", "--server", &wss], &profile, None).await;
    assert!(out.ok, "{out:?}");
    let out = cli(&["publish", "x"], &profile, None).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("wss://"), "{out:?}");
    let out = cli(&["publish", "x", "--ca-file", &cert], &profile, None).await;
    assert!(out.ok, "{out:?}");
    assert!(out.stdout.starts_with("seq 1 "), "{out:?}");
    srv.stop().await;
    db.finish("wss_needs_and_uses_the_given_roots").await;
}

/// An admin key for the erase test, and `FERRY_ADMIN_KEYS` for it (its SHA-256).
const ADMIN_KEY: &str = "c2RrLWVyYXNlLXRlc3Qtd3JpdGVyLWtleS0wMTIzNDU2";
const ADMIN_KEYS_ENV: &str =
    "writer:write:acc6c40d03074ff550d4383a77d0a64e3bbe0401a52a0954e86ea40b55218403";

/// `DELETE /admin/v1/users/{user}` on the admin listener; the status line.
async fn erase(admin: std::net::SocketAddr, user: &[u8; 32]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    let request = format!(
        "DELETE /admin/v1/users/{} HTTP/1.1\r\nHost: test\r\nX-Admin-Key: {ADMIN_KEY}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        ferry_proto::b64u::encode(user)
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.lines().next().unwrap_or_default().to_string()
}

// The operator erases the user's data while the SDK streams it: the stream reports
// 4012 (`is_erased`, not final: the keys stay), starts again from seq 0, and the
// user's next events (seq 1 again) reach it.
each_backend!(
    an_erased_user_s_stream_reports_it_and_starts_again,
    &[("FERRY_ADMIN_KEYS", ADMIN_KEYS_ENV)],
    |srv| {
        let user = UserKey::generate();
        let a = within(Client::connect(device_opts(&srv.ws_url(), &user, false)))
            .await
            .unwrap();
        let b = within(Client::connect(device_opts(&srv.ws_url(), &user, false)))
            .await
            .unwrap();
        let mut tail = b.sync_from(0);
        settle(&mut tail).await;
        for i in 1..=3 {
            publish(&a, &format!("before {i}")).await;
        }
        for i in 1..=3u64 {
            assert_eq!(next_event(&mut tail).await.seq, i);
        }
        assert!(erase(srv.admin, &user.public()).await.contains(" 200 "));
        match within(tail.next()).await {
            Some(Err(e)) => {
                assert!(e.is_erased(), "{e}");
                assert!(!e.is_final(), "{e}");
            }
            other => panic!("expected the erasure, got {other:?}"),
        }
        assert_eq!(tail.position(), 0);
        // Both devices reconnect by themselves; the log starts again at seq 1.
        assert_eq!(publish(&a, "after").await, 1);
        let e = next_event(&mut tail).await;
        assert_eq!((e.seq, e.payload), (1, b"after".to_vec()));
        within(a.close()).await;
        within(b.close()).await;
    }
);

each_backend!(
    a_log_truncated_by_retention_is_a_typed_item_the_application_sees,
    &[
        ("FERRY_RETENTION_INTERVAL", "1s"),
        ("FERRY_RETENTION_MAX_EVENTS_PER_USER", "2"),
    ],
    |srv| {
        let user = UserKey::generate();
        let client = within(Client::connect(device_opts(&srv.ws_url(), &user, false)))
            .await
            .unwrap();
        for i in 0..5 {
            publish(&client, &format!("e{i}")).await;
        }
        // The server's retention job keeps the newest two.
        let mut page = within(client.sync(0, 10)).await.unwrap();
        for _ in 0..200 {
            if page.truncated.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            page = within(client.sync(0, 10)).await.unwrap();
        }
        assert_eq!(page.truncated, Some(4));
        let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [4, 5]);

        // A stream from the start reports the truncation, then goes on.
        let mut stream = client.sync_from(0);
        match within(stream.next()).await {
            Some(Err(ClientError::Truncated { oldest })) => assert_eq!(oldest, 4),
            other => panic!("expected the truncation first, got {other:?}"),
        }
        assert_eq!(next_event(&mut stream).await.seq, 4);
        assert_eq!(next_event(&mut stream).await.seq, 5);
        // A stream past the watermark is not told anything.
        let mut stream = client.sync_from(3);
        assert_eq!(next_event(&mut stream).await.seq, 4);
        within(client.close()).await;
    }
);
