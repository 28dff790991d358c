//! The high-level client: one logical connection that survives disconnects,
//! publishes with retries under a stable event id, and streams the user's log in
//! `seq` order without gaps or duplicates.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::connection::{AuthOk, Connection, Incoming, Presence, Requester};
use crate::identity::{Profile, UserKey};
use crate::{Backoff, ClientError, now_ms};
use ferry_proto::CloseCode;
use ferry_proto::b64u;
use ferry_proto::handshake::{DeviceCredentials, ServerPin};
use ferry_proto::message::{
    self, ClientMessage, DEFAULT_SYNC_LIMIT, DeviceInfo, ErrorCode, EventMsg, MAX_KEY_LEN,
    MAX_SYNC_LIMIT, Publish, ServerMessage,
};

const LIVE_QUEUE: usize = 4096;
const NOTICE_QUEUE: usize = 256;
/// A stream reports its position with `cursor` at least this often while it pages.
const CURSOR_EVERY: u64 = 256;

/// How a [`Client`] connects and behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `ws://` or `wss://` URL of the server's `/v1/ws`.
    pub url: String,
    /// This device's credentials.
    pub credentials: DeviceCredentials,
    /// How to trust the server key. With [`ServerPin::FirstUse`] the key of the first
    /// connection is pinned for every reconnection ([`Client::server_key`]).
    pub pin: ServerPin,
    /// The user key, for [`Client::revoke`]; only on devices that hold it.
    pub user_key: Option<UserKey>,
    /// TLS configuration, required for `wss://` (see [`crate::tls_config`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Reconnect and retry delays.
    pub backoff: Backoff,
    /// Time limit of one connection attempt (socket and handshake).
    pub connect_timeout: Duration,
    /// Time limit of one request's reply.
    pub request_timeout: Duration,
    /// How long a call keeps retrying (reconnects, `unavailable`, `rate_limited`)
    /// before it gives up with [`ClientError::Timeout`].
    pub retry_deadline: Duration,
    /// Page size of `sync` (1–1000).
    pub sync_limit: u32,
}

impl ClientOptions {
    /// Defaults: 100 ms → 30 s backoff, 20 s connect and 30 s request timeouts,
    /// retries for 2 minutes, pages of 500.
    pub fn new(url: impl Into<String>, credentials: DeviceCredentials, pin: ServerPin) -> Self {
        Self {
            url: url.into(),
            credentials,
            pin,
            user_key: None,
            tls: None,
            backoff: Backoff::default(),
            connect_timeout: crate::connection::CONNECT_TIMEOUT,
            request_timeout: crate::connection::REQUEST_TIMEOUT,
            retry_deadline: Duration::from_secs(120),
            sync_limit: DEFAULT_SYNC_LIMIT,
        }
    }

    /// The options for a stored profile (URL, credentials, pin, user key).
    pub fn from_profile(profile: &Profile) -> Self {
        let mut opts = Self::new(
            profile.server_url.clone(),
            profile.credentials(),
            profile.pin(),
        );
        opts.user_key = profile.user_key();
        opts
    }

    /// Sets the TLS configuration.
    pub fn with_tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// What [`Client::publish`] sends besides the payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// The event id (canonical lowercase UUID). Default: a fresh UUIDv7 (time-ordered,
    /// which the server's idempotency index takes at its cheapest). Pass a
    /// stored id to retry a publish across restarts: the server answers a repeated
    /// id with the original ack and `duplicate: true`.
    pub id: Option<String>,
    /// A key (1–64 bytes) for compare-and-set with `base`.
    pub key: Option<Vec<u8>>,
    /// Store only if the newest event with `key` has this seq (0: none exists).
    pub base: Option<u64>,
    /// Time to live, seconds.
    pub ttl: Option<u64>,
    /// Relay to connected devices only; never stored.
    pub ephemeral: bool,
    /// With `ephemeral`: only these devices.
    pub to: Option<Vec<[u8; 32]>>,
}

/// The server's acknowledgement of a publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The event id.
    pub id: String,
    /// The event's seq (stored events; `None` for ephemeral ones).
    pub seq: Option<u64>,
    /// When it was stored, Unix ms (stored events).
    pub ts: Option<i64>,
    /// The id was already stored: this is the original ack, nothing new was stored.
    pub duplicate: bool,
    /// Ephemeral events: how many devices it went to.
    pub delivered: Option<u64>,
}

/// One stored event of the user's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Its position in the user's log.
    pub seq: u64,
    /// Its id (canonical UUID).
    pub id: String,
    /// The device that published it.
    pub device: [u8; 32],
    /// When it was stored, Unix ms.
    pub ts: i64,
    /// The payload (ciphertext, for real applications).
    pub payload: Vec<u8>,
    /// Its key, when published with one.
    pub key: Option<Vec<u8>>,
    /// Its TTL in seconds, when published with one.
    pub ttl: Option<u64>,
}

/// An ephemeral event: relayed live, never stored, no seq.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EphemeralEvent {
    /// Its id.
    pub id: String,
    /// The device that published it.
    pub device: [u8; 32],
    /// Server time, Unix ms.
    pub ts: i64,
    /// The payload.
    pub payload: Vec<u8>,
}

fn bad_event(what: &str) -> ClientError {
    ClientError::Protocol(format!("event with a malformed {what}"))
}

impl Event {
    /// Decodes a stored event from its wire form.
    pub fn from_wire(e: &EventMsg) -> Result<Self, ClientError> {
        Ok(Self {
            seq: e.seq.ok_or_else(|| bad_event("seq"))?,
            id: e.id.clone(),
            device: b64u::decode_array(&e.device).map_err(|_| bad_event("device"))?,
            ts: e.ts,
            payload: b64u::decode(&e.payload).map_err(|_| bad_event("payload"))?,
            key: e
                .key
                .as_deref()
                .map(b64u::decode)
                .transpose()
                .map_err(|_| bad_event("key"))?,
            ttl: e.ttl,
        })
    }
}

impl EphemeralEvent {
    /// Decodes an ephemeral event from its wire form.
    pub fn from_wire(e: &EventMsg) -> Result<Self, ClientError> {
        Ok(Self {
            id: e.id.clone(),
            device: b64u::decode_array(&e.device).map_err(|_| bad_event("device"))?,
            ts: e.ts,
            payload: b64u::decode(&e.payload).map_err(|_| bad_event("payload"))?,
        })
    }
}

/// One page of `sync`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncPage {
    /// Events with `seq > after`, ascending (expired ones left out).
    pub events: Vec<Event>,
    /// The user's newest seq.
    pub head: u64,
    /// More events follow this page.
    pub more: bool,
    /// Retention removed events after `after`; this is the oldest seq still stored.
    pub truncated: Option<u64>,
}

#[derive(Clone)]
enum State {
    Up {
        generation: u64,
        conn: Requester,
        auth: Arc<AuthOk>,
    },
    Down,
    Final(ClientError),
}

#[derive(Clone, Debug)]
enum Live {
    Event(Arc<Event>),
    Connected,
    /// The server closed the session with 4012: the user's data was erased.
    Erased,
    Final(ClientError),
}

struct Shared {
    opts: ClientOptions,
    device: [u8; 32],
    pin: Mutex<ServerPin>,
    state: watch::Sender<State>,
    live: broadcast::Sender<Live>,
    presence: broadcast::Sender<Presence>,
    ephemeral: broadcast::Sender<EphemeralEvent>,
    drop_live: Mutex<Vec<u64>>,
}

struct Inner {
    shared: Arc<Shared>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the sender stops the background task, which closes the socket.
        self.stop.lock().expect("stop lock").take();
    }
}

/// The high-level client of one device: a logical connection that reconnects with
/// jittered exponential backoff, retries what is safe to retry, and keeps the
/// event log gap-free.
///
/// Cloning is cheap; every clone drives the same connection. The connection closes
/// when the last clone (and every [`EventStream`]) is dropped, or on [`Self::close`].
///
/// Reconnection stops for good on 4002 (authentication failed), 4003 (revoked) and
/// 4011 (another session of this device took over), and when the server key does
/// not match the pin; every call then fails with that error ([`Self::closed`]).
///
/// ```no_run
/// use ferry_client::{Client, ClientOptions, Profile, PublishOptions};
///
/// # async fn demo() -> Result<(), ferry_client::ClientError> {
/// let profile = Profile::load("ferry-client/profile.json")?;
/// let client = Client::connect(ClientOptions::from_profile(&profile)).await?;
///
/// // Publish (encrypt the payload first in a real application).
/// let ack = client.publish(b"ciphertext".to_vec(), PublishOptions::default()).await?;
/// println!("stored as seq {:?}", ack.seq);
///
/// // Everything after seq 0, then live, in order, without gaps or duplicates.
/// let mut events = client.sync_from(0);
/// while let Some(item) = events.next().await {
///     let event = item?;
///     println!("{} from {:?}: {} bytes", event.seq, &event.device[..4], event.payload.len());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.shared().opts.url)
            .field("device", &b64u::encode(&self.shared().device))
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects once (so a wrong URL, key or pin fails here) and starts the
    /// background task that keeps the connection.
    pub async fn connect(opts: ClientOptions) -> Result<Self, ClientError> {
        if !(1..=MAX_SYNC_LIMIT).contains(&opts.sync_limit) {
            return Err(ClientError::Invalid("sync_limit must be 1..=1000".into()));
        }
        let (conn, auth) = Connection::connect_with_timeout(
            &opts.url,
            opts.credentials.clone(),
            opts.pin,
            opts.tls.clone(),
            opts.connect_timeout,
        )
        .await?;
        let device = opts.credentials.device_key.verifying_key().to_bytes();
        let (state, _) = watch::channel(State::Down);
        let shared = Arc::new(Shared {
            device,
            pin: Mutex::new(ServerPin::Key(auth.server_key)),
            state,
            live: broadcast::channel(LIVE_QUEUE).0,
            presence: broadcast::channel(NOTICE_QUEUE).0,
            ephemeral: broadcast::channel(NOTICE_QUEUE).0,
            drop_live: Mutex::new(Vec::new()),
            opts,
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        shared.set_up(1, &conn, auth);
        tokio::spawn(supervise(shared.clone(), conn, stop_rx));
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                stop: Mutex::new(Some(stop_tx)),
            }),
        })
    }

    /// [`Self::connect`] with the options of a stored profile.
    pub async fn from_profile(profile: &Profile) -> Result<Self, ClientError> {
        Self::connect(ClientOptions::from_profile(profile)).await
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The server key in use: the pinned one, or the one seen first (store it).
    pub fn server_key(&self) -> [u8; 32] {
        match *self.shared().pin.lock().expect("pin lock") {
            ServerPin::Key(k) => k,
            ServerPin::FirstUse => unreachable!("pinned after the first connection"),
        }
    }

    /// This device's public key.
    pub fn device(&self) -> [u8; 32] {
        self.shared().device
    }

    /// The user's public key.
    pub fn user(&self) -> [u8; 32] {
        self.shared().opts.credentials.user
    }

    /// Whether a session is up right now.
    pub fn is_connected(&self) -> bool {
        matches!(*self.shared().state.borrow(), State::Up { ref conn, .. } if !conn.is_closed())
    }

    /// The current session's `auth_ok`, while connected.
    pub fn auth_ok(&self) -> Option<AuthOk> {
        match &*self.shared().state.borrow() {
            State::Up { auth, .. } => Some((**auth).clone()),
            _ => None,
        }
    }

    /// Waits until the client stops for good and says why (4002, 4003, 4011, a
    /// key mismatch, or [`ClientError::Shutdown`] after [`Self::close`]).
    pub async fn closed(&self) -> ClientError {
        let mut rx = self.shared().state.subscribe();
        let state = rx.wait_for(|s| matches!(s, State::Final(_))).await;
        match state.as_deref() {
            Ok(State::Final(e)) => e.clone(),
            _ => ClientError::Shutdown,
        }
    }

    /// Closes the connection normally and stops reconnecting; every pending and
    /// later call fails with [`ClientError::Shutdown`].
    pub async fn close(&self) {
        let stop = self.inner.stop.lock().expect("stop lock").take();
        drop(stop);
        let _ = self.closed().await;
    }

    /// Publishes one event and waits for the server's ack (sent only once the event
    /// is stored durably).
    ///
    /// The event id is fixed before the first attempt, so retrying is always safe:
    /// on `unavailable`, on `rate_limited` (after `retry_after_ms`), on a timeout
    /// and after a lost connection (once reconnected) the same publish is sent
    /// again, and if it had been stored the server answers with the original ack
    /// and `duplicate: true`. Retries end at [`ClientOptions::retry_deadline`].
    ///
    /// A `key`/`base` mismatch is [`ClientError::Conflict`].
    pub async fn publish(
        &self,
        payload: impl Into<Vec<u8>>,
        opts: PublishOptions,
    ) -> Result<Ack, ClientError> {
        let id_text = match opts.id {
            Some(id) => id,
            // Time-ordered: the server's idempotency index is keyed by id first, and
            // v7 ids append at its right edge where random ones land anywhere.
            None => uuid::Uuid::now_v7().hyphenated().to_string(),
        };
        let id = message::parse_uuid(&id_text).ok_or_else(|| {
            ClientError::Invalid("the event id must be a canonical lowercase UUID".into())
        })?;
        if opts
            .key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > MAX_KEY_LEN)
        {
            return Err(ClientError::Invalid("key must be 1..=64 bytes".into()));
        }
        let payload = payload.into();
        let msg = ClientMessage::Publish(Publish {
            id,
            payload: payload.clone(),
            key: opts.key.clone(),
            base: opts.base,
            ttl: opts.ttl,
            ephemeral: opts.ephemeral,
            to: opts.to.clone(),
        });
        match self.call(msg, true).await? {
            ServerMessage::Ack {
                id,
                seq,
                ts,
                duplicate,
                delivered,
                ..
            } => {
                if let (Some(seq), false, false) = (seq, opts.ephemeral, duplicate) {
                    // The server does not relay an event back to its origin: put our
                    // own event into the live feed so streams see it without a sync.
                    // (Not for a duplicate: what is stored under that id came first.)
                    let _ = self.shared().live.send(Live::Event(Arc::new(Event {
                        seq,
                        id: id.clone(),
                        device: self.shared().device,
                        ts: ts.unwrap_or_default(),
                        payload,
                        key: opts.key,
                        ttl: opts.ttl,
                    })));
                }
                Ok(Ack {
                    id,
                    seq,
                    ts,
                    duplicate,
                    delivered,
                })
            }
            ServerMessage::Conflict { head, .. } => Err(ClientError::Conflict { head }),
            other => Err(unexpected("publish", &other)),
        }
    }

    /// One page of the log after `after` (retried across reconnects). Most
    /// applications want [`Self::sync_from`] instead.
    pub async fn sync(&self, after: u64, limit: u32) -> Result<SyncPage, ClientError> {
        let (events, head, more, truncated) = self.sync_raw(after, limit).await?;
        Ok(SyncPage {
            events: events
                .iter()
                .map(Event::from_wire)
                .collect::<Result<_, _>>()?,
            head,
            more,
            truncated,
        })
    }

    async fn sync_raw(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<(Vec<EventMsg>, u64, bool, Option<u64>), ClientError> {
        if !(1..=MAX_SYNC_LIMIT).contains(&limit) {
            return Err(ClientError::Invalid("limit must be 1..=1000".into()));
        }
        match self
            .call(ClientMessage::Sync { after, limit }, true)
            .await?
        {
            ServerMessage::Events {
                events,
                head,
                more,
                truncated,
                ..
            } => Ok((events, head, more, truncated.map(|t| t.oldest))),
            other => Err(unexpected("sync", &other)),
        }
    }

    /// The user's log after `cursor`, then live, as an [`EventStream`]: in `seq`
    /// order, without duplicates, and without gaps — a live event whose seq is not
    /// the next one, a reconnect, or a stream that fell behind triggers a `sync`
    /// from the last delivered seq before going on. The stream includes this
    /// device's own events. Each event counts as processed once the next one is
    /// asked for; the stream reports that position to the server with `cursor`.
    pub fn sync_from(&self, cursor: u64) -> EventStream {
        EventStream {
            live: self.shared().live.subscribe(),
            client: self.clone(),
            buffer: VecDeque::new(),
            delivered: cursor,
            processed: cursor,
            cursor_sent: cursor,
            need_sync: true,
            finished: false,
            gaps: 0,
            syncs: 0,
            retry: 0,
        }
    }

    /// Presence of the user's other devices, from now on.
    pub fn presence(&self) -> Subscription<Presence> {
        Subscription {
            rx: self.shared().presence.subscribe(),
        }
    }

    /// Ephemeral events from the user's other devices, from now on.
    pub fn ephemeral(&self) -> Subscription<EphemeralEvent> {
        Subscription {
            rx: self.shared().ephemeral.subscribe(),
        }
    }

    /// Every device of the user.
    pub async fn devices(&self) -> Result<Vec<DeviceInfo>, ClientError> {
        match self.call(ClientMessage::Devices, true).await? {
            ServerMessage::Devices { devices, .. } => Ok(devices),
            other => Err(unexpected("devices", &other)),
        }
    }

    /// Revokes a device of the user, signing with the user key (needs
    /// [`ClientOptions::user_key`]). Its sessions close with 4003 and it can no
    /// longer connect. Not retried after a lost connection (a revocation is
    /// accepted only once); check [`Self::devices`] and call again if needed.
    pub async fn revoke(&self, device: &[u8; 32]) -> Result<(), ClientError> {
        let user = self
            .shared()
            .opts
            .user_key
            .as_ref()
            .ok_or(ClientError::NoUserKey)?;
        let ts = now_ms();
        let msg = ClientMessage::Revoke {
            device: *device,
            ts,
            sig: user.sign_revocation(device, ts),
        };
        match self.call(msg, false).await? {
            ServerMessage::Ok { .. } => Ok(()),
            other => Err(unexpected("revoke", &other)),
        }
    }

    /// Records that this device has processed the log up to `seq` (the server never
    /// moves it back). [`EventStream`] does this by itself.
    pub async fn set_cursor(&self, seq: u64) -> Result<(), ClientError> {
        let (_, conn) = self.connection(0).await?;
        conn.send(ClientMessage::Cursor { seq }).await
    }

    /// Round trip to the server; returns the server's clock (Unix ms).
    pub async fn ping(&self) -> Result<i64, ClientError> {
        match self.call(ClientMessage::Ping, true).await? {
            ServerMessage::Pong { server_time, .. } => Ok(server_time),
            other => Err(unexpected("ping", &other)),
        }
    }

    /// Test hook: the live copy of the event with this seq is dropped on arrival, as
    /// if lost, so that gap detection has something to detect.
    #[doc(hidden)]
    pub fn debug_drop_live_event(&self, seq: u64) {
        self.shared().drop_live.lock().expect("drop lock").push(seq);
    }

    /// The current session, waiting for one whose generation is at least
    /// `min_generation`; fails once the client has stopped for good.
    async fn connection(&self, min_generation: u64) -> Result<(u64, Requester), ClientError> {
        let mut rx = self.shared().state.subscribe();
        let state = rx
            .wait_for(|s| match s {
                State::Up {
                    generation, conn, ..
                } => *generation >= min_generation && !conn.is_closed(),
                State::Final(_) => true,
                State::Down => false,
            })
            .await
            .map_err(|_| ClientError::Shutdown)?;
        match &*state {
            State::Up {
                generation, conn, ..
            } => Ok((*generation, conn.clone())),
            State::Final(e) => Err(e.clone()),
            State::Down => unreachable!("waited for Up or Final"),
        }
    }

    /// Sends a request on the current session; with `retry`, retries on
    /// `unavailable`, `rate_limited`, timeouts and lost connections until the
    /// retry deadline.
    async fn call(&self, msg: ClientMessage, retry: bool) -> Result<ServerMessage, ClientError> {
        let opts = &self.shared().opts;
        let deadline = Instant::now() + opts.retry_deadline;
        let mut min_generation = 0;
        let mut attempt = 0u32;
        loop {
            let (generation, conn) =
                tokio::time::timeout_at(deadline, self.connection(min_generation))
                    .await
                    .map_err(|_| ClientError::Timeout)??;
            let err = match conn
                .clone()
                .with_timeout(opts.request_timeout)
                .request(msg.clone())
                .await
            {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            if !retry || err.is_final() || Instant::now() >= deadline {
                return Err(err);
            }
            let wait = match &err {
                ClientError::Server {
                    code: ErrorCode::Unavailable,
                    ..
                } => opts.backoff.delay(attempt),
                ClientError::Server {
                    code: ErrorCode::RateLimited,
                    retry_after_ms,
                    ..
                } => retry_after_ms
                    .map(Duration::from_millis)
                    .unwrap_or_else(|| opts.backoff.delay(attempt)),
                ClientError::Timeout if !conn.is_closed() => Duration::ZERO,
                _ if conn.is_closed() => {
                    // The session is gone: wait for the background task to bring
                    // up the next one, then send again.
                    min_generation = generation + 1;
                    Duration::ZERO
                }
                _ => return Err(err),
            };
            debug!(error = %err, attempt, "retrying");
            attempt = attempt.saturating_add(1);
            if Instant::now() + wait >= deadline {
                return Err(err);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

fn unexpected(what: &str, msg: &ServerMessage) -> ClientError {
    let ty = serde_json::to_value(msg)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default();
    ClientError::Protocol(format!("unexpected reply {ty:?} to {what}"))
}

impl Shared {
    fn set_up(&self, generation: u64, conn: &Connection, auth: AuthOk) {
        self.state.send_replace(State::Up {
            generation,
            conn: conn.requester(),
            auth: Arc::new(auth),
        });
        let _ = self.live.send(Live::Connected);
    }

    fn set_final(&self, reason: ClientError) {
        self.state.send_replace(State::Final(reason.clone()));
        let _ = self.live.send(Live::Final(reason));
    }

    fn route(&self, item: Incoming) {
        match item {
            Incoming::Event(e) if e.ephemeral || e.seq.is_none() => {
                match EphemeralEvent::from_wire(&e) {
                    Ok(ev) => {
                        let _ = self.ephemeral.send(ev);
                    }
                    Err(err) => warn!(error = %err, "skipping an ephemeral event"),
                }
            }
            Incoming::Event(e) => {
                let seq = e.seq.unwrap_or_default();
                {
                    let mut drop_live = self.drop_live.lock().expect("drop lock");
                    if let Some(i) = drop_live.iter().position(|s| *s == seq) {
                        drop_live.swap_remove(i);
                        return;
                    }
                }
                match Event::from_wire(&e) {
                    Ok(ev) => {
                        let _ = self.live.send(Live::Event(Arc::new(ev)));
                    }
                    // Left out: the gap it leaves makes streams sync, which reports it.
                    Err(err) => warn!(error = %err, seq, "skipping a live event"),
                }
            }
            Incoming::Presence(p) => {
                let _ = self.presence.send(p);
            }
            Incoming::Error { code, message } => {
                warn!(code = code.as_str(), %message, "server error without a request id");
            }
            Incoming::Closed(_) => {}
        }
    }
}

/// The background task: pumps the current connection, reconnects with backoff.
async fn supervise(shared: Arc<Shared>, first: Connection, mut stop: oneshot::Receiver<()>) {
    let opts = &shared.opts;
    let mut conn = first;
    let mut generation = 1u64;
    loop {
        let reason = loop {
            tokio::select! {
                _ = &mut stop => {
                    conn.close().await;
                    shared.set_final(ClientError::Shutdown);
                    return;
                }
                item = conn.recv() => match item {
                    Some(Incoming::Closed(reason)) => break reason,
                    Some(item) => shared.route(item),
                    None => break ClientError::Transport("the connection ended".into()),
                }
            }
        };
        if reason.is_erased() {
            // The user's log is gone: streams start again from seq 0.
            let _ = shared.live.send(Live::Erased);
        }
        if reason.is_final() {
            info!(reason = %reason, "connection ended for good");
            shared.set_final(reason);
            return;
        }
        info!(reason = %reason, "connection lost; reconnecting");
        shared.state.send_replace(State::Down);
        let mut attempt = 0u32;
        conn = loop {
            let delay = opts.backoff.delay(attempt);
            attempt = attempt.saturating_add(1);
            let pin = *shared.pin.lock().expect("pin lock");
            let result = tokio::select! {
                _ = &mut stop => {
                    shared.set_final(ClientError::Shutdown);
                    return;
                }
                r = async {
                    tokio::time::sleep(delay).await;
                    Connection::connect_with_timeout(
                        &opts.url,
                        opts.credentials.clone(),
                        pin,
                        opts.tls.clone(),
                        opts.connect_timeout,
                    )
                    .await
                } => r,
            };
            match result {
                Ok((c, auth)) => {
                    generation += 1;
                    shared.set_up(generation, &c, auth);
                    break c;
                }
                Err(e) if e.is_final() => {
                    info!(error = %e, "reconnecting failed for good");
                    shared.set_final(e);
                    return;
                }
                Err(e) => debug!(error = %e, attempt, "reconnect failed"),
            }
        };
    }
}

/// Live notifications ([`Presence`], [`EphemeralEvent`]) from now on. Slow readers
/// miss the oldest ones rather than hold anything up.
#[derive(Debug)]
pub struct Subscription<T> {
    rx: broadcast::Receiver<T>,
}

impl<T: Clone> Subscription<T> {
    /// The next notification; `None` once the client has stopped.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            match self.rx.recv().await {
                Ok(v) => return Some(v),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    debug!(missed = n, "subscription lagged");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

enum Item {
    Event(Event),
    Bad(ClientError),
}

/// The user's log in `seq` order: what `sync` returns, then live events, with no
/// duplicates and no gaps (see [`Client::sync_from`]).
///
/// Items are `Err` for: [`ClientError::Truncated`] (retention removed events the
/// stream had not delivered; it goes on), [`ClientError::Closed`] with 4012 (the
/// operator erased the user's data: the stream starts again from seq 0, and the
/// application should upload again what it holds — see
/// [`ClientError::is_erased`]), a malformed event (skipped; it goes on), or the
/// client's final error (the last item).
pub struct EventStream {
    client: Client,
    live: broadcast::Receiver<Live>,
    buffer: VecDeque<(u64, Item)>,
    delivered: u64,
    processed: u64,
    cursor_sent: u64,
    need_sync: bool,
    finished: bool,
    gaps: u64,
    syncs: u64,
    retry: u32,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("position", &self.delivered)
            .field("gaps", &self.gaps)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// The seq of the last event delivered.
    pub fn position(&self) -> u64 {
        self.delivered
    }

    /// How many times a live event did not follow the last one and a sync filled
    /// the gap.
    pub fn gaps_detected(&self) -> u64 {
        self.gaps
    }

    /// How many `sync` requests the stream made.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// The stream as a [`futures_util::Stream`].
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Event, ClientError>> {
        futures_util::stream::unfold(self, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        })
    }

    /// The next event. Calling it marks the previous one as processed.
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        if self.finished {
            return None;
        }
        self.processed = self.delivered;
        loop {
            if let Some((seq, item)) = self.buffer.pop_front() {
                if seq <= self.delivered {
                    continue;
                }
                self.delivered = seq;
                if self.delivered.saturating_sub(self.cursor_sent) >= CURSOR_EVERY {
                    self.report_cursor();
                }
                return Some(match item {
                    Item::Event(e) => Ok(e),
                    Item::Bad(err) => Err(err),
                });
            }
            if self.need_sync {
                match self.sync_page().await {
                    Ok(Some(truncated)) => return Some(Err(truncated)),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            self.report_cursor();
            match self.live.recv().await {
                Ok(Live::Event(e)) => {
                    if e.seq <= self.delivered {
                        continue;
                    }
                    if e.seq == self.delivered + 1 {
                        let e = Arc::unwrap_or_clone(e);
                        self.buffer.push_back((e.seq, Item::Event(e)));
                    } else {
                        debug!(
                            expected = self.delivered + 1,
                            got = e.seq,
                            "gap in live events; syncing"
                        );
                        self.gaps += 1;
                        self.need_sync = true;
                    }
                }
                Ok(Live::Connected) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.need_sync = true;
                }
                Ok(Live::Erased) => {
                    // The log the positions refer to is gone: the user's next event
                    // is seq 1 again.
                    self.buffer.clear();
                    self.delivered = 0;
                    self.processed = 0;
                    self.cursor_sent = 0;
                    self.need_sync = true;
                    return Some(Err(ClientError::Closed(CloseCode::Erased.as_u16())));
                }
                Ok(Live::Final(e)) => {
                    self.finished = true;
                    return Some(Err(e));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.finished = true;
                    return None;
                }
            }
        }
    }

    /// Fetches one page into the buffer. `Ok(Some(e))` reports a truncation;
    /// `Err` is final.
    async fn sync_page(&mut self) -> Result<Option<ClientError>, ClientError> {
        let limit = self.client.shared().opts.sync_limit;
        self.syncs += 1;
        match self.client.sync_raw(self.delivered, limit).await {
            Ok((events, _head, more, truncated)) => {
                self.retry = 0;
                self.need_sync = more && !events.is_empty();
                let report = truncated
                    .filter(|oldest| *oldest > self.delivered + 1)
                    .map(|oldest| ClientError::Truncated { oldest });
                for e in &events {
                    let Some(seq) = e.seq else { continue };
                    let item = match Event::from_wire(e) {
                        Ok(ev) => Item::Event(ev),
                        Err(err) => Item::Bad(err),
                    };
                    self.buffer.push_back((seq, item));
                }
                if report.is_some() {
                    // Skip what was removed, so it is reported once.
                    if let Some(oldest) = truncated {
                        self.delivered = self.delivered.max(oldest - 1);
                    }
                }
                Ok(report)
            }
            Err(e) if e.is_final() => {
                self.finished = true;
                Err(e)
            }
            Err(e) => {
                // The retry deadline passed (for example offline for long): keep
                // trying, more slowly, until the client stops for good.
                let delay = self.client.shared().opts.backoff.delay(self.retry);
                self.retry = self.retry.saturating_add(1);
                debug!(error = %e, ?delay, "sync failed; retrying");
                tokio::time::sleep(delay).await;
                Ok(None)
            }
        }
    }

    fn report_cursor(&mut self) {
        if self.processed <= self.cursor_sent {
            return;
        }
        let state = self.client.shared().state.borrow();
        let State::Up { conn, .. } = &*state else {
            return;
        };
        if conn
            .try_send(ClientMessage::Cursor {
                seq: self.processed,
            })
            .is_ok()
        {
            self.cursor_sent = self.processed;
        }
    }
}
