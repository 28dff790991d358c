//! A raw test device: the ferry-proto client handshake over tokio-tungstenite,
//! with direct access to the socket so tests can misbehave on purpose.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use ferry_proto::handshake::{
    ClientEphemeral, ClientHandshake, DeviceCredentials, Established, ServerPin,
};
use ferry_proto::keys::DeviceCertificate;
use ferry_proto::message::ServerMessage;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The socket type of test clients.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A user with one signing key.
pub struct TestUser {
    /// The user key.
    pub key: SigningKey,
}

impl TestUser {
    /// A user from a seed byte.
    pub fn new(seed: u8) -> Self {
        Self {
            key: SigningKey::from_bytes(&[seed; 32]),
        }
    }

    /// A random user.
    pub fn random() -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// Credentials for a new random device of this user.
    pub fn device(&self) -> DeviceCredentials {
        let device_key = SigningKey::generate(&mut rand::rngs::OsRng);
        self.device_with(device_key)
    }

    /// Credentials for the given device key.
    pub fn device_with(&self, device_key: SigningKey) -> DeviceCredentials {
        let cert = DeviceCertificate::issue(
            &self.key,
            device_key.verifying_key().as_bytes(),
            now_secs() - 10,
            0,
        );
        DeviceCredentials {
            user: self.key.verifying_key().to_bytes(),
            device_key,
            cert,
        }
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An authenticated test device.
pub struct TestClient {
    /// The socket.
    pub ws: Ws,
    /// Session keys and counters.
    pub est: Established,
    /// The `auth_ok` message.
    pub auth_ok: ServerMessage,
}

/// How a connection attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code.
    Code(u16),
    /// The socket ended without a close frame.
    NoFrame,
}

/// Opens a WebSocket to `url`.
pub async fn open(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    ws
}

/// Runs the handshake; on success the client holds the session.
pub async fn connect(url: &str, creds: DeviceCredentials) -> TestClient {
    try_connect(url, creds).await.expect("handshake succeeds")
}

/// Runs the handshake; on failure returns how the server closed.
pub async fn try_connect(url: &str, creds: DeviceCredentials) -> Result<TestClient, Closed> {
    let mut ws = open(url).await;
    let mut hs = ClientHandshake::new(
        creds,
        ServerPin::Key(super::server::server_key().verifying_key().to_bytes()),
        ClientEphemeral::random(&mut rand::rngs::OsRng),
    );
    ws.send(Message::text(hs.client_hello().unwrap()))
        .await
        .unwrap();
    let text = match next_text(&mut ws).await {
        Ok(t) => t,
        Err(c) => return Err(c),
    };
    let auth = hs.handle_text(&text).expect("server_hello verifies");
    ws.send(Message::text(auth)).await.unwrap();
    let mut est = hs.into_established().unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("reply in time")
        {
            Some(Ok(Message::Binary(b))) => {
                let plain = est.opener.open(&b).expect("auth_ok opens");
                let auth_ok: ServerMessage = serde_json::from_slice(&plain).unwrap();
                assert!(
                    matches!(auth_ok, ServerMessage::AuthOk { .. }),
                    "{auth_ok:?}"
                );
                return Ok(TestClient { ws, est, auth_ok });
            }
            Some(Ok(Message::Text(_))) => continue, // the auth_failed error frame
            Some(Ok(Message::Close(Some(f)))) => return Err(Closed::Code(f.code.into())),
            Some(Ok(_)) => continue,
            _ => return Err(Closed::NoFrame),
        }
    }
}

async fn next_text(ws: &mut Ws) -> Result<String, Closed> {
    loop {
        match tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("reply in time")
        {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(Some(f)))) => return Err(Closed::Code(f.code.into())),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return Err(Closed::NoFrame),
            Some(Ok(_)) => continue,
        }
    }
}

/// Reads until the server's close frame (skipping anything else) and returns its code.
pub async fn expect_close(ws: &mut Ws) -> Closed {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return Closed::Code(f.code.into()),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return Closed::NoFrame,
            Some(Ok(_)) => continue,
        }
    }
}

impl TestClient {
    /// Seals and sends one JSON request.
    pub async fn send_json(&mut self, json: &str) {
        let frame = self.est.sealer.seal(json.as_bytes()).unwrap();
        self.ws.send(Message::Binary(frame.into())).await.unwrap();
    }

    /// Receives and opens the next sealed message (skipping pings).
    pub async fn recv(&mut self) -> ServerMessage {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("message in time")
            {
                Some(Ok(Message::Binary(b))) => {
                    let plain = self.est.opener.open(&b).expect("server frame opens");
                    return serde_json::from_slice(&plain).unwrap();
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a sealed frame, got {other:?}"),
            }
        }
    }

    /// Sends a request and returns the reply, skipping unsolicited `presence` and
    /// `event` messages.
    pub async fn request(&mut self, json: &str) -> ServerMessage {
        self.send_json(json).await;
        loop {
            match self.recv().await {
                ServerMessage::Presence { .. } | ServerMessage::Event(_) => continue,
                m => return m,
            }
        }
    }
}

// Helpers for load tests (tests/relay_stress.rs, tests/durability.rs).

/// A fresh random event id (UUID v4, canonical lowercase form).
pub fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A `publish` request for `id` with `payload`; `rid` echoes the id.
pub fn publish_json(id: &str, payload: &[u8]) -> String {
    format!(
        r#"{{"type":"publish","rid":"{id}","id":"{id}","payload":"{}"}}"#,
        ferry_proto::b64u::encode(payload)
    )
}

impl TestClient {
    /// Like [`Self::recv`], but a socket that ends (or a close frame) is an `Err`
    /// instead of a panic. Silence for `wait` still panics.
    pub async fn try_recv(&mut self, wait: Duration) -> Result<ServerMessage, Closed> {
        loop {
            match tokio::time::timeout(wait, self.ws.next())
                .await
                .expect("message in time")
            {
                Some(Ok(Message::Binary(b))) => {
                    let plain = self.est.opener.open(&b).expect("server frame opens");
                    return Ok(serde_json::from_slice(&plain).unwrap());
                }
                Some(Ok(Message::Close(Some(f)))) => return Err(Closed::Code(f.code.into())),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                    return Err(Closed::NoFrame);
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Sends every `(id, payload)` of `window` as a `publish` without waiting, then
    /// reads until each got its reply (`ack`, `conflict` or `error`). Every message
    /// read, replies and unsolicited ones alike, goes to `on_msg` in arrival order.
    /// A socket that fails or ends is an `Err`; what arrived before went to `on_msg`.
    pub async fn publish_window(
        &mut self,
        window: &[(String, Vec<u8>)],
        mut on_msg: impl FnMut(ServerMessage),
    ) -> Result<(), Closed> {
        for (id, payload) in window {
            let frame = self
                .est
                .sealer
                .seal(publish_json(id, payload).as_bytes())
                .unwrap();
            self.ws
                .feed(Message::Binary(frame.into()))
                .await
                .map_err(|_| Closed::NoFrame)?;
        }
        self.ws.flush().await.map_err(|_| Closed::NoFrame)?;
        let mut replies = 0;
        while replies < window.len() {
            let msg = self.try_recv(Duration::from_secs(20)).await?;
            if matches!(
                msg,
                ServerMessage::Ack { .. }
                    | ServerMessage::Conflict { .. }
                    | ServerMessage::Error { .. }
            ) {
                replies += 1;
            }
            on_msg(msg);
        }
        Ok(())
    }

    /// The user's whole log from seq 0, in pages of at most `limit` events, and the
    /// last `head`. Live messages that arrive meanwhile are skipped.
    pub async fn sync_all(&mut self, limit: u32) -> (Vec<ferry_proto::message::EventMsg>, u64) {
        let mut all = Vec::new();
        loop {
            let after = all
                .last()
                .map_or(0, |e: &ferry_proto::message::EventMsg| e.seq.unwrap());
            let req = format!(r#"{{"type":"sync","after":{after},"limit":{limit}}}"#);
            match self.request(&req).await {
                ServerMessage::Events {
                    events, head, more, ..
                } => {
                    all.extend(events);
                    if !more {
                        return (all, head);
                    }
                }
                other => panic!("expected events, got {other:?}"),
            }
        }
    }
}
