//! Liveness, readiness and the Prometheus endpoint.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::schema::{LiveResponse, ReadyChecks, ReadyResponse};
use crate::app::App;

/// How long the database may take to answer a readiness probe.
const READY_DEADLINE: Duration = Duration::from_secs(2);
/// How long Redis may take to answer a readiness probe's `PING`.
const REDIS_DEADLINE: Duration = Duration::from_secs(1);

/// The process is up.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    operation_id = "live",
    responses((status = 200, description = "Alive", body = LiveResponse))
)]
pub async fn live() -> Response {
    Json(LiveResponse {
        status: "ok".into(),
    })
    .into_response()
}

/// Ready to serve: the database answers within the deadline and takes writes (no
/// append failed in the last 10 s without one succeeding since), its schema is the one
/// this binary needs (no pending, unknown or modified migration), and the server is
/// not shutting down. The body names what failed.
///
/// The probe goes through the database's circuit breaker: while it is open the
/// database check is `unavailable` at once, and the first probe after the open
/// period finds out whether the database is back. `checks.database_breaker` is the
/// breaker's state.
///
/// Redis (`[redis] url`) never makes an instance unready: the database is the truth,
/// Redis only carries notifications and shared limits, and one Redis outage must not
/// take every instance out of the load balancer at once. Its check is `ok` when it
/// answers a `PING` and the bus is subscribed, and `degraded` otherwise (limits are
/// then local, and live relay between instances resumes with a catch-up once Redis
/// is back).
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    operation_id = "ready",
    responses(
        (status = 200, description = "Ready", body = ReadyResponse),
        (status = 503, description = "Not ready; `failed` names the checks", body = ReadyResponse),
    )
)]
pub async fn ready(State(app): State<App>) -> Response {
    let db = match tokio::time::timeout(READY_DEADLINE, app.relay.ping()).await {
        // It answers, but refuses writes (a full disk, a read-only file).
        Ok(Ok(())) if app.relay.writes_failing() => "write_failing",
        Ok(Ok(())) => "ok",
        Ok(Err(_)) => "unavailable",
        Err(_) => "timeout",
    };
    let migrations = if !matches!(db, "ok" | "write_failing") {
        "unavailable"
    } else {
        match tokio::time::timeout(
            READY_DEADLINE,
            app.relay.migrate_status(&app.config.database.url),
        )
        .await
        {
            Ok(Ok(status)) if status.is_current() => "ok",
            Ok(Ok(status)) if !status.unknown.is_empty() => "unknown_version",
            Ok(Ok(status)) if status.known.iter().any(|m| !m.matches) => "modified",
            Ok(Ok(_)) => "pending",
            Ok(Err(_)) | Err(_) => "unavailable",
        }
    };
    let redis = match &app.config.redis_url {
        None => "not_configured",
        Some(url) => {
            let answers = matches!(
                tokio::time::timeout(REDIS_DEADLINE, redis_ping(&url.0)).await,
                Ok(Ok(()))
            );
            if answers && app.relay.bus_connected() {
                "ok"
            } else {
                "degraded"
            }
        }
    };
    let shutting_down = app.shutdown.is_cancelled();
    let mut failed = Vec::new();
    if db != "ok" {
        failed.push("database".to_string());
    }
    if migrations != "ok" {
        failed.push("migrations".to_string());
    }
    if shutting_down {
        failed.push("shutdown".to_string());
    }
    let ok = failed.is_empty();
    let body = ReadyResponse {
        status: if ok { "ready" } else { "not_ready" }.into(),
        checks: ReadyChecks {
            database: db.into(),
            database_breaker: app.relay.database_breaker().as_str().into(),
            migrations: migrations.into(),
            shutdown: if shutting_down { "in_progress" } else { "no" }.into(),
            redis: redis.into(),
        },
        failed,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// One `PING` on a fresh connection (a probe must not share the relay's
/// connections, or a stuck one would look healthy).
async fn redis_ping(url: &str) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async::<String>(&mut conn).await?;
    Ok(())
}

/// How long a scrape waits for the database's size before it answers without a
/// new value.
const DATABASE_SIZE_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /metrics`: Prometheus text format. The pool gauges and the database size
/// are sampled here (the size keeps its last value when the database does not
/// answer within a second).
pub async fn metrics(State(app): State<App>) -> Response {
    let (in_use, idle) = app.relay.pool_stats();
    let pool = &app.metrics.api.db_pool;
    pool.with_label_values(&["in_use"]).set(i64::from(in_use));
    pool.with_label_values(&["idle"]).set(i64::from(idle));
    if let Ok(Ok(Some(bytes))) =
        tokio::time::timeout(DATABASE_SIZE_TIMEOUT, app.relay.database_bytes()).await
    {
        app.metrics
            .retention
            .database_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
