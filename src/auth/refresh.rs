//! Refresh tokens: 256 random bits as b64u, handed out once and stored only as their
//! SHA-256. Every use rotates the token (the old one is spent, a new one of the same
//! family issued); presenting a spent one revokes the whole family, because it means
//! two parties held the same token.

use sha2::{Digest as _, Sha256};

/// A new refresh token: the text for the client, the hash for the store.
pub fn generate() -> (String, [u8; 32]) {
    let raw: [u8; 32] = super::random_bytes();
    (ferry_proto::b64u::encode(&raw), Sha256::digest(raw).into())
}

/// The stored hash of a presented token, or `None` when it cannot be one of ours
/// (so malformed input never reaches the database).
pub fn hash(token: &str) -> Option<[u8; 32]> {
    let raw = ferry_proto::b64u::decode_array::<32>(token).ok()?;
    Some(Sha256::digest(raw).into())
}

/// A new family id.
pub fn new_family() -> [u8; 16] {
    super::random_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hash_to_what_is_stored() {
        let (token, stored) = generate();
        assert_eq!(token.len(), 43);
        assert_eq!(hash(&token), Some(stored));
        assert_eq!(hash("not-a-token"), None);
        // An access token (a JWT) is never a refresh token.
        assert_eq!(hash("eyJhbGciOiJFZERTQSJ9.e30.c2ln"), None);
    }
}
