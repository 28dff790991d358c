//! Admin API keys: configured as SHA-256 hashes only; a presented key is hashed and
//! compared with every configured hash in constant time (CWE-208), without stopping
//! at the first match, so the time taken says nothing about which key, if any, was
//! close.

use sha2::{Digest as _, Sha256};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

use crate::config::{AdminConfig, AdminScope};

/// Longest key accepted (a generated key is 43 characters).
pub const MAX_KEY_LEN: usize = 256;

/// The configured keys.
#[derive(Clone, Debug)]
pub struct AdminKeys {
    keys: Vec<(String, AdminScope, [u8; 32])>,
}

/// A key that matched: its name (for logs) and scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminIdentity {
    /// The configured name.
    pub name: String,
    /// What it may do.
    pub scope: AdminScope,
}

impl AdminKeys {
    /// The keys of the `[admin]` section.
    pub fn new(config: &AdminConfig) -> Self {
        Self {
            keys: config
                .keys
                .iter()
                .map(|k| (k.name.clone(), k.scope, k.sha256))
                .collect(),
        }
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key's identity, if `presented` is one of the configured keys.
    pub fn check(&self, presented: &str) -> Option<AdminIdentity> {
        if presented.is_empty() || presented.len() > MAX_KEY_LEN {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Index + 1 of the matching key (0: none), selected without branching.
        let mut found = 0u32;
        for (i, (_, _, hash)) in self.keys.iter().enumerate() {
            let hit = digest.ct_eq(hash);
            found = u32::conditional_select(&found, &(i as u32 + 1), hit);
        }
        let (name, scope, _) = self.keys.get(found.checked_sub(1)? as usize)?;
        Some(AdminIdentity {
            name: name.clone(),
            scope: *scope,
        })
    }
}

/// `sha256` hex of a key, as the configuration wants it.
pub fn hash_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdminKey;

    fn hex32(hex: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn matches_by_hash_only() {
        let keys = AdminKeys::new(&AdminConfig {
            failure_burst: 10,
            keys: vec![
                AdminKey {
                    name: "ro".into(),
                    scope: AdminScope::Read,
                    sha256: hex32(&hash_hex("reader-key")),
                },
                AdminKey {
                    name: "rw".into(),
                    scope: AdminScope::Write,
                    sha256: hex32(&hash_hex("writer-key")),
                },
            ],
        });
        assert_eq!(keys.check("reader-key").unwrap().scope, AdminScope::Read);
        assert_eq!(keys.check("writer-key").unwrap().name, "rw");
        assert_eq!(keys.check("writer-kez"), None);
        assert_eq!(keys.check(""), None);
        assert_eq!(keys.check(&hash_hex("writer-key")), None);
        assert_eq!(keys.check(&"k".repeat(MAX_KEY_LEN + 1)), None);
    }
}
