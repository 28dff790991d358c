//! Requests inside the sealed channel: decode, act, reply.
//!
//! Everything here acts for the session's authenticated user: no request names a
//! user, so no request can reach another user's data.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ferry_proto::CloseCode;
use ferry_proto::b64u;
use ferry_proto::keys;
use ferry_proto::message::{
    ClientMessage, DeviceInfo, ErrorCode, Publish, Request, Rid, ServerMessage, Truncated,
    format_uuid,
};
use futures_util::future::BoxFuture;

use crate::app::{App, unix_ms};
use crate::relay::writer::event_json;
use crate::store::{AppendOutcome, DeviceId, NewEvent, RevokeOutcome, UserId};

/// How far a revocation's `ts` may be from the server clock.
pub(crate) const REVOKE_WINDOW_MS: i64 = 5 * 60 * 1000;
/// Rate-limit refusals tolerated in [`ABUSE_WINDOW`] beyond the burst before 4008.
const ABUSE_SLACK: usize = 20;
const ABUSE_WINDOW: Duration = Duration::from_secs(10);

/// What one session needs to answer requests.
pub(super) struct Ctx {
    pub(super) app: App,
    pub(super) user: UserId,
    pub(super) device: DeviceId,
    pub(super) refusals: VecDeque<Instant>,
}

/// What to send back, and whether the request counted as a protocol error.
#[derive(Default)]
pub(super) struct Replies {
    pub(super) messages: Vec<Vec<u8>>,
    pub(super) protocol_error: bool,
    pub(super) close: Option<CloseCode>,
}

/// A request's outcome: now, or after a commit.
pub(super) enum Action {
    /// Reply at once.
    Now(Replies),
    /// Reply when the future resolves (a publish waiting for its commit); the
    /// session keeps reading meanwhile.
    Later(BoxFuture<'static, Replies>),
}

impl Replies {
    pub(super) fn one(msg: ServerMessage) -> Self {
        Self {
            messages: vec![msg.to_json()],
            ..Self::default()
        }
    }

    fn none() -> Self {
        Self::default()
    }
}

fn error(app: &App, rid: Option<Rid>, code: ErrorCode, message: impl Into<String>) -> Replies {
    app.metrics
        .request_errors
        .with_label_values(&[code.as_str()])
        .inc();
    Replies {
        messages: vec![ServerMessage::error(rid, code, message).to_json()],
        protocol_error: matches!(
            code,
            ErrorCode::BadRequest
                | ErrorCode::UnknownType
                | ErrorCode::PayloadTooLarge
                | ErrorCode::Forbidden
        ),
        close: None,
    }
}

impl Ctx {
    pub(super) async fn handle(&mut self, plaintext: &[u8]) -> Action {
        let req = match Request::decode(plaintext) {
            Ok(r) => r,
            Err(e) => return Action::Now(error(&self.app, e.rid, e.code, e.message)),
        };
        let rid = req.rid;
        Action::Now(match req.body {
            ClientMessage::Publish(p) => return self.publish(rid, p),
            ClientMessage::Sync { after, limit } => self.sync(rid, after, limit).await,
            ClientMessage::Cursor { seq } => self.cursor(rid, seq).await,
            ClientMessage::Devices => self.devices(rid).await,
            ClientMessage::Revoke { device, ts, sig } => {
                self.revoke(rid, DeviceId(device), ts, sig).await
            }
            ClientMessage::Ping => Replies::one(ServerMessage::Pong {
                rid,
                server_time: unix_ms(),
            }),
            ClientMessage::Token => error(
                &self.app,
                rid,
                ErrorCode::Forbidden,
                "token issuance is not enabled",
            ),
            _ => error(
                &self.app,
                rid,
                ErrorCode::UnknownType,
                "unknown message type",
            ),
        })
    }

    fn publish(&mut self, rid: Option<Rid>, p: Publish) -> Action {
        let app = &self.app;
        let limits = &app.config.limits;
        if p.payload.len() > limits.max_payload {
            return Action::Now(error(
                app,
                rid,
                ErrorCode::PayloadTooLarge,
                format!("payload exceeds {} bytes", limits.max_payload),
            ));
        }
        if p.ttl
            .is_some_and(|t| t == 0 || t > limits.max_ttl.as_secs())
        {
            return Action::Now(error(
                app,
                rid,
                ErrorCode::BadRequest,
                format!("ttl must be 1..={} seconds", limits.max_ttl.as_secs()),
            ));
        }
        let now = Instant::now();
        if let Err(wait) = app.publish_rate.check(&self.device, now) {
            app.metrics.rate_limited.inc();
            while self
                .refusals
                .front()
                .is_some_and(|t| now.duration_since(*t) > ABUSE_WINDOW)
            {
                self.refusals.pop_front();
            }
            self.refusals.push_back(now);
            let mut r = Replies::one(ServerMessage::Error {
                rid,
                code: ErrorCode::RateLimited,
                message: "publish rate exceeded".into(),
                retry_after_ms: Some(wait.as_millis().max(1) as u64),
            });
            if self.refusals.len() > app.config.limits.burst as usize + ABUSE_SLACK {
                r.close = Some(CloseCode::RateLimited);
            }
            return Action::Now(r);
        }
        let ev = NewEvent {
            user: self.user,
            id: uuid::Uuid::from_bytes(p.id),
            device: self.device,
            payload: p.payload,
            key: p.key,
            base: p.base,
            ttl: p.ttl,
            ts: unix_ms(),
        };
        let id = format_uuid(&p.id);
        if p.ephemeral {
            let delivered = self.relay_ephemeral(&ev, p.to.as_deref());
            return Action::Now(Replies::one(ServerMessage::Ack {
                rid,
                id,
                seq: None,
                ts: None,
                duplicate: false,
                ephemeral: true,
                delivered: Some(delivered),
            }));
        }
        let writer = app.writer.clone();
        let app = app.clone();
        let key = ev.key.clone();
        Action::Later(Box::pin(async move {
            match writer.append(ev).await {
                Ok(AppendOutcome::Stored { seq, ts }) => Replies::one(ack(rid, id, seq, ts, false)),
                Ok(AppendOutcome::Duplicate { seq, ts }) => {
                    Replies::one(ack(rid, id, seq, ts, true))
                }
                Ok(AppendOutcome::Conflict { key_head }) => Replies::one(ServerMessage::Conflict {
                    rid,
                    id,
                    key: key.as_deref().map(b64u::encode).unwrap_or_default(),
                    head: key_head,
                }),
                Err(_) => {
                    app.metrics
                        .request_errors
                        .with_label_values(&["unavailable"])
                        .inc();
                    Replies::one(ServerMessage::error(
                        rid,
                        ErrorCode::Unavailable,
                        "storage unavailable; retry with the same id",
                    ))
                }
            }
        }))
    }

    /// Relays an ephemeral event to the user's other live sessions (or those in
    /// `to`); returns how many it was queued for.
    fn relay_ephemeral(&self, ev: &NewEvent, to: Option<&[[u8; 32]]>) -> u64 {
        let msg = event_json(ev, None, ev.ts);
        let mut delivered = 0;
        self.app.hub.for_each_session(&self.user, |s| {
            if s.device() == &self.device || to.is_some_and(|to| !to.contains(&s.device().0)) {
                return;
            }
            if s.deliver(&msg) {
                delivered += 1;
            }
        });
        self.app.metrics.deliveries.inc_by(delivered);
        delivered
    }

    async fn sync(&self, rid: Option<Rid>, after: u64, limit: u32) -> Replies {
        match self
            .app
            .store
            .events_after(&self.user, after, limit, unix_ms())
            .await
        {
            Ok(page) => {
                self.app.metrics.sync_pages.inc();
                let events = page
                    .events
                    .into_iter()
                    .map(|e| ferry_proto::message::EventMsg {
                        seq: Some(e.seq),
                        id: format_uuid(e.id.as_bytes()),
                        device: b64u::encode(&e.device.0),
                        ts: e.ts,
                        payload: b64u::encode(&e.payload),
                        key: e.key.as_deref().map(b64u::encode),
                        ttl: e.ttl,
                        ephemeral: false,
                    })
                    .collect();
                Replies::one(ServerMessage::Events {
                    rid,
                    events,
                    head: page.head,
                    more: page.more,
                    truncated: page.truncated_oldest.map(|oldest| Truncated { oldest }),
                })
            }
            Err(_) => error(
                &self.app,
                rid,
                ErrorCode::Unavailable,
                "storage unavailable; retry",
            ),
        }
    }

    async fn cursor(&self, rid: Option<Rid>, seq: u64) -> Replies {
        match self
            .app
            .store
            .set_cursor(&self.user, &self.device, seq)
            .await
        {
            Ok(()) => Replies::none(),
            Err(_) => error(
                &self.app,
                rid,
                ErrorCode::Unavailable,
                "storage unavailable; retry",
            ),
        }
    }

    async fn devices(&self, rid: Option<Rid>) -> Replies {
        let records = match self.app.store.devices(&self.user).await {
            Ok(r) => r,
            Err(_) => {
                return error(
                    &self.app,
                    rid,
                    ErrorCode::Unavailable,
                    "storage unavailable; retry",
                );
            }
        };
        let online: Vec<DeviceId> = self
            .app
            .hub
            .sessions(&self.user)
            .iter()
            .map(|s| *s.device())
            .collect();
        let devices = records
            .into_iter()
            .map(|d| DeviceInfo {
                device: b64u::encode(&d.device.0),
                online: online.contains(&d.device),
                created_at: d.created_at,
                last_seen: d.last_seen,
                cursor: d.cursor,
                revoked_at: d.revoked_at,
            })
            .collect();
        Replies::one(ServerMessage::Devices { rid, devices })
    }

    async fn revoke(&self, rid: Option<Rid>, device: DeviceId, ts: u64, sig: [u8; 64]) -> Replies {
        let app = &self.app;
        let now = unix_ms();
        let user_key = match keys::parse_identity_key(&self.user.0) {
            Ok(k) => k,
            Err(_) => return error(app, rid, ErrorCode::Forbidden, "revocation refused"),
        };
        let in_window = i64::try_from(ts).is_ok_and(|ts| (ts - now).abs() <= REVOKE_WINDOW_MS);
        if !in_window || keys::verify_revocation(&user_key, &device.0, ts, &sig).is_err() {
            return error(app, rid, ErrorCode::Forbidden, "revocation refused");
        }
        match app
            .store
            .revoke_device(&self.user, &device, ts as i64, &sig, now)
            .await
        {
            Ok(RevokeOutcome::Revoked) => {
                revoked(app, &self.user, &device, now);
                Replies::one(ServerMessage::Ok { rid })
            }
            Ok(RevokeOutcome::Replayed) => {
                error(app, rid, ErrorCode::Forbidden, "revocation already used")
            }
            Ok(RevokeOutcome::UnknownDevice) => {
                error(app, rid, ErrorCode::BadRequest, "unknown device")
            }
            Err(_) => error(
                app,
                rid,
                ErrorCode::Unavailable,
                "storage unavailable; retry",
            ),
        }
    }
}

fn ack(rid: Option<Rid>, id: String, seq: u64, ts: i64, duplicate: bool) -> ServerMessage {
    ServerMessage::Ack {
        rid,
        id,
        seq: Some(seq),
        ts: Some(ts),
        duplicate,
        ephemeral: false,
        delivered: None,
    }
}

/// After a revocation is stored: close the device's sessions with 4003 and tell
/// the user's other sessions.
pub(crate) fn revoked(app: &App, user: &UserId, device: &DeviceId, now: i64) {
    app.hub.close_device(user, device, CloseCode::Revoked);
    presence(app, user, device, false, true, now);
}

/// Sends `presence` to every live session of `user` except `device`'s own.
pub(crate) fn presence(
    app: &App,
    user: &UserId,
    device: &DeviceId,
    online: bool,
    revoked: bool,
    ts: i64,
) {
    let mut msg = None;
    app.hub.for_each_session(user, |s| {
        if s.device() == device {
            return;
        }
        let m = msg.get_or_insert_with(|| {
            std::sync::Arc::<[u8]>::from(
                ServerMessage::Presence {
                    device: b64u::encode(&device.0),
                    online,
                    ts,
                    revoked,
                }
                .to_json(),
            )
        });
        s.deliver(m);
    });
}
