//! The v1 handshake (§2): client and server state machines, their errors, and the
//! derivations they share.
//!
//! Neither side does IO or reads a clock: frames, time and random bytes are inputs,
//! decisions are outputs. The only way to obtain an [`Established`] session — and so
//! an [`Identity`] — is to complete the handshake.

pub mod client;
pub mod crypto;
pub mod error;
pub mod server;
pub mod verified_certs;
pub mod wire;

pub use client::{ClientEphemeral, ClientHandshake, DeviceCredentials, ServerPin};
pub use error::{AuthFailure, HandshakeError};
pub use server::{DeviceStatus, ServerEphemeral, ServerHandshake, ServerOutput};
pub use verified_certs::VerifiedCerts;

use crate::keys::DeviceCertificate;
use crate::seal::{Opener, Sealer};

/// An authenticated (user, device) pair. Constructed only by a completed handshake.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    user: [u8; 32],
    device: [u8; 32],
}

impl Identity {
    /// The user key.
    pub fn user(&self) -> &[u8; 32] {
        &self.user
    }

    /// The device key.
    pub fn device(&self) -> &[u8; 32] {
        &self.device
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("user", &crate::b64u::encode(&self.user))
            .field("device", &crate::b64u::encode(&self.device))
            .finish()
    }
}

#[derive(Clone, Copy)]
enum Role {
    Client,
    Server,
}

/// A completed handshake: who the peer is and the sealed channel's two halves.
pub struct Established {
    /// The authenticated user and device.
    pub identity: Identity,
    /// The device certificate presented.
    pub cert: DeviceCertificate,
    /// `session_id`, b64u.
    pub session_id: String,
    /// Seals outgoing frames (server: `K_s2c`; client: `K_c2s`).
    pub sealer: Sealer,
    /// Opens incoming frames (server: `K_c2s`; client: `K_s2c`).
    pub opener: Opener,
}

impl Established {
    fn new(
        role: Role,
        identity: Identity,
        cert: DeviceCertificate,
        keys: &crypto::SessionKeys,
    ) -> Self {
        let (send, recv) = match role {
            Role::Server => (&keys.k_s2c, &keys.k_c2s),
            Role::Client => (&keys.k_c2s, &keys.k_s2c),
        };
        Self {
            identity,
            cert,
            session_id: crate::b64u::encode(&keys.session_id),
            sealer: Sealer::new(send),
            opener: Opener::new(recv),
        }
    }
}

#[cfg(test)]
mod tests;
