//! One session with the server: the WebSocket, the handshake, and the sealed
//! channel, driven by a background task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};

use crate::ClientError;
use ferry_proto::b64u;
use ferry_proto::close::CloseCode;
use ferry_proto::handshake::{ClientEphemeral, ClientHandshake, DeviceCredentials, ServerPin};
use ferry_proto::message::{self, ClientMessage, ErrorCode, EventMsg, Limits, Rid, ServerMessage};
use ferry_proto::seal::{Opener, Sealer};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long [`Connection::connect`] waits for the socket and the handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a request waits for its reply by default.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How many unsolicited messages wait for the application before the connection
/// stops reading (and the server, in time, closes it as a slow consumer).
pub const INCOMING_QUEUE: usize = 1024;
const COMMAND_QUEUE: usize = 256;
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// After this long without a frame from the server the client pings it, and after
/// twice this long it gives the connection up as dead.
pub const KEEPALIVE: Duration = Duration::from_secs(30);

/// The server's `auth_ok`, decoded, with the server key the handshake accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthOk {
    /// Session id (b64u), for logs.
    pub session: String,
    /// The authenticated user.
    pub user: [u8; 32],
    /// The authenticated device.
    pub device: [u8; 32],
    /// The user's newest seq when the session started.
    pub head: u64,
    /// The server's clock, Unix ms.
    pub server_time: i64,
    /// The limits in force.
    pub limits: Limits,
    /// The server key the handshake verified (store it to pin it).
    pub server_key: [u8; 32],
}

/// Another device of the user connected, left, or was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presence {
    /// The device.
    pub device: [u8; 32],
    /// Whether it is online now.
    pub online: bool,
    /// Server time, Unix ms.
    pub ts: i64,
    /// It was revoked.
    pub revoked: bool,
}

/// A message the server sent without being asked.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A live event from another device (stored, with `seq`, or ephemeral).
    Event(EventMsg),
    /// Presence of another device.
    Presence(Presence),
    /// An `error` without a request id (for example for a `cursor`).
    Error {
        /// The code.
        code: ErrorCode,
        /// The detail.
        message: String,
    },
    /// The connection ended; always the last item.
    Closed(ClientError),
}

enum Command {
    Request {
        msg: ClientMessage,
        reply: oneshot::Sender<Result<ServerMessage, ClientError>>,
    },
    Send {
        msg: ClientMessage,
    },
    Close,
}

/// One authenticated session. A background task owns the socket: it seals
/// requests, matches replies to them by `rid`, answers WebSocket pings, and queues
/// everything unsolicited (live events, presence) for [`Self::recv`].
///
/// This is the low-level API: it never reconnects. [`crate::Client`] builds
/// reconnection, retries and gap-free event streams on top of it.
///
/// ```no_run
/// use ferry_client::{Connection, Incoming, Profile};
/// use ferry_proto::message::{ClientMessage, ServerMessage};
///
/// # async fn demo(profile: Profile) -> Result<(), ferry_client::ClientError> {
/// let (mut conn, auth_ok) =
///     Connection::connect(&profile.server_url, profile.credentials(), profile.pin(), None).await?;
/// println!("connected; the log's head is {}", auth_ok.head);
/// let reply = conn.request(ClientMessage::Sync { after: 0, limit: 100 }).await?;
/// if let ServerMessage::Events { events, more, .. } = reply {
///     println!("{} events, more: {more}", events.len());
/// }
/// while let Some(item) = conn.recv().await {
///     match item {
///         Incoming::Event(e) => println!("live event {:?}", e.seq),
///         Incoming::Closed(why) => println!("closed: {why}"),
///         _ => {}
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub struct Connection {
    requester: Requester,
    incoming: mpsc::Receiver<Incoming>,
    server_key: [u8; 32],
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server_key", &b64u::encode(&self.server_key))
            .field("closed", &self.close_reason())
            .finish_non_exhaustive()
    }
}

/// A cloneable handle for sending requests on a [`Connection`] from other tasks.
#[derive(Clone)]
pub struct Requester {
    tx: mpsc::Sender<Command>,
    closed: watch::Receiver<Option<ClientError>>,
    timeout: Duration,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("closed", &self.closed.borrow().clone())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens `url` (`ws://` or `wss://`), runs the handshake with `creds`, trusting
    /// the server key as `pin` says, and reads `auth_ok`.
    ///
    /// `wss://` needs `tls`: this crate bundles no root certificates (see
    /// [`crate::tls_config`]). A close frame instead of `auth_ok` is
    /// [`ClientError::Closed`] (4002: authentication failed, which includes a
    /// revoked device).
    pub async fn connect(
        url: &str,
        creds: DeviceCredentials,
        pin: ServerPin,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<(Self, AuthOk), ClientError> {
        Self::connect_with_timeout(url, creds, pin, tls, CONNECT_TIMEOUT).await
    }

    /// [`Self::connect`] with a time limit for the socket and the handshake.
    pub async fn connect_with_timeout(
        url: &str,
        creds: DeviceCredentials,
        pin: ServerPin,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<(Self, AuthOk), ClientError> {
        let connector = connector_for(url, tls)?;
        let (mut ws, est, server_key, auth_ok) =
            tokio::time::timeout(timeout, handshake(url, creds, pin, connector))
                .await
                .map_err(|_| ClientError::Timeout)??;
        let (tx, cmds) = mpsc::channel(COMMAND_QUEUE);
        let (in_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
        let (closed_tx, closed) = watch::channel(None);
        let auth = decode_auth_ok(auth_ok, server_key);
        let auth = match auth {
            Ok(a) => a,
            Err(e) => {
                close_ws(&mut ws, CloseCode::ProtocolViolation).await;
                return Err(e);
            }
        };
        tokio::spawn(drive(ws, est.sealer, est.opener, cmds, in_tx, closed_tx));
        let conn = Self {
            requester: Requester {
                tx,
                closed,
                timeout: REQUEST_TIMEOUT,
            },
            incoming,
            server_key,
        };
        Ok((conn, auth))
    }

    /// Sends a request and waits for its reply (matched by `rid`, which this method
    /// assigns). An `error` reply is returned as [`ClientError::Server`].
    pub async fn request(&self, msg: ClientMessage) -> Result<ServerMessage, ClientError> {
        self.requester.request(msg).await
    }

    /// Sends a message that has no reply (`cursor`).
    pub async fn send(&self, msg: ClientMessage) -> Result<(), ClientError> {
        self.requester.send(msg).await
    }

    /// The next unsolicited message; [`Incoming::Closed`] is the last one, then
    /// `None`.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
    }

    /// A handle for sending requests from other tasks.
    pub fn requester(&self) -> Requester {
        self.requester.clone()
    }

    /// The server key the handshake accepted.
    pub fn server_key(&self) -> [u8; 32] {
        self.server_key
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<ClientError> {
        self.requester.close_reason()
    }

    /// Waits until the connection has ended and says why.
    pub async fn closed(&self) -> ClientError {
        self.requester.closed().await
    }

    /// Closes the connection normally (1000) and waits for the background task.
    pub async fn close(self) {
        let Self {
            requester,
            incoming,
            ..
        } = self;
        // Nobody reads unsolicited messages any more: never let the task wait on them.
        drop(incoming);
        let _ = requester.tx.send(Command::Close).await;
        let _ = requester.closed().await;
    }
}

impl Requester {
    /// Overrides how long [`Self::request`] waits for a reply.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// See [`Connection::request`].
    pub async fn request(&self, msg: ClientMessage) -> Result<ServerMessage, ClientError> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Request { msg, reply }).await.is_err() {
            return Err(self.gone());
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(Err(_)) => Err(self.gone()),
            Ok(Ok(Ok(ServerMessage::Error {
                code,
                message,
                retry_after_ms,
                ..
            }))) => Err(ClientError::Server {
                code,
                message,
                retry_after_ms,
            }),
            Ok(Ok(result)) => result,
        }
    }

    /// See [`Connection::send`].
    pub async fn send(&self, msg: ClientMessage) -> Result<(), ClientError> {
        self.tx
            .send(Command::Send { msg })
            .await
            .map_err(|_| self.gone())
    }

    /// Queues a message without waiting; fails when the queue is full or the
    /// connection has ended.
    pub fn try_send(&self, msg: ClientMessage) -> Result<(), ClientError> {
        self.tx
            .try_send(Command::Send { msg })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    ClientError::Transport("the connection's queue is full".into())
                }
                mpsc::error::TrySendError::Closed(_) => self.gone(),
            })
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.closed.borrow().is_some()
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<ClientError> {
        self.closed.borrow().clone()
    }

    /// Waits until the connection has ended and says why.
    pub async fn closed(&self) -> ClientError {
        let mut rx = self.closed.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or(ClientError::Shutdown),
            Err(_) => ClientError::Shutdown,
        }
    }

    fn gone(&self) -> ClientError {
        self.close_reason()
            .unwrap_or_else(|| ClientError::Transport("the connection ended".into()))
    }
}

fn connector_for(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Option<Connector>, ClientError> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("ws") => Ok(None),
        Some("wss") => match tls {
            Some(cfg) => Ok(Some(Connector::Rustls(cfg))),
            None => Err(ClientError::Tls(
                "wss:// needs a rustls ClientConfig with the roots to trust \
                 (see ferry_client::tls_config); none are built in"
                    .into(),
            )),
        },
        _ => Err(ClientError::InvalidUrl(format!(
            "{url:?}: expected ws:// or wss://"
        ))),
    }
}

fn ws_error(e: WsError) -> ClientError {
    match e {
        WsError::Url(e) => ClientError::InvalidUrl(e.to_string()),
        WsError::Tls(e) => ClientError::Tls(e.to_string()),
        WsError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            // rustls reports certificate failures as InvalidData IO errors.
            ClientError::Tls(e.to_string())
        }
        other => ClientError::Transport(other.to_string()),
    }
}

async fn handshake(
    url: &str,
    creds: DeviceCredentials,
    pin: ServerPin,
    connector: Option<Connector>,
) -> Result<
    (
        Ws,
        ferry_proto::handshake::Established,
        [u8; 32],
        ServerMessage,
    ),
    ClientError,
> {
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector)
        .await
        .map_err(ws_error)?;
    let mut hs = ClientHandshake::new(creds, pin, ClientEphemeral::random(&mut rand::rngs::OsRng));
    let hello = hs.client_hello().expect("a new handshake has a hello");
    ws.send(Message::text(hello)).await.map_err(ws_error)?;
    let server_hello = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => break t,
            Some(Ok(Message::Close(frame))) => return Err(closed(frame.as_ref())),
            Some(Ok(Message::Binary(_))) => {
                return Err(ClientError::Protocol(
                    "binary frame during the handshake".into(),
                ));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ws_error(e)),
            None => return Err(eof()),
        }
    };
    let auth = match hs.handle_text(server_hello.as_str()) {
        Ok(auth) => auth,
        Err(e) => {
            close_ws(&mut ws, CloseCode::HandshakeFailed).await;
            return Err(e.into());
        }
    };
    let server_key = hs.server_key().expect("the accepted key is known");
    ws.send(Message::text(auth)).await.map_err(ws_error)?;
    let mut est = hs
        .into_established()
        .expect("established after client_auth");
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                let Ok(plain) = est.opener.open(&b) else {
                    close_ws(&mut ws, CloseCode::ProtocolViolation).await;
                    return Err(ClientError::Protocol("auth_ok did not open".into()));
                };
                let msg: ServerMessage = serde_json::from_slice(&plain)
                    .map_err(|e| ClientError::Protocol(format!("auth_ok is malformed: {e}")))?;
                return Ok((ws, est, server_key, msg));
            }
            // The `error` frame that precedes a 4002 close: the close says it all.
            Some(Ok(Message::Text(_))) => continue,
            Some(Ok(Message::Close(frame))) => return Err(closed(frame.as_ref())),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ws_error(e)),
            None => return Err(eof()),
        }
    }
}

fn decode_auth_ok(msg: ServerMessage, server_key: [u8; 32]) -> Result<AuthOk, ClientError> {
    let ServerMessage::AuthOk {
        session,
        user,
        device,
        head,
        server_time,
        limits,
    } = msg
    else {
        return Err(ClientError::Protocol(
            "the first sealed frame is not auth_ok".into(),
        ));
    };
    let key = |s: &str| {
        b64u::decode_array::<32>(s)
            .map_err(|_| ClientError::Protocol("auth_ok carries a malformed key".into()))
    };
    Ok(AuthOk {
        session,
        user: key(&user)?,
        device: key(&device)?,
        head,
        server_time,
        limits,
        server_key,
    })
}

fn closed(frame: Option<&CloseFrame>) -> ClientError {
    ClientError::Closed(frame.map_or(1005, |f| u16::from(f.code)))
}

fn eof() -> ClientError {
    ClientError::Transport("the connection ended without a close frame".into())
}

async fn close_ws(ws: &mut Ws, code: CloseCode) {
    let frame = CloseFrame {
        code: WsCode::from(code.as_u16()),
        reason: code.reason().into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if ws.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// The JSON of a request, with `rid` when given.
pub fn encode_request(msg: &ClientMessage, rid: Option<&Rid>) -> Vec<u8> {
    let mut m = Map::new();
    let ty = match msg {
        ClientMessage::Publish(p) => {
            m.insert("id".into(), json!(message::format_uuid(&p.id)));
            m.insert("payload".into(), json!(b64u::encode(&p.payload)));
            if let Some(k) = &p.key {
                m.insert("key".into(), json!(b64u::encode(k)));
            }
            if let Some(b) = p.base {
                m.insert("base".into(), json!(b));
            }
            if let Some(t) = p.ttl {
                m.insert("ttl".into(), json!(t));
            }
            if p.ephemeral {
                m.insert("ephemeral".into(), json!(true));
            }
            if let Some(to) = &p.to {
                let to: Vec<String> = to.iter().map(|d| b64u::encode(d)).collect();
                m.insert("to".into(), json!(to));
            }
            "publish"
        }
        ClientMessage::Sync { after, limit } => {
            m.insert("after".into(), json!(after));
            m.insert("limit".into(), json!(limit));
            "sync"
        }
        ClientMessage::Cursor { seq } => {
            m.insert("seq".into(), json!(seq));
            "cursor"
        }
        ClientMessage::Devices => "devices",
        ClientMessage::Revoke { device, ts, sig } => {
            m.insert("device".into(), json!(b64u::encode(device)));
            m.insert("ts".into(), json!(ts));
            m.insert("sig".into(), json!(b64u::encode(sig)));
            "revoke"
        }
        ClientMessage::Token => "token",
        ClientMessage::Ping => "ping",
        // `ClientMessage` is non-exhaustive: a request added to ferry-proto needs its
        // encoding here before the SDK can send it.
        other => unreachable!("a request this SDK cannot encode: {other:?}"),
    };
    m.insert("type".into(), json!(ty));
    if let Some(rid) = rid {
        m.insert(
            "rid".into(),
            serde_json::to_value(rid).expect("rid serializes"),
        );
    }
    serde_json::to_vec(&Value::Object(m)).expect("requests serialize")
}

fn rid_of(msg: &ServerMessage) -> Option<&Rid> {
    match msg {
        ServerMessage::Ack { rid, .. }
        | ServerMessage::Conflict { rid, .. }
        | ServerMessage::Events { rid, .. }
        | ServerMessage::Devices { rid, .. }
        | ServerMessage::Ok { rid, .. }
        | ServerMessage::Token { rid, .. }
        | ServerMessage::Pong { rid, .. }
        | ServerMessage::Error { rid, .. } => rid.as_ref(),
        ServerMessage::AuthOk { .. } | ServerMessage::Event(_) | ServerMessage::Presence { .. } => {
            None
        }
        // `ServerMessage` is non-exhaustive: a message this SDK does not know answers
        // no request of its own.
        _ => None,
    }
}

fn decode_presence(device: &str, online: bool, ts: i64, revoked: bool) -> Option<Presence> {
    Some(Presence {
        device: b64u::decode_array::<32>(device).ok()?,
        online,
        ts,
        revoked,
    })
}

struct Driver {
    ws: Ws,
    sealer: Sealer,
    opener: Opener,
    incoming: mpsc::Sender<Incoming>,
    pending: HashMap<i64, oneshot::Sender<Result<ServerMessage, ClientError>>>,
    next_rid: i64,
}

/// What the loop does after one step.
enum Step {
    Go,
    End(ClientError),
}

async fn drive(
    ws: Ws,
    sealer: Sealer,
    opener: Opener,
    mut cmds: mpsc::Receiver<Command>,
    incoming: mpsc::Sender<Incoming>,
    closed: watch::Sender<Option<ClientError>>,
) {
    let mut d = Driver {
        ws,
        sealer,
        opener,
        incoming,
        pending: HashMap::new(),
        next_rid: 1,
    };
    // Keep-alive: after KEEPALIVE without a frame from the server, ping it; after
    // another KEEPALIVE without one, the connection is dead (a network that drops
    // packets silently never ends the socket by itself).
    let mut ping_sent = false;
    let mut quiet_since = Instant::now();
    let reason = loop {
        let step = tokio::select! {
            frame = d.ws.next() => {
                quiet_since = Instant::now();
                ping_sent = false;
                d.frame(frame).await
            }
            _ = tokio::time::sleep_until(quiet_since + KEEPALIVE) => {
                if ping_sent {
                    Step::End(ClientError::Transport(format!(
                        "no frame from the server for {} s",
                        2 * KEEPALIVE.as_secs()
                    )))
                } else {
                    ping_sent = true;
                    quiet_since = Instant::now();
                    match d.ws.send(Message::Ping(Default::default())).await {
                        Ok(()) => Step::Go,
                        Err(e) => Step::End(ws_error(e)),
                    }
                }
            }
            cmd = cmds.recv() => match cmd {
                Some(Command::Request { msg, reply }) => d.request(&msg, reply).await,
                Some(Command::Send { msg }) => d.send(&msg, None).await,
                Some(Command::Close) | None => {
                    close_ws(&mut d.ws, CloseCode::Normal).await;
                    Step::End(ClientError::Shutdown)
                }
            },
        };
        if let Step::End(reason) = step {
            break reason;
        }
    };
    debug!(reason = %reason, "connection ended");
    // Closed first, so whoever sees a request fail also sees the connection gone.
    let _ = closed.send(Some(reason.clone()));
    drop(cmds);
    for (_, reply) in d.pending.drain() {
        let _ = reply.send(Err(reason.clone()));
    }
    let _ = d.incoming.send(Incoming::Closed(reason)).await;
}

impl Driver {
    async fn request(
        &mut self,
        msg: &ClientMessage,
        reply: oneshot::Sender<Result<ServerMessage, ClientError>>,
    ) -> Step {
        let rid = self.next_rid;
        self.next_rid += 1;
        if self.pending.len() >= 1024 {
            // Requests whose callers gave up (timed out) leave their slot behind.
            self.pending.retain(|_, r| !r.is_closed());
        }
        self.pending.insert(rid, reply);
        self.send(msg, Some(Rid::Int(rid))).await
    }

    async fn send(&mut self, msg: &ClientMessage, rid: Option<Rid>) -> Step {
        let mut buf = encode_request(msg, rid.as_ref());
        if self.sealer.seal_in_place(&mut buf).is_err() {
            close_ws(&mut self.ws, CloseCode::Normal).await;
            return Step::End(ClientError::Protocol(
                "the sealing counter is exhausted".into(),
            ));
        }
        match self.ws.send(Message::Binary(buf.into())).await {
            Ok(()) => Step::Go,
            Err(e) => Step::End(ws_error(e)),
        }
    }

    async fn frame(&mut self, frame: Option<Result<Message, WsError>>) -> Step {
        let bytes = match frame {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Text(_))) => {
                close_ws(&mut self.ws, CloseCode::ProtocolViolation).await;
                return Step::End(ClientError::Protocol(
                    "text frame after the handshake".into(),
                ));
            }
            Some(Ok(Message::Close(frame))) => return Step::End(closed(frame.as_ref())),
            // Pings are answered by tungstenite itself.
            Some(Ok(_)) => return Step::Go,
            Some(Err(e)) => return Step::End(ws_error(e)),
            None => return Step::End(eof()),
        };
        let mut buf = Vec::from(bytes);
        if self.opener.open_in_place(&mut buf).is_err() {
            close_ws(&mut self.ws, CloseCode::ProtocolViolation).await;
            return Step::End(ClientError::Protocol("a sealed frame did not open".into()));
        }
        let msg: ServerMessage = match serde_json::from_slice(&buf) {
            Ok(m) => m,
            Err(e) => {
                // A message type this client does not know (a newer server): skip
                // it, but fail the request it answers, if any.
                warn!(error = %e, "skipping a server message this client cannot read");
                let rid = serde_json::from_slice::<Value>(&buf)
                    .ok()
                    .and_then(|v| v.get("rid").and_then(Value::as_i64));
                if let Some(reply) = rid.and_then(|r| self.pending.remove(&r)) {
                    let _ =
                        reply.send(Err(ClientError::Protocol(format!("unreadable reply: {e}"))));
                }
                return Step::Go;
            }
        };
        if let Some(Rid::Int(rid)) = rid_of(&msg) {
            if let Some(reply) = self.pending.remove(rid) {
                let _ = reply.send(Ok(msg));
            }
            return Step::Go;
        }
        let item = match msg {
            ServerMessage::Event(e) => Incoming::Event(e),
            ServerMessage::Presence {
                device,
                online,
                ts,
                revoked,
            } => match decode_presence(&device, online, ts, revoked) {
                Some(p) => Incoming::Presence(p),
                None => {
                    warn!("skipping a presence message with a malformed device key");
                    return Step::Go;
                }
            },
            ServerMessage::Error { code, message, .. } => Incoming::Error { code, message },
            other => {
                debug!(?other, "skipping an unexpected message");
                return Step::Go;
            }
        };
        if self.incoming.send(item).await.is_err() {
            // Nobody reads unsolicited messages: fine, requests still work.
            debug!("incoming queue dropped");
        }
        Step::Go
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::message::{Publish, Request};

    #[test]
    fn encoded_requests_decode_as_the_server_reads_them() {
        let msgs = [
            ClientMessage::Publish(Publish {
                id: message::parse_uuid("123e4567-e89b-12d3-a456-426614174000").unwrap(),
                payload: b"hello".to_vec(),
                key: Some(b"k".to_vec()),
                base: Some(3),
                ttl: Some(60),
                ephemeral: false,
                to: None,
            }),
            ClientMessage::Publish(Publish {
                id: [1; 16],
                payload: vec![],
                key: None,
                base: None,
                ttl: None,
                ephemeral: true,
                to: Some(vec![[5; 32]]),
            }),
            ClientMessage::Sync {
                after: 7,
                limit: 10,
            },
            ClientMessage::Cursor { seq: 9 },
            ClientMessage::Devices,
            ClientMessage::Revoke {
                device: [2; 32],
                ts: 5,
                sig: [3; 64],
            },
            ClientMessage::Token,
            ClientMessage::Ping,
        ];
        for (i, msg) in msgs.into_iter().enumerate() {
            let rid = Rid::Int(i as i64);
            let req = Request::decode(&encode_request(&msg, Some(&rid))).unwrap();
            assert_eq!(req.rid, Some(rid));
            assert_eq!(req.body, msg);
        }
        let req = Request::decode(&encode_request(&ClientMessage::Ping, None)).unwrap();
        assert_eq!(req.rid, None);
    }

    #[test]
    fn urls_and_tls() {
        assert!(connector_for("ws://h/v1/ws", None).unwrap().is_none());
        assert!(matches!(
            connector_for("wss://h/v1/ws", None),
            Err(ClientError::Tls(_))
        ));
        assert!(matches!(
            connector_for("http://h/v1/ws", None),
            Err(ClientError::InvalidUrl(_))
        ));
    }
}
