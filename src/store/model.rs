//! Plain data the store reads and writes. No SQL here, no serde: `api` and `session`
//! convert these to wire types at their boundary.

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
