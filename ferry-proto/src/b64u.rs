//! base64url without padding (RFC 4648 §5), strict: padding, the `+/` alphabet and
//! non-canonical trailing bits are all rejected.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Encodes bytes as b64u.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes b64u of any length.
pub fn decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| DecodeError)
}

/// Decodes b64u that must hold exactly `N` bytes.
pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], DecodeError> {
    // Reject by length before decoding so huge inputs cost nothing.
    if text.len() != N.div_ceil(3) * 4 - (3 - N % 3) % 3 {
        return Err(DecodeError);
    }
    let mut out = [0u8; N];
    let n = URL_SAFE_NO_PAD
        .decode_slice(text, &mut out)
        .map_err(|_| DecodeError)?;
    if n != N {
        return Err(DecodeError);
    }
    Ok(out)
}

/// The input was not strict b64u of the expected length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64url")]
pub struct DecodeError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lengths() {
        for n in 0..70 {
            let v: Vec<u8> = (0..n as u8).collect();
            let s = encode(&v);
            assert_eq!(decode(&s).unwrap(), v);
        }
        let k = [7u8; 32];
        assert_eq!(decode_array::<32>(&encode(&k)).unwrap(), k);
        let s = [9u8; 64];
        assert_eq!(decode_array::<64>(&encode(&s)).unwrap(), s);
        let t = [1u8; 16];
        assert_eq!(decode_array::<16>(&encode(&t)).unwrap(), t);
    }

    #[test]
    fn rejects_padding_alphabet_trailing_bits_and_lengths() {
        let k = encode(&[0xffu8; 32]);
        assert!(decode_array::<32>(&format!("{k}=")).is_err());
        assert!(decode_array::<32>(&k.replace('_', "/")).is_err());
        assert!(decode_array::<32>(&k[..42]).is_err());
        assert!(decode_array::<31>(&k).is_err());
        assert!(decode_array::<33>(&k).is_err());
        // 32 bytes encode to 43 chars: the last char carries 2 spare bits that must be 0.
        let mut bad = encode(&[0u8; 32]);
        bad.pop();
        bad.push('B');
        assert!(decode_array::<32>(&bad).is_err());
        assert!(decode("a").is_err());
    }
}
