//! Authentication of REST callers: device logins by challenge, access tokens (JWT),
//! refresh-token families, revocation, and admin API keys.
//!
//! Nothing here knows HTTP: `api` turns requests into calls of [`Auth`] and its
//! errors into responses. The only way to get an [`Identity`] is
//! [`Auth::authenticate`], which verifies the token and asks the store, on every
//! request, whether the token's `jti` was revoked and whether its device still may
//! act, so logout and revocation take effect on the next request.
//!
//! # Layout
//! - [`jwt`]: signing and verifying access tokens.
//! - [`refresh`]: refresh tokens and their hashes.
//! - [`admin_keys`]: admin API keys, compared in constant time.

pub mod admin_keys;
pub mod jwt;
pub mod refresh;

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::keys::{self, DeviceCertificate};
use rand::RngCore as _;

use crate::config::{AdminConfig, AuthConfig};
use crate::keys::ServerKey;
use crate::model::{
    AccessStatus, AuthChallenge, DeviceCert, DeviceId, NewRefreshToken, RefreshRotation,
    RefreshSuccessor, UnixMs, UserId,
};
use crate::relay::Relay;
use crate::store::{AuthStore, StoreError};
use admin_keys::AdminKeys;
use jwt::JwtKeys;

/// How long a login challenge may be redeemed.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);

/// Why a caller was refused. Clients only ever learn "invalid token" or "login
/// refused"; the reason goes to metrics and debug logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// No credentials.
    Missing,
    /// Not shaped like a token of ours.
    Malformed,
    /// A header that is not exactly `{"alg":"EdDSA","typ":"JWT","kid":<ours>}`.
    BadHeader,
    /// The signature does not verify with our key.
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `nbf` or `iat` lies in the future.
    NotYetValid,
    /// A claim is missing, mistyped or not ours (`aud`, `iss`, lifetime).
    BadClaims,
    /// The token was revoked (logout, revoked refresh family).
    TokenRevoked,
    /// The token's device was revoked.
    DeviceRevoked,
    /// The token's device is unknown (its user was erased).
    UnknownDevice,
    /// A login with a bad certificate or identity key.
    BadCertificate,
    /// A login with an unknown, expired or used challenge, or a bad signature over it.
    BadChallenge,
    /// A spent refresh token was presented again: its family is revoked now.
    Reused,
    /// An unknown, expired or revoked refresh token.
    BadRefresh,
}

impl Reason {
    /// The label used in metrics.
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::BadHeader => "header",
            Self::BadSignature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadClaims => "claims",
            Self::TokenRevoked => "token_revoked",
            Self::DeviceRevoked => "device_revoked",
            Self::UnknownDevice => "unknown_device",
            Self::BadCertificate => "certificate",
            Self::BadChallenge => "challenge",
            Self::Reused => "refresh_reused",
            Self::BadRefresh => "refresh_invalid",
        }
    }
}

/// A refused or failed authentication.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The caller is not authenticated.
    #[error("refused ({})", .0.metric_label())]
    Refused(Reason),
    /// Storage failed: retry later.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An authenticated REST caller. Only [`Auth::authenticate`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The user: every request acts on this user's data only.
    pub user: UserId,
    /// The device the token was issued to.
    pub device: DeviceId,
    /// The token's id.
    pub jti: String,
    /// The token's expiry, Unix seconds.
    pub expires_at: u64,
}

/// An access token and the refresh token that renews it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPair {
    /// The JWT.
    pub access_token: String,
    /// Its expiry, Unix seconds.
    pub expires_at: u64,
    /// Its lifetime in seconds.
    pub expires_in: u64,
    /// The opaque refresh token (shown once; stored only as a hash).
    pub refresh_token: String,
}

/// A login request: the device proves it holds its key by signing a challenge.
#[derive(Clone, Debug)]
pub struct Login {
    /// User key.
    pub user: [u8; 32],
    /// Device key.
    pub device: [u8; 32],
    /// The user's certificate for the device.
    pub cert: DeviceCertificate,
    /// The challenge from [`Auth::challenge`].
    pub challenge: [u8; 32],
    /// `Ed25519(device_sk, "ferry-rest/v1" || 0x00 || challenge || server_key)`.
    pub sig: [u8; 64],
}

/// The REST authenticator: keys, lifetimes and admin keys.
pub struct Auth {
    jwt: JwtKeys,
    refresh_ttl: Duration,
    admin: AdminKeys,
    store: Arc<dyn AuthStore>,
    relay: Relay,
}

/// 32 (or `N`) bytes from the operating system's RNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut out);
    out
}

/// `N` random bytes as b64u.
pub(crate) fn random_b64u<const N: usize>() -> String {
    ferry_proto::b64u::encode(&random_bytes::<N>())
}

fn ms(secs: u64) -> UnixMs {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn secs(ms: UnixMs) -> u64 {
    u64::try_from(ms / 1000).unwrap_or(0)
}

impl Auth {
    /// The authenticator for this server key and configuration.
    pub fn new(
        key: &ServerKey,
        auth: &AuthConfig,
        admin: &AdminConfig,
        store: Arc<dyn AuthStore>,
        relay: Relay,
    ) -> Self {
        Self {
            store,
            relay,
            jwt: JwtKeys::new(key, &auth.issuer, auth.token_ttl.as_secs()),
            refresh_ttl: auth.refresh_ttl,
            admin: AdminKeys::new(admin),
        }
    }

    /// The access-token keys (for the JWKS document and benchmarks).
    pub fn jwt(&self) -> &JwtKeys {
        &self.jwt
    }

    /// The admin keys.
    pub fn admin_keys(&self) -> &AdminKeys {
        &self.admin
    }

    /// Issues a single-use login challenge for `device` of `user`.
    pub async fn challenge(
        &self,
        user: UserId,
        device: DeviceId,
        now: UnixMs,
    ) -> Result<AuthChallenge, StoreError> {
        let c = AuthChallenge {
            challenge: random_bytes(),
            user,
            device,
            expires_at: now + CHALLENGE_TTL.as_millis() as i64,
        };
        self.store.put_challenge(&c).await?;
        Ok(c)
    }

    /// Checks a login like the handshake checks `client_auth` (strict signatures,
    /// weak keys refused, certificate time rules, device not revoked, registered on
    /// first sight), consumes the challenge, and issues a token pair.
    pub async fn login(&self, req: &Login, now: UnixMs) -> Result<TokenPair, AuthError> {
        let refused = |r| AuthError::Refused(r);
        let user_key =
            keys::parse_identity_key(&req.user).map_err(|_| refused(Reason::BadCertificate))?;
        let device_key =
            keys::parse_identity_key(&req.device).map_err(|_| refused(Reason::BadCertificate))?;
        req.cert
            .verify_signature(&user_key, &req.device)
            .map_err(|_| refused(Reason::BadCertificate))?;
        if !req.cert.valid_at(secs(now)) {
            return Err(refused(Reason::BadCertificate));
        }
        keys::verify_rest_challenge(&device_key, &req.challenge, self.jwt.public_key(), &req.sig)
            .map_err(|_| refused(Reason::BadChallenge))?;
        let (user, device) = (UserId(req.user), DeviceId(req.device));
        if !self
            .store
            .take_challenge(&req.challenge, &user, &device, now)
            .await?
        {
            return Err(refused(Reason::BadChallenge));
        }
        let cert = DeviceCert {
            issued_at: req.cert.issued_at,
            expires_at: req.cert.expires_at,
            sig: req.cert.sig,
        };
        if !self
            .relay
            .admit_device(&user, &device, &cert, now)
            .await?
            .active
        {
            return Err(refused(Reason::DeviceRevoked));
        }
        Ok(self.issue_pair(&user, &device, now).await?)
    }

    /// Issues a token pair (a new refresh family) for an authenticated device: after
    /// a login, or for the WebSocket `token` message.
    pub async fn issue_pair(
        &self,
        user: &UserId,
        device: &DeviceId,
        now: UnixMs,
    ) -> Result<TokenPair, StoreError> {
        let now_s = secs(now);
        let (access_token, jti, exp) = self.jwt.issue(user, device, now_s);
        let (refresh_token, token_hash) = refresh::generate();
        self.store
            .put_refresh_token(&NewRefreshToken {
                token_hash,
                family: refresh::new_family(),
                user: *user,
                device: *device,
                created_at: now,
                expires_at: now.saturating_add(self.refresh_ttl.as_millis() as i64),
                access_jti: jti,
                access_expires_at: ms(exp + jwt::LEEWAY_SECS),
            })
            .await?;
        Ok(TokenPair {
            access_token,
            expires_at: exp,
            expires_in: exp - now_s,
            refresh_token,
        })
    }

    /// Rotates a refresh token: the presented one is spent, a new pair issued in the
    /// same family. A spent token revokes the family ([`Reason::Reused`]).
    pub async fn refresh(&self, presented: &str, now: UnixMs) -> Result<TokenPair, AuthError> {
        let hash = refresh::hash(presented).ok_or(AuthError::Refused(Reason::BadRefresh))?;
        let now_s = secs(now);
        let jti = random_b64u::<16>();
        let exp = self.jwt.expiry(now_s);
        let (refresh_token, token_hash) = refresh::generate();
        let next = RefreshSuccessor {
            token_hash,
            created_at: now,
            expires_at: now.saturating_add(self.refresh_ttl.as_millis() as i64),
            access_jti: jti.clone(),
            access_expires_at: ms(exp + jwt::LEEWAY_SECS),
        };
        match self.store.rotate_refresh_token(&hash, &next, now).await? {
            RefreshRotation::Rotated { user, device } => Ok(TokenPair {
                access_token: self.jwt.sign(&user, &device, now_s, &jti),
                expires_at: exp,
                expires_in: exp - now_s,
                refresh_token,
            }),
            RefreshRotation::Reused => Err(AuthError::Refused(Reason::Reused)),
            RefreshRotation::Invalid => Err(AuthError::Refused(Reason::BadRefresh)),
        }
    }

    /// Verifies an access token without asking the store (signature, header and
    /// claims only). [`Self::authenticate`] is what requests use.
    pub fn verify_token(&self, token: &str, now: UnixMs) -> Result<jwt::Verified, Reason> {
        self.jwt.verify(token, secs(now))
    }

    /// Authenticates a bearer token: verified, not revoked, its device active.
    pub async fn authenticate(&self, token: &str, now: UnixMs) -> Result<Identity, AuthError> {
        let v = self.verify_token(token, now).map_err(AuthError::Refused)?;
        match self.store.access_status(&v.user, &v.device, &v.jti).await? {
            AccessStatus::Active => Ok(Identity {
                user: v.user,
                device: v.device,
                jti: v.jti,
                expires_at: v.exp,
            }),
            AccessStatus::DeviceUnknown => Err(AuthError::Refused(Reason::UnknownDevice)),
            AccessStatus::DeviceRevoked => Err(AuthError::Refused(Reason::DeviceRevoked)),
            AccessStatus::TokenRevoked => Err(AuthError::Refused(Reason::TokenRevoked)),
        }
    }

    /// Logout: the token's `jti` is denylisted until it would expire anyway, and its
    /// refresh family revoked.
    pub async fn logout(&self, id: &Identity, now: UnixMs) -> Result<(), StoreError> {
        self.store
            .revoke_access_token(&id.jti, ms(id.expires_at + jwt::LEEWAY_SECS), now)
            .await
    }
}
