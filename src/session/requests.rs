//! Requests inside the sealed channel: decode, act, reply.

use ferry_proto::CloseCode;
use ferry_proto::message::{ClientMessage, ErrorCode, Request, ServerMessage};

use crate::app::{App, unix_ms};
use crate::store::{DeviceId, UserId};

/// What one session needs to answer requests.
pub(super) struct Ctx {
    pub(super) app: App,
    pub(super) user: UserId,
    pub(super) device: DeviceId,
}

/// What to send back, and whether the request counted as a protocol error.
#[derive(Default)]
pub(super) struct Replies {
    pub(super) messages: Vec<Vec<u8>>,
    pub(super) protocol_error: bool,
    pub(super) close: Option<CloseCode>,
}

impl Replies {
    fn one(msg: ServerMessage) -> Self {
        Self {
            messages: vec![msg.to_json()],
            ..Self::default()
        }
    }

    fn error(
        app: &App,
        rid: Option<ferry_proto::message::Rid>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        app.metrics
            .request_errors
            .with_label_values(&[code.as_str()])
            .inc();
        Self {
            messages: vec![ServerMessage::error(rid, code, message).to_json()],
            protocol_error: matches!(
                code,
                ErrorCode::BadRequest | ErrorCode::UnknownType | ErrorCode::PayloadTooLarge
            ),
            close: None,
        }
    }
}

impl Ctx {
    pub(super) async fn handle(&self, plaintext: &[u8]) -> Replies {
        let req = match Request::decode(plaintext) {
            Ok(r) => r,
            Err(e) => return Replies::error(&self.app, e.rid, e.code, e.message),
        };
        let _ = (&self.user, &self.device);
        match req.body {
            ClientMessage::Ping => Replies::one(ServerMessage::Pong {
                rid: req.rid,
                server_time: unix_ms(),
            }),
            _ => Replies::error(
                &self.app,
                req.rid,
                ErrorCode::Internal,
                "not supported by this server yet",
            ),
        }
    }
}
