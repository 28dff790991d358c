//! HTTP surface: the router factories. The only module (with `session`) that knows
//! HTTP and JSON; handlers parse, call the core (`relay::Relay`) or `auth::Auth`, and map
//! the outcome to a response.
//!
//! # Listeners
//! - public ([`router`]): `/v1/ws`, the REST API (`/v1/auth/*`, `/v1/me`,
//!   `/v1/devices`, `/v1/events`), `/.well-known/{jwks.json,ferry}`,
//!   `/openapi.json`, `/health/*`;
//! - admin ([`admin_router`], bind it to a private interface): the admin API
//!   (`/admin/v1/*`, admin keys), `/metrics`, `/openapi.json` (admin document),
//!   `/health/*`.
//!
//! # Layers, outermost first
//! CORS (allow-list from `server.cors_origins`) → `middleware::finish` (request
//! id and span, per-IP limit, the one error shape, security headers, metrics) →
//! body limit (1 MiB) → timeout (30 s) → the route.

pub mod admin;
pub mod discovery;
pub mod error;
pub mod extract;
pub mod health;
pub mod middleware;
pub(crate) mod openapi;
pub mod schema;
pub mod tokens;
pub mod user;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::routing::get;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::config::CorsOrigins;
use error::ApiError;
use extract::MAX_BODY;
use middleware::{PerIpLimit, REQUEST_ID, finish};
use openapi::{ApiDoc, Listener};

/// How long a request may take before it is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn public_routes() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tokens::challenge))
        .routes(routes!(tokens::token))
        .routes(routes!(tokens::refresh))
        .routes(routes!(tokens::logout))
        .routes(routes!(user::me))
        .routes(routes!(user::devices))
        .routes(routes!(user::revoke_device))
        .routes(routes!(user::events, user::publish))
        .routes(routes!(discovery::jwks))
        .routes(routes!(discovery::server_info))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
}

fn admin_routes() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(admin::stats))
        .routes(routes!(admin::users))
        .routes(routes!(admin::user, admin::erase_user))
        .routes(routes!(admin::disconnect))
        .routes(routes!(admin::revoke_device))
        .routes(routes!(admin::config))
        .routes(routes!(admin::retention_status))
        .routes(routes!(admin::retention_run))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
}

/// The OpenAPI document of the public listener, as served at `/openapi.json`.
pub fn openapi_json(app: &App) -> String {
    openapi::render(
        public_routes().into_openapi(),
        &app.config,
        Listener::Public,
    )
}

/// The OpenAPI document of the admin listener.
pub fn admin_openapi_json(app: &App) -> String {
    openapi::render(admin_routes().into_openapi(), &app.config, Listener::Admin)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

fn cors(origins: &CorsOrigins) -> CorsLayer {
    let origins = origins.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin.to_str().is_ok_and(|o| origins.allows(o))
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
        .expose_headers([
            REQUEST_ID,
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
        ])
        .max_age(Duration::from_secs(600))
}

/// Applies the layers (see the module docs) and the state.
fn finish_router(routes: Router<App>, app: App, per_ip: bool) -> Router {
    routes
        .fallback(not_found)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            (app.clone(), PerIpLimit(per_ip)),
            finish,
        ))
        .layer(cors(&app.config.server.cors_origins))
        .with_state(app)
}

/// The public router: `/v1/ws`, the REST API, discovery documents, health probes.
/// Tests drive it with `tower::ServiceExt::oneshot`.
pub fn router(app: App) -> Router {
    let (routes, doc) = public_routes().split_for_parts();
    let doc: Arc<str> = openapi::render(doc, &app.config, Listener::Public).into();
    let routes = routes
        .route("/v1/ws", get(ws::upgrade))
        .route("/openapi.json", get(discovery::openapi_handler(doc)));
    finish_router(routes, app, true)
}

/// The admin router, served on the private admin listener: the admin API,
/// `/metrics`, health probes and the admin OpenAPI document.
pub fn admin_router(app: App) -> Router {
    let (routes, doc) = admin_routes().split_for_parts();
    let doc: Arc<str> = openapi::render(doc, &app.config, Listener::Admin).into();
    let routes = routes
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(discovery::openapi_handler(doc)));
    finish_router(routes, app, false)
}
