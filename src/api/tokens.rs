//! `/v1/auth/*`: challenge logins, token refresh and logout (§5).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ferry_proto::keys::DeviceCertificate;
use tracing::{info, warn};

use super::error::ApiError;
use super::extract::{ApiJson, AuthUser};
use super::schema::{
    ChallengeRequest, ChallengeResponse, RefreshRequest, TokenRequest, TokenResponse, key32,
    safe_int, sig64,
};
use crate::app::App;
use crate::auth::{AuthError, Login, Reason, TokenPair};
use crate::model::{DeviceId, UserId};
use axum::Json;

fn pair(p: TokenPair) -> TokenResponse {
    TokenResponse {
        access_token: p.access_token,
        token_type: "Bearer".into(),
        expires_in: p.expires_in,
        expires_at: p.expires_at,
        refresh_token: p.refresh_token,
    }
}

fn count(app: &App, event: &str) {
    app.metrics.api.tokens.with_label_values(&[event]).inc();
}

fn refused(app: &App, reason: Reason) {
    app.metrics
        .api
        .auth_outcomes
        .with_label_values(&["refused", reason.metric_label()])
        .inc();
}

/// Asks for a single-use login challenge (valid 60 s) for a device of a user.
#[utoipa::path(
    post,
    path = "/v1/auth/challenge",
    tag = "auth",
    operation_id = "challenge",
    request_body = ChallengeRequest,
    responses((status = 200, description = "A challenge to sign", body = ChallengeResponse))
)]
pub(crate) async fn challenge(
    State(app): State<App>,
    ApiJson(req): ApiJson<ChallengeRequest>,
) -> Result<Json<ChallengeResponse>, ApiError> {
    let user = UserId(key32(&req.user, "user")?);
    let device = DeviceId(key32(&req.device, "device")?);
    let c = app
        .auth
        .challenge(user, device, app.clock.unix_ms())
        .await?;
    Ok(Json(ChallengeResponse {
        challenge: ferry_proto::b64u::encode(&c.challenge),
        expires_at: c.expires_at,
    }))
}

/// Exchanges a signed challenge for an access token and a refresh token. The
/// certificate is checked like in the handshake; a device seen for the first time
/// is registered.
#[utoipa::path(
    post,
    path = "/v1/auth/token",
    tag = "auth",
    operation_id = "token",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "A token pair", body = TokenResponse),
        (status = 401, description = "Login refused (which check failed is not said)", body = super::error::ErrorBody),
    )
)]
pub(crate) async fn token(
    State(app): State<App>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let login = Login {
        user: key32(&req.user, "user")?,
        device: key32(&req.device, "device")?,
        cert: DeviceCertificate {
            issued_at: safe_int(req.cert.issued_at, "cert.issued_at")?,
            expires_at: safe_int(req.cert.expires_at, "cert.expires_at")?,
            sig: sig64(&req.cert.sig, "cert.sig")?,
        },
        challenge: key32(&req.challenge, "challenge")?,
        sig: sig64(&req.sig, "sig")?,
    };
    match app.auth.login(&login, app.clock.unix_ms()).await {
        Ok(p) => {
            count(&app, "issued");
            info!(device = %DeviceId(login.device), "REST login");
            Ok(Json(pair(p)))
        }
        Err(AuthError::Refused(reason)) => {
            refused(&app, reason);
            Err(ApiError::unauthorized("login refused"))
        }
        Err(AuthError::Store(e)) => Err(e.into()),
    }
}

/// Rotates a refresh token: returns a new pair, and the presented token is spent.
/// Presenting a spent token again revokes its whole family (every refresh token
/// and the access tokens issued with them).
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    operation_id = "refresh",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair", body = TokenResponse),
        (status = 401, description = "Unknown, expired, spent or revoked refresh token", body = super::error::ErrorBody),
    )
)]
pub(crate) async fn refresh(
    State(app): State<App>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    match app
        .auth
        .refresh(&req.refresh_token, app.clock.unix_ms())
        .await
    {
        Ok(p) => {
            count(&app, "refreshed");
            Ok(Json(pair(p)))
        }
        Err(AuthError::Refused(reason)) => {
            refused(&app, reason);
            if reason == Reason::Reused {
                count(&app, "reuse_detected");
                warn!("a spent refresh token was presented again; its family is revoked");
            }
            Err(ApiError::unauthorized(
                "the refresh token is invalid, expired, spent or revoked",
            ))
        }
        Err(AuthError::Store(e)) => Err(e.into()),
    }
}

/// Revokes the presented access token and its refresh family.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    operation_id = "logout",
    security(("bearer" = [])),
    responses((status = 204, description = "Logged out"))
)]
pub(crate) async fn logout(
    State(app): State<App>,
    AuthUser(id): AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    app.auth.logout(&id, app.clock.unix_ms()).await?;
    count(&app, "revoked");
    Ok(StatusCode::NO_CONTENT)
}
