//! The configuration as written: serde structs with the built-in defaults, and the
//! table of settings that maps each one to its environment variable and kind.
//!
//! Nothing here is validated; `validate` turns a [`RawConfig`] into a
//! [`Config`](super::Config). These types have no `Debug` because they hold secrets.

use serde::{Deserialize, Serialize};

/// The whole file. Field order is the order of the effective-config printout.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) env: String,
    pub(super) data_dir: String,
    pub(super) server: RawServer,
    pub(super) tls: RawTls,
    pub(super) database: RawDatabase,
    pub(super) limits: RawLimits,
    pub(super) auth: RawAuth,
    pub(super) admin: RawAdmin,
    pub(super) redis: RawRedis,
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRedis {
    pub(super) url: String,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: String,
    pub(super) admin_listen: String,
    pub(super) key: String,
    pub(super) key_file: String,
    pub(super) allow_insecure_ws: bool,
    pub(super) cors_origins: Vec<String>,
    pub(super) shutdown_deadline: String,
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: String,
    pub(super) key: String,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawDatabase {
    pub(super) url: String,
    pub(super) max_connections: u64,
    pub(super) connect_timeout: String,
    pub(super) migrate_on_start: bool,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_message_size: u64,
    pub(super) max_payload: u64,
    pub(super) max_ttl: String,
    pub(super) handshake_timeout: String,
    pub(super) ping_interval: String,
    pub(super) idle_timeout: String,
    pub(super) max_connections_per_ip: u64,
    pub(super) max_connections: u64,
    pub(super) handshakes_per_ip_per_sec: u64,
    pub(super) events_per_sec: u64,
    pub(super) burst: u64,
    pub(super) outbound_queue: u64,
    pub(super) read_buffer_size: u64,
    pub(super) write_buffer_size: u64,
    pub(super) max_write_buffer_size: u64,
    pub(super) rest_requests_per_ip_per_sec: u64,
    pub(super) rest_requests_per_token_per_sec: u64,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) issuer: String,
    pub(super) token_ttl: String,
    pub(super) refresh_ttl: String,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) failure_burst: u64,
    pub(super) keys: Vec<RawAdminKey>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            failure_burst: 10,
            keys: Vec::new(),
        }
    }
}

/// One `[[admin.keys]]` entry.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAdminKey {
    pub(super) name: String,
    pub(super) scope: String,
    pub(super) sha256: String,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            issuer: "ferry".into(),
            token_ttl: "1h".into(),
            refresh_ttl: "30d".into(),
        }
    }
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            env: "development".into(),
            data_dir: "./ferry-data".into(),
            server: RawServer::default(),
            tls: RawTls::default(),
            database: RawDatabase::default(),
            limits: RawLimits::default(),
            auth: RawAuth::default(),
            admin: RawAdmin::default(),
            redis: RawRedis::default(),
        }
    }
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            key: String::new(),
            key_file: String::new(),
            allow_insecure_ws: false,
            cors_origins: Vec::new(),
            shutdown_deadline: "10s".into(),
        }
    }
}

impl Default for RawDatabase {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 16,
            connect_timeout: "5s".into(),
            migrate_on_start: true,
        }
    }
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_message_size: 262_144,
            max_payload: 65_536,
            max_ttl: "30d".into(),
            handshake_timeout: "10s".into(),
            ping_interval: "30s".into(),
            idle_timeout: "75s".into(),
            max_connections_per_ip: 256,
            max_connections: 20_000,
            handshakes_per_ip_per_sec: 50,
            events_per_sec: 200,
            burst: 400,
            outbound_queue: 1024,
            // Measured: 1.5 KiB keeps an idle session under 10 KiB of server memory
            // and costs nothing measurable on 64 KiB payloads (docs/benchmarks.md,
            // "Idle sessions").
            read_buffer_size: 1536,
            write_buffer_size: 4096,
            max_write_buffer_size: 1_048_576,
            rest_requests_per_ip_per_sec: 100,
            rest_requests_per_token_per_sec: 50,
        }
    }
}

/// The TOML type a setting has, which decides how its environment variable is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A string, taken verbatim.
    Str,
    /// A duration string such as `10s` (checked later, by `validate`).
    Duration,
    /// `true` or `false` (`1` and `0` are accepted from the environment).
    Bool,
    /// A non-negative integer.
    Int,
    /// A list of strings; comma-separated in the environment.
    List,
    /// `[[admin.keys]]`: tables of `name`, `scope`, `sha256`; in the environment
    /// `name:scope:sha256hex` entries, comma-separated.
    AdminKeys,
}

/// One setting: where it lives in the file and what kind of value it takes.
#[derive(Debug)]
pub(super) struct Setting {
    pub(super) section: Option<&'static str>,
    pub(super) key: &'static str,
    pub(super) kind: Kind,
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

/// The sections of the file, in order.
pub(super) const SECTIONS: &[&str] = &[
    "server", "tls", "database", "limits", "auth", "admin", "redis",
];

const fn s(section: Option<&'static str>, key: &'static str, kind: Kind) -> Setting {
    Setting { section, key, kind }
}

const SERVER: Option<&str> = Some("server");
const TLS: Option<&str> = Some("tls");
const DATABASE: Option<&str> = Some("database");
const LIMITS: Option<&str> = Some("limits");
const AUTH: Option<&str> = Some("auth");
const ADMIN: Option<&str> = Some("admin");
const REDIS: Option<&str> = Some("redis");

/// Every setting. A unit test checks this against the serde structs.
pub(super) const SETTINGS: &[Setting] = &[
    s(None, "env", Kind::Str),
    s(None, "data_dir", Kind::Str),
    s(SERVER, "listen", Kind::Str),
    s(SERVER, "admin_listen", Kind::Str),
    s(SERVER, "key", Kind::Str),
    s(SERVER, "key_file", Kind::Str),
    s(SERVER, "allow_insecure_ws", Kind::Bool),
    s(SERVER, "cors_origins", Kind::List),
    s(SERVER, "shutdown_deadline", Kind::Duration),
    s(TLS, "cert", Kind::Str),
    s(TLS, "key", Kind::Str),
    s(DATABASE, "url", Kind::Str),
    s(DATABASE, "max_connections", Kind::Int),
    s(DATABASE, "connect_timeout", Kind::Duration),
    s(DATABASE, "migrate_on_start", Kind::Bool),
    s(LIMITS, "max_message_size", Kind::Int),
    s(LIMITS, "max_payload", Kind::Int),
    s(LIMITS, "max_ttl", Kind::Duration),
    s(LIMITS, "handshake_timeout", Kind::Duration),
    s(LIMITS, "ping_interval", Kind::Duration),
    s(LIMITS, "idle_timeout", Kind::Duration),
    s(LIMITS, "max_connections_per_ip", Kind::Int),
    s(LIMITS, "max_connections", Kind::Int),
    s(LIMITS, "handshakes_per_ip_per_sec", Kind::Int),
    s(LIMITS, "events_per_sec", Kind::Int),
    s(LIMITS, "burst", Kind::Int),
    s(LIMITS, "outbound_queue", Kind::Int),
    s(LIMITS, "read_buffer_size", Kind::Int),
    s(LIMITS, "write_buffer_size", Kind::Int),
    s(LIMITS, "max_write_buffer_size", Kind::Int),
    s(LIMITS, "rest_requests_per_ip_per_sec", Kind::Int),
    s(LIMITS, "rest_requests_per_token_per_sec", Kind::Int),
    s(AUTH, "issuer", Kind::Str),
    s(AUTH, "token_ttl", Kind::Duration),
    s(AUTH, "refresh_ttl", Kind::Duration),
    s(ADMIN, "failure_burst", Kind::Int),
    s(ADMIN, "keys", Kind::AdminKeys),
    s(REDIS, "url", Kind::Str),
];

/// Looks a setting up by section and key.
pub(super) fn find(section: Option<&str>, key: &str) -> Option<&'static Setting> {
    SETTINGS
        .iter()
        .find(|s| s.section == section && s.key == key)
}

/// Converts an environment value to the TOML value its setting expects.
pub(super) fn env_value(kind: Kind, value: &str) -> Result<toml::Value, String> {
    match kind {
        Kind::Str | Kind::Duration => Ok(toml::Value::String(value.to_string())),
        Kind::Bool => match value.trim() {
            "true" | "1" => Ok(toml::Value::Boolean(true)),
            "false" | "0" => Ok(toml::Value::Boolean(false)),
            other => Err(format!("{other:?} is not a boolean (use true or false)")),
        },
        Kind::Int => value
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(|n| i64::try_from(n).ok())
            .map(toml::Value::Integer)
            .ok_or_else(|| format!("{value:?} is not a non-negative integer")),
        Kind::List => Ok(toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| toml::Value::String(v.to_string()))
                .collect(),
        )),
        Kind::AdminKeys => value
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

/// Checks a value from the file against its setting's kind. The error is a phrase.
pub(super) fn check_file_value(kind: Kind, value: &toml::Value) -> Result<(), String> {
    let ok = match kind {
        Kind::Str | Kind::Duration => value.is_str(),
        Kind::Bool => value.is_bool(),
        Kind::Int => return check_int(value),
        Kind::List => value
            .as_array()
            .is_some_and(|a| a.iter().all(toml::Value::is_str)),
        Kind::AdminKeys => value.as_array().is_some_and(|a| {
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
        let expected = match kind {
            Kind::Str => "a string",
            Kind::Duration => "a duration string such as \"10s\"",
            Kind::Bool => "true or false",
            Kind::Int => unreachable!("handled above"),
            Kind::List => "an array of strings",
            Kind::AdminKeys => "[[admin.keys]] tables with exactly name, scope and sha256 strings",
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

    /// The settings table and the serde structs list the same keys.
    #[test]
    fn settings_table_matches_the_structs() {
        let table = toml::Table::try_from(RawConfig::default()).unwrap();
        let mut from_structs = Vec::new();
        for (key, value) in &table {
            match value.as_table() {
                Some(section) => {
                    assert!(SECTIONS.contains(&key.as_str()), "{key}");
                    from_structs.extend(section.keys().map(|k| format!("{key}.{k}")));
                }
                None => from_structs.push(key.clone()),
            }
        }
        let mut from_table: Vec<String> = SETTINGS.iter().map(Setting::path).collect();
        from_structs.sort();
        from_table.sort();
        assert_eq!(from_structs, from_table);
        for setting in SETTINGS {
            let value = match setting.section {
                Some(s) => &table[s][setting.key],
                None => &table[setting.key],
            };
            assert_eq!(
                check_file_value(setting.kind, value),
                Ok(()),
                "{}",
                setting.path()
            );
        }
    }

    #[test]
    fn env_values_by_kind() {
        assert_eq!(
            env_value(Kind::Bool, "true"),
            Ok(toml::Value::Boolean(true))
        );
        assert_eq!(env_value(Kind::Bool, "0"), Ok(toml::Value::Boolean(false)));
        assert!(env_value(Kind::Bool, "yes please").is_err());
        assert_eq!(env_value(Kind::Int, " 42 "), Ok(toml::Value::Integer(42)));
        assert!(env_value(Kind::Int, "-1").is_err());
        assert!(env_value(Kind::Int, "99999999999999999999").is_err());
        assert_eq!(
            env_value(Kind::List, "https://a.example, https://b.example,"),
            Ok(toml::Value::Array(vec![
                "https://a.example".into(),
                "https://b.example".into()
            ]))
        );
        assert_eq!(env_value(Kind::List, ""), Ok(toml::Value::Array(vec![])));
    }
}
