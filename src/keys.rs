//! The server identity: one Ed25519 key that signs the server's side of the handshake.
//!
//! # Key file format
//!
//! A key file written by `ferry keygen` ([`write_key_file`]) holds a single line: the
//! 32-byte Ed25519 seed in base64url without padding, followed by a newline. It is
//! created with mode `0600`, and [`read_key_file`] refuses a file that group or others
//! can access. For convenience [`read_key_file`] also accepts standard base64 (with or
//! without padding) and a PKCS#8 PEM Ed25519 key as written by
//! `openssl genpkey -algorithm ed25519`.
//!
//! The secret never appears in `Debug` output, logs or error messages: [`ServerKey`]
//! prints only its public half.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

/// Name of the key file that development mode creates inside `data_dir`.
pub const DEFAULT_KEY_FILE_NAME: &str = "server.key";

/// The server's Ed25519 identity key.
///
/// `Debug` shows only the public key; there is no `Display`. The secret is zeroed on
/// drop (by `ed25519_dalek`).
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKey(SigningKey);

impl ServerKey {
    /// Builds a key from its 32-byte seed (the Ed25519 "secret key").
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// Generates a new key from a cryptographically secure RNG (for example
    /// `rand::rngs::OsRng`).
    pub fn generate<R: CryptoRng + RngCore>(rng: &mut R) -> Self {
        Self(SigningKey::generate(rng))
    }

    /// Parses a seed written as base64: standard or url-safe alphabet, padded or not,
    /// surrounding whitespace ignored. It must decode to exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, KeyParseError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyParseError::Empty);
        }
        let alphabet = if text.contains(['-', '_']) {
            &alphabet::URL_SAFE
        } else {
            &alphabet::STANDARD
        };
        let engine = GeneralPurpose::new(
            alphabet,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let bytes = Zeroizing::new(engine.decode(text).map_err(|_| KeyParseError::NotBase64)?);
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| KeyParseError::WrongLength(bytes.len()))?,
        );
        Ok(Self::from_seed(*seed))
    }

    /// The signing key, for the handshake.
    pub fn signing_key(&self) -> &SigningKey {
        &self.0
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.0.verifying_key()
    }

    /// The public key as base64url without padding (what clients pin).
    pub fn public_b64u(&self) -> String {
        ferry_proto::b64u::encode(self.0.verifying_key().as_bytes())
    }

    /// The key-file line: the seed as base64url. Zeroed when dropped.
    fn seed_b64u(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.0.to_bytes());
        Zeroizing::new(ferry_proto::b64u::encode(seed.as_slice()))
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey")
            .field("public", &self.public_b64u())
            .finish_non_exhaustive()
    }
}

/// Why a base64 seed was rejected. Never contains the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// Nothing but whitespace.
    #[error("is empty")]
    Empty,
    /// Not base64 in either alphabet.
    #[error("is not valid base64")]
    NotBase64,
    /// Valid base64, but not a 32-byte seed.
    #[error("decodes to {0} bytes, expected a 32-byte Ed25519 seed")]
    WrongLength(usize),
}

/// Where [`load_or_create`] found the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `server.key` in the configuration.
    Inline,
    /// The key file named by `server.key_file`.
    File(PathBuf),
    /// Development mode reused `data_dir/server.key` from an earlier run.
    Reused(PathBuf),
    /// Development mode created a new key at this path; `serve` should log it
    /// together with the public key, since clients pinning the old one will fail.
    Generated(PathBuf),
}

/// Failure to read, write or find the server key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The key file is accessible to group or others.
    #[error(
        "{}: permissions {mode:04o} are too open; a key file must not be accessible by group or others (chmod 600)",
        path.display()
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file's contents are not a key.
    #[error(
        "{}: {reason} (expected one line of base64url: a 32-byte Ed25519 seed, as written by `ferry keygen`)",
        path.display()
    )]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong, without the contents.
        reason: KeyParseError,
    },
    /// `server.key` is not a key.
    #[error("server.key {0}")]
    Inline(KeyParseError),
    /// Production has no server key configured.
    #[error(
        "no server key configured: production needs server.key or server.key_file (create one with `ferry keygen`)"
    )]
    Missing,
}

/// Writes `key` to `path` in the key-file format, readable only by the owner.
///
/// The file is written to a temporary file in the same directory (mode `0600` from
/// creation on, so the secret is never briefly world-readable), synced, and then moved
/// into place. Without `force` an existing file is never replaced: the move is a hard
/// link, which fails if `path` exists, so two concurrent writers cannot clobber each
/// other. Missing parent directories are created (mode `0700` on Unix).
pub fn write_key_file(path: &Path, key: &ServerKey, force: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !force && fs::symlink_metadata(path).is_ok() {
        return Err(already_exists(path));
    }
    create_private_dir(&dir)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "key path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{:016x}",
        file_name.to_string_lossy(),
        rand::random::<u64>()
    ));
    let result = write_new_private(&tmp, key).and_then(|()| {
        if force {
            fs::rename(&tmp, path)
        } else {
            publish_no_clobber(&tmp, path)
        }
    });
    // After a rename the temporary name is gone; otherwise clean it up.
    let _ = fs::remove_file(&tmp);
    result?;
    sync_dir(&dir);
    Ok(())
}

/// Reads a key file, refusing one that group or others can access (on Unix).
pub fn read_key_file(path: &Path) -> Result<ServerKey, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(io_err)?;
    if !meta.is_file() {
        return Err(io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    check_private(path, &meta)?;
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err)?);
    parse_key_file(&text).map_err(|reason| KeyError::Malformed {
        path: path.to_path_buf(),
        reason,
    })
}

/// What [`load_or_create`] needs to know about the server key, as the configuration
/// says (`crate::config::Config::key_settings` makes one). Keeps this module free of
/// the configuration types: validation reads key files through [`read_key_file`], and
/// hands the key it read on here, so a key file is read once.
#[derive(Debug, Clone, Copy)]
pub enum KeySettings<'a> {
    /// `server.key`, or the file named by `server.key_file` (already read and checked).
    Configured {
        /// The key.
        key: &'a ServerKey,
        /// The key file it was read from; `None` for `server.key`.
        file: Option<&'a Path>,
    },
    /// Neither `server.key` nor `server.key_file` is set.
    Default {
        /// Where development keeps its generated key ([`DEFAULT_KEY_FILE_NAME`]).
        data_dir: &'a Path,
        /// Production refuses to run without a configured key.
        production: bool,
    },
}

/// Finds the server key the configuration asks for.
///
/// - `server.key` or `server.key_file` → the key validation already read.
/// - neither, in development → `data_dir/server.key`, reused if it exists, otherwise
///   generated and written with mode `0600` ([`KeyOrigin::Generated`]).
/// - neither, in production → [`KeyError::Missing`] (config validation already
///   refuses this).
pub fn load_or_create(settings: KeySettings<'_>) -> Result<(ServerKey, KeyOrigin), KeyError> {
    match settings {
        KeySettings::Configured { key, file: None } => Ok((key.clone(), KeyOrigin::Inline)),
        KeySettings::Configured {
            key,
            file: Some(path),
        } => Ok((key.clone(), KeyOrigin::File(path.to_path_buf()))),
        KeySettings::Default {
            production: true, ..
        } => Err(KeyError::Missing),
        KeySettings::Default {
            data_dir,
            production: false,
        } => {
            let path = data_dir.join(DEFAULT_KEY_FILE_NAME);
            if fs::symlink_metadata(&path).is_ok() {
                return Ok((read_key_file(&path)?, KeyOrigin::Reused(path)));
            }
            let key = ServerKey::generate(&mut rand::rngs::OsRng);
            match write_key_file(&path, &key, false) {
                Ok(()) => Ok((key, KeyOrigin::Generated(path))),
                // Another process created it between our check and our write: use theirs.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Ok((read_key_file(&path)?, KeyOrigin::Reused(path)))
                }
                Err(source) => Err(KeyError::Io { path, source }),
            }
        }
    }
}

fn parse_key_file(text: &str) -> Result<ServerKey, KeyParseError> {
    let trimmed = text.trim();
    if trimmed.starts_with("-----BEGIN") {
        return SigningKey::from_pkcs8_pem(trimmed)
            .map(ServerKey)
            .map_err(|_| KeyParseError::NotBase64);
    }
    ServerKey::from_base64(trimmed)
}

fn already_exists(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} already exists (use --force to replace it)",
            path.display()
        ),
    )
}

fn write_new_private(tmp: &Path, key: &ServerKey) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(tmp)?;
    let mut line = key.seed_b64u();
    line.push('\n');
    file.write_all(line.as_bytes())?;
    file.sync_all()
}

fn publish_no_clobber(tmp: &Path, path: &Path) -> io::Result<()> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(already_exists(path)),
        // Some filesystems have no hard links: fall back to check-then-rename.
        Err(_) if fs::symlink_metadata(path).is_ok() => Err(already_exists(path)),
        Err(_) => fs::rename(tmp, path),
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn sync_dir(dir: &Path) {
    // Makes the rename durable; best effort (not possible on every platform).
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &fs::Metadata) -> Result<(), KeyError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_variants_and_lengths() {
        let key = ServerKey::from_seed([0xfb; 32]);
        let std_pad = base64::engine::general_purpose::STANDARD.encode([0xfb; 32]);
        let url_nopad = ferry_proto::b64u::encode(&[0xfb; 32]);
        assert!(std_pad.contains('+') || std_pad.contains('/'));
        assert_eq!(ServerKey::from_base64(&std_pad).unwrap(), key);
        assert_eq!(
            ServerKey::from_base64(std_pad.trim_end_matches('=')).unwrap(),
            key
        );
        assert_eq!(
            ServerKey::from_base64(&format!(" {url_nopad}\n")).unwrap(),
            key
        );
        assert_eq!(
            ServerKey::from_base64(&format!("{url_nopad}=")).unwrap(),
            key
        );
        assert_eq!(ServerKey::from_base64(""), Err(KeyParseError::Empty));
        assert_eq!(
            ServerKey::from_base64("not base64!"),
            Err(KeyParseError::NotBase64)
        );
        assert_eq!(
            ServerKey::from_base64(&ferry_proto::b64u::encode(&[1; 31])),
            Err(KeyParseError::WrongLength(31))
        );
    }

    #[test]
    fn debug_shows_only_the_public_key() {
        let key = ServerKey::from_seed([7; 32]);
        let debug = format!("{key:?}");
        assert!(debug.contains(&key.public_b64u()));
        assert!(!debug.contains(key.seed_b64u().as_str()));
    }

    #[cfg(unix)]
    #[test]
    fn write_then_read_round_trips_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/server.key");
        let key = ServerKey::generate(&mut rand::rngs::OsRng);
        write_key_file(&path, &key, false).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_key_file(&path).unwrap(), key);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", key.seed_b64u().as_str()));

        let other = ServerKey::generate(&mut rand::rngs::OsRng);
        let err = write_key_file(&path, &other, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(read_key_file(&path).unwrap(), key);
        write_key_file(&path, &other, true).unwrap();
        assert_eq!(read_key_file(&path).unwrap(), other);
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            read_key_file(&path),
            Err(KeyError::Permissions { mode: 0o640, .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn accepts_pkcs8_pem() {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        use std::os::unix::fs::PermissionsExt as _;
        let key = ServerKey::from_seed([3; 32]);
        let pem = key
            .signing_key()
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        fs::write(&path, pem.as_bytes()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(&path).unwrap(), key);
    }
}
