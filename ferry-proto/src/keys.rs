//! Ed25519 identities and the signed statements of the protocol: device
//! certificates (§1), revocations (§4) and REST challenge signatures (§5).
//!
//! Every signature is verified with `verify_strict` (canonical `S`, no small-order
//! `A` or `R`), and identity keys that are small-order points are refused outright.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// Domain label of the device certificate.
pub const CERT_LABEL: &[u8] = b"ferry-device-cert/v1";
/// Domain label of a revocation.
pub const REVOKE_LABEL: &[u8] = b"ferry-revoke/v1";
/// Domain label of a REST challenge signature.
pub const REST_LABEL: &[u8] = b"ferry-rest/v1";
/// How far in the future a certificate's `issued_at` may lie (clock skew), seconds.
pub const CERT_ISSUED_SKEW_SECS: u64 = 300;

/// A key or signature was rejected. Deliberately carries no detail: callers that
/// talk to peers must not say which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid key or signature")]
pub struct InvalidSignature;

/// Parses a 32-byte Ed25519 public key used as an identity (server, user, device).
/// Refuses encodings that do not decompress and small-order ("weak") points.
pub fn parse_identity_key(bytes: &[u8; 32]) -> Result<VerifyingKey, InvalidSignature> {
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| InvalidSignature)?;
    if key.is_weak() {
        return Err(InvalidSignature);
    }
    Ok(key)
}

/// Refuses mixed-order identity keys (a torsion component). An honestly generated
/// key is always in the prime-order subgroup, so nothing legitimate is lost. The
/// check costs a scalar multiplication, so the server applies it once, when it
/// first registers a user or device key, not on every handshake.
pub fn require_prime_order(key: &VerifyingKey) -> Result<(), InvalidSignature> {
    if key.to_edwards().is_torsion_free() {
        Ok(())
    } else {
        Err(InvalidSignature)
    }
}

/// Verifies `sig` over `msg` strictly.
pub fn verify(key: &VerifyingKey, msg: &[u8], sig: &[u8; 64]) -> Result<(), InvalidSignature> {
    let sig = Signature::from_bytes(sig);
    key.verify_strict(msg, &sig).map_err(|_| InvalidSignature)
}

/// Signs `msg`, returning the 64 signature bytes.
pub fn sign(key: &SigningKey, msg: &[u8]) -> [u8; 64] {
    key.sign(msg).to_bytes()
}

/// `label || 0x00 || parts…` — the common shape of every signed message.
pub(crate) fn labelled(label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = label.len() + 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(label);
    m.push(0);
    for p in parts {
        m.extend_from_slice(p);
    }
    m
}

/// A device certificate: the user key's statement that a device key acts for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceCertificate {
    /// Unix seconds when the certificate was issued.
    pub issued_at: u64,
    /// Unix seconds when it expires; 0 means never.
    pub expires_at: u64,
    /// Ed25519 signature of the user key over [`cert_message`].
    pub sig: [u8; 64],
}

/// `"ferry-device-cert/v1" || 0x00 || user_key || device_key || u64be(issued_at) || u64be(expires_at)`.
pub fn cert_message(
    user: &[u8; 32],
    device: &[u8; 32],
    issued_at: u64,
    expires_at: u64,
) -> Vec<u8> {
    labelled(
        CERT_LABEL,
        &[
            user,
            device,
            &issued_at.to_be_bytes(),
            &expires_at.to_be_bytes(),
        ],
    )
}

impl DeviceCertificate {
    /// Issues a certificate for `device` signed by the user key.
    pub fn issue(user: &SigningKey, device: &[u8; 32], issued_at: u64, expires_at: u64) -> Self {
        let user_pk = user.verifying_key().to_bytes();
        let msg = cert_message(&user_pk, device, issued_at, expires_at);
        Self {
            issued_at,
            expires_at,
            sig: sign(user, &msg),
        }
    }

    /// Checks the signature of `user` over this certificate for `device`.
    pub fn verify_signature(
        &self,
        user: &VerifyingKey,
        device: &[u8; 32],
    ) -> Result<(), InvalidSignature> {
        let msg = cert_message(user.as_bytes(), device, self.issued_at, self.expires_at);
        verify(user, &msg, &self.sig)
    }

    /// The time rules of §2: `issued_at ≤ now + 300 s` and `expires_at = 0 or now < expires_at`.
    pub fn valid_at(&self, now_secs: u64) -> bool {
        let issued_ok = self.issued_at <= now_secs.saturating_add(CERT_ISSUED_SKEW_SECS);
        let not_expired = self.expires_at == 0 || now_secs < self.expires_at;
        issued_ok && not_expired
    }
}

/// `"ferry-revoke/v1" || 0x00 || user_key || device_key || u64be(ts)`.
pub fn revoke_message(user: &[u8; 32], device: &[u8; 32], ts_ms: u64) -> Vec<u8> {
    labelled(REVOKE_LABEL, &[user, device, &ts_ms.to_be_bytes()])
}

/// Signs a revocation of `device` with the user key.
pub fn sign_revocation(user: &SigningKey, device: &[u8; 32], ts_ms: u64) -> [u8; 64] {
    let msg = revoke_message(user.verifying_key().as_bytes(), device, ts_ms);
    sign(user, &msg)
}

/// Verifies a revocation signature (the clock window and single use are the
/// server's business, not this function's).
pub fn verify_revocation(
    user: &VerifyingKey,
    device: &[u8; 32],
    ts_ms: u64,
    sig: &[u8; 64],
) -> Result<(), InvalidSignature> {
    verify(user, &revoke_message(user.as_bytes(), device, ts_ms), sig)
}

/// `"ferry-rest/v1" || 0x00 || challenge || server_key`.
pub fn rest_message(challenge: &[u8; 32], server_key: &[u8; 32]) -> Vec<u8> {
    labelled(REST_LABEL, &[challenge, server_key])
}

/// Signs a REST challenge with the device key.
pub fn sign_rest_challenge(
    device: &SigningKey,
    challenge: &[u8; 32],
    server_key: &[u8; 32],
) -> [u8; 64] {
    sign(device, &rest_message(challenge, server_key))
}

/// Verifies a REST challenge signature of a device.
pub fn verify_rest_challenge(
    device: &VerifyingKey,
    challenge: &[u8; 32],
    server_key: &[u8; 32],
    sig: &[u8; 64],
) -> Result<(), InvalidSignature> {
    verify(device, &rest_message(challenge, server_key), sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_keys_must_be_prime_order() {
        let honest = SigningKey::from_bytes(&[3u8; 32]).verifying_key();
        assert!(parse_identity_key(honest.as_bytes()).is_ok());
        assert!(require_prime_order(&honest).is_ok());
        // The identity point (small order).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(parse_identity_key(&identity).is_err());
        // An honest key plus a point of order 8: decompresses, is not weak, but has torsion.
        let torsion = curve25519_dalek::constants::EIGHT_TORSION[1];
        let mixed = (honest.to_edwards() + torsion).compress();
        let mixed = parse_identity_key(mixed.as_bytes()).expect("decompresses, not weak");
        assert!(require_prime_order(&mixed).is_err());
    }
}
