//! Loading the TLS certificate chain and key into a rustls server configuration.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::types::TlsConfig;

/// Why the TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// `"tls.cert"` or `"tls.key"`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// `"tls.cert"` or `"tls.key"`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The private key does not belong to the first certificate of the chain.
    #[error("the private key does not match the certificate in tls.cert")]
    KeyMismatch,
    /// rustls refused the pair for another reason (e.g. an unsupported key type).
    #[error("rustls rejected the certificate and key: {0}")]
    Rejected(rustls::Error),
}

impl TlsError {
    /// The setting to blame: `"tls.cert"` or `"tls.key"`.
    pub fn setting(&self) -> &'static str {
        match self {
            Self::Read { setting, .. } | Self::Pem { setting, .. } => setting,
            Self::KeyMismatch | Self::Rejected(_) => "tls.key",
        }
    }
}

impl TlsConfig {
    /// Reads the PEM files and builds a rustls server configuration with the ring
    /// provider, the safe default protocol versions and no client authentication.
    ///
    /// Fails if either file is unreadable or not PEM, or if the key does not match the
    /// end-entity certificate. The caller sets ALPN protocols on the result.
    pub fn load_rustls(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = read_chain(&self.cert)?;
        let key = read_key(&self.key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rejected)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    TlsError::KeyMismatch
                }
                other => TlsError::Rejected(other),
            })?;
        Ok(Arc::new(config))
    }

    /// When the end-entity certificate (the first of `cert`) expires: its
    /// `notAfter`, in Unix seconds.
    pub fn certificate_not_after(&self) -> Result<i64, TlsError> {
        let chain = read_chain(&self.cert)?;
        let (_, leaf) =
            x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| TlsError::Pem {
                setting: "tls.cert",
                path: self.cert.clone(),
                reason: format!("not an X.509 certificate: {e}"),
            })?;
        Ok(leaf.validity().not_after.timestamp())
    }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        setting,
        path: path.to_path_buf(),
        source,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |reason: String| TlsError::Pem {
        setting: "tls.cert",
        path: path.to_path_buf(),
        reason,
    };
    let bytes = read("tls.cert", path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(format!("not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(pem_err("contains no PEM CERTIFICATE block".into()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("tls.key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        setting: "tls.key",
        path: path.to_path_buf(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "contains no PEM private key (PKCS#8, PKCS#1 or SEC1)".into()
            }
            other => format!("not a valid PEM private key: {other}"),
        },
    })
}
