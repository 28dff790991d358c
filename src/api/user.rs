//! The user endpoints: `/v1/me`, `/v1/devices`, `/v1/events`. Each acts on the
//! token's user (`sub`) only; ids in paths and bodies are looked up inside that
//! user's data, so another user's device or event is simply not found.
//!
//! The operations are those of the WebSocket session (the [`crate::relay::Relay`]'s): same limits,
//! same rate limit, same group commit and live relay.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ferry_proto::b64u;
use ferry_proto::message::{
    DEFAULT_SYNC_LIMIT, MAX_KEY_LEN, MAX_SYNC_LIMIT, Publish, format_uuid, parse_uuid,
};
use serde_json::json;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use super::schema::{
    DeviceBody, DevicePath, DevicesResponse, EventBody, EventsQuery, EventsResponse, MeResponse,
    PublishBody, PublishRequest, PublishResponse, RevokeRequest, TruncatedBody, key32, safe_int,
    sig64,
};
use crate::app::App;
use crate::model::{AppendOutcome, DeviceId, DeviceRecord};
use crate::relay::{Prepared, PublishRefusal, RevokeError};

/// A device record as the API shows it.
pub(crate) fn device_body(d: &DeviceRecord, online: bool) -> DeviceBody {
    DeviceBody {
        device: b64u::encode(&d.device.0),
        online,
        created_at: d.created_at,
        last_seen: d.last_seen,
        cursor: d.cursor,
        revoked_at: d.revoked_at,
    }
}

/// Who the token belongs to.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "user",
    operation_id = "me",
    security(("bearer" = [])),
    responses((status = 200, description = "The token's user and device", body = MeResponse))
)]
pub(crate) async fn me(
    State(app): State<App>,
    AuthUser(id): AuthUser,
) -> Result<Json<MeResponse>, ApiError> {
    let head = app.relay.head(&id.user).await?;
    Ok(Json(MeResponse {
        user: id.user.to_string(),
        device: id.device.to_string(),
        head,
        token_expires_at: id.expires_at,
    }))
}

/// Every device of the user (the semantics of the WebSocket `devices`).
#[utoipa::path(
    get,
    path = "/v1/devices",
    tag = "user",
    operation_id = "listDevices",
    security(("bearer" = [])),
    responses((status = 200, description = "The user's devices", body = DevicesResponse))
)]
pub(crate) async fn devices(
    State(app): State<App>,
    AuthUser(id): AuthUser,
) -> Result<Json<DevicesResponse>, ApiError> {
    let list = app.relay.devices(&id.user).await?;
    Ok(Json(DevicesResponse {
        devices: list.iter().map(|(d, on)| device_body(d, *on)).collect(),
    }))
}

/// Revokes a device of the user with a revocation signed by the user key (the
/// rules of the WebSocket `revoke`: ±5 min, usable once). Its sessions close with
/// 4003, the others get `presence`, and its tokens stop working.
#[utoipa::path(
    delete,
    path = "/v1/devices/{device}",
    tag = "user",
    operation_id = "revokeDevice",
    security(("bearer" = [])),
    params(DevicePath),
    request_body = RevokeRequest,
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = "Bad signature, outside the time window, or used before", body = ErrorBody),
        (status = 404, description = "The user has no such device", body = ErrorBody),
    )
)]
pub(crate) async fn revoke_device(
    State(app): State<App>,
    AuthUser(id): AuthUser,
    ApiPath(path): ApiPath<DevicePath>,
    ApiJson(body): ApiJson<RevokeRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let device = DeviceId(key32(&path.device, "device")?);
    let ts = safe_int(body.ts, "ts")?;
    let sig = sig64(&body.sig, "sig")?;
    // Looked up among the caller's user's devices only.
    if !app.relay.has_device(&id.user, &device).await? {
        return Err(ApiError::not_found("no such device"));
    }
    match app.relay.revoke(&id.user, &device, ts, &sig).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(RevokeError::Refused) => Err(ApiError::forbidden("revocation refused")),
        Err(RevokeError::Replayed) => Err(ApiError::forbidden("revocation already used")),
        Err(RevokeError::UnknownDevice) => Err(ApiError::not_found("no such device")),
        Err(RevokeError::Store(e)) => Err(e.into()),
    }
}

/// One page of the user's log after a seq (the semantics of the WebSocket `sync`).
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "user",
    operation_id = "listEvents",
    security(("bearer" = [])),
    params(EventsQuery),
    responses((status = 200, description = "Events after `after`", body = EventsResponse))
)]
pub(crate) async fn events(
    State(app): State<App>,
    AuthUser(id): AuthUser,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventsResponse>, ApiError> {
    let after = safe_int(q.after.unwrap_or(0), "after")?;
    let limit = q.limit.unwrap_or(DEFAULT_SYNC_LIMIT);
    if !(1..=MAX_SYNC_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1..=1000"));
    }
    let page = app.relay.sync(&id.user, after, limit).await?;
    Ok(Json(EventsResponse {
        events: page
            .events
            .into_iter()
            .map(|e| EventBody {
                seq: e.seq,
                id: format_uuid(e.id.as_bytes()),
                device: b64u::encode(&e.device.0),
                ts: e.ts,
                payload: b64u::encode(&e.payload),
                key: e.key.as_deref().map(b64u::encode),
                ttl: e.ttl,
            })
            .collect(),
        head: page.head,
        more: page.more,
        truncated: page.truncated_oldest.map(|oldest| TruncatedBody { oldest }),
    }))
}

/// The rules of the WebSocket `publish` (`ferry_proto::message`), for the REST body.
fn to_publish(b: PublishBody) -> Result<Publish, ApiError> {
    let bad = ApiError::bad_request;
    let id = parse_uuid(&b.id).ok_or_else(|| bad("id must be a canonical lowercase UUID"))?;
    let payload = b64u::decode(&b.payload).map_err(|_| bad("payload must be base64url"))?;
    let key = match b.key {
        None => None,
        Some(k) => {
            let k = b64u::decode(&k).map_err(|_| bad("key must be base64url"))?;
            if k.is_empty() || k.len() > MAX_KEY_LEN {
                return Err(bad("key must be 1..=64 bytes"));
            }
            Some(k)
        }
    };
    let base = b.base.map(|v| safe_int(v, "base")).transpose()?;
    let ttl = b.ttl.map(|v| safe_int(v, "ttl")).transpose()?;
    if base.is_some() && key.is_none() {
        return Err(bad("base needs key"));
    }
    let ephemeral = b.ephemeral.unwrap_or(false);
    let to = match b.to {
        None => None,
        Some(_) if !ephemeral => return Err(bad("to needs ephemeral")),
        Some(list) => Some(
            list.iter()
                .map(|d| key32(d, "to[]"))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    if ephemeral && (key.is_some() || ttl.is_some()) {
        return Err(bad("ephemeral events take no key, base or ttl"));
    }
    Ok(Publish {
        id,
        payload,
        key,
        base,
        ttl,
        ephemeral,
        to,
    })
}

/// Publishes an event (the semantics of the WebSocket `publish`): answered once it
/// is stored durably, relayed live to the user's connected devices, idempotent by
/// `id`; with `key` and `base`, stored only if the key's newest event has seq `base`.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "user",
    operation_id = "publish",
    security(("bearer" = [])),
    request_body = PublishRequest,
    responses(
        (status = 200, description = "Stored (or a duplicate of a stored id), or relayed if ephemeral", body = PublishResponse),
        (status = 409, description = "`key`/`base` mismatch: nothing stored; `details` has the key's head", body = ErrorBody),
        (status = 413, description = "Payload larger than the limit", body = ErrorBody),
    )
)]
pub(crate) async fn publish(
    State(app): State<App>,
    AuthUser(id): AuthUser,
    ApiJson(body): ApiJson<PublishBody>,
) -> Result<Json<PublishResponse>, ApiError> {
    let p = to_publish(body)?;
    let event_id = format_uuid(&p.id);
    let ev = match app
        .relay
        .prepare_publish(id.user, id.device, p, app.clock.now())
        .await
    {
        Ok(Prepared::Durable(ev)) => ev,
        Ok(Prepared::Ephemeral { delivered }) => {
            return Ok(Json(PublishResponse {
                id: event_id,
                seq: None,
                ts: None,
                duplicate: false,
                ephemeral: true,
                delivered: Some(delivered),
            }));
        }
        Err(PublishRefusal::PayloadTooLarge(max)) => {
            return Err(ApiError::payload_too_large(format!(
                "payload exceeds {max} bytes"
            )));
        }
        Err(PublishRefusal::BadTtl(max)) => {
            return Err(ApiError::bad_request(format!(
                "ttl must be 1..={max} seconds"
            )));
        }
        Err(PublishRefusal::RateLimited(wait)) => {
            return Err(ApiError::rate_limited("publish rate exceeded", wait));
        }
    };
    let key = ev.key.clone();
    let ack = |seq, ts, duplicate| PublishResponse {
        id: event_id.clone(),
        seq: Some(seq),
        ts: Some(ts),
        duplicate,
        ephemeral: false,
        delivered: None,
    };
    match app.relay.commit(ev).await? {
        AppendOutcome::Stored { seq, ts } => Ok(Json(ack(seq, ts, false))),
        AppendOutcome::Duplicate { seq, ts } => Ok(Json(ack(seq, ts, true))),
        AppendOutcome::Conflict { key_head } => Err(ApiError::conflict(
            "the key's newest event is not at base; nothing was stored",
            json!({
                "id": event_id,
                "key": key.as_deref().map(b64u::encode).unwrap_or_default(),
                "head": key_head,
            }),
        )),
    }
}
