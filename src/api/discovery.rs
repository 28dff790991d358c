//! Public documents: the token-signing key (`/.well-known/jwks.json`), the server's
//! facts (`/.well-known/ferry`) and the OpenAPI description (`/openapi.json`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::extract::MAX_BODY;
use super::schema::{InfoLimits, Jwk, Jwks, ServerInfo};
use crate::app::App;

/// Caching for documents that change only with the server key or configuration.
const CACHEABLE: &str = "public, max-age=300";

/// The access-token signing key as a JWK Set (an OKP Ed25519 key).
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "discovery",
    operation_id = "jwks",
    responses((status = 200, description = "The JWK Set", body = Jwks))
)]
pub(crate) async fn jwks(State(app): State<App>) -> Response {
    let jwt = app.auth.jwt();
    let body = Jwks {
        keys: vec![Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: ferry_proto::b64u::encode(jwt.public_key()),
            kid: jwt.kid().to_string(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        }],
    };
    ([(header::CACHE_CONTROL, CACHEABLE)], Json(body)).into_response()
}

/// The server key, protocol versions and limits.
#[utoipa::path(
    get,
    path = "/.well-known/ferry",
    tag = "discovery",
    operation_id = "serverInfo",
    responses((status = 200, description = "Server facts", body = ServerInfo))
)]
pub(crate) async fn server_info(State(app): State<App>) -> Response {
    let l = &app.config.limits;
    let body = ServerInfo {
        server_key: app.key.public_b64u(),
        protocol_versions: vec![1],
        websocket: "/v1/ws".into(),
        issuer: app.auth.jwt().issuer().to_string(),
        limits: InfoLimits {
            max_payload: l.max_payload as u64,
            max_ttl: l.max_ttl.as_secs(),
            events_per_sec: l.events_per_sec.into(),
            burst: l.burst.into(),
            max_body: MAX_BODY as u64,
            max_sync_limit: ferry_proto::message::MAX_SYNC_LIMIT,
            rest_requests_per_ip_per_sec: l.rest_requests_per_ip_per_sec,
            rest_requests_per_token_per_sec: l.rest_requests_per_token_per_sec,
        },
    };
    ([(header::CACHE_CONTROL, CACHEABLE)], Json(body)).into_response()
}

/// Serves an OpenAPI document rendered once at startup.
pub(crate) fn openapi_handler(
    doc: Arc<str>,
) -> impl Fn() -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    move || {
        std::future::ready(
            (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, CACHEABLE),
                ],
                doc.to_string(),
            )
                .into_response(),
        )
    }
}
