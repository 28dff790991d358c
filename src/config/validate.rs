//! Merging the layers and turning a [`RawConfig`] into a [`Config`], collecting every
//! problem instead of stopping at the first.

use std::collections::HashMap;
use std::fmt::Display;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroize as _;

use super::raw::{self, RawConfig, SECTIONS, SETTINGS};
use super::{
    AdminConfig, AdminKey, AdminScope, AuthConfig, ConfigError, CorsOrigins, DatabaseConfig,
    Environment, Issue, Limits, NON_SETTING_ENV_VARS, REDACTED, ServerConfig, ServerKeySource,
    TEST_ENV_PREFIX, TlsConfig, duration,
};
use crate::config::Config;
use crate::keys::{self, ServerKey};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Defaults ← `file` (text and a name for messages) ← `env`, then validation.
pub(super) fn load_layers(
    file: Option<(&str, &str)>,
    env: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
    let mut issues = Vec::new();
    let mut table = toml::Table::new();
    let mut file_ok = true;
    if let Some((text, name)) = file {
        match toml::from_str::<toml::Table>(text) {
            Ok(parsed) => table = checked_file_table(parsed, name, &mut issues),
            Err(e) => {
                file_ok = false;
                issues.push(syntax_issue(&e, text, name));
            }
        }
    }
    apply_env(&mut table, env, &mut issues);
    if !file_ok {
        // Without the file's values, checking the rest would only mislead.
        return Err(ConfigError { issues });
    }
    match toml::Value::Table(table).try_into::<RawConfig>() {
        Ok(raw) => {
            let config = validate(raw, &mut issues);
            match config {
                Some(config) if issues.is_empty() => Ok(config),
                _ => Err(ConfigError { issues }),
            }
        }
        Err(e) => {
            // Unreachable unless the settings table and the structs disagree (a unit
            // test checks they don't).
            issues.push(Issue {
                setting: "configuration".into(),
                env_var: None,
                message: e.message().to_string(),
            });
            Err(ConfigError { issues })
        }
    }
}

fn syntax_issue(e: &toml::de::Error, text: &str, name: &str) -> Issue {
    let location = e
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        })
        .unwrap_or_default();
    Issue {
        setting: format!("config file {name}"),
        env_var: None,
        message: format!(
            "invalid TOML{location}: {}",
            e.message().trim().replace('\n', " ")
        ),
    }
}

/// Reports unknown keys and mistyped values of the file, and drops them so the rest can
/// still be checked. serde's `deny_unknown_fields` on the raw structs is the backstop;
/// this pass exists to name *every* bad key, with its section, instead of the first.
fn checked_file_table(parsed: toml::Table, name: &str, issues: &mut Vec<Issue>) -> toml::Table {
    let mut out = toml::Table::new();
    for (key, value) in parsed {
        if SECTIONS.contains(&key.as_str()) {
            let toml::Value::Table(section) = value else {
                issues.push(file_issue(&key, false, name, "expected a table".into()));
                continue;
            };
            let mut kept = toml::Table::new();
            for (k, v) in section {
                let path = format!("{key}.{k}");
                match raw::find(Some(&key), &k) {
                    None => issues.push(unknown_key(&path, name)),
                    Some(setting) => match raw::check_file_value(setting.kind, &v) {
                        Ok(()) => {
                            kept.insert(k, v);
                        }
                        Err(msg) => issues.push(file_issue(&path, true, name, msg)),
                    },
                }
            }
            out.insert(key, toml::Value::Table(kept));
        } else {
            match raw::find(None, &key) {
                None => issues.push(unknown_key(&key, name)),
                Some(setting) => match raw::check_file_value(setting.kind, &value) {
                    Ok(()) => {
                        out.insert(key, value);
                    }
                    Err(msg) => issues.push(file_issue(&key, true, name, msg)),
                },
            }
        }
    }
    out
}

fn file_issue(path: &str, has_env: bool, name: &str, message: String) -> Issue {
    Issue {
        setting: path.to_string(),
        env_var: has_env.then(|| raw::env_var_for(path)),
        message: format!("{message} (in {name})"),
    }
}

fn unknown_key(path: &str, name: &str) -> Issue {
    let all: Vec<String> = SETTINGS.iter().map(raw::Setting::path).collect();
    let hint = suggest(path, all.iter().map(String::as_str))
        .map(|s| format!("; did you mean {s}?"))
        .unwrap_or_default();
    Issue {
        setting: path.to_string(),
        env_var: None,
        message: format!("unknown setting in {name}{hint}"),
    }
}

/// Overlays the `FERRY_*` variables on the file's table.
fn apply_env(table: &mut toml::Table, env: &HashMap<String, String>, issues: &mut Vec<Issue>) {
    let mut vars: Vec<(&String, &String)> = env
        .iter()
        .filter(|(k, _)| {
            k.starts_with("FERRY_")
                && !NON_SETTING_ENV_VARS.contains(&k.as_str())
                && !k.starts_with(TEST_ENV_PREFIX)
        })
        .collect();
    vars.sort();
    for (name, value) in vars {
        let Some(setting) = SETTINGS.iter().find(|s| s.env_var() == *name) else {
            let all: Vec<String> = SETTINGS.iter().map(raw::Setting::env_var).collect();
            let hint = suggest(name, all.iter().map(String::as_str))
                .map(|s| format!("; did you mean {s}?"))
                .unwrap_or_default();
            issues.push(Issue {
                setting: name.clone(),
                env_var: None,
                message: format!("unknown setting variable{hint}"),
            });
            continue;
        };
        match raw::env_value(setting.kind, value) {
            Ok(v) => {
                let target = match setting.section {
                    None => &mut *table,
                    Some(section) => {
                        let entry = table
                            .entry(section)
                            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                        match entry {
                            toml::Value::Table(t) => t,
                            _ => unreachable!("checked_file_table keeps only tables here"),
                        }
                    }
                };
                target.insert(setting.key.to_string(), v);
            }
            Err(message) => issues.push(Issue {
                setting: setting.path(),
                env_var: Some(name.clone()),
                message,
            }),
        }
    }
}

/// The closest candidate within a small edit distance, if any.
fn suggest<'a>(input: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let input = input.to_ascii_lowercase();
    candidates
        .map(|c| (edit_distance(&input, &c.to_ascii_lowercase()), c))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Collects issues for one validation pass.
struct Checker<'a> {
    issues: &'a mut Vec<Issue>,
}

impl Checker<'_> {
    fn err(&mut self, setting: &str, message: impl Display) {
        self.issues.push(Issue {
            setting: setting.to_string(),
            env_var: Some(raw::env_var_for(setting)),
            message: message.to_string(),
        });
    }

    fn socket_addr(&mut self, setting: &str, text: &str) -> Option<SocketAddr> {
        text.trim()
            .parse()
            .map_err(|_| {
                self.err(
                    setting,
                    format!(
                        "{text:?} is not a valid socket address (use IP:PORT, e.g. 127.0.0.1:8080)"
                    ),
                );
            })
            .ok()
    }

    fn duration(
        &mut self,
        setting: &str,
        text: &str,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        match duration::parse(text) {
            Err(why) => {
                self.err(setting, format!("{text:?} {why}"));
                None
            }
            Ok(d) if d < min || d > max => {
                self.err(
                    setting,
                    format!(
                        "{text:?} is out of range (allowed: {} to {})",
                        duration::format(min),
                        duration::format(max)
                    ),
                );
                None
            }
            Ok(d) => Some(d),
        }
    }

    fn int<T: TryFrom<u64>>(&mut self, setting: &str, value: u64, min: u64, max: u64) -> Option<T> {
        if value < min || value > max {
            self.err(
                setting,
                format!("{value} is out of range (allowed: {min} to {max})"),
            );
            return None;
        }
        T::try_from(value).ok().or_else(|| {
            self.err(setting, format!("{value} is too large for this platform"));
            None
        })
    }
}

/// Checks every setting; returns the config only if no issue was found.
fn validate(mut raw: RawConfig, issues: &mut Vec<Issue>) -> Option<Config> {
    let before = issues.len();
    let mut c = Checker { issues };

    let env = match raw.env.trim() {
        "development" => Some(Environment::Development),
        "production" => Some(Environment::Production),
        other => {
            c.err(
                "env",
                format!("{other:?} is not an environment (use \"development\" or \"production\")"),
            );
            None
        }
    };
    let production = env == Some(Environment::Production);

    let data_dir = PathBuf::from(raw.data_dir.trim());
    if data_dir.as_os_str().is_empty() {
        c.err("data_dir", "must not be empty");
    } else if fs::metadata(&data_dir).is_ok_and(|m| !m.is_dir()) {
        c.err(
            "data_dir",
            format!("{} exists but is not a directory", data_dir.display()),
        );
    }

    // [server]
    let s = &raw.server;
    let listen = c.socket_addr("server.listen", &s.listen);
    let admin_listen = c.socket_addr("server.admin_listen", &s.admin_listen);
    if let (Some(a), Some(m)) = (listen, admin_listen)
        && a.port() == m.port()
        && a.port() != 0
        && (a.ip() == m.ip() || a.ip().is_unspecified() || m.ip().is_unspecified())
    {
        c.err(
            "server.admin_listen",
            format!("{m} overlaps server.listen {a}; the admin listener needs its own port"),
        );
    }
    let server_key = server_key(&mut c, &raw, production);
    let cors_origins = cors_origins(&mut c, &raw.server.cors_origins, production);
    let shutdown_deadline = c.duration(
        "server.shutdown_deadline",
        &raw.server.shutdown_deadline,
        Duration::from_secs(1),
        Duration::from_secs(300),
    );
    // The inline key was parsed into `server_key`; don't keep a second copy around.
    raw.server.key.zeroize();

    // [tls]
    let tls = tls(&mut c, &raw, production);

    // [database]
    let d = &raw.database;
    let url = if d.url.trim().is_empty() {
        format!("sqlite://{}", data_dir.join("ferry.db").display())
    } else {
        d.url.trim().to_string()
    };
    check_db_url(&mut c, &url);
    let db_max_connections = c.int("database.max_connections", d.max_connections, 1, 1000);
    let connect_timeout = c.duration(
        "database.connect_timeout",
        &d.connect_timeout,
        Duration::from_millis(100),
        Duration::from_secs(300),
    );

    let limits = limits(&mut c, &raw.limits);
    let auth = auth(&mut c, &raw.auth);
    let admin = admin(&mut c, &raw.admin);
    let redis_url = redis_url(&mut c, &raw.redis.url);

    if c.issues.len() > before {
        return None;
    }
    Some(Config {
        env: env?,
        data_dir,
        server: ServerConfig {
            listen: listen?,
            admin_listen: admin_listen?,
            allow_insecure_ws: raw.server.allow_insecure_ws,
            cors_origins: cors_origins?,
            shutdown_deadline: shutdown_deadline?,
        },
        server_key: server_key?,
        tls: tls?,
        database: DatabaseConfig {
            url,
            max_connections: db_max_connections?,
            connect_timeout: connect_timeout?,
            migrate_on_start: raw.database.migrate_on_start,
        },
        limits: limits?,
        auth: auth?,
        admin: admin?,
        redis_url: redis_url?,
    })
}

fn redis_url(c: &mut Checker<'_>, url: &str) -> Option<Option<super::RedisUrl>> {
    let url = url.trim();
    if url.is_empty() {
        return Some(None);
    }
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some() => {
            Some(Some(super::RedisUrl(url.to_string())))
        }
        _ => {
            c.err(
                "redis.url",
                format!(
                    "{:?} is not a redis:// or rediss:// URL with a host",
                    redact_db_url(url)
                ),
            );
            None
        }
    }
}

fn auth(c: &mut Checker<'_>, a: &raw::RawAuth) -> Option<AuthConfig> {
    let issuer = a.issuer.trim();
    let issuer_ok =
        !issuer.is_empty() && issuer.len() <= 256 && issuer.chars().all(|ch| ch.is_ascii_graphic());
    if !issuer_ok {
        c.err(
            "auth.issuer",
            "must be 1 to 256 printable ASCII characters without spaces, e.g. \"ferry\" or \
             \"https://relay.example.com\"",
        );
    }
    let token_ttl = c.duration(
        "auth.token_ttl",
        &a.token_ttl,
        Duration::from_secs(60),
        Duration::from_secs(86_400),
    );
    let refresh_ttl = c.duration(
        "auth.refresh_ttl",
        &a.refresh_ttl,
        Duration::from_secs(3600),
        Duration::from_secs(365 * 86_400),
    );
    if let (Some(t), Some(r)) = (token_ttl, refresh_ttl)
        && r <= t
    {
        c.err(
            "auth.refresh_ttl",
            format!(
                "{} must be longer than auth.token_ttl ({})",
                duration::format(r),
                duration::format(t)
            ),
        );
        return None;
    }
    if !issuer_ok {
        return None;
    }
    Some(AuthConfig {
        issuer: issuer.to_string(),
        token_ttl: token_ttl?,
        refresh_ttl: refresh_ttl?,
    })
}

fn admin(c: &mut Checker<'_>, a: &raw::RawAdmin) -> Option<AdminConfig> {
    const SETTING: &str = "admin.keys";
    let before = c.issues.len();
    let mut keys: Vec<AdminKey> = Vec::new();
    for (i, k) in a.keys.iter().enumerate() {
        let name = k.name.trim();
        let entry = format!("entry {}", i + 1);
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        {
            c.err(
                SETTING,
                format!("{entry}: name must be 1 to 64 characters of A-Z a-z 0-9 - _ ."),
            );
            continue;
        }
        if keys.iter().any(|o| o.name == name) {
            c.err(SETTING, format!("{name}: the name appears twice"));
            continue;
        }
        let scope = match k.scope.trim() {
            "read" => AdminScope::Read,
            "write" => AdminScope::Write,
            _ => {
                c.err(
                    SETTING,
                    format!("{name}: scope must be \"read\" or \"write\""),
                );
                continue;
            }
        };
        // Never echo the value: a key pasted where its hash belongs is a secret.
        let Some(sha256) = parse_hex32(k.sha256.trim()) else {
            c.err(
                SETTING,
                format!(
                    "{name}: sha256 must be 64 hex digits (the SHA-256 of the key, as printed \
                     by `ferry admin key-hash`)"
                ),
            );
            continue;
        };
        if keys.iter().any(|o| o.sha256 == sha256) {
            c.err(SETTING, format!("{name}: the same key hash appears twice"));
            continue;
        }
        keys.push(AdminKey {
            name: name.to_string(),
            scope,
            sha256,
        });
    }
    let failure_burst = c.int("admin.failure_burst", a.failure_burst, 1, 1_000_000);
    (c.issues.len() == before).then_some(AdminConfig {
        failure_burst: failure_burst?,
        keys,
    })
}

/// 64 hex digits (either case) to 32 bytes.
fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn server_key(c: &mut Checker<'_>, raw: &RawConfig, production: bool) -> Option<ServerKeySource> {
    let inline = raw.server.key.trim();
    let file = raw.server.key_file.trim();
    match (inline.is_empty(), file.is_empty()) {
        (false, false) => {
            c.err(
                "server.key",
                "server.key and server.key_file are mutually exclusive; set only one",
            );
            None
        }
        (false, true) => match ServerKey::from_base64(inline) {
            Ok(key) => Some(ServerKeySource::Inline(key)),
            Err(e) => {
                c.err("server.key", format!("the key {e}"));
                None
            }
        },
        (true, false) => {
            let path = PathBuf::from(file);
            match keys::read_key_file(&path) {
                Ok(_) => Some(ServerKeySource::File(path)),
                Err(e) => {
                    c.err("server.key_file", e);
                    None
                }
            }
        }
        (true, true) if production => {
            c.err(
                "server.key",
                "production needs a server key: set server.key, or server.key_file to a \
                 file made by `ferry keygen`",
            );
            None
        }
        (true, true) => Some(ServerKeySource::None),
    }
}

fn cors_origins(c: &mut Checker<'_>, list: &[String], production: bool) -> Option<CorsOrigins> {
    const SETTING: &str = "server.cors_origins";
    let before = c.issues.len();
    let mut any = false;
    let mut origins = Vec::new();
    for entry in list {
        let entry = entry.trim();
        if entry == "*" {
            if production {
                c.err(
                    SETTING,
                    "\"*\" is allowed only in development; list the allowed origins",
                );
            }
            any = true;
            continue;
        }
        match parse_origin(entry) {
            Ok(origin) => {
                if !origins.contains(&origin) {
                    origins.push(origin);
                }
            }
            Err(why) => c.err(SETTING, format!("{entry:?} {why}")),
        }
    }
    if any && !origins.is_empty() {
        c.err(SETTING, "\"*\" must be the only entry when present");
    }
    if c.issues.len() > before {
        None
    } else if any {
        Some(CorsOrigins::Any)
    } else {
        Some(CorsOrigins::List(origins))
    }
}

/// An origin as a browser sends it, from an absolute `http(s)://host[:port]` URL.
fn parse_origin(text: &str) -> Result<String, &'static str> {
    const NOT_ABSOLUTE: &str = "is not an absolute http(s) URL such as https://app.example.com";
    let url = url::Url::parse(text).map_err(|_| NOT_ABSOLUTE)?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(NOT_ABSOLUTE);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials");
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("must be an origin (scheme://host[:port]) without a path, query or fragment");
    }
    Ok(url.origin().ascii_serialization())
}

fn tls(c: &mut Checker<'_>, raw: &RawConfig, production: bool) -> Option<Option<TlsConfig>> {
    let cert = raw.tls.cert.trim();
    let key = raw.tls.key.trim();
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => {
            if production && !raw.server.allow_insecure_ws {
                c.err(
                    "tls.cert",
                    "production needs TLS: set tls.cert and tls.key, or set \
                     server.allow_insecure_ws = true if a proxy in front terminates TLS",
                );
                return None;
            }
            Some(None)
        }
        (false, true) => {
            c.err(
                "tls.key",
                "tls.cert is set but tls.key is not; set both or neither",
            );
            None
        }
        (true, false) => {
            c.err(
                "tls.cert",
                "tls.key is set but tls.cert is not; set both or neither",
            );
            None
        }
        (false, false) => {
            let tls = TlsConfig {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            };
            match tls.load_rustls() {
                Ok(_) => Some(Some(tls)),
                Err(e) => {
                    c.err(e.setting(), e);
                    None
                }
            }
        }
    }
}

fn check_db_url(c: &mut Checker<'_>, url: &str) {
    const SETTING: &str = "database.url";
    let lower = url.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//");
        if path.is_empty() || path.starts_with('?') {
            c.err(SETTING, format!("{url:?} names no database file"));
        }
    } else if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        if url::Url::parse(url).is_err() {
            c.err(
                SETTING,
                "the PostgreSQL URL is not a valid URL (expected postgres://USER:PASSWORD@HOST[:PORT]/DATABASE)",
            );
        }
    } else {
        // Show only the scheme: the rest may hold a password.
        let scheme: String = url
            .split(':')
            .next()
            .unwrap_or("")
            .chars()
            .take(20)
            .filter(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '+' | '-' | '.'))
            .collect();
        c.err(
            SETTING,
            format!("unsupported scheme {scheme:?}; use sqlite:PATH or postgres://…"),
        );
    }
}

/// The URL with its password (and any `password` query parameter) replaced.
pub(super) fn redact_db_url(url: &str) -> String {
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

fn limits(c: &mut Checker<'_>, l: &raw::RawLimits) -> Option<Limits> {
    let secs = Duration::from_secs;
    let max_message_size: Option<usize> =
        c.int("limits.max_message_size", l.max_message_size, KIB, 16 * MIB);
    let payload_max = max_message_size.map_or(8 * MIB, |m| m as u64 / 2);
    let max_payload = c.int("limits.max_payload", l.max_payload, 1, payload_max);
    let max_ttl = c.duration("limits.max_ttl", &l.max_ttl, secs(60), secs(365 * 86_400));
    let handshake_timeout = c.duration(
        "limits.handshake_timeout",
        &l.handshake_timeout,
        secs(1),
        secs(60),
    );
    let ping_interval = c.duration("limits.ping_interval", &l.ping_interval, secs(1), secs(600));
    let idle_timeout = c.duration("limits.idle_timeout", &l.idle_timeout, secs(2), secs(3600));
    if let (Some(ping), Some(idle)) = (ping_interval, idle_timeout)
        && idle <= ping
    {
        c.err(
            "limits.idle_timeout",
            format!(
                "{} must be longer than limits.ping_interval ({}), or every idle session is dropped",
                duration::format(idle),
                duration::format(ping)
            ),
        );
    }
    let max_connections_per_ip = c.int(
        "limits.max_connections_per_ip",
        l.max_connections_per_ip,
        1,
        100_000,
    );
    let max_connections = c.int("limits.max_connections", l.max_connections, 1, 1_000_000);
    let handshakes_per_ip_per_sec = c.int(
        "limits.handshakes_per_ip_per_sec",
        l.handshakes_per_ip_per_sec,
        1,
        100_000,
    );
    let events_per_sec = c.int("limits.events_per_sec", l.events_per_sec, 1, 1_000_000);
    let burst = c.int("limits.burst", l.burst, 1, 10_000_000);
    let outbound_queue = c.int("limits.outbound_queue", l.outbound_queue, 1, 1_000_000);
    let read_buffer_size = c.int("limits.read_buffer_size", l.read_buffer_size, 256, 16 * MIB);
    let write_buffer_size = c.int("limits.write_buffer_size", l.write_buffer_size, 0, 16 * MIB);
    let max_write_buffer_size: Option<usize> = c.int(
        "limits.max_write_buffer_size",
        l.max_write_buffer_size,
        1,
        1024 * MIB,
    );
    let rest_requests_per_ip_per_sec = c.int(
        "limits.rest_requests_per_ip_per_sec",
        l.rest_requests_per_ip_per_sec,
        1,
        1_000_000,
    );
    let rest_requests_per_token_per_sec = c.int(
        "limits.rest_requests_per_token_per_sec",
        l.rest_requests_per_token_per_sec,
        1,
        1_000_000,
    );
    if let (Some(write), Some(max_write)) = (write_buffer_size, max_write_buffer_size) {
        let write: usize = write;
        if max_write <= write {
            // tungstenite asserts this when a socket is created (BAD-INPUTS F10).
            c.err(
                "limits.max_write_buffer_size",
                format!(
                    "{max_write} must be greater than limits.write_buffer_size ({write}); \
                     the WebSocket library panics otherwise"
                ),
            );
        } else if let Some(message) = max_message_size
            && max_write < write + message
        {
            c.err(
                "limits.max_write_buffer_size",
                format!(
                    "{max_write} must be at least limits.write_buffer_size + \
                     limits.max_message_size ({}) so a full-size message can be queued",
                    write + message
                ),
            );
        }
    }
    Some(Limits {
        max_message_size: max_message_size?,
        max_payload: max_payload?,
        max_ttl: max_ttl?,
        handshake_timeout: handshake_timeout?,
        ping_interval: ping_interval?,
        idle_timeout: idle_timeout?,
        max_connections_per_ip: max_connections_per_ip?,
        max_connections: max_connections?,
        handshakes_per_ip_per_sec: handshakes_per_ip_per_sec?,
        events_per_sec: events_per_sec?,
        burst: burst?,
        outbound_queue: outbound_queue?,
        read_buffer_size: read_buffer_size?,
        write_buffer_size: write_buffer_size?,
        max_write_buffer_size: max_write_buffer_size?,
        rest_requests_per_ip_per_sec: rest_requests_per_ip_per_sec?,
        rest_requests_per_token_per_sec: rest_requests_per_token_per_sec?,
    })
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

    #[test]
    fn origins() {
        assert_eq!(
            parse_origin("https://App.Example.com/"),
            Ok("https://app.example.com".into())
        );
        assert_eq!(
            parse_origin("http://localhost:3000"),
            Ok("http://localhost:3000".into())
        );
        assert_eq!(
            parse_origin("https://example.com:443"),
            Ok("https://example.com".into())
        );
        for bad in [
            "/app",
            "example.com",
            "ftp://example.com",
            "https://example.com/app",
            "https://u:p@example.com",
            "https://example.com?x",
            "",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn suggestions() {
        let all = ["FERRY_SERVER_LISTEN", "FERRY_SERVER_ADMIN_LISTEN"];
        assert_eq!(
            suggest("FERRY_SERVER_LISTN", all.into_iter()),
            Some("FERRY_SERVER_LISTEN")
        );
        assert_eq!(suggest("FERRY_FOO", all.into_iter()), None);
    }
}
