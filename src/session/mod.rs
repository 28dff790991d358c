//! The IO shell of one WebSocket connection: drives the sans-IO handshake, then
//! the sealed session loop.
//!
//! One task owns the socket and `select!`s over: frames from the device, messages
//! the hub queued for it, the ping timer, and its kill switch (replacement,
//! revocation, slow consumer, shutdown). Nothing inside a frame that fails to open
//! is ever acted on.

pub(crate) mod requests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferry_proto::CloseCode;
use ferry_proto::handshake::{
    DeviceStatus, Established, ServerEphemeral, ServerHandshake, ServerOutput,
};
use ferry_proto::message::{Limits as WireLimits, ServerMessage};
use futures_util::{FutureExt as _, SinkExt, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{Instrument as _, debug, info_span, warn};

use crate::app::App;
use crate::model::{DeviceCert, DeviceId, UserId};
use crate::net::ConnSlot;
use crate::relay::order::{Next, Order};
use crate::relay::{Admission, Inbox, Joined, Outbound, SessionHandle};
use crate::telemetry::trace;

/// How long a close frame may take to go out before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Protocol errors tolerated per window before the session is closed with 4010.
const MAX_ERRORS: usize = 10;
const ERROR_WINDOW: Duration = Duration::from_secs(60);
/// Queued messages written per flush.
const MAX_BATCH: usize = 256;
/// Missed events one flush reads from the store at most; a longer catch-up goes on
/// in the next flush.
const FILL_BUDGET: usize = 1024;
/// Publishes of one session waiting for their commit before reading pauses.
const MAX_IN_FLIGHT: usize = 256;

/// Runs one connection from the upgrade (`upgraded` resolves to its IO, or to
/// `None` when the upgrade failed) to the close. `guard` holds its slot in the
/// connection caps until the session ends.
///
/// This future is the whole of an idle session's task, so it is kept small: its
/// arguments are stored once (no wrapping future), the connection and the sealing
/// state sit behind boxes, and what runs only for a while (the handshake, the
/// greeting, a flush, the close) is boxed and freed once done.
pub fn run<U, S>(
    upgraded: U,
    peer: SocketAddr,
    app: App,
    guard: Option<ConnSlot>,
) -> impl Future<Output = ()> + Send
where
    U: Future<Output = Option<S>> + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A root span: a session outlives the request that upgraded it.
    let span = info_span!(parent: None, "conn", %peer, session = tracing::field::Empty, device = tracing::field::Empty);
    connection(upgraded, app, guard).instrument(span)
}

async fn connection<U, S>(upgraded: U, app: App, _guard: Option<ConnSlot>)
where
    U: Future<Output = Option<S>> + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(io) = upgraded.await else {
        return;
    };
    let config = app.config.limits.websocket_config();
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let mut conn = Box::new(Conn { ws, app });
    // Boxed: the handshake's state (and its store queries) is freed once it is done
    // instead of living in every idle session's task.
    let handshake = Box::pin(conn.handshake()).instrument(trace::handshake());
    if let Some((est, admission)) = handshake.await {
        Box::pin(conn.established(est, admission)).await;
    }
}

struct Conn<S> {
    ws: WebSocketStream<S>,
    app: App,
}

/// How [`Conn::greet`] went.
enum Greeting {
    /// `auth_ok` is out: the session is live.
    Sent,
    /// `auth_ok` could not be written; the session counted as live and ends so.
    Failed(End),
}

/// How a session loop ended.
enum End {
    /// Close with this code.
    Close(CloseCode),
    /// Close with a WebSocket-level code (1002, 1007, 1009).
    Ws(u16, &'static str),
    /// The peer closed or vanished: nothing to send.
    Gone,
}

fn ws_error_end(e: &WsError) -> End {
    use tokio_tungstenite::tungstenite::error::CapacityError;
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => End::Close(CloseCode::TooBig),
        WsError::Capacity(_) => End::Ws(1009, "too big"),
        WsError::Protocol(_) => End::Ws(1002, "protocol error"),
        WsError::Utf8(_) => End::Ws(1007, "invalid utf-8"),
        WsError::WriteBufferFull(_) => End::Close(CloseCode::SlowConsumer),
        _ => End::Gone,
    }
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn handshake(&mut self) -> Option<(Box<Established>, Admission)> {
        let started = Instant::now();
        let mut admission = None;
        let limits = &self.app.config.limits;
        let mut hs = ServerHandshake::new(
            self.app.key.signing_key().clone(),
            ServerEphemeral::random(&mut rand::rngs::OsRng),
            started,
            limits.handshake_timeout,
        )
        .with_verified_certs(self.app.verified_certs.clone());
        loop {
            while let Some(out) = hs.poll_output() {
                match out {
                    ServerOutput::SendText(text) => {
                        if self.ws.send(Message::text(text)).await.is_err() {
                            self.app.handshakes("failed", "abandoned");
                            return None;
                        }
                    }
                    ServerOutput::CheckDevice { identity, cert } => {
                        let user = UserId(*identity.user());
                        let device = DeviceId(*identity.device());
                        let cert = DeviceCert {
                            issued_at: cert.issued_at,
                            expires_at: cert.expires_at,
                            sig: cert.sig,
                        };
                        match check_device(&self.app, &user, &device, &cert).await {
                            Ok((status, a)) => {
                                admission = Some(a);
                                let _ = hs.device_checked(status);
                            }
                            Err(code) => {
                                self.app.handshakes("failed", "storage");
                                self.close(End::Close(code)).await;
                                return None;
                            }
                        }
                    }
                    ServerOutput::Close(code) => {
                        self.close(End::Close(code)).await;
                        return None;
                    }
                    ServerOutput::Established => {
                        let est = hs.into_established()?;
                        // The state machine asks for the device check before it
                        // establishes; without a verdict there is nothing to admit.
                        let Some(admission) = admission else {
                            self.close(End::Close(CloseCode::Internal)).await;
                            return None;
                        };
                        self.app
                            .metrics
                            .handshake_seconds
                            .observe(started.elapsed().as_secs_f64());
                        self.app.handshakes("ok", "ok");
                        // Boxed here: the session's task never holds the sealing
                        // state by value.
                        return Some((Box::new(est), admission));
                    }
                }
            }
            let deadline = hs
                .poll_timeout()
                .unwrap_or(started + limits.handshake_timeout);
            let result = tokio::select! {
                msg = self.ws.next() => match msg {
                    Some(Ok(Message::Text(text))) => hs.handle_text(text.as_str(), (self.app.clock.unix_ms() / 1000) as u64),
                    Some(Ok(Message::Binary(_))) => hs.handle_binary(),
                    Some(Ok(Message::Close(_))) | None => {
                        // The client gave up (or was never a client): counted, so a
                        // wrong pinned key or a crashing client shows in the metrics.
                        self.app.handshakes("failed", "abandoned");
                        // A close frame gets its reply (RFC 6455 §5.5.1: the code
                        // echoed, or 1002 for an invalid one), which the WebSocket
                        // layer queued and this flushes.
                        self.close(End::Gone).await;
                        return None;
                    }
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => {
                        self.app.handshakes("failed", "transport");
                        self.close(ws_error_end(&e)).await;
                        return None;
                    }
                },
                _ = tokio::time::sleep_until(deadline.into()) => hs.handle_timeout(Instant::now()),
                _ = self.app.shutdown.cancelled() => {
                    self.app.handshakes("failed", "shutdown");
                    self.close(End::Close(CloseCode::GoingAway)).await;
                    return None;
                }
            };
            if let Err(e) = result {
                debug!(reason = e.metric_label(), "handshake failed");
                self.app.handshakes("failed", e.metric_label());
            }
        }
    }

    /// Runs an authenticated session until it ends.
    ///
    /// This future lives as long as the session, in every idle session's task, so it
    /// keeps only what the whole session needs (the sealing state, boxed, and the
    /// session loop's own state): joining and the greeting run boxed, and their
    /// state is freed once they are done.
    async fn established(&mut self, mut est: Box<Established>, admission: Admission) {
        let user = UserId(*est.identity.user());
        let device = DeviceId(*est.identity.device());
        let span = tracing::Span::current();
        span.record("session", est.session_id.as_str());
        span.record("device", tracing::field::display(&device));
        let relay = self.app.relay.clone();
        let joined = Box::pin(relay.join(user, device, admission, &self.app.shutdown)).await;
        let Joined { link, head } = match joined {
            Ok(j) => j,
            Err(e) => {
                warn!(error = %e, "head lookup failed");
                Box::pin(self.close(End::Close(CloseCode::Internal))).await;
                return;
            }
        };
        let (handle, mut rx) = (link.handle, link.rx);
        let end = match Box::pin(self.greet(&mut est, &handle, head)).await {
            Greeting::Sent => {
                relay.announce_online(&handle);
                // Boxed apart from this future, which holds what the close needs.
                Box::pin(self.session_loop(&mut est, &handle, &mut rx, user, device, head)).await
            }
            Greeting::Failed(end) => end,
        };
        // Leaves the hub, announces the device offline (unless a successor keeps it
        // online or its revocation was announced) and records `last_seen`.
        let closed_with = match end {
            End::Close(code) => Some(code),
            _ => None,
        };
        relay.leave(&handle, closed_with);
        self.app.metrics.sessions_live.dec();
        Box::pin(self.close(end)).await;
    }

    /// Sends `auth_ok` with the head [`Relay::join`] found; the session counts as
    /// live from here.
    ///
    /// [`Relay::join`]: crate::relay::Relay::join
    async fn greet(
        &mut self,
        est: &mut Established,
        handle: &SessionHandle,
        head: u64,
    ) -> Greeting {
        self.app.metrics.sessions_live.inc();
        let limits = &self.app.config.limits;
        let auth_ok = ServerMessage::AuthOk {
            session: est.session_id.clone(),
            user: handle.user().to_string(),
            device: handle.device().to_string(),
            head,
            server_time: self.app.clock.unix_ms(),
            limits: WireLimits {
                max_payload: limits.max_payload as u64,
                max_ttl: limits.max_ttl.as_secs(),
                events_per_sec: u64::from(limits.events_per_sec),
                burst: u64::from(limits.burst),
            },
        };
        match self.send_sealed(est, &[auth_ok.to_json()], handle).await {
            Ok(()) => Greeting::Sent,
            Err(end) => Greeting::Failed(end),
        }
    }

    async fn session_loop(
        &mut self,
        est: &mut Established,
        link: &SessionHandle,
        rx: &mut Inbox,
        user: UserId,
        device: DeviceId,
        head: u64,
    ) -> End {
        let (ping_interval, idle_timeout) = {
            let limits = &self.app.config.limits;
            (limits.ping_interval, limits.idle_timeout)
        };
        // The stored events this session sent, in seq order (see `relay::order`).
        let mut order = Order::new(head);
        let mut ping =
            tokio::time::interval_at((Instant::now() + ping_interval).into(), ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_rx = Instant::now();
        // The sealing keys are expanded while frames flow and parked (freed, see
        // `Sealer::park`) when the session goes quiet: right after the greeting, and
        // at a ping tick when no frame went either way since the previous one.
        est.sealer.park();
        let mut frames = (est.sealer.counter(), est.opener.counter());
        // Allocated on the first protocol error only: most sessions never have one.
        let mut errors: VecDeque<Instant> = VecDeque::new();
        let mut ctx = requests::Ctx {
            app: self.app.clone(),
            user,
            device,
            refusals: VecDeque::new(),
        };
        // Publishes waiting for their commit, acked in the order they came.
        let mut pending: VecDeque<requests::Pending> = VecDeque::new();
        loop {
            tokio::select! {
                biased;
                code = link.killed() => {
                    // A parent cancel without a code is the server shutting down.
                    return End::Close(killed_code(code));
                }
                replies = std::future::poll_fn(|cx| requests::poll_oldest(&mut pending, &ctx.app, cx)), if !pending.is_empty() => {
                    let mut ready = Ready::default();
                    ready.add(replies);
                    gather_ready(&mut pending, &ctx.app, rx, &mut ready);
                    if let Err(end) = Box::pin(self.send_ready(est, ready, link, &mut order)).await {
                        return end;
                    }
                }
                // Stop reading while too many publishes wait: backpressure on the device.
                msg = self.ws.next(), if pending.len() < MAX_IN_FLIGHT => {
                    last_rx = Instant::now();
                    let mut frame = match msg {
                        Some(Ok(Message::Binary(b))) => Vec::from(b),
                        Some(Ok(Message::Text(_))) => return End::Close(CloseCode::ProtocolViolation),
                        Some(Ok(Message::Close(_))) | None => return End::Gone,
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return ws_error_end(&e),
                    };
                    if est.opener.open_in_place(&mut frame).is_err() {
                        self.app.metrics.open_failures.inc();
                        return End::Close(CloseCode::ProtocolViolation);
                    }
                    let behind = pending.back().is_some_and(requests::Pending::waiting);
                    let replies = match Box::pin(ctx.handle(&frame, behind)).await {
                        requests::Action::Now(r) => r,
                        requests::Action::Later(publish) => {
                            pending.push_back(publish);
                            continue;
                        }
                    };
                    if replies.protocol_error {
                        let now = Instant::now();
                        while errors.front().is_some_and(|t| now.duration_since(*t) > ERROR_WINDOW) {
                            errors.pop_front();
                        }
                        errors.push_back(now);
                        if errors.len() >= MAX_ERRORS {
                            let _ = self.send_sealed(est, &replies.messages, link).await;
                            return End::Close(CloseCode::ProtocolViolation);
                        }
                    }
                    if let Some(code) = replies.close {
                        return Box::pin(self.last_words(est, &mut pending, replies.messages, code)).await;
                    }
                    if let Err(end) = self.send_sealed(est, &replies.messages, link).await {
                        return end;
                    }
                }
                first = rx.recv() => {
                    let mut ready = Ready::default();
                    ready.queued.push(first);
                    gather_ready(&mut pending, &ctx.app, rx, &mut ready);
                    if let Err(end) = Box::pin(self.send_ready(est, ready, link, &mut order)).await {
                        return end;
                    }
                }
                _ = ping.tick() => {
                    let now = (est.sealer.counter(), est.opener.counter());
                    if now == frames {
                        est.sealer.park();
                        est.opener.park();
                    }
                    frames = now;
                    if last_rx.elapsed() >= idle_timeout {
                        debug!("idle timeout");
                        return End::Close(CloseCode::Normal);
                    }
                    if let Err(end) = Box::pin(self.send_raw(Message::Ping(Default::default()), link)).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Ends the session with `code` after a reply that closes it (4008 for sustained
    /// rate-limit abuse, 4003 after the device revoked itself): the acks of publishes
    /// already committed go out first (they were earned), then `reply`, then the close.
    /// Written even when the session was asked to close meanwhile (its own revocation
    /// did that), bounded by [`CLOSE_TIMEOUT`].
    async fn last_words(
        &mut self,
        est: &mut Established,
        pending: &mut VecDeque<requests::Pending>,
        reply: Vec<Vec<u8>>,
        code: CloseCode,
    ) -> End {
        let mut msgs = Vec::new();
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while !pending.is_empty() {
                let r =
                    std::future::poll_fn(|cx| requests::poll_oldest(pending, &self.app, cx)).await;
                msgs.extend(r.messages);
            }
        })
        .await;
        msgs.extend(reply);
        let _ =
            tokio::time::timeout(CLOSE_TIMEOUT, Box::pin(self.write_all_sealed(est, &msgs))).await;
        End::Close(code)
    }

    /// Sends acks and queued messages together: sealed, one flush. Stored events go
    /// out in seq order, each once (see `relay::order`): a duplicate is dropped, and
    /// events missed before one are read from the store and sent first. The queued
    /// messages stop counting against the queue's byte limit once written.
    async fn send_ready(
        &mut self,
        est: &mut Established,
        ready: Ready,
        link: &SessionHandle,
        order: &mut Order,
    ) -> Result<(), End> {
        for seq in &ready.own {
            order.own(*seq);
        }
        let mut out: Vec<Outbound> = Vec::with_capacity(ready.queued.len());
        // Set once a fill stopped at its page budget: a catch-up is queued, and it
        // reads the stored events of this flush from the store, in order.
        let mut deferred = false;
        for m in &ready.queued {
            if m.is_catch_up() {
                deferred |= !fill(&self.app, &mut out, link, order, None).await;
                continue;
            }
            let Some(seq) = m.seq() else {
                out.push(m.clone());
                continue;
            };
            if deferred {
                continue;
            }
            match order.relayed(seq) {
                Next::Send => out.push(m.clone()),
                Next::Drop => {}
                Next::Fill { before, .. } => {
                    if fill(&self.app, &mut out, link, order, Some(before)).await {
                        order.filled(before);
                        out.push(m.clone());
                    } else {
                        deferred = true;
                    }
                }
            }
        }
        if deferred {
            link.deliver(&Outbound::catch_up());
        }
        let sent = if out.is_empty() && ready.acks.is_empty() {
            Ok(())
        } else {
            let parts: Vec<&[u8]> = ready
                .acks
                .iter()
                .map(Vec::as_slice)
                .chain(out.iter().map(Outbound::json))
                .collect();
            self.send_sealed(est, &parts, link).await
        };
        link.written(ready.queued.iter().map(Outbound::len).sum());
        sent
    }

    /// Seals and writes messages, flushing once; gives up if the session is killed
    /// while the peer is not reading.
    async fn send_sealed<M: AsRef<[u8]> + Sync>(
        &mut self,
        est: &mut Established,
        msgs: &[M],
        link: &SessionHandle,
    ) -> Result<(), End> {
        if msgs.is_empty() {
            return Ok(());
        }
        // Boxed: the write's state exists only while writing, not in every idle
        // session's task.
        Box::pin(self.write_sealed(est, msgs, link)).await
    }

    async fn write_sealed<M: AsRef<[u8]> + Sync>(
        &mut self,
        est: &mut Established,
        msgs: &[M],
        link: &SessionHandle,
    ) -> Result<(), End> {
        let killed = link.killed();
        tokio::select! {
            r = self.write_all_sealed(est, msgs) => r,
            code = killed => Err(End::Close(killed_code(code))),
        }
    }

    /// Seals and writes messages, flushing once.
    async fn write_all_sealed<M: AsRef<[u8]> + Sync>(
        &mut self,
        est: &mut Established,
        msgs: &[M],
    ) -> Result<(), End> {
        for m in msgs {
            let mut buf = Vec::with_capacity(m.as_ref().len() + ferry_proto::seal::TAG_LEN);
            buf.extend_from_slice(m.as_ref());
            est.sealer
                .seal_in_place(&mut buf)
                .map_err(|_| End::Close(CloseCode::Internal))?;
            self.ws
                .feed(Message::Binary(buf.into()))
                .await
                .map_err(|e| ws_error_end(&e))?;
        }
        self.ws.flush().await.map_err(|e| ws_error_end(&e))
    }

    async fn send_raw(&mut self, msg: Message, link: &SessionHandle) -> Result<(), End> {
        tokio::select! {
            r = self.ws.send(msg) => r.map_err(|e| ws_error_end(&e)),
            code = link.killed() => Err(End::Close(killed_code(code))),
        }
    }

    /// Sends the close frame (bounded in time), then reads until the peer's close so
    /// the close frame is not lost to a reset.
    async fn close(&mut self, end: End) {
        let (code, reason) = match end {
            End::Gone => {
                // The peer closed (tungstenite queued the reply) or vanished: flush
                // the reply so the peer sees a clean close.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, SinkExt::close(&mut self.ws)).await;
                return;
            }
            End::Close(c) => (c.as_u16(), c.reason()),
            End::Ws(c, r) => (c, r),
        };
        self.app
            .metrics
            .sessions_closed
            .with_label_values(&[close_label(code)])
            .inc();
        let frame = CloseFrame {
            code: WsCode::from(code),
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if self.ws.send(Message::Close(Some(frame))).await.is_err() {
                return;
            }
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// The verdict on an authenticated device (see [`crate::relay::Relay::admit`]); a
/// storage failure closes the handshake with 1011.
async fn check_device(
    app: &App,
    user: &UserId,
    device: &DeviceId,
    cert: &DeviceCert,
) -> Result<(DeviceStatus, Admission), CloseCode> {
    match app.relay.admit(user, device, cert).await {
        Ok((true, a)) => Ok((DeviceStatus::Active, a)),
        Ok((false, a)) => Ok((DeviceStatus::Revoked, a)),
        Err(e) => {
            warn!(error = %e, "device check failed");
            Err(CloseCode::Internal)
        }
    }
}

/// Reads from the store the events this session missed after `order`'s
/// position — below `before`, or up to the head for a catch-up — into `out`.
/// Returns false when it stopped at [`FILL_BUDGET`] events with more to read
/// (the caller queues a catch-up to go on after this flush). A storage failure
/// ends the fill as done: the device still sees the gap and can `sync`.
async fn fill(
    app: &App,
    out: &mut Vec<Outbound>,
    link: &SessionHandle,
    order: &mut Order,
    before: Option<u64>,
) -> bool {
    let (user, device) = (*link.user(), *link.device());
    let mut read = 0;
    loop {
        let after = order.through();
        if before.is_some_and(|b| after + 1 >= b) {
            return true;
        }
        if read >= FILL_BUDGET {
            return false;
        }
        let (missed, through) =
            match Box::pin(app.relay.missed(&user, &device, after, before)).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "reading missed events failed");
                    return true;
                }
            };
        read += missed.len();
        out.extend(missed);
        order.filled(through);
        if through <= after {
            return true;
        }
    }
}

/// What one flush sends: acks of the device's publishes (and their seqs), then
/// messages from the session's queue.
#[derive(Default)]
struct Ready {
    acks: Vec<Vec<u8>>,
    own: Vec<u64>,
    queued: Vec<Outbound>,
}

impl Ready {
    fn add(&mut self, replies: requests::Replies) {
        self.acks.extend(replies.messages);
        self.own.extend(replies.own);
    }
}

/// Adds what else is ready to go out in the same flush: the acks of every publish
/// whose commit has finished (in order), and queued messages up to [`MAX_BATCH`].
fn gather_ready(
    pending: &mut VecDeque<requests::Pending>,
    app: &App,
    rx: &mut Inbox,
    ready: &mut Ready,
) {
    while let Some(more) =
        std::future::poll_fn(|cx| requests::poll_oldest(pending, app, cx)).now_or_never()
    {
        ready.add(more);
    }
    let room = MAX_BATCH.saturating_sub(ready.queued.len());
    rx.take(&mut ready.queued, room);
}

/// The close code for a session that was asked to close: the code asked for, or
/// 1001 when no code was set (the server's shutdown token was cancelled).
fn killed_code(code: CloseCode) -> CloseCode {
    if code == CloseCode::Normal {
        CloseCode::GoingAway
    } else {
        code
    }
}

fn close_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1007 => "1007",
        1009 => "1009",
        1011 => "1011",
        4001 => "4001",
        4002 => "4002",
        4003 => "4003",
        4008 => "4008",
        4009 => "4009",
        4010 => "4010",
        4011 => "4011",
        4012 => "4012",
        _ => "other",
    }
}

impl App {
    /// Counts a handshake's outcome, and records it on its span.
    fn handshakes(&self, outcome: &str, reason: &str) {
        self.metrics
            .handshakes
            .with_label_values(&[outcome, reason])
            .inc();
        trace::record_handshake(outcome, reason);
    }
}
