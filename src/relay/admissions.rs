//! A memo of admitted devices, so a device that reconnects is admitted without a
//! store read.
//!
//! A handshake asks the store whether its device is known and not revoked, and
//! reads the user's head for the greeting. On a single instance with SQLite every
//! change to those answers is made by this process, so it can remember them and
//! forget them itself:
//!
//! - an entry is written only for an active device, with the user's head as read
//!   while admitting or greeting it and the hub's generation for the user taken
//!   before that read;
//! - a revocation forgets the device before its sessions are closed
//!   (`Relay::revoke` and `Relay::force_revoke`), and erasing a user forgets every entry;
//! - forgetting moves an epoch, and an entry is written only with the epoch taken
//!   before the device was admitted: a handshake that was admitted just before a
//!   revocation can never write the revoked device back;
//! - the head is only as good as its generation: a greeting uses it only while
//!   [`Hub::generation`] still shows that value (otherwise it reads the head again
//!   and writes the entry anew), the same rule as for the head read with the device.
//!
//! Another process writing the SQLite file (an operator's script, say) is noticed
//! by [`watch_foreign_commits`] within [`FOREIGN_COMMIT_CHECK`], and the memo is
//! cleared.
//!
//! Several instances share a PostgreSQL database, and a revocation stored by one is
//! not seen by the memo of another, so the memo is off with PostgreSQL and whenever
//! the cross-instance bus is configured ([`Admissions::for_deployment`]).
//!
//! Entries are keyed by a 128-bit SHA-256 prefix of user and device (32 bytes an
//! entry with its value), bounded like the certificate memo: two generations of at
//! most `capacity` entries each.
//!
//! [`Hub::generation`]: crate::relay::hub::Hub::generation

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::{Backend, DeviceId, Store, UserId};

/// How often [`watch_foreign_commits`] asks the store whether another process
/// committed.
pub const FOREIGN_COMMIT_CHECK: Duration = Duration::from_secs(1);

const LABEL: &[u8] = b"ferry-admission/v1\0";

/// What the memo knows of an active device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The hub's generation for the user, taken before `head` was read.
    pub generation: u64,
    /// The user's head as read then.
    pub head: u64,
}

/// Admitted devices (see the module docs). A disabled memo remembers nothing.
#[derive(Debug)]
pub struct Admissions {
    capacity: usize,
    enabled: bool,
    inner: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<[u8; 16], Admitted>,
    previous: HashMap<[u8; 16], Admitted>,
    /// Moved by every [`Admissions::forget`] and [`Admissions::clear`].
    epoch: u64,
}

fn key(user: &UserId, device: &DeviceId) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(LABEL)
        .chain_update(user.0)
        .chain_update(device.0)
        .finalize();
    let mut k = [0; 16];
    k.copy_from_slice(&digest[..16]);
    k
}

impl Admissions {
    /// A memo keeping up to `capacity` entries per generation (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            enabled: true,
            inner: Mutex::new(Generations::default()),
        }
    }

    /// A memo that remembers nothing: every admission reads the store.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::new(1)
        }
    }

    /// The memo for a deployment: on only where this process sees every change to
    /// devices and heads, that is with SQLite (one process owns the file) and no
    /// cross-instance bus; otherwise disabled.
    pub fn for_deployment(backend: Backend, bus: bool, capacity: usize) -> Self {
        if backend == Backend::Sqlite && !bus {
            Self::new(capacity)
        } else {
            Self::disabled()
        }
    }

    /// Whether the memo remembers anything.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken before admitting a device (from the memo or the store), and passed to
    /// [`Self::put`]: an entry is written only if nothing was forgotten since.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// The device's entry, if it was admitted and not forgotten since.
    pub fn get(&self, user: &UserId, device: &DeviceId) -> Option<Admitted> {
        if !self.enabled {
            return None;
        }
        let k = key(user, device);
        let g = self.lock();
        g.current.get(&k).or_else(|| g.previous.get(&k)).copied()
    }

    /// Records a device admitted as active, at `epoch` ([`Self::epoch`] taken before
    /// it was admitted), with the head a greeting just read. Nothing is written when
    /// anything was forgotten since `epoch` (the device may be the one revoked), and
    /// an entry with a later generation is kept (two greetings of one device may
    /// finish out of order).
    pub fn put(&self, user: &UserId, device: &DeviceId, epoch: u64, admitted: Admitted) {
        if !self.enabled {
            return;
        }
        let k = key(user, device);
        let mut g = self.lock();
        if g.epoch != epoch {
            return;
        }
        let known = g.current.get(&k).or_else(|| g.previous.get(&k)).copied();
        if known.is_some_and(|a| a.generation > admitted.generation) {
            return;
        }
        if !g.current.contains_key(&k) && g.current.len() >= self.capacity {
            g.previous = std::mem::take(&mut g.current);
        }
        g.previous.remove(&k);
        g.current.insert(k, admitted);
    }

    /// Forgets a device (it was revoked).
    pub fn forget(&self, user: &UserId, device: &DeviceId) {
        let k = key(user, device);
        let mut g = self.lock();
        g.epoch += 1;
        g.current.remove(&k);
        g.previous.remove(&k);
    }

    /// Forgets every device (a user was erased: its devices are unknown again).
    pub fn clear(&self) {
        let mut g = self.lock();
        g.epoch += 1;
        g.current.clear();
        g.previous.clear();
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.current.len() + g.previous.len()
    }

    /// Whether the memo holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Clears `memo` whenever the store reports a commit by another process (see
/// [`Store::foreign_commits`]), every [`FOREIGN_COMMIT_CHECK`] until `cancel`. When
/// the store cannot say, the memo is cleared each time it asks.
pub async fn watch_foreign_commits(
    memo: &Admissions,
    store: &dyn Store,
    cancel: CancellationToken,
) {
    if !memo.is_enabled() {
        return;
    }
    let mut last = None;
    let mut tick = tokio::time::interval(FOREIGN_COMMIT_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        match store.foreign_commits().await {
            Ok(Some(v)) if last == Some(v) => {}
            Ok(Some(v)) => {
                if last.is_some() {
                    info!("another process wrote the database: forgetting admitted devices");
                }
                memo.clear();
                last = Some(v);
            }
            Ok(None) => memo.clear(),
            Err(e) => {
                warn!(error = %e, "cannot tell whether another process wrote the database");
                memo.clear();
                last = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: UserId = UserId([1; 32]);

    fn d(n: u8) -> DeviceId {
        DeviceId([n; 32])
    }

    fn at(generation: u64, head: u64) -> Admitted {
        Admitted { generation, head }
    }

    #[test]
    fn an_entry_is_per_user_and_device() {
        let m = Admissions::new(8);
        m.put(&U, &d(2), m.epoch(), at(1, 5));
        assert_eq!(m.get(&U, &d(2)), Some(at(1, 5)));
        assert_eq!(m.get(&U, &d(3)), None);
        assert_eq!(m.get(&UserId([2; 32]), &DeviceId([1; 32])), None);
    }

    #[test]
    fn nothing_is_written_after_a_forget_since_the_admission() {
        let m = Admissions::new(8);
        let before = m.epoch();
        // A revocation lands between the admission and the greeting's write.
        m.forget(&U, &d(2));
        m.put(&U, &d(2), before, at(1, 5));
        assert_eq!(m.get(&U, &d(2)), None);
        let before = m.epoch();
        m.clear();
        m.put(&U, &d(2), before, at(1, 5));
        assert_eq!(m.get(&U, &d(2)), None);
        m.put(&U, &d(2), m.epoch(), at(1, 5));
        assert_eq!(m.get(&U, &d(2)), Some(at(1, 5)));
    }

    #[test]
    fn forget_and_clear_remove_entries() {
        let m = Admissions::new(8);
        m.put(&U, &d(2), m.epoch(), at(1, 5));
        m.put(&U, &d(3), m.epoch(), at(1, 5));
        m.forget(&U, &d(2));
        assert_eq!(m.get(&U, &d(2)), None);
        assert!(m.get(&U, &d(3)).is_some());
        m.clear();
        assert!(m.is_empty());
    }

    #[test]
    fn a_later_generation_is_not_overwritten_by_an_earlier_one() {
        let m = Admissions::new(8);
        m.put(&U, &d(2), m.epoch(), at(7, 9));
        m.put(&U, &d(2), m.epoch(), at(6, 8));
        assert_eq!(m.get(&U, &d(2)), Some(at(7, 9)));
        m.put(&U, &d(2), m.epoch(), at(7, 10));
        assert_eq!(m.get(&U, &d(2)), Some(at(7, 10)));
    }

    #[test]
    fn bounded_to_two_generations() {
        let m = Admissions::new(2);
        for n in 0..5 {
            m.put(&U, &d(n), m.epoch(), at(0, 0));
        }
        assert!(m.len() <= 4);
        // The newest two generations answer; the oldest entries are gone.
        assert!(m.get(&U, &d(4)).is_some() && m.get(&U, &d(3)).is_some());
        assert_eq!(m.get(&U, &d(0)), None);
        // Updating an entry of the previous generation moves it, not copies it.
        m.put(&U, &d(3), m.epoch(), at(1, 1));
        assert!(m.len() <= 4);
        assert_eq!(m.get(&U, &d(3)), Some(at(1, 1)));
    }

    #[test]
    fn only_a_lone_sqlite_instance_remembers() {
        for (backend, bus, on) in [
            (Backend::Sqlite, false, true),
            (Backend::Sqlite, true, false),
            (Backend::Postgres, false, false),
            (Backend::Postgres, true, false),
        ] {
            let m = Admissions::for_deployment(backend, bus, 8);
            m.put(&U, &d(2), m.epoch(), at(1, 5));
            assert_eq!(m.get(&U, &d(2)).is_some(), on, "{backend:?} bus={bus}");
            assert_eq!(m.is_enabled(), on);
        }
    }
}
