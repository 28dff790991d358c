//! The retention job: what leaves the disk, and when.
//!
//! One pass ([`run_pass`]) goes through the policies in this order, each deleting
//! at most [`Policy::batch`] rows per transaction:
//!
//! 1. `auth`: expired login challenges, refresh tokens, denylist entries and kept
//!    revocations whose certificate has expired;
//! 2. `expired`: events whose `ttl` ran out (they were already hidden from reads);
//! 3. `compacted` (`retention.compact_keys`): keyed events superseded by a newer
//!    event of the same key for `compact_after`; the newest of each key stays;
//! 4. `age` (`retention.max_age`) and `count` (`retention.max_events_per_user`): a
//!    prefix of each user's log, through [`crate::store::EventLog::prune_before`],
//!    which moves the user's `pruned_through` (a `sync` from below it is told
//!    `truncated`); the head never moves;
//! 5. `inactive_device` (`retention.inactive_device_after`): devices not seen for
//!    that long and not connected here, with their refresh tokens; a revoked one is
//!    remembered while its certificate may be valid.
//!
//! Where the deleting transactions come from: the event deletions (2–4) are
//! [`Chore`]s handed to the [`Host`]. In `ferry serve` on SQLite they ride the
//! relay's group-commit transactions, a slice of a few milliseconds in each
//! ([`super::writer`]), so publishes never queue behind the job for SQLite's one
//! write connection or pay for its syncs; on PostgreSQL, and in
//! `ferry retention run`, the pass writes its own transactions, sized toward
//! about 8 ms each, with a yield between them. Devices and authentication rows are
//! always written by the pass itself.
//!
//! A pass first takes the store's retention lock ([`RetentionStore::retention_lock`]):
//! with several instances on one PostgreSQL database, one runs a pass at a time and
//! the others skip theirs. A dry run takes no lock and counts what each policy
//! would delete on its own (an event that two policies select is counted by both).
//!
//! [`Relay::spawn_jobs`](super::Relay::spawn_jobs) runs a pass every
//! `retention.interval`; a failed pass is logged and counted, and the next interval
//! tries again. `ferry retention run` and `POST /admin/v1/retention/run` run one now.
//!
//! `last_seen` of a device is written when its session ends, and every
//! [`LIVE_TOUCH_EVERY`] for every live session ([`super::Relay::spawn_jobs`]), so a
//! device connected to another instance for days is not taken for inactive (the
//! shortest `inactive_device_after` is a day).
//!
//! [`RetentionStore::retention_lock`]: crate::store::RetentionStore::retention_lock

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::clock::SharedClock;
use crate::config::RetentionConfig;
use crate::model::{Chore, DeviceId, UnixMs, UserId};
use crate::store::{Store, StoreError};
use crate::telemetry::metrics::RetentionMetrics;

/// How often the `last_seen` of every live session is recorded.
pub const LIVE_TOUCH_EVERY: Duration = Duration::from_secs(3600);

/// Users (or devices) read per page while planning the per-user policies.
const PAGE: u32 = 500;

/// Devices removed per transaction at most (each is three statements).
const DEVICES_PER_TX: usize = 500;

/// How long one deleting transaction should hold the database: the SQLite writer is
/// shared with the relay's group commit, so a publish waits at most about this long
/// behind the job. Transactions start at 100 rows and grow or shrink toward it, up
/// to [`Policy::batch`].
const TX_TARGET: Duration = Duration::from_millis(8);

/// The first (and smallest) transaction size while adapting to [`TX_TARGET`].
const MIN_TX_ROWS: u32 = 100;

/// What the job deletes: `[retention]` as the job reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Most rows deleted per transaction.
    pub batch: u32,
    /// Events published longer ago than this go; `None`: off.
    pub max_age: Option<Duration>,
    /// Each user keeps its newest N events; 0: off.
    pub max_events_per_user: u64,
    /// Keyed events superseded for this long go; `None`: off.
    pub compact_after: Option<Duration>,
    /// Devices not seen for this long go; `None`: off.
    pub inactive_device_after: Option<Duration>,
}

impl Policy {
    /// The policy `[retention]` configures.
    pub fn from_config(c: &RetentionConfig) -> Self {
        Self {
            batch: c.batch.max(1),
            max_age: c.max_age,
            max_events_per_user: c.max_events_per_user,
            compact_after: c.compact_keys.then_some(c.compact_after),
            inactive_device_after: c.inactive_device_after,
        }
    }
}

/// Why rows were deleted (the `reason` label of `ferry_retention_deleted_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Events whose `ttl` ran out.
    Expired,
    /// Events older than `max_age`.
    Age,
    /// Events past `max_events_per_user`.
    Count,
    /// Keyed events superseded for `compact_after`.
    Compacted,
    /// Devices not seen for `inactive_device_after`.
    InactiveDevice,
    /// Expired challenges, refresh tokens, denylist entries and kept revocations.
    Auth,
}

impl Reason {
    /// Every reason, in the order a pass goes through them.
    pub const ALL: [Self; 6] = [
        Self::Auth,
        Self::Expired,
        Self::Compacted,
        Self::Age,
        Self::Count,
        Self::InactiveDevice,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Age => "age",
            Self::Count => "count",
            Self::Compacted => "compacted",
            Self::InactiveDevice => "inactive_device",
            Self::Auth => "auth",
        }
    }
}

/// Rows deleted (or, in a dry run, that would be), per reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Events whose `ttl` ran out.
    pub expired: u64,
    /// Events older than `max_age`.
    pub age: u64,
    /// Events past `max_events_per_user`.
    pub count: u64,
    /// Superseded keyed events.
    pub compacted: u64,
    /// Inactive devices.
    pub inactive_device: u64,
    /// Authentication rows.
    pub auth: u64,
}

impl Deleted {
    /// The count for `reason`.
    pub fn get(&self, reason: Reason) -> u64 {
        match reason {
            Reason::Expired => self.expired,
            Reason::Age => self.age,
            Reason::Count => self.count,
            Reason::Compacted => self.compacted,
            Reason::InactiveDevice => self.inactive_device,
            Reason::Auth => self.auth,
        }
    }

    fn get_mut(&mut self, reason: Reason) -> &mut u64 {
        match reason {
            Reason::Expired => &mut self.expired,
            Reason::Age => &mut self.age,
            Reason::Count => &mut self.count,
            Reason::Compacted => &mut self.compacted,
            Reason::InactiveDevice => &mut self.inactive_device,
            Reason::Auth => &mut self.auth,
        }
    }

    /// All rows, every reason.
    pub fn total(&self) -> u64 {
        Reason::ALL.iter().map(|&r| self.get(r)).sum()
    }
}

/// What one pass did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// Counted only; nothing was deleted.
    pub dry_run: bool,
    /// Another runner held the retention lock: nothing was done.
    pub skipped: bool,
    /// When the pass began (Unix ms).
    pub started_at: UnixMs,
    /// How long it took.
    pub duration: Duration,
    /// Rows deleted (or counted), per reason.
    pub deleted: Deleted,
}

/// What a pass needs from the server running it: its live sessions, and where its
/// event deletions are written.
#[async_trait::async_trait]
pub trait Host: Send + Sync {
    /// Whether the device has a live session (it is never removed then).
    fn is_connected(&self, user: &UserId, device: &DeviceId) -> bool;

    /// Forgets anything remembered about the device before its row goes.
    fn forget(&self, user: &UserId, device: &DeviceId);

    /// Runs an event deletion to its end, in slices of at most its limit, and
    /// returns the rows deleted; `None`: the pass runs it on the store itself,
    /// transaction by transaction.
    async fn chore(&self, chore: Chore) -> Option<Result<u64, StoreError>>;
}

/// No server: a pass run by `ferry retention run`. Devices connected to a running
/// server are still safe: their `last_seen` is at most [`LIVE_TOUCH_EVERY`] old.
#[derive(Clone, Copy, Debug, Default)]
pub struct Standalone;

#[async_trait::async_trait]
impl Host for Standalone {
    fn is_connected(&self, _: &UserId, _: &DeviceId) -> bool {
        false
    }

    fn forget(&self, _: &UserId, _: &DeviceId) {}

    async fn chore(&self, _: Chore) -> Option<Result<u64, StoreError>> {
        None
    }
}

/// Where a pass reports progress: `(reason, rows so far for it)` after every
/// transaction (or count).
pub type Progress<'a> = &'a mut (dyn FnMut(Reason, u64) + Send);

/// A pass that stopped at a storage error.
#[derive(Debug, thiserror::Error)]
#[error("retention run failed: {error}")]
pub struct Failed {
    /// What it did before the error: every transaction stands on its own, so those
    /// rows are gone.
    pub partial: Report,
    /// The error.
    pub error: StoreError,
}

/// One pass at `now` (see the module docs). `Ok` with `skipped` when another
/// runner holds the lock; [`Failed`] at the first storage error.
pub async fn run_pass(
    store: &dyn Store,
    policy: &Policy,
    now: UnixMs,
    dry_run: bool,
    host: &dyn Host,
    progress: Progress<'_>,
) -> Result<Report, Failed> {
    let started = Instant::now();
    let mut report = Report {
        dry_run,
        skipped: false,
        started_at: now,
        duration: Duration::ZERO,
        deleted: Deleted::default(),
    };
    let lock = if dry_run {
        None
    } else {
        match store.retention_lock().await {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                report.skipped = true;
                report.duration = started.elapsed();
                return Ok(report);
            }
            Err(error) => {
                report.duration = started.elapsed();
                return Err(Failed {
                    partial: report,
                    error,
                });
            }
        }
    };
    let mut pass = Pass {
        store,
        policy,
        now,
        dry_run,
        host,
        progress,
        deleted: Deleted::default(),
    };
    let result = pass.run().await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    report.deleted = pass.deleted;
    report.duration = started.elapsed();
    match result {
        Ok(()) => Ok(report),
        Err(error) => Err(Failed {
            partial: report,
            error,
        }),
    }
}

struct Pass<'a, 'p> {
    store: &'a dyn Store,
    policy: &'a Policy,
    now: UnixMs,
    dry_run: bool,
    host: &'a dyn Host,
    progress: Progress<'p>,
    deleted: Deleted,
}

/// The next transaction's size: scaled by how far `took` was from [`TX_TARGET`]
/// (at most doubling, at least halving), within `MIN_TX_ROWS..=max`.
fn next_limit(limit: u32, took: Duration, max: u32) -> u32 {
    let took = took.as_secs_f64().max(1e-6);
    let factor = (TX_TARGET.as_secs_f64() / took).clamp(0.5, 2.0);
    ((f64::from(limit) * factor) as u32).clamp(MIN_TX_ROWS.min(max), max)
}

/// `now - d` in Unix ms, saturating.
fn before(now: UnixMs, d: Duration) -> UnixMs {
    now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Pass<'_, '_> {
    fn add(&mut self, reason: Reason, n: u64) {
        let total = self.deleted.get_mut(reason);
        *total += n;
        let total = *total;
        (self.progress)(reason, total);
    }

    async fn run(&mut self) -> Result<(), StoreError> {
        self.auth().await?;
        self.expired().await?;
        if let Some(after) = self.policy.compact_after {
            self.compacted(before(self.now, after)).await?;
        }
        if let Some(age) = self.policy.max_age {
            self.age(before(self.now, age)).await?;
        }
        if self.policy.max_events_per_user > 0 {
            self.count(self.policy.max_events_per_user).await?;
        }
        if let Some(after) = self.policy.inactive_device_after {
            self.inactive_devices(before(self.now, after)).await?;
        }
        Ok(())
    }

    /// Repeats `delete` (one transaction each) while it fills its batch; each
    /// transaction's size adapts toward [`TX_TARGET`] (at most `batch` rows).
    async fn drain<F, Fut>(&mut self, reason: Reason, mut delete: F) -> Result<(), StoreError>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<u64, StoreError>>,
    {
        let max = self.policy.batch;
        let mut limit = MIN_TX_ROWS.min(max);
        loop {
            let started = Instant::now();
            let n = delete(limit).await?;
            let took = started.elapsed();
            self.add(reason, n);
            if n < u64::from(limit) {
                return Ok(());
            }
            limit = next_limit(limit, took, max);
            tokio::task::yield_now().await;
        }
    }

    /// Runs an event deletion to its end: through the host when it writes them
    /// (SQLite: in the relay's own transactions), else transaction by transaction.
    async fn delete(&mut self, reason: Reason, chore: Chore) -> Result<(), StoreError> {
        if let Some(done) = self.host.chore(chore.clone()).await {
            let n = done?;
            self.add(reason, n);
            return Ok(());
        }
        let store = self.store;
        self.drain(reason, |limit| {
            let slice = chore.with_limit(limit);
            async move { store.run_chore(&slice).await }
        })
        .await
    }

    async fn auth(&mut self) -> Result<(), StoreError> {
        let (store, now) = (self.store, self.now);
        if self.dry_run {
            let n = store.count_expired_auth(now).await?;
            self.add(Reason::Auth, n);
            return Ok(());
        }
        self.drain(Reason::Auth, |limit| store.purge_expired_auth(now, limit))
            .await
    }

    async fn expired(&mut self) -> Result<(), StoreError> {
        let (store, now) = (self.store, self.now);
        if self.dry_run {
            let n = store.count_expired(now).await?;
            self.add(Reason::Expired, n);
            return Ok(());
        }
        let limit = self.policy.batch;
        self.delete(Reason::Expired, Chore::DeleteExpired { now, limit })
            .await
    }

    async fn compacted(&mut self, cutoff: UnixMs) -> Result<(), StoreError> {
        let store = self.store;
        if self.dry_run {
            let n = store.count_superseded(cutoff).await?;
            self.add(Reason::Compacted, n);
            return Ok(());
        }
        let limit = self.policy.batch;
        self.delete(Reason::Compacted, Chore::DeleteSuperseded { cutoff, limit })
            .await
    }

    /// `max_age`: each user's longest prefix of events published before `cutoff`.
    async fn age(&mut self, cutoff: UnixMs) -> Result<(), StoreError> {
        let mut after: Option<UserId> = None;
        loop {
            let users = self
                .store
                .users_with_events_before(cutoff, after.as_ref(), PAGE)
                .await?;
            for user in &users {
                self.age_of(user, cutoff).await?;
            }
            match users.last() {
                Some(last) if users.len() == PAGE as usize => after = Some(*last),
                _ => return Ok(()),
            }
        }
    }

    async fn age_of(&mut self, user: &UserId, cutoff: UnixMs) -> Result<(), StoreError> {
        let batch = self.policy.batch;
        let mut after = 0;
        loop {
            let events = self.store.oldest_events(user, after, batch).await?;
            let old = events.iter().take_while(|(_, ts)| *ts < cutoff).count();
            let Some(&(last_old, _)) = old.checked_sub(1).and_then(|i| events.get(i)) else {
                return Ok(());
            };
            // Everything below the first young event goes (holes included); if the
            // page held only old events, everything up to its last one does.
            let end = events.get(old).map_or(last_old + 1, |&(seq, _)| seq);
            if self.dry_run {
                self.add(Reason::Age, old as u64);
            } else {
                let chore = Chore::Prune {
                    user: *user,
                    before: end,
                    limit: batch,
                };
                self.delete(Reason::Age, chore).await?;
            }
            if old < events.len() || events.len() < batch as usize {
                return Ok(());
            }
            after = last_old;
            tokio::task::yield_now().await;
        }
    }

    /// `max_events_per_user`: everything older than each user's newest `keep` events.
    async fn count(&mut self, keep: u64) -> Result<(), StoreError> {
        let mut after: Option<UserId> = None;
        loop {
            let users = self
                .store
                .users_spanning_more_than(keep, after.as_ref(), PAGE)
                .await?;
            for user in &users {
                // The newest event that goes: the (keep + 1)-th newest.
                let Some(last) = self.store.nth_newest_seq(user, keep + 1).await? else {
                    continue;
                };
                if self.dry_run {
                    let n = self.store.count_events_before(user, last + 1).await?;
                    self.add(Reason::Count, n);
                    continue;
                }
                let chore = Chore::Prune {
                    user: *user,
                    before: last + 1,
                    limit: self.policy.batch,
                };
                self.delete(Reason::Count, chore).await?;
            }
            match users.last() {
                Some(last) if users.len() == PAGE as usize => after = Some(*last),
                _ => return Ok(()),
            }
        }
    }

    async fn inactive_devices(&mut self, seen_before: UnixMs) -> Result<(), StoreError> {
        let mut after: Option<(UserId, DeviceId)> = None;
        loop {
            let page = self
                .store
                .devices_seen_before(seen_before, after, PAGE)
                .await?;
            let idle: Vec<(UserId, DeviceId)> = page
                .iter()
                .filter(|(u, d)| !self.host.is_connected(u, d))
                .copied()
                .collect();
            if self.dry_run {
                self.add(Reason::InactiveDevice, idle.len() as u64);
            } else {
                for chunk in idle.chunks(DEVICES_PER_TX.min(self.policy.batch as usize).max(1)) {
                    // Forgotten first: a handshake from now on reads the store, and a
                    // registration moves `last_seen`, which keeps the row.
                    for (u, d) in chunk {
                        self.host.forget(u, d);
                    }
                    let n = self
                        .store
                        .remove_devices(chunk, seen_before, self.now)
                        .await?;
                    self.add(Reason::InactiveDevice, n);
                    tokio::task::yield_now().await;
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => after = Some(*last),
                _ => return Ok(()),
            }
        }
    }
}

/// The last pass of the job, for `GET /admin/v1/retention`.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The last pass that ran (skipped ones included), if any.
    pub last: Option<Report>,
    /// When the last pass failed and why (cleared by a pass that succeeds).
    pub last_error: Option<(UnixMs, String)>,
    /// When the last successful pass ended (Unix ms).
    pub last_success: Option<UnixMs>,
    /// When the background job runs next (Unix ms); `None` outside `ferry serve`.
    pub next_run: Option<UnixMs>,
    /// A pass is running now.
    pub running: bool,
}

/// The job of one `ferry serve`: its policy, its interval, its status and metrics.
pub struct Job {
    pub(super) policy: Policy,
    pub(super) interval: Duration,
    status: Mutex<Status>,
    metrics: std::sync::Arc<crate::telemetry::metrics::Metrics>,
}

impl Job {
    pub(super) fn new(
        policy: Policy,
        interval: Duration,
        metrics: std::sync::Arc<crate::telemetry::metrics::Metrics>,
    ) -> Self {
        Self {
            policy,
            interval,
            status: Mutex::default(),
            metrics,
        }
    }

    fn metrics(&self) -> &RetentionMetrics {
        &self.metrics.retention
    }

    /// A snapshot of the status.
    pub fn status(&self) -> Status {
        self.status.lock().expect("retention status lock").clone()
    }

    pub(super) fn set_next_run(&self, at: UnixMs) {
        self.status.lock().expect("retention status lock").next_run = Some(at);
    }

    /// Runs one pass with this job's policy, recording its outcome in the status,
    /// the metrics and the log.
    pub(super) async fn run(
        &self,
        store: &dyn Store,
        clock: &SharedClock,
        dry_run: bool,
        host: &dyn Host,
    ) -> Result<Report, Failed> {
        let now = clock.unix_ms();
        self.status.lock().expect("retention status lock").running = true;
        let metrics = self.metrics();
        let mut progress = |_: Reason, _: u64| {};
        let result = run_pass(store, &self.policy, now, dry_run, host, &mut progress).await;
        let mut status = self.status.lock().expect("retention status lock");
        status.running = false;
        match &result {
            Ok(report) if dry_run => {
                info!(deleted = report.deleted.total(), "retention dry run");
            }
            Ok(report) if report.skipped => {
                metrics.runs.with_label_values(&["skipped"]).inc();
                info!("retention run skipped: another instance holds the lock");
                status.last = Some(*report);
            }
            Ok(report) => {
                count_deleted(metrics, &report.deleted);
                metrics.runs.with_label_values(&["ok"]).inc();
                metrics.run_seconds.observe(report.duration.as_secs_f64());
                let ended = clock.unix_ms();
                metrics.last_success.set(ended / 1000);
                status.last = Some(*report);
                status.last_success = Some(ended);
                status.last_error = None;
                let d = report.deleted;
                info!(
                    duration_ms = report.duration.as_millis() as u64,
                    expired = d.expired,
                    age = d.age,
                    count = d.count,
                    compacted = d.compacted,
                    inactive_device = d.inactive_device,
                    auth = d.auth,
                    "retention run done"
                );
            }
            Err(failed) if dry_run => {
                warn!(error = %failed.error, "retention dry run failed");
            }
            Err(failed) => {
                count_deleted(metrics, &failed.partial.deleted);
                metrics.runs.with_label_values(&["error"]).inc();
                status.last = Some(failed.partial);
                status.last_error = Some((clock.unix_ms(), failed.error.to_string()));
                warn!(
                    error = %failed.error,
                    deleted = failed.partial.deleted.total(),
                    "retention run failed; retrying at the next interval"
                );
            }
        }
        result
    }
}

fn count_deleted(metrics: &RetentionMetrics, deleted: &Deleted) {
    for reason in Reason::ALL {
        metrics
            .deleted
            .with_label_values(&[reason.as_str()])
            .inc_by(deleted.get(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_adapt_toward_the_target_within_bounds() {
        let ms = Duration::from_millis;
        // Fast: grows, at most doubling, never past the batch.
        assert_eq!(next_limit(100, ms(1), 5000), 200);
        assert_eq!(next_limit(4000, ms(1), 5000), 5000);
        // Slow: shrinks, at most halving, never below the minimum.
        assert_eq!(next_limit(1000, ms(80), 5000), 500);
        assert_eq!(next_limit(150, ms(80), 5000), MIN_TX_ROWS);
        // On target: stays.
        assert_eq!(next_limit(700, TX_TARGET, 5000), 700);
        // A batch below the minimum is the bound.
        assert_eq!(next_limit(50, ms(1), 50), 50);
    }
}
