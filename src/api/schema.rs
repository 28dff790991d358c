//! Request and response bodies of the HTTP API, with their OpenAPI schemas. The
//! store's and the protocol's types are converted to these at the boundary; none of
//! them is `Serialize` itself.
//!
//! Patterns describe exactly what the server accepts, so a request that matches the
//! schema is never refused as malformed: keys and signatures are strict base64url
//! without padding (43 and 86 characters, canonical last character), event ids are
//! canonical lowercase UUIDs, integers are at most 2^53 − 1.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;

/// Largest integer accepted in requests: 2^53 − 1, exact in every JSON library.
pub const MAX_SAFE_INT: u64 = (1 << 53) - 1;

/// Checks that `v` is at most [`MAX_SAFE_INT`].
pub(crate) fn safe_int(v: u64, field: &str) -> Result<u64, ApiError> {
    if v > MAX_SAFE_INT {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most 2^53 - 1"
        )));
    }
    Ok(v)
}

/// Serde helpers for integers in request bodies. JSON Schema counts a number with
/// a zero fraction (`5.0`) as an integer, so these accept it too, up to
/// [`MAX_SAFE_INT`]; anything else (negative, fractional, too large) is an error.
pub(crate) mod int {
    use serde::de::{self, Deserializer, Visitor};

    use super::MAX_SAFE_INT;

    struct Int;

    impl Visitor<'_> for Int {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "an integer from 0 to {MAX_SAFE_INT}")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            if v > MAX_SAFE_INT {
                return Err(E::custom(format!("{v} is larger than {MAX_SAFE_INT}")));
            }
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("{v} is negative")))
                .and_then(|v| self.visit_u64(v))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            if v.fract() != 0.0 || !(0.0..=MAX_SAFE_INT as f64).contains(&v) {
                return Err(E::custom(format!(
                    "{v} is not an integer from 0 to {MAX_SAFE_INT}"
                )));
            }
            Ok(v as u64)
        }
    }

    /// A required integer.
    pub(crate) fn de<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(Int)
    }

    /// An optional integer (`null` or absent: `None`).
    pub(crate) fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        struct Opt;
        impl<'de> Visitor<'de> for Opt {
            type Value = Option<u64>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "null or an integer from 0 to {MAX_SAFE_INT}")
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                de(d).map(Some)
            }
        }
        d.deserialize_option(Opt)
    }
}

/// A 32-byte key from strict b64u.
pub(crate) fn key32(text: &str, field: &str) -> Result<[u8; 32], ApiError> {
    ferry_proto::b64u::decode_array::<32>(text)
        .map_err(|_| ApiError::bad_request(format!("{field} must be base64url of 32 bytes")))
}

/// A 64-byte signature from strict b64u.
pub(crate) fn sig64(text: &str, field: &str) -> Result<[u8; 64], ApiError> {
    ferry_proto::b64u::decode_array::<64>(text)
        .map_err(|_| ApiError::bad_request(format!("{field} must be base64url of 64 bytes")))
}

// ---- auth ----

/// `POST /v1/auth/challenge`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The user key, b64u of 32 bytes.
    #[schema(
        pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
        min_length = 43,
        max_length = 43
    )]
    pub user: String,
    /// The device key that will sign the challenge, b64u of 32 bytes.
    #[schema(
        pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
        min_length = 43,
        max_length = 43
    )]
    pub device: String,
}

/// A login challenge.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChallengeResponse {
    /// 32 random bytes, b64u: sign `"ferry-rest/v1" || 0x00 || challenge || server_key`.
    pub challenge: String,
    /// Unix ms after which the challenge is refused (single use, 60 s).
    pub expires_at: i64,
}

/// A device certificate (§1).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertBody {
    /// Unix seconds.
    #[schema(minimum = 0, maximum = 9007199254740991_i64)]
    #[serde(deserialize_with = "int::de")]
    pub issued_at: u64,
    /// Unix seconds; 0 for no expiry.
    #[schema(minimum = 0, maximum = 9007199254740991_i64)]
    #[serde(deserialize_with = "int::de")]
    pub expires_at: u64,
    /// The user key's signature, b64u of 64 bytes.
    #[schema(
        pattern = "^[A-Za-z0-9_-]{85}[AQgw]$",
        min_length = 86,
        max_length = 86
    )]
    pub sig: String,
}

/// `POST /v1/auth/token`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The user key.
    #[schema(
        pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
        min_length = 43,
        max_length = 43
    )]
    pub user: String,
    /// The device key.
    #[schema(
        pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
        min_length = 43,
        max_length = 43
    )]
    pub device: String,
    /// The device's certificate.
    pub cert: CertBody,
    /// The challenge, as received.
    #[schema(
        pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
        min_length = 43,
        max_length = 43
    )]
    pub challenge: String,
    /// The device key's signature over the challenge, b64u of 64 bytes.
    #[schema(
        pattern = "^[A-Za-z0-9_-]{85}[AQgw]$",
        min_length = 86,
        max_length = 86
    )]
    pub sig: String,
}

/// `POST /v1/auth/refresh`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token (spent by this call).
    #[schema(
        pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
        min_length = 43,
        max_length = 43
    )]
    pub refresh_token: String,
}

/// A token pair.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// The access token (a JWT), for `Authorization: Bearer`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Unix seconds when the access token expires.
    pub expires_at: u64,
    /// The refresh token: use it once with `POST /v1/auth/refresh`.
    pub refresh_token: String,
}

// ---- discovery ----

/// The server's token-signing key as a JWK Set.
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwks {
    /// One key.
    pub keys: Vec<Jwk>,
}

/// An Ed25519 public key as an OKP JWK (RFC 8037).
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The public key, b64u.
    pub x: String,
    /// The key id used in token headers.
    pub kid: String,
    /// `EdDSA`.
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    #[schema(rename = "use")]
    pub use_: String,
}

/// `GET /.well-known/ferry`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerInfo {
    /// The server key, b64u (what clients pin).
    pub server_key: String,
    /// Wire protocol versions spoken.
    pub protocol_versions: Vec<u32>,
    /// The WebSocket path.
    pub websocket: String,
    /// The `iss` of access tokens.
    pub issuer: String,
    /// Limits in force.
    pub limits: InfoLimits,
}

/// Limits in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct InfoLimits {
    /// Largest event payload, bytes (before base64url).
    pub max_payload: u64,
    /// Longest event TTL, seconds.
    pub max_ttl: u64,
    /// Publishes per second per device.
    pub events_per_sec: u64,
    /// Publish burst per device.
    pub burst: u64,
    /// Largest REST request body, bytes.
    pub max_body: u64,
    /// Largest `limit` of `GET /v1/events`.
    pub max_sync_limit: u32,
    /// REST requests per second per IP address.
    pub rest_requests_per_ip_per_sec: u32,
    /// REST requests per second per access token.
    pub rest_requests_per_token_per_sec: u32,
}

// ---- user ----

/// `GET /v1/me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    /// The user (the token's `sub`).
    pub user: String,
    /// The device the token was issued to.
    pub device: String,
    /// The user's head (highest seq).
    pub head: u64,
    /// Unix seconds when this access token expires.
    pub token_expires_at: u64,
}

/// A device of the user.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceBody {
    /// Device key, b64u.
    pub device: String,
    /// Whether a WebSocket session of it is live now.
    pub online: bool,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub last_seen: i64,
    /// Its processed position in the log.
    pub cursor: u64,
    /// Unix ms, when revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

/// `GET /v1/devices`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DevicesResponse {
    /// Every device of the user, oldest first.
    pub devices: Vec<DeviceBody>,
}

/// `DELETE /v1/devices/{device}`: a revocation signed by the user key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Unix ms the revocation was signed at (within ±5 min of the server clock).
    #[schema(minimum = 0, maximum = 9007199254740991_i64)]
    #[serde(deserialize_with = "int::de")]
    pub ts: u64,
    /// `Ed25519(user_sk, "ferry-revoke/v1" || 0x00 || user || device || u64be(ts))`, b64u.
    #[schema(
        pattern = "^[A-Za-z0-9_-]{85}[AQgw]$",
        min_length = 86,
        max_length = 86
    )]
    pub sig: String,
}

/// The path of device endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DevicePath {
    /// Device key, b64u of 32 bytes.
    #[param(
        pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
        min_length = 43,
        max_length = 43
    )]
    pub device: String,
}

/// `GET /v1/events` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events with a greater seq (default 0).
    #[param(minimum = 0, maximum = 9007199254740991_i64)]
    pub after: Option<u64>,
    /// Page size, 1–1000 (default 500).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// A stored event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventBody {
    /// Sequence number in the user's log.
    pub seq: u64,
    /// Event id.
    pub id: String,
    /// Origin device, b64u.
    pub device: String,
    /// Server time, Unix ms.
    pub ts: i64,
    /// Payload, b64u.
    pub payload: String,
    /// Key, b64u.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// TTL, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

/// `GET /v1/events`: the semantics of `sync`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsResponse {
    /// Ascending events with `seq > after` (expired ones left out).
    pub events: Vec<EventBody>,
    /// The user's head.
    pub head: u64,
    /// Whether more events follow.
    pub more: bool,
    /// Set when retention removed events after `after`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<TruncatedBody>,
}

/// Events were removed by retention.
#[derive(Debug, Serialize, ToSchema)]
pub struct TruncatedBody {
    /// The oldest seq still stored.
    pub oldest: u64,
}

/// `POST /v1/events` as the server reads it (the flat form of [`PublishRequest`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    pub(crate) id: String,
    pub(crate) payload: String,
    pub(crate) key: Option<String>,
    #[serde(default, deserialize_with = "int::de_opt")]
    pub(crate) base: Option<u64>,
    #[serde(default, deserialize_with = "int::de_opt")]
    pub(crate) ttl: Option<u64>,
    pub(crate) ephemeral: Option<bool>,
    pub(crate) to: Option<Vec<String>>,
}

/// `POST /v1/events`: a stored event, a stored event with compare-and-set on a
/// key, or an ephemeral event (relayed to live devices, never stored).
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub enum PublishRequest {
    /// Stored.
    Durable(DurablePublish),
    /// Stored only if the newest event with `key` has seq `base`.
    Keyed(KeyedPublish),
    /// Relayed only.
    Ephemeral(EphemeralPublish),
}

/// A stored event.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DurablePublish {
    /// Event id, a canonical lowercase UUID; publishing an id again is idempotent.
    #[schema(pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    pub id: String,
    /// Opaque (encrypted) bytes, b64u.
    #[schema(
        pattern = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$"
    )]
    pub payload: String,
    /// Seconds until the event is no longer served.
    #[schema(minimum = 1)]
    pub ttl: Option<u64>,
    /// `false` (or absent).
    pub ephemeral: Option<bool>,
}

/// A stored event with a key.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyedPublish {
    /// Event id, a canonical lowercase UUID.
    #[schema(pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    pub id: String,
    /// Opaque bytes, b64u.
    #[schema(
        pattern = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$"
    )]
    pub payload: String,
    /// Key, b64u of 1–64 bytes.
    #[schema(
        pattern = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        min_length = 2,
        max_length = 86
    )]
    pub key: String,
    /// Store only if the newest event with `key` has this seq (0: no such event).
    #[schema(minimum = 0, maximum = 9007199254740991_i64)]
    pub base: Option<u64>,
    /// Seconds until the event is no longer served.
    #[schema(minimum = 1)]
    pub ttl: Option<u64>,
    /// `false` (or absent).
    pub ephemeral: Option<bool>,
}

/// An ephemeral event.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EphemeralPublish {
    /// Event id, a canonical lowercase UUID.
    #[schema(pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    pub id: String,
    /// Opaque bytes, b64u.
    #[schema(
        pattern = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$"
    )]
    pub payload: String,
    /// `true`.
    pub ephemeral: bool,
    /// Only to these devices (b64u keys).
    pub to: Option<Vec<DeviceKey>>,
}

/// A device key, b64u of 32 bytes.
#[derive(Debug, ToSchema)]
#[schema(
    value_type = String,
    pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
    min_length = 43,
    max_length = 43
)]
pub struct DeviceKey(pub String);

/// The ack of a publish (the semantics of the WebSocket `ack`).
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishResponse {
    /// Event id.
    pub id: String,
    /// Assigned seq (absent for ephemeral events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Stored server time, Unix ms (absent for ephemeral events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    /// The id was stored before: this is the original ack.
    pub duplicate: bool,
    /// An ephemeral event.
    pub ephemeral: bool,
    /// Ephemeral: live sessions it went to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
}

// ---- admin ----

/// `GET /admin/v1/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    /// Users with a log.
    pub users: u64,
    /// Devices, revoked ones included.
    pub devices: u64,
    /// Devices not revoked.
    pub active_devices: u64,
    /// Seqs in the users' retained ranges (`head - pruned_through`, summed): the
    /// events stored, plus the holes expired and compacted events left.
    pub events: u64,
    /// Live WebSocket sessions on this instance.
    pub live_sessions: u64,
    /// Database size in bytes (SQLite: with its write-ahead log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_bytes: Option<u64>,
}

/// `POST /admin/v1/retention/run` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetentionRunQuery {
    /// `true`: count what each policy would delete, delete nothing.
    pub dry_run: Option<bool>,
}

/// Rows deleted by a retention pass, per reason.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionDeletedBody {
    /// Events whose `ttl` ran out.
    pub expired: u64,
    /// Events older than `retention.max_age`.
    pub age: u64,
    /// Events past `retention.max_events_per_user`.
    pub count: u64,
    /// Keyed events superseded for `retention.compact_after`.
    pub compacted: u64,
    /// Devices not seen for `retention.inactive_device_after`.
    pub inactive_device: u64,
    /// Expired login challenges, refresh tokens, denylist entries and kept
    /// revocations.
    pub auth: u64,
}

/// One retention pass.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionRunResponse {
    /// Counted only; nothing was deleted.
    pub dry_run: bool,
    /// Another instance held the retention lock, so this pass did nothing.
    pub skipped: bool,
    /// Unix ms, when the pass began.
    pub started_at: i64,
    /// How long it took, in ms.
    pub duration_ms: u64,
    /// Rows deleted (or, in a dry run, that would be), per reason.
    pub deleted: RetentionDeletedBody,
}

/// The last failure of the retention job.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionErrorBody {
    /// Unix ms.
    pub at: i64,
    /// What failed.
    pub message: String,
}

/// `GET /admin/v1/retention`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionStatusResponse {
    /// `retention.interval`, in ms.
    pub interval_ms: u64,
    /// A pass is running on this instance now.
    pub running: bool,
    /// The last pass of this instance (a failed one with what it did before failing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RetentionRunResponse>,
    /// Unix ms, when the last successful pass ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<i64>,
    /// Unix ms, when the background job runs next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<i64>,
    /// The last failure, until a pass succeeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<RetentionErrorBody>,
}

/// `GET /admin/v1/users` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// `next_cursor` of the previous page (absent: from the start).
    #[param(
        pattern = "^u1[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
        min_length = 45,
        max_length = 45
    )]
    pub cursor: Option<String>,
    /// Page size, 1–100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// A user as the admin API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserBody {
    /// User key, b64u.
    pub user: String,
    /// Unix ms, first seen.
    pub created_at: i64,
    /// Highest assigned seq.
    pub head: u64,
    /// Retention removed events up to this seq.
    pub pruned_through: u64,
    /// Devices, revoked ones included.
    pub devices: u64,
    /// Revoked devices.
    pub revoked_devices: u64,
    /// Unix ms, the latest `last_seen` of its devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
    /// Live WebSocket sessions on this instance.
    pub live_sessions: u64,
}

/// `GET /admin/v1/users`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsersResponse {
    /// Users in key order.
    pub users: Vec<UserBody>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /admin/v1/users/{user}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserDetail {
    /// The user.
    pub user: UserBody,
    /// Its devices.
    pub devices: Vec<DeviceBody>,
}

/// The path of admin user endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// User key, b64u of 32 bytes.
    #[param(
        pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
        min_length = 43,
        max_length = 43
    )]
    pub user: String,
}

/// The path of admin device endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserDevicePath {
    /// User key, b64u of 32 bytes.
    #[param(
        pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
        min_length = 43,
        max_length = 43
    )]
    pub user: String,
    /// Device key, b64u of 32 bytes.
    #[param(
        pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
        min_length = 43,
        max_length = 43
    )]
    pub device: String,
}

/// `POST /admin/v1/users/{user}/disconnect`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisconnectResponse {
    /// Sessions closed.
    pub closed: u64,
}

/// `DELETE /admin/v1/users/{user}`: what was erased.
#[derive(Debug, Serialize, ToSchema)]
pub struct EraseResponse {
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
    /// Live sessions closed.
    pub sessions_closed: u64,
}

/// `GET /admin/v1/config`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigResponse {
    /// The effective configuration as TOML, secrets (server key, database
    /// passwords, admin key hashes) redacted.
    pub config: String,
}

// ---- health ----

/// `GET /health/live`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveResponse {
    /// `ok`.
    pub status: String,
}

/// `GET /health/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Each check: `ok`, or what failed.
    pub checks: ReadyChecks,
    /// The names of the checks that failed.
    pub failed: Vec<String>,
}

/// Readiness checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyChecks {
    /// `ok`, `write_failing` (it answers but refuses writes: a full disk, a read-only
    /// file), `unavailable` (also while its circuit breaker is open) or `timeout`.
    pub database: String,
    /// The database's circuit breaker: `closed`, `open` (after repeated failures
    /// the server fails fast without asking the database) or `half_open` (one call
    /// is probing it).
    pub database_breaker: String,
    /// `ok`, `pending`, `unknown_version`, `modified` or `unavailable`.
    pub migrations: String,
    /// `no` or `in_progress`.
    pub shutdown: String,
    /// `ok`, `degraded` (Redis does not answer a `PING` or the bus is not
    /// subscribed: limits are local and live relay between instances waits; never a
    /// reason to be unready), or `not_configured` (no `[redis] url`).
    pub redis: String,
}
