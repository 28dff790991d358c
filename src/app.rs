//! The state every connection shares: a cheap-to-clone handle, one `Arc` over
//! [`AppState`] (a session's task holds it, so it costs one pointer per clone).
//!
//! It holds the domain core ([`Relay`]), REST authentication ([`Auth`]), metrics,
//! the configuration and the connection-level limits — and no store, hub or other
//! part of the core: a handler can do only what `Relay` and `Auth` offer.

use std::net::IpAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::keys::ServerKey;
use crate::limits::{ConnLimiter, Limiter, RestLimiters, Shared};
use crate::relay::Relay;
use crate::telemetry::metrics::Metrics;

/// Everything a connection needs, built once by [`crate::server::run`]; its fields
/// are [`AppState`]'s.
#[derive(Clone)]
pub struct App(Arc<AppState>);

impl App {
    /// The handle over `state`.
    pub fn new(state: AppState) -> Self {
        Self(Arc::new(state))
    }
}

impl std::ops::Deref for App {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.0
    }
}

/// What [`App`] shares.
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The server identity.
    pub key: Arc<ServerKey>,
    /// The domain core: devices, events, live sessions.
    pub relay: Relay,
    /// REST authentication: access-token keys, refresh tokens, admin keys.
    pub auth: Arc<Auth>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where decisions read the time (the system's, or a test's).
    pub clock: SharedClock,
    /// Concurrent connection caps.
    pub conns: Arc<ConnLimiter>,
    /// Handshake rate per IP.
    pub handshake_rate: Arc<Limiter<IpAddr>>,
    /// The limits' shared state in Redis, once connected (`limits.shared`).
    pub shared_limits: Shared,
    /// REST rate limits (per IP, per token, admin-key failures).
    pub rest_limits: Arc<RestLimiters>,
    /// Device certificates whose signature a handshake already verified (a memo of
    /// a pure check: see `ferry_proto::handshake::VerifiedCerts`).
    pub verified_certs: Arc<ferry_proto::handshake::VerifiedCerts>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Every spawned connection and job, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

/// Entries per generation of [`App::verified_certs`] (it keeps two): about 2 MiB at
/// most, and every device that connected in the last 32,768 to 65,536 first-time
/// verifications skips its certificate check.
pub const VERIFIED_CERTS_PER_GENERATION: usize = 32_768;
