//! The client's error type.

use std::sync::Arc;

use ferry_proto::close::CloseCode;
use ferry_proto::handshake::HandshakeError;
use ferry_proto::message::ErrorCode;

/// Everything that can go wrong in the client.
///
/// The type is `Clone` so one connection's end can be reported to every waiting
/// request and stream; IO errors are shared behind an [`Arc`] for that reason.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server closed the WebSocket with this close code (see [`CloseCode`]).
    /// 4002 (auth failed), 4003 (revoked) and 4011 (replaced by a newer session of
    /// this device) are final: the client does not reconnect after them.
    #[error("the server closed the connection with code {0}{reason}", reason = close_reason(*.0))]
    Closed(u16),
    /// The handshake failed on the client's side: wrong server key, bad signature,
    /// malformed reply, or the server refused with an `error` frame.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The server answered a request with `error`.
    #[error("server error {}: {message}", code.as_str())]
    Server {
        /// The error code.
        code: ErrorCode,
        /// The server's detail, for developers.
        message: String,
        /// With `rate_limited`: how long to wait before retrying.
        retry_after_ms: Option<u64>,
    },
    /// A `publish` with `key` and `base` was refused: the newest event with that key
    /// has seq `head` (0: there is none).
    #[error("conflict: the key's newest event is seq {head}")]
    Conflict {
        /// Seq of the newest stored event with the key.
        head: u64,
    },
    /// The connection could not be opened, or ended without a close frame.
    #[error("connection failed: {0}")]
    Transport(String),
    /// A local IO error (profile files).
    #[error("io error: {0}")]
    Io(#[source] Arc<std::io::Error>),
    /// No reply in time (request timeout, connect timeout, or the retry deadline).
    #[error("timed out")]
    Timeout,
    /// TLS is misconfigured (for example `wss://` without a root store).
    #[error("tls: {0}")]
    Tls(String),
    /// The server URL is not a `ws://` or `wss://` URL.
    #[error("invalid server url: {0}")]
    InvalidUrl(String),
    /// The server sent something the protocol does not allow (a frame that does not
    /// open, a text frame after the handshake, a reply of the wrong type). The
    /// connection is closed.
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    /// An argument, profile, certificate or link grant is invalid.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The operation needs the user key (for example `revoke`) and this device does
    /// not hold it.
    #[error("this device does not hold the user key")]
    NoUserKey,
    /// Retention removed events the stream had not seen: everything with a seq
    /// below `oldest` after the stream's position is gone. The stream goes on with
    /// `oldest`; an application may want to rebuild its state from a snapshot.
    #[error("events before seq {oldest} were removed by retention")]
    Truncated {
        /// The oldest seq still stored.
        oldest: u64,
    },
    /// The client was closed locally.
    #[error("the client was closed")]
    Shutdown,
}

fn close_reason(code: u16) -> String {
    CloseCode::from_u16(code)
        .map(|c| format!(" ({})", c.reason()))
        .unwrap_or_default()
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(Arc::new(e))
    }
}

impl ClientError {
    /// The close code, when the server closed the connection.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Closed(code) => Some(*code),
            _ => None,
        }
    }

    /// Whether reconnecting cannot help: authentication failed (4002), the device
    /// was revoked (4003), another session of this device took over (4011), the
    /// server's key is not the pinned one, the server speaks another protocol
    /// version, TLS or the URL is misconfigured, or the client was closed.
    pub fn is_final(&self) -> bool {
        match self {
            Self::Closed(code) => matches!(
                CloseCode::from_u16(*code),
                Some(CloseCode::AuthFailed | CloseCode::Revoked | CloseCode::Replaced)
            ),
            Self::Handshake(e) => {
                matches!(
                    e,
                    HandshakeError::ServerKeyMismatch
                        | HandshakeError::ServerSignature
                        | HandshakeError::UnsupportedVersion
                ) || matches!(e, HandshakeError::Refused(code) if code == "unsupported_version")
            }
            Self::Tls(_) | Self::InvalidUrl(_) | Self::Invalid(_) | Self::Shutdown => true,
            Self::NoUserKey => true,
            _ => false,
        }
    }

    /// Whether the server closed the session because the operator erased the user's
    /// data (4012). The device is not revoked and reconnects; its user's log starts
    /// again from seq 0, so the application should upload again what it holds. It
    /// must not wipe its keys (that is 4003).
    pub fn is_erased(&self) -> bool {
        matches!(self, Self::Closed(code) if *code == CloseCode::Erased.as_u16())
    }

    /// Whether the connection is gone but a new one may work (the client reconnects).
    pub fn is_disconnect(&self) -> bool {
        match self {
            Self::Closed(_) | Self::Handshake(_) => !self.is_final(),
            Self::Transport(_) | Self::Protocol(_) | Self::Timeout => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_codes() {
        for code in [4002, 4003, 4011] {
            assert!(ClientError::Closed(code).is_final(), "{code}");
            assert!(!ClientError::Closed(code).is_disconnect(), "{code}");
        }
        for code in [1000, 1001, 1011, 4001, 4008, 4009, 4010, 4012] {
            assert!(!ClientError::Closed(code).is_final(), "{code}");
            assert!(ClientError::Closed(code).is_disconnect(), "{code}");
        }
        assert!(ClientError::Closed(4012).is_erased());
        assert!(!ClientError::Closed(4003).is_erased());
        assert!(ClientError::Handshake(HandshakeError::ServerKeyMismatch).is_final());
        assert!(!ClientError::Handshake(HandshakeError::Malformed).is_final());
        assert_eq!(
            ClientError::Closed(4003).to_string(),
            "the server closed the connection with code 4003 (revoked)"
        );
    }
}
