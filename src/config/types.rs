//! The validated configuration: the typed `Config` the rest of the server reads, and
//! the errors loading it can report. Nothing here parses or validates; `validate`
//! builds these from the declarations in `settings`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::keys::{KeySettings, ServerKey};

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
    /// Load it with `keys::load_or_create(config.key_settings())`
    /// ([`crate::keys::load_or_create`], [`Config::key_settings`]).
    pub server_key: ServerKeySource,
    /// TLS for the main listener; `None` serves plain `ws://` (development, or behind a
    /// TLS-terminating proxy with `server.allow_insecure_ws`).
    pub tls: Option<TlsConfig>,
    /// The database.
    pub database: DatabaseConfig,
    /// Resource limits and timeouts.
    pub limits: Limits,
    /// The `[retention]` section: what the retention job deletes, and how often.
    pub retention: RetentionConfig,
    /// REST API tokens.
    pub auth: AuthConfig,
    /// `[redis] url`: cross-instance live relay over Redis pub/sub, for several
    /// instances on one PostgreSQL database; `None` runs a single instance.
    pub redis_url: Option<RedisUrl>,
    /// The admin API.
    pub admin: AdminConfig,
    /// The `[log]` section: how log lines are written.
    pub log: LogConfig,
    /// The `[telemetry]` section: trace export over OTLP (off by default).
    pub telemetry: TelemetryConfig,
    /// The key of `server.key`, or the file of `server.key_file` as read (once) at
    /// validation; `None` when neither is set. Handed to [`crate::keys::load_or_create`]
    /// through [`Config::key_settings`].
    pub(super) loaded_key: Option<ServerKey>,
}

impl Config {
    /// What [`crate::keys::load_or_create`] needs: the key already read at validation,
    /// or where development keeps its generated key.
    pub fn key_settings(&self) -> KeySettings<'_> {
        match (&self.loaded_key, &self.server_key) {
            (Some(key), ServerKeySource::File(path)) => KeySettings::Configured {
                key,
                file: Some(path),
            },
            (Some(key), _) => KeySettings::Configured { key, file: None },
            (None, _) => KeySettings::Default {
                data_dir: &self.data_dir,
                production: self.env == Environment::Production,
            },
        }
    }
}

/// The `[log]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// How each log line is written (`log.format = "auto"` is resolved at validation).
    pub format: LogFormat,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `message` and the event's fields).
    Json,
}

impl LogFormat {
    /// The name used in the configuration: `"text"` or `"json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// The `[telemetry]` section: OpenTelemetry traces over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Where spans are posted (`<base>/v1/traces`, an `http://` URL without
    /// credentials); `None`: traces are off.
    pub otlp_endpoint: Option<String>,
    /// The spans' `service.name`.
    pub service_name: String,
    /// The share of traces recorded where they begin.
    pub sample_ratio: Ratio,
    /// How often finished spans are sent.
    pub export_interval: Duration,
    /// How long one export may take.
    pub export_timeout: Duration,
}

/// A number from 0.0 to 1.0 (never NaN, so it is `Eq`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Ratio(f64);

impl Ratio {
    /// `value` if it lies in 0.0..=1.0.
    pub fn new(value: f64) -> Option<Self> {
        (0.0..=1.0).contains(&value).then_some(Self(value))
    }

    /// The number.
    pub fn get(self) -> f64 {
        self.0
    }
}

// Sound: `new` admits no NaN.
impl Eq for Ratio {}

/// A Redis URL (`redis://` or `rediss://`); `Debug` hides its password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl RedisUrl {
    /// The URL with any password replaced.
    pub fn redacted(&self) -> String {
        redact_db_url(&self.0)
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
    /// Shortest time between the starts of two group commits.
    pub commit_interval: Duration,
    /// SQLite: how often the background checkpoint runs.
    pub checkpoint_interval: Duration,
    /// Apply pending migrations when `serve` starts.
    pub migrate_on_start: bool,
}

impl DatabaseConfig {
    /// The URL with any password replaced by [`REDACTED`], safe to log.
    pub fn redacted_url(&self) -> String {
        redact_db_url(&self.url)
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("commit_interval", &self.commit_interval)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

/// The `[retention]` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// How often the job runs inside `ferry serve`.
    pub interval: Duration,
    /// Most rows deleted per transaction.
    pub batch: u32,
    /// Events older than this go (a prefix of each log); `None`: off.
    pub max_age: Option<Duration>,
    /// Each user keeps its newest N events; 0: off.
    pub max_events_per_user: u64,
    /// Compaction: keyed events superseded for `compact_after` go.
    pub compact_keys: bool,
    /// How long a keyed event stays after a newer one of its key (with `compact_keys`).
    pub compact_after: Duration,
    /// Devices not seen for this long (and not connected) go; `None`: off.
    pub inactive_device_after: Option<Duration>,
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
    /// How long an HTTP connection may stay open with no request in progress.
    pub http_idle_timeout: Duration,
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
    /// Bytes queued for one session before it is closed with 4009.
    pub outbound_queue_bytes: usize,
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
    /// Rate limits decided in Redis when `redis.url` is set (`limits.shared`).
    pub shared: bool,
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

/// The URL with its password (and any `password` query parameter) replaced.
pub fn redact_db_url(url: &str) -> String {
    if url.to_ascii_lowercase().starts_with("sqlite:") {
        return url.to_string();
    }
    let Ok(mut parsed) = url::Url::parse(url) else {
        let scheme = url.split(':').next().unwrap_or("");
        return format!("{scheme}:{REDACTED}");
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some(REDACTED));
    }
    let is_secret = |k: &str| k.to_ascii_lowercase().contains("password");
    if parsed.query_pairs().any(|(k, _)| is_secret(&k)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret(&k) {
                    REDACTED.into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_database_passwords() {
        assert_eq!(
            redact_db_url("postgres://ferry:hunter2@db.internal:5432/ferry"),
            "postgres://ferry:REDACTED@db.internal:5432/ferry"
        );
        let q = redact_db_url("postgresql://db/ferry?user=f&password=hunter2&sslmode=require");
        assert!(
            !q.contains("hunter2") && q.contains("sslmode=require"),
            "{q}"
        );
        assert_eq!(
            redact_db_url("sqlite://./x/ferry.db"),
            "sqlite://./x/ferry.db"
        );
        assert!(!redact_db_url("postgres://a:b@[bad").contains('b'));
    }
}
