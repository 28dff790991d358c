//! Access tokens: JWTs signed with the server's Ed25519 key (RFC 8725 practices).
//!
//! Verification trusts nothing in the token that could choose how it is verified:
//! - the header is checked by hand first: exactly `alg`, `typ` and `kid`, with
//!   `alg = "EdDSA"`, `typ = "JWT"` and `kid` equal to our key's fingerprint (an
//!   in-memory comparison: nothing is ever fetched, `jwk`/`jku`/`x5u`/`x5c`/`crit`
//!   are refused outright);
//! - the signature is checked with our public key only, through
//!   `jsonwebtoken::Validation::new(EdDSA)` (so `none` and `HS256` can never apply);
//! - `exp` is required and must be an integer, `nbf` is enforced when present,
//!   `aud` must be `ferry` and `iss` ours, within a leeway of [`LEEWAY_SECS`];
//! - the claims are then decoded strictly (unknown claims refused) and checked again
//!   against the caller's clock, including a cap on how far in the future `exp` may
//!   lie (we never issue tokens longer than the configured lifetime).

use std::collections::HashMap;

use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::Reason;
use crate::keys::ServerKey;
use crate::model::{DeviceId, UserId};

/// The `aud` of every access token.
pub const AUDIENCE: &str = "ferry";
/// Clock leeway for `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Longest token accepted, in bytes: ours are about 400.
pub const MAX_TOKEN_LEN: usize = 2048;

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Issuer (configuration `auth.issuer`).
    pub iss: String,
    /// Always [`AUDIENCE`].
    pub aud: String,
    /// The user, b64u.
    pub sub: String,
    /// The device, b64u.
    pub did: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds (we never set it; enforced when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Random token id (the denylist key).
    pub jti: String,
}

/// What a verified access token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The user.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
    /// The token id.
    pub jti: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// The server key in the two forms `jsonwebtoken` needs, and the fixed validation.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    kid: String,
    public: [u8; 32],
    issuer: String,
    max_lifetime_secs: u64,
}

impl JwtKeys {
    /// Keys for `key`, issuing as `issuer`, with tokens living `lifetime_secs`.
    pub fn new(key: &ServerKey, issuer: &str, lifetime_secs: u64) -> Self {
        let pkcs8 = key
            .signing_key()
            .to_pkcs8_der()
            .expect("an Ed25519 key always encodes as PKCS#8");
        let public = key.verifying_key().to_bytes();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        Self {
            encoding: EncodingKey::from_ed_der(pkcs8.as_bytes()),
            // The raw 32-byte public key: an SPKI blob would silently never verify.
            decoding: DecodingKey::from_ed_der(&public),
            validation,
            kid: kid_of(&public),
            public,
            issuer: issuer.to_string(),
            max_lifetime_secs: lifetime_secs,
        }
    }

    /// The `kid` of our key: a short fingerprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs an access token for `device` of `user`, valid from `now` for the
    /// configured lifetime, with a fresh `jti`. Returns the token, its `jti` and its
    /// `exp`.
    pub fn issue(&self, user: &UserId, device: &DeviceId, now_secs: u64) -> (String, String, u64) {
        let jti = super::random_b64u::<16>();
        let exp = self.expiry(now_secs);
        let token = self.sign(user, device, now_secs, &jti);
        (token, jti, exp)
    }

    /// When a token issued at `now_secs` expires.
    pub fn expiry(&self, now_secs: u64) -> u64 {
        now_secs + self.max_lifetime_secs
    }

    /// Signs an access token with a `jti` chosen by the caller (refresh rotation
    /// stores it before the token exists). Expires at [`Self::expiry`]`(now_secs)`.
    pub fn sign(&self, user: &UserId, device: &DeviceId, now_secs: u64, jti: &str) -> String {
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.into(),
            sub: user.to_string(),
            did: device.to_string(),
            iat: now_secs,
            exp: self.expiry(now_secs),
            nbf: None,
            jti: jti.to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("JWT".into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .expect("signing with a valid Ed25519 key cannot fail")
    }

    /// Verifies an access token at `now_secs`. Says why not only as a [`Reason`]
    /// (for metrics and logs; clients only ever see "invalid token").
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Verified, Reason> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(Reason::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Reason::Malformed);
        };
        self.check_header(header)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => Reason::BadSignature,
                ErrorKind::ExpiredSignature => Reason::Expired,
                ErrorKind::ImmatureSignature => Reason::NotYetValid,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Reason::BadHeader,
                ErrorKind::InvalidAudience
                | ErrorKind::InvalidIssuer
                | ErrorKind::InvalidSubject
                | ErrorKind::MissingRequiredClaim(_)
                | ErrorKind::InvalidClaimFormat(_)
                | ErrorKind::Json(_) => Reason::BadClaims,
                _ => Reason::Malformed,
            })?;
        let c = data.claims;
        // Again with the caller's clock (jsonwebtoken reads the system clock).
        if now_secs >= c.exp.saturating_add(LEEWAY_SECS) {
            return Err(Reason::Expired);
        }
        if c.nbf
            .is_some_and(|nbf| nbf > now_secs.saturating_add(LEEWAY_SECS))
            || c.iat > now_secs.saturating_add(LEEWAY_SECS)
        {
            return Err(Reason::NotYetValid);
        }
        if c.exp <= c.iat
            || c.exp > now_secs.saturating_add(self.max_lifetime_secs + LEEWAY_SECS)
            || c.aud != AUDIENCE
            || c.iss != self.issuer
            || c.jti.is_empty()
            || c.jti.len() > 64
        {
            return Err(Reason::BadClaims);
        }
        let user = ferry_proto::b64u::decode_array::<32>(&c.sub).map_err(|_| Reason::BadClaims)?;
        let device =
            ferry_proto::b64u::decode_array::<32>(&c.did).map_err(|_| Reason::BadClaims)?;
        Ok(Verified {
            user: UserId(user),
            device: DeviceId(device),
            jti: c.jti,
            exp: c.exp,
        })
    }

    /// The header must be exactly ours: `{"alg":"EdDSA","typ":"JWT","kid":<ours>}`,
    /// all three present. Anything that could point verification elsewhere is refused.
    fn check_header(&self, encoded: &str) -> Result<(), Reason> {
        let bytes = ferry_proto::b64u::decode(encoded).map_err(|_| Reason::Malformed)?;
        let fields: HashMap<String, serde_json::Value> =
            serde_json::from_slice(&bytes).map_err(|_| Reason::Malformed)?;
        if fields
            .keys()
            .any(|k| !matches!(k.as_str(), "alg" | "typ" | "kid"))
        {
            return Err(Reason::BadHeader);
        }
        let alg_ok = fields.get("alg").and_then(|v| v.as_str()) == Some("EdDSA");
        let typ_ok = fields.get("typ").and_then(|v| v.as_str()) == Some("JWT");
        let kid_ok = fields.get("kid").and_then(|v| v.as_str()) == Some(self.kid.as_str());
        if alg_ok && typ_ok && kid_ok {
            Ok(())
        } else {
            Err(Reason::BadHeader)
        }
    }
}

/// `kid`: b64u of the first 12 bytes of SHA-256 over the public key (16 characters).
fn kid_of(public: &[u8; 32]) -> String {
    let digest = Sha256::digest(public);
    ferry_proto::b64u::encode(&digest[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&ServerKey::from_seed([7; 32]), "ferry", 3600)
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn issues_and_verifies() {
        let k = keys();
        let (token, jti, exp) = k.issue(&UserId([1; 32]), &DeviceId([2; 32]), now());
        let v = k.verify(&token, now()).unwrap();
        assert_eq!(v.user, UserId([1; 32]));
        assert_eq!(v.device, DeviceId([2; 32]));
        assert_eq!((v.jti, v.exp), (jti, exp));
        // The header is exactly the one the protocol names.
        let header = token.split('.').next().unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&ferry_proto::b64u::decode(header).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": k.kid()})
        );
    }

    #[test]
    fn refuses_expired_and_foreign_tokens() {
        let k = keys();
        let t0 = now();
        let (token, _, _) = k.issue(&UserId([1; 32]), &DeviceId([2; 32]), t0);
        assert_eq!(
            k.verify(&token, t0 + 3600 + LEEWAY_SECS),
            Err(Reason::Expired)
        );
        let other = JwtKeys::new(&ServerKey::from_seed([8; 32]), "ferry", 3600);
        let (foreign, _, _) = other.issue(&UserId([1; 32]), &DeviceId([2; 32]), t0);
        // Another key has another kid: refused before the signature is even checked.
        assert_eq!(k.verify(&foreign, t0), Err(Reason::BadHeader));
        let other_iss = JwtKeys::new(&ServerKey::from_seed([7; 32]), "elsewhere", 3600);
        let (wrong_iss, _, _) = other_iss.issue(&UserId([1; 32]), &DeviceId([2; 32]), t0);
        assert_eq!(k.verify(&wrong_iss, t0), Err(Reason::BadClaims));
        assert_eq!(k.verify("a.b", t0), Err(Reason::Malformed));
        assert_eq!(k.verify(&"x".repeat(5000), t0), Err(Reason::Malformed));
    }
}
