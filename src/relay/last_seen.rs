//! `last_seen` bookkeeping off the session path.
//!
//! A session that ends records its device here instead of writing to the store:
//! [`flush_loop`] writes everything recorded in one transaction every
//! [`FLUSH_EVERY`], and [`super::Relay::flush_last_seen`] flushes once more after the last session is gone
//! at shutdown. Under a storm of short sessions this is one write a second instead of
//! one durable transaction per session on the store's single writer. `last_seen` is
//! informational (the `devices` list), so a crash may lose at most the last second of
//! it; nothing else depends on it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::model::{DeviceId, UnixMs, UserId};
use crate::store::Store;

/// How often recorded `last_seen` times are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// `last_seen` times not yet written, one per device (the latest wins).
#[derive(Debug, Default)]
pub struct LastSeen {
    pending: Mutex<HashMap<(UserId, DeviceId), UnixMs>>,
}

impl LastSeen {
    /// Records that `device` was seen at `at`; a later time for the same device
    /// replaces an earlier one.
    pub fn record(&self, user: UserId, device: DeviceId, at: UnixMs) {
        let mut pending = self.pending.lock().expect("last_seen lock poisoned");
        let t = pending.entry((user, device)).or_insert(at);
        *t = (*t).max(at);
    }

    /// Devices recorded and not yet written.
    pub fn len(&self) -> usize {
        self.pending.lock().expect("last_seen lock poisoned").len()
    }

    /// Whether nothing is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes everything recorded so far in one store call. On failure the times
    /// are recorded again (unless newer ones arrived meanwhile) for the next flush.
    pub async fn flush(&self, store: &dyn Store) {
        let batch: Vec<(UserId, DeviceId, UnixMs)> = {
            let mut pending = self.pending.lock().expect("last_seen lock poisoned");
            pending.drain().map(|((u, d), t)| (u, d, t)).collect()
        };
        if batch.is_empty() {
            return;
        }
        match store.touch_devices(&batch).await {
            Ok(()) => debug!(devices = batch.len(), "last_seen written"),
            Err(e) => {
                warn!(error = %e, devices = batch.len(), "writing last_seen failed; retrying later");
                for (u, d, t) in batch {
                    self.record(u, d, t);
                }
            }
        }
    }
}

/// Flushes `last_seen` every [`FLUSH_EVERY`] until `cancel`. The final flush, after
/// the sessions have ended, is [`super::Relay::flush_last_seen`].
pub async fn flush_loop(last_seen: &LastSeen, store: &dyn Store, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => last_seen.flush(store).await,
            _ = cancel.cancelled() => return,
        }
    }
}
