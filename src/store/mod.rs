//! Durable storage: the only module that knows SQL.
//!
//! One [`Store`] trait describes what the relay needs; [`connect`] picks the backend
//! from the database URL at run time (`sqlite:` or `postgres://`).

pub mod model;

use async_trait::async_trait;

pub use model::*;

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
    /// Migrations are not in a state this binary can run on.
    #[error("migration: {0}")]
    Migration(String),
    /// Anything else.
    #[error("storage error: {0}")]
    Other(String),
}

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// What the relay needs from durable storage.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// A cheap query proving the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Registers the user and the device on first sight (keeping `cert` for audit),
    /// or updates `last_seen` of a known one. Returns the device as stored, including
    /// `revoked_at` so the caller can refuse a revoked device.
    async fn register_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        cert: &DeviceCert,
        now: UnixMs,
    ) -> Result<DeviceRecord, StoreError>;

    /// One device of a user, if known.
    async fn device(&self, user: &UserId, device: &DeviceId) -> Result<Option<DeviceRecord>, StoreError>;

    /// Every device of the user, oldest first.
    async fn devices(&self, user: &UserId) -> Result<Vec<DeviceRecord>, StoreError>;

    /// The user's head: the highest assigned seq (0 for a new user).
    async fn head(&self, user: &UserId) -> Result<u64, StoreError>;

    /// Appends a batch (events of any users) in one durable transaction.
    /// Returns one outcome per input, in input order. Seq is assigned here and
    /// nowhere else: gap-free per user, correct with several server instances.
    async fn append(&self, batch: &[NewEvent]) -> Result<Vec<AppendOutcome>, StoreError>;

    /// Up to `limit` events with `seq > after`, ascending, leaving out events
    /// expired at `now`.
    async fn events_after(
        &self,
        user: &UserId,
        after: u64,
        limit: u32,
        now: UnixMs,
    ) -> Result<EventPage, StoreError>;

    /// Moves the device's cursor forward to `seq` (never backwards).
    async fn set_cursor(&self, user: &UserId, device: &DeviceId, seq: u64) -> Result<(), StoreError>;

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
