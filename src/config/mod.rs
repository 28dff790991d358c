//! Configuration: typed, layered, validated once at startup, never global.
//!
//! Layers, each overriding the one before:
//! 1. built-in defaults (the values in [`EXAMPLE`]);
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

mod duration;
mod raw;
mod tls;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use tls::TlsError;

use crate::keys::ServerKey;
use raw::{
    RawAdmin, RawAdminKey, RawAuth, RawConfig, RawDatabase, RawLimits, RawRedis, RawServer, RawTls,
};

/// The example configuration shipped with Ferry: every setting with its default and a
/// comment. Printed by `ferry config example`; never written to disk automatically.
pub const EXAMPLE: &str = include_str!("../../ferry.example.toml");

/// The value that replaces secrets in printed configuration.
pub const REDACTED: &str = "REDACTED";

/// Environment variables with the `FERRY_` prefix that are not settings.
pub const NON_SETTING_ENV_VARS: &[&str] = &["FERRY_CONFIG", "FERRY_LOG"];

/// Prefix of environment variables reserved for tests (never settings).
pub const TEST_ENV_PREFIX: &str = "FERRY_TEST_";

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Development or production; production refuses unsafe settings.
    pub env: Environment,
    /// Where the server keeps its files (the SQLite database, the development key).
    pub data_dir: PathBuf,
    /// Listeners and HTTP-level settings.
    pub server: ServerConfig,
    /// Where the server identity key comes from (`server.key` / `server.key_file`).
    /// Load it with [`crate::keys::load_or_create`].
    pub server_key: ServerKeySource,
    /// TLS for the main listener; `None` serves plain `ws://` (development, or behind a
    /// TLS-terminating proxy with `server.allow_insecure_ws`).
    pub tls: Option<TlsConfig>,
    /// The database.
    pub database: DatabaseConfig,
    /// Resource limits and timeouts.
    pub limits: Limits,
    /// REST API tokens.
    pub auth: AuthConfig,
    /// `[redis] url`: cross-instance live relay over Redis pub/sub, for several
    /// instances on one PostgreSQL database; `None` runs a single instance.
    pub redis_url: Option<RedisUrl>,
    /// The admin API.
    pub admin: AdminConfig,
}

/// A Redis URL (`redis://` or `rediss://`); `Debug` hides its password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl RedisUrl {
    /// The URL with any password replaced.
    pub fn redacted(&self) -> String {
        validate::redact_db_url(&self.0)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The `[auth]` section: access and refresh tokens of the REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The `iss` claim of access tokens (and the only one accepted).
    pub issuer: String,
    /// Lifetime of an access token.
    pub token_ttl: Duration,
    /// Lifetime of a refresh token; longer than `token_ttl`.
    pub refresh_ttl: Duration,
}

/// The `[admin]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Failed admin-key attempts one IP address may make at once; after that it gets
    /// 429 (one more attempt per 6 seconds).
    pub failure_burst: u32,
    /// The accepted admin API keys (none: the admin API refuses every request).
    pub keys: Vec<AdminKey>,
}

/// What an admin key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AdminScope {
    /// Read-only endpoints.
    Read,
    /// Every endpoint.
    Write,
}

impl AdminScope {
    /// `"read"` or `"write"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// One admin API key, known only by its SHA-256 hash. `Debug` shows the name and
/// scope only.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminKey {
    /// A label for logs and metrics (never the key).
    pub name: String,
    /// What the key may do.
    pub scope: AdminScope,
    /// SHA-256 of the key as presented.
    pub sha256: [u8; 32],
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminKey")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Which safety checks apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Local development: a missing server key is generated, plain `ws://` and
    /// wildcard CORS are allowed.
    Development,
    /// Production: needs a configured server key, TLS (or an explicit opt-out) and
    /// explicit CORS origins.
    Production,
}

impl Environment {
    /// The name used in the configuration: `"development"` or `"production"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[server]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address of the WebSocket (`/v1/ws`) and REST listener.
    pub listen: SocketAddr,
    /// Address of the admin listener (`/metrics`); never the same as `listen`, so it
    /// can be bound to a private interface.
    pub admin_listen: SocketAddr,
    /// Plain `ws://` in production was explicitly allowed (TLS terminated in front).
    pub allow_insecure_ws: bool,
    /// Origins allowed to call the REST API from a browser.
    pub cors_origins: CorsOrigins,
    /// How long shutdown waits for sessions and jobs before giving up.
    pub shutdown_deadline: Duration,
}

/// Which browser origins may make cross-origin requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin (`"*"`; development only).
    Any,
    /// Exactly these origins, each serialised as a browser sends it in `Origin`
    /// (`https://app.example.com`, with a port only when it is not the default).
    /// Empty means no cross-origin access.
    List(Vec<String>),
}

impl CorsOrigins {
    /// Whether a request's `Origin` header value is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// Where the server identity key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerKeySource {
    /// `server.key`: the key itself (its `Debug` shows only the public key).
    Inline(ServerKey),
    /// `server.key_file`: a key file, already checked to exist, be private and parse.
    File(PathBuf),
    /// Neither: development uses (or creates) `data_dir/server.key`; production
    /// refuses this at validation.
    None,
}

/// The `[tls]` section, present only when both files are configured. Both files were
/// read, parsed and checked to match at validation; [`TlsConfig::load_rustls`] reads
/// them again (relative paths are relative to the working directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, end-entity certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The `[database]` section. `Debug` redacts the password in `url`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// The database URL, resolved: `sqlite:…` (default `sqlite://<data_dir>/ferry.db`)
    /// or `postgres://…`. May contain a password: log [`Self::redacted_url`] instead.
    pub url: String,
    /// Connection pool size.
    pub max_connections: u32,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// Apply pending migrations when `serve` starts.
    pub migrate_on_start: bool,
}

impl DatabaseConfig {
    /// The URL with any password replaced by [`REDACTED`], safe to log.
    pub fn redacted_url(&self) -> String {
        validate::redact_db_url(&self.url)
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

/// The `[limits]` section: validated sizes, rates and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest WebSocket message (and frame) accepted, in bytes.
    pub max_message_size: usize,
    /// Largest event payload in bytes; at most half of `max_message_size` because it
    /// travels base64-encoded inside JSON inside a sealed frame.
    pub max_payload: usize,
    /// Longest time-to-live an event may ask for.
    pub max_ttl: Duration,
    /// Time allowed from connect to an established session.
    pub handshake_timeout: Duration,
    /// Interval of server pings.
    pub ping_interval: Duration,
    /// A session with no traffic for this long is closed; longer than `ping_interval`.
    pub idle_timeout: Duration,
    /// Concurrent connections from one IP address.
    pub max_connections_per_ip: u32,
    /// Concurrent connections in total.
    pub max_connections: u32,
    /// Handshakes per second from one IP address (the burst is twice this).
    pub handshakes_per_ip_per_sec: u32,
    /// Events per second one device may publish.
    pub events_per_sec: u32,
    /// Burst size of the per-device publish rate.
    pub burst: u32,
    /// Messages queued for one session before it is closed with 4009.
    pub outbound_queue: usize,
    /// WebSocket read buffer; small on purpose, since it is allocated per idle session.
    pub read_buffer_size: usize,
    /// WebSocket write buffer.
    pub write_buffer_size: usize,
    /// WebSocket write buffer ceiling; greater than `write_buffer_size` plus one
    /// `max_message_size` message (tungstenite panics if it is not greater than
    /// `write_buffer_size`).
    pub max_write_buffer_size: usize,
    /// REST requests per second from one IP address (the burst is twice this).
    pub rest_requests_per_ip_per_sec: u32,
    /// REST requests per second with one access token (the burst is twice this).
    pub rest_requests_per_token_per_sec: u32,
}

impl Limits {
    /// The tungstenite configuration for these limits. The frame limit equals the
    /// message limit because clients send one frame per message.
    pub fn websocket_config(&self) -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(self.write_buffer_size)
            .max_write_buffer_size(self.max_write_buffer_size)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The setting (`server.listen`), or the unknown key or variable, or the file.
    pub setting: String,
    /// The environment variable that sets it, when there is one.
    pub env_var: Option<String>,
    /// What is wrong; never contains a secret.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)?;
        if let Some(var) = &self.env_var {
            write!(f, " ({var})")?;
        }
        Ok(())
    }
}

/// Every problem found while loading the configuration; displays one line per issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems, in the order found (file, environment, then settings in file
    /// order).
    pub issues: Vec<Issue>,
}

impl ConfigError {
    /// Whether some issue is about `setting` (a dotted name, an unknown key, or an
    /// environment variable name).
    pub fn mentions(&self, setting: &str) -> bool {
        self.issues
            .iter()
            .any(|i| i.setting == setting || i.env_var.as_deref() == Some(setting))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

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
        let (key, key_file) = match &self.server_key {
            ServerKeySource::Inline(_) => (REDACTED.to_string(), String::new()),
            ServerKeySource::File(path) => (String::new(), path.display().to_string()),
            ServerKeySource::None => (String::new(), String::new()),
        };
        let tls = self.tls.as_ref();
        let path_or_empty =
            |p: Option<&PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
        let l = &self.limits;
        let raw = RawConfig {
            env: self.env.as_str().to_string(),
            data_dir: self.data_dir.display().to_string(),
            server: RawServer {
                listen: self.server.listen.to_string(),
                admin_listen: self.server.admin_listen.to_string(),
                key,
                key_file,
                allow_insecure_ws: self.server.allow_insecure_ws,
                cors_origins: match &self.server.cors_origins {
                    CorsOrigins::Any => vec!["*".to_string()],
                    CorsOrigins::List(list) => list.clone(),
                },
                shutdown_deadline: duration::format(self.server.shutdown_deadline),
            },
            tls: RawTls {
                cert: path_or_empty(tls.map(|t| &t.cert)),
                key: path_or_empty(tls.map(|t| &t.key)),
            },
            database: RawDatabase {
                url: self.database.redacted_url(),
                max_connections: self.database.max_connections.into(),
                connect_timeout: duration::format(self.database.connect_timeout),
                migrate_on_start: self.database.migrate_on_start,
            },
            limits: RawLimits {
                max_message_size: l.max_message_size as u64,
                max_payload: l.max_payload as u64,
                max_ttl: duration::format(l.max_ttl),
                handshake_timeout: duration::format(l.handshake_timeout),
                ping_interval: duration::format(l.ping_interval),
                idle_timeout: duration::format(l.idle_timeout),
                max_connections_per_ip: l.max_connections_per_ip.into(),
                max_connections: l.max_connections.into(),
                handshakes_per_ip_per_sec: l.handshakes_per_ip_per_sec.into(),
                events_per_sec: l.events_per_sec.into(),
                burst: l.burst.into(),
                outbound_queue: l.outbound_queue as u64,
                read_buffer_size: l.read_buffer_size as u64,
                write_buffer_size: l.write_buffer_size as u64,
                max_write_buffer_size: l.max_write_buffer_size as u64,
                rest_requests_per_ip_per_sec: l.rest_requests_per_ip_per_sec.into(),
                rest_requests_per_token_per_sec: l.rest_requests_per_token_per_sec.into(),
            },
            auth: RawAuth {
                issuer: self.auth.issuer.clone(),
                token_ttl: duration::format(self.auth.token_ttl),
                refresh_ttl: duration::format(self.auth.refresh_ttl),
            },
            redis: RawRedis {
                url: self
                    .redis_url
                    .as_ref()
                    .map(RedisUrl::redacted)
                    .unwrap_or_default(),
            },
            admin: RawAdmin {
                failure_burst: self.admin.failure_burst.into(),
                // Names and scopes only: not even the hashes are printed.
                keys: self
                    .admin
                    .keys
                    .iter()
                    .map(|k| RawAdminKey {
                        name: k.name.clone(),
                        scope: k.scope.as_str().into(),
                        sha256: REDACTED.into(),
                    })
                    .collect(),
            },
        };
        toml::to_string(&raw).expect("the raw configuration always serialises")
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
