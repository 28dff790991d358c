//! The admin API, `/admin/v1/*`, served on the admin listener only (bind it to a
//! private interface): keys from `[[admin.keys]]`, scope `read` for the GET
//! endpoints and `write` for everything else. See [`super::extract::AdminRead`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tracing::info;

use super::error::{ApiError, ErrorBody};
use super::extract::{AdminRead, AdminWrite, ApiPath, ApiQuery};
use super::schema::{
    ConfigResponse, DisconnectResponse, EraseResponse, RetentionDeletedBody, RetentionErrorBody,
    RetentionRunQuery, RetentionRunResponse, RetentionStatusResponse, StatsResponse, UserBody,
    UserDetail, UserDevicePath, UserPath, UsersQuery, UsersResponse, key32,
};
use super::user::device_body;
use crate::app::App;
use crate::model::{DeviceId, UserId};
use crate::relay::UserView;

/// Largest page of `GET /admin/v1/users`.
const MAX_USERS_PAGE: u32 = 100;
/// Default page of `GET /admin/v1/users`.
const DEFAULT_USERS_PAGE: u32 = 50;
/// Cursor format version, so the encoding can change without misreading old ones.
const CURSOR_PREFIX: &str = "u1";

fn user_body(v: &UserView) -> UserBody {
    let s = &v.summary;
    UserBody {
        user: s.user.to_string(),
        created_at: s.created_at,
        head: s.head,
        pruned_through: s.pruned_through,
        devices: s.devices,
        revoked_devices: s.revoked_devices,
        last_seen: s.last_seen,
        live_sessions: v.live_sessions,
    }
}

/// Totals: users, devices, events, live sessions, database size.
#[utoipa::path(
    get,
    path = "/admin/v1/stats",
    tag = "admin",
    operation_id = "adminStats",
    security(("admin_key" = []), ("admin_bearer" = [])),
    responses((status = 200, description = "Totals", body = StatsResponse))
)]
pub(crate) async fn stats(
    State(app): State<App>,
    _key: AdminRead,
) -> Result<Json<StatsResponse>, ApiError> {
    let (s, live_sessions) = app.relay.stats().await?;
    Ok(Json(StatsResponse {
        users: s.users,
        devices: s.devices,
        active_devices: s.active_devices,
        events: s.events,
        live_sessions,
        database_bytes: s.database_bytes,
    }))
}

/// Users in key order, a page at a time (opaque cursor).
#[utoipa::path(
    get,
    path = "/admin/v1/users",
    tag = "admin",
    operation_id = "adminListUsers",
    security(("admin_key" = []), ("admin_bearer" = [])),
    params(UsersQuery),
    responses((status = 200, description = "A page of users", body = UsersResponse))
)]
pub(crate) async fn users(
    State(app): State<App>,
    _key: AdminRead,
    ApiQuery(q): ApiQuery<UsersQuery>,
) -> Result<Json<UsersResponse>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_USERS_PAGE);
    if !(1..=MAX_USERS_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1..=100"));
    }
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(UserId(
            c.strip_prefix(CURSOR_PREFIX)
                .and_then(|rest| ferry_proto::b64u::decode_array::<32>(rest).ok())
                .ok_or_else(|| ApiError::bad_request("invalid cursor"))?,
        )),
    };
    let mut page = app.relay.users_page(after.as_ref(), limit + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next_cursor = more
        .then(|| page.last())
        .flatten()
        .map(|v| format!("{CURSOR_PREFIX}{}", v.summary.user));
    Ok(Json(UsersResponse {
        users: page.iter().map(user_body).collect(),
        next_cursor,
    }))
}

/// One user and its devices.
#[utoipa::path(
    get,
    path = "/admin/v1/users/{user}",
    tag = "admin",
    operation_id = "adminGetUser",
    security(("admin_key" = []), ("admin_bearer" = [])),
    params(UserPath),
    responses(
        (status = 200, description = "The user", body = UserDetail),
        (status = 404, description = "Unknown user", body = ErrorBody),
    )
)]
pub(crate) async fn user(
    State(app): State<App>,
    _key: AdminRead,
    ApiPath(path): ApiPath<UserPath>,
) -> Result<Json<UserDetail>, ApiError> {
    let user = UserId(key32(&path.user, "user")?);
    let view = app
        .relay
        .user(&user)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    let devices = app.relay.devices(&user).await?;
    Ok(Json(UserDetail {
        user: user_body(&view),
        devices: devices.iter().map(|(d, on)| device_body(d, *on)).collect(),
    }))
}

/// Closes every live session of a user (close code 1001: devices reconnect).
#[utoipa::path(
    post,
    path = "/admin/v1/users/{user}/disconnect",
    tag = "admin",
    operation_id = "adminDisconnectUser",
    security(("admin_key" = []), ("admin_bearer" = [])),
    params(UserPath),
    responses(
        (status = 200, description = "Sessions closed", body = DisconnectResponse),
        (status = 404, description = "Unknown user", body = ErrorBody),
    )
)]
pub(crate) async fn disconnect(
    State(app): State<App>,
    AdminWrite(key): AdminWrite,
    ApiPath(path): ApiPath<UserPath>,
) -> Result<Json<DisconnectResponse>, ApiError> {
    let user = UserId(key32(&path.user, "user")?);
    let closed = app
        .relay
        .disconnect(&user)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    info!(key = %key, %user, closed, "admin: disconnected a user");
    Ok(Json(DisconnectResponse { closed }))
}

/// Revokes a device of a user (an operator's decision, no user signature): its
/// sessions close with 4003 and its tokens stop working.
#[utoipa::path(
    delete,
    path = "/admin/v1/users/{user}/devices/{device}",
    tag = "admin",
    operation_id = "adminRevokeDevice",
    security(("admin_key" = []), ("admin_bearer" = [])),
    params(UserDevicePath),
    responses(
        (status = 204, description = "Revoked (or already revoked)"),
        (status = 404, description = "The user has no such device", body = ErrorBody),
    )
)]
pub(crate) async fn revoke_device(
    State(app): State<App>,
    AdminWrite(key): AdminWrite,
    ApiPath(path): ApiPath<UserDevicePath>,
) -> Result<impl IntoResponse, ApiError> {
    let user = UserId(key32(&path.user, "user")?);
    let device = DeviceId(key32(&path.device, "device")?);
    if !app.relay.force_revoke(&user, &device).await? {
        return Err(ApiError::not_found("no such device"));
    }
    info!(key = %key, %user, %device, "admin: revoked a device");
    Ok(StatusCode::NO_CONTENT)
}

/// Erases everything stored for a user (events, devices, tokens, challenges) and
/// closes its sessions. A device with a valid certificate can still connect again
/// later and starts a new, empty log.
#[utoipa::path(
    delete,
    path = "/admin/v1/users/{user}",
    tag = "admin",
    operation_id = "adminEraseUser",
    security(("admin_key" = []), ("admin_bearer" = [])),
    params(UserPath),
    responses(
        (status = 200, description = "What was erased", body = EraseResponse),
        (status = 404, description = "Unknown user", body = ErrorBody),
    )
)]
pub(crate) async fn erase_user(
    State(app): State<App>,
    AdminWrite(key): AdminWrite,
    ApiPath(path): ApiPath<UserPath>,
) -> Result<Json<EraseResponse>, ApiError> {
    let user = UserId(key32(&path.user, "user")?);
    let erased = app
        .relay
        .erase_user(&user)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    let counts = erased.counts;
    info!(key = %key, %user, events = counts.events, devices = counts.devices, "admin: erased a user");
    Ok(Json(EraseResponse {
        events: counts.events,
        devices: counts.devices,
        refresh_tokens: counts.refresh_tokens,
        revocations: counts.revocations,
        challenges: counts.challenges,
        sessions_closed: erased.sessions_closed,
    }))
}

/// The effective configuration, secrets redacted.
#[utoipa::path(
    get,
    path = "/admin/v1/config",
    tag = "admin",
    operation_id = "adminConfig",
    security(("admin_key" = []), ("admin_bearer" = [])),
    responses((status = 200, description = "The configuration as TOML", body = ConfigResponse))
)]
pub(crate) async fn config(State(app): State<App>, _key: AdminRead) -> Json<ConfigResponse> {
    Json(ConfigResponse {
        config: app.config.to_redacted_toml(),
    })
}

fn retention_run_body(r: &crate::relay::retention::Report) -> RetentionRunResponse {
    let d = &r.deleted;
    RetentionRunResponse {
        dry_run: r.dry_run,
        skipped: r.skipped,
        started_at: r.started_at,
        duration_ms: r.duration.as_millis() as u64,
        deleted: RetentionDeletedBody {
            expired: d.expired,
            age: d.age,
            count: d.count,
            compacted: d.compacted,
            inactive_device: d.inactive_device,
            auth: d.auth,
        },
    }
}

/// The retention job: its last pass on this instance, next run and last error.
#[utoipa::path(
    get,
    path = "/admin/v1/retention",
    tag = "admin",
    operation_id = "adminRetentionStatus",
    security(("admin_key" = []), ("admin_bearer" = [])),
    responses((status = 200, description = "The retention job's status", body = RetentionStatusResponse))
)]
pub(crate) async fn retention_status(
    State(app): State<App>,
    _key: AdminRead,
) -> Json<RetentionStatusResponse> {
    let s = app.relay.retention_status();
    Json(RetentionStatusResponse {
        interval_ms: app.config.retention.interval.as_millis() as u64,
        running: s.running,
        last_run: s.last.as_ref().map(retention_run_body),
        last_success_at: s.last_success,
        next_run_at: s.next_run,
        last_error: s
            .last_error
            .map(|(at, message)| RetentionErrorBody { at, message }),
    })
}

/// Runs one retention pass now with the configured policies and answers when it is
/// done (`dry_run=true`: counts only). 409 while another pass holds the lock (on
/// this or another instance).
#[utoipa::path(
    post,
    path = "/admin/v1/retention/run",
    tag = "admin",
    operation_id = "adminRetentionRun",
    security(("admin_key" = []), ("admin_bearer" = [])),
    params(RetentionRunQuery),
    responses(
        (status = 200, description = "What the pass deleted", body = RetentionRunResponse),
        (status = 409, description = "Another pass is running", body = ErrorBody),
        (status = 500, description = "A storage error during the pass", body = ErrorBody),
        (status = 503, description = "The database could not be reached during the pass", body = ErrorBody),
    )
)]
pub(crate) async fn retention_run(
    State(app): State<App>,
    AdminWrite(key): AdminWrite,
    ApiQuery(q): ApiQuery<RetentionRunQuery>,
) -> Result<Json<RetentionRunResponse>, ApiError> {
    let dry_run = q.dry_run.unwrap_or(false);
    let report = app
        .relay
        .run_retention(dry_run)
        .await
        .map_err(|failed| ApiError::from(failed.error))?;
    if report.skipped {
        return Err(ApiError::conflict(
            "another retention pass is running",
            serde_json::json!({}),
        ));
    }
    info!(
        key = %key,
        dry_run,
        deleted = report.deleted.total(),
        "admin: retention run"
    );
    Ok(Json(retention_run_body(&report)))
}
