//! The middleware every HTTP request goes through (`finish`): a request id
//! (accepted from `x-request-id` when sane, else generated; echoed back) and a
//! tracing span carrying it, so every log line of the request names it; the per-IP
//! rate limit with `RateLimit-*` headers; the one error shape for every error
//! response; security headers; and the HTTP metrics, labelled by route template.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{Instrument as _, info, info_span, warn};

use super::error::{ApiError, ErrorBody, ErrorObject, Rendered, code_for};
use super::extract::{RateSlot, client_ip};
use crate::app::App;
use crate::telemetry::trace;

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest non-JSON error body read to reuse as the message.
const MAX_PLAIN_BODY: usize = 4096;

/// The request's id, as the error renderer and handlers see it.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Whether `finish` applies the per-IP limit (the public listener) or not (admin).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PerIpLimit(pub(crate) bool);

/// A client-supplied request id is used when it is 1–64 characters of
/// `[A-Za-z0-9._:-]`; anything else is replaced.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        })
        .map_or_else(crate::auth::random_b64u::<12>, str::to_owned)
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Routes the per-IP REST limit does not cover: the WebSocket upgrade (it has its
/// own handshake limit) and health probes.
fn exempt(route: &str) -> bool {
    route == "/v1/ws" || route.starts_with("/health/")
}

/// Routes that health checkers and metrics scrapers call: not traced.
fn probe(route: &str) -> bool {
    route.starts_with("/health/") || route == "/metrics"
}

/// The middleware. See the module docs.
pub(crate) async fn finish(
    State((app, per_ip)): State<(App, PerIpLimit)>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request_id(req.headers());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = method_label(req.method());
    let span = info_span!("http", request_id = %id, method, route = %route);
    // Probes and scrapes come every few seconds from machines, not users: no trace.
    let traced = if probe(&route) {
        tracing::Span::none()
    } else {
        trace::http_request(method, &route)
    };
    let slot = RateSlot::default();
    req.extensions_mut().insert(slot.clone());
    req.extensions_mut().insert(RequestId(id.clone()));
    let ip = client_ip(req.extensions());

    let resp = async {
        if per_ip.0 && !exempt(&route) {
            let info = app
                .rest_limits
                .per_ip
                .check_info(&ip, app.clock.now())
                .await;
            slot.set(info);
            if let Some(wait) = info.retry_after {
                return ApiError::rate_limited("too many requests from this address", wait)
                    .into_response();
            }
        }
        next.run(req).await
    }
    .instrument(span.clone())
    .instrument(traced.clone())
    .await;

    let mut resp = render_error(resp, &id, &span).await;
    let status = resp.status();
    trace::record_status(&traced, status.as_u16());
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, v);
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        security_headers(headers);
    }
    if let Some(info) = slot.get() {
        headers.insert("ratelimit-limit", HeaderValue::from(info.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(info.remaining));
        let reset = info.reset.as_secs() + u64::from(info.reset.subsec_nanos() > 0);
        headers.insert("ratelimit-reset", HeaderValue::from(reset));
    }

    let elapsed = started.elapsed();
    let m = &app.metrics.api;
    m.requests
        .with_label_values(&[route.as_str(), method, status.as_str()])
        .inc();
    m.request_seconds
        .with_label_values(&[route.as_str(), method, status.as_str()])
        .observe(elapsed.as_secs_f64());
    info!(
        parent: &span,
        status = status.as_u16(),
        latency_us = elapsed.as_micros() as u64,
        "request"
    );
    resp
}

fn security_headers(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, name: HeaderName, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    );
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    // Tokens, keys and user data: never stored by a cache, unless a handler said
    // otherwise (the public discovery documents).
    set(h, header::CACHE_CONTROL, "no-store");
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Gives every error response the one JSON shape. An [`ApiError`] is rendered from
/// its extension; any other error response (axum's 404/405, the body limit's 413, a
/// timeout) is rewritten, keeping its headers (`Allow`) and, when it was short
/// plain text, its message. JSON error bodies made on purpose (readiness) are kept.
async fn render_error(resp: Response, id: &str, span: &tracing::Span) -> Response {
    let status = resp.status();
    let rendered = resp.extensions().get::<Rendered>().cloned();
    if rendered.is_none()
        && (!(status.is_client_error() || status.is_server_error()) || is_json(resp.headers()))
    {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let (code, message, details) = match rendered {
        Some(r) => {
            if let Some(internal) = &r.internal {
                warn!(parent: span, code = r.code, error = %internal, "request failed");
            }
            (r.code, r.message.into_owned(), r.details)
        }
        None => {
            let text = axum::body::to_bytes(body, MAX_PLAIN_BODY)
                .await
                .ok()
                .and_then(|b| String::from_utf8(b.to_vec()).ok())
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty());
            let message = text.unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase()
            });
            (code_for(status), message, None)
        }
    };
    let body = ErrorBody {
        error: ErrorObject {
            code: code.to_string(),
            message,
            request_id: id.to_string(),
            details,
        },
    };
    let bytes = serde_json::to_vec(&body).expect("error bodies serialize");
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(bytes))
}
