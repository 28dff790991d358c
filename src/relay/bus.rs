//! Cross-instance fan-out over Redis pub/sub, for several Ferry instances on one
//! PostgreSQL database.
//!
//! Every instance publishes what it delivers locally (stored events, ephemeral
//! events, presence, session closes) on one channel and feeds what the other
//! instances publish into its own [`Hub`], local-only. The store stays
//! the truth: a message lost here (Redis down, a full queue) is only a lost
//! notification — devices see the gap in `seq` and `sync`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ferry_proto::CloseCode;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::hub::{Hub, Peers, Remote};
use crate::model::{DeviceId, UserId};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::trace::{self, TraceParent};

/// The one channel every instance publishes on and subscribes to.
pub const CHANNEL: &str = "ferry:relay:v1";
/// Messages waiting to be published before new ones are dropped.
const QUEUE: usize = 65_536;
/// Most messages published in one pipeline.
const PUBLISH_BATCH: usize = 256;

const KIND_DELIVER: u8 = 1;
const KIND_CLOSE_DEVICE: u8 = 2;
const KIND_CLOSE_USER: u8 = 3;
const KIND_CATCH_UP: u8 = 4;
const KIND_REGISTERED: u8 = 5;
/// A deliver with the trace context of the span that relayed it. A kind of its own,
/// so a version without it refuses the message whole (as malformed) rather than
/// reading the context as part of the message: turn traces on once every instance
/// runs a version that knows it.
const KIND_DELIVER_TRACED: u8 = 6;

/// One message between instances: what the hub tells its [`Peers`].
pub type Envelope = Remote;

/// Encoding: `instance(16) kind(1)`, then per kind:
/// deliver: `user(32) except_flag(1) [device(32)] only_count(u16be) only(32×n)
/// msg(rest: the seq header and the JSON)`; traced deliver: `trace_id(16)
/// span_id(8) flags(1)`, then as deliver; close device: `user(32) device(32)
/// code(u16be)`; close user: `user(32) code(u16be)`; catch up: nothing;
/// registered: `user(32) device(32) session(u64be)`.
///
/// `trace` goes with a deliver only (the other kinds carry none).
pub fn encode(instance: &[u8; 16], env: &Envelope, trace: Option<&TraceParent>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(instance);
    match env {
        Envelope::Deliver {
            user,
            except,
            only,
            msg,
        } => {
            match trace {
                Some(t) => {
                    out.push(KIND_DELIVER_TRACED);
                    out.extend_from_slice(&t.trace_id);
                    out.extend_from_slice(&t.span_id);
                    out.push(t.flags);
                }
                None => out.push(KIND_DELIVER),
            }
            out.extend_from_slice(&user.0);
            match except {
                Some(d) => {
                    out.push(1);
                    out.extend_from_slice(&d.0);
                }
                None => out.push(0),
            }
            let only = only.as_deref().unwrap_or(&[]);
            out.extend_from_slice(&(only.len() as u16).to_be_bytes());
            for d in only {
                out.extend_from_slice(d);
            }
            out.extend_from_slice(msg.wire());
        }
        Envelope::CloseDevice { user, device, code } => {
            out.push(KIND_CLOSE_DEVICE);
            out.extend_from_slice(&user.0);
            out.extend_from_slice(&device.0);
            out.extend_from_slice(&code.as_u16().to_be_bytes());
        }
        Envelope::CloseUser { user, code } => {
            out.push(KIND_CLOSE_USER);
            out.extend_from_slice(&user.0);
            out.extend_from_slice(&code.as_u16().to_be_bytes());
        }
        Envelope::CatchUp => out.push(KIND_CATCH_UP),
        Envelope::Registered {
            user,
            device,
            session,
        } => {
            out.push(KIND_REGISTERED);
            out.extend_from_slice(&user.0);
            out.extend_from_slice(&device.0);
            out.extend_from_slice(&session.to_be_bytes());
        }
    }
    out
}

/// A decoded message: the sending instance, the envelope, and the trace context a
/// deliver carried.
pub type Decoded = ([u8; 16], Envelope, Option<TraceParent>);

/// Decodes a message; `None` for anything malformed.
pub fn decode(bytes: &[u8]) -> Option<Decoded> {
    let mut r = Reader(bytes);
    let instance: [u8; 16] = r.take()?;
    let mut kind = r.byte()?;
    if kind == KIND_CATCH_UP {
        return r
            .0
            .is_empty()
            .then_some((instance, Envelope::CatchUp, None));
    }
    let mut trace = None;
    if kind == KIND_DELIVER_TRACED {
        trace = Some(TraceParent {
            trace_id: r.take()?,
            span_id: r.take()?,
            flags: r.byte()?,
        });
        kind = KIND_DELIVER;
    }
    let user = UserId(r.take()?);
    let env = match kind {
        KIND_DELIVER => {
            let except = match r.byte()? {
                0 => None,
                1 => Some(DeviceId(r.take()?)),
                _ => return None,
            };
            let n = u16::from_be_bytes(r.take()?) as usize;
            let only: Vec<[u8; 32]> = (0..n).map(|_| r.take()).collect::<Option<_>>()?;
            Envelope::Deliver {
                user,
                except,
                only: (n > 0).then_some(only),
                msg: crate::relay::hub::Outbound::from_wire(r.0)?,
            }
        }
        KIND_CLOSE_DEVICE => {
            let device = DeviceId(r.take()?);
            let code = CloseCode::from_u16(u16::from_be_bytes(r.take()?))?;
            Envelope::CloseDevice { user, device, code }
        }
        KIND_CLOSE_USER => Envelope::CloseUser {
            user,
            code: CloseCode::from_u16(u16::from_be_bytes(r.take()?))?,
        },
        KIND_REGISTERED => Envelope::Registered {
            user,
            device: DeviceId(r.take()?),
            session: u64::from_be_bytes(r.take()?),
        },
        _ => return None,
    };
    Some((instance, env, trace))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
}

/// The publishing side, held by the hub as its [`Peers`].
pub struct Bus {
    instance: [u8; 16],
    tx: mpsc::Sender<Vec<u8>>,
    metrics: Arc<Metrics>,
    /// Counts messages for the other instances lost since the publisher last told
    /// them to catch up (it does so once it can publish again).
    lost: Arc<AtomicU64>,
}

impl Peers for Bus {
    /// Queues an envelope for the other instances; drops it when the queue is full
    /// (the store is the truth: the other instances' sessions catch up later).
    /// A deliver carries the trace context of the current span, if any.
    fn send(&self, env: &Envelope) {
        let trace = match env {
            Envelope::Deliver { .. } => trace::current(),
            _ => None,
        };
        if self
            .tx
            .try_send(encode(&self.instance, env, trace.as_ref()))
            .is_err()
        {
            self.metrics.bus_dropped.inc();
            self.lost.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// What the bus tells its owner.
#[derive(Clone, Default)]
pub struct Signals {
    /// True while the subscription is up.
    pub connected: Arc<AtomicBool>,
    /// Notified whenever messages between instances were lost.
    pub on_lost: Arc<tokio::sync::Notify>,
}

/// `base` stretched by a random factor in [0.5, 1.5), so instances that lost Redis
/// together do not all come back in the same instant.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.5..1.5))
}

/// The first wait before reconnecting, doubled after each failure up to
/// [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Connects to Redis, attaches the bus of this `instance` to `hub`, and spawns the
/// publisher and the subscriber. Both reconnect on their own, with jittered
/// exponential backoff, until `cancel`. `signals.connected` is true while the
/// subscription is up, and `signals.on_lost` is notified whenever messages between
/// instances were lost (so the caller can redo what they may have carried, such as
/// closing the sessions of devices revoked meanwhile).
///
/// Nothing is missed across an outage: when the subscription comes back after it was
/// lost, every live session here catches up from the store ([`Hub::catch_up_local`]);
/// when a message for the other instances was lost (a failed publish, a full queue),
/// the publisher tells them to catch up ([`Envelope::CatchUp`]) as soon as it can
/// publish again.
pub async fn start(
    url: &str,
    instance: [u8; 16],
    hub: &Hub,
    metrics: Arc<Metrics>,
    signals: Signals,
    cancel: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(url)?;
    // Fail at start when Redis is unreachable: a misconfiguration should be loud.
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)))
        .set_max_delay(MAX_BACKOFF);
    let publisher = client.get_connection_manager_with_config(config).await?;
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let lost = Arc::new(AtomicU64::new(0));
    hub.attach_peers(Box::new(Bus {
        instance,
        tx,
        metrics: metrics.clone(),
        lost: lost.clone(),
    }));
    let Signals { connected, on_lost } = signals;
    let pub_metrics = metrics.clone();
    let pub_cancel = cancel.clone();
    tracker.spawn(async move {
        let catch_up = encode(&instance, &Envelope::CatchUp, None);
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(PUBLISH_BATCH);
        loop {
            // What is queued goes in one pipeline: one round trip for many
            // messages, in their order.
            tokio::select! {
                n = rx.recv_many(&mut batch, PUBLISH_BATCH) => if n == 0 { return },
                _ = pub_cancel.cancelled() => return,
            }
            let mut pipe = redis::pipe();
            let lost_before = lost.load(Ordering::Acquire);
            if lost_before > 0 {
                pipe.cmd("PUBLISH").arg(CHANNEL).arg(&catch_up[..]).ignore();
            }
            for msg in &batch {
                pipe.cmd("PUBLISH").arg(CHANNEL).arg(&msg[..]).ignore();
            }
            let mut conn = publisher.clone();
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => {
                    // Losses counted since the catch-up was built wait for the next one.
                    if lost_before > 0 {
                        lost.fetch_sub(lost_before, Ordering::AcqRel);
                        info!("cross-instance messages were lost; the other instances catch up");
                    }
                }
                Err(e) => {
                    pub_metrics.bus_dropped.inc_by(batch.len() as u64);
                    lost.fetch_add(batch.len() as u64, Ordering::AcqRel);
                    debug!(error = %e, "publish to redis failed");
                }
            }
            batch.clear();
        }
    });
    let hub = hub.clone();
    tracker.spawn(async move {
        let mut backoff = MIN_BACKOFF;
        let mut subscribed_before = false;
        loop {
            let session = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(CHANNEL).await?;
                Ok::<_, redis::RedisError>(pubsub.into_on_message())
            };
            let mut stream = tokio::select! {
                r = session => match r {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "redis subscribe failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(jittered(backoff)) => {}
                            _ = cancel.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
                _ = cancel.cancelled() => return,
            };
            backoff = MIN_BACKOFF;
            connected.store(true, Ordering::Release);
            metrics.cluster.bus_connected.set(1);
            if subscribed_before {
                // Whatever the other instances relayed while the subscription was
                // down is in the store: every live session here fetches it.
                let sessions = hub.catch_up_local();
                on_lost.notify_one();
                metrics.cluster.bus_resyncs.inc();
                info!(
                    sessions,
                    "resubscribed to cross-instance relay; live sessions catch up"
                );
            } else {
                info!("subscribed to cross-instance relay");
            }
            subscribed_before = true;
            loop {
                let msg = tokio::select! {
                    m = stream.next() => match m { Some(m) => m, None => break },
                    _ = cancel.cancelled() => return,
                };
                match decode(msg.get_payload_bytes()) {
                    Some((from, env, _)) if from == instance => hub.apply_own(&env),
                    Some((_, env, trace)) => {
                        metrics.bus_received.inc();
                        match (trace, &env) {
                            // A delivery to sessions here continues the trace of
                            // the publish.
                            (Some(parent), Envelope::Deliver { user, .. })
                                if hub.has_sessions(user) =>
                            {
                                let span = trace::deliver(parent);
                                let out = span.in_scope(|| hub.apply_remote(&env));
                                span.record("delivered", out.delivered)
                                    .record("overflowed", out.overflowed);
                            }
                            _ => {
                                hub.apply_remote(&env);
                            }
                        }
                        if env == Envelope::CatchUp {
                            on_lost.notify_one();
                        }
                    }
                    None => debug!("malformed cross-instance message ignored"),
                }
            }
            connected.store(false, Ordering::Release);
            metrics.cluster.bus_connected.set(0);
            warn!("redis subscription ended; reconnecting");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        let inst = [9u8; 16];
        let cases = [
            Envelope::Deliver {
                user: UserId([1; 32]),
                except: Some(DeviceId([2; 32])),
                only: None,
                msg: crate::relay::hub::Outbound::stored(7, b"{\"type\":\"event\"}"),
            },
            Envelope::Deliver {
                user: UserId([1; 32]),
                except: None,
                only: Some(vec![[3; 32], [4; 32]]),
                msg: crate::relay::hub::Outbound::message(b"{}"),
            },
            Envelope::CloseDevice {
                user: UserId([1; 32]),
                device: DeviceId([5; 32]),
                code: CloseCode::Revoked,
            },
            Envelope::CloseUser {
                user: UserId([1; 32]),
                code: CloseCode::GoingAway,
            },
            Envelope::CatchUp,
            Envelope::Registered {
                user: UserId([1; 32]),
                device: DeviceId([6; 32]),
                session: 42,
            },
        ];
        let trace = TraceParent {
            trace_id: [7; 16],
            span_id: [8; 8],
            flags: 1,
        };
        for env in cases {
            let bytes = encode(&inst, &env, None);
            assert_eq!(decode(&bytes), Some((inst, env.clone(), None)));
            for cut in 0..bytes.len().min(60) {
                // Truncations never panic; most are refused.
                let _ = decode(&bytes[..cut]);
            }
            // The trace context goes with a deliver, and only with one.
            let traced = encode(&inst, &env, Some(&trace));
            if matches!(env, Envelope::Deliver { .. }) {
                assert_eq!(traced[16], KIND_DELIVER_TRACED);
                assert_eq!(traced.len(), bytes.len() + 25);
                assert_eq!(decode(&traced), Some((inst, env.clone(), Some(trace))));
                for cut in 17..17 + 25 + 32 {
                    assert_eq!(decode(&traced[..cut]), None, "cut at {cut}");
                }
            } else {
                assert_eq!(traced, bytes);
            }
        }
        // The untraced deliver is byte for byte what versions without traces send
        // and read.
        let plain = encode(
            &inst,
            &Envelope::Deliver {
                user: UserId([1; 32]),
                except: None,
                only: None,
                msg: crate::relay::hub::Outbound::stored(7, b"{}"),
            },
            None,
        );
        let mut expected = inst.to_vec();
        expected.push(KIND_DELIVER);
        expected.extend_from_slice(&[1; 32]);
        expected.extend_from_slice(&[0, 0, 0]);
        expected.extend_from_slice(&7u64.to_be_bytes());
        expected.extend_from_slice(b"{}");
        assert_eq!(plain, expected);
        assert_eq!(decode(&[0u8; 10]), None);
        let mut bad = encode(
            &inst,
            &Envelope::CloseUser {
                user: UserId([1; 32]),
                code: CloseCode::Normal,
            },
            None,
        );
        bad[16] = 99;
        assert_eq!(decode(&bad), None);
    }
}
