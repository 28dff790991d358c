//! The domain's plain data: ids, events, devices, tokens, and what storage reports.
//! No SQL here, no serde: `api` and `session` convert these to wire types at their
//! boundary.

use std::fmt;

/// A user's id: the 32-byte Ed25519 public key of the user key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub [u8; 32]);

/// A device's id: the 32-byte Ed25519 public key of the device key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub [u8; 32]);

macro_rules! key_id_fmt {
    ($t:ty) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&ferry_proto::b64u::encode(&self.0))
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&ferry_proto::b64u::encode(&self.0))
            }
        }
    };
}
key_id_fmt!(UserId);
key_id_fmt!(DeviceId);

/// Unix time in milliseconds.
pub type UnixMs = i64;

/// A device as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The owning user.
    pub user: UserId,
    /// The device key.
    pub device: DeviceId,
    /// When the device was first seen.
    pub created_at: UnixMs,
    /// When the device last authenticated or was active.
    pub last_seen: UnixMs,
    /// The device's processed position in its user's log (0 when never set).
    pub cursor: u64,
    /// When the device was revoked; `None` while it is active.
    pub revoked_at: Option<UnixMs>,
}

/// The certificate a device presented when it was first seen, kept for audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCert {
    /// `cert.issued_at`, Unix seconds.
    pub issued_at: u64,
    /// `cert.expires_at`, Unix seconds, 0 for no expiry.
    pub expires_at: u64,
    /// The user key's signature over the certificate message.
    pub sig: [u8; 64],
}

/// One event to append. `seq` is not here: only [`super::Store::append`] assigns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// The owning user.
    pub user: UserId,
    /// The client-chosen event id (idempotency key within the user's log).
    pub id: uuid::Uuid,
    /// The publishing device.
    pub device: DeviceId,
    /// Opaque (end-to-end encrypted) bytes.
    pub payload: Vec<u8>,
    /// Optional key (1–64 bytes) for compare-and-set.
    pub key: Option<Vec<u8>>,
    /// With `key`: store only if the newest event with this key has this seq (0: none).
    pub base: Option<u64>,
    /// Seconds after `ts` when the event stops being served.
    pub ttl: Option<u64>,
    /// Server time of the publish, Unix ms.
    pub ts: UnixMs,
}

/// What happened to one [`NewEvent`] of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored with this seq and ts.
    Stored {
        /// The assigned, gap-free sequence number.
        seq: u64,
        /// The stored server timestamp.
        ts: UnixMs,
    },
    /// The user's log already holds this id: the original seq and ts.
    Duplicate {
        /// The original seq.
        seq: u64,
        /// The original ts.
        ts: UnixMs,
    },
    /// `key` + `base` did not match: nothing stored; the current head of that key.
    Conflict {
        /// Seq of the newest event with this key (0: none).
        key_head: u64,
    },
}

/// A stored event as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Sequence number within the user's log.
    pub seq: u64,
    /// Event id.
    pub id: uuid::Uuid,
    /// Publishing device.
    pub device: DeviceId,
    /// Server timestamp, Unix ms.
    pub ts: UnixMs,
    /// Opaque bytes.
    pub payload: Vec<u8>,
    /// Optional key.
    pub key: Option<Vec<u8>>,
    /// Optional TTL in seconds.
    pub ttl: Option<u64>,
}

/// One page of a user's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPage {
    /// Events with `seq > after`, ascending, expired ones left out.
    pub events: Vec<StoredEvent>,
    /// The user's head (highest assigned seq).
    pub head: u64,
    /// Whether events after the last one returned exist.
    pub more: bool,
    /// Set when retention removed events after `after`: the oldest seq still stored.
    pub truncated_oldest: Option<u64>,
}

/// Result of a revocation request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The device is now revoked.
    Revoked,
    /// This signed revocation was used before: refused.
    Replayed,
    /// The device is not one of the user's devices.
    UnknownDevice,
}

// ---- REST authentication and administration ----

/// A single-use REST login challenge, bound to the user and device that asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthChallenge {
    /// 32 random bytes.
    pub challenge: [u8; 32],
    /// The user that asked for it.
    pub user: UserId,
    /// The device that will sign it.
    pub device: DeviceId,
    /// It cannot be redeemed at or after this time.
    pub expires_at: UnixMs,
}

/// A refresh token to store. Only the SHA-256 hash of the token is ever stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRefreshToken {
    /// SHA-256 of the token.
    pub token_hash: [u8; 32],
    /// The family: every token rotated from one login shares it.
    pub family: [u8; 16],
    /// The owning user.
    pub user: UserId,
    /// The device it was issued to.
    pub device: DeviceId,
    /// When it was issued.
    pub created_at: UnixMs,
    /// When it stops being accepted.
    pub expires_at: UnixMs,
    /// The `jti` of the access token issued with it.
    pub access_jti: String,
    /// When that access token expires (how long its `jti` must stay denylisted).
    pub access_expires_at: UnixMs,
}

/// The token that replaces a refresh token on rotation (same family, user, device).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshSuccessor {
    /// SHA-256 of the new token.
    pub token_hash: [u8; 32],
    /// When it was issued.
    pub created_at: UnixMs,
    /// When it stops being accepted.
    pub expires_at: UnixMs,
    /// The `jti` of the access token issued with it.
    pub access_jti: String,
    /// When that access token expires.
    pub access_expires_at: UnixMs,
}

/// The outcome of presenting a refresh token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshRotation {
    /// The token was live: it is spent now and its successor stored.
    Rotated {
        /// The owning user.
        user: UserId,
        /// The device it belongs to.
        device: DeviceId,
    },
    /// The token was spent already (or its family revoked): the whole family is
    /// revoked now, including the access tokens issued with it.
    Reused,
    /// Unknown, expired, or its device is revoked or gone (the family is revoked).
    Invalid,
}

/// Whether an access token's subject may still act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessStatus {
    /// The device exists, is not revoked, and the token's `jti` is not denylisted.
    Active,
    /// The device is unknown (never registered, or its user was erased).
    DeviceUnknown,
    /// The device was revoked.
    DeviceRevoked,
    /// The token was revoked (logout or a revoked refresh family).
    TokenRevoked,
}

/// Totals for the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreStats {
    /// Users with a log.
    pub users: u64,
    /// Devices, revoked ones included.
    pub devices: u64,
    /// Devices that are not revoked.
    pub active_devices: u64,
    /// Events stored (assigned seqs minus those removed by retention).
    pub events: u64,
    /// Size of the database in bytes, when the backend can tell cheaply.
    pub database_bytes: Option<u64>,
}

/// One user as the admin API lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserSummary {
    /// The user.
    pub user: UserId,
    /// First seen.
    pub created_at: UnixMs,
    /// Highest assigned seq.
    pub head: u64,
    /// Retention removed every event up to this seq.
    pub pruned_through: u64,
    /// Devices, revoked ones included.
    pub devices: u64,
    /// Revoked devices.
    pub revoked_devices: u64,
    /// The latest `last_seen` of its devices.
    pub last_seen: Option<UnixMs>,
}

/// What erasing a user removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErasedCounts {
    /// Events.
    pub events: u64,
    /// Devices.
    pub devices: u64,
    /// Refresh tokens.
    pub refresh_tokens: u64,
    /// Used revocation signatures.
    pub revocations: u64,
    /// Pending login challenges.
    pub challenges: u64,
}

/// A bounded deletion of the retention job that a backend may run inside a
/// transaction of its own making ([`crate::store::Store::append_with`]): each is
/// one batch of the matching `RetentionStore`/`EventLog` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chore {
    /// Up to `limit` events expired at `now`.
    DeleteExpired {
        /// Unix ms.
        now: UnixMs,
        /// Most rows.
        limit: u32,
    },
    /// Up to `limit` keyed events superseded at or before `cutoff`.
    DeleteSuperseded {
        /// Unix ms.
        cutoff: UnixMs,
        /// Most rows.
        limit: u32,
    },
    /// Up to `limit` of the user's oldest events with `seq < before`.
    Prune {
        /// Whose log.
        user: UserId,
        /// The first seq kept.
        before: u64,
        /// Most rows.
        limit: u32,
    },
}

impl Chore {
    /// The most rows it deletes.
    pub fn limit(&self) -> u32 {
        match self {
            Self::DeleteExpired { limit, .. }
            | Self::DeleteSuperseded { limit, .. }
            | Self::Prune { limit, .. } => *limit,
        }
    }

    /// The same chore with another limit.
    pub fn with_limit(&self, limit: u32) -> Self {
        let mut c = self.clone();
        match &mut c {
            Self::DeleteExpired { limit: l, .. }
            | Self::DeleteSuperseded { limit: l, .. }
            | Self::Prune { limit: l, .. } => *l = limit,
        }
        c
    }
}
