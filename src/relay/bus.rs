//! Cross-instance fan-out over Redis pub/sub, for several Ferry instances on one
//! PostgreSQL database.
//!
//! Every instance publishes what it delivers locally (stored events, ephemeral
//! events, presence, session closes) on one channel and feeds what the other
//! instances publish into its own [`Hub`], local-only. The store stays
//! the truth: a message lost here (Redis down, a full queue) is only a lost
//! notification — devices see the gap in `seq` and `sync`.

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::CloseCode;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::hub::{Hub, Peers, Remote};
use crate::model::{DeviceId, UserId};
use crate::telemetry::metrics::Metrics;

/// The one channel every instance publishes on and subscribes to.
pub const CHANNEL: &str = "ferry:relay:v1";
/// Messages waiting to be published before new ones are dropped.
const QUEUE: usize = 65_536;

const KIND_DELIVER: u8 = 1;
const KIND_CLOSE_DEVICE: u8 = 2;
const KIND_CLOSE_USER: u8 = 3;

/// One message between instances: what the hub tells its [`Peers`].
pub type Envelope = Remote;

/// Encoding: `instance(16) kind(1) user(32)`, then per kind:
/// deliver: `except_flag(1) [device(32)] only_count(u16be) only(32×n) msg(rest)`;
/// close device: `device(32) code(u16be)`; close user: `code(u16be)`.
pub fn encode(instance: &[u8; 16], env: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(instance);
    match env {
        Envelope::Deliver {
            user,
            except,
            only,
            msg,
        } => {
            out.push(KIND_DELIVER);
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
            out.extend_from_slice(msg);
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
    }
    out
}

/// Decodes a message; `None` for anything malformed.
pub fn decode(bytes: &[u8]) -> Option<([u8; 16], Envelope)> {
    let mut r = Reader(bytes);
    let instance: [u8; 16] = r.take()?;
    let kind = r.byte()?;
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
                msg: Arc::from(r.0),
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
        _ => return None,
    };
    Some((instance, env))
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
}

impl Peers for Bus {
    /// Queues an envelope for the other instances; drops it when the queue is full
    /// (the store is the truth, devices resync).
    fn send(&self, env: &Envelope) {
        if self.tx.try_send(encode(&self.instance, env)).is_err() {
            self.metrics.bus_dropped.inc();
        }
    }
}

/// Connects to Redis, attaches the bus to `hub`, and spawns the publisher and the
/// subscriber. Both reconnect on their own until `cancel`.
pub async fn start(
    url: &str,
    hub: &Hub,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(url)?;
    // Fail at start when Redis is unreachable: a misconfiguration should be loud.
    let mut publisher = client.get_connection_manager().await?;
    let mut instance = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut instance);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    hub.attach_peers(Box::new(Bus {
        instance,
        tx,
        metrics: metrics.clone(),
    }));
    let pub_metrics = metrics.clone();
    let pub_cancel = cancel.clone();
    tracker.spawn(async move {
        loop {
            let msg = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => return },
                _ = pub_cancel.cancelled() => return,
            };
            let r: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(msg)
                .query_async(&mut publisher)
                .await;
            if let Err(e) = r {
                pub_metrics.bus_dropped.inc();
                debug!(error = %e, "publish to redis failed");
            }
        }
    });
    let hub = hub.clone();
    tracker.spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let session = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(CHANNEL).await?;
                info!("subscribed to cross-instance relay");
                Ok::<_, redis::RedisError>(pubsub.into_on_message())
            };
            let mut stream = tokio::select! {
                r = session => match r {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "redis subscribe failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = cancel.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
                _ = cancel.cancelled() => return,
            };
            backoff = Duration::from_millis(100);
            loop {
                let msg = tokio::select! {
                    m = stream.next() => match m { Some(m) => m, None => break },
                    _ = cancel.cancelled() => return,
                };
                match decode(msg.get_payload_bytes()) {
                    Some((from, _)) if from == instance => {}
                    Some((_, env)) => {
                        metrics.bus_received.inc();
                        hub.apply_remote(&env);
                    }
                    None => debug!("malformed cross-instance message ignored"),
                }
            }
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
                msg: Arc::from(&b"{\"type\":\"event\"}"[..]),
            },
            Envelope::Deliver {
                user: UserId([1; 32]),
                except: None,
                only: Some(vec![[3; 32], [4; 32]]),
                msg: Arc::from(&b"{}"[..]),
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
        ];
        for env in cases {
            let bytes = encode(&inst, &env);
            assert_eq!(decode(&bytes), Some((inst, env.clone())));
            for cut in 0..bytes.len().min(60) {
                // Truncations never panic; most are refused.
                let _ = decode(&bytes[..cut]);
            }
        }
        assert_eq!(decode(&[0u8; 10]), None);
        let mut bad = encode(
            &inst,
            &Envelope::CloseUser {
                user: UserId([1; 32]),
                code: CloseCode::Normal,
            },
        );
        bad[16] = 99;
        assert_eq!(decode(&bad), None);
    }
}
