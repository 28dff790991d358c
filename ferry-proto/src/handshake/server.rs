//! The server side of the handshake as a sans-IO state machine.
//!
//! ```text
//! AwaitHello ──client_hello──▶ AwaitAuth ──client_auth──▶ AwaitDeviceCheck ──active──▶ Established
//!      │                          │                              │
//!      └──────── any failure, timeout or out-of-order message ───┴──────▶ Closed(code)
//! ```
//!
//! The IO shell feeds text frames with [`ServerHandshake::handle_text`], reports
//! binary frames with [`ServerHandshake::handle_binary`], calls
//! [`ServerHandshake::handle_timeout`] when [`ServerHandshake::poll_timeout`]
//! passes, answers [`ServerOutput::CheckDevice`] with
//! [`ServerHandshake::device_checked`], and drains [`ServerHandshake::poll_output`]
//! after each call.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

use super::crypto::{self, HandshakeSecret};
use super::error::{AuthFailure, HandshakeError};
use super::verified_certs::{CertKey, VerifiedCerts};
use super::wire::{ClientAuth, ClientHello, HandshakeErrorFrame, ParseError, ServerHello};
use super::{Established, Identity, Role};
use crate::close::CloseCode;
use crate::keys::{self, DeviceCertificate};

/// What the shell must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerOutput {
    /// Send this text frame.
    SendText(String),
    /// Look the device up (registered? revoked?) and call
    /// [`ServerHandshake::device_checked`]. Every cryptographic check has passed.
    CheckDevice {
        /// Who is authenticating.
        identity: Identity,
        /// The certificate it presented.
        cert: DeviceCertificate,
    },
    /// Close the connection with this code (after sending queued frames).
    Close(CloseCode),
    /// The session is established: take it with [`ServerHandshake::into_established`].
    Established,
}

/// The result of the device lookup the shell performed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Known and active, or new (the shell registers it).
    Active,
    /// Revoked: authentication fails.
    Revoked,
}

/// The server's fresh per-connection secrets, drawn by the caller.
pub struct ServerEphemeral {
    /// X25519 secret scalar.
    pub secret: [u8; 32],
    /// 32 random bytes.
    pub nonce: [u8; 32],
}

impl ServerEphemeral {
    /// Draws fresh values from `rng`.
    pub fn random(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        let mut e = Self {
            secret: [0; 32],
            nonce: [0; 32],
        };
        rng.fill_bytes(&mut e.secret);
        rng.fill_bytes(&mut e.nonce);
        e
    }
}

enum State {
    AwaitHello(AwaitHello),
    AwaitAuth(AwaitAuth),
    AwaitDeviceCheck(Box<AwaitDeviceCheck>),
    Established(Box<Established>),
    Closed,
}

struct AwaitHello {
    secret: StaticSecret,
    nonce: [u8; 32],
}

struct AwaitAuth {
    th1: [u8; 32],
    hs: HandshakeSecret,
}

struct AwaitDeviceCheck {
    established: Established,
}

/// One connection's handshake, server side.
pub struct ServerHandshake {
    key: SigningKey,
    /// Certificate signatures already verified (see [`Self::with_verified_certs`]).
    verified: Option<Arc<VerifiedCerts>>,
    state: State,
    deadline: Instant,
    out: VecDeque<ServerOutput>,
}

impl ServerHandshake {
    /// Starts a handshake at `now` (the upgrade), with `timeout` to finish.
    pub fn new(key: SigningKey, eph: ServerEphemeral, now: Instant, timeout: Duration) -> Self {
        Self {
            key,
            verified: None,
            state: State::AwaitHello(AwaitHello {
                secret: StaticSecret::from(eph.secret),
                nonce: eph.nonce,
            }),
            deadline: now + timeout,
            out: VecDeque::new(),
        }
    }

    /// Shares a memo of verified certificate signatures with other handshakes: a
    /// certificate found there is not verified again, and one verified here is
    /// added (see [`VerifiedCerts`]). Without it every certificate is verified.
    #[must_use]
    pub fn with_verified_certs(mut self, certs: Arc<VerifiedCerts>) -> Self {
        self.verified = Some(certs);
        self
    }

    /// Handles a text frame from the client. `unix_secs` is the wall clock for the
    /// certificate time rules.
    pub fn handle_text(&mut self, text: &str, unix_secs: u64) -> Result<(), HandshakeError> {
        let state = std::mem::replace(&mut self.state, State::Closed);
        let result = match state {
            State::AwaitHello(s) => self.on_hello(s, text),
            State::AwaitAuth(s) => self.on_auth(s, text, unix_secs),
            // Anything while we wait for the store, or after the end, is out of order.
            State::AwaitDeviceCheck(_) | State::Established(_) | State::Closed => {
                Err(HandshakeError::Unexpected)
            }
        };
        self.settle(result)
    }

    /// A binary frame during the handshake is a protocol error.
    pub fn handle_binary(&mut self) -> Result<(), HandshakeError> {
        self.state = State::Closed;
        self.settle(Err(HandshakeError::Unexpected))
    }

    /// Reports the device lookup asked for by [`ServerOutput::CheckDevice`].
    pub fn device_checked(&mut self, status: DeviceStatus) -> Result<(), HandshakeError> {
        let state = std::mem::replace(&mut self.state, State::Closed);
        let result = match (state, status) {
            (State::AwaitDeviceCheck(s), DeviceStatus::Active) => {
                self.out.push_back(ServerOutput::Established);
                Ok(State::Established(Box::new(s.established)))
            }
            (State::AwaitDeviceCheck(_), DeviceStatus::Revoked) => {
                Err(HandshakeError::AuthFailed(AuthFailure::Revoked))
            }
            _ => Err(HandshakeError::Unexpected),
        };
        self.settle(result)
    }

    /// Ends the handshake if `now` is past the deadline.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), HandshakeError> {
        if now < self.deadline || !self.in_progress() {
            return Ok(());
        }
        self.state = State::Closed;
        self.settle(Err(HandshakeError::TimedOut))
    }

    /// When [`Self::handle_timeout`] must be called next, while the handshake runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_progress().then_some(self.deadline)
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.out.pop_front()
    }

    /// Whether the handshake has neither succeeded nor failed yet.
    pub fn in_progress(&self) -> bool {
        matches!(
            self.state,
            State::AwaitHello(_) | State::AwaitAuth(_) | State::AwaitDeviceCheck(_)
        )
    }

    /// The established session, once [`ServerOutput::Established`] was output.
    pub fn into_established(self) -> Option<Established> {
        match self.state {
            State::Established(e) => Some(*e),
            _ => None,
        }
    }

    fn settle(&mut self, result: Result<State, HandshakeError>) -> Result<(), HandshakeError> {
        match result {
            Ok(state) => {
                self.state = state;
                Ok(())
            }
            Err(err) => {
                self.state = State::Closed;
                let frame = match &err {
                    HandshakeError::AuthFailed(_) => Some(HandshakeErrorFrame::new(
                        "auth_failed",
                        "authentication failed",
                    )),
                    HandshakeError::UnsupportedVersion => {
                        Some(HandshakeErrorFrame::unsupported_version())
                    }
                    HandshakeError::BadKey => Some(HandshakeErrorFrame::new(
                        "bad_key",
                        "ephemeral key rejected",
                    )),
                    _ => None,
                };
                if let Some(frame) = frame {
                    self.out.push_back(ServerOutput::SendText(frame.encode()));
                }
                self.out.push_back(ServerOutput::Close(err.close_code()));
                Err(err)
            }
        }
    }

    fn on_hello(&mut self, s: AwaitHello, text: &str) -> Result<State, HandshakeError> {
        let hello = ClientHello::parse(text).map_err(parse_error)?;
        let dh = crypto::x25519(&s.secret, &hello.eph).ok_or(HandshakeError::BadKey)?;
        let eph_s = XPublic::from(&s.secret).to_bytes();
        let server_key = self.key.verifying_key().to_bytes();
        let th1 = crypto::th1(&hello.eph, &hello.nonce, &eph_s, &s.nonce, &server_key);
        let sig = keys::sign(&self.key, &crypto::server_sig_message(&th1));
        let reply = ServerHello {
            eph: eph_s,
            nonce: s.nonce,
            server_key,
            sig,
        };
        self.out.push_back(ServerOutput::SendText(reply.encode()));
        Ok(State::AwaitAuth(AwaitAuth {
            th1,
            hs: HandshakeSecret::derive(&th1, &dh),
        }))
    }

    fn on_auth(
        &mut self,
        s: AwaitAuth,
        text: &str,
        unix_secs: u64,
    ) -> Result<State, HandshakeError> {
        let auth = ClientAuth::parse(text).map_err(parse_error)?;
        let fail = HandshakeError::AuthFailed;
        let device =
            keys::parse_identity_key(&auth.device).map_err(|_| fail(AuthFailure::InvalidKey))?;
        // The certificate signature, unless the memo saw these exact bytes verified
        // (which also means the user key parsed then).
        let memo = self
            .verified
            .as_ref()
            .map(|v| (v, CertKey::new(&auth.user, &auth.device, &auth.cert)));
        if !memo.as_ref().is_some_and(|(v, k)| v.contains(k)) {
            let user =
                keys::parse_identity_key(&auth.user).map_err(|_| fail(AuthFailure::InvalidKey))?;
            auth.cert
                .verify_signature(&user, &auth.device)
                .map_err(|_| fail(AuthFailure::CertSignature))?;
            if let Some((v, k)) = memo {
                v.insert(k);
            }
        }
        if !auth.cert.valid_at(unix_secs) {
            return Err(fail(AuthFailure::CertTime));
        }
        let th2 = crypto::th2(
            &s.th1,
            &auth.user,
            &auth.device,
            auth.cert.issued_at,
            auth.cert.expires_at,
            &auth.cert.sig,
        );
        keys::verify(&device, &crypto::client_sig_message(&th2), &auth.sig)
            .map_err(|_| fail(AuthFailure::Signature))?;
        if !s.hs.verify_client_mac(&th2, &auth.mac) {
            return Err(fail(AuthFailure::Mac));
        }
        let identity = Identity {
            user: auth.user,
            device: auth.device,
        };
        let keys = s.hs.session_keys(&th2);
        self.out.push_back(ServerOutput::CheckDevice {
            identity,
            cert: auth.cert,
        });
        Ok(State::AwaitDeviceCheck(Box::new(AwaitDeviceCheck {
            established: Established::new(Role::Server, identity, auth.cert, &keys),
        })))
    }
}

pub(super) fn parse_error(e: ParseError) -> HandshakeError {
    match e {
        ParseError::Malformed => HandshakeError::Malformed,
        ParseError::UnsupportedVersion => HandshakeError::UnsupportedVersion,
        ParseError::UnexpectedType => HandshakeError::Unexpected,
    }
}
