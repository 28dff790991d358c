//! Handshake errors, classified by who is at fault, with the single mapping to
//! close codes and metric labels.

use crate::close::CloseCode;

/// Which check of `client_auth` failed. Only for metrics and logs: the peer is
/// told `auth_failed` and nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The user or device key is not a valid, non-weak Ed25519 point.
    InvalidKey,
    /// The certificate's signature does not verify under the user key.
    CertSignature,
    /// The certificate is not yet valid or expired.
    CertTime,
    /// The device is revoked.
    Revoked,
    /// The device's signature over TH2 does not verify.
    Signature,
    /// The MAC does not match.
    Mac,
}

impl AuthFailure {
    /// Stable label for metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Self::InvalidKey => "invalid_key",
            Self::CertSignature => "cert_signature",
            Self::CertTime => "cert_time",
            Self::Revoked => "revoked",
            Self::Signature => "signature",
            Self::Mac => "mac",
        }
    }
}

/// Why a handshake ended without a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer sent something that is not the expected message's shape.
    #[error("malformed handshake message")]
    Malformed,
    /// A message arrived out of order, twice, or as a binary frame.
    #[error("unexpected handshake message")]
    Unexpected,
    /// The peer speaks a version we do not.
    #[error("unsupported protocol version")]
    UnsupportedVersion,
    /// The X25519 exchange gave an all-zero result (low-order peer key).
    #[error("bad ephemeral key")]
    BadKey,
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    TimedOut,
    /// `client_auth` failed a check (server side).
    #[error("authentication failed ({})", .0.label())]
    AuthFailed(AuthFailure),
    /// The server presented a key other than the pinned one (client side).
    #[error("server key does not match the pinned key")]
    ServerKeyMismatch,
    /// The server's signature over TH1 does not verify (client side).
    #[error("server signature invalid")]
    ServerSignature,
    /// The server refused us with an error frame (client side).
    #[error("server refused the handshake: {0}")]
    Refused(String),
}

impl HandshakeError {
    /// The close code the server sends for this error.
    pub const fn close_code(&self) -> CloseCode {
        match self {
            Self::AuthFailed(_) => CloseCode::AuthFailed,
            _ => CloseCode::HandshakeFailed,
        }
    }

    /// A stable label for metrics.
    pub const fn metric_label(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Unexpected => "unexpected",
            Self::UnsupportedVersion => "unsupported_version",
            Self::BadKey => "bad_key",
            Self::TimedOut => "timeout",
            Self::AuthFailed(reason) => reason.label(),
            Self::ServerKeyMismatch => "server_key_mismatch",
            Self::ServerSignature => "server_signature",
            Self::Refused(_) => "refused",
        }
    }
}
