//! `GET /v1/ws`: checks the upgrade request itself, answers 101, and hands the raw
//! upgraded IO to the session, which runs tokio-tungstenite with our own
//! `WebSocketConfig` (small buffers, bounded write buffer, `max_frame_size =
//! max_message_size`), so typed errors let the session send 1009 itself.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::debug;

use crate::app::App;
use crate::net::ConnSlot;

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a HeaderValue> {
    let mut it = headers.get_all(name).iter();
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

/// Why an upgrade request is refused (400), in words for the client developer.
fn check_upgrade(req: &Request) -> Result<HeaderValue, &'static str> {
    if req.method() != Method::GET {
        return Err("WebSocket upgrade needs GET");
    }
    if req.version() != Version::HTTP_11 {
        return Err("WebSocket upgrade needs HTTP/1.1");
    }
    let h = req.headers();
    if !header_has_token(h, header::CONNECTION, "upgrade")
        || !header_has_token(h, header::UPGRADE, "websocket")
    {
        return Err("missing Connection: upgrade / Upgrade: websocket");
    }
    match single(h, "sec-websocket-version") {
        Some(v) if v == "13" => {}
        _ => return Err("Sec-WebSocket-Version must be 13"),
    }
    let key = single(h, "sec-websocket-key").ok_or("exactly one Sec-WebSocket-Key is required")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .map_err(|_| "Sec-WebSocket-Key is not base64")?;
    if decoded.len() != 16 {
        return Err("Sec-WebSocket-Key must encode 16 bytes");
    }
    Ok(key.clone())
}

fn plain(status: StatusCode, msg: &'static str) -> Response {
    (status, msg).into_response()
}

/// The upgrade handler.
pub async fn upgrade(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    let key = match check_upgrade(&req) {
        Ok(k) => k,
        Err(why) => return plain(StatusCode::BAD_REQUEST, why),
    };
    if app.shutdown.is_cancelled() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if let Err(wait) = app.handshake_rate.check(&peer.ip(), app.clock.now()).await {
        app.metrics
            .connections_refused
            .with_label_values(&["handshake_rate"])
            .inc();
        let secs = wait.as_secs().max(1).to_string();
        let mut resp = plain(
            StatusCode::TOO_MANY_REQUESTS,
            "too many handshakes from this address",
        );
        if let Ok(v) = HeaderValue::from_str(&secs) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let slot = req.extensions_mut().remove::<ConnSlot>();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let accept = derive_accept_key(key.as_bytes());
    let upgraded = async move {
        match on_upgrade.await {
            Ok(upgraded) => Some(TokioIo::new(upgraded)),
            Err(e) => {
                debug!(%peer, error = %e, "upgrade failed");
                None
            }
        }
    };
    // The session's future is the task's: nothing wraps it (every byte of a task
    // stays allocated for the whole session).
    app.tracker
        .spawn(crate::session::run(upgraded, peer, app.clone(), slot));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .expect("static response parts are valid")
}
