//! Sealed frames (§3): AES-256-GCM, empty AAD, `nonce = 0x00000000 || u64be(counter)`,
//! one counter per direction starting at 0.
//!
//! A frame that fails to open — tampered, replayed, reordered or after a dropped
//! one — is an [`OpenError`]; the caller ends the session (4010) and acts on nothing.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};

/// GCM tag length.
pub const TAG_LEN: usize = 16;

/// The sending half of a sealed channel.
pub struct Sealer {
    cipher: Aes256Gcm,
    counter: u64,
}

/// The receiving half of a sealed channel.
pub struct Opener {
    cipher: Aes256Gcm,
    counter: u64,
}

/// A frame did not open. Carries no detail on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed frame failed to open")]
pub struct OpenError;

/// The counter of this direction is exhausted (2^64 frames): the session must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealing counter exhausted")]
pub struct CounterExhausted;

/// The 12-byte nonce for a counter value.
pub fn nonce_for(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

impl Sealer {
    /// A sealer with `key`, counter 0.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.into()),
            counter: 0,
        }
    }

    /// The counter the next frame will use.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Seals `plaintext` into one frame (ciphertext || tag) and advances the counter.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, CounterExhausted> {
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.seal_in_place(&mut buf)?;
        Ok(buf)
    }

    /// Seals `buf` in place (the tag is appended) and advances the counter.
    pub fn seal_in_place(&mut self, buf: &mut Vec<u8>) -> Result<(), CounterExhausted> {
        let next = self.counter.checked_add(1).ok_or(CounterExhausted)?;
        let nonce = nonce_for(self.counter);
        self.cipher
            .encrypt_in_place(Nonce::from_slice(&nonce), b"", buf)
            // Only fails when the buffer cannot grow, which a Vec always can.
            .map_err(|_| CounterExhausted)?;
        self.counter = next;
        Ok(())
    }
}

impl Opener {
    /// An opener with `key`, counter 0.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.into()),
            counter: 0,
        }
    }

    /// The counter the next frame must use.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Opens one frame. The counter advances only on success.
    pub fn open(&mut self, frame: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut buf = frame.to_vec();
        self.open_in_place(&mut buf)?;
        Ok(buf)
    }

    /// Opens `buf` in place, leaving the plaintext in it.
    pub fn open_in_place(&mut self, buf: &mut Vec<u8>) -> Result<(), OpenError> {
        if buf.len() < TAG_LEN {
            return Err(OpenError);
        }
        let next = self.counter.checked_add(1).ok_or(OpenError)?;
        let nonce = nonce_for(self.counter);
        self.cipher
            .decrypt_in_place(Nonce::from_slice(&nonce), b"", buf)
            .map_err(|_| OpenError)?;
        self.counter = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let key = [42u8; 32];
        let mut s = Sealer::new(&key);
        let mut o = Opener::new(&key);
        let f0 = s.seal(b"zero").unwrap();
        let f1 = s.seal(b"one").unwrap();
        let f2 = s.seal(b"two").unwrap();
        // Reordered: frame 1 first fails and does not advance.
        assert_eq!(o.open(&f1), Err(OpenError));
        assert_eq!(o.open(&f0).unwrap(), b"zero");
        // Replayed.
        assert_eq!(o.open(&f0), Err(OpenError));
        // Tampered.
        let mut t = f1.clone();
        t[0] ^= 1;
        assert_eq!(o.open(&t), Err(OpenError));
        assert_eq!(o.open(&f1).unwrap(), b"one");
        // Truncated / empty.
        assert_eq!(o.open(&f2[..10]), Err(OpenError));
        assert_eq!(o.open(&[]), Err(OpenError));
        assert_eq!(o.open(&f2).unwrap(), b"two");
        // Wrong key.
        let mut other = Opener::new(&[1u8; 32]);
        assert_eq!(other.open(&f0), Err(OpenError));
    }

    #[test]
    fn counter_exhaustion() {
        let mut s = Sealer::new(&[0u8; 32]);
        s.counter = u64::MAX;
        assert_eq!(s.seal(b"x"), Err(CounterExhausted));
    }
}
