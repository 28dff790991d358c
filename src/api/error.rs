//! The one error shape of the HTTP API:
//! `{"error":{"code","message","request_id"[,"details"]}}`.
//!
//! Handlers and extractors return [`ApiError`]. Its `IntoResponse` sets the status
//! and headers and attaches the error as a response extension; the outermost
//! middleware (`middleware::finish`) renders the body, because only it knows the
//! request id. The same middleware turns every other error response (axum's 404,
//! 405, body-limit 413, timeouts) into this shape, so no error ever leaves in
//! another form. Internal details are logged there and never sent.

use std::borrow::Cow;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::relay::StoreError;

/// Every error response's body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    /// A stable machine-readable code: `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `conflict`, `payload_too_large`,
    /// `unsupported_media_type`, `rate_limited`, `unavailable`, `timeout`, `internal`.
    pub code: String,
    /// A human-readable explanation for the client developer.
    pub message: String,
    /// The request's id (also in the `x-request-id` response header): quote it when
    /// reporting a problem.
    pub request_id: String,
    /// Extra facts for some codes (`conflict`: the event id, key and key head;
    /// `unavailable` while the server fails fast on a database that is down:
    /// `retry_after_ms`, also in `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// An error as a handler returns it (boxed: it travels in every `Result`).
#[derive(Debug, Clone)]
pub struct ApiError(Box<Inner>);

#[derive(Debug, Clone)]
struct Inner {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    details: Option<serde_json::Value>,
    retry_after: Option<Duration>,
    challenge: Option<&'static str>,
    internal: Option<String>,
}

/// What `finish` needs to render an [`ApiError`] (a response extension).
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    pub(crate) code: &'static str,
    pub(crate) message: Cow<'static, str>,
    pub(crate) details: Option<serde_json::Value>,
    pub(crate) internal: Option<String>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self(Box::new(Inner {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
            challenge: None,
            internal: None,
        }))
    }

    /// 400: the request is malformed or breaks a rule.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 for a bearer token (with `WWW-Authenticate: Bearer …`). The message never
    /// says which check failed.
    pub fn invalid_token(missing: bool) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            if missing {
                "an access token is required (Authorization: Bearer …)"
            } else {
                "the access token is invalid, expired or revoked"
            },
        );
        e.0.challenge = Some(if missing {
            "Bearer realm=\"ferry\""
        } else {
            "Bearer realm=\"ferry\", error=\"invalid_token\""
        });
        e
    }

    /// 401 with a message of its own (logins, refresh, admin keys).
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 with details.
    pub fn conflict(message: impl Into<Cow<'static, str>>, details: serde_json::Value) -> Self {
        let mut e = Self::new(StatusCode::CONFLICT, "conflict", message);
        e.0.details = Some(details);
        e
    }

    /// 413.
    pub fn payload_too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 415.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        )
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(message: impl Into<Cow<'static, str>>, retry_after: Duration) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        e.0.retry_after = Some(retry_after);
        e
    }

    /// 503: storage failed; the detail is logged, not sent.
    pub fn unavailable(internal: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "storage is unavailable; retry later",
        );
        e.0.retry_after = Some(Duration::from_secs(1));
        e.0.internal = Some(internal.to_string());
        e
    }

    /// 503 for a storage error of any kind: [`Self::unavailable`], and while the
    /// database's circuit breaker is open ([`StoreError::CircuitOpen`]) with its wait
    /// in `Retry-After` (seconds, rounded up) and `details.retry_after_ms`.
    pub fn storage_unavailable(e: StoreError) -> Self {
        let wait = e.retry_after();
        let mut err = Self::unavailable(e);
        if let Some(wait) = wait {
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            err.0.retry_after = Some(wait);
            err.0.details = Some(serde_json::json!({ "retry_after_ms": ms }));
        }
        err
    }

    /// 500: a bug or an unexpected state; the detail is logged, not sent.
    pub fn internal(internal: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        );
        e.0.internal = Some(internal.to_string());
        e
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The code.
    pub fn code(&self) -> &'static str {
        self.0.code
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            e if e.is_unavailable() => Self::storage_unavailable(e),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = *self.0;
        let mut resp = e.status.into_response();
        let headers = resp.headers_mut();
        if let Some(wait) = e.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if let Some(c) = e.challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        resp.extensions_mut().insert(Rendered {
            code: e.code,
            message: e.message,
            details: e.details,
            internal: e.internal,
        });
        resp
    }
}

/// The code for an error status that did not come from an [`ApiError`].
pub(crate) fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => "timeout",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}
