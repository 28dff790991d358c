//! The domain core: [`Relay`] owns the store, the group-commit writer, the hub of
//! live sessions, the admission memo, the `last_seen` collector and the publish
//! limiter, and offers what a device or an operator can do — admit a device and
//! greet it with its head, publish, sync, move a cursor, list devices, revoke,
//! force-revoke, erase a user, disconnect.
//!
//! Nothing outside this module (and `server`, which builds it) can reach the store
//! or the hub of a running server: `api` and `session` hold a `Relay`, an
//! [`crate::auth::Auth`] and the metrics, and nothing else. So the rules that tie
//! those parts together are kept here, once:
//!
//! - a revocation forgets the device's admission before its sessions close, and an
//!   erasure clears the memo after the user's rows are gone (see [`admissions`]);
//! - an erasure closes the user's sessions before the rows go, so no live session
//!   appends while they do;
//! - a greeting's head is never older than an event its session will not be relayed
//!   ([`Relay::join`]).
//!
//! # Layout
//! - [`hub`]: live sessions by user, one per device, bounded outbound queues.
//! - [`writer`]: the group-commit writer (append, then ack and fan out in order).
//! - [`bus`]: cross-instance fan-out over Redis pub/sub, plugged into the hub as
//!   its [`hub::Peers`].
//! - [`admissions`]: the memo of admitted devices.
//! - [`last_seen`]: `last_seen` times of ended sessions, written once a second.
//! - [`presence`]: the cluster's directory of live sessions in Redis (`online`
//!   and live-session counts across instances).
//! - [`order`]: one session's stream of stored events in seq order, each once,
//!   with what it missed read from the store.
//! - [`retention`]: the retention job (expiry, compaction, age and count limits,
//!   inactive devices, spent authentication rows).
//! - `ops`: publish, sync, cursor, devices and revoke, shared by the WebSocket
//!   session and the REST API.
//! - `sessions`: admitting a device, joining the hub and leaving it.
//! - `admin`: the operator's view and actions.

mod admin;
pub mod admissions;
pub mod bus;
pub mod hub;
pub mod last_seen;
mod ops;
pub mod order;
pub mod presence;
pub mod retention;
mod sessions;
pub mod writer;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admin::{Erased, UserView};
pub use hub::{Inbox, Outbound, SessionHandle, SessionLink};
pub use ops::{Committing, MISSED_PAGE, Prepared, PublishRefusal, REVOKE_WINDOW_MS, RevokeError};
pub use sessions::{Admission, Joined};
pub use writer::stored_event_msg;

use crate::clock::SharedClock;
use crate::limits::{Gcra, Limiter, Shared};
use crate::model::DeviceId;
use crate::store::{Backend, MigrationStatus, Store};

/// Storage failures, classified by what the caller does next (the store's).
pub use crate::store::StoreError;
use crate::telemetry::metrics::Metrics;
use admissions::Admissions;
use hub::Hub;
use last_seen::LastSeen;
use writer::{WriteHealth, Writer};

/// Entries per generation of the admission memo (it keeps two): 32 bytes an entry,
/// about 2 MiB at most with the tables' slack.
pub const ADMISSIONS_PER_GENERATION: usize = 32_768;

/// The limits the core enforces on what devices send.
#[derive(Clone, Copy, Debug)]
pub struct RelayLimits {
    /// Largest payload of one event, in bytes.
    pub max_payload: usize,
    /// Longest `ttl`, in seconds.
    pub max_ttl_secs: u64,
    /// Largest WebSocket message; a `sync` page is trimmed to fit in one.
    pub max_message_size: usize,
    /// Publishes per second per device.
    pub events_per_sec: u32,
    /// Publish burst per device.
    pub burst: u32,
    /// Messages one session's outbound queue holds before it closes with 4009.
    pub outbound_queue: usize,
    /// Bytes one session's outbound queue holds before it closes with 4009.
    pub outbound_queue_bytes: usize,
}

impl RelayLimits {
    /// The relay's share of the validated configuration.
    pub fn from_config(limits: &crate::config::Limits) -> Self {
        Self {
            max_payload: limits.max_payload,
            max_ttl_secs: limits.max_ttl.as_secs(),
            max_message_size: limits.max_message_size,
            events_per_sec: limits.events_per_sec,
            burst: limits.burst,
            outbound_queue: limits.outbound_queue,
            outbound_queue_bytes: limits.outbound_queue_bytes,
        }
    }
}

/// The domain core: a cheap-to-clone handle (see the module docs). The writer task
/// ends once every handle is dropped.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    writer: Writer,
    hub: Hub,
    admissions: Admissions,
    last_seen: LastSeen,
    publish_rate: Limiter<DeviceId>,
    metrics: Arc<Metrics>,
    limits: RelayLimits,
    write_health: Arc<WriteHealth>,
    clock: SharedClock,
    retention: retention::Job,
    /// True while the cross-instance bus is subscribed (see [`bus::start`]).
    bus_connected: Arc<std::sync::atomic::AtomicBool>,
    /// The cluster's directory of live sessions, once connected.
    directory: std::sync::OnceLock<presence::Directory>,
}

impl Relay {
    /// Builds the core on an open store and starts its group-commit writer (the
    /// returned task ends once every `Relay` handle is dropped, after the batch it
    /// holds is committed). `bus` says whether the cross-instance bus will be
    /// connected, which turns the admission memo off; the publish limit is decided
    /// in Redis once `shared` is attached. Decisions read the time from `clock`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        limits: RelayLimits,
        bus: bool,
        shared: &Shared,
        retention: &crate::config::RetentionConfig,
        commit_interval: std::time::Duration,
        clock: SharedClock,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let hub = Hub::new(limits.outbound_queue, limits.outbound_queue_bytes);
        let write_health = Arc::new(WriteHealth::default());
        let (writer, writer_task) = Writer::spawn(
            store.clone(),
            hub.clone(),
            metrics.clone(),
            limits.outbound_queue,
            write_health.clone(),
            commit_interval,
            clock.clone(),
        );
        let admissions =
            Admissions::for_deployment(store.backend(), bus, ADMISSIONS_PER_GENERATION);
        let inner = Inner {
            publish_rate: Limiter::new(
                "publish",
                Gcra::new(limits.events_per_sec, limits.burst),
                shared.clone(),
            ),
            store,
            writer,
            hub,
            admissions,
            last_seen: LastSeen::default(),
            retention: retention::Job::new(
                retention::Policy::from_config(retention),
                retention.interval,
                metrics.clone(),
            ),
            metrics,
            limits,
            write_health,
            clock,
            bus_connected: Arc::default(),
            directory: std::sync::OnceLock::new(),
        };
        (
            Self {
                inner: Arc::new(inner),
            },
            writer_task,
        )
    }

    /// Connects the hub to the other instances over Redis (see [`bus`]) and starts
    /// the cluster's directory of live sessions ([`presence`]); fails when Redis
    /// cannot be reached now. Their tasks run on `tracker` until `cancel`.
    pub async fn connect_bus(
        &self,
        url: &str,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(), redis::RedisError> {
        let inner = &self.inner;
        let mut instance = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut instance);
        let directory = presence::Directory::start(
            url,
            instance,
            inner.hub.clone(),
            inner.clock.clone(),
            cancel.clone(),
            tracker,
        )
        .await?;
        let _ = inner.directory.set(directory);
        let signals = bus::Signals {
            connected: inner.bus_connected.clone(),
            ..Default::default()
        };
        let lost = signals.on_lost.clone();
        bus::start(
            url,
            instance,
            &inner.hub,
            inner.metrics.clone(),
            signals,
            cancel.clone(),
            tracker,
        )
        .await?;
        let this = self.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = lost.notified() => { this.close_revoked_sessions().await; }
                    _ = cancel.cancelled() => return,
                }
            }
        });
        Ok(())
    }

    /// Closes (4003) the live sessions here of devices that are revoked in the
    /// store: after the bus lost messages, the close another instance sent for a
    /// revocation may have been among them. Returns how many closed.
    pub async fn close_revoked_sessions(&self) -> usize {
        let inner = &self.inner;
        let mut closed = 0;
        for (user, device) in inner.hub.devices() {
            if let Ok(Some(d)) = inner.store.device(&user, &device).await
                && d.revoked_at.is_some()
            {
                inner.admissions.forget(&user, &device);
                closed +=
                    inner
                        .hub
                        .close_device_local(&user, &device, ferry_proto::CloseCode::Revoked);
            }
        }
        if closed > 0 {
            tracing::info!(
                closed,
                "closed sessions of devices revoked while the bus was down"
            );
        }
        closed
    }

    /// The cluster's directory of live sessions, when connected.
    fn directory(&self) -> Option<&presence::Directory> {
        self.inner.directory.get()
    }

    /// Whether the cross-instance bus is subscribed now (false without a bus).
    pub fn bus_connected(&self) -> bool {
        self.inner
            .bus_connected
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Spawns the core's background jobs on `tracker`: the `last_seen` writer (and
    /// the hourly record of live sessions' `last_seen`), the admission memo's watch
    /// for commits by other processes, and the retention job. All stop at `cancel`;
    /// [`Relay::flush_last_seen`] writes what is left.
    pub fn spawn_jobs(&self, tracker: &TaskTracker, cancel: &CancellationToken) {
        let (this, stop) = (self.clone(), cancel.clone());
        tracker.spawn(async move { this.retention_loop(stop).await });
        let (this, stop) = (self.clone(), cancel.clone());
        tracker.spawn(async move { this.touch_live_loop(stop).await });
        let (this, stop) = (self.clone(), cancel.clone());
        tracker.spawn(async move {
            last_seen::flush_loop(&this.inner.last_seen, this.inner.store.as_ref(), stop).await;
        });
        let (this, stop) = (self.clone(), cancel.clone());
        tracker.spawn(async move {
            admissions::watch_foreign_commits(
                &this.inner.admissions,
                this.inner.store.as_ref(),
                stop,
            )
            .await;
        });
    }

    /// Runs a retention pass every `retention.interval` until `cancel`.
    async fn retention_loop(&self, cancel: CancellationToken) {
        let job = &self.inner.retention;
        let interval = job.interval;
        loop {
            job.set_next_run(
                self.inner
                    .clock
                    .unix_ms()
                    .saturating_add(interval.as_millis() as i64),
            );
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = cancel.cancelled() => return,
            }
            // A failure is logged and counted by the job; the next interval retries.
            let run = job.run(self.inner.store.as_ref(), &self.inner.clock, false, self);
            tokio::select! {
                _ = run => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Records the `last_seen` of every live session every
    /// [`retention::LIVE_TOUCH_EVERY`], so long sessions never look inactive.
    async fn touch_live_loop(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(retention::LIVE_TOUCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cancel.cancelled() => return,
            }
            let now = self.inner.clock.unix_ms();
            for (user, device) in self.inner.hub.devices() {
                self.inner.last_seen.record(user, device, now);
            }
        }
    }

    /// Runs one retention pass now with the configured policy (the admin API's
    /// `POST /admin/v1/retention/run`); `skipped` when another pass holds the lock.
    ///
    /// The pass runs on a task of its own: a caller that stops waiting (an HTTP
    /// request past its timeout) does not cut it short, and its outcome still lands
    /// in [`Relay::retention_status`].
    pub async fn run_retention(
        &self,
        dry_run: bool,
    ) -> Result<retention::Report, retention::Failed> {
        let this = self.clone();
        let started_at = self.inner.clock.unix_ms();
        tokio::spawn(async move {
            let inner = &this.inner;
            inner
                .retention
                .run(inner.store.as_ref(), &inner.clock, dry_run, &this)
                .await
        })
        .await
        .unwrap_or_else(|e| {
            Err(retention::Failed {
                partial: retention::Report {
                    dry_run,
                    skipped: false,
                    started_at,
                    duration: std::time::Duration::ZERO,
                    deleted: retention::Deleted::default(),
                },
                error: StoreError::Other(format!("the retention pass ended abnormally: {e}")),
            })
        })
    }

    /// The retention job's last pass, next run and last error.
    pub fn retention_status(&self) -> retention::Status {
        self.inner.retention.status()
    }

    /// The database's size on disk in bytes, where the backend can tell.
    pub async fn database_bytes(&self) -> Result<Option<u64>, StoreError> {
        self.inner.store.database_bytes().await
    }

    /// Writes the `last_seen` times recorded and not yet written (at shutdown, once
    /// the sessions are gone).
    pub async fn flush_last_seen(&self) {
        self.inner.last_seen.flush(self.inner.store.as_ref()).await;
    }

    /// Which database the store runs on.
    pub fn backend(&self) -> Backend {
        self.inner.store.backend()
    }

    /// A cheap query proving the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.inner.store.ping().await
    }

    /// The migration state of the database `url` names (on a connection of its own,
    /// so a stuck pool does not hide it).
    pub async fn migrate_status(&self, url: &str) -> Result<MigrationStatus, StoreError> {
        crate::store::migrate_status(url).await
    }

    /// The state of the database's circuit breaker (`closed` for a store without
    /// one, as in-process apps built by [`crate::server::build_app`]).
    pub fn database_breaker(&self) -> crate::breaker::State {
        self.inner
            .store
            .breaker_state()
            .unwrap_or(crate::breaker::State::Closed)
    }

    /// Connections of the store's pool(s) `(in use, idle)`, for metrics.
    pub fn pool_stats(&self) -> (u32, u32) {
        self.inner.store.pool_stats()
    }

    /// Whether appends are failing now (see [`writer::WriteHealth`]): the last one
    /// failed, recently, and none succeeded since.
    pub fn writes_failing(&self) -> bool {
        self.inner.write_health.failing(self.inner.clock.unix_ms())
    }
}

/// The live sessions of this instance, as the retention job sees them, and its
/// writer: on SQLite the job's event deletions ride the group commit's
/// transactions ([`writer::Writer::chore`]); on PostgreSQL, where writers do not
/// queue for one connection, the job writes its own.
#[async_trait::async_trait]
impl retention::Host for Relay {
    fn is_connected(&self, user: &crate::model::UserId, device: &DeviceId) -> bool {
        self.inner.hub.is_connected(user, device)
    }

    fn forget(&self, user: &crate::model::UserId, device: &DeviceId) {
        self.inner.admissions.forget(user, device);
    }

    async fn chore(&self, chore: crate::model::Chore) -> Option<Result<u64, StoreError>> {
        match self.inner.store.backend() {
            Backend::Sqlite => Some(self.inner.writer.chore(chore).await),
            Backend::Postgres => None,
        }
    }
}
