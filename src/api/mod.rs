//! HTTP surface: the router factories. The only module (with `session`) that knows
//! HTTP and WebSocket framing.

pub mod health;
pub mod ws;

use axum::Router;
use axum::routing::get;

use crate::app::App;

/// The public router: `/v1/ws` and health probes.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/v1/ws", get(ws::upgrade))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .with_state(app)
}

/// The admin router, served on the private admin listener: `/metrics`.
pub fn admin_router(app: App) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .with_state(app)
}
