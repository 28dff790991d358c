//! The handshake's derivations (§2, §2.4), as pure functions.

use hkdf::Hkdf;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroize;

use crate::keys::labelled;

/// Domain label of the transcript and the signatures.
pub const HS_LABEL: &[u8] = b"ferry-hs/v1";
const SERVER_SIG_LABEL: &[u8] = b"ferry-hs/v1 server";
const CLIENT_SIG_LABEL: &[u8] = b"ferry-hs/v1 client";
const CLIENT_MAC_LABEL: &[u8] = b"ferry-hs/v1 client-mac";
const CONFIRM_INFO: &[u8] = b"ferry-hs/v1 confirm";
const C2S_INFO: &[u8] = b"ferry-hs/v1 c2s";
const S2C_INFO: &[u8] = b"ferry-hs/v1 s2c";
const SESSION_INFO: &[u8] = b"ferry-hs/v1 session";

/// `SHA-256("ferry-hs/v1" || 0x00 || eph_c || nonce_c || eph_s || nonce_s || server_key)`.
pub fn th1(
    eph_c: &[u8; 32],
    nonce_c: &[u8; 32],
    eph_s: &[u8; 32],
    nonce_s: &[u8; 32],
    server_key: &[u8; 32],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(HS_LABEL);
    h.update([0u8]);
    for part in [eph_c, nonce_c, eph_s, nonce_s, server_key] {
        h.update(part);
    }
    h.finalize().into()
}

/// The message the server signs: `"ferry-hs/v1 server" || 0x00 || TH1`.
pub fn server_sig_message(th1: &[u8; 32]) -> Vec<u8> {
    labelled(SERVER_SIG_LABEL, &[th1])
}

/// `SHA-256(TH1 || user_key || device_key || u64be(issued_at) || u64be(expires_at) || cert.sig)`.
pub fn th2(
    th1: &[u8; 32],
    user: &[u8; 32],
    device: &[u8; 32],
    issued_at: u64,
    expires_at: u64,
    cert_sig: &[u8; 64],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(th1);
    h.update(user);
    h.update(device);
    h.update(issued_at.to_be_bytes());
    h.update(expires_at.to_be_bytes());
    h.update(cert_sig);
    h.finalize().into()
}

/// The message the device signs: `"ferry-hs/v1 client" || 0x00 || TH2`.
pub fn client_sig_message(th2: &[u8; 32]) -> Vec<u8> {
    labelled(CLIENT_SIG_LABEL, &[th2])
}

/// The handshake secret after the DH: PRK, and the confirmation key derived from it.
pub struct HandshakeSecret {
    prk: Hkdf<Sha256>,
    k_hs: [u8; 32],
}

impl Drop for HandshakeSecret {
    fn drop(&mut self) {
        self.k_hs.zeroize();
    }
}

/// The traffic keys of an established session.
pub struct SessionKeys {
    /// Key of client → server frames.
    pub k_c2s: [u8; 32],
    /// Key of server → client frames.
    pub k_s2c: [u8; 32],
    /// The 16-byte session id (sent b64u).
    pub session_id: [u8; 16],
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.k_c2s.zeroize();
        self.k_s2c.zeroize();
    }
}

impl HandshakeSecret {
    /// `PRK = HKDF-Extract(salt = TH1, ikm = dh)`, `K_hs = HKDF-Expand(PRK, "ferry-hs/v1 confirm", 32)`.
    pub fn derive(th1: &[u8; 32], dh: &[u8; 32]) -> Self {
        let prk = extract(th1, dh);
        let mut k_hs = [0u8; 32];
        expand(&prk, &[CONFIRM_INFO], &mut k_hs);
        Self { prk, k_hs }
    }

    /// The PRK itself (for test vectors).
    pub fn prk_bytes(th1: &[u8; 32], dh: &[u8; 32]) -> [u8; 32] {
        prk(th1, dh)
    }

    /// `K_hs`.
    pub fn k_hs(&self) -> &[u8; 32] {
        &self.k_hs
    }

    /// `HMAC-SHA256(K_hs, "ferry-hs/v1 client-mac" || 0x00 || TH2)`.
    pub fn client_mac(&self, th2: &[u8; 32]) -> [u8; 32] {
        mac(&self.k_hs, &[CLIENT_MAC_LABEL, &[0u8], th2])
            .finalize()
            .into_bytes()
            .into()
    }

    /// Checks a client MAC in constant time.
    pub fn verify_client_mac(&self, th2: &[u8; 32], tag: &[u8; 32]) -> bool {
        // `verify_slice` compares in constant time.
        mac(&self.k_hs, &[CLIENT_MAC_LABEL, &[0u8], th2])
            .verify_slice(tag)
            .is_ok()
    }

    /// `K_c2s`, `K_s2c` and the session id, each `HKDF-Expand(PRK, label || TH2)`.
    pub fn session_keys(&self, th2: &[u8; 32]) -> SessionKeys {
        let mut keys = SessionKeys {
            k_c2s: [0; 32],
            k_s2c: [0; 32],
            session_id: [0; 16],
        };
        expand(&self.prk, &[C2S_INFO, th2], &mut keys.k_c2s);
        expand(&self.prk, &[S2C_INFO, th2], &mut keys.k_s2c);
        expand(&self.prk, &[SESSION_INFO, th2], &mut keys.session_id);
        keys
    }
}

/// `HKDF-Extract(salt, ikm)`, ready to expand.
fn extract(salt: &[u8], ikm: &[u8]) -> Hkdf<Sha256> {
    Hkdf::<Sha256>::new(Some(salt), ikm)
}

/// `HKDF-Extract(salt, ikm)`: the PRK's bytes.
fn prk(salt: &[u8], ikm: &[u8]) -> [u8; 32] {
    Hkdf::<Sha256>::extract(Some(salt), ikm).0.into()
}

/// `HKDF-Expand(PRK, info, out.len())`, `info` given in parts; refused above
/// 255 × 32 bytes.
fn try_expand(
    prk: &Hkdf<Sha256>,
    info: &[&[u8]],
    out: &mut [u8],
) -> Result<(), hkdf::InvalidLength> {
    prk.expand_multi_info(info, out)
}

/// [`try_expand`] for the derivations' own lengths (at most 32 bytes).
fn expand(prk: &Hkdf<Sha256>, info: &[&[u8]], out: &mut [u8]) {
    try_expand(prk, info, out).expect("output lengths here are far below 255 * 32");
}

/// HMAC-SHA256 keyed with `key` (any length), fed `parts` in order.
fn mac(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// X25519 with the all-zero check: `None` when the peer's key is low order.
pub fn x25519(secret: &x25519_dalek::StaticSecret, peer: &[u8; 32]) -> Option<[u8; 32]> {
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*peer));
    if !shared.was_contributory() {
        return None;
    }
    Some(shared.to_bytes())
}

#[cfg(test)]
mod vectors;
