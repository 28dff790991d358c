//! Liveness, readiness and the Prometheus endpoint.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;

/// How long the database may take to answer a readiness probe.
const READY_DEADLINE: Duration = Duration::from_secs(2);

/// `GET /health/live`: the process is up.
pub async fn live() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /health/ready`: the database answers within the deadline and the server
/// is not shutting down.
pub async fn ready(State(app): State<App>) -> Response {
    let db = match tokio::time::timeout(READY_DEADLINE, app.store.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(_)) => "unavailable",
        Err(_) => "timeout",
    };
    let shutting_down = app.shutdown.is_cancelled();
    let ok = db == "ok" && !shutting_down;
    let body = json!({
        "status": if ok { "ready" } else { "not_ready" },
        "checks": { "database": db, "shutdown": if shutting_down { "in_progress" } else { "no" } },
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
