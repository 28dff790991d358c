//! Every setting, declared once.
//!
//! Each entry of the [`settings!`] invocation below is one setting: its doc comment
//! (the comment above it in the example file), its section and key (which give its
//! dotted name and its `FERRY_<SECTION>_<KEY>` variable), its [`Type`] (how it is
//! written in the file and in the environment, and the range validation enforces),
//! its default, and how the validated [`Config`] prints it (redacted where secret).
//!
//! Everything else reads these declarations:
//! - [`example`]: the text of `ferry config example` and `ferry.example.toml`;
//! - `validate`: unknown keys and variables, value types, environment parsing,
//!   defaults and ranges (the rules that relate settings to each other stay there);
//! - [`dump`], which is [`Config::to_redacted_toml`].
//!
//! To add a setting: declare it here, read it where `validate` builds its section of
//! the typed [`Config`], and regenerate `ferry.example.toml` with
//! `ferry config example > ferry.example.toml` (a test compares the two).

use std::fmt::Display;
use std::time::Duration;

use super::duration;
use super::types::{Config, CorsOrigins, REDACTED, RedisUrl, ServerKeySource};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A setting's value type: how it is written in the file and in its environment
/// variable, and what every value is checked against before the rules of its section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Type {
    /// A string, taken verbatim (its section's validation decides what it may be).
    Str,
    /// A socket address `IP:PORT` (a string in the file).
    Addr,
    /// `true` or `false` (`1` and `0` are accepted from the environment).
    Bool,
    /// A non-negative integer within `min..=max`.
    Int {
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A duration string such as `"10s"`, within `min..=max`.
    Duration {
        /// Shortest allowed duration.
        min: Duration,
        /// Longest allowed duration.
        max: Duration,
    },
    /// Like [`Type::Duration`], or the empty string for "off".
    OptDuration {
        /// Shortest allowed duration.
        min: Duration,
        /// Longest allowed duration.
        max: Duration,
    },
    /// A fraction from 0.0 to 1.0 (a float, or the integer 0 or 1, in the file).
    Ratio,
    /// A list of strings; comma-separated in the environment.
    List,
    /// `[[admin.keys]]`: tables of `name`, `scope`, `sha256`; in the environment
    /// `name:scope:sha256hex` entries, comma-separated.
    AdminKeys,
}

/// A built-in default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum DefaultValue {
    /// A string (also durations and addresses).
    Text(&'static str),
    /// An integer.
    Num(u64),
    /// A fraction ([`Type::Ratio`]).
    Fraction(f64),
    /// A boolean.
    Flag(bool),
    /// An empty list.
    Empty,
}

impl DefaultValue {
    /// The default as a TOML value.
    pub(super) fn to_toml(self) -> toml::Value {
        match self {
            Self::Text(s) => toml::Value::String(s.to_string()),
            Self::Num(n) => int(n),
            Self::Fraction(f) => toml::Value::Float(f),
            Self::Flag(b) => toml::Value::Boolean(b),
            Self::Empty => toml::Value::Array(Vec::new()),
        }
    }
}

/// One setting.
#[derive(Debug)]
pub(super) struct Setting {
    /// Its section, `None` for the top-level keys.
    pub(super) section: Option<&'static str>,
    /// Its key within the section.
    pub(super) key: &'static str,
    /// What values it takes.
    pub(super) ty: Type,
    /// Its built-in default.
    pub(super) default: DefaultValue,
    /// Its comment in the example, one entry per line.
    pub(super) doc: &'static [&'static str],
    /// Its value in the validated configuration, for the printout; secrets redacted.
    pub(super) dump: fn(&Config) -> toml::Value,
}

impl Setting {
    /// The dotted name used in messages, e.g. `server.listen`.
    pub(super) fn path(&self) -> String {
        match self.section {
            Some(s) => format!("{s}.{}", self.key),
            None => self.key.to_string(),
        }
    }

    /// The environment variable that overrides it, e.g. `FERRY_SERVER_LISTEN`.
    pub(super) fn env_var(&self) -> String {
        env_var_for(&self.path())
    }
}

/// `server.listen` → `FERRY_SERVER_LISTEN`.
pub(super) fn env_var_for(path: &str) -> String {
    format!("FERRY_{}", path.replace('.', "_").to_ascii_uppercase())
}

/// Declares the settings: one module per section holding a [`Setting`] constant per
/// key (`settings::limits::max_payload`), and [`SETTINGS`], all of them in order.
macro_rules! settings {
    ($(
        [$section:ident]
        $(
            $(#[doc = $doc:literal])*
            $key:ident { ty: $ty:expr, default: $default:expr, dump: $dump:expr $(,)? }
        )*
    )*) => {
        $(
            #[allow(non_upper_case_globals)]
            pub(super) mod $section {
                #[allow(unused_imports)]
                use super::*;
                $(
                    $(#[doc = $doc])*
                    pub(in crate::config) const $key: Setting = Setting {
                        section: section_name!($section),
                        key: stringify!($key),
                        ty: $ty,
                        default: $default,
                        doc: &[$($doc),*],
                        dump: $dump,
                    };
                )*
            }
        )*

        /// Every setting, in the order of the example and of the printout.
        pub(super) const SETTINGS: &[&Setting] = &[$($(&$section::$key,)*)*];
    };
}

/// `top` is the top level of the file (no section).
macro_rules! section_name {
    (top) => {
        None
    };
    ($section:ident) => {
        Some(stringify!($section))
    };
}

use DefaultValue::{Empty, Flag, Fraction, Num, Text};
use Type::{Addr, AdminKeys, Bool, Int, List, OptDuration, Ratio, Str};

settings! {
    [top]
    /// "development" or "production". Production refuses to start without a server key,
    /// without TLS (unless server.allow_insecure_ws), or with wildcard CORS.
    env {
        ty: Str,
        default: Text("development"),
        dump: |c| text(c.env.as_str()),
    }
    /// Where the server keeps its files: the SQLite database and, in development, the
    /// generated server key (server.key).
    data_dir {
        ty: Str,
        default: Text("./ferry-data"),
        dump: |c| text(c.data_dir.display()),
    }

    [server]
    /// WebSocket (/v1/ws) and REST listener, IP:PORT.
    listen {
        ty: Addr,
        default: Text("127.0.0.1:8080"),
        dump: |c| text(c.server.listen),
    }
    /// Admin listener (/metrics); must differ from listen. Keep it on a private interface.
    admin_listen {
        ty: Addr,
        default: Text("127.0.0.1:9090"),
        dump: |c| text(c.server.admin_listen),
    }
    /// The server's Ed25519 identity: a 32-byte seed in base64 (standard or url-safe).
    /// A secret: prefer key_file, or FERRY_SERVER_KEY from a secret store.
    key {
        ty: Str,
        default: Text(""),
        // Never the key itself.
        dump: |c| match c.server_key {
            ServerKeySource::Inline(_) => text(REDACTED),
            _ => text(""),
        },
    }
    /// Path to a key file written by `ferry keygen` (mode 0600). Exclusive with key.
    /// With neither, development creates <data_dir>/server.key; production refuses.
    key_file {
        ty: Str,
        default: Text(""),
        dump: |c| match &c.server_key {
            ServerKeySource::File(path) => text(path.display()),
            _ => text(""),
        },
    }
    /// Serve plain ws:// in production. Only for a proxy in front that terminates TLS.
    allow_insecure_ws {
        ty: Bool,
        default: Flag(false),
        dump: |c| toml::Value::Boolean(c.server.allow_insecure_ws),
    }
    /// Browser origins allowed to call the REST API: absolute URLs without a path, e.g.
    /// ["https://app.example.com"]. "*" (any origin) is allowed in development only.
    cors_origins {
        ty: List,
        default: Empty,
        dump: |c| match &c.server.cors_origins {
            CorsOrigins::Any => list(["*"]),
            CorsOrigins::List(origins) => list(origins),
        },
    }
    /// How long shutdown waits for sessions to close (1s to 5m).
    shutdown_deadline {
        ty: Type::Duration { min: secs(1), max: secs(300) },
        default: Text("10s"),
        dump: |c| duration(c.server.shutdown_deadline),
    }

    [tls]
    /// TLS for the main listener: PEM certificate chain and PEM private key (paths).
    /// Set both or neither; they must match each other.
    cert {
        ty: Str,
        default: Text(""),
        dump: |c| text(c.tls.as_ref().map(|t| t.cert.display().to_string()).unwrap_or_default()),
    }
    key {
        ty: Str,
        default: Text(""),
        dump: |c| text(c.tls.as_ref().map(|t| t.key.display().to_string()).unwrap_or_default()),
    }

    [database]
    /// sqlite:PATH, postgres://USER:PASSWORD@HOST/DB or postgresql://…
    /// Empty means sqlite://<data_dir>/ferry.db.
    url {
        ty: Str,
        default: Text(""),
        dump: |c| text(c.database.redacted_url()),
    }
    /// Connection pool size (1 to 1000).
    max_connections {
        ty: Int { min: 1, max: 1000 },
        default: Num(16),
        dump: |c| int(c.database.max_connections),
    }
    connect_timeout {
        ty: Type::Duration { min: Duration::from_millis(100), max: secs(300) },
        default: Text("5s"),
        dump: |c| duration(c.database.connect_timeout),
    }
    /// Shortest time between the starts of two group commits (0ms to 100ms; the
    /// runtime's timer rounds it up to whole milliseconds). Publishes that arrive
    /// sooner wait and share the next commit: fewer syncs and pages written per
    /// event for at most this much more publish latency. A publish after a quiet
    /// spell is written at once. 0ms commits as soon as the previous commit ends.
    commit_interval {
        ty: Type::Duration { min: Duration::ZERO, max: Duration::from_millis(100) },
        default: Text("2ms"),
        dump: |c| duration(c.database.commit_interval),
    }
    /// SQLite only: how often the background checkpoint copies new pages of the
    /// write-ahead log into the database file (1ms to 10s). Longer merges more
    /// rewrites of the same pages into one copy (fewer bytes written and less CPU per
    /// event), but each checkpoint's sync of the database file is longer, and on a
    /// disk with slow syncs the commits that wait behind it see more latency.
    checkpoint_interval {
        ty: Type::Duration { min: Duration::from_millis(1), max: secs(10) },
        default: Text("10ms"),
        dump: |c| duration(c.database.checkpoint_interval),
    }
    /// Apply pending migrations when `ferry serve` starts (see also `ferry migrate`).
    migrate_on_start {
        ty: Bool,
        default: Flag(true),
        dump: |c| toml::Value::Boolean(c.database.migrate_on_start),
    }

    [limits]
    /// Largest WebSocket message (and frame), 1 KiB to 16 MiB.
    max_message_size {
        ty: Int { min: KIB, max: 16 * MIB },
        default: Num(262_144),
        dump: |c| int(c.limits.max_message_size),
    }
    /// Largest event payload, 1 to max_message_size / 2 (it travels as base64 inside JSON
    /// inside a sealed frame).
    max_payload {
        // The upper bound is half of limits.max_message_size (checked by `validate`).
        ty: Int { min: 1, max: 8 * MIB },
        default: Num(65_536),
        dump: |c| int(c.limits.max_payload),
    }
    /// Longest time-to-live an event may ask for (1m to 365d).
    max_ttl {
        ty: Type::Duration { min: secs(60), max: secs(365 * 86_400) },
        default: Text("30d"),
        dump: |c| duration(c.limits.max_ttl),
    }
    /// Time allowed from connect to an established session (1s to 60s).
    handshake_timeout {
        ty: Type::Duration { min: secs(1), max: secs(60) },
        default: Text("10s"),
        dump: |c| duration(c.limits.handshake_timeout),
    }
    /// How long an HTTP connection may stay open with no request in progress (an idle
    /// keep-alive connection, an HTTP/2 connection with no open stream) before it is
    /// closed (1s to 10m). A new connection must send its first request within
    /// limits.handshake_timeout.
    http_idle_timeout {
        ty: Type::Duration { min: secs(1), max: secs(600) },
        default: Text("30s"),
        dump: |c| duration(c.limits.http_idle_timeout),
    }
    /// Server ping interval (1s to 10m).
    ping_interval {
        ty: Type::Duration { min: secs(1), max: secs(600) },
        default: Text("30s"),
        dump: |c| duration(c.limits.ping_interval),
    }
    /// Close a session silent for this long; must be longer than ping_interval (2s to 1h).
    idle_timeout {
        ty: Type::Duration { min: secs(2), max: secs(3600) },
        default: Text("75s"),
        dump: |c| duration(c.limits.idle_timeout),
    }
    /// Concurrent connections from one IP address (1 to 100000).
    max_connections_per_ip {
        ty: Int { min: 1, max: 100_000 },
        default: Num(256),
        dump: |c| int(c.limits.max_connections_per_ip),
    }
    /// Concurrent connections in total (1 to 1000000).
    max_connections {
        ty: Int { min: 1, max: 1_000_000 },
        default: Num(20_000),
        dump: |c| int(c.limits.max_connections),
    }
    /// New handshakes per second from one IP address; the burst is twice this.
    handshakes_per_ip_per_sec {
        ty: Int { min: 1, max: 100_000 },
        default: Num(50),
        dump: |c| int(c.limits.handshakes_per_ip_per_sec),
    }
    /// Events per second one device may publish, and the burst above that rate.
    events_per_sec {
        ty: Int { min: 1, max: 1_000_000 },
        default: Num(200),
        dump: |c| int(c.limits.events_per_sec),
    }
    burst {
        ty: Int { min: 1, max: 10_000_000 },
        default: Num(400),
        dump: |c| int(c.limits.burst),
    }
    /// Messages queued for one session before it is closed with 4009 (too slow).
    outbound_queue {
        ty: Int { min: 1, max: 1_000_000 },
        default: Num(1024),
        dump: |c| int(c.limits.outbound_queue),
    }
    /// Bytes queued for one session before it is closed with 4009 (too slow), so the
    /// memory a slow consumer holds stays bounded whatever the payloads. At least
    /// limits.max_message_size.
    outbound_queue_bytes {
        ty: Int { min: 64 * KIB, max: 1024 * MIB },
        default: Num(4 * MIB),
        dump: |c| int(c.limits.outbound_queue_bytes),
    }
    /// WebSocket buffers, per session: small on purpose, since idle sessions keep them
    /// (the read buffer is allocated for every open session; it is also the most read
    /// from the socket at once, so a large frame takes several reads).
    read_buffer_size {
        ty: Int { min: 256, max: 16 * MIB },
        // Measured: 1.5 KiB keeps an idle session under 10 KiB of server memory and
        // costs nothing measurable on 64 KiB payloads (docs/benchmarks.md, "Idle
        // sessions").
        default: Num(1536),
        dump: |c| int(c.limits.read_buffer_size),
    }
    write_buffer_size {
        ty: Int { min: 0, max: 16 * MIB },
        default: Num(4096),
        dump: |c| int(c.limits.write_buffer_size),
    }
    /// At least write_buffer_size + max_message_size, so a full-size message can be queued
    /// (the WebSocket library panics if it is not greater than write_buffer_size).
    max_write_buffer_size {
        ty: Int { min: 1, max: 1024 * MIB },
        default: Num(1_048_576),
        dump: |c| int(c.limits.max_write_buffer_size),
    }
    /// REST API requests per second from one IP address, and with one access token; the
    /// bursts are twice these. Over either, requests get 429 with Retry-After.
    rest_requests_per_ip_per_sec {
        ty: Int { min: 1, max: 1_000_000 },
        default: Num(100),
        dump: |c| int(c.limits.rest_requests_per_ip_per_sec),
    }
    rest_requests_per_token_per_sec {
        ty: Int { min: 1, max: 1_000_000 },
        default: Num(50),
        dump: |c| int(c.limits.rest_requests_per_token_per_sec),
    }
    /// With redis.url set: decide every rate limit (publishes per device, handshakes
    /// and REST requests per IP, REST requests per token, admin-key failures per IP)
    /// in Redis, so the limits hold across all instances. While Redis does not answer,
    /// each instance falls back to its own limits. false: per instance always.
    shared {
        ty: Bool,
        default: Flag(true),
        dump: |c| toml::Value::Boolean(c.limits.shared),
    }

    [retention]
    /// The retention job: it runs inside `ferry serve` every `interval` (1s to 1d),
    /// and on demand (`ferry retention run`, POST /admin/v1/retention/run). Every run
    /// deletes expired events (ttl), spent and expired login challenges, refresh
    /// tokens and denylist entries, and whatever the policies below select. With
    /// several instances on one PostgreSQL database one runs it at a time.
    interval {
        ty: Type::Duration { min: secs(1), max: secs(86_400) },
        default: Text("1m"),
        dump: |c| duration(c.retention.interval),
    }
    /// Most rows deleted per transaction (100 to 100000). Transactions grow toward
    /// this while each takes under 8 ms, and the job yields between them, so
    /// publishes wait behind it only briefly.
    batch {
        ty: Int { min: 100, max: 100_000 },
        default: Num(5000),
        dump: |c| int(c.retention.batch),
    }
    /// Delete each user's events published longer ago than this (1h to 100 years),
    /// e.g. "90d"; "" keeps them. A prefix of the log goes: devices that sync from
    /// below it are told the log was truncated.
    max_age {
        ty: OptDuration { min: secs(3600), max: secs(36_500 * 86_400) },
        default: Text(""),
        dump: |c| opt_duration(c.retention.max_age),
    }
    /// Keep each user's newest N events and delete the older ones (a prefix of the
    /// log, as for max_age); 0 keeps them all.
    max_events_per_user {
        ty: Int { min: 0, max: 1_000_000_000 },
        default: Num(0),
        dump: |c| int(c.retention.max_events_per_user),
    }
    /// Compaction: delete an event that has a `key` once a newer event with the same
    /// key has existed for compact_after (1m to 100 years). The newest event of every
    /// key is always kept, so conflict checks stay exact.
    compact_keys {
        ty: Bool,
        default: Flag(false),
        dump: |c| toml::Value::Boolean(c.retention.compact_keys),
    }
    compact_after {
        ty: Type::Duration { min: secs(60), max: secs(36_500 * 86_400) },
        default: Text("7d"),
        dump: |c| duration(c.retention.compact_after),
    }
    /// Remove devices not seen for this long (1d to 100 years) and not connected now,
    /// with their refresh tokens, e.g. "365d"; "" keeps them. A removed device that
    /// comes back with a valid certificate is registered anew; a revoked one stays
    /// refused while its certificate may be valid.
    inactive_device_after {
        ty: OptDuration { min: secs(86_400), max: secs(36_500 * 86_400) },
        default: Text(""),
        dump: |c| opt_duration(c.retention.inactive_device_after),
    }

    [auth]
    /// REST API access tokens (JWTs signed with the server key). `iss` of the tokens
    /// this server issues, and the only issuer it accepts.
    issuer {
        ty: Str,
        default: Text("ferry"),
        dump: |c| text(&c.auth.issuer),
    }
    /// Lifetime of an access token (1m to 24h) and of a refresh token (1h to 365d,
    /// longer than token_ttl). Refresh tokens are rotated on every use.
    token_ttl {
        ty: Type::Duration { min: secs(60), max: secs(86_400) },
        default: Text("1h"),
        dump: |c| duration(c.auth.token_ttl),
    }
    refresh_ttl {
        ty: Type::Duration { min: secs(3600), max: secs(365 * 86_400) },
        default: Text("30d"),
        dump: |c| duration(c.auth.refresh_ttl),
    }

    [admin]
    /// Failed key attempts one IP address may make at once; after that it gets 429, and
    /// one more attempt per 6 seconds (1 to 1000000).
    failure_burst {
        ty: Int { min: 1, max: 1_000_000 },
        default: Num(10),
        dump: |c| int(c.admin.failure_burst),
    }
    /// Admin API keys (the admin API lives on server.admin_listen). Only the SHA-256 of
    /// each key is configured; `ferry admin key-hash` makes a key and prints its entry:
    ///
    ///   [[admin.keys]]
    ///   name = "ops"            # a label for logs and metrics
    ///   scope = "write"         # "read" (GET endpoints) or "write" (everything)
    ///   sha256 = "<64 hex digits>"
    ///
    /// In the environment: FERRY_ADMIN_KEYS="name:scope:sha256hex,name2:scope:sha256hex".
    /// No keys: the admin API refuses every request. Replace `keys = []` with the
    /// [[admin.keys]] entries (after failure_burst: TOML wants them last).
    keys {
        ty: AdminKeys,
        default: Empty,
        // Names and scopes only: not even the hashes are printed.
        dump: |c| toml::Value::Array(
            c.admin
                .keys
                .iter()
                .map(|k| {
                    let mut t = toml::Table::new();
                    t.insert("name".into(), text(&k.name));
                    t.insert("scope".into(), text(k.scope.as_str()));
                    t.insert("sha256".into(), text(REDACTED));
                    toml::Value::Table(t)
                })
                .collect(),
        ),
    }

    [redis]
    /// Cross-instance live relay for several instances on one PostgreSQL database:
    /// redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://… Empty runs a single instance
    /// (events reach devices on other instances only through sync).
    url {
        ty: Str,
        default: Text(""),
        dump: |c| text(c.redis_url.as_ref().map(RedisUrl::redacted).unwrap_or_default()),
    }

    [log]
    /// Log lines on stderr: "text" (for people; coloured only on a terminal), "json"
    /// (one JSON object per line, for log collectors), or "auto": json in production,
    /// text in development. FERRY_LOG sets the level filter, e.g. FERRY_LOG=debug.
    format {
        ty: Str,
        default: Text("auto"),
        // The resolved format ("auto" is never printed).
        dump: |c| text(c.log.format.as_str()),
    }

    [telemetry]
    /// Traces: OpenTelemetry spans (handshakes, publishes, deliveries across
    /// instances, syncs, REST requests) exported over OTLP/HTTP (protobuf) to a
    /// collector at this base URL, e.g. "http://127.0.0.1:4318" (spans are posted to
    /// <otlp_endpoint>/v1/traces). Plain http:// only: run the collector beside Ferry.
    /// Empty: no traces (nothing is exported and no exporter runs).
    otlp_endpoint {
        ty: Str,
        default: Text(""),
        dump: |c| text(c.telemetry.otlp_endpoint.as_deref().unwrap_or_default()),
    }
    /// The spans' service.name.
    service_name {
        ty: Str,
        default: Text("ferry"),
        dump: |c| text(&c.telemetry.service_name),
    }
    /// The share of traces recorded, 0.0 to 1.0, chosen by trace id where a trace
    /// begins; a span continuing a trace (a delivery from another instance) follows
    /// the decision made there.
    sample_ratio {
        ty: Ratio,
        default: Fraction(1.0),
        dump: |c| toml::Value::Float(c.telemetry.sample_ratio.get()),
    }
    /// How often finished spans are sent (100ms to 1m), and how long one export may
    /// take (1s to 1m; also the most a shutdown waits for the last spans).
    export_interval {
        ty: Type::Duration { min: Duration::from_millis(100), max: secs(60) },
        default: Text("5s"),
        dump: |c| duration(c.telemetry.export_interval),
    }
    export_timeout {
        ty: Type::Duration { min: secs(1), max: secs(60) },
        default: Text("10s"),
        dump: |c| duration(c.telemetry.export_timeout),
    }
}

/// The sections of the file, in order.
pub(super) fn sections() -> impl Iterator<Item = &'static str> {
    let mut last = None;
    SETTINGS.iter().filter_map(move |s| {
        let new = s.section.filter(|&name| last != Some(name));
        if new.is_some() {
            last = new;
        }
        new
    })
}

/// Looks a setting up by section and key.
pub(super) fn find(section: Option<&str>, key: &str) -> Option<&'static Setting> {
    SETTINGS
        .iter()
        .copied()
        .find(|s| s.section == section && s.key == key)
}

/// The lines above the first setting of the example.
const EXAMPLE_HEADER: &str = "\
# Ferry configuration: every setting with its default.
#
# Layers: built-in defaults, then this file (--config PATH or FERRY_CONFIG), then
# environment variables FERRY_<SECTION>_<KEY>, e.g. FERRY_SERVER_LISTEN or
# FERRY_LIMITS_MAX_PAYLOAD (FERRY_ENV and FERRY_DATA_DIR for the top-level keys).
# In the environment, lists are comma-separated and booleans are true or false.
# Unknown keys and unknown FERRY_* variables are errors.
#
# Durations are strings: a number and a unit (ms, s, m, h, d), e.g. \"500ms\", \"10s\",
# \"5m\", \"30d\". Sizes are integers in bytes.
#
# Check a configuration with `ferry config check --config PATH`.
";

/// The example configuration: every setting with its comment and its default.
pub(super) fn example() -> String {
    let mut out = String::from(EXAMPLE_HEADER);
    let mut section = None;
    for s in SETTINGS {
        if s.section.is_none() {
            out.push('\n');
        } else if s.section != section {
            section = s.section;
            out.push_str(&format!("\n[{}]\n", s.section.unwrap_or_default()));
        }
        for line in s.doc {
            out.push_str(&format!("#{line}\n"));
        }
        out.push_str(&format!("{} = {}\n", s.key, s.default.to_toml()));
    }
    out
}

/// The validated configuration as TOML, in declaration order, every value from its
/// setting's `dump` (so secrets are redacted there).
pub(super) fn dump(config: &Config) -> String {
    let mut out = String::new();
    let mut section = None;
    // Arrays of tables go after the plain values of their section.
    let mut tables = String::new();
    for s in SETTINGS {
        if s.section != section {
            out.push_str(&std::mem::take(&mut tables));
            section = s.section;
            out.push_str(&format!("\n[{}]\n", s.section.unwrap_or_default()));
        }
        match (s.dump)(config) {
            toml::Value::Array(items)
                if !items.is_empty() && items.iter().all(|v| v.is_table()) =>
            {
                for item in items {
                    tables.push_str(&format!("\n[[{}]]\n", s.path()));
                    for (k, v) in item.as_table().into_iter().flatten() {
                        tables.push_str(&format!("{k} = {v}\n"));
                    }
                }
            }
            value => out.push_str(&format!("{} = {value}\n", s.key)),
        }
    }
    out.push_str(&tables);
    out
}

fn text(value: impl Display) -> toml::Value {
    toml::Value::String(value.to_string())
}

fn int<T: TryInto<i64>>(n: T) -> toml::Value {
    // Every integer setting's range fits an i64 (a unit test checks the maxima).
    toml::Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

fn duration(d: Duration) -> toml::Value {
    text(duration::format(d))
}

fn opt_duration(d: Option<Duration>) -> toml::Value {
    d.map_or_else(|| text(""), duration)
}

fn list<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> toml::Value {
    toml::Value::Array(items.into_iter().map(|s| text(s.as_ref())).collect())
}

/// Converts an environment value to the TOML value its setting expects.
pub(super) fn env_value(ty: Type, value: &str) -> Result<toml::Value, String> {
    match ty {
        Str | Addr | Type::Duration { .. } | OptDuration { .. } => {
            Ok(toml::Value::String(value.to_string()))
        }
        Ratio => value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(toml::Value::Float)
            .ok_or_else(|| format!("{value:?} is not a number (use e.g. 0.25)")),
        Bool => match value.trim() {
            "true" | "1" => Ok(toml::Value::Boolean(true)),
            "false" | "0" => Ok(toml::Value::Boolean(false)),
            other => Err(format!("{other:?} is not a boolean (use true or false)")),
        },
        Int { .. } => value
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(|n| i64::try_from(n).ok())
            .map(toml::Value::Integer)
            .ok_or_else(|| format!("{value:?} is not a non-negative integer")),
        List => Ok(toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| toml::Value::String(v.to_string()))
                .collect(),
        )),
        AdminKeys => value
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|entry| {
                let mut parts = entry.splitn(3, ':');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(name), Some(scope), Some(sha256)) => {
                        let mut t = toml::Table::new();
                        t.insert("name".into(), name.trim().into());
                        t.insert("scope".into(), scope.trim().into());
                        t.insert("sha256".into(), sha256.trim().into());
                        Ok(toml::Value::Table(t))
                    }
                    // Never echo the entry: it may be a key pasted by mistake.
                    _ => Err("each entry must be name:scope:sha256hex (comma-separated)".into()),
                }
            })
            .collect::<Result<Vec<_>, String>>()
            .map(toml::Value::Array),
    }
}

/// Checks a value from the file against its setting's type. The error is a phrase.
pub(super) fn check_file_value(ty: Type, value: &toml::Value) -> Result<(), String> {
    let ok = match ty {
        Str | Addr | Type::Duration { .. } | OptDuration { .. } => value.is_str(),
        Bool => value.is_bool(),
        Int { .. } => return check_int(value),
        Ratio => value.is_float() || value.is_integer(),
        List => value
            .as_array()
            .is_some_and(|a| a.iter().all(toml::Value::is_str)),
        AdminKeys => value.as_array().is_some_and(|a| {
            a.iter().all(|entry| {
                entry.as_table().is_some_and(|t| {
                    t.len() == 3
                        && ["name", "scope", "sha256"]
                            .iter()
                            .all(|k| t.get(*k).is_some_and(toml::Value::is_str))
                })
            })
        }),
    };
    if ok {
        Ok(())
    } else {
        let expected = match ty {
            Str | Addr => "a string",
            Type::Duration { .. } => "a duration string such as \"10s\"",
            OptDuration { .. } => "a duration string such as \"90d\", or \"\" for off",
            Bool => "true or false",
            Int { .. } => unreachable!("handled above"),
            Ratio => "a number from 0.0 to 1.0",
            List => "an array of strings",
            AdminKeys => "[[admin.keys]] tables with exactly name, scope and sha256 strings",
        };
        Err(format!("expected {expected}, found {}", value.type_str()))
    }
}

fn check_int(value: &toml::Value) -> Result<(), String> {
    match value.as_integer() {
        Some(n) if n >= 0 => Ok(()),
        Some(n) => Err(format!("{n} is negative")),
        None => Err(format!(
            "expected a non-negative integer, found {}",
            value.type_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names, variables and defaults agree with the declared types and ranges.
    #[test]
    fn declarations_are_consistent() {
        let mut paths: Vec<String> = SETTINGS.iter().map(|s| s.path()).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), SETTINGS.len(), "a setting is declared twice");
        for s in SETTINGS {
            let default = s.default.to_toml();
            assert_eq!(check_file_value(s.ty, &default), Ok(()), "{}", s.path());
            assert!(s.env_var().starts_with("FERRY_"), "{}", s.path());
            match s.ty {
                Int { min, max } => {
                    assert!(min <= max && i64::try_from(max).is_ok(), "{}", s.path());
                    let d = u64::try_from(default.as_integer().unwrap()).unwrap();
                    assert!((min..=max).contains(&d), "{}", s.path());
                }
                Type::Duration { min, max } => {
                    let d = duration::parse(default.as_str().unwrap()).unwrap();
                    assert!(min <= d && d <= max, "{}", s.path());
                }
                OptDuration { min, max } => {
                    let text = default.as_str().unwrap();
                    if !text.is_empty() {
                        let d = duration::parse(text).unwrap();
                        assert!(min <= d && d <= max, "{}", s.path());
                    }
                }
                Ratio => {
                    let f = default.as_float().unwrap();
                    assert!((0.0..=1.0).contains(&f), "{}", s.path());
                }
                _ => {}
            }
        }
        assert_eq!(
            sections().collect::<Vec<_>>(),
            [
                "server",
                "tls",
                "database",
                "limits",
                "retention",
                "auth",
                "admin",
                "redis",
                "log",
                "telemetry"
            ]
        );
        assert_eq!(
            find(Some("limits"), "max_payload").unwrap().ty,
            limits::max_payload.ty
        );
        assert_eq!(limits::max_payload.env_var(), "FERRY_LIMITS_MAX_PAYLOAD");
        assert_eq!(top::data_dir.env_var(), "FERRY_DATA_DIR");
    }

    #[test]
    fn env_values_by_type() {
        assert_eq!(env_value(Bool, "true"), Ok(toml::Value::Boolean(true)));
        assert_eq!(env_value(Bool, "0"), Ok(toml::Value::Boolean(false)));
        assert!(env_value(Bool, "yes please").is_err());
        let int = Int { min: 0, max: 1 };
        assert_eq!(env_value(int, " 42 "), Ok(toml::Value::Integer(42)));
        assert!(env_value(int, "-1").is_err());
        assert!(env_value(int, "99999999999999999999").is_err());
        assert_eq!(
            env_value(List, "https://a.example, https://b.example,"),
            Ok(toml::Value::Array(vec![
                "https://a.example".into(),
                "https://b.example".into()
            ]))
        );
        assert_eq!(env_value(List, ""), Ok(toml::Value::Array(vec![])));
        assert_eq!(env_value(Ratio, " 0.25 "), Ok(toml::Value::Float(0.25)));
        assert_eq!(env_value(Ratio, "1"), Ok(toml::Value::Float(1.0)));
        assert!(env_value(Ratio, "half").is_err());
        assert!(env_value(Ratio, "NaN").is_err());
    }
}
