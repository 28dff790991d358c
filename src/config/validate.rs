//! Merging the layers and turning them into a [`Config`], collecting every problem
//! instead of stopping at the first.
//!
//! Types, defaults, environment variables and ranges come from the declarations in
//! [`settings`](super::settings); this module adds the rules that need more than one
//! value (or a file) and assembles the typed sections.

use std::collections::HashMap;
use std::fmt::Display;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::{Zeroize as _, Zeroizing};

use super::duration;
use super::settings::{self, SETTINGS, Setting, Type};
use super::settings::{
    admin, auth, database, limits, log, redis, retention, server, telemetry, tls, top,
};
use super::types::{
    AdminConfig, AdminKey, AdminScope, AuthConfig, Config, ConfigError, CorsOrigins,
    DatabaseConfig, Environment, Issue, Limits, LogConfig, LogFormat, NON_SETTING_ENV_VARS, Ratio,
    RedisUrl, RetentionConfig, ServerConfig, ServerKeySource, TEST_ENV_PREFIX, TelemetryConfig,
    TlsConfig, redact_db_url,
};
use crate::keys::{self, ServerKey};

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
    let mut c = Checker {
        issues: &mut issues,
        values: table,
    };
    let config = validate(&mut c);
    c.values.zeroize_strings();
    match config {
        Some(config) if issues.is_empty() => Ok(config),
        _ => Err(ConfigError { issues }),
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
/// still be checked. Only what passes is
/// merged, so validation sees every value in the type its setting declares.
fn checked_file_table(parsed: toml::Table, name: &str, issues: &mut Vec<Issue>) -> toml::Table {
    let mut out = toml::Table::new();
    for (key, value) in parsed {
        if settings::sections().any(|s| s == key) {
            let toml::Value::Table(section) = value else {
                issues.push(file_issue(&key, false, name, "expected a table".into()));
                continue;
            };
            let mut kept = toml::Table::new();
            for (k, v) in section {
                let path = format!("{key}.{k}");
                match settings::find(Some(&key), &k) {
                    None => issues.push(unknown_key(&path, name)),
                    Some(setting) => match settings::check_file_value(setting.ty, &v) {
                        Ok(()) => {
                            kept.insert(k, v);
                        }
                        Err(msg) => issues.push(file_issue(&path, true, name, msg)),
                    },
                }
            }
            out.insert(key, toml::Value::Table(kept));
        } else {
            match settings::find(None, &key) {
                None => issues.push(unknown_key(&key, name)),
                Some(setting) => match settings::check_file_value(setting.ty, &value) {
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
        env_var: has_env.then(|| settings::env_var_for(path)),
        message: format!("{message} (in {name})"),
    }
}

fn unknown_key(path: &str, name: &str) -> Issue {
    let all: Vec<String> = SETTINGS.iter().map(|s| s.path()).collect();
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
            let all: Vec<String> = SETTINGS.iter().map(|s| s.env_var()).collect();
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
        match settings::env_value(setting.ty, value) {
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
    let len = input.chars().count();
    candidates
        // The distance is at least the difference in length: skipping the rest keeps
        // a long unknown key from costing its length times every setting's.
        .filter(|c| c.chars().count().abs_diff(len) <= 2)
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

/// The merged values (every one already of its setting's type), and the issues found
/// so far.
struct Checker<'a> {
    issues: &'a mut Vec<Issue>,
    values: toml::Table,
}

impl Checker<'_> {
    fn err(&mut self, setting: &str, message: impl Display) {
        self.issues.push(Issue {
            setting: setting.to_string(),
            env_var: Some(settings::env_var_for(setting)),
            message: message.to_string(),
        });
    }

    /// The value from the file or the environment, if either sets it.
    fn given(&self, s: &Setting) -> Option<&toml::Value> {
        match s.section {
            None => self.values.get(s.key),
            Some(section) => self
                .values
                .get(section)
                .and_then(toml::Value::as_table)
                .and_then(|t| t.get(s.key)),
        }
    }

    /// The value from the file or the environment, else the declared default.
    fn value(&self, s: &Setting) -> toml::Value {
        self.given(s)
            .cloned()
            .unwrap_or_else(|| s.default.to_toml())
    }

    fn text(&self, s: &Setting) -> String {
        self.value(s).as_str().unwrap_or_default().to_string()
    }

    /// A secret string (its setting's default is empty), copied once, into memory that
    /// is zeroed when dropped; the merged values are zeroed after validation.
    fn secret(&self, s: &Setting) -> Zeroizing<String> {
        let text = self
            .given(s)
            .and_then(toml::Value::as_str)
            .unwrap_or_default();
        Zeroizing::new(text.to_string())
    }

    fn flag(&self, s: &Setting) -> bool {
        self.value(s).as_bool().unwrap_or_default()
    }

    fn list(&self, s: &Setting) -> Vec<String> {
        let value = self.value(s);
        let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
        items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    fn socket_addr(&mut self, s: &Setting) -> Option<SocketAddr> {
        let text = self.text(s);
        text.trim()
            .parse()
            .map_err(|_| {
                self.err(
                    &s.path(),
                    format!(
                        "{text:?} is not a valid socket address (use IP:PORT, e.g. 127.0.0.1:8080)"
                    ),
                );
            })
            .ok()
    }

    fn duration(&mut self, s: &Setting) -> Option<Duration> {
        let Type::Duration { min, max } = s.ty else {
            unreachable!("{} is not a duration", s.path())
        };
        let text = self.text(s);
        match duration::parse(&text) {
            Err(why) => {
                self.err(&s.path(), format!("{text:?} {why}"));
                None
            }
            Ok(d) if d < min || d > max => {
                self.err(
                    &s.path(),
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

    /// A duration, or `None` for the empty string ("off").
    fn opt_duration(&mut self, s: &Setting) -> Option<Option<Duration>> {
        let Type::OptDuration { min, max } = s.ty else {
            unreachable!("{} is not an optional duration", s.path())
        };
        let text = self.text(s);
        if text.trim().is_empty() {
            return Some(None);
        }
        match duration::parse(&text) {
            Err(why) => {
                self.err(&s.path(), format!("{text:?} {why} (or \"\" for off)"));
                None
            }
            Ok(d) if d < min || d > max => {
                self.err(
                    &s.path(),
                    format!(
                        "{text:?} is out of range (allowed: {} to {}, or \"\" for off)",
                        duration::format(min),
                        duration::format(max)
                    ),
                );
                None
            }
            Ok(d) => Some(Some(d)),
        }
    }

    /// An integer within its declared range.
    fn int<T: TryFrom<u64>>(&mut self, s: &Setting) -> Option<T> {
        let Type::Int { max, .. } = s.ty else {
            unreachable!("{} is not an integer", s.path())
        };
        self.int_up_to(s, max)
    }

    /// An integer within its declared minimum and `max` (a bound that depends on
    /// another setting).
    fn int_up_to<T: TryFrom<u64>>(&mut self, s: &Setting, max: u64) -> Option<T> {
        let Type::Int { min, .. } = s.ty else {
            unreachable!("{} is not an integer", s.path())
        };
        let value = self
            .value(s)
            .as_integer()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or_default();
        if value < min || value > max {
            self.err(
                &s.path(),
                format!("{value} is out of range (allowed: {min} to {max})"),
            );
            return None;
        }
        T::try_from(value).ok().or_else(|| {
            self.err(&s.path(), format!("{value} is too large for this platform"));
            None
        })
    }
}

/// Zeroes every string of the merged values (one of them may be the server key).
trait ZeroizeStrings {
    fn zeroize_strings(&mut self);
}

impl ZeroizeStrings for toml::Table {
    fn zeroize_strings(&mut self) {
        fn value(v: &mut toml::Value) {
            match v {
                toml::Value::String(s) => s.zeroize(),
                toml::Value::Array(items) => items.iter_mut().for_each(value),
                toml::Value::Table(t) => t.zeroize_strings(),
                _ => {}
            }
        }
        self.iter_mut().for_each(|(_, v)| value(v));
    }
}

/// Checks every setting; returns the config only if no issue was found.
fn validate(c: &mut Checker<'_>) -> Option<Config> {
    let before = c.issues.len();

    let env = match c.text(&top::env).trim() {
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

    let data_dir = PathBuf::from(c.text(&top::data_dir).trim());
    if data_dir.as_os_str().is_empty() {
        c.err("data_dir", "must not be empty");
    } else if fs::metadata(&data_dir).is_ok_and(|m| !m.is_dir()) {
        c.err(
            "data_dir",
            format!("{} exists but is not a directory", data_dir.display()),
        );
    }

    // [server]
    let listen = c.socket_addr(&server::listen);
    let admin_listen = c.socket_addr(&server::admin_listen);
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
    let key = server_key(c, production);
    let origins = c.list(&server::cors_origins);
    let cors_origins = cors_origins(c, &origins, production);
    let shutdown_deadline = c.duration(&server::shutdown_deadline);
    let allow_insecure_ws = c.flag(&server::allow_insecure_ws);

    // [tls]
    let tls = tls(c, allow_insecure_ws, production);

    // [database]
    let url = c.text(&database::url);
    let url = if url.trim().is_empty() {
        format!("sqlite://{}", data_dir.join("ferry.db").display())
    } else {
        url.trim().to_string()
    };
    check_db_url(c, &url);
    let db_max_connections = c.int(&database::max_connections);
    let connect_timeout = c.duration(&database::connect_timeout);
    let commit_interval = c.duration(&database::commit_interval);
    let checkpoint_interval = c.duration(&database::checkpoint_interval);

    let limits = limits(c);
    let retention = retention(c);
    let auth = auth(c);
    let admin = admin(c);
    let redis_url = redis_url(c);
    let log = log(c, production);
    let telemetry = telemetry(c);

    if c.issues.len() > before {
        return None;
    }
    let (server_key, loaded_key) = key?;
    Some(Config {
        env: env?,
        data_dir,
        server: ServerConfig {
            listen: listen?,
            admin_listen: admin_listen?,
            allow_insecure_ws,
            cors_origins: cors_origins?,
            shutdown_deadline: shutdown_deadline?,
        },
        server_key,
        tls: tls?,
        database: DatabaseConfig {
            url,
            max_connections: db_max_connections?,
            connect_timeout: connect_timeout?,
            commit_interval: commit_interval?,
            checkpoint_interval: checkpoint_interval?,
            migrate_on_start: c.flag(&database::migrate_on_start),
        },
        limits: limits?,
        retention: retention?,
        auth: auth?,
        admin: admin?,
        redis_url: redis_url?,
        log: log?,
        telemetry: telemetry?,
        loaded_key,
    })
}

fn retention(c: &mut Checker<'_>) -> Option<RetentionConfig> {
    let interval = c.duration(&retention::interval);
    let batch = c.int(&retention::batch);
    let max_age = c.opt_duration(&retention::max_age);
    let max_events_per_user = c.int(&retention::max_events_per_user);
    let compact_keys = c.flag(&retention::compact_keys);
    let compact_after = c.duration(&retention::compact_after);
    let inactive_device_after = c.opt_duration(&retention::inactive_device_after);
    Some(RetentionConfig {
        interval: interval?,
        batch: batch?,
        max_age: max_age?,
        max_events_per_user: max_events_per_user?,
        compact_keys,
        compact_after: compact_after?,
        inactive_device_after: inactive_device_after?,
    })
}

fn log(c: &mut Checker<'_>, production: bool) -> Option<LogConfig> {
    let format = match c.text(&log::format).trim() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        "auto" if production => LogFormat::Json,
        "auto" => LogFormat::Text,
        other => {
            c.err(
                "log.format",
                format!("{other:?} is not a log format (use \"text\", \"json\" or \"auto\")"),
            );
            return None;
        }
    };
    Some(LogConfig { format })
}

fn telemetry(c: &mut Checker<'_>) -> Option<TelemetryConfig> {
    let before = c.issues.len();
    let endpoint = c.text(&telemetry::otlp_endpoint);
    let endpoint = endpoint.trim();
    let otlp_endpoint = if endpoint.is_empty() {
        None
    } else {
        match otlp_base(endpoint) {
            Ok(base) => Some(base),
            Err(why) => {
                c.err("telemetry.otlp_endpoint", why);
                None
            }
        }
    };
    let service_name = c.text(&telemetry::service_name);
    let service_name = service_name.trim();
    if service_name.is_empty()
        || service_name.len() > 128
        || !service_name.chars().all(|ch| ch.is_ascii_graphic())
    {
        c.err(
            "telemetry.service_name",
            "must be 1 to 128 printable ASCII characters without spaces, e.g. \"ferry\"",
        );
    }
    let ratio = c.value(&telemetry::sample_ratio);
    let ratio = ratio
        .as_float()
        .or_else(|| ratio.as_integer().map(|n| n as f64))
        .unwrap_or(f64::NAN);
    let sample_ratio = Ratio::new(ratio);
    if sample_ratio.is_none() {
        c.err(
            "telemetry.sample_ratio",
            format!("{ratio} is out of range (allowed: 0.0 to 1.0)"),
        );
    }
    let export_interval = c.duration(&telemetry::export_interval);
    let export_timeout = c.duration(&telemetry::export_timeout);
    if c.issues.len() > before {
        return None;
    }
    Some(TelemetryConfig {
        otlp_endpoint,
        service_name: service_name.to_string(),
        sample_ratio: sample_ratio?,
        export_interval: export_interval?,
        export_timeout: export_timeout?,
    })
}

/// An OTLP/HTTP base URL: `http://host[:port][/path]`, without credentials, query
/// or fragment; returned without a trailing slash.
fn otlp_base(text: &str) -> Result<String, String> {
    // Never echo a URL that might carry credentials.
    let url = url::Url::parse(text)
        .map_err(|_| "is not a URL (expected e.g. http://127.0.0.1:4318)".to_string())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(
                "https is not supported: export over plain http:// to a collector beside Ferry \
                 (e.g. http://127.0.0.1:4318), which can forward over TLS"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "unsupported scheme {other:?} (expected http://HOST:PORT, e.g. http://127.0.0.1:4318)"
            ));
        }
    }
    if !url.has_host() || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{text:?} must be http://HOST[:PORT][/PATH] without a query or fragment"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// `server.key` or `server.key_file`, and the key itself (a key file is read here,
/// once; `keys::load_or_create` gets the key from the `Config`).
fn server_key(
    c: &mut Checker<'_>,
    production: bool,
) -> Option<(ServerKeySource, Option<ServerKey>)> {
    let inline = c.secret(&server::key);
    let inline = inline.trim();
    let file = c.text(&server::key_file);
    let file = file.trim();
    match (inline.is_empty(), file.is_empty()) {
        (false, false) => {
            c.err(
                "server.key",
                "server.key and server.key_file are mutually exclusive; set only one",
            );
            None
        }
        (false, true) => match ServerKey::from_base64(inline) {
            Ok(key) => Some((ServerKeySource::Inline(key.clone()), Some(key))),
            Err(e) => {
                c.err("server.key", format!("the key {e}"));
                None
            }
        },
        (true, false) => {
            let path = PathBuf::from(file);
            match keys::read_key_file(&path) {
                Ok(key) => Some((ServerKeySource::File(path), Some(key))),
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
        (true, true) => Some((ServerKeySource::None, None)),
    }
}

fn redis_url(c: &mut Checker<'_>) -> Option<Option<RedisUrl>> {
    let url = c.text(&redis::url);
    let url = url.trim();
    if url.is_empty() {
        return Some(None);
    }
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some() => {
            Some(Some(RedisUrl(url.to_string())))
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

fn auth(c: &mut Checker<'_>) -> Option<AuthConfig> {
    let issuer = c.text(&auth::issuer);
    let issuer = issuer.trim();
    let issuer_ok =
        !issuer.is_empty() && issuer.len() <= 256 && issuer.chars().all(|ch| ch.is_ascii_graphic());
    if !issuer_ok {
        c.err(
            "auth.issuer",
            "must be 1 to 256 printable ASCII characters without spaces, e.g. \"ferry\" or \
             \"https://relay.example.com\"",
        );
    }
    let token_ttl = c.duration(&auth::token_ttl);
    let refresh_ttl = c.duration(&auth::refresh_ttl);
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

fn admin(c: &mut Checker<'_>) -> Option<AdminConfig> {
    const SETTING: &str = "admin.keys";
    let before = c.issues.len();
    let mut keys: Vec<AdminKey> = Vec::new();
    let entries = c.value(&admin::keys);
    let entries = entries.as_array().map(Vec::as_slice).unwrap_or_default();
    for (i, k) in entries.iter().enumerate() {
        // Each entry was checked to be a table of three strings.
        let field = |name: &str| {
            k.get(name)
                .and_then(toml::Value::as_str)
                .unwrap_or_default()
        };
        let name = field("name").trim();
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
        let scope = match field("scope").trim() {
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
        let Some(sha256) = parse_hex32(field("sha256").trim()) else {
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
    let failure_burst = c.int(&admin::failure_burst);
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

fn tls(
    c: &mut Checker<'_>,
    allow_insecure_ws: bool,
    production: bool,
) -> Option<Option<TlsConfig>> {
    let cert = c.text(&tls::cert);
    let cert = cert.trim();
    let key = c.text(&tls::key);
    let key = key.trim();
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => {
            if production && !allow_insecure_ws {
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

fn limits(c: &mut Checker<'_>) -> Option<Limits> {
    let max_message_size: Option<usize> = c.int(&limits::max_message_size);
    let Type::Int {
        max: payload_max, ..
    } = limits::max_payload.ty
    else {
        unreachable!("limits.max_payload is an integer")
    };
    let payload_max = max_message_size.map_or(payload_max, |m| m as u64 / 2);
    let max_payload = c.int_up_to(&limits::max_payload, payload_max);
    let max_ttl = c.duration(&limits::max_ttl);
    let handshake_timeout = c.duration(&limits::handshake_timeout);
    let http_idle_timeout = c.duration(&limits::http_idle_timeout);
    let ping_interval = c.duration(&limits::ping_interval);
    let idle_timeout = c.duration(&limits::idle_timeout);
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
    let max_connections_per_ip = c.int(&limits::max_connections_per_ip);
    let max_connections = c.int(&limits::max_connections);
    let handshakes_per_ip_per_sec = c.int(&limits::handshakes_per_ip_per_sec);
    let events_per_sec = c.int(&limits::events_per_sec);
    let burst = c.int(&limits::burst);
    let outbound_queue = c.int(&limits::outbound_queue);
    let outbound_queue_bytes: Option<usize> = c.int(&limits::outbound_queue_bytes);
    if let (Some(bytes), Some(message)) = (outbound_queue_bytes, max_message_size)
        && bytes < message
    {
        c.err(
            "limits.outbound_queue_bytes",
            format!(
                "{bytes} must be at least limits.max_message_size ({message}), or a \
                 full-size message could never be queued"
            ),
        );
    }
    let read_buffer_size = c.int(&limits::read_buffer_size);
    let write_buffer_size = c.int(&limits::write_buffer_size);
    let max_write_buffer_size: Option<usize> = c.int(&limits::max_write_buffer_size);
    let rest_requests_per_ip_per_sec = c.int(&limits::rest_requests_per_ip_per_sec);
    let rest_requests_per_token_per_sec = c.int(&limits::rest_requests_per_token_per_sec);
    let shared = c.flag(&limits::shared);
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
        http_idle_timeout: http_idle_timeout?,
        ping_interval: ping_interval?,
        idle_timeout: idle_timeout?,
        max_connections_per_ip: max_connections_per_ip?,
        max_connections: max_connections?,
        handshakes_per_ip_per_sec: handshakes_per_ip_per_sec?,
        events_per_sec: events_per_sec?,
        burst: burst?,
        outbound_queue: outbound_queue?,
        outbound_queue_bytes: outbound_queue_bytes?,
        read_buffer_size: read_buffer_size?,
        write_buffer_size: write_buffer_size?,
        max_write_buffer_size: max_write_buffer_size?,
        rest_requests_per_ip_per_sec: rest_requests_per_ip_per_sec?,
        rest_requests_per_token_per_sec: rest_requests_per_token_per_sec?,
        shared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn otlp_endpoints() {
        assert_eq!(
            otlp_base("http://127.0.0.1:4318/"),
            Ok("http://127.0.0.1:4318".into())
        );
        assert_eq!(
            otlp_base("http://collector/otlp"),
            Ok("http://collector/otlp".into())
        );
        for bad in [
            "127.0.0.1:4318",
            "https://collector:4318",
            "grpc://collector:4317",
            "http://user:secret@collector:4318",
            "http://collector:4318?x=1",
            "http://",
        ] {
            let err = otlp_base(bad).unwrap_err();
            assert!(!err.contains("secret"), "{bad}: {err}");
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
        // Two characters longer or shorter is still within reach; three is not.
        assert_eq!(
            suggest("FERRY_SERVER_LISTENXY", all.into_iter()),
            Some("FERRY_SERVER_LISTEN")
        );
        assert_eq!(
            suggest("FERRY_SERVER_LIST", all.into_iter()),
            Some("FERRY_SERVER_LISTEN")
        );
        assert_eq!(suggest("FERRY_SERVER_LISTENXYZ", all.into_iter()), None);
        assert_eq!(suggest(&"x".repeat(10_000), all.into_iter()), None);
    }
}
