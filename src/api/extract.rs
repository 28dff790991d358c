//! Extractors: JSON bodies, paths and queries whose rejections are [`ApiError`]s,
//! the authenticated caller ([`AuthUser`]) and admin keys ([`AdminRead`],
//! [`AdminWrite`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use tracing::{debug, info};

use super::error::ApiError;
use crate::app::App;
use crate::auth::{AuthError, Identity, Reason};
use crate::config::AdminScope;
use crate::limits::RateInfo;

/// Largest request body, in bytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// The rate-limit decision to report in `RateLimit-*` headers: the per-IP one, or
/// the per-token one once [`AuthUser`] ran. Put into the request by `finish`.
#[derive(Clone, Default)]
pub(crate) struct RateSlot(pub(crate) Arc<Mutex<Option<RateInfo>>>);

impl RateSlot {
    pub(crate) fn set(&self, info: RateInfo) {
        *self.0.lock().expect("rate slot lock") = Some(info);
    }

    pub(crate) fn get(&self) -> Option<RateInfo> {
        *self.0.lock().expect("rate slot lock")
    }
}

/// The client's address (no proxy headers are trusted); `0.0.0.0` when the request
/// did not come through a listener (in-process tests).
pub(crate) fn client_ip(parts_ext: &axum::http::Extensions) -> IpAddr {
    parts_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// A JSON body (`Content-Type: application/json`, at most [`MAX_BODY`] bytes),
/// deserialized strictly.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| {
                ApiError::payload_too_large(format!("the body exceeds {MAX_BODY} bytes"))
            })?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {}", short(&e))))
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// A serde error in one line, bounded in length (it may quote the input).
fn short(e: &impl std::fmt::Display) -> String {
    let mut s = e.to_string().replace('\n', " ");
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Path parameters; a malformed one is a 400.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| ApiError::bad_request(short(&e.body_text())))
    }
}

/// Query parameters; a malformed one is a 400.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::bad_request(short(&e.body_text())))
    }
}

/// The value of `Authorization: Bearer <token>`: `None` when absent; an error when
/// present but not a single bearer credential.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    let text = first.to_str().map_err(|_| ())?;
    let (scheme, token) = text.split_once(' ').ok_or(())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(());
    }
    Ok(Some(token))
}

/// The authenticated caller of a user endpoint: a verified, unrevoked access token
/// whose device is active. Every user endpoint acts on `identity.user` only.
pub struct AuthUser(pub Identity);

impl FromRequestParts<App> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let metrics = &app.metrics.api.auth_outcomes;
        let refuse = |reason: Reason| {
            metrics
                .with_label_values(&["refused", reason.metric_label()])
                .inc();
            debug!(reason = reason.metric_label(), "bearer token refused");
            ApiError::invalid_token(reason == Reason::Missing)
        };
        let token = match bearer(&parts.headers) {
            Ok(Some(t)) => t,
            Ok(None) => return Err(refuse(Reason::Missing)),
            Err(()) => return Err(refuse(Reason::Malformed)),
        };
        let id = match app.auth.authenticate(token, app.clock.unix_ms()).await {
            Ok(id) => id,
            Err(AuthError::Refused(reason)) => return Err(refuse(reason)),
            Err(AuthError::Store(e)) => return Err(ApiError::storage_unavailable(e)),
        };
        let info = app
            .rest_limits
            .per_token
            .check_info(&id.jti, app.clock.now())
            .await;
        if let Some(slot) = parts.extensions.get::<RateSlot>() {
            slot.set(info);
        }
        if let Some(wait) = info.retry_after {
            return Err(ApiError::rate_limited(
                "too many requests with this token",
                wait,
            ));
        }
        metrics.with_label_values(&["ok", "ok"]).inc();
        Ok(Self(id))
    }
}

/// An admin key with scope `read` or `write`.
pub struct AdminRead(pub String);

/// An admin key with scope `write`.
pub struct AdminWrite(pub String);

impl FromRequestParts<App> for AdminRead {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        admin(parts, app, AdminScope::Read).await.map(Self)
    }
}

impl FromRequestParts<App> for AdminWrite {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        admin(parts, app, AdminScope::Write).await.map(Self)
    }
}

/// The presented admin key: `X-Admin-Key`, or `Authorization: Bearer`.
fn presented_admin_key(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let mut values = headers.get_all("x-admin-key").iter();
    if let Some(v) = values.next() {
        if values.next().is_some() {
            return Err(());
        }
        return v.to_str().map(|s| Some(s.trim())).map_err(|_| ());
    }
    bearer(headers)
}

/// Checks the admin key: a blocked IP gets 429 before the key is even looked at;
/// a wrong or missing key counts as a failure of the IP (401, or 429 once over the
/// limit); a key without the scope gets 403. The key's name goes to the log.
async fn admin(parts: &Parts, app: &App, need: AdminScope) -> Result<String, ApiError> {
    let ip = client_ip(&parts.extensions);
    let failures = &app.metrics.api.admin_auth_failures;
    let limiter = &app.rest_limits.admin_failures;
    let now = app.clock.now();
    if let Err(wait) = limiter.peek(&ip, now).await {
        failures.with_label_values(&["rate_limited"]).inc();
        return Err(ApiError::rate_limited(
            "too many failed admin key attempts from this address",
            wait,
        ));
    }
    let found = match presented_admin_key(&parts.headers) {
        Ok(Some(key)) => app.auth.admin_keys().check(key),
        _ => None,
    };
    let Some(id) = found else {
        failures.with_label_values(&["invalid"]).inc();
        let info = limiter.check_info(&ip, now).await;
        if let Some(wait) = info.retry_after {
            failures.with_label_values(&["rate_limited"]).inc();
            return Err(ApiError::rate_limited(
                "too many failed admin key attempts from this address",
                wait,
            ));
        }
        info!(%ip, "admin API: missing or unknown key");
        return Err(ApiError::unauthorized(
            "a valid admin key is required (X-Admin-Key or Authorization: Bearer)",
        ));
    };
    if id.scope < need {
        failures.with_label_values(&["scope"]).inc();
        info!(key = %id.name, "admin API: key lacks the write scope");
        return Err(ApiError::forbidden("this admin key has read scope only"));
    }
    info!(key = %id.name, "admin API request");
    Ok(id.name)
}
