//! `ferry-load keys`: identities for load tests.
//!
//! Generates users, devices per user and a device certificate for each device, and
//! writes them as one JSON file that the k6 scripts (`loadtest/k6`) and the Rust load
//! generator read:
//!
//! ```json
//! {"version":1,"users":[{"user":"<b64u pub>","user_seed":"<b64u>","devices":[
//!   {"device":"<b64u pub>","seed":"<b64u>","cert":{"issued_at":N,"expires_at":0,"sig":"<b64u>"}}]}]}
//! ```
//!
//! The file holds private seeds, so it is created with mode 0600.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use ed25519_dalek::SigningKey;
use ferry_proto::b64u;
use ferry_proto::keys::DeviceCertificate;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

/// Format version written to and expected in the file.
pub(crate) const VERSION: u32 = 1;

/// How far in the past certificates are dated, so a server whose clock lags a little
/// behind still accepts them (it allows 300 s the other way).
pub(crate) const ISSUED_BACKDATE_SECS: u64 = 60;

/// Arguments of `ferry-load keys`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeysArgs {
    /// Number of users (accounts).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) users: u32,
    /// Number of devices per user.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) devices: u32,
    /// Where to write the JSON (mode 0600); it is replaced if it exists.
    #[arg(long, default_value = "keys.json")]
    pub(crate) out: PathBuf,
}

/// The whole key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyFile {
    /// Always [`VERSION`].
    pub(crate) version: u32,
    /// The users, each with its devices.
    pub(crate) users: Vec<UserKeys>,
}

/// One user key and its devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserKeys {
    /// b64u of the user's Ed25519 public key (its id on the wire).
    pub(crate) user: String,
    /// b64u of the user's 32-byte Ed25519 seed.
    pub(crate) user_seed: String,
    /// The user's devices.
    pub(crate) devices: Vec<DeviceKeys>,
}

/// One device key and its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeviceKeys {
    /// b64u of the device's Ed25519 public key.
    pub(crate) device: String,
    /// b64u of the device's 32-byte Ed25519 seed.
    pub(crate) seed: String,
    /// The certificate the user key issued for this device.
    pub(crate) cert: CertJson,
}

/// A device certificate as it appears in `client_auth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CertJson {
    /// Unix seconds.
    pub(crate) issued_at: u64,
    /// Unix seconds; 0 means no expiry.
    pub(crate) expires_at: u64,
    /// b64u of the user key's signature.
    pub(crate) sig: String,
}

impl KeyFile {
    /// Generates `users` users with `devices` devices each, certificates dated
    /// `now_secs − ISSUED_BACKDATE_SECS` and never expiring.
    pub(crate) fn generate<R: RngCore + CryptoRng>(
        users: u32,
        devices: u32,
        now_secs: u64,
        rng: &mut R,
    ) -> Self {
        let issued_at = now_secs.saturating_sub(ISSUED_BACKDATE_SECS);
        let users = (0..users)
            .map(|_| {
                let user = SigningKey::generate(rng);
                let devices = (0..devices)
                    .map(|_| {
                        let device = SigningKey::generate(rng);
                        let device_pk = device.verifying_key().to_bytes();
                        let cert = DeviceCertificate::issue(&user, &device_pk, issued_at, 0);
                        DeviceKeys {
                            device: b64u::encode(&device_pk),
                            seed: b64u::encode(device.as_bytes()),
                            cert: CertJson {
                                issued_at: cert.issued_at,
                                expires_at: cert.expires_at,
                                sig: b64u::encode(&cert.sig),
                            },
                        }
                    })
                    .collect();
                UserKeys {
                    user: b64u::encode(user.verifying_key().as_bytes()),
                    user_seed: b64u::encode(user.as_bytes()),
                    devices,
                }
            })
            .collect();
        Self {
            version: VERSION,
            users,
        }
    }

    /// Writes the file as JSON with mode 0600 (on Unix), replacing any existing file.
    pub(crate) fn write(&self, path: &Path) -> anyhow::Result<()> {
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut file = opts
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        // `mode` applies only when the file is created; tighten an existing one too.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot restrict {}", path.display()))?;
        }
        file.write_all(&json)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// Runs `ferry-load keys`.
pub(crate) fn run(args: &KeysArgs) -> anyhow::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock is before 1970")?
        .as_secs();
    let Some(total) = args.users.checked_mul(args.devices) else {
        bail!("--users × --devices is too large");
    };
    let file = KeyFile::generate(args.users, args.devices, now, &mut rand::rngs::OsRng);
    file.write(&args.out)?;
    eprintln!(
        "wrote {} users, {total} devices to {}",
        args.users,
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::keys::parse_identity_key;
    use rand::SeedableRng as _;

    fn arr<const N: usize>(s: &str) -> [u8; N] {
        b64u::decode_array(s).expect("strict b64u of the right length")
    }

    #[test]
    fn every_certificate_verifies() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let file = KeyFile::generate(3, 4, 1_767_225_600, &mut rng);
        assert_eq!(file.version, VERSION);
        assert_eq!(file.users.len(), 3);
        for u in &file.users {
            let user_seed: [u8; 32] = arr(&u.user_seed);
            let user_pk = SigningKey::from_bytes(&user_seed).verifying_key();
            assert_eq!(b64u::encode(user_pk.as_bytes()), u.user);
            let user_key = parse_identity_key(&arr(&u.user)).unwrap();
            assert_eq!(u.devices.len(), 4);
            for d in &u.devices {
                let device_pk: [u8; 32] = arr(&d.device);
                let seed: [u8; 32] = arr(&d.seed);
                assert_eq!(
                    SigningKey::from_bytes(&seed).verifying_key().to_bytes(),
                    device_pk
                );
                let cert = DeviceCertificate {
                    issued_at: d.cert.issued_at,
                    expires_at: d.cert.expires_at,
                    sig: arr(&d.cert.sig),
                };
                assert_eq!(cert.issued_at, 1_767_225_600 - ISSUED_BACKDATE_SECS);
                assert_eq!(cert.expires_at, 0);
                cert.verify_signature(&user_key, &device_pk).unwrap();
                assert!(cert.valid_at(1_767_225_600));
                // Not valid for another device of the same user.
                let other: [u8; 32] = arr(&u.devices[0].device);
                if other != device_pk {
                    assert!(cert.verify_signature(&user_key, &other).is_err());
                }
            }
        }
    }

    #[test]
    fn json_shape_round_trips_and_file_is_private() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let file = KeyFile::generate(1, 1, 1_000, &mut rng);
        let v: serde_json::Value = serde_json::to_value(&file).unwrap();
        let d = &v["users"][0]["devices"][0];
        assert_eq!(v["version"], 1);
        assert!(v["users"][0]["user"].is_string() && v["users"][0]["user_seed"].is_string());
        assert!(d["device"].is_string() && d["seed"].is_string());
        assert_eq!(d["cert"]["issued_at"], 940);
        assert_eq!(d["cert"]["expires_at"], 0);

        let dir = std::env::temp_dir().join(format!("ferry-load-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.json");
        std::fs::write(&path, b"old").unwrap();
        file.write(&path).unwrap();
        let back: KeyFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, file);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
