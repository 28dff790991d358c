//! Requests inside the sealed channel: decode, act, reply.
//!
//! Everything here acts for the session's authenticated user: no request names a
//! user, so no request can reach another user's data.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ferry_proto::CloseCode;
use ferry_proto::b64u;
use ferry_proto::message::{
    ClientMessage, DeviceInfo, ErrorCode, Publish, Request, Rid, ServerMessage, Truncated,
    format_uuid,
};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tracing::{Instrument as _, warn};

use crate::app::App;
use crate::model::{AppendOutcome, DeviceId, UserId};
use crate::relay::{Committing, Prepared, PublishRefusal, RevokeError, StoreError};
use crate::telemetry::trace;

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
    /// The seq of the device's own stored event these messages ack.
    pub(super) own: Option<u64>,
    pub(super) protocol_error: bool,
    pub(super) close: Option<CloseCode>,
}

/// A request's outcome: now, or after a commit.
pub(super) enum Action {
    /// Reply at once.
    Now(Replies),
    /// Reply when the publish's commit is done; the session keeps reading meanwhile.
    Later(Pending),
}

/// A publish waiting for its commit, with what its reply needs. A session keeps
/// these in a queue in the order the device sent them and polls the oldest
/// ([`poll_oldest`]): the writer answers a session's publishes in that order.
pub(super) struct Pending {
    committing: Committing,
    rid: Option<Rid>,
    id: String,
    key: Option<Vec<u8>>,
    /// The publish's span, which lasts until the durable outcome.
    span: tracing::Span,
}

impl Pending {
    /// Whether it still waits for room in the writer's queue: the session's next
    /// publish then waits behind it.
    pub(super) fn waiting(&self) -> bool {
        self.committing.is_waiting()
    }

    fn replies(self, app: &App, result: Result<AppendOutcome, StoreError>) -> Replies {
        let Self {
            rid, id, key, span, ..
        } = self;
        trace::record_append(&span, &result);
        match result {
            Ok(AppendOutcome::Stored { seq, ts }) => Replies {
                own: Some(seq),
                ..Replies::one(ack(rid, id, seq, ts, false))
            },
            Ok(AppendOutcome::Duplicate { seq, ts }) => Replies {
                own: Some(seq),
                ..Replies::one(ack(rid, id, seq, ts, true))
            },
            Ok(AppendOutcome::Conflict { key_head }) => Replies::one(ServerMessage::Conflict {
                rid,
                id,
                key: key.as_deref().map(b64u::encode).unwrap_or_default(),
                head: key_head,
            }),
            Err(e) => unavailable(app, rid, "storage unavailable; retry with the same id", &e),
        }
    }
}

/// The replies of the oldest pending publish once its commit is done; pending
/// while it is not, or while there is none.
pub(super) fn poll_oldest(
    pending: &mut VecDeque<Pending>,
    app: &App,
    cx: &mut Context<'_>,
) -> Poll<Replies> {
    let Some(oldest) = pending.front_mut() else {
        return Poll::Pending;
    };
    let result = ready!(Pin::new(&mut oldest.committing).poll(cx));
    let done = pending.pop_front().expect("polled the front");
    Poll::Ready(done.replies(app, result))
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
        own: None,
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

/// `unavailable` for a storage error, with `retry_after_ms` when the server fails
/// fast while the database is down (its circuit breaker is open).
fn unavailable(app: &App, rid: Option<Rid>, message: &str, e: &StoreError) -> Replies {
    app.metrics
        .request_errors
        .with_label_values(&[ErrorCode::Unavailable.as_str()])
        .inc();
    Replies::one(ServerMessage::Error {
        rid,
        code: ErrorCode::Unavailable,
        message: message.into(),
        retry_after_ms: e
            .retry_after()
            .map(|wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)),
    })
}

impl Ctx {
    /// Answers one request. `behind`: an earlier publish of this session still waits
    /// for room in the writer's queue (see [`Pending::waiting`]).
    pub(super) async fn handle(&mut self, plaintext: &[u8], behind: bool) -> Action {
        let req = match Request::decode(plaintext) {
            Ok(r) => r,
            Err(e) => return Action::Now(error(&self.app, e.rid, e.code, e.message)),
        };
        let rid = req.rid;
        Action::Now(match req.body {
            ClientMessage::Publish(p) => return self.publish(rid, p, behind).await,
            ClientMessage::Sync { after, limit } => self.sync(rid, after, limit).await,
            ClientMessage::Cursor { seq } => self.cursor(rid, seq).await,
            ClientMessage::Devices => self.devices(rid).await,
            ClientMessage::Revoke { device, ts, sig } => {
                self.revoke(rid, DeviceId(device), ts, sig).await
            }
            ClientMessage::Ping => Replies::one(ServerMessage::Pong {
                rid,
                server_time: self.app.clock.unix_ms(),
            }),
            ClientMessage::Token => self.token(rid).await,
            _ => error(
                &self.app,
                rid,
                ErrorCode::UnknownType,
                "unknown message type",
            ),
        })
    }

    async fn publish(&mut self, rid: Option<Rid>, p: Publish, behind: bool) -> Action {
        let app = &self.app;
        let now = app.clock.now();
        let id = format_uuid(&p.id);
        let span = trace::publish();
        let prepared = app
            .relay
            .prepare_publish(self.user, self.device, p, now)
            .instrument(span.clone())
            .await;
        match &prepared {
            Ok(Prepared::Durable(_)) => {}
            Ok(Prepared::Ephemeral { .. }) => {
                span.record("outcome", "ephemeral");
            }
            Err(_) => {
                span.record("outcome", "refused");
            }
        }
        let ev = match prepared {
            Ok(Prepared::Durable(ev)) => ev,
            Ok(Prepared::Ephemeral { delivered }) => {
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
            Err(PublishRefusal::PayloadTooLarge(max)) => {
                return Action::Now(error(
                    app,
                    rid,
                    ErrorCode::PayloadTooLarge,
                    format!("payload exceeds {max} bytes"),
                ));
            }
            Err(PublishRefusal::BadTtl(max)) => {
                return Action::Now(error(
                    app,
                    rid,
                    ErrorCode::BadRequest,
                    format!("ttl must be 1..={max} seconds"),
                ));
            }
            Err(PublishRefusal::RateLimited(wait)) => {
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
        };
        let key = ev.key.clone();
        let committing = span.in_scope(|| app.relay.submit(ev, behind));
        Action::Later(Pending {
            committing,
            rid,
            id,
            key,
            span,
        })
    }

    async fn sync(&self, rid: Option<Rid>, after: u64, limit: u32) -> Replies {
        match self.app.relay.sync(&self.user, after, limit).await {
            Ok(page) => {
                let events = page
                    .events
                    .iter()
                    .map(crate::relay::stored_event_msg)
                    .collect();
                Replies::one(ServerMessage::Events {
                    rid,
                    events,
                    head: page.head,
                    more: page.more,
                    truncated: page.truncated_oldest.map(|oldest| Truncated { oldest }),
                })
            }
            Err(e) => unavailable(&self.app, rid, "storage unavailable; retry", &e),
        }
    }

    async fn cursor(&self, rid: Option<Rid>, seq: u64) -> Replies {
        match self
            .app
            .relay
            .set_cursor(&self.user, &self.device, seq)
            .await
        {
            Ok(()) => Replies::none(),
            Err(e) => unavailable(&self.app, rid, "storage unavailable; retry", &e),
        }
    }

    async fn devices(&self, rid: Option<Rid>) -> Replies {
        let records = match self.app.relay.devices(&self.user).await {
            Ok(r) => r,
            Err(e) => return unavailable(&self.app, rid, "storage unavailable; retry", &e),
        };
        let devices = records
            .into_iter()
            .map(|(d, online)| DeviceInfo {
                device: b64u::encode(&d.device.0),
                online,
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
        match app.relay.revoke(&self.user, &device, ts, &sig).await {
            Ok(()) => {
                let mut r = Replies::one(ServerMessage::Ok { rid });
                // The device revoked itself: its `ok` goes out before the 4003 close.
                if device == self.device {
                    r.close = Some(CloseCode::Revoked);
                }
                r
            }
            Err(RevokeError::Refused) => {
                error(app, rid, ErrorCode::Forbidden, "revocation refused")
            }
            Err(RevokeError::Replayed) => {
                error(app, rid, ErrorCode::Forbidden, "revocation already used")
            }
            Err(RevokeError::UnknownDevice) => {
                error(app, rid, ErrorCode::BadRequest, "unknown device")
            }
            Err(RevokeError::Store(e)) => unavailable(app, rid, "storage unavailable; retry", &e),
        }
    }

    /// `token`: an access token and a refresh token for the REST API, for this
    /// session's device (a new refresh family).
    async fn token(&self, rid: Option<Rid>) -> Replies {
        let app = &self.app;
        match app
            .auth
            .issue_pair(&self.user, &self.device, app.clock.unix_ms())
            .await
        {
            Ok(pair) => {
                app.metrics.api.tokens.with_label_values(&["issued"]).inc();
                Replies::one(ServerMessage::Token {
                    rid,
                    access_token: pair.access_token,
                    expires_at: i64::try_from(pair.expires_at).unwrap_or(i64::MAX),
                    refresh_token: pair.refresh_token,
                })
            }
            Err(e) => {
                warn!(error = %e, "token issuance failed");
                unavailable(app, rid, "storage unavailable; retry", &e)
            }
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
