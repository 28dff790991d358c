//! The JSON messages inside the sealed channel (§4).
//!
//! Requests are decoded in two steps: a cheap envelope (`type`, `rid`) first, so an
//! unknown type or a malformed body can still be answered with the request's `rid`;
//! then the body of the named type. Unknown fields are ignored.

use serde::{Deserialize, Serialize};

use crate::b64u;

/// Longest string `rid` accepted.
pub const MAX_RID_LEN: usize = 64;
/// Largest `sync.limit`.
pub const MAX_SYNC_LIMIT: u32 = 1000;
/// Default `sync.limit`.
pub const DEFAULT_SYNC_LIMIT: u32 = 500;
/// Longest `key`, in bytes.
pub const MAX_KEY_LEN: usize = 64;

/// A request id, echoed in the reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rid {
    /// An integer id.
    Int(i64),
    /// A string id of at most 64 characters.
    Str(String),
}

/// Error codes of `error` messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is malformed or violates a rule.
    BadRequest,
    /// The `type` is not one the server knows.
    UnknownType,
    /// The payload exceeds `max_payload`.
    PayloadTooLarge,
    /// Too many publishes; retry after `retry_after_ms`.
    RateLimited,
    /// Storage is down; retry with the same id.
    Unavailable,
    /// Not allowed.
    Forbidden,
    /// An internal error.
    Internal,
}

impl ErrorCode {
    /// The wire string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnknownType => "unknown_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Forbidden => "forbidden",
            Self::Internal => "internal",
        }
    }
}

/// A request that could not be decoded: answer with `error{code}` and this `rid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestError {
    /// The request's `rid`, when it could be read.
    pub rid: Option<Rid>,
    /// `bad_request` or `unknown_type`.
    pub code: ErrorCode,
    /// What was wrong, for the client developer.
    pub message: String,
}

/// A decoded client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The request id to echo.
    pub rid: Option<Rid>,
    /// What is asked.
    pub body: ClientMessage,
}

/// Client → server messages.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientMessage {
    /// `publish`.
    Publish(Publish),
    /// `sync`.
    Sync {
        /// Events with `seq > after`.
        after: u64,
        /// Page size, 1–1000.
        limit: u32,
    },
    /// `cursor`.
    Cursor {
        /// The device's processed position.
        seq: u64,
    },
    /// `devices`.
    Devices,
    /// `revoke`.
    Revoke {
        /// Device to revoke.
        device: [u8; 32],
        /// Unix ms the revocation was signed at.
        ts: u64,
        /// User-key signature.
        sig: [u8; 64],
    },
    /// `token`.
    Token,
    /// `ping`.
    Ping,
}

/// A `publish` request, validated for shape (limits that depend on server
/// configuration, like `max_payload` and `max_ttl`, are the server's to check).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// The canonical lowercase UUID, as 16 bytes.
    pub id: [u8; 16],
    /// The opaque payload.
    pub payload: Vec<u8>,
    /// Optional key, 1–64 bytes.
    pub key: Option<Vec<u8>>,
    /// Optional base seq (only with `key`).
    pub base: Option<u64>,
    /// Optional TTL in seconds.
    pub ttl: Option<u64>,
    /// Relay only, never store.
    pub ephemeral: bool,
    /// With `ephemeral`: only these devices.
    pub to: Option<Vec<[u8; 32]>>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    ty: Option<std::borrow::Cow<'a, str>>,
    rid: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawPublish {
    id: String,
    payload: String,
    key: Option<String>,
    base: Option<u64>,
    ttl: Option<u64>,
    ephemeral: Option<bool>,
    to: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawSync {
    after: u64,
    limit: Option<u32>,
}

#[derive(Deserialize)]
struct RawCursor {
    seq: u64,
}

#[derive(Deserialize)]
struct RawRevoke {
    device: String,
    ts: u64,
    sig: String,
}

/// Parses a canonical lowercase hyphenated UUID (`8-4-4-4-12` hex digits).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut nibbles = 0usize;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        out[nibbles / 2] |= if nibbles.is_multiple_of(2) { v << 4 } else { v };
        nibbles += 1;
    }
    Some(out)
}

/// Formats 16 bytes as a canonical lowercase hyphenated UUID.
pub fn format_uuid(id: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, byte) in id.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[(byte >> 4) as usize] as char);
        s.push(HEX[(byte & 15) as usize] as char);
    }
    s
}

fn bad(rid: &Option<Rid>, message: impl Into<String>) -> RequestError {
    RequestError {
        rid: rid.clone(),
        code: ErrorCode::BadRequest,
        message: message.into(),
    }
}

fn body<'a, T: Deserialize<'a>>(bytes: &'a [u8], rid: &Option<Rid>) -> Result<T, RequestError> {
    serde_json::from_slice(bytes).map_err(|e| bad(rid, format!("invalid fields: {e}")))
}

fn key32(s: &str, rid: &Option<Rid>, what: &str) -> Result<[u8; 32], RequestError> {
    b64u::decode_array::<32>(s).map_err(|_| bad(rid, format!("{what} must be b64u of 32 bytes")))
}

/// A request's `rid` as the envelope carried it: absent or `null` is `None`; an
/// integer or a string of at most [`MAX_RID_LEN`] characters is kept; anything else
/// is refused (without a `rid` to answer with).
fn parse_rid(raw: Option<serde_json::Value>) -> Result<Option<Rid>, RequestError> {
    match raw {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.chars().count() <= MAX_RID_LEN => {
            Ok(Some(Rid::Str(s)))
        }
        Some(serde_json::Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64().map(Rid::Int)),
        Some(_) => Err(bad(
            &None,
            "rid must be an integer or a string of at most 64 characters",
        )),
    }
}

/// The error for a frame whose envelope did not decode: when it is a JSON object
/// (its `type` is not a string: a number, an array, …), the reply still carries its
/// `rid`, if that is valid; otherwise it is not a JSON object at all. The slow path
/// of malformed requests only.
fn malformed_envelope(bytes: &[u8]) -> RequestError {
    let not_object = || RequestError {
        rid: None,
        code: ErrorCode::BadRequest,
        message: "not a JSON object".into(),
    };
    let Ok(mut object) =
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes)
    else {
        return not_object();
    };
    match parse_rid(object.remove("rid")) {
        Ok(rid) => bad(&rid, "type must be one string"),
        Err(e) => e,
    }
}

impl Request {
    /// Decodes one opened frame.
    pub fn decode(bytes: &[u8]) -> Result<Self, RequestError> {
        let env: Envelope<'_> = match serde_json::from_slice(bytes) {
            Ok(env) => env,
            Err(_) => return Err(malformed_envelope(bytes)),
        };
        let rid = parse_rid(env.rid)?;
        let Some(ty) = env.ty else {
            return Err(bad(&rid, "missing type"));
        };
        let body = match ty.as_ref() {
            "publish" => ClientMessage::Publish(Publish::from_raw(body(bytes, &rid)?, &rid)?),
            "sync" => {
                let raw: RawSync = body(bytes, &rid)?;
                let limit = raw.limit.unwrap_or(DEFAULT_SYNC_LIMIT);
                if !(1..=MAX_SYNC_LIMIT).contains(&limit) {
                    return Err(bad(&rid, "limit must be 1..=1000"));
                }
                ClientMessage::Sync {
                    after: raw.after,
                    limit,
                }
            }
            "cursor" => ClientMessage::Cursor {
                seq: body::<RawCursor>(bytes, &rid)?.seq,
            },
            "devices" => ClientMessage::Devices,
            "revoke" => {
                let raw: RawRevoke = body(bytes, &rid)?;
                ClientMessage::Revoke {
                    device: key32(&raw.device, &rid, "device")?,
                    ts: raw.ts,
                    sig: b64u::decode_array::<64>(&raw.sig)
                        .map_err(|_| bad(&rid, "sig must be b64u of 64 bytes"))?,
                }
            }
            "token" => ClientMessage::Token,
            "ping" => ClientMessage::Ping,
            _ => {
                return Err(RequestError {
                    rid,
                    code: ErrorCode::UnknownType,
                    message: "unknown message type".into(),
                });
            }
        };
        Ok(Self { rid, body })
    }
}

impl Publish {
    fn from_raw(raw: RawPublish, rid: &Option<Rid>) -> Result<Self, RequestError> {
        let id =
            parse_uuid(&raw.id).ok_or_else(|| bad(rid, "id must be a canonical lowercase UUID"))?;
        let payload = b64u::decode(&raw.payload).map_err(|_| bad(rid, "payload must be b64u"))?;
        let key = match raw.key {
            None => None,
            Some(k) => {
                let k = b64u::decode(&k).map_err(|_| bad(rid, "key must be b64u"))?;
                if k.is_empty() || k.len() > MAX_KEY_LEN {
                    return Err(bad(rid, "key must be 1..=64 bytes"));
                }
                Some(k)
            }
        };
        if raw.base.is_some() && key.is_none() {
            return Err(bad(rid, "base needs key"));
        }
        let ephemeral = raw.ephemeral.unwrap_or(false);
        let to = match raw.to {
            None => None,
            Some(_) if !ephemeral => return Err(bad(rid, "to needs ephemeral")),
            Some(list) => Some(
                list.iter()
                    .map(|d| key32(d, rid, "to[]"))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        if ephemeral && (key.is_some() || raw.ttl.is_some()) {
            return Err(bad(rid, "ephemeral events take no key, base or ttl"));
        }
        Ok(Self {
            id,
            payload,
            key,
            base: raw.base,
            ttl: raw.ttl,
            ephemeral,
            to,
        })
    }
}

// ---- server → client ----

fn is_false(b: &bool) -> bool {
    !*b
}

/// `auth_ok.limits`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest payload in bytes.
    pub max_payload: u64,
    /// Largest TTL in seconds.
    pub max_ttl: u64,
    /// Sustained publishes per second per device.
    pub events_per_sec: u64,
    /// Burst of publishes.
    pub burst: u64,
}

/// One entry of `devices.devices`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Device key, b64u.
    pub device: String,
    /// Whether a session of it is connected now.
    pub online: bool,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub last_seen: i64,
    /// Processed position.
    pub cursor: u64,
    /// Unix ms, when revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

/// An event as relayed or synced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMsg {
    /// Sequence number (absent for ephemeral events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Event id (canonical UUID).
    pub id: String,
    /// Origin device, b64u.
    pub device: String,
    /// Server time, Unix ms.
    pub ts: i64,
    /// Payload, b64u.
    pub payload: String,
    /// Key, b64u.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// TTL, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Set for ephemeral events.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ephemeral: bool,
}

/// `truncated` in an `events` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncated {
    /// The oldest seq still stored.
    pub oldest: u64,
}

/// Server → client messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    /// First sealed frame.
    AuthOk {
        /// Session id, b64u.
        session: String,
        /// User key, b64u.
        user: String,
        /// Device key, b64u.
        device: String,
        /// The user's head.
        head: u64,
        /// Unix ms.
        server_time: i64,
        /// Limits in force.
        limits: Limits,
    },
    /// Publish stored (or ephemeral relayed).
    Ack {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        /// Event id.
        id: String,
        /// Assigned seq (absent for ephemeral).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// Stored ts (absent for ephemeral).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<i64>,
        /// The id was already stored: this is the original ack.
        #[serde(default, skip_serializing_if = "is_false")]
        duplicate: bool,
        /// Ephemeral ack.
        #[serde(default, skip_serializing_if = "is_false")]
        ephemeral: bool,
        /// Ephemeral: devices it went to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivered: Option<u64>,
    },
    /// `key`/`base` mismatch.
    Conflict {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        /// Event id.
        id: String,
        /// Key, b64u.
        key: String,
        /// Seq of the newest event with that key.
        head: u64,
    },
    /// A live event.
    Event(EventMsg),
    /// Reply to `sync`.
    Events {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        /// Ascending events.
        events: Vec<EventMsg>,
        /// The user's head.
        head: u64,
        /// More after these.
        more: bool,
        /// Events after `after` were removed by retention.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        truncated: Option<Truncated>,
    },
    /// Reply to `devices`.
    Devices {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        /// Every device of the user.
        devices: Vec<DeviceInfo>,
    },
    /// Reply to `revoke`.
    Ok {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
    },
    /// Another device of the user connected, left or was revoked.
    Presence {
        /// Device key, b64u.
        device: String,
        /// Whether it is online now.
        online: bool,
        /// Unix ms.
        ts: i64,
        /// Set when it was revoked.
        #[serde(default, skip_serializing_if = "is_false")]
        revoked: bool,
    },
    /// Reply to `token`.
    Token {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        /// JWT.
        access_token: String,
        /// Unix seconds.
        expires_at: i64,
        /// Opaque refresh token.
        refresh_token: String,
    },
    /// Reply to `ping`.
    Pong {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        /// Unix ms.
        server_time: i64,
    },
    /// An error.
    Error {
        /// Echoed request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        /// Error code.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
        /// With `rate_limited`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl ServerMessage {
    /// JSON bytes of this message.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("server messages always serialize")
    }

    /// An `error` reply.
    pub fn error(rid: Option<Rid>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            rid,
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pong_matches_the_vector_plaintext() {
        let m = ServerMessage::Pong {
            rid: Some(Rid::Int(1)),
            server_time: 1767225600000,
        };
        assert_eq!(
            String::from_utf8(m.to_json()).unwrap(),
            r#"{"type":"pong","rid":1,"server_time":1767225600000}"#
        );
    }

    #[test]
    fn decodes_vector_requests() {
        let r = Request::decode(br#"{"type":"ping","rid":1}"#).unwrap();
        assert_eq!(r.rid, Some(Rid::Int(1)));
        assert_eq!(r.body, ClientMessage::Ping);
        let r = Request::decode(br#"{"type":"sync","rid":"b","after":0}"#).unwrap();
        assert_eq!(r.rid, Some(Rid::Str("b".into())));
        assert_eq!(
            r.body,
            ClientMessage::Sync {
                after: 0,
                limit: 500
            }
        );
    }

    #[test]
    fn uuid_canonical_only() {
        let id = "123e4567-e89b-12d3-a456-426614174000";
        let b = parse_uuid(id).unwrap();
        assert_eq!(format_uuid(&b), id);
        for bad in [
            "123E4567-E89B-12D3-A456-426614174000",
            "123e4567e89b12d3a456426614174000",
            "{123e4567-e89b-12d3-a456-426614174000}",
            "123e4567-e89b-12d3-a456-42661417400",
            "123e4567-e89b-12d3-a456_426614174000",
            "123e4567-e89b-12d3-a456-42661417400g",
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad}");
        }
    }

    fn err(json: &str) -> RequestError {
        Request::decode(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn bad_requests_keep_rid_and_say_why() {
        let id = "123e4567-e89b-12d3-a456-426614174000";
        let cases = [
            r#"{"type":"publish","rid":7,"id":"nope","payload":""}"#.to_string(),
            format!(r#"{{"type":"publish","rid":7,"id":"{id}","payload":"a"}}"#),
            format!(r#"{{"type":"publish","rid":7,"id":"{id}","payload":"","key":""}}"#),
            format!(
                r#"{{"type":"publish","rid":7,"id":"{id}","payload":"","key":"{}"}}"#,
                b64u::encode(&[1; 65])
            ),
            format!(r#"{{"type":"publish","rid":7,"id":"{id}","payload":"","base":3}}"#),
            format!(r#"{{"type":"publish","rid":7,"id":"{id}","payload":"","to":[]}}"#),
            format!(r#"{{"type":"publish","rid":7,"id":"{id}","payload":"","ttl":-1}}"#),
            r#"{"type":"sync","rid":7,"after":0,"limit":0}"#.to_string(),
            r#"{"type":"sync","rid":7,"after":0,"limit":1001}"#.to_string(),
            r#"{"type":"sync","rid":7,"after":-1}"#.to_string(),
            r#"{"type":"cursor","rid":7}"#.to_string(),
            r#"{"type":"revoke","rid":7,"device":"x","ts":1,"sig":"y"}"#.to_string(),
        ];
        for c in cases {
            let e = err(&c);
            assert_eq!(e.code, ErrorCode::BadRequest, "{c}");
            assert_eq!(e.rid, Some(Rid::Int(7)), "{c}");
        }
        let e = err(r#"{"type":"frobnicate","rid":"x"}"#);
        assert_eq!(e.code, ErrorCode::UnknownType);
        assert_eq!(e.rid, Some(Rid::Str("x".into())));
        assert_eq!(err("[1,2]").code, ErrorCode::BadRequest);
        assert_eq!(err("not json").code, ErrorCode::BadRequest);
        assert_eq!(err(r#"{"rid":1}"#).rid, Some(Rid::Int(1)));
        let long = "x".repeat(65);
        assert_eq!(
            err(&format!(r#"{{"type":"ping","rid":"{long}"}}"#)).rid,
            None
        );
    }

    #[test]
    fn a_type_that_is_not_a_string_is_a_bad_request_with_its_rid() {
        for ty in ["7", "[1,2]", "{}", "true", r#"["publish"]"#] {
            for (rid, want) in [
                (r#""abc""#, Some(Rid::Str("abc".into()))),
                ("42", Some(Rid::Int(42))),
                ("null", None),
            ] {
                let e = err(&format!(r#"{{"type":{ty},"rid":{rid}}}"#));
                assert_eq!(e.code, ErrorCode::BadRequest, "type {ty}");
                assert_eq!(e.rid, want, "type {ty}, rid {rid}");
            }
        }
        // An invalid rid is still refused, whatever the type.
        let e = err(r#"{"type":7,"rid":[1]}"#);
        assert_eq!((e.code, e.rid), (ErrorCode::BadRequest, None));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let r = Request::decode(br#"{"type":"ping","extra":{"a":[1]}}"#).unwrap();
        assert_eq!(r.body, ClientMessage::Ping);
    }
}
