//! The client side of the handshake as a sans-IO state machine.
//!
//! ```text
//! Start ──start()──▶ AwaitServerHello ──server_hello (pin, sig, dh ok)──▶ Established
//!                          │                                 (client_auth sent; auth_ok arrives sealed)
//!                          └──── error frame, bad pin/sig/key ────▶ Closed
//! ```

use ed25519_dalek::SigningKey;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

use super::crypto::{self, HandshakeSecret};
use super::error::HandshakeError;
use super::server::parse_error;
use super::wire::{ClientAuth, ClientHello, HandshakeErrorFrame, ServerHello, message_type};
use super::{Established, Identity, Role};
use crate::keys::{self, DeviceCertificate};

/// What a device proves itself with.
#[derive(Clone)]
pub struct DeviceCredentials {
    /// The user's public key.
    pub user: [u8; 32],
    /// The device's signing key.
    pub device_key: SigningKey,
    /// The certificate the user key issued for this device.
    pub cert: DeviceCertificate,
}

impl std::fmt::Debug for DeviceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCredentials")
            .field("user", &crate::b64u::encode(&self.user))
            .field(
                "device",
                &crate::b64u::encode(self.device_key.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

/// How the client decides to trust the server key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerPin {
    /// Only this key is accepted.
    Key([u8; 32]),
    /// Accept the first key seen (the caller should store it and pin it next time).
    FirstUse,
}

/// The client's fresh per-connection secrets, drawn by the caller.
pub struct ClientEphemeral {
    /// X25519 secret scalar.
    pub secret: [u8; 32],
    /// 32 random bytes.
    pub nonce: [u8; 32],
}

impl ClientEphemeral {
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
    AwaitServerHello {
        secret: StaticSecret,
        hello: ClientHello,
    },
    Established(Box<Established>),
    Closed,
}

/// One connection's handshake, client side.
pub struct ClientHandshake {
    creds: DeviceCredentials,
    pin: ServerPin,
    state: State,
    server_key: Option<[u8; 32]>,
}

impl ClientHandshake {
    /// Prepares a handshake; [`Self::client_hello`] is the first frame to send.
    pub fn new(creds: DeviceCredentials, pin: ServerPin, eph: ClientEphemeral) -> Self {
        let secret = StaticSecret::from(eph.secret);
        let hello = ClientHello {
            eph: XPublic::from(&secret).to_bytes(),
            nonce: eph.nonce,
        };
        Self {
            creds,
            pin,
            state: State::AwaitServerHello { secret, hello },
            server_key: None,
        }
    }

    /// The `client_hello` text frame.
    pub fn client_hello(&self) -> Option<String> {
        match &self.state {
            State::AwaitServerHello { hello, .. } => Some(hello.encode()),
            _ => None,
        }
    }

    /// Handles the server's reply; on success returns the `client_auth` text frame to
    /// send, after which the session is established (the server's first sealed frame
    /// is `auth_ok`, or it closes with 4002).
    pub fn handle_text(&mut self, text: &str) -> Result<String, HandshakeError> {
        let state = std::mem::replace(&mut self.state, State::Closed);
        let State::AwaitServerHello { secret, hello } = state else {
            return Err(HandshakeError::Unexpected);
        };
        if message_type(text).as_deref() == Some("error") {
            let code = serde_json::from_str::<HandshakeErrorFrame>(text)
                .map(|f| f.code)
                .unwrap_or_else(|_| "error".into());
            return Err(HandshakeError::Refused(code));
        }
        let sh = ServerHello::parse(text).map_err(parse_error)?;
        if let ServerPin::Key(pinned) = self.pin {
            // Public values: no constant time needed.
            if pinned != sh.server_key {
                return Err(HandshakeError::ServerKeyMismatch);
            }
        }
        let server_vk = keys::parse_identity_key(&sh.server_key)
            .map_err(|_| HandshakeError::ServerSignature)?;
        let th1 = crypto::th1(&hello.eph, &hello.nonce, &sh.eph, &sh.nonce, &sh.server_key);
        keys::verify(&server_vk, &crypto::server_sig_message(&th1), &sh.sig)
            .map_err(|_| HandshakeError::ServerSignature)?;
        let dh = crypto::x25519(&secret, &sh.eph).ok_or(HandshakeError::BadKey)?;
        let hs = HandshakeSecret::derive(&th1, &dh);
        let device = self.creds.device_key.verifying_key().to_bytes();
        let cert = self.creds.cert;
        let th2 = crypto::th2(
            &th1,
            &self.creds.user,
            &device,
            cert.issued_at,
            cert.expires_at,
            &cert.sig,
        );
        let auth = ClientAuth {
            user: self.creds.user,
            device,
            cert,
            sig: keys::sign(&self.creds.device_key, &crypto::client_sig_message(&th2)),
            mac: hs.client_mac(&th2),
        };
        let identity = Identity {
            user: self.creds.user,
            device,
        };
        let keys = hs.session_keys(&th2);
        self.server_key = Some(sh.server_key);
        self.state = State::Established(Box::new(Established::new(
            Role::Client,
            identity,
            cert,
            &keys,
        )));
        Ok(auth.encode())
    }

    /// The server key the handshake accepted.
    pub fn server_key(&self) -> Option<[u8; 32]> {
        self.server_key
    }

    /// The established session after a successful [`Self::handle_text`].
    pub fn into_established(self) -> Option<Established> {
        match self.state {
            State::Established(e) => Some(*e),
            _ => None,
        }
    }
}
