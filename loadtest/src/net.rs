//! Sockets, WebSocket upgrades, the v1 handshake and sealed frames, as lean as a
//! load generator wants them: the sans-IO [`ClientHandshake`] of `ferry-proto`
//! driven directly over tokio-tungstenite, one task per connection, no channels.
//!
//! Every connection goes to 127.0.0.0/8 only, with `TCP_NODELAY`, small tungstenite
//! buffers, and optionally a source address from 127.0.0.2.. to get past the
//! ephemeral-port limit of a single source address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use ferry_client::{DeviceKey, UserKey};
use ferry_proto::b64u;
use ferry_proto::handshake::{ClientEphemeral, ClientHandshake, DeviceCredentials, ServerPin};
use ferry_proto::keys::DeviceCertificate;
use ferry_proto::seal::{Opener, Sealer};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::keys::KeyFile;

/// A client WebSocket over plain TCP.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Read and write buffer of every client WebSocket this tool opens.
pub(crate) const WS_BUFFER: usize = 8 * 1024;
/// Read and write buffer of the baseline server's WebSockets: Ferry's defaults
/// (`limits.read_buffer_size`, `limits.write_buffer_size`).
pub(crate) const SERVER_WS_BUFFER: usize = 4 * 1024;
/// How long a close handshake may take before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The WebSocket settings of every connection: small buffers (`buffer` bytes), so
/// per-connection memory stays small and frames go out in batches of at most that.
pub(crate) fn ws_config(buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(buffer)
        .write_buffer_size(buffer)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(4 * 1024 * 1024))
        .max_frame_size(Some(4 * 1024 * 1024))
}

/// Refuses any address outside 127.0.0.0/8: this tool only loads local servers.
pub(crate) fn check_loopback(ip: IpAddr) -> anyhow::Result<()> {
    match ip {
        IpAddr::V4(v4) if v4.octets()[0] == 127 => Ok(()),
        other => bail!("{other} is not in 127.0.0.0/8; ferry-load only sends traffic to loopback"),
    }
}

/// A `ws://` URL on loopback, parsed.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// Where to connect.
    pub(crate) addr: SocketAddr,
    /// `host:port` as written.
    authority: String,
    /// The path and query, from the first `/`.
    path: String,
}

impl Target {
    /// Parses `ws://HOST:PORT/PATH` where HOST is `localhost` or an address in
    /// 127.0.0.0/8.
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        let Some(rest) = url.strip_prefix("ws://") else {
            bail!("{url:?}: only ws:// URLs are supported (a local server, no TLS)");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = authority
            .rsplit_once(':')
            .with_context(|| format!("{url:?}: the port is missing"))?;
        let port: u16 = port.parse().with_context(|| format!("{url:?}: bad port"))?;
        let ip: IpAddr = if host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse().with_context(|| {
                format!("{url:?}: the host must be an IPv4 address or localhost")
            })?
        };
        check_loopback(ip)?;
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }

    /// The same server with another path (`/g/7`).
    pub(crate) fn with_path(&self, path: &str) -> Self {
        Self {
            path: path.to_string(),
            ..self.clone()
        }
    }

    /// The URL.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}{}", self.authority, self.path)
    }
}

/// Source addresses 127.0.0.2 ..= 127.0.0.(K+1), handed out round robin; with
/// K = 0 the kernel picks the source (127.0.0.1).
#[derive(Debug, Default)]
pub(crate) struct Sources {
    ips: Vec<IpAddr>,
    next: AtomicUsize,
}

impl Sources {
    /// K source addresses (at most 253).
    pub(crate) fn new(k: u32) -> anyhow::Result<Self> {
        if k > 253 {
            bail!("--sources must be at most 253 (127.0.0.2 ..= 127.0.0.254)");
        }
        let ips = (0..k)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)))
            .collect();
        Ok(Self {
            ips,
            next: AtomicUsize::new(0),
        })
    }

    /// The next source address, if any are configured.
    pub(crate) fn pick(&self) -> Option<IpAddr> {
        if self.ips.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.ips[i % self.ips.len()])
    }
}

/// Why a connection or a session failed; its [`Self::label`] groups failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// TCP connect failed.
    Connect(String),
    /// The upgrade got this HTTP status instead of 101.
    Http(u16),
    /// The server closed the WebSocket with this code.
    Closed(u16),
    /// Our time limit passed.
    Timeout,
    /// The server broke the protocol (or the handshake refused it).
    Protocol(&'static str),
    /// The socket failed or ended without a close frame.
    Transport(&'static str),
    /// A peer's client library failed (`relay --with-peers`): its own label.
    Peer(String),
}

impl Failure {
    /// A short label: `close_4002`, `http_429`, `connect_refused`, `timeout`, ….
    pub(crate) fn label(&self) -> String {
        match self {
            Self::Connect(kind) => format!("connect_{kind}"),
            Self::Http(status) => format!("http_{status}"),
            Self::Closed(code) => format!("close_{code}"),
            Self::Timeout => "timeout".into(),
            Self::Protocol(what) => format!("protocol_{what}"),
            Self::Transport(what) => format!("transport_{what}"),
            Self::Peer(what) => what.clone(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

fn io_kind(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "refused".into(),
        K::ConnectionReset => "reset".into(),
        K::AddrNotAvailable => "addr_not_available".into(),
        K::AddrInUse => "addr_in_use".into(),
        K::TimedOut => "timed_out".into(),
        _ if e.raw_os_error() == Some(24) => "too_many_open_files".into(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

/// Maps a tungstenite error.
pub(crate) fn ws_failure(e: WsError) -> Failure {
    match e {
        WsError::Http(resp) => Failure::Http(resp.status().as_u16()),
        WsError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Failure::Transport("reset")
        }
        WsError::Io(_) => Failure::Transport("io"),
        WsError::ConnectionClosed | WsError::AlreadyClosed => Failure::Transport("closed"),
        WsError::Protocol(_) => Failure::Transport("ws_protocol"),
        WsError::WriteBufferFull(_) => Failure::Transport("write_buffer_full"),
        _ => Failure::Transport("other"),
    }
}

/// Failure counts by label.
pub(crate) type Failures = BTreeMap<String, u64>;

/// Runs `connect(i)` for every `i` in `0..n`, `concurrency` at a time, each in its
/// own task: the connections in order, or the tally of the failures.
pub(crate) async fn open_each<C, F, Fut>(
    n: u32,
    concurrency: usize,
    connect: F,
) -> Result<Vec<C>, Failures>
where
    C: Send + 'static,
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = Result<C, Failure>> + Send + 'static,
{
    use futures_util::StreamExt as _;
    let results: Vec<Result<C, Failure>> = futures_util::stream::iter(0..n)
        .map(|i| tokio::spawn(connect(i)))
        .buffered(concurrency.max(1))
        .map(|j| j.unwrap_or(Err(Failure::Transport("task_panicked"))))
        .collect()
        .await;
    let mut failures = Failures::new();
    let mut out = Vec::with_capacity(n as usize);
    for r in results {
        match r {
            Ok(c) => out.push(c),
            Err(f) => *failures.entry(f.label()).or_default() += 1,
        }
    }
    if failures.is_empty() {
        Ok(out)
    } else {
        Err(failures)
    }
}

/// Counts one failure labelled `label` in a tally shared by several tasks.
pub(crate) fn count_failure(failures: &std::sync::Mutex<Failures>, label: String) {
    *failures
        .lock()
        .expect("failures lock")
        .entry(label)
        .or_default() += 1;
}

/// Opens a TCP connection (from `source` when given) and upgrades it.
pub(crate) async fn open(target: &Target, source: Option<IpAddr>) -> Result<Ws, Failure> {
    let sock = TcpSocket::new_v4().map_err(|e| Failure::Connect(io_kind(&e)))?;
    if let Some(ip) = source {
        sock.bind(SocketAddr::new(ip, 0))
            .map_err(|e| Failure::Connect(io_kind(&e)))?;
    }
    let tcp = sock
        .connect(target.addr)
        .await
        .map_err(|e| Failure::Connect(io_kind(&e)))?;
    tcp.set_nodelay(true)
        .map_err(|e| Failure::Connect(io_kind(&e)))?;
    let (ws, _) = client_async_with_config(target.url(), tcp, Some(ws_config(WS_BUFFER)))
        .await
        .map_err(ws_failure)?;
    Ok(ws)
}

/// Sends a close frame (1000) and waits, bounded, for the server's.
pub(crate) async fn close(ws: &mut Ws) {
    let frame = CloseFrame {
        code: WsCode::Normal,
        reason: "".into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if ws.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

fn close_code(frame: Option<&CloseFrame>) -> u16 {
    frame.map_or(1005, |f| u16::from(f.code))
}

/// A message from the server inside the sealed channel, decoded only as far as a
/// load generator needs (borrowed, flat: much cheaper than the full
/// [`ferry_proto::message::ServerMessage`]).
#[derive(Debug, Deserialize)]
pub(crate) struct Lean<'a> {
    /// `type`.
    #[serde(rename = "type", borrow)]
    pub(crate) ty: &'a str,
    /// `rid` (this tool only sends integers).
    #[serde(default)]
    pub(crate) rid: Option<i64>,
    /// `seq` of an `ack` or an `event`.
    #[serde(default)]
    pub(crate) seq: Option<u64>,
    /// `payload` of an `event`, b64u.
    #[serde(default, borrow)]
    pub(crate) payload: Option<&'a str>,
    /// `code` of an `error`.
    #[serde(default, borrow)]
    pub(crate) code: Option<&'a str>,
    /// `duplicate` of an `ack`.
    #[serde(default)]
    pub(crate) duplicate: bool,
    /// `head` of `auth_ok`, `events` or `conflict`.
    #[serde(default)]
    pub(crate) head: Option<u64>,
    /// `more` of `events`.
    #[serde(default)]
    pub(crate) more: bool,
    /// `events` of `events`.
    #[serde(default, borrow)]
    pub(crate) events: Vec<LeanEvent<'a>>,
}

/// One event of an `events` page.
#[derive(Debug, Deserialize)]
pub(crate) struct LeanEvent<'a> {
    /// Its seq.
    #[serde(default)]
    pub(crate) seq: Option<u64>,
    /// Its payload, b64u.
    #[serde(borrow)]
    pub(crate) payload: &'a str,
}

/// An authenticated session: the socket and the two halves of the sealed channel.
pub(crate) struct Session {
    /// The socket.
    pub(crate) ws: Ws,
    sealer: Sealer,
    opener: Opener,
    /// The user's head at `auth_ok`.
    pub(crate) head: u64,
}

/// What a received WebSocket message was, once opened.
pub(crate) enum Opened {
    /// A sealed frame's plaintext (JSON).
    Plain(Vec<u8>),
    /// A control frame: nothing to do.
    Control,
}

impl Session {
    /// Seals `json` and queues it (no flush).
    pub(crate) async fn feed(&mut self, mut json: Vec<u8>) -> Result<(), Failure> {
        self.seal(&mut json)?;
        self.ws
            .feed(Message::Binary(json.into()))
            .await
            .map_err(ws_failure)
    }

    /// Seals `json` in place, ready to be sent as one binary frame.
    pub(crate) fn seal(&mut self, json: &mut Vec<u8>) -> Result<(), Failure> {
        self.sealer
            .seal_in_place(json)
            .map_err(|_| Failure::Protocol("counter_exhausted"))
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) -> Result<(), Failure> {
        self.ws.flush().await.map_err(ws_failure)
    }

    /// Opens one message read from the socket.
    pub(crate) fn open(&mut self, msg: Message) -> Result<Opened, Failure> {
        match msg {
            Message::Binary(b) => {
                let mut buf = Vec::from(b);
                self.opener
                    .open_in_place(&mut buf)
                    .map_err(|_| Failure::Protocol("frame_did_not_open"))?;
                Ok(Opened::Plain(buf))
            }
            Message::Text(_) => Err(Failure::Protocol("text_after_handshake")),
            Message::Close(frame) => Err(Failure::Closed(close_code(frame.as_ref()))),
            _ => Ok(Opened::Control),
        }
    }

    /// Reads until the next sealed frame and returns its plaintext.
    pub(crate) async fn next_plain(&mut self) -> Result<Vec<u8>, Failure> {
        loop {
            let msg = match self.ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(ws_failure(e)),
                None => return Err(Failure::Transport("eof")),
            };
            if let Opened::Plain(p) = self.open(msg)? {
                return Ok(p);
            }
        }
    }

    /// Sends one request with integer `rid` and reads until its reply, skipping
    /// whatever else arrives (events, presence).
    pub(crate) async fn request(&mut self, json: Vec<u8>, rid: i64) -> Result<Vec<u8>, Failure> {
        self.feed(json).await?;
        self.flush().await?;
        loop {
            let plain = self.next_plain().await?;
            let lean: Lean<'_> =
                serde_json::from_slice(&plain).map_err(|_| Failure::Protocol("unreadable"))?;
            if lean.rid == Some(rid) {
                return Ok(plain);
            }
        }
    }

    /// Closes normally (bounded in time).
    pub(crate) async fn close(mut self) {
        close(&mut self.ws).await;
    }
}

/// Runs the v1 handshake on an open WebSocket and reads `auth_ok`.
pub(crate) async fn handshake(
    mut ws: Ws,
    creds: DeviceCredentials,
    pin: ServerPin,
) -> Result<Session, Failure> {
    let mut hs = ClientHandshake::new(creds, pin, ClientEphemeral::random(&mut rand::thread_rng()));
    let hello = hs.client_hello().expect("a new handshake has a hello");
    ws.send(Message::text(hello)).await.map_err(ws_failure)?;
    let server_hello = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => break t,
            Some(Ok(Message::Close(f))) => return Err(Failure::Closed(close_code(f.as_ref()))),
            Some(Ok(Message::Binary(_))) => return Err(Failure::Protocol("binary_in_handshake")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ws_failure(e)),
            None => return Err(Failure::Transport("eof")),
        }
    };
    let auth = match hs.handle_text(server_hello.as_str()) {
        Ok(a) => a,
        Err(e) => {
            close(&mut ws).await;
            return Err(Failure::Protocol(e.metric_label()));
        }
    };
    ws.send(Message::text(auth)).await.map_err(ws_failure)?;
    let est = hs
        .into_established()
        .expect("established after client_auth");
    let mut session = Session {
        ws,
        sealer: est.sealer,
        opener: est.opener,
        head: 0,
    };
    // The `error` text frame before a 4002 close is skipped: the close says it all.
    let plain = loop {
        match session.ws.next().await {
            Some(Ok(Message::Text(_))) => {}
            Some(Ok(m)) => {
                if let Opened::Plain(p) = session.open(m)? {
                    break p;
                }
            }
            Some(Err(e)) => return Err(ws_failure(e)),
            None => return Err(Failure::Transport("eof")),
        }
    };
    let lean: Lean<'_> =
        serde_json::from_slice(&plain).map_err(|_| Failure::Protocol("unreadable_auth_ok"))?;
    if lean.ty != "auth_ok" {
        return Err(Failure::Protocol("first_frame_not_auth_ok"));
    }
    session.head = lean.head.unwrap_or(0);
    Ok(session)
}

/// Opens, handshakes, and reads `auth_ok`, all within `timeout`.
pub(crate) async fn connect(
    target: &Target,
    source: Option<IpAddr>,
    creds: DeviceCredentials,
    pin: ServerPin,
    timeout: Duration,
) -> Result<Session, Failure> {
    tokio::time::timeout(timeout, async {
        let ws = open(target, source).await?;
        handshake(ws, creds, pin).await
    })
    .await
    .map_err(|_| Failure::Timeout)?
}

/// The `publish` request this tool sends: `rid` is the device's counter.
pub(crate) fn publish_json(rid: u64, id: &[u8; 16], payload: &[u8]) -> Vec<u8> {
    publish_json_ttl(rid, id, payload, None)
}

/// [`publish_json`] with `"ttl": secs` when `ttl` is given (the event expires then).
pub(crate) fn publish_json_ttl(
    rid: u64,
    id: &[u8; 16],
    payload: &[u8],
    ttl: Option<u32>,
) -> Vec<u8> {
    let b64 = b64u::encode(payload);
    let mut out = Vec::with_capacity(b64.len() + 96);
    out.extend_from_slice(b"{\"type\":\"publish\",\"rid\":");
    out.extend_from_slice(rid.to_string().as_bytes());
    out.extend_from_slice(b",\"id\":\"");
    out.extend_from_slice(ferry_proto::message::format_uuid(id).as_bytes());
    out.extend_from_slice(b"\",\"payload\":\"");
    out.extend_from_slice(b64.as_bytes());
    out.push(b'"');
    if let Some(ttl) = ttl {
        out.extend_from_slice(b",\"ttl\":");
        out.extend_from_slice(ttl.to_string().as_bytes());
    }
    out.push(b'}');
    out
}

/// The server key to trust: `--server-key` pins it, else the first key seen.
pub(crate) fn pin(server_key: Option<&str>) -> anyhow::Result<ServerPin> {
    match server_key {
        Some(k) => Ok(ServerPin::Key(b64u::decode_array::<32>(k.trim()).map_err(
            |_| anyhow::anyhow!("--server-key must be b64u of 32 bytes"),
        )?)),
        None => {
            eprintln!(
                "warning: no --server-key: trusting whatever key the server presents (pin it)"
            );
            Ok(ServerPin::FirstUse)
        }
    }
}

/// One user's key and its devices' credentials.
pub(crate) struct UserCreds {
    /// The user key (to certify more devices).
    pub(crate) user: UserKey,
    /// Its devices.
    pub(crate) devices: Vec<DeviceCredentials>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `users` users with `devices` devices each: the first ones of `--keys` when
/// given, else fresh identities made in memory (new users, so their logs start
/// empty).
pub(crate) fn identities(
    keys: Option<&Path>,
    users: u32,
    devices: u32,
) -> anyhow::Result<Vec<UserCreds>> {
    let file = match keys {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let file: KeyFile = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a ferry-load key file", path.display()))?;
            if file.version != crate::keys::VERSION {
                bail!(
                    "{}: key file version {} is not supported",
                    path.display(),
                    file.version
                );
            }
            file
        }
        None => {
            let started = Instant::now();
            let file = KeyFile::generate(users, devices, now_secs(), &mut rand::thread_rng());
            if users * devices > 1000 {
                eprintln!(
                    "generated {} identities in {:.1} s",
                    users * devices,
                    started.elapsed().as_secs_f64()
                );
            }
            file
        }
    };
    if file.users.len() < users as usize {
        bail!(
            "the key file has {} users, {users} are needed",
            file.users.len()
        );
    }
    let bad = |what: &str| anyhow::anyhow!("the key file has a malformed {what}");
    file.users
        .iter()
        .take(users as usize)
        .map(|u| {
            if u.devices.len() < devices as usize {
                bail!(
                    "a user in the key file has {} devices, {devices} are needed",
                    u.devices.len()
                );
            }
            let user_seed = b64u::decode_array::<32>(&u.user_seed).map_err(|_| bad("user_seed"))?;
            let user = UserKey::from_seed(&user_seed);
            let devices = u
                .devices
                .iter()
                .take(devices as usize)
                .map(|d| {
                    let seed = b64u::decode_array::<32>(&d.seed).map_err(|_| bad("seed"))?;
                    let cert = DeviceCertificate {
                        issued_at: d.cert.issued_at,
                        expires_at: d.cert.expires_at,
                        sig: b64u::decode_array::<64>(&d.cert.sig).map_err(|_| bad("cert.sig"))?,
                    };
                    Ok(DeviceKey::from_seed(&seed).credentials(user.public(), cert))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(UserCreds { user, devices })
        })
        .collect()
}

/// How many users a key file holds and the fewest devices any of them has.
pub(crate) fn key_file_shape(path: &Path) -> anyhow::Result<(u32, u32)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: KeyFile = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a ferry-load key file", path.display()))?;
    let devices = file
        .users
        .iter()
        .map(|u| u.devices.len())
        .min()
        .unwrap_or(0);
    if devices == 0 {
        bail!("{} holds no devices", path.display());
    }
    Ok((file.users.len() as u32, devices as u32))
}

/// A new device of `user`, certified now.
pub(crate) fn fresh_device(user: &UserKey) -> DeviceCredentials {
    let device = DeviceKey::generate();
    let issued = now_secs().saturating_sub(crate::keys::ISSUED_BACKDATE_SECS);
    let cert = user.certify(&device.public(), issued, 0);
    device.credentials(user.public(), cert)
}

/// Raises this process's open-file limit to its hard limit; returns the new soft
/// limit.
pub(crate) fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("warning: cannot raise the open-file limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::message::{ClientMessage, Request, Rid};

    #[test]
    fn targets_are_loopback_only() {
        let t = Target::parse("ws://127.0.0.1:8080/v1/ws").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.url(), "ws://127.0.0.1:8080/v1/ws");
        assert_eq!(t.with_path("/g/3").url(), "ws://127.0.0.1:8080/g/3");
        let t = Target::parse("ws://localhost:9/").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9".parse().unwrap());
        assert!(Target::parse("ws://127.9.9.9:1").is_ok());
        assert!(Target::parse("ws://10.0.0.1:8080/v1/ws").is_err());
        assert!(Target::parse("ws://example.com:80/").is_err());
        assert!(Target::parse("wss://127.0.0.1:8080/").is_err());
        assert!(Target::parse("ws://127.0.0.1/").is_err());
    }

    #[test]
    fn sources_rotate_over_127_0_0_2_and_up() {
        let s = Sources::new(3).unwrap();
        let got: Vec<_> = (0..4).map(|_| s.pick().unwrap().to_string()).collect();
        assert_eq!(got, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"]);
        assert_eq!(Sources::new(0).unwrap().pick(), None);
        assert!(Sources::new(254).is_err());
    }

    #[test]
    fn publish_json_is_what_the_server_decodes() {
        let id = [7u8; 16];
        let payload = vec![1, 2, 3, 250];
        let req = Request::decode(&publish_json(42, &id, &payload)).unwrap();
        assert_eq!(req.rid, Some(Rid::Int(42)));
        let ClientMessage::Publish(p) = req.body else {
            panic!("not a publish")
        };
        assert_eq!((p.id, p.payload), (id, payload.clone()));
        assert!(!p.ephemeral && p.key.is_none() && p.ttl.is_none());
        let req = Request::decode(&publish_json_ttl(43, &id, &payload, Some(60))).unwrap();
        let ClientMessage::Publish(p) = req.body else {
            panic!("not a publish")
        };
        assert_eq!((p.ttl, p.payload), (Some(60), payload));
    }

    #[test]
    fn lean_decoding_reads_server_messages() {
        use ferry_proto::message::{EventMsg, ServerMessage};
        let ack = ServerMessage::Ack {
            rid: Some(Rid::Int(9)),
            id: "x".into(),
            seq: Some(5),
            ts: Some(1),
            duplicate: false,
            ephemeral: false,
            delivered: None,
        }
        .to_json();
        let l: Lean<'_> = serde_json::from_slice(&ack).unwrap();
        assert_eq!((l.ty, l.rid, l.seq), ("ack", Some(9), Some(5)));
        let ev = ServerMessage::Event(EventMsg {
            seq: Some(3),
            id: "x".into(),
            device: "d".into(),
            ts: 1,
            payload: "AAAA".into(),
            key: None,
            ttl: None,
            ephemeral: false,
        })
        .to_json();
        let l: Lean<'_> = serde_json::from_slice(&ev).unwrap();
        assert_eq!((l.ty, l.seq, l.payload), ("event", Some(3), Some("AAAA")));
        let err = ServerMessage::error(
            Some(Rid::Int(1)),
            ferry_proto::message::ErrorCode::RateLimited,
            "a \"quoted\" message",
        )
        .to_json();
        let l: Lean<'_> = serde_json::from_slice(&err).unwrap();
        assert_eq!((l.ty, l.code), ("error", Some("rate_limited")));
    }

    #[test]
    fn failure_labels() {
        assert_eq!(Failure::Closed(4002).label(), "close_4002");
        assert_eq!(Failure::Http(429).label(), "http_429");
        assert_eq!(
            Failure::Connect("refused".into()).label(),
            "connect_refused"
        );
        assert_eq!(Failure::Timeout.to_string(), "timeout");
    }

    #[test]
    fn in_memory_identities_have_valid_certificates() {
        let ids = identities(None, 2, 3).unwrap();
        assert_eq!(ids.len(), 2);
        for u in &ids {
            assert_eq!(u.devices.len(), 3);
            for d in &u.devices {
                let user = ferry_proto::keys::parse_identity_key(&d.user).unwrap();
                let device = d.device_key.verifying_key().to_bytes();
                d.cert.verify_signature(&user, &device).unwrap();
            }
            let f = fresh_device(&u.user);
            assert_eq!(f.user, u.user.public());
        }
    }
}
