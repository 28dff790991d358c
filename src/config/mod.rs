//! Configuration: typed, layered, validated once at startup, never global.
//!
//! Layers, each overriding the one before:
//! 1. built-in defaults (the values in [`EXAMPLE`], declared with each setting in
//!    `settings`);
//! 2. an optional TOML file (`--config PATH` or `FERRY_CONFIG`);
//! 3. environment variables `FERRY_<SECTION>_<KEY>` (`FERRY_ENV`, `FERRY_DATA_DIR` for
//!    the top-level keys), e.g. `FERRY_SERVER_LISTEN=0.0.0.0:8080`. Lists are
//!    comma-separated, booleans `true`/`false`.
//!
//! Unknown keys in the file and unknown `FERRY_*` variables are errors, so a typo never
//! silently falls back to a default. Only `FERRY_CONFIG`, `FERRY_LOG` and `FERRY_TEST_*`
//! are not settings.
//!
//! [`Config::load`] returns either a fully validated [`Config`] or a [`ConfigError`]
//! listing every problem, one line each, naming the setting and the environment
//! variable to fix it with. Pass the `Config` (or the parts a component needs) down
//! explicitly; there is no global.
//!
//! Secrets (the server key, database passwords) never appear in `Debug` output or in
//! [`Config::to_redacted_toml`].
//!
//! Each setting is declared once, in `settings` (name, type, default, range, comment,
//! printout); the example, the environment variables, validation and the printout
//! all come from there. The modules depend in one direction: `settings` and
//! `validate` use `types` (the typed [`Config`]); `validate` uses `settings` and
//! [`crate::keys`] (which knows nothing of the configuration); this module ties
//! them together.

mod duration;
mod settings;
mod tls;
mod types;
mod validate;

use std::collections::HashMap;
use std::path::Path;

pub use tls::TlsError;
pub use types::{
    AdminConfig, AdminKey, AdminScope, AuthConfig, Config, ConfigError, CorsOrigins,
    DatabaseConfig, Environment, Issue, Limits, LogConfig, LogFormat, NON_SETTING_ENV_VARS,
    REDACTED, Ratio, RedisUrl, RetentionConfig, ServerConfig, ServerKeySource, TEST_ENV_PREFIX,
    TelemetryConfig, TlsConfig, redact_db_url,
};

/// The example configuration shipped with Ferry (`ferry.example.toml`): every setting
/// with its default and a comment. A test checks that it is exactly [`example`].
pub const EXAMPLE: &str = include_str!("../../ferry.example.toml");

/// The example configuration as generated from the settings' declarations: what
/// `ferry config example` prints. Never written to disk automatically.
pub fn example() -> String {
    settings::example()
}

impl Config {
    /// Loads defaults, then `file` (or, if `None`, the file named by `FERRY_CONFIG` in
    /// `env`), then the `FERRY_*` variables in `env`, and validates the result.
    ///
    /// Validation reads the key file and the TLS files but changes nothing on disk.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env_file = env
            .get("FERRY_CONFIG")
            .filter(|p| !p.is_empty())
            .map(Path::new);
        match file.or(env_file) {
            None => validate::load_layers(None, env),
            Some(path) => {
                let name = path.display().to_string();
                match std::fs::read_to_string(path) {
                    Ok(text) => validate::load_layers(Some((&text, &name)), env),
                    Err(e) => Err(ConfigError {
                        issues: vec![Issue {
                            setting: format!("config file {name}"),
                            env_var: None,
                            message: format!("cannot read: {e}"),
                        }],
                    }),
                }
            }
        }
    }

    /// Like [`Config::load`], with TOML text instead of a file.
    pub fn from_toml(text: &str, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        validate::load_layers(Some((text, "the configuration")), env)
    }

    /// [`Config::load`] with this process's environment.
    pub fn from_process_env(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load(file, &process_env())
    }

    /// The effective configuration as TOML, with the server key, database passwords and
    /// admin key hashes replaced by [`REDACTED`]. Durations are written in their largest exact unit.
    pub fn to_redacted_toml(&self) -> String {
        settings::dump(self)
    }
}

/// The `FERRY_*` variables of this process (other variables are never looked at).
/// A non-UTF-8 value is converted lossily, so validation reports it as invalid rather
/// than ignoring it.
pub fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with("FERRY_")
                .then(|| (k, v.to_string_lossy().into_owned()))
        })
        .collect()
}
