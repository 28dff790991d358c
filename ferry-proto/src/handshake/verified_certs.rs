//! A memo of certificate signatures already verified, shared by a server's
//! handshakes.
//!
//! Whether `cert.sig` is a valid (strict) Ed25519 signature of the user key over
//! `cert_msg(user, device, issued_at, expires_at)` depends on nothing but those
//! bytes, so a device that reconnects with the certificate it presented before does
//! not need the signature checked again: the memo answers for it. Everything that
//! can change between two handshakes is still checked every time — the
//! certificate's time rules, the device's fresh signature over the transcript, the
//! MAC, and revocation (the shell's admission check).
//!
//! Entries are SHA-256 digests of the verified bytes, so a hit needs those exact
//! bytes (or a SHA-256 collision). The memo is bounded: it keeps two generations
//! of at most `capacity` entries each, and starts a new one when the current is
//! full, so a certificate seen in either of the last two generations is a hit.

use std::collections::HashSet;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::keys::DeviceCertificate;

const LABEL: &[u8] = b"ferry-verified-cert/v1\0";

/// Verified certificate signatures (see the module docs).
#[derive(Debug)]
pub struct VerifiedCerts {
    capacity: usize,
    inner: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashSet<[u8; 32]>,
    previous: HashSet<[u8; 32]>,
}

/// The memo's key for one certificate of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CertKey([u8; 32]);

impl CertKey {
    pub(crate) fn new(user: &[u8; 32], device: &[u8; 32], cert: &DeviceCertificate) -> Self {
        let mut h = Sha256::new();
        h.update(LABEL);
        h.update(user);
        h.update(device);
        h.update(cert.issued_at.to_be_bytes());
        h.update(cert.expires_at.to_be_bytes());
        h.update(cert.sig);
        Self(h.finalize().into())
    }
}

impl VerifiedCerts {
    /// A memo keeping up to `capacity` entries per generation (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Generations::default()),
        }
    }

    pub(crate) fn contains(&self, key: &CertKey) -> bool {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.current.contains(&key.0) || g.previous.contains(&key.0)
    }

    /// Records a certificate whose signature was just verified.
    pub(crate) fn insert(&self, key: CertKey) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.current.len() >= self.capacity {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(key.0);
    }

    /// Entries held (both generations; a certificate may be in both).
    pub fn len(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.current.len() + g.previous.len()
    }

    /// Whether the memo holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sig: u8) -> DeviceCertificate {
        DeviceCertificate {
            issued_at: 1,
            expires_at: 0,
            sig: [sig; 64],
        }
    }

    #[test]
    fn a_hit_needs_the_same_user_device_and_certificate() {
        let memo = VerifiedCerts::new(8);
        let (u, d) = ([1; 32], [2; 32]);
        memo.insert(CertKey::new(&u, &d, &cert(3)));
        assert!(memo.contains(&CertKey::new(&u, &d, &cert(3))));
        assert!(!memo.contains(&CertKey::new(&u, &d, &cert(4))));
        assert!(!memo.contains(&CertKey::new(&d, &u, &cert(3))));
        assert!(!memo.contains(&CertKey::new(&u, &[9; 32], &cert(3))));
        let mut later = cert(3);
        later.expires_at = 99;
        assert!(!memo.contains(&CertKey::new(&u, &d, &later)));
    }

    #[test]
    fn bounded_to_two_generations() {
        let memo = VerifiedCerts::new(2);
        let key = |n: u8| CertKey::new(&[n; 32], &[0; 32], &cert(0));
        for n in 0..5 {
            memo.insert(key(n));
        }
        // Generations {0,1} → {2,3} → {4}: the oldest is gone.
        assert_eq!(memo.len(), 3);
        assert!(!memo.contains(&key(0)) && !memo.contains(&key(1)));
        assert!(memo.contains(&key(2)) && memo.contains(&key(3)) && memo.contains(&key(4)));
    }
}
