//! Durable storage: the only module that knows SQL.
//!
//! One [`Store`] trait describes what the relay needs; [`connect`] picks the backend
//! from the database URL at run time (`sqlite:` or `postgres://`).
//!
//! # Layout
//! - `crate::model`: the plain data the store reads and writes (re-exported here).
//! - `sqlite` / `postgres`: the two backends ([`SqliteStore`], [`PgStore`]).
//! - `migrate`: refinery driven through sqlx, down scripts, and the
//!   `ferry migrate` operations ([`migrate_status`], [`migrate_up`], [`migrate_down`]).
//! - `append`: the backend-neutral part of [`Store::append`] (duplicate and
//!   compare-and-set decisions, seq numbering).
//! - `guarded`: [`Guarded`], a circuit breaker around a store, so that calls fail
//!   fast while the database is down.
//!
//! Invariant: `seq` is assigned only inside [`Store::append`], in a transaction that
//! serialises appends per user (SQLite `BEGIN IMMEDIATE`; PostgreSQL the user's
//! counter row locked `FOR NO KEY UPDATE`), with `UNIQUE (user_id, seq)` as the
//! backstop. A user's head is the greater of `users.head` and the log's newest seq
//! ([`user_head!`]), read under that lock.

/// SQL for the head of the user whose `users` row has the alias `$u`: the greater
/// of `$u.head` and the newest seq in the user's log (one probe of the
/// `(user_id, seq)` index; NULL-safe, and the same text on both dialects).
///
/// `users.head` is a floor, not the head itself: the SQLite append does not write
/// it (a commit would rewrite the users' counter pages for nothing: the log's newest
/// seq is the head), and whatever deletes a user's newest events (expiry, pruning)
/// raises it to their seq first, in the same transaction, so a seq is never handed
/// out twice. The PostgreSQL append keeps it equal to the head, because its row
/// lock on `users` is what serialises appenders across instances.
macro_rules! user_head {
    ($u:literal) => {
        concat!(
            "CASE WHEN coalesce((SELECT max(h.seq) FROM events AS h WHERE h.user_id = ",
            $u,
            ".user_id), 0) > ",
            $u,
            ".head THEN (SELECT max(h.seq) FROM events AS h WHERE h.user_id = ",
            $u,
            ".user_id) ELSE ",
            $u,
            ".head END"
        )
    };
}
pub(crate) use user_head;

mod append;
pub mod backup;
mod guarded;
mod migrate;
mod options;
mod postgres;
mod retention;
mod shared;
mod sqlite;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use crate::model::*;
pub use guarded::{DATABASE_FAILURES_TO_OPEN, DATABASE_OPEN_FOR, Guarded};
pub use migrate::{
    KnownMigration, MigrationStatus, UnknownMigration, latest_version, migrate_down,
    migrate_status, migrate_up,
};
pub use postgres::PgStore;
pub use retention::RetentionLock;
pub use sqlite::SqliteStore;

/// The in-memory half of [`Store::append`] (seq assignment, duplicate and
/// compare-and-set decisions) on a batch, given each user's current head and no
/// stored ids or keys: what `benches/fanout.rs` measures as sequencing. Not part of
/// the API.
#[doc(hidden)]
pub fn plan_batch(
    batch: &[NewEvent],
    heads: std::collections::HashMap<UserId, u64>,
) -> Vec<AppendOutcome> {
    let snapshot = append::Snapshot {
        heads,
        ..Default::default()
    };
    append::plan(batch, snapshot).outcomes
}

/// Storage failures, classified by what the caller does next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was violated.
    #[error("conflict")]
    Conflict,
    /// The database cannot be reached or timed out: retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The database's circuit breaker is open ([`Guarded`]): the call was refused
    /// without touching the database, after repeated [`StoreError::Unavailable`]
    /// results. Retry after the duration.
    #[error(
        "storage unavailable: failing fast for {} ms after repeated failures",
        .0.as_millis()
    )]
    CircuitOpen(Duration),
    /// Migrations are not in a state this binary can run on.
    #[error("migration: {0}")]
    Migration(String),
    /// Anything else.
    #[error("storage error: {0}")]
    Other(String),
}

impl StoreError {
    /// Whether the caller should retry later: [`StoreError::Unavailable`] or
    /// [`StoreError::CircuitOpen`].
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::CircuitOpen(_))
    }

    /// When to retry, where it is known: the wait of an open circuit breaker
    /// ([`StoreError::CircuitOpen`]).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::CircuitOpen(wait) => Some(*wait),
            _ => None,
        }
    }

    /// The same classification for another caller (errors are not `Clone`): an
    /// open breaker stays [`StoreError::CircuitOpen`] with its wait, anything else
    /// becomes [`StoreError::Unavailable`] with its text.
    pub fn to_unavailable(&self) -> Self {
        match self {
            Self::CircuitOpen(wait) => Self::CircuitOpen(*wait),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend a database URL names: `sqlite:…` or `postgres://…` /
    /// `postgresql://…`. Anything else is [`StoreError::Other`] naming the scheme.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "" => Err(StoreError::Other(
                "database URL has no scheme; use sqlite:PATH or postgres://…".into(),
            )),
            other => Err(StoreError::Other(format!(
                "unsupported database URL scheme `{other}:`; use sqlite:PATH or postgres://…"
            ))),
        }
    }

    /// Lowercase name, as used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`connect`] does about schema migrations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MigrateMode {
    /// Apply pending migrations (the default: a single-instance deployment upgrades
    /// itself on start).
    #[default]
    Apply,
    /// Only check: refuse to start when migrations are pending (for deployments that
    /// run `ferry migrate up` as a separate step).
    VerifyOnly,
}

/// How [`connect`] opens the database.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Upper bound of pooled connections (SQLite: readers; writes use one connection).
    pub max_connections: u32,
    /// How long opening a connection, or waiting for a pooled one, may take before
    /// the operation fails with [`StoreError::Unavailable`].
    pub connect_timeout: Duration,
    /// Whether to apply pending migrations or only verify them.
    pub migrate: MigrateMode,
    /// SQLite: how often the background task checkpoints the write-ahead log
    /// (`database.checkpoint_interval`). PostgreSQL ignores it.
    pub checkpoint_interval: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
            migrate: MigrateMode::Apply,
            checkpoint_interval: sqlite::CHECKPOINT_EVERY,
        }
    }
}

/// Opens the store a database URL names, checks (and with [`MigrateMode::Apply`]
/// applies) migrations, and returns it ready for use.
///
/// `sqlite:PATH` / `sqlite://PATH` creates the file and its parent directory if
/// missing; `postgres://` / `postgresql://` connects to a server. Refuses with
/// [`StoreError::Migration`] when the database holds a migration this binary does not
/// know, or one whose checksum differs from the built-in script.
pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    match Backend::from_url(url)? {
        Backend::Sqlite => Ok(Arc::new(SqliteStore::connect(url, opts).await?)),
        Backend::Postgres => Ok(Arc::new(PgStore::connect(url, opts).await?)),
    }
}

/// The one mapping from sqlx errors to what the caller does next.
///
/// Anything that may succeed on retry (pool timeout or closed, IO, TLS, a busy or
/// full or read-only SQLite file, a PostgreSQL connection, resource, shutdown,
/// deadlock or timeout error, or any PostgreSQL error that ended the session, such
/// as a database refusing connections) is [`StoreError::Unavailable`].
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match e {
            E::RowNotFound => Self::NotFound,
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                Self::Unavailable(e.to_string())
            }
            E::Database(ref db) if db.is_unique_violation() => Self::Conflict,
            E::Database(ref db) if db_error_is_transient(db.as_ref()) => {
                Self::Unavailable(e.to_string())
            }
            _ => Self::Other(e.to_string()),
        }
    }
}

/// Whether a database error is about the database's state rather than the statement.
fn db_error_is_transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    // A PostgreSQL error of severity FATAL (or PANIC) ended the session: the server
    // refused or dropped the connection (a database that does not accept
    // connections, a shutdown, a failed login), whatever its code. A statement's
    // own errors are of severity ERROR. sqlx returns most of these at once when a
    // pooled connection is opened, without retrying.
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        && matches!(
            pg.severity(),
            sqlx::postgres::PgSeverity::Fatal | sqlx::postgres::PgSeverity::Panic
        )
    {
        return true;
    }
    let Some(code) = db.code() else {
        return false;
    };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // SQLite reports extended result codes; the primary code is the low byte.
        // https://www.sqlite.org/rescode.html
        const BUSY: i32 = 5; // "database is locked"
        const LOCKED: i32 = 6;
        const NOMEM: i32 = 7;
        const READONLY: i32 = 8; // includes SQLITE_READONLY_DBMOVED etc.
        const IOERR: i32 = 10;
        const FULL: i32 = 13; // disk full or max_page_count reached
        const CANTOPEN: i32 = 14;
        const PROTOCOL: i32 = 15;
        return code.parse::<i32>().is_ok_and(|c| {
            matches!(
                c & 0xff,
                BUSY | LOCKED | NOMEM | READONLY | IOERR | FULL | CANTOPEN | PROTOCOL
            )
        });
    }
    // PostgreSQL SQLSTATE: 08 connection exception, 53 insufficient resources (disk
    // full, out of memory, too many connections), 57P0x shutdown / cannot connect now,
    // 57014 statement timeout, 55P03 lock timeout, 40001 / 40P01 serialization
    // failure / deadlock, 25006 read-only transaction (a standby), 58 system error.
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code.starts_with("58")
        || matches!(&*code, "57014" | "55P03" | "40001" | "40P01" | "25006")
}

/// The per-user event log: sequencing, reading, retention.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// The user's head: the highest assigned seq (0 for a new user).
    async fn head(&self, user: &UserId) -> Result<u64, StoreError>;

    /// Appends a batch (events of any users) in one durable transaction.
    /// Returns one outcome per input, in input order. Seq is assigned here and
    /// nowhere else: gap-free per user, correct with several server instances.
    async fn append(&self, batch: &[NewEvent]) -> Result<Vec<AppendOutcome>, StoreError>;

    /// Up to `limit` events with `seq > after`, ascending, leaving out events
    /// expired at `now` (`expires_at <= now`; they still hold their seq).
    ///
    /// `more` says whether an unexpired event after the last returned one exists, so a
    /// page of only expired events never makes a client loop. `truncated_oldest` is set
    /// when retention removed events after `after` ([`Store::prune_before`]): it is the
    /// oldest seq retention kept. An unknown user has an empty log with head 0.
    async fn events_after(
        &self,
        user: &UserId,
        after: u64,
        limit: u32,
        now: UnixMs,
    ) -> Result<EventPage, StoreError>;

    /// Retention: removes up to `limit` of the user's oldest events with
    /// `seq < before` and returns how many were removed. The user's retention watermark
    /// moves up with them, so a later [`Store::events_after`] from below it reports
    /// `truncated_oldest`. Seqs are never reused, and the head never moves. The newest
    /// event of a key that goes is remembered in `retired_keys` (see
    /// [`RetentionStore`]). Idempotent; call again while it returns `limit` to delete
    /// in bounded batches.
    async fn prune_before(&self, user: &UserId, before: u64, limit: u32)
    -> Result<u64, StoreError>;
}

/// Devices: registration, lookup, cursors, `last_seen`, signed revocation.
#[async_trait]
pub trait Devices: Send + Sync + 'static {
    /// Registers the user and the device on first sight (keeping `cert` for audit),
    /// or updates `last_seen` of a known one. Returns the device as stored, including
    /// `revoked_at` so the caller can refuse a revoked device. A device revoked before
    /// its user was erased is registered revoked ([`AdminStore::erase_user`]).
    async fn register_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        cert: &DeviceCert,
        now: UnixMs,
    ) -> Result<DeviceRecord, StoreError>;

    /// One device of a user, if known.
    async fn device(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<DeviceRecord>, StoreError>;

    /// [`Store::device`] and [`Store::head`] in one read: what a handshake needs to
    /// admit a known device and greet it (`None`: the device is unknown).
    async fn device_and_head(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<(DeviceRecord, u64)>, StoreError>;

    /// Every device of the user, oldest first.
    async fn devices(&self, user: &UserId) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Moves the device's cursor forward to `seq` (never backwards, and never past the
    /// user's head, so a bogus cursor cannot make retention drop unread events).
    /// [`StoreError::NotFound`] for an unknown device.
    async fn set_cursor(
        &self,
        user: &UserId,
        device: &DeviceId,
        seq: u64,
    ) -> Result<(), StoreError>;

    /// Records when known devices were last seen (sessions of them ended), in one
    /// transaction: `last_seen` becomes the later of the stored value and the given
    /// time. Unknown devices are skipped: it never creates one. Each `(user,
    /// device)` appears at most once in `seen`.
    async fn touch_devices(&self, seen: &[(UserId, DeviceId, UnixMs)]) -> Result<(), StoreError>;

    /// Revokes a device; `ts` and `sig` identify the signed revocation, which is
    /// usable once. Verifying the signature is the caller's job.
    async fn revoke_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        ts: UnixMs,
        sig: &[u8; 64],
        now: UnixMs,
    ) -> Result<RevokeOutcome, StoreError>;
}

/// REST authentication: login challenges, refresh-token families, the access-token
/// denylist.
#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    /// Stores a login challenge until it is taken or expires.
    async fn put_challenge(&self, challenge: &AuthChallenge) -> Result<(), StoreError>;

    /// Consumes a challenge: `true` exactly once, and only when it was issued to this
    /// user and device and has not expired at `now`.
    async fn take_challenge(
        &self,
        challenge: &[u8; 32],
        user: &UserId,
        device: &DeviceId,
        now: UnixMs,
    ) -> Result<bool, StoreError>;

    /// Stores the first refresh token of a new family.
    async fn put_refresh_token(&self, token: &NewRefreshToken) -> Result<(), StoreError>;

    /// Spends the refresh token whose hash is `presented` and stores `next` in its
    /// family, atomically. A spent token presented again revokes the family (and
    /// denylists its access tokens); so does a token whose device is revoked or gone.
    async fn rotate_refresh_token(
        &self,
        presented: &[u8; 32],
        next: &RefreshSuccessor,
        now: UnixMs,
    ) -> Result<RefreshRotation, StoreError>;

    /// Denylists an access token's `jti` until `expires_at`, and revokes the refresh
    /// family it was issued with (logout).
    async fn revoke_access_token(
        &self,
        jti: &str,
        expires_at: UnixMs,
        now: UnixMs,
    ) -> Result<(), StoreError>;

    /// Whether an access token of `device` with this `jti` may still act: one round
    /// trip, made on every authenticated request.
    async fn access_status(
        &self,
        user: &UserId,
        device: &DeviceId,
        jti: &str,
    ) -> Result<AccessStatus, StoreError>;

    /// Removes up to `limit` rows of: expired challenges, expired refresh tokens,
    /// denylisted `jti`s whose tokens have expired anyway, and revocations kept across
    /// an erasure or a device cleanup whose certificate has expired; returns how many
    /// rows went (call again while it returns `limit`).
    async fn purge_expired_auth(&self, now: UnixMs, limit: u32) -> Result<u64, StoreError>;

    /// How many rows [`AuthStore::purge_expired_auth`] would remove at `now`.
    async fn count_expired_auth(&self, now: UnixMs) -> Result<u64, StoreError>;
}

/// Administration: totals, users, an operator's revocation, erasure.
#[async_trait]
pub trait AdminStore: Send + Sync + 'static {
    /// Totals for the admin API.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Up to `limit` users with an id greater than `after` (all from the start when
    /// `None`), in id order.
    async fn users_page(
        &self,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<UserSummary>, StoreError>;

    /// One user, if known.
    async fn user_summary(&self, user: &UserId) -> Result<Option<UserSummary>, StoreError>;

    /// Revokes a device without a user signature (an operator's decision).
    /// [`RevokeOutcome::UnknownDevice`] when the user has no such device.
    async fn force_revoke_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        now: UnixMs,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Erases everything stored for a user (events, devices, tokens, challenges, the
    /// user row) in one transaction; `None` when nothing was stored for it. Its
    /// revoked devices are remembered apart (user, device, when, until the
    /// certificate they presented expires): registering one of them again stores it
    /// revoked ([`Devices::register_device`]).
    async fn erase_user(&self, user: &UserId) -> Result<Option<ErasedCounts>, StoreError>;
}

/// Retention: the deletions the retention job makes, each in bounded batches (one
/// transaction per call), and the reads that plan them. Every `delete_*`/`prune`
/// call is idempotent; the caller repeats it while it returns `limit`.
///
/// Deleting the newest event of a key (an expired one, or one in a pruned prefix)
/// records its seq in `retired_keys`, so compare-and-set publishes keep being judged
/// against the key's true newest seq ([`EventLog::append`]).
#[async_trait]
pub trait RetentionStore: Send + Sync + 'static {
    /// The retention lock, held until the returned guard is released or dropped;
    /// `None` when another runner holds it (PostgreSQL: a session advisory lock, so
    /// one instance of a cluster runs the job at a time; SQLite: this process).
    async fn retention_lock(&self) -> Result<Option<RetentionLock>, StoreError>;

    /// Deletes up to `limit` events expired at `now` (`expires_at <= now`).
    async fn delete_expired(&self, now: UnixMs, limit: u32) -> Result<u64, StoreError>;

    /// How many events are expired at `now`.
    async fn count_expired(&self, now: UnixMs) -> Result<u64, StoreError>;

    /// Deletes up to `limit` keyed events superseded by a newer event of the same
    /// user and key published at or before `cutoff`. The newest event of every key
    /// is never deleted by this.
    async fn delete_superseded(&self, cutoff: UnixMs, limit: u32) -> Result<u64, StoreError>;

    /// How many events [`RetentionStore::delete_superseded`] would delete.
    async fn count_superseded(&self, cutoff: UnixMs) -> Result<u64, StoreError>;

    /// Up to `limit` users (in id order, after `after`) whose oldest stored event was
    /// published before `cutoff`.
    async fn users_with_events_before(
        &self,
        cutoff: UnixMs,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<UserId>, StoreError>;

    /// Up to `limit` users (in id order, after `after`) whose log spans more than
    /// `keep` seqs above its retention watermark (`head - pruned_through > keep`):
    /// those that may hold more than `keep` events.
    async fn users_spanning_more_than(
        &self,
        keep: u64,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<UserId>, StoreError>;

    /// The user's oldest `limit` stored events with `seq > after`: `(seq, ts)`,
    /// ascending (expired ones included).
    async fn oldest_events(
        &self,
        user: &UserId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, UnixMs)>, StoreError>;

    /// The seq of the user's `n`-th newest stored event (`n >= 1`), if it holds that
    /// many.
    async fn nth_newest_seq(&self, user: &UserId, n: u64) -> Result<Option<u64>, StoreError>;

    /// How many stored events of the user have `seq < before`.
    async fn count_events_before(&self, user: &UserId, before: u64) -> Result<u64, StoreError>;

    /// Up to `limit` devices (in `(user, device)` order, after `after`) last seen
    /// before `seen_before`.
    async fn devices_seen_before(
        &self,
        seen_before: UnixMs,
        after: Option<(UserId, DeviceId)>,
        limit: u32,
    ) -> Result<Vec<(UserId, DeviceId)>, StoreError>;

    /// Removes those of `devices` still last seen before `seen_before`, with their
    /// refresh tokens, in one transaction; returns how many went. A revoked one whose
    /// certificate may still be valid at `now` is remembered in `kept_revocations`
    /// first, so registering it again stores it revoked
    /// ([`Devices::register_device`]). The users and their logs stay.
    async fn remove_devices(
        &self,
        devices: &[(UserId, DeviceId)],
        seen_before: UnixMs,
        now: UnixMs,
    ) -> Result<u64, StoreError>;
}

/// What a [`Chore`] did: the rows it deleted and how long its statements took.
pub type ChoreResult = Result<(u64, Duration), StoreError>;

/// What the relay needs from durable storage: every concern below, on one database.
///
/// Each concern is a trait of its own, so a part of the server can be handed only
/// the one it needs (REST authentication gets an [`AuthStore`]).
#[async_trait]
pub trait Store:
    EventLog + Devices + AuthStore + AdminStore + RetentionStore + Send + Sync + 'static
{
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// The state of the circuit breaker around this store ([`Guarded`]); `None`
    /// for a store without one.
    fn breaker_state(&self) -> Option<crate::breaker::State> {
        None
    }

    /// A cheap query proving the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// A number that moves whenever another process commits to the database, where
    /// the backend can tell (SQLite: `PRAGMA data_version` on the write connection,
    /// which this store's own commits leave alone); `None` where it cannot.
    async fn foreign_commits(&self) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }

    /// The database's size on disk in bytes, where the backend can tell (SQLite:
    /// pages × page size, plus the write-ahead log; PostgreSQL: `pg_database_size`).
    async fn database_bytes(&self) -> Result<Option<u64>, StoreError>;

    /// Connections of the pool(s) `(in use, idle)`, for metrics.
    fn pool_stats(&self) -> (u32, u32) {
        (0, 0)
    }

    /// [`EventLog::append`] and one [`Chore`] of the retention job, committed
    /// together where the backend gains by it. SQLite runs the chore inside the
    /// batch's transaction, after its rows (one commit, one sync, one turn on the
    /// single write connection), in a savepoint: a chore that fails is rolled back
    /// alone and its error is the second value, while the batch commits. Here, by
    /// default, the chore runs after the batch in a transaction of its own. An
    /// empty batch runs only the chore. The outer error is the batch's; the second
    /// value is the chore's rows and how long its statements took.
    async fn append_with(
        &self,
        batch: &[NewEvent],
        chore: &Chore,
    ) -> Result<(Vec<AppendOutcome>, ChoreResult), StoreError> {
        let outcomes = if batch.is_empty() {
            Vec::new()
        } else {
            self.append(batch).await?
        };
        let started = std::time::Instant::now();
        let done = self.run_chore(chore).await;
        Ok((outcomes, done.map(|rows| (rows, started.elapsed()))))
    }

    /// One [`Chore`] in a transaction of its own: the matching
    /// [`RetentionStore`]/[`EventLog`] call.
    async fn run_chore(&self, chore: &Chore) -> Result<u64, StoreError> {
        match chore {
            Chore::DeleteExpired { now, limit } => self.delete_expired(*now, *limit).await,
            Chore::DeleteSuperseded { cutoff, limit } => {
                self.delete_superseded(*cutoff, *limit).await
            }
            Chore::Prune {
                user,
                before,
                limit,
            } => self.prune_before(user, *before, *limit).await,
        }
    }
}

// Conversions between model types and the columns both schemas use. Seqs, cursors
// and watermarks are BIGINT; keys and ids are raw bytes.

/// A `u64` (seq, cursor, seconds) as the BIGINT the databases store. Values past
/// `i64::MAX` are never assigned, so they saturate: `after = u64::MAX` still means
/// "after everything", never a negative number that would mean "from the start".
fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored BIGINT that is never negative back to `u64`.
fn from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A `devices` row as both backends select it: `created_at, last_seen, cursor_seq,
/// revoked_at`.
type DeviceRow = (i64, i64, i64, Option<i64>);

fn device_record(user: UserId, device: DeviceId, row: DeviceRow) -> DeviceRecord {
    let (created_at, last_seen, cursor, revoked_at) = row;
    DeviceRecord {
        user,
        device,
        created_at,
        last_seen,
        cursor: from_db(cursor),
        revoked_at,
    }
}

/// A [`DeviceRow`] followed by the user's `head`: [`Store::device_and_head`]'s query.
type DeviceHeadRow = (i64, i64, i64, Option<i64>, i64);

fn device_and_head(user: UserId, device: DeviceId, row: DeviceHeadRow) -> (DeviceRecord, u64) {
    let (c, l, cur, r, head) = row;
    (device_record(user, device, (c, l, cur, r)), from_db(head))
}

/// A 32-byte key column.
fn key32(bytes: &[u8], column: &str) -> Result<[u8; 32], StoreError> {
    bytes.try_into().map_err(|_| {
        StoreError::Other(format!(
            "{column}: expected 32 bytes, found {}",
            bytes.len()
        ))
    })
}

/// A 16-byte event id column.
fn event_id(bytes: &[u8]) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::from_slice(bytes).map_err(|_| {
        StoreError::Other(format!(
            "event_id: expected 16 bytes, found {}",
            bytes.len()
        ))
    })
}

/// One event row as both backends select it:
/// `seq, event_id, device_id, ts, payload, event_key, ttl`.
type EventRow = (
    i64,
    Vec<u8>,
    Vec<u8>,
    i64,
    Vec<u8>,
    Option<Vec<u8>>,
    Option<i64>,
);

/// The retention watermark after deleting `count` events up to `upper`: everything
/// below `before` (but never past the head) when the batch was not full, else the
/// last deleted seq.
fn watermark(head: i64, before: u64, limit: u32, upper: Option<i64>, count: i64) -> i64 {
    if count < i64::from(limit) {
        to_db(before.saturating_sub(1)).min(head)
    } else {
        upper.unwrap_or(0)
    }
}

/// Builds an [`EventPage`] from up to `limit + 1` unexpired rows and the user's
/// `(head, pruned_through)`.
fn page(
    mut rows: Vec<EventRow>,
    limit: u32,
    after: u64,
    counters: Option<(i64, i64)>,
) -> Result<EventPage, StoreError> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let (head, pruned_through) = counters.map_or((0, 0), |(h, p)| (from_db(h), from_db(p)));
    // The rows were read before the counters: a prune that committed in between
    // removed those at or below the new watermark. The page leaves them out, so it
    // never holds events below the `oldest` it reports.
    let events = rows
        .into_iter()
        .filter(|row| from_db(row.0) > pruned_through)
        .map(|(seq, id, device, ts, payload, key, ttl)| {
            Ok(StoredEvent {
                seq: from_db(seq),
                id: event_id(&id)?,
                device: DeviceId(key32(&device, "events.device_id")?),
                ts,
                payload,
                key,
                ttl: ttl.map(from_db),
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(EventPage {
        events,
        head,
        more,
        truncated_oldest: (after < pruned_through).then_some(pruned_through + 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64) -> EventRow {
        (seq, vec![7; 16], vec![9; 32], 1, b"p".to_vec(), None, None)
    }

    #[test]
    fn a_page_never_holds_events_below_the_oldest_it_reports() {
        // Rows 3..=6 were read, then a prune moved pruned_through to 4 before the
        // counters were read.
        let pruned = page((3..=6).map(row).collect(), 10, 2, Some((6, 4))).unwrap();
        let seqs: Vec<u64> = pruned.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![5, 6]);
        assert_eq!(pruned.truncated_oldest, Some(5));
        assert!(!pruned.more);
        // Without a prune, every row stays.
        let all = page((3..=6).map(row).collect(), 10, 2, Some((6, 0))).unwrap();
        assert_eq!(all.events.len(), 4);
        assert_eq!(all.truncated_oldest, None);
    }
}
