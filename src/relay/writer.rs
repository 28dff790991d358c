//! The group-commit writer: one task per process takes publish requests from a
//! queue, appends everything that is waiting in one transaction, and only then
//! acks and relays — in commit order, so every user's events fan out in `seq` order.
//!
//! There is no timer: a lone event is written at once, and under load the events
//! that arrive while one transaction commits form the next batch. Throughput grows
//! with load instead of collapsing to one commit per event.
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
use tracing::warn;

use super::hub::{Hub, Outbound};
use crate::store::{AppendOutcome, NewEvent, Store, StoreError};
use crate::telemetry::metrics::Metrics;

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
}

impl Writer {
    /// Starts the writer on `store`. It ends when every `Writer` handle is dropped.
    pub fn spawn(
        store: Arc<dyn Store>,
        hub: Hub,
        metrics: Arc<Metrics>,
        queue: usize,
        health: Arc<WriteHealth>,
        clock: crate::clock::SharedClock,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue.max(MAX_BATCH));
        let task = tokio::spawn(run(rx, store, hub, metrics, health, clock));
        (Self { tx }, task)
    }

    /// Queues an event and waits for its durable outcome.
    pub async fn append(&self, event: NewEvent) -> Result<AppendOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        let req = WriteRequest {
            event,
            reply,
            received: Instant::now(),
        };
        self.tx
            .send(req)
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?
    }
}

async fn run(
    mut rx: mpsc::Receiver<WriteRequest>,
    store: Arc<dyn Store>,
    hub: Hub,
    metrics: Arc<Metrics>,
    health: Arc<WriteHealth>,
    clock: crate::clock::SharedClock,
) {
    let mut batch: Vec<WriteRequest> = Vec::with_capacity(MAX_BATCH);
    let mut events: Vec<NewEvent> = Vec::with_capacity(MAX_BATCH);
    let mut waiting: Vec<(oneshot::Sender<Result<AppendOutcome, StoreError>>, Instant)> =
        Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Move the events out of the requests: the payloads are never copied.
        for req in batch.drain(..) {
            events.push(req.event);
            waiting.push((req.reply, req.received));
        }
        metrics.batch_size.observe(events.len() as f64);
        #[cfg(feature = "fault-ack-before-commit")]
        fault::ack_before_commit(store.as_ref(), &events, &mut waiting).await;
        let result = store.append(&events).await;
        match &result {
            Ok(_) => health.succeeded(clock.unix_ms()),
            Err(_) => health.failed(clock.unix_ms()),
        }
        match result {
            Ok(outcomes) => {
                for ((ev, (reply, received)), outcome) in
                    events.iter().zip(waiting.drain(..)).zip(outcomes)
                {
                    match &outcome {
                        AppendOutcome::Stored { seq, ts } => {
                            metrics.events_stored.inc();
                            relay_stored(&hub, &metrics, ev, *seq, *ts);
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
                    let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
                }
            }
        }
        events.clear();
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

/// Sends a stored event to every other live session of its user.
fn relay_stored(hub: &Hub, metrics: &Metrics, ev: &NewEvent, seq: u64, ts: i64) {
    let out = hub.fanout_stored(&ev.user, Some(&ev.device), || event_json(ev, Some(seq), ts));
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
    Arc::from(msg.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

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
