//! The JSON text frames of the handshake.

use serde::{Deserialize, Serialize};

use crate::b64u;
use crate::keys::DeviceCertificate;

/// Protocol versions this crate speaks.
pub const SUPPORTED_VERSIONS: [u64; 1] = [1];

/// `client_hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// Fresh X25519 public key.
    pub eph: [u8; 32],
    /// 32 random bytes.
    pub nonce: [u8; 32],
}

/// `server_hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    /// Fresh X25519 public key.
    pub eph: [u8; 32],
    /// 32 random bytes.
    pub nonce: [u8; 32],
    /// The server's Ed25519 identity key.
    pub server_key: [u8; 32],
    /// Server signature over TH1.
    pub sig: [u8; 64],
}

/// `client_auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// User key.
    pub user: [u8; 32],
    /// Device key.
    pub device: [u8; 32],
    /// The device certificate.
    pub cert: DeviceCertificate,
    /// Device signature over TH2.
    pub sig: [u8; 64],
    /// HMAC over TH2 with K_hs.
    pub mac: [u8; 32],
}

/// Why a text frame is not the expected handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON, not an object, a missing or ill-typed field, or bad b64u.
    Malformed,
    /// Well-formed, but of a version this crate does not speak.
    UnsupportedVersion,
    /// A different message type than expected.
    UnexpectedType,
}

#[derive(Deserialize)]
struct RawHello<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    v: Option<serde_json::Value>,
    #[serde(borrow)]
    eph: Option<&'a str>,
    #[serde(borrow)]
    nonce: Option<&'a str>,
    #[serde(borrow)]
    server_key: Option<&'a str>,
    #[serde(borrow)]
    sig: Option<&'a str>,
}

#[derive(Deserialize)]
struct RawCert<'a> {
    issued_at: u64,
    expires_at: u64,
    #[serde(borrow)]
    sig: &'a str,
}

#[derive(Deserialize)]
struct RawAuth<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(borrow)]
    user: &'a str,
    #[serde(borrow)]
    device: &'a str,
    #[serde(borrow)]
    cert: RawCert<'a>,
    #[serde(borrow)]
    sig: &'a str,
    #[serde(borrow)]
    mac: &'a str,
}

fn field<const N: usize>(v: Option<&str>) -> Result<[u8; N], ParseError> {
    b64u::decode_array::<N>(v.ok_or(ParseError::Malformed)?).map_err(|_| ParseError::Malformed)
}

fn hello<'a>(text: &'a str, expected: &str) -> Result<RawHello<'a>, ParseError> {
    let raw: RawHello<'a> = serde_json::from_str(text).map_err(|_| ParseError::Malformed)?;
    if raw.ty != expected {
        return Err(ParseError::UnexpectedType);
    }
    match raw.v.as_ref().and_then(|v| v.as_u64()) {
        Some(v) if SUPPORTED_VERSIONS.contains(&v) => Ok(raw),
        Some(_) => Err(ParseError::UnsupportedVersion),
        None => Err(ParseError::Malformed),
    }
}

/// The `type` field of a text frame, if it is a JSON object that has one.
pub fn message_type(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        ty: String,
    }
    serde_json::from_str::<Typed>(text).ok().map(|t| t.ty)
}

impl ClientHello {
    /// Parses a `client_hello` text frame.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let raw = hello(text, "client_hello")?;
        Ok(Self {
            eph: field(raw.eph)?,
            nonce: field(raw.nonce)?,
        })
    }

    /// Encodes the text frame.
    pub fn encode(&self) -> String {
        format!(
            r#"{{"type":"client_hello","v":1,"eph":"{}","nonce":"{}"}}"#,
            b64u::encode(&self.eph),
            b64u::encode(&self.nonce)
        )
    }
}

impl ServerHello {
    /// Parses a `server_hello` text frame.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let raw = hello(text, "server_hello")?;
        Ok(Self {
            eph: field(raw.eph)?,
            nonce: field(raw.nonce)?,
            server_key: field(raw.server_key)?,
            sig: field(raw.sig)?,
        })
    }

    /// Encodes the text frame.
    pub fn encode(&self) -> String {
        format!(
            r#"{{"type":"server_hello","v":1,"eph":"{}","nonce":"{}","server_key":"{}","sig":"{}"}}"#,
            b64u::encode(&self.eph),
            b64u::encode(&self.nonce),
            b64u::encode(&self.server_key),
            b64u::encode(&self.sig)
        )
    }
}

impl ClientAuth {
    /// Parses a `client_auth` text frame.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let raw: RawAuth<'_> = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(_) => {
                return Err(match message_type(text) {
                    Some(t) if t != "client_auth" => ParseError::UnexpectedType,
                    _ => ParseError::Malformed,
                });
            }
        };
        if raw.ty != "client_auth" {
            return Err(ParseError::UnexpectedType);
        }
        Ok(Self {
            user: field(Some(raw.user))?,
            device: field(Some(raw.device))?,
            cert: DeviceCertificate {
                issued_at: raw.cert.issued_at,
                expires_at: raw.cert.expires_at,
                sig: field(Some(raw.cert.sig))?,
            },
            sig: field(Some(raw.sig))?,
            mac: field(Some(raw.mac))?,
        })
    }

    /// Encodes the text frame.
    pub fn encode(&self) -> String {
        format!(
            r#"{{"type":"client_auth","user":"{}","device":"{}","cert":{{"issued_at":{},"expires_at":{},"sig":"{}"}},"sig":"{}","mac":"{}"}}"#,
            b64u::encode(&self.user),
            b64u::encode(&self.device),
            self.cert.issued_at,
            self.cert.expires_at,
            b64u::encode(&self.cert.sig),
            b64u::encode(&self.sig),
            b64u::encode(&self.mac)
        )
    }
}

/// An `error` frame sent in the clear during the handshake.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandshakeErrorFrame {
    /// Always `"error"`.
    #[serde(rename = "type")]
    pub ty: String,
    /// `auth_failed`, `unsupported_version`, `bad_key`.
    pub code: String,
    /// Human-readable, says nothing about which check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// With `unsupported_version`: the versions the server speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported: Option<Vec<u64>>,
}

impl HandshakeErrorFrame {
    /// An error frame with `code` and `message`.
    pub fn new(code: &str, message: &str) -> Self {
        Self {
            ty: "error".into(),
            code: code.into(),
            message: Some(message.into()),
            supported: None,
        }
    }

    /// `{"type":"error","code":"unsupported_version","supported":[1]}`.
    pub fn unsupported_version() -> Self {
        Self {
            ty: "error".into(),
            code: "unsupported_version".into(),
            message: None,
            supported: Some(SUPPORTED_VERSIONS.to_vec()),
        }
    }

    /// Encodes the text frame.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("plain struct serializes")
    }
}
