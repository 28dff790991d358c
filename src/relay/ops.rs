//! What a device can do to its user's log and devices, whichever way it asks: the
//! WebSocket session (`session::requests`) and the REST API (`api`) both call these
//! methods of [`Relay`], so `publish`, `sync`, `devices` and `revoke` follow the same rules everywhere
//! (limits, rate limit, group commit and relay, revocation window and single use).
//!
//! Every function acts for the `user` it is given, which callers take from the
//! authenticated session or token, never from the request.

use std::time::{Duration, Instant};

use ferry_proto::keys;
use ferry_proto::message::Publish;
use tracing::Instrument as _;

use super::Outbound;
use super::Relay;
use super::writer::{Queued, event_json, stored_event_json};
use crate::model::{
    AppendOutcome, DeviceId, DeviceRecord, EventPage, NewEvent, RevokeOutcome, UnixMs, UserId,
};
use crate::store::StoreError;
use crate::telemetry::trace;

/// How far a revocation's `ts` may be from the server clock.
pub const REVOKE_WINDOW_MS: i64 = 5 * 60 * 1000;

/// Why a publish was refused before reaching the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishRefusal {
    /// The payload is larger than `limits.max_payload` (the limit).
    PayloadTooLarge(usize),
    /// `ttl` is 0 or larger than `limits.max_ttl` (the limit, seconds).
    BadTtl(u64),
    /// Over the device's publish rate; retry after this long.
    RateLimited(Duration),
}

/// A publish that passed the checks.
#[derive(Debug)]
pub enum Prepared {
    /// An ephemeral event, already relayed to this many live sessions.
    Ephemeral {
        /// Sessions it was queued for.
        delivered: u64,
    },
    /// An event to store: hand it to [`Relay::commit`].
    Durable(NewEvent),
}

impl Relay {
    /// Checks a publish of `device` (size, TTL, rate) and either relays it at once
    /// (ephemeral) or returns the event to commit. The rate-limit refusal is counted
    /// in metrics here.
    pub async fn prepare_publish(
        &self,
        user: UserId,
        device: DeviceId,
        p: Publish,
        now: Instant,
    ) -> Result<Prepared, PublishRefusal> {
        let inner = &self.inner;
        let limits = &inner.limits;
        if p.payload.len() > limits.max_payload {
            return Err(PublishRefusal::PayloadTooLarge(limits.max_payload));
        }
        if p.ttl.is_some_and(|t| t == 0 || t > limits.max_ttl_secs) {
            return Err(PublishRefusal::BadTtl(limits.max_ttl_secs));
        }
        if let Err(wait) = inner.publish_rate.check(&device, now).await {
            inner.metrics.rate_limited.inc();
            return Err(PublishRefusal::RateLimited(wait));
        }
        let ev = NewEvent {
            user,
            id: uuid::Uuid::from_bytes(p.id),
            device,
            payload: p.payload,
            key: p.key,
            base: p.base,
            ttl: p.ttl,
            ts: inner.clock.unix_ms(),
        };
        if p.ephemeral {
            let delivered = self.relay_ephemeral(&ev, p.to.as_deref());
            return Ok(Prepared::Ephemeral { delivered });
        }
        Ok(Prepared::Durable(ev))
    }

    /// Appends a prepared event through the group-commit writer; the outcome is
    /// durable (and the event relayed to the user's other sessions) when this
    /// returns `Ok`. Traced as `append`, a child of the current span.
    pub async fn commit(&self, ev: NewEvent) -> Result<AppendOutcome, StoreError> {
        self.submit(ev, false).await
    }

    /// Queues a prepared event for the group-commit writer at once, or, when the
    /// writer's queue is full or `behind` is set (an earlier publish of the same
    /// device is still waiting for room), as soon as there is room: awaiting the
    /// returned [`Committing`] does that and gives the durable outcome, as
    /// [`Relay::commit`]. A device's publishes reach the writer in the order they
    /// were submitted when each is awaited in that order (a session's queue of
    /// publishes, `session::requests::Pending`). Traced as `append`, a child of
    /// the current span.
    pub fn submit(&self, ev: NewEvent, behind: bool) -> Committing {
        let span = trace::append();
        // Publish → ack latency counts from here, including any wait for room.
        let received = Instant::now();
        let writer = &self.inner.writer;
        let wait = |event, span, received| {
            Stage::Waiting(Box::pin(writer.clone().submit_owned(event, span, received)))
        };
        let stage = if behind {
            wait(ev, span.clone(), received)
        } else {
            match writer.try_submit(ev, span.clone(), received) {
                Ok(queued) => Stage::Queued(queued),
                Err(full) => wait(full.event, full.span, full.received),
            }
        };
        Committing { stage, span }
    }

    /// Relays an ephemeral event to the user's live sessions other than its
    /// origin's (or only to those in `to`); returns how many it was queued for.
    fn relay_ephemeral(&self, ev: &NewEvent, to: Option<&[[u8; 32]]>) -> u64 {
        let inner = &self.inner;
        let out = inner.hub.fanout(&ev.user, Some(&ev.device), to, || {
            event_json(ev, None, ev.ts)
        });
        inner.metrics.deliveries.inc_by(out.delivered);
        inner.metrics.queue_overflows.inc_by(out.overflowed);
        out.delivered
    }

    /// Up to `limit` of the user's events after `after` (the semantics of `sync`).
    pub async fn sync(
        &self,
        user: &UserId,
        after: u64,
        limit: u32,
    ) -> Result<EventPage, StoreError> {
        let inner = &self.inner;
        let span = trace::sync(after, limit);
        let mut page = inner
            .store
            .events_after(user, after, limit, inner.clock.unix_ms())
            .instrument(span.clone())
            .await?;
        fit_page(&mut page, inner.limits.max_message_size);
        span.record("events", page.events.len())
            .record("more", page.more);
        inner.metrics.sync_pages.inc();
        Ok(page)
    }

    /// For a live session of `device` that missed relayed events: the user's stored
    /// events after `after` — below `before` when set, else up to the head — that
    /// other devices published, as live `event` messages, at most [`MISSED_PAGE`]
    /// read per call. Returns them with the seq the read accounted for (every seq
    /// up to it was read, stepped over as a hole, or is the device's own), which
    /// reaches `before - 1` (or the head) once nothing is left.
    pub async fn missed(
        &self,
        user: &UserId,
        device: &DeviceId,
        after: u64,
        before: Option<u64>,
    ) -> Result<(Vec<Outbound>, u64), StoreError> {
        let inner = &self.inner;
        let page = inner
            .store
            .events_after(user, after, MISSED_PAGE, inner.clock.unix_ms())
            .await?;
        let end = before
            .map_or(page.head, |b| b - 1)
            .min(page.head.max(after));
        let mut out = Vec::new();
        let mut through = after;
        for e in &page.events {
            if e.seq > end {
                break;
            }
            through = e.seq;
            if e.device == *device {
                continue;
            }
            out.push(stored_event_json(e));
        }
        // The page read everything up to `end` (no more events, or the last one
        // read is past it): the seqs not returned are holes.
        if !page.more || page.events.last().is_some_and(|e| e.seq >= end) {
            through = through.max(end);
        }
        inner.metrics.cluster.gap_fills.inc_by(out.len() as u64);
        Ok((out, through))
    }

    /// Moves the device's cursor forward to `seq` (see the store's `set_cursor`).
    pub async fn set_cursor(
        &self,
        user: &UserId,
        device: &DeviceId,
        seq: u64,
    ) -> Result<(), StoreError> {
        self.inner.store.set_cursor(user, device, seq).await
    }

    /// The user's head: the highest assigned seq (0 for a new user).
    pub async fn head(&self, user: &UserId) -> Result<u64, StoreError> {
        self.inner.store.head(user).await
    }

    /// Whether the user has this device (active or revoked).
    pub async fn has_device(&self, user: &UserId, device: &DeviceId) -> Result<bool, StoreError> {
        Ok(self.inner.store.device(user, device).await?.is_some())
    }

    /// Every device of the user, with whether a session of it is live now: on any
    /// instance (the cluster's directory), or here when the directory does not
    /// answer.
    pub async fn devices(&self, user: &UserId) -> Result<Vec<(DeviceRecord, bool)>, StoreError> {
        let inner = &self.inner;
        let records = inner.store.devices(user).await?;
        let mut online: std::collections::HashSet<DeviceId> = inner
            .hub
            .sessions(user)
            .iter()
            .map(|s| *s.device())
            .collect();
        if let Some(d) = self.directory()
            && let Some(elsewhere) = d.online(user).await
        {
            online.extend(elsewhere);
        }
        Ok(records
            .into_iter()
            .map(|d| {
                let live = online.contains(&d.device);
                (d, live)
            })
            .collect())
    }

    /// Revokes `device` of `user` on the user key's signature `sig` over `ts` (§4):
    /// the device's sessions close with 4003 and its tokens stop working.
    pub async fn revoke(
        &self,
        user: &UserId,
        device: &DeviceId,
        ts: u64,
        sig: &[u8; 64],
    ) -> Result<(), RevokeError> {
        let now = self.inner.clock.unix_ms();
        let user_key = keys::parse_identity_key(&user.0).map_err(|_| RevokeError::Refused)?;
        let in_window = i64::try_from(ts).is_ok_and(|ts| (ts - now).abs() <= REVOKE_WINDOW_MS);
        if !in_window || keys::verify_revocation(&user_key, &device.0, ts, sig).is_err() {
            return Err(RevokeError::Refused);
        }
        match self
            .inner
            .store
            .revoke_device(user, device, ts as i64, sig, now)
            .await
        {
            Ok(RevokeOutcome::Revoked) => {
                self.revoked(user, device, now);
                Ok(())
            }
            Ok(RevokeOutcome::Replayed) => Err(RevokeError::Replayed),
            Ok(RevokeOutcome::UnknownDevice) => Err(RevokeError::UnknownDevice),
            Err(e) => Err(RevokeError::Store(e)),
        }
    }

    /// After a revocation is stored: forget the device's admission, close its
    /// sessions with 4003 and tell the user's other sessions.
    pub(super) fn revoked(&self, user: &UserId, device: &DeviceId, now: UnixMs) {
        let inner = &self.inner;
        // Before the sessions close: a handshake from here on reads the store.
        inner.admissions.forget(user, device);
        inner
            .hub
            .close_device(user, device, ferry_proto::CloseCode::Revoked);
        self.presence(user, device, false, true, now);
    }
}

/// Why a revocation was not carried out.
#[derive(Debug)]
pub enum RevokeError {
    /// Bad signature, or `ts` outside ±[`REVOKE_WINDOW_MS`].
    Refused,
    /// This signed revocation was used before.
    Replayed,
    /// The user has no such device.
    UnknownDevice,
    /// Storage failed.
    Store(StoreError),
}

/// Room kept in a page for the envelope (`type`, `rid`, `head`, `more`, …) and the
/// sealing tag.
const PAGE_OVERHEAD: usize = 1024;
/// Events one [`Relay::missed`] call reads.
pub const MISSED_PAGE: u32 = 256;
/// Upper bound of one event's JSON besides its base64 fields (`seq`, `id`,
/// `device`, `ts`, `ttl`, field names, punctuation).
const EVENT_OVERHEAD: usize = 256;

/// Trims a page so its reply fits in one message of `max_message_size` bytes: the
/// write buffer refuses anything larger, and the device could never catch up.
/// Keeps at least one event (config validation makes sure one always fits) and sets
/// `more` when it trimmed.
fn fit_page(page: &mut EventPage, max_message_size: usize) {
    let budget = max_message_size.saturating_sub(PAGE_OVERHEAD);
    let mut used = 0usize;
    let keep = page
        .events
        .iter()
        .take_while(|e| {
            let b64 = |n: usize| n.div_ceil(3) * 4;
            used +=
                EVENT_OVERHEAD + b64(e.payload.len()) + e.key.as_ref().map_or(0, |k| b64(k.len()));
            used <= budget
        })
        .count()
        .max(1);
    if keep < page.events.len() {
        page.events.truncate(keep);
        page.more = true;
    }
}

/// A publish on its way through the group-commit writer ([`Relay::submit`]):
/// resolves to its durable outcome.
pub struct Committing {
    stage: Stage,
    /// The `append` span, which records the outcome.
    span: tracing::Span,
}

enum Stage {
    /// In the writer's queue.
    Queued(Queued),
    /// Waiting for room in the writer's queue (rare: the writer is behind).
    Waiting(futures_util::future::BoxFuture<'static, Result<Queued, StoreError>>),
}

impl Committing {
    /// Whether it is still waiting for room in the writer's queue: a publish
    /// submitted after it must wait too (`behind`), to keep the device's order.
    pub fn is_waiting(&self) -> bool {
        matches!(self.stage, Stage::Waiting(_))
    }
}

impl Future for Committing {
    type Output = Result<AppendOutcome, StoreError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            let result = match &mut this.stage {
                Stage::Waiting(submit) => match submit.as_mut().poll(cx) {
                    Poll::Ready(Ok(queued)) => {
                        this.stage = Stage::Queued(queued);
                        continue;
                    }
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => return Poll::Pending,
                },
                Stage::Queued(queued) => match std::pin::Pin::new(queued).poll(cx) {
                    Poll::Ready(result) => result,
                    Poll::Pending => return Poll::Pending,
                },
            };
            trace::record_append(&this.span, &result);
            return Poll::Ready(result);
        }
    }
}
