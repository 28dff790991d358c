//! WebSocket close codes used by the protocol (§4).

/// A close code, as sent in the WebSocket close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: normal closure.
    Normal,
    /// 1001: the server is going away (shutdown).
    GoingAway,
    /// 1009: a frame or message was larger than the limit.
    TooBig,
    /// 1011: internal server error.
    Internal,
    /// 4001: the handshake failed (malformed hello, bad key, version, timeout).
    HandshakeFailed,
    /// 4002: authentication failed.
    AuthFailed,
    /// 4003: the device was revoked.
    Revoked,
    /// 4008: sustained rate-limit abuse.
    RateLimited,
    /// 4009: slow consumer; reconnect and sync, nothing is lost.
    SlowConsumer,
    /// 4010: protocol violation (bad sealed frame, text frame, too many errors).
    ProtocolViolation,
    /// 4011: replaced by a newer session of the same device.
    Replaced,
    /// 4012: the operator erased the user's data. The device is not revoked: it may
    /// reconnect (its user's head is then 0) and re-upload what it holds; unlike
    /// 4003 it must not wipe its keys.
    Erased,
}

impl CloseCode {
    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::TooBig => 1009,
            Self::Internal => 1011,
            Self::HandshakeFailed => 4001,
            Self::AuthFailed => 4002,
            Self::Revoked => 4003,
            Self::RateLimited => 4008,
            Self::SlowConsumer => 4009,
            Self::ProtocolViolation => 4010,
            Self::Replaced => 4011,
            Self::Erased => 4012,
        }
    }

    /// The code for a number, if the protocol names it.
    pub const fn from_u16(code: u16) -> Option<Self> {
        Some(match code {
            1000 => Self::Normal,
            1001 => Self::GoingAway,
            1009 => Self::TooBig,
            1011 => Self::Internal,
            4001 => Self::HandshakeFailed,
            4002 => Self::AuthFailed,
            4003 => Self::Revoked,
            4008 => Self::RateLimited,
            4009 => Self::SlowConsumer,
            4010 => Self::ProtocolViolation,
            4011 => Self::Replaced,
            4012 => Self::Erased,
            _ => return None,
        })
    }

    /// A short reason phrase for the close frame.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::GoingAway => "server going away",
            Self::TooBig => "message too big",
            Self::Internal => "internal error",
            Self::HandshakeFailed => "handshake failed",
            Self::AuthFailed => "auth failed",
            Self::Revoked => "revoked",
            Self::RateLimited => "rate limited",
            Self::SlowConsumer => "slow consumer",
            Self::ProtocolViolation => "protocol violation",
            Self::Replaced => "replaced",
            Self::Erased => "erased",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for c in [
            1000, 1001, 1009, 1011, 4001, 4002, 4003, 4008, 4009, 4010, 4011, 4012,
        ] {
            assert_eq!(CloseCode::from_u16(c).unwrap().as_u16(), c);
        }
        assert_eq!(CloseCode::from_u16(4000), None);
    }
}
