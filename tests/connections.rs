//! Connections that send no request: a TCP connection that sends nothing, one that
//! sends only an HTTP/2 preface (with or without SETTINGS), and an idle keep-alive
//! connection are closed by their deadlines, so sockets from many source addresses
//! cannot hold the connection caps and shut legitimate clients out. Real server on
//! port 0 (SQLite; no backend is involved), real sockets from several loopback
//! addresses.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::client::{TestUser, try_connect};
use common::server::TestServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// The deadlines of these tests' servers.
const SETTINGS: &[(&str, &str)] = &[
    ("FERRY_LIMITS_HANDSHAKE_TIMEOUT", "1s"),
    ("FERRY_LIMITS_HTTP_IDLE_TIMEOUT", "1s"),
    ("FERRY_LIMITS_MAX_CONNECTIONS_PER_IP", "4"),
    ("FERRY_LIMITS_MAX_CONNECTIONS", "12"),
];

/// How long a test waits for the server to close a connection before it fails: far
/// beyond the 1 s deadlines, so a slow machine does not fail it, while a server that
/// never closes does.
const PATIENCE: Duration = Duration::from_secs(20);

/// HTTP/2's client connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

async fn start() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = common::db::sqlite_url(&dir).await;
    (TestServer::start(&url, SETTINGS).await, dir)
}

/// A TCP connection to `server` from the loopback address `127.0.0.{from}`.
async fn connect_from(server: SocketAddr, from: u8) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, from)),
            0,
        ))
        .unwrap();
    socket.connect(server).await.unwrap()
}

/// Whether the server answers a request from 127.0.0.1 (a refused connection is
/// closed without an answer).
async fn served(server: SocketAddr) -> bool {
    common::server::http_get(server, "/health/live")
        .await
        .is_ok_and(|text| text.starts_with("HTTP/1.1 200"))
}

/// Waits until the server closes `stream` (end of stream or reset), reading and
/// dropping whatever it sends first (an HTTP/2 SETTINGS or GOAWAY frame). Fails the
/// test when it stays open past [`PATIENCE`].
async fn closed_by_server(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 1024];
    let outcome = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "{what}: still open {PATIENCE:?} after the server's 1 s deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed() {
    let (srv, _dir) = start().await;
    let mut silent = connect_from(srv.addr, 1).await;
    closed_by_server(&mut silent, "a connection that sent nothing").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_preface_alone_is_closed() {
    let (srv, _dir) = start().await;
    let mut bare = connect_from(srv.addr, 1).await;
    bare.write_all(H2_PREFACE).await.unwrap();
    let mut with_settings = connect_from(srv.addr, 1).await;
    with_settings.write_all(H2_PREFACE).await.unwrap();
    with_settings.write_all(H2_SETTINGS).await.unwrap();
    closed_by_server(&mut bare, "an HTTP/2 preface without SETTINGS").await;
    closed_by_server(&mut with_settings, "an HTTP/2 preface with SETTINGS").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    // A first-request deadline far beyond the test's patience: only the idle
    // deadline can close this connection in time.
    let dir = tempfile::tempdir().unwrap();
    let url = common::db::sqlite_url(&dir).await;
    let srv = TestServer::start(
        &url,
        &[
            ("FERRY_LIMITS_HANDSHAKE_TIMEOUT", "60s"),
            ("FERRY_LIMITS_HTTP_IDLE_TIMEOUT", "1s"),
        ],
    )
    .await;
    let mut conn = connect_from(srv.addr, 1).await;
    conn.write_all(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    // The response comes, and the connection stays open for another request…
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // …until it has been idle for `limits.http_idle_timeout`.
    closed_by_server(&mut conn, "an idle keep-alive connection").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_from_many_addresses_do_not_hold_the_caps() {
    let (srv, _dir) = start().await;
    // Fill the global cap (12) from three addresses at their per-IP cap (4 each),
    // mixing silent sockets and bare HTTP/2 prefaces.
    let mut flood = Vec::new();
    for from in 2..=4u8 {
        for i in 0..4 {
            let mut s = connect_from(srv.addr, from).await;
            if i % 2 == 1 {
                s.write_all(H2_PREFACE).await.unwrap();
            }
            flood.push(s);
        }
    }
    // While they are held, a legitimate client is refused (the caps are full)…
    assert!(
        !served(srv.addr).await,
        "the caps were not full: this test would prove nothing"
    );
    // …and once the server closed them, it gets in: a request, then a session.
    for (i, s) in flood.iter_mut().enumerate() {
        closed_by_server(s, &format!("flood connection {i}")).await;
    }
    let admitted = tokio::time::timeout(PATIENCE, async {
        while !served(srv.addr).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(admitted.is_ok(), "a legitimate client stayed shut out");
    let session = try_connect(&srv.ws_url(), TestUser::random().device()).await;
    assert!(session.is_ok(), "no session after the flood was closed");
    srv.stop().await;
}
