//! The group-commit writer: one task per process takes publish requests from a
//! queue, appends everything that is waiting in one transaction, and only then
//! acks and relays — in commit order, so every user's events fan out in `seq` order.
//!
//! A lone event is written at once, and under load the events that arrive while
//! one transaction commits form the next batch. Throughput grows with load instead
//! of collapsing to one commit per event. When commits are quicker than the
//! configured `commit_interval` (`[database]`), a batch waits until that long after
//! the previous commit began, so that the publishes arriving meanwhile share its
//! commit: each commit costs a sync and rewrites the pages it touches however few
//! events it holds, so at a steady load fewer, larger commits spend less CPU and
//! write fewer bytes per event, for at most that interval more publish latency.
//!
//! The retention job's deletions on SQLite ride these transactions
//! ([`Writer::chore`]): while a chore is standing, every transaction carries one
//! slice of it after the batch's rows (one commit and one sync for both, and no
//! second claim on SQLite's single write connection), and when no publish is
//! waiting a slice is written alone. A slice is sized to take about
//! [`RIDE_TARGET`] of statements in a transaction with publishes, [`ALONE_TARGET`]
//! alone.
//!
//! The test-only feature `fault-ack-before-commit` breaks the rule on purpose: it
//! acks a batch before its transaction commits, so that the crash campaign
//! (`ferry-load crash`) can show that its checker catches lost acked events. It does
//! not compile into release builds.

#[cfg(all(feature = "fault-ack-before-commit", not(debug_assertions)))]
compile_error!(
    "the feature fault-ack-before-commit acks events before they are durable; \
     it exists only for the crash campaign's self-test and never builds in release"
);

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use ferry_proto::b64u;
use ferry_proto::message::{EventMsg, ServerMessage, format_uuid};
use tokio::sync::{mpsc, oneshot};
use tracing::{Span, warn};

use super::hub::{Hub, Outbound};
use crate::model::Chore;
use crate::store::{AppendOutcome, ChoreResult, NewEvent, Store, StoreError};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::trace;

/// Largest batch written in one transaction.
pub const MAX_BATCH: usize = 1024;

/// One publish waiting for its commit.
pub struct WriteRequest {
    /// The event to append.
    pub event: NewEvent,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
    /// When the session received it (publish → ack latency).
    pub received: Instant,
    /// Its `append` span, the parent of its fan-out's (disabled with traces off).
    pub span: Span,
}

/// How long a chore's slice should take in a transaction that carries publishes:
/// what it adds to their publish → ack latency. With commits spaced by
/// `commit_interval`, 0.5 ms slices still purge a backlog of expired events at
/// ~70,000 rows/s while 10,000 events/s are published; 1–2 ms slices (94,000–125,000
/// rows/s) cost those publishes 1.4–2.2× their p99 (`docs/benchmarks.md`,
/// "Retention").
pub const RIDE_TARGET: Duration = Duration::from_micros(500);

/// How long a slice written alone should take: a publish that arrives meanwhile
/// waits for it.
pub const ALONE_TARGET: Duration = Duration::from_millis(8);

/// The first (and smallest) slice.
const MIN_SLICE: u32 = 100;

/// A retention chore for the writer: slices of `chore` (each at most its limit)
/// until one deletes fewer rows than it may, then the total.
pub struct ChoreRequest {
    /// What to delete; its limit is the most rows of one slice.
    pub chore: Chore,
    /// The rows deleted in all, or the first error.
    pub reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// The chore being written, a slice per transaction.
struct Standing {
    chore: Chore,
    /// The largest slice (the request's limit).
    max: u32,
    /// The next slice.
    slice: u32,
    total: u64,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

impl Standing {
    fn new(req: ChoreRequest) -> Self {
        let max = req.chore.limit().max(1);
        Self {
            slice: MIN_SLICE.min(max),
            max,
            chore: req.chore,
            total: 0,
            reply: req.reply,
        }
    }

    /// Takes a slice's outcome; `Some(self)` while there is more to do.
    fn after(mut self, done: ChoreResult, with_publishes: bool) -> Option<Self> {
        match done {
            Ok((rows, took)) => {
                self.total += rows;
                if rows < u64::from(self.slice) {
                    let _ = self.reply.send(Ok(self.total));
                    return None;
                }
                let target = if with_publishes {
                    RIDE_TARGET
                } else {
                    ALONE_TARGET
                };
                self.slice = next_slice(self.slice, took, target, self.max);
                Some(self)
            }
            Err(e) => {
                let _ = self.reply.send(Err(e));
                None
            }
        }
    }
}

/// The next slice: scaled by how far `took` was from `target` (at most doubling,
/// at least halving), within `MIN_SLICE..=max`.
pub fn next_slice(slice: u32, took: Duration, target: Duration, max: u32) -> u32 {
    let took = took.as_secs_f64().max(1e-6);
    let factor = (target.as_secs_f64() / took).clamp(0.5, 2.0);
    ((f64::from(slice) * factor) as u32).clamp(MIN_SLICE.min(max), max)
}

/// How long a failed append keeps [`WriteHealth::failing`] true when nothing is
/// written after it: long enough for retrying clients to renew it while the
/// database refuses writes, short enough that a server no longer sent traffic (a
/// load balancer took it out of rotation) reports ready again and is retried.
pub const FAILURE_HOLD: Duration = Duration::from_secs(10);

/// Whether appends are failing now (a full disk, a read-only or unreachable
/// database): the writer notes each batch's outcome, and readiness reports it.
#[derive(Debug, Default)]
pub struct WriteHealth {
    last_failure: AtomicI64,
    last_success: AtomicI64,
}

impl WriteHealth {
    fn succeeded(&self, now: i64) {
        self.last_success.fetch_max(now, Ordering::AcqRel);
    }

    fn failed(&self, now: i64) {
        self.last_failure.fetch_max(now, Ordering::AcqRel);
    }

    /// The last append failed, at most [`FAILURE_HOLD`] before `now` (Unix ms), and
    /// none succeeded since.
    pub fn failing(&self, now: i64) -> bool {
        let failure = self.last_failure.load(Ordering::Acquire);
        failure != 0
            && failure >= self.last_success.load(Ordering::Acquire)
            && now.saturating_sub(failure) < FAILURE_HOLD.as_millis() as i64
    }
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<WriteRequest>,
    chores: mpsc::Sender<ChoreRequest>,
}

impl Writer {
    /// Starts the writer on `store`. It ends when every `Writer` handle is dropped.
    pub fn spawn(
        store: Arc<dyn Store>,
        hub: Hub,
        metrics: Arc<Metrics>,
        queue: usize,
        health: Arc<WriteHealth>,
        commit_interval: Duration,
        clock: crate::clock::SharedClock,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue.max(MAX_BATCH));
        let (chores, chores_rx) = mpsc::channel(4);
        let task = tokio::spawn(run(
            (rx, chores_rx),
            store,
            hub,
            metrics,
            health,
            commit_interval,
            clock,
        ));
        (Self { tx, chores }, task)
    }

    /// Runs `chore` to its end in slices that ride the writer's transactions (see
    /// the module docs); returns the rows deleted in all.
    pub async fn chore(&self, chore: Chore) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.chores
            .send(ChoreRequest { chore, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Queues an event and waits for its durable outcome; its fan-out's span is a
    /// child of `span`.
    pub async fn append(&self, event: NewEvent, span: Span) -> Result<AppendOutcome, StoreError> {
        self.submit(event, span, Instant::now()).await?.await
    }

    /// Queues an event, waiting while the queue is full; the returned [`Queued`]
    /// resolves to its durable outcome. `received`: when the publish arrived (its
    /// publish → ack latency counts from there).
    pub async fn submit(
        &self,
        event: NewEvent,
        span: Span,
        received: Instant,
    ) -> Result<Queued, StoreError> {
        let (req, queued) = request(event, span, received);
        self.tx.send(req).await.map_err(|_| stopped())?;
        Ok(queued)
    }

    /// [`Writer::submit`] on an owned handle, for a future that outlives the caller's
    /// borrow.
    pub async fn submit_owned(
        self,
        event: NewEvent,
        span: Span,
        received: Instant,
    ) -> Result<Queued, StoreError> {
        self.submit(event, span, received).await
    }

    /// Queues an event if the queue has room, without waiting; [`Full`] gives the
    /// event back otherwise (and when the writer has stopped, so that
    /// [`Writer::submit`] reports it).
    pub fn try_submit(
        &self,
        event: NewEvent,
        span: Span,
        received: Instant,
    ) -> Result<Queued, Box<Full>> {
        let (req, queued) = request(event, span, received);
        match self.tx.try_send(req) {
            Ok(()) => Ok(queued),
            Err(mpsc::error::TrySendError::Full(req) | mpsc::error::TrySendError::Closed(req)) => {
                Err(Box::new(Full {
                    event: req.event,
                    span: req.span,
                    received: req.received,
                }))
            }
        }
    }
}

/// A publish [`Writer::try_submit`] could not queue at once.
pub struct Full {
    /// The event, to submit again.
    pub event: NewEvent,
    /// Its span.
    pub span: Span,
    /// When it arrived.
    pub received: Instant,
}

/// A queued publish: resolves to its durable outcome once its transaction has
/// committed (or failed). A plain future over the writer's reply, so that a session
/// can keep its publishes in a queue without boxing each one.
pub struct Queued(oneshot::Receiver<Result<AppendOutcome, StoreError>>);

impl Future for Queued {
    type Output = Result<AppendOutcome, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(stopped())))
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("writer stopped".into())
}

fn request(event: NewEvent, span: Span, received: Instant) -> (WriteRequest, Queued) {
    let (reply, rx) = oneshot::channel();
    let req = WriteRequest {
        event,
        reply,
        received,
        span,
    };
    (req, Queued(rx))
}

/// When a batch may begin its transaction, if not at once: `interval` after the
/// previous transaction began, when that is still to come.
fn due(
    last_begin: Option<tokio::time::Instant>,
    interval: Duration,
    now: tokio::time::Instant,
) -> Option<tokio::time::Instant> {
    last_begin.map(|t| t + interval).filter(|&due| due > now)
}

/// Moves the publishes waiting in `rx` into `batch` (up to [`MAX_BATCH`]) without
/// waiting; `false` once the queue is closed.
fn take_waiting(rx: &mut mpsc::Receiver<WriteRequest>, batch: &mut Vec<WriteRequest>) -> bool {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(req) => batch.push(req),
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
    true
}

async fn run(
    (mut rx, mut chores): (mpsc::Receiver<WriteRequest>, mpsc::Receiver<ChoreRequest>),
    store: Arc<dyn Store>,
    hub: Hub,
    metrics: Arc<Metrics>,
    health: Arc<WriteHealth>,
    commit_interval: Duration,
    clock: crate::clock::SharedClock,
) {
    // When the last transaction began (none yet: long enough ago).
    let mut last_begin: Option<tokio::time::Instant> = None;
    let mut batch: Vec<WriteRequest> = Vec::with_capacity(MAX_BATCH);
    let mut events: Vec<NewEvent> = Vec::with_capacity(MAX_BATCH);
    let mut waiting: Vec<(oneshot::Sender<Result<AppendOutcome, StoreError>>, Instant)> =
        Vec::with_capacity(MAX_BATCH);
    let mut spans: Vec<Span> = Vec::with_capacity(MAX_BATCH);
    let mut standing: Option<Standing> = None;
    let mut open = true;
    loop {
        if standing.is_none() {
            // Nothing to do but wait: for publishes, or a chore.
            tokio::select! {
                biased;
                n = rx.recv_many(&mut batch, MAX_BATCH), if open => {
                    if n == 0 {
                        open = false;
                    }
                }
                Some(req) = chores.recv() => standing = Some(Standing::new(req)),
                else => return,
            }
            if !open && batch.is_empty() && standing.is_none() {
                return;
            }
            // Commits come quicker than the interval: wait for it to pass and take
            // whatever arrived meanwhile into this batch (unless it is full).
            if let Some(due) = due(last_begin, commit_interval, tokio::time::Instant::now())
                && open
                && !batch.is_empty()
                && batch.len() < MAX_BATCH
            {
                tokio::time::sleep_until(due).await;
                open = take_waiting(&mut rx, &mut batch);
            }
        } else if open {
            // A chore stands: take the publishes that are waiting, without waiting.
            open = take_waiting(&mut rx, &mut batch);
        }
        // A chore whose caller stopped waiting (a pass cancelled at shutdown) ends.
        if standing.as_ref().is_some_and(|s| s.reply.is_closed()) {
            standing = None;
        }
        if standing.is_none()
            && let Ok(req) = chores.try_recv()
        {
            standing = Some(Standing::new(req));
        }
        if batch.is_empty() && standing.is_none() {
            continue;
        }
        // Move the events out of the requests: the payloads are never copied.
        for req in batch.drain(..) {
            events.push(req.event);
            waiting.push((req.reply, req.received));
            spans.push(req.span);
        }
        let with_publishes = !events.is_empty();
        last_begin = Some(tokio::time::Instant::now());
        if with_publishes {
            metrics.batch_size.observe(events.len() as f64);
        }
        #[cfg(feature = "fault-ack-before-commit")]
        fault::ack_before_commit(store.as_ref(), &events, &mut waiting).await;
        let (result, chore_done) = match &standing {
            None => (store.append(&events).await, None),
            Some(s) => match store
                .append_with(&events, &s.chore.with_limit(s.slice))
                .await
            {
                Ok((outcomes, done)) => (Ok(outcomes), Some(done)),
                Err(e) => {
                    let chore_error = e.to_unavailable();
                    (Err(e), Some(Err(chore_error)))
                }
            },
        };
        if let (Some(s), Some(done)) = (standing.take(), chore_done) {
            standing = s.after(done, with_publishes);
        }
        if !with_publishes {
            continue;
        }
        match &result {
            Ok(_) => health.succeeded(clock.unix_ms()),
            Err(_) => health.failed(clock.unix_ms()),
        }
        match result {
            Ok(outcomes) => {
                for (((ev, (reply, received)), outcome), span) in events
                    .iter()
                    .zip(waiting.drain(..))
                    .zip(outcomes)
                    .zip(spans.drain(..))
                {
                    match &outcome {
                        AppendOutcome::Stored { seq, ts } => {
                            metrics.events_stored.inc();
                            relay_stored(&hub, &metrics, ev, *seq, *ts, &span);
                        }
                        AppendOutcome::Duplicate { .. } => metrics.duplicates.inc(),
                        AppendOutcome::Conflict { .. } => metrics.conflicts.inc(),
                    }
                    metrics
                        .publish_ack_seconds
                        .observe(received.elapsed().as_secs_f64());
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                warn!(error = %e, events = events.len(), "append failed; no ack sent");
                for (reply, _) in waiting.drain(..) {
                    // An open breaker's wait goes with it (`StoreError::CircuitOpen`).
                    let _ = reply.send(Err(e.to_unavailable()));
                }
            }
        }
        events.clear();
        spans.clear();
    }
}

/// The deliberate defect behind the feature `fault-ack-before-commit`.
#[cfg(feature = "fault-ack-before-commit")]
mod fault {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use tokio::sync::oneshot;

    use crate::model::UserId;
    use crate::store::{AppendOutcome, NewEvent, Store, StoreError};

    /// How long the commit waits after the early acks: long enough for a `kill -9`
    /// to land between the acks and the commit.
    const COMMIT_DELAY: Duration = Duration::from_millis(150);

    type Waiting = Vec<(oneshot::Sender<Result<AppendOutcome, StoreError>>, Instant)>;

    /// Acks every event of the batch as stored, with the seq it would get (the
    /// user's head plus its place in the batch; no duplicates or conflicts are
    /// looked for), then waits [`COMMIT_DELAY`] before the caller commits. The
    /// callers' reply channels are replaced by closed ones, so the real outcomes
    /// go nowhere.
    pub(super) async fn ack_before_commit(
        store: &dyn Store,
        events: &[NewEvent],
        waiting: &mut Waiting,
    ) {
        let mut next: HashMap<UserId, u64> = HashMap::new();
        for (ev, (reply, _)) in events.iter().zip(waiting.iter_mut()) {
            let seq = match next.get(&ev.user) {
                Some(&seq) => seq,
                None => match store.head(&ev.user).await {
                    Ok(head) => head + 1,
                    Err(_) => return,
                },
            };
            next.insert(ev.user, seq + 1);
            let (closed, _) = oneshot::channel();
            let early = std::mem::replace(reply, closed);
            let _ = early.send(Ok(AppendOutcome::Stored { seq, ts: ev.ts }));
        }
        tokio::time::sleep(COMMIT_DELAY).await;
    }
}

/// Sends a stored event to every other live session of its user, under a `fanout`
/// span (a child of its `append`), which the other instances' deliveries continue.
fn relay_stored(hub: &Hub, metrics: &Metrics, ev: &NewEvent, seq: u64, ts: i64, append: &Span) {
    let span = trace::fanout(append);
    let out = span.in_scope(|| {
        hub.fanout_stored(&ev.user, Some(&ev.device), || event_json(ev, Some(seq), ts))
    });
    span.record("delivered", out.delivered)
        .record("overflowed", out.overflowed);
    metrics.deliveries.inc_by(out.delivered);
    metrics.queue_overflows.inc_by(out.overflowed);
}

/// The `event` message for a stored or ephemeral event, serialized once.
pub fn event_json(ev: &NewEvent, seq: Option<u64>, ts: i64) -> Outbound {
    let msg = ServerMessage::Event(EventMsg {
        seq,
        id: format_uuid(ev.id.as_bytes()),
        device: b64u::encode(&ev.device.0),
        ts,
        payload: b64u::encode(&ev.payload),
        key: ev.key.as_deref().map(b64u::encode),
        ttl: ev.ttl,
        ephemeral: seq.is_none(),
    });
    match seq {
        Some(seq) => Outbound::stored(seq, &msg.to_json()),
        None => Outbound::message(&msg.to_json()),
    }
}

/// A stored event as the protocol carries it (in a `sync` page, or live).
pub fn stored_event_msg(e: &crate::model::StoredEvent) -> EventMsg {
    EventMsg {
        seq: Some(e.seq),
        id: format_uuid(e.id.as_bytes()),
        device: b64u::encode(&e.device.0),
        ts: e.ts,
        payload: b64u::encode(&e.payload),
        key: e.key.as_deref().map(b64u::encode),
        ttl: e.ttl,
        ephemeral: false,
    }
}

/// The live `event` message for an event read back from the store (a session
/// catching up on events it missed): the same message its relay carried.
pub fn stored_event_json(e: &crate::model::StoredEvent) -> Outbound {
    let msg = ServerMessage::Event(stored_event_msg(e));
    Outbound::stored(e.seq, &msg.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_adapt_toward_their_target_within_bounds() {
        let ms = Duration::from_millis;
        // Fast: grows, at most doubling, never past the request's limit.
        assert_eq!(next_slice(100, ms(1), ms(2), 5000), 200);
        assert_eq!(next_slice(4000, ms(1), ALONE_TARGET, 5000), 5000);
        // Slow: shrinks, at most halving, never below the minimum.
        assert_eq!(next_slice(1000, ms(80), ms(2), 5000), 500);
        assert_eq!(next_slice(150, ms(80), ms(2), 5000), MIN_SLICE);
        // On target: stays.
        assert_eq!(next_slice(700, ms(2), ms(2), 5000), 700);
        // A limit below the minimum is the bound.
        assert_eq!(next_slice(50, ms(1), ms(2), 50), 50);
    }

    // The batching rule's behaviour on both backends: `tests/writer.rs`.

    #[test]
    fn only_a_commit_within_the_interval_makes_a_batch_wait() {
        let t0 = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        // No commit yet, or none in the interval: at once.
        assert_eq!(due(None, ms(2), t0), None);
        assert_eq!(due(Some(t0), ms(2), t0 + ms(2)), None);
        assert_eq!(due(Some(t0), ms(2), t0 + ms(50)), None);
        assert_eq!(due(Some(t0), Duration::ZERO, t0), None);
        // Within it: until the interval has passed since that commit began.
        assert_eq!(due(Some(t0), ms(2), t0 + ms(1)), Some(t0 + ms(2)));
    }

    #[test]
    fn writes_fail_from_a_failure_until_a_success_or_the_hold_ends() {
        let hold = FAILURE_HOLD.as_millis() as i64;
        let h = WriteHealth::default();
        assert!(!h.failing(1_000));
        h.succeeded(1_000);
        assert!(!h.failing(1_000));
        h.failed(2_000);
        assert!(h.failing(2_000));
        assert!(h.failing(2_000 + hold - 1));
        // Nothing written since: after the hold it reports ready again.
        assert!(!h.failing(2_000 + hold));
        // A success ends it at once.
        h.failed(3_000);
        assert!(h.failing(3_001));
        h.succeeded(3_002);
        assert!(!h.failing(3_003));
    }
}
