//! The state every connection shares: a cheap-to-clone handle over `Arc`s.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::config::Config;
use crate::keys::ServerKey;
use crate::limits::{ConnLimiter, KeyedGcra, RateLimiter, RestLimiters};
use crate::relay::{Hub, Writer};
use crate::store::{DeviceId, Store};
use crate::telemetry::metrics::Metrics;

/// Everything a connection needs, built once by [`crate::server::run`].
#[derive(Clone)]
pub struct App {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The server identity.
    pub key: Arc<ServerKey>,
    /// Durable storage.
    pub store: Arc<dyn Store>,
    /// Live sessions by user.
    pub hub: Hub,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Concurrent connection caps.
    pub conns: Arc<ConnLimiter>,
    /// Handshake rate per IP.
    pub handshake_rate: Arc<KeyedGcra<IpAddr>>,
    /// Publish rate per device.
    pub publish_rate: Arc<dyn RateLimiter<DeviceId>>,
    /// The group-commit writer.
    pub writer: Writer,
    /// REST authentication: access-token keys, refresh tokens, admin keys.
    pub auth: Arc<Auth>,
    /// REST rate limits (per IP, per token, admin-key failures).
    pub rest_limits: Arc<RestLimiters>,
    /// Device certificates whose signature a handshake already verified (a memo of
    /// a pure check: see `ferry_proto::handshake::VerifiedCerts`).
    pub verified_certs: Arc<ferry_proto::handshake::VerifiedCerts>,
    /// Devices admitted before, so their handshakes skip the store read (on only
    /// for a single SQLite instance: see `crate::auth::admissions`).
    pub admissions: Arc<crate::auth::admissions::Admissions>,
    /// `last_seen` times of ended sessions, written in the background.
    pub last_seen: Arc<crate::session::last_seen::LastSeen>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Every spawned connection and job, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

/// Entries per generation of [`App::verified_certs`] (it keeps two): about 2 MiB at
/// most, and every device that connected in the last 32,768 to 65,536 first-time
/// verifications skips its certificate check.
pub const VERIFIED_CERTS_PER_GENERATION: usize = 32_768;

/// Entries per generation of [`App::admissions`] (it keeps two): 32 bytes an entry,
/// about 2 MiB at most with the tables' slack.
pub const ADMISSIONS_PER_GENERATION: usize = 32_768;

/// Wall-clock Unix milliseconds. The IO shell reads the clock; `ferry-proto` never does.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
