//! Keys, certificates, linking a new device, and the profile file.
//!
//! Nothing here does network IO; [`Profile::save`] and [`Profile::load`] touch the
//! file system, and the `generate` functions draw from the operating system's RNG.

use std::path::Path;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize as _;

use crate::{ClientError, now_secs};
use ferry_proto::b64u;
use ferry_proto::handshake::{DeviceCredentials, ServerPin};
use ferry_proto::keys::{self, DeviceCertificate};

/// The user (account) key. Whoever holds it can certify devices and revoke them;
/// keep it on as few devices as possible.
///
/// ```
/// use ferry_client::{DeviceKey, UserKey};
///
/// let user = UserKey::generate();
/// let device = DeviceKey::generate();
/// // issued now-ish, never expires
/// let cert = user.certify(&device.public(), 1_767_225_600, 0);
/// let creds = device.credentials(user.public(), cert);
/// assert_eq!(creds.user, user.public());
/// ```
#[derive(Clone)]
pub struct UserKey {
    key: SigningKey,
}

/// One device's own key. It never leaves the device.
#[derive(Clone)]
pub struct DeviceKey {
    key: SigningKey,
}

macro_rules! key_common {
    ($ty:ident, $what:literal) => {
        impl $ty {
            #[doc = concat!("A fresh random ", $what, " key from the operating system's RNG.")]
            pub fn generate() -> Self {
                Self {
                    key: SigningKey::generate(&mut rand::rngs::OsRng),
                }
            }

            #[doc = concat!("The ", $what, " key with this Ed25519 seed (secret).")]
            pub fn from_seed(seed: &[u8; 32]) -> Self {
                Self {
                    key: SigningKey::from_bytes(seed),
                }
            }

            /// The Ed25519 seed. Secret: store it only where the profile keeps secrets.
            pub fn seed(&self) -> [u8; 32] {
                self.key.to_bytes()
            }

            /// The public key (what the protocol uses as the id).
            pub fn public(&self) -> [u8; 32] {
                self.key.verifying_key().to_bytes()
            }

            /// The public key as b64u (43 characters), as on the wire.
            pub fn public_b64u(&self) -> String {
                b64u::encode(&self.public())
            }

            /// The underlying signing key.
            pub fn signing_key(&self) -> &SigningKey {
                &self.key
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("public", &self.public_b64u())
                    .finish_non_exhaustive()
            }
        }
    };
}

key_common!(UserKey, "user");
key_common!(DeviceKey, "device");

impl UserKey {
    /// Issues a certificate for `device_public` (Unix seconds; `expires_at = 0`
    /// means never).
    pub fn certify(
        &self,
        device_public: &[u8; 32],
        issued_at: u64,
        expires_at: u64,
    ) -> DeviceCertificate {
        DeviceCertificate::issue(&self.key, device_public, issued_at, expires_at)
    }

    /// Certifies a new device and wraps the result as a [`LinkGrant`] to hand to
    /// it, with the server it should use (URL and, when known, the pinned key).
    pub fn link(
        &self,
        device_public: &[u8; 32],
        issued_at: u64,
        expires_at: u64,
        server_url: Option<String>,
        server_key: Option<[u8; 32]>,
    ) -> LinkGrant {
        LinkGrant {
            user: self.public(),
            device: *device_public,
            cert: self.certify(device_public, issued_at, expires_at),
            server_url,
            server_key,
        }
    }

    /// Signs the revocation of `device` at `ts_ms` (Unix milliseconds).
    pub fn sign_revocation(&self, device: &[u8; 32], ts_ms: u64) -> [u8; 64] {
        keys::sign_revocation(&self.key, device, ts_ms)
    }
}

impl DeviceKey {
    /// The credentials this device authenticates with.
    pub fn credentials(&self, user: [u8; 32], cert: DeviceCertificate) -> DeviceCredentials {
        DeviceCredentials {
            user,
            device_key: self.key.clone(),
            cert,
        }
    }
}

/// A certificate for a new device, as the user's existing device hands it over.
///
/// Linking a device:
/// 1. the new device generates a [`DeviceKey`] and shows its public key (b64u);
/// 2. a device holding the [`UserKey`] calls [`UserKey::link`] with it and shows the
///    [`LinkGrant::encode`]d text;
/// 3. the new device [`LinkGrant::decode`]s it (which checks the signature) and
///    builds its [`Profile::join`].
///
/// The grant holds only public values: it can travel over any channel the user
/// can see both ends of (copy and paste, a QR code).
///
/// ```
/// use ferry_client::{DeviceKey, LinkGrant, Profile, UserKey};
///
/// let user = UserKey::generate(); // on the existing device
/// let new_device = DeviceKey::generate(); // on the new device
/// let text = user
///     .link(&new_device.public(), 1_767_225_600, 0, Some("wss://relay.example/v1/ws".into()), None)
///     .encode();
/// // on the new device:
/// let grant = LinkGrant::decode(&text)?;
/// let profile = Profile::join(grant.server_url.clone().unwrap(), None, &new_device, &grant)?;
/// assert_eq!(profile.user_public, user.public());
/// assert!(profile.user_secret.is_none());
/// # Ok::<(), ferry_client::ClientError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkGrant {
    /// The user's public key.
    pub user: [u8; 32],
    /// The certified device's public key.
    pub device: [u8; 32],
    /// The certificate.
    pub cert: DeviceCertificate,
    /// The server URL the existing device uses.
    pub server_url: Option<String>,
    /// The server key the existing device pinned.
    pub server_key: Option<[u8; 32]>,
}

#[derive(Serialize, Deserialize)]
struct CertJson {
    issued_at: u64,
    expires_at: u64,
    sig: String,
}

impl CertJson {
    fn from_cert(c: &DeviceCertificate) -> Self {
        Self {
            issued_at: c.issued_at,
            expires_at: c.expires_at,
            sig: b64u::encode(&c.sig),
        }
    }

    fn to_cert(&self) -> Result<DeviceCertificate, ClientError> {
        Ok(DeviceCertificate {
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            sig: decode_fixed(&self.sig, "cert.sig")?,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct GrantJson {
    v: u32,
    user: String,
    device: String,
    cert: CertJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_key: Option<String>,
}

fn decode_fixed<const N: usize>(text: &str, what: &str) -> Result<[u8; N], ClientError> {
    b64u::decode_array::<N>(text)
        .map_err(|_| ClientError::Invalid(format!("{what} must be b64u of {N} bytes")))
}

fn check_cert(
    user: &[u8; 32],
    device: &[u8; 32],
    cert: &DeviceCertificate,
) -> Result<(), ClientError> {
    let user_vk = keys::parse_identity_key(user)
        .map_err(|_| ClientError::Invalid("the user key is not a valid Ed25519 key".into()))?;
    cert.verify_signature(&user_vk, device).map_err(|_| {
        ClientError::Invalid("the certificate does not verify for this user and device".into())
    })
}

impl LinkGrant {
    /// The grant as one line of text (b64u of a small JSON document).
    pub fn encode(&self) -> String {
        let json = GrantJson {
            v: 1,
            user: b64u::encode(&self.user),
            device: b64u::encode(&self.device),
            cert: CertJson::from_cert(&self.cert),
            server_url: self.server_url.clone(),
            server_key: self.server_key.as_ref().map(|k| b64u::encode(k)),
        };
        b64u::encode(&serde_json::to_vec(&json).expect("grant serializes"))
    }

    /// Parses [`Self::encode`]'s text and checks the certificate's signature.
    pub fn decode(text: &str) -> Result<Self, ClientError> {
        let bytes = b64u::decode(text.trim())
            .map_err(|_| ClientError::Invalid("the link grant is not b64u".into()))?;
        let json: GrantJson = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Invalid(format!("the link grant is malformed: {e}")))?;
        if json.v != 1 {
            return Err(ClientError::Invalid(format!(
                "link grant version {} is not supported",
                json.v
            )));
        }
        let grant = Self {
            user: decode_fixed(&json.user, "user")?,
            device: decode_fixed(&json.device, "device")?,
            cert: json.cert.to_cert()?,
            server_url: json.server_url,
            server_key: json
                .server_key
                .as_deref()
                .map(|k| decode_fixed(k, "server_key"))
                .transpose()?,
        };
        check_cert(&grant.user, &grant.device, &grant.cert)?;
        Ok(grant)
    }
}

/// Everything one device needs to connect, as stored in its profile file.
///
/// ```no_run
/// use ferry_client::{Client, ClientOptions, Profile};
///
/// # async fn demo() -> Result<(), ferry_client::ClientError> {
/// let path = std::path::Path::new("ferry-client/profile.json");
/// // First run: a new user with this device; the server key is pinned on first use.
/// let mut profile = match Profile::load(path) {
///     Ok(p) => p,
///     Err(_) => Profile::create("ws://127.0.0.1:8080/v1/ws", None),
/// };
/// let client = Client::connect(ClientOptions::from_profile(&profile)).await?;
/// if profile.server_key.is_none() {
///     profile.server_key = Some(client.server_key());
/// }
/// profile.save(path)?; // mode 0600
/// # Ok(())
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Profile {
    /// `ws://` or `wss://` URL of the server's `/v1/ws`.
    pub server_url: String,
    /// The pinned server key; `None` until first use (TOFU).
    pub server_key: Option<[u8; 32]>,
    /// The user's public key.
    pub user_public: [u8; 32],
    /// The user key's seed, only on devices that hold it.
    pub user_secret: Option<[u8; 32]>,
    /// This device's key seed.
    pub device_secret: [u8; 32],
    /// This device's certificate.
    pub cert: DeviceCertificate,
}

impl Drop for Profile {
    fn drop(&mut self) {
        self.user_secret.zeroize();
        self.device_secret.zeroize();
    }
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("server_url", &self.server_url)
            .field(
                "server_key",
                &self.server_key.as_ref().map(|k| b64u::encode(k)),
            )
            .field("user_public", &b64u::encode(&self.user_public))
            .field("holds_user_key", &self.user_secret.is_some())
            .field("device_public", &b64u::encode(&self.device_public()))
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct ProfileJson {
    v: u32,
    server_url: String,
    #[serde(default)]
    server_key: Option<String>,
    user_public: String,
    #[serde(default)]
    user_secret: Option<String>,
    device_secret: String,
    cert: CertJson,
}

impl Drop for ProfileJson {
    fn drop(&mut self) {
        self.user_secret.zeroize();
        self.device_secret.zeroize();
    }
}

impl Profile {
    /// A new user with this as its first device: generates the user key and the
    /// device key and certifies the device (issued now, no expiry).
    pub fn create(server_url: impl Into<String>, server_key: Option<[u8; 32]>) -> Self {
        let user = UserKey::generate();
        let device = DeviceKey::generate();
        let cert = user.certify(&device.public(), now_secs(), 0);
        Self {
            server_url: server_url.into(),
            server_key,
            user_public: user.public(),
            user_secret: Some(user.seed()),
            device_secret: device.seed(),
            cert,
        }
    }

    /// A linked device's profile: its own key and the grant a user-key device issued
    /// for it (see [`LinkGrant`]). Fails when the grant is for another device.
    /// `server_key` wins over the grant's; when both are set they must agree.
    pub fn join(
        server_url: impl Into<String>,
        server_key: Option<[u8; 32]>,
        device: &DeviceKey,
        grant: &LinkGrant,
    ) -> Result<Self, ClientError> {
        if grant.device != device.public() {
            return Err(ClientError::Invalid(
                "the link grant was issued for another device key".into(),
            ));
        }
        check_cert(&grant.user, &grant.device, &grant.cert)?;
        let server_key = match (server_key, grant.server_key) {
            (Some(a), Some(b)) if a != b => {
                return Err(ClientError::Invalid(
                    "the link grant pins a different server key than this device".into(),
                ));
            }
            (a, b) => a.or(b),
        };
        Ok(Self {
            server_url: server_url.into(),
            server_key,
            user_public: grant.user,
            user_secret: None,
            device_secret: device.seed(),
            cert: grant.cert,
        })
    }

    /// This device's key.
    pub fn device_key(&self) -> DeviceKey {
        DeviceKey::from_seed(&self.device_secret)
    }

    /// This device's public key.
    pub fn device_public(&self) -> [u8; 32] {
        self.device_key().public()
    }

    /// The user key, on devices that hold it.
    pub fn user_key(&self) -> Option<UserKey> {
        self.user_secret.as_ref().map(UserKey::from_seed)
    }

    /// The credentials for the handshake.
    pub fn credentials(&self) -> DeviceCredentials {
        self.device_key().credentials(self.user_public, self.cert)
    }

    /// How to trust the server: the pinned key, or the first one seen.
    pub fn pin(&self) -> ServerPin {
        match self.server_key {
            Some(k) => ServerPin::Key(k),
            None => ServerPin::FirstUse,
        }
    }

    /// Checks that the certificate verifies for this user and device and that the
    /// user secret, when present, belongs to the user key.
    pub fn validate(&self) -> Result<(), ClientError> {
        check_cert(&self.user_public, &self.device_public(), &self.cert)?;
        if let Some(user) = self.user_key()
            && user.public() != self.user_public
        {
            return Err(ClientError::Invalid(
                "user_secret does not belong to user_public".into(),
            ));
        }
        Ok(())
    }

    /// The profile as JSON (secrets included: treat the text as a secret).
    pub fn to_json(&self) -> String {
        let json = ProfileJson {
            v: 1,
            server_url: self.server_url.clone(),
            server_key: self.server_key.as_ref().map(|k| b64u::encode(k)),
            user_public: b64u::encode(&self.user_public),
            user_secret: self.user_secret.as_ref().map(|k| b64u::encode(k)),
            device_secret: b64u::encode(&self.device_secret),
            cert: CertJson::from_cert(&self.cert),
        };
        serde_json::to_string_pretty(&json).expect("profile serializes")
    }

    /// Parses [`Self::to_json`]'s text and [`validate`](Self::validate)s it.
    pub fn from_json(text: &str) -> Result<Self, ClientError> {
        let json: ProfileJson = serde_json::from_str(text)
            .map_err(|e| ClientError::Invalid(format!("the profile is malformed: {e}")))?;
        if json.v != 1 {
            return Err(ClientError::Invalid(format!(
                "profile version {} is not supported",
                json.v
            )));
        }
        let profile = Self {
            server_url: json.server_url.clone(),
            server_key: json
                .server_key
                .as_deref()
                .map(|k| decode_fixed(k, "server_key"))
                .transpose()?,
            user_public: decode_fixed(&json.user_public, "user_public")?,
            user_secret: json
                .user_secret
                .as_deref()
                .map(|k| decode_fixed(k, "user_secret"))
                .transpose()?,
            device_secret: decode_fixed(&json.device_secret, "device_secret")?,
            cert: json.cert.to_cert()?,
        };
        profile.validate()?;
        Ok(profile)
    }

    /// Writes the profile to `path` as JSON, readable only by its owner (mode 0600
    /// on Unix). The file is replaced atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ClientError> {
        write_private(path.as_ref(), self.to_json().as_bytes())
    }

    /// Reads a profile written by [`Self::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let text = std::fs::read_to_string(path)?;
        Self::from_json(&text)
    }
}

/// Writes `bytes` to `path` so that only the owner can read it (mode 0600 on Unix),
/// through a temporary file in the same directory and a rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    use std::io::Write as _;
    let name = path
        .file_name()
        .ok_or_else(|| ClientError::Invalid(format!("{} is not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_round_trips_and_checks() {
        let p = Profile::create("ws://127.0.0.1:1/v1/ws", Some([9; 32]));
        p.validate().unwrap();
        let q = Profile::from_json(&p.to_json()).unwrap();
        assert_eq!(p, q);
        assert!(!format!("{p:?}").contains(&b64u::encode(&p.device_secret)));

        let mut bad = p.clone();
        bad.user_public = UserKey::generate().public();
        assert!(bad.validate().is_err());
        assert!(Profile::from_json(&bad.to_json()).is_err());
    }

    #[test]
    fn save_is_private() {
        let dir = std::env::temp_dir().join(format!("ferry-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("profile.json");
        let p = Profile::create("ws://127.0.0.1:1/v1/ws", None);
        p.save(&path).unwrap();
        p.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(Profile::load(&path).unwrap(), p);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn link_grant_flow() {
        let owner = Profile::create("wss://relay.example/v1/ws", Some([3; 32]));
        let user = owner.user_key().unwrap();
        let new_device = DeviceKey::generate();
        let grant = user.link(
            &new_device.public(),
            100,
            0,
            Some(owner.server_url.clone()),
            owner.server_key,
        );
        let decoded = LinkGrant::decode(&grant.encode()).unwrap();
        assert_eq!(decoded, grant);
        let joined =
            Profile::join("wss://relay.example/v1/ws", None, &new_device, &decoded).unwrap();
        assert_eq!(joined.server_key, Some([3; 32]));
        assert_eq!(joined.user_public, owner.user_public);
        assert!(joined.user_key().is_none());
        joined.validate().unwrap();

        // For another device, or pinning another server: refused.
        assert!(Profile::join("x", None, &DeviceKey::generate(), &decoded).is_err());
        assert!(Profile::join("x", Some([4; 32]), &new_device, &decoded).is_err());
        // Tampered.
        let mut forged = grant.clone();
        forged.device = DeviceKey::generate().public();
        assert!(LinkGrant::decode(&forged.encode()).is_err());
        assert!(LinkGrant::decode("not a grant").is_err());
    }
}
