//! Configuration loading and validation through the public API: every rejected
//! setting, the happy paths, layering, and redaction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use ferry::config::{self, Config, ConfigError, CorsOrigins, Environment, ServerKeySource};
use ferry::keys::{self, ServerKey};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(toml: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml(toml, &env(pairs))
}

/// Loads, expects failure, and checks that some issue names `setting` and that every
/// line of the message names its setting (and, for a known setting, its variable).
fn rejects(toml: &str, pairs: &[(&str, &str)], setting: &str) -> ConfigError {
    let err = load(toml, pairs).expect_err("configuration should be rejected");
    assert!(
        err.mentions(setting),
        "expected an issue about {setting}, got:\n{err}"
    );
    let text = err.to_string();
    assert_eq!(
        text.lines().count(),
        err.issues.len(),
        "one line per issue:\n{text}"
    );
    let issue = err.issues.iter().find(|i| i.setting == setting).unwrap();
    if let Some(var) = &issue.env_var {
        assert!(text.contains(&format!("({var})")), "{text}");
        assert!(var.starts_with("FERRY_"), "{var}");
    }
    err
}

fn seed_b64u(seed: [u8; 32]) -> String {
    ferry_proto::b64u::encode(&seed)
}

fn write_private_key_file(dir: &Path) -> (PathBuf, ServerKey) {
    let path = dir.join("server.key");
    let key = ServerKey::generate(&mut rand::rngs::OsRng);
    keys::write_key_file(&path, &key, false).unwrap();
    (path, key)
}

struct Tls {
    cert: PathBuf,
    key: PathBuf,
    other_key: PathBuf,
}

/// Two self-signed certificates; `other_key` belongs to the second one.
fn tls_files(dir: &Path) -> Tls {
    let a = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let tls = Tls {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        other_key: dir.join("other-key.pem"),
    };
    std::fs::write(&tls.cert, a.cert.pem()).unwrap();
    std::fs::write(&tls.key, a.signing_key.serialize_pem()).unwrap();
    std::fs::write(&tls.other_key, b.signing_key.serialize_pem()).unwrap();
    tls
}

fn toml_path(p: &Path) -> String {
    // TOML literal strings need no escaping.
    format!("'{}'", p.display())
}

// ---- happy paths ---------------------------------------------------------------

#[test]
fn defaults_are_valid_in_development() {
    let config = Config::load(None, &env(&[])).unwrap();
    assert_eq!(config.env, Environment::Development);
    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        config.server.admin_listen,
        "127.0.0.1:9090".parse().unwrap()
    );
    assert_eq!(config.server_key, ServerKeySource::None);
    assert_eq!(config.server.cors_origins, CorsOrigins::List(vec![]));
    assert!(config.tls.is_none());
    assert_eq!(config.database.url, "sqlite://./ferry-data/ferry.db");
    assert_eq!(config.database.max_connections, 16);
    assert_eq!(config.limits.max_message_size, 262_144);
    assert_eq!(config.limits.max_ttl, Duration::from_secs(30 * 86_400));
    assert_eq!(config.limits.handshake_timeout, Duration::from_secs(10));
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(75));
    assert_eq!(config.server.shutdown_deadline, Duration::from_secs(10));
}

#[test]
fn the_example_parses_and_equals_the_defaults() {
    let example = load(config::EXAMPLE, &[]).unwrap();
    assert_eq!(example, Config::load(None, &env(&[])).unwrap());
}

#[test]
fn full_production_config_with_key_file_and_tls_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, key) = write_private_key_file(dir.path());
    let tls = tls_files(dir.path());
    let toml = format!(
        r#"
        env = "production"
        data_dir = {data}
        [server]
        listen = "0.0.0.0:443"
        admin_listen = "10.0.0.5:9090"
        key_file = {key}
        cors_origins = ["https://app.example.com", "http://localhost:3000/"]
        shutdown_deadline = "30s"
        [tls]
        cert = {cert}
        key = {tls_key}
        [database]
        url = "postgres://ferry:s3cret@db.internal:5432/ferry"
        max_connections = 50
        [limits]
        max_payload = 100000
        ping_interval = "20s"
        idle_timeout = "1m"
        "#,
        data = toml_path(dir.path()),
        key = toml_path(&key_path),
        cert = toml_path(&tls.cert),
        tls_key = toml_path(&tls.key),
    );
    let config = load(&toml, &[]).unwrap();
    assert_eq!(config.env, Environment::Production);
    assert_eq!(config.server_key, ServerKeySource::File(key_path.clone()));
    let tls_config = config.tls.as_ref().unwrap();
    assert_eq!(tls_config.cert, tls.cert);
    tls_config.load_rustls().unwrap();
    assert_eq!(
        config.server.cors_origins,
        CorsOrigins::List(vec![
            "https://app.example.com".into(),
            "http://localhost:3000".into()
        ])
    );
    assert!(config.server.cors_origins.allows("https://app.example.com"));
    assert!(
        !config
            .server
            .cors_origins
            .allows("https://evil.example.com")
    );
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(60));

    let (loaded, origin) = keys::load_or_create(config.key_settings()).unwrap();
    assert_eq!(loaded, key);
    assert_eq!(origin, keys::KeyOrigin::File(key_path));
}

#[test]
fn the_key_file_is_read_once_at_validation() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = write_private_key_file(dir.path());
    let config = load(&format!("[server]\nkey_file = {}", toml_path(&path)), &[]).unwrap();
    // Gone after validation: the server uses the key validation read.
    std::fs::remove_file(&path).unwrap();
    let (loaded, origin) = keys::load_or_create(config.key_settings()).unwrap();
    assert_eq!(loaded, key);
    assert_eq!(origin, keys::KeyOrigin::File(path));
}

#[test]
fn production_behind_a_tls_proxy_with_inline_key() {
    let seed = seed_b64u([9; 32]);
    let config = load(
        "env = 'production'\n[server]\nallow_insecure_ws = true",
        &[("FERRY_SERVER_KEY", &seed)],
    )
    .unwrap();
    assert!(config.tls.is_none());
    assert_eq!(
        config.server_key,
        ServerKeySource::Inline(ServerKey::from_seed([9; 32]))
    );
}

#[test]
fn env_overrides_file_overrides_defaults() {
    let toml = r#"
        [server]
        listen = "127.0.0.1:1000"
        cors_origins = ["https://file.example"]
        [limits]
        max_payload = 1000
        events_per_sec = 5
    "#;
    let config = load(
        toml,
        &[
            ("FERRY_SERVER_LISTEN", "127.0.0.1:2000"),
            ("FERRY_LIMITS_EVENTS_PER_SEC", "7"),
            (
                "FERRY_SERVER_CORS_ORIGINS",
                "https://a.example, https://b.example",
            ),
            ("FERRY_DATABASE_MIGRATE_ON_START", "false"),
            ("FERRY_LIMITS_PING_INTERVAL", "10s"),
            // Not settings: ignored.
            ("FERRY_LOG", "debug"),
            ("FERRY_TEST_POSTGRES_URL", "postgres://x"),
            ("PATH", "/usr/bin"),
        ],
    )
    .unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:2000".parse().unwrap()); // env
    assert_eq!(config.limits.events_per_sec, 7); // env
    assert_eq!(config.limits.max_payload, 1000); // file
    assert_eq!(config.limits.ping_interval, Duration::from_secs(10)); // env
    assert_eq!(config.limits.burst, 400); // default
    assert!(!config.database.migrate_on_start);
    assert_eq!(
        config.server.cors_origins,
        CorsOrigins::List(vec!["https://a.example".into(), "https://b.example".into()])
    );
}

#[test]
fn file_from_argument_or_ferry_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferry.toml");
    std::fs::write(&file, "[server]\nlisten = '127.0.0.1:1234'\n").unwrap();
    let by_arg = Config::load(Some(&file), &env(&[])).unwrap();
    assert_eq!(by_arg.server.listen.port(), 1234);
    let by_env = Config::load(None, &env(&[("FERRY_CONFIG", file.to_str().unwrap())])).unwrap();
    assert_eq!(by_env.server.listen.port(), 1234);

    let missing = dir.path().join("nope.toml");
    let err = Config::load(Some(&missing), &env(&[])).unwrap_err();
    assert_eq!(err.issues.len(), 1);
    assert!(err.to_string().contains("nope.toml"), "{err}");
}

#[test]
fn data_dir_sets_the_default_database() {
    let config = load("", &[("FERRY_DATA_DIR", "/var/lib/ferry")]).unwrap();
    assert_eq!(config.database.url, "sqlite:///var/lib/ferry/ferry.db");
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/ferry"));
}

// ---- rejected settings ------------------------------------------------------

#[test]
fn server_key_not_base64() {
    let err = rejects("[server]\nkey = 'not*base64!'", &[], "server.key");
    assert!(
        !err.to_string().contains("not*base64"),
        "the value is a secret: {err}"
    );
}

#[test]
fn server_key_wrong_length() {
    let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
    let err = rejects("", &[("FERRY_SERVER_KEY", &short)], "server.key");
    assert!(err.to_string().contains("16 bytes"), "{err}");
    assert!(!err.to_string().contains(&short), "{err}");
}

#[test]
fn server_key_and_key_file_are_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_private_key_file(dir.path());
    rejects(
        &format!(
            "[server]\nkey = '{}'\nkey_file = {}",
            seed_b64u([1; 32]),
            toml_path(&path)
        ),
        &[],
        "server.key",
    );
}

#[cfg(unix)]
#[test]
fn key_file_with_0644_permissions() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_private_key_file(dir.path());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = rejects(
        "",
        &[("FERRY_SERVER_KEY_FILE", path.to_str().unwrap())],
        "server.key_file",
    );
    assert!(err.to_string().contains("0644"), "{err}");
}

#[test]
fn key_file_missing_or_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.key");
    rejects(
        &format!("[server]\nkey_file = {}", toml_path(&missing)),
        &[],
        "server.key_file",
    );

    let garbage = dir.path().join("garbage.key");
    let key = ServerKey::from_seed([5; 32]);
    keys::write_key_file(&garbage, &key, false).unwrap();
    // Overwrite the contents but keep the 0600 file.
    std::fs::write(&garbage, "hello\n").unwrap();
    rejects(
        &format!("[server]\nkey_file = {}", toml_path(&garbage)),
        &[],
        "server.key_file",
    );
}

#[test]
fn listen_port_70000() {
    let err = rejects(
        "",
        &[("FERRY_SERVER_LISTEN", "1.2.3.4:70000")],
        "server.listen",
    );
    assert_eq!(
        err.to_string(),
        "server.listen: \"1.2.3.4:70000\" is not a valid socket address (use IP:PORT, e.g. 127.0.0.1:8080) (FERRY_SERVER_LISTEN)"
    );
}

#[test]
fn admin_listen_must_differ_from_listen() {
    rejects(
        "[server]\nadmin_listen = '127.0.0.1:8080'",
        &[],
        "server.admin_listen",
    );
    rejects(
        "[server]\nlisten = '0.0.0.0:8080'\nadmin_listen = '127.0.0.1:8080'",
        &[],
        "server.admin_listen",
    );
}

#[test]
fn relative_cors_origins() {
    for origin in [
        "/app",
        "example.com",
        "https://example.com/app",
        "ftp://example.com",
    ] {
        let err = rejects(
            &format!("[server]\ncors_origins = ['{origin}']"),
            &[],
            "server.cors_origins",
        );
        assert!(err.to_string().contains(origin), "{err}");
    }
}

#[test]
fn wildcard_cors_only_in_development() {
    let dev = load("[server]\ncors_origins = ['*']", &[]).unwrap();
    assert_eq!(dev.server.cors_origins, CorsOrigins::Any);
    assert!(dev.server.cors_origins.allows("https://anything.example"));

    let seed = seed_b64u([2; 32]);
    rejects(
        "env = 'production'\n[server]\nallow_insecure_ws = true\ncors_origins = ['*']",
        &[("FERRY_SERVER_KEY", &seed)],
        "server.cors_origins",
    );
}

#[test]
fn unknown_key_in_file() {
    let err = rejects(
        "[server]\nlisten = '127.0.0.1:8080'\nlistn = 'x'\n[limits]\nmax_paylod = 1\n[nope]\na = 1",
        &[],
        "server.listn",
    );
    assert!(
        err.mentions("limits.max_paylod"),
        "all unknown keys are reported:\n{err}"
    );
    assert!(err.mentions("nope"), "{err}");
    assert!(
        err.to_string().contains("did you mean server.listen?"),
        "{err}"
    );
}

#[test]
fn unknown_ferry_env_var() {
    let err = rejects(
        "",
        &[("FERRY_SERVER_LISTN", "127.0.0.1:1")],
        "FERRY_SERVER_LISTN",
    );
    assert!(err.to_string().contains("FERRY_SERVER_LISTEN"), "{err}");
    rejects("", &[("FERRY_WHATEVER", "1")], "FERRY_WHATEVER");
}

#[test]
fn mistyped_values() {
    rejects(
        "[limits]\nmax_connections = 'many'",
        &[],
        "limits.max_connections",
    );
    rejects("[limits]\nburst = -1", &[], "limits.burst");
    rejects("", &[("FERRY_LIMITS_BURST", "lots")], "limits.burst");
    rejects(
        "",
        &[("FERRY_SERVER_ALLOW_INSECURE_WS", "maybe")],
        "server.allow_insecure_ws",
    );
    rejects("env = 'staging'", &[], "env");
    let syntax = load("[server\nlisten = 1", &[]).unwrap_err();
    assert!(syntax.to_string().contains("line 1"), "{syntax}");
}

#[test]
fn unknown_database_scheme() {
    let err = rejects(
        "[database]\nurl = 'mysql://root:hunter2@db/ferry'",
        &[],
        "database.url",
    );
    assert!(err.to_string().contains("\"mysql\""), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn tls_cert_missing() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files(dir.path());
    // Key without cert.
    rejects(
        &format!("[tls]\nkey = {}", toml_path(&tls.key)),
        &[],
        "tls.cert",
    );
    // Cert configured but the file does not exist.
    rejects(
        &format!(
            "[tls]\ncert = {}\nkey = {}",
            toml_path(&dir.path().join("missing.pem")),
            toml_path(&tls.key)
        ),
        &[],
        "tls.cert",
    );
}

#[test]
fn tls_key_missing() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files(dir.path());
    rejects(
        &format!("[tls]\ncert = {}", toml_path(&tls.cert)),
        &[],
        "tls.key",
    );
    rejects(
        &format!(
            "[tls]\ncert = {}\nkey = {}",
            toml_path(&tls.cert),
            toml_path(&dir.path().join("missing.pem"))
        ),
        &[],
        "tls.key",
    );
}

#[test]
fn tls_files_that_are_not_pem() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files(dir.path());
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not pem at all").unwrap();
    rejects(
        &format!(
            "[tls]\ncert = {}\nkey = {}",
            toml_path(&junk),
            toml_path(&tls.key)
        ),
        &[],
        "tls.cert",
    );
    // A certificate is not a private key.
    rejects(
        &format!(
            "[tls]\ncert = {}\nkey = {}",
            toml_path(&tls.cert),
            toml_path(&tls.cert)
        ),
        &[],
        "tls.key",
    );
}

#[test]
fn tls_cert_key_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files(dir.path());
    let toml = format!(
        "[tls]\ncert = {}\nkey = {}",
        toml_path(&tls.cert),
        toml_path(&tls.other_key)
    );
    let err = rejects(&toml, &[], "tls.key");
    assert!(err.to_string().contains("does not match"), "{err}");
    // The matching pair is accepted.
    let ok = format!(
        "[tls]\ncert = {}\nkey = {}",
        toml_path(&tls.cert),
        toml_path(&tls.key)
    );
    assert!(load(&ok, &[]).unwrap().tls.is_some());
}

#[test]
fn production_without_a_key() {
    let err = rejects(
        "env = 'production'\n[server]\nallow_insecure_ws = true",
        &[],
        "server.key",
    );
    assert!(err.to_string().contains("ferry keygen"), "{err}");
}

#[test]
fn production_ws_without_opt_in() {
    let seed = seed_b64u([3; 32]);
    let err = rejects(
        "env = 'production'",
        &[("FERRY_SERVER_KEY", &seed)],
        "tls.cert",
    );
    assert!(err.to_string().contains("allow_insecure_ws"), "{err}");
}

#[test]
fn idle_timeout_not_longer_than_ping_interval() {
    rejects(
        "[limits]\nping_interval = '30s'\nidle_timeout = '30s'",
        &[],
        "limits.idle_timeout",
    );
    rejects(
        "[limits]\nping_interval = '1m'\nidle_timeout = '45s'",
        &[],
        "limits.idle_timeout",
    );
}

#[test]
fn max_write_buffer_not_above_write_buffer() {
    // BAD-INPUTS F10: tungstenite panics on this; we refuse it at startup.
    let err = rejects(
        "[limits]\nwrite_buffer_size = 8192\nmax_write_buffer_size = 8192",
        &[],
        "limits.max_write_buffer_size",
    );
    assert!(
        err.to_string()
            .contains("greater than limits.write_buffer_size"),
        "{err}"
    );
    // Above the write buffer but too small for one full-size message.
    rejects(
        "[limits]\nmax_write_buffer_size = 100000",
        &[],
        "limits.max_write_buffer_size",
    );
}

#[test]
fn outbound_queue_bytes_hold_at_least_one_full_size_message() {
    let err = rejects(
        "[limits]\nmax_message_size = 1048576\noutbound_queue_bytes = 524288",
        &[],
        "limits.outbound_queue_bytes",
    );
    assert!(err.to_string().contains("limits.max_message_size"), "{err}");
    // Below its own range, from the environment too.
    rejects(
        "",
        &[("FERRY_LIMITS_OUTBOUND_QUEUE_BYTES", "1024")],
        "limits.outbound_queue_bytes",
    );
}

#[test]
fn durations_out_of_range_or_malformed() {
    for (toml, setting) in [
        (
            "[limits]\nhandshake_timeout = '0s'",
            "limits.handshake_timeout",
        ),
        (
            "[limits]\nhandshake_timeout = '2m'",
            "limits.handshake_timeout",
        ),
        (
            "[server]\nshutdown_deadline = '500ms'",
            "server.shutdown_deadline",
        ),
        (
            "[server]\nshutdown_deadline = '10m'",
            "server.shutdown_deadline",
        ),
        ("[limits]\nmax_ttl = '400d'", "limits.max_ttl"),
        ("[limits]\nping_interval = '10 s'", "limits.ping_interval"),
        (
            "[database]\nconnect_timeout = 'soon'",
            "database.connect_timeout",
        ),
        (
            "[database]\ncommit_interval = '101ms'",
            "database.commit_interval",
        ),
        (
            "[database]\ncheckpoint_interval = '0ms'",
            "database.checkpoint_interval",
        ),
        (
            "[database]\ncheckpoint_interval = '11s'",
            "database.checkpoint_interval",
        ),
    ] {
        rejects(toml, &[], setting);
    }
}

#[test]
fn commit_interval_defaults_to_2ms_and_takes_zero() {
    let ms = std::time::Duration::from_millis;
    assert_eq!(load("", &[]).unwrap().database.commit_interval, ms(2));
    let zero = load("", &[("FERRY_DATABASE_COMMIT_INTERVAL", "0ms")]).unwrap();
    assert_eq!(zero.database.commit_interval, ms(0));
    let max = load("[database]\ncommit_interval = '100ms'", &[]).unwrap();
    assert_eq!(max.database.commit_interval, ms(100));
}

#[test]
fn checkpoint_interval_defaults_to_10ms() {
    let ms = std::time::Duration::from_millis;
    assert_eq!(load("", &[]).unwrap().database.checkpoint_interval, ms(10));
    // The store's own default (for stores opened without a configuration) is the same.
    assert_eq!(
        ferry::store::StoreOptions::default().checkpoint_interval,
        ms(10)
    );
    let env = load("", &[("FERRY_DATABASE_CHECKPOINT_INTERVAL", "50ms")]).unwrap();
    assert_eq!(env.database.checkpoint_interval, ms(50));
    let max = load("[database]\ncheckpoint_interval = '10s'", &[]).unwrap();
    assert_eq!(max.database.checkpoint_interval, ms(10_000));
}

#[test]
fn sizes_and_counts_out_of_range() {
    for (toml, setting) in [
        (
            "[limits]\nmax_message_size = 100",
            "limits.max_message_size",
        ),
        (
            "[limits]\nmax_message_size = 33554432",
            "limits.max_message_size",
        ),
        ("[limits]\nmax_payload = 0", "limits.max_payload"),
        ("[limits]\nmax_payload = 131073", "limits.max_payload"),
        ("[limits]\nmax_connections = 0", "limits.max_connections"),
        (
            "[limits]\nmax_connections_per_ip = 100001",
            "limits.max_connections_per_ip",
        ),
        (
            "[database]\nmax_connections = 1001",
            "database.max_connections",
        ),
    ] {
        rejects(toml, &[], setting);
    }
}

#[test]
fn all_problems_are_reported_together() {
    let err = load(
        "[server]\nlisten = 'nope'\n[limits]\nmax_payload = 0\n",
        &[("FERRY_DATABASE_URL", "mysql://x"), ("FERRY_BOGUS", "1")],
    )
    .unwrap_err();
    for setting in [
        "server.listen",
        "limits.max_payload",
        "database.url",
        "FERRY_BOGUS",
    ] {
        assert!(err.mentions(setting), "{setting} missing from:\n{err}");
    }
    assert_eq!(err.to_string().lines().count(), 4, "{err}");
}

// ---- redaction ---------------------------------------------------------------

#[test]
fn secrets_never_appear_in_debug_or_printout() {
    let seed = [0xab; 32];
    let seed_url = seed_b64u(seed);
    let seed_std = base64::engine::general_purpose::STANDARD.encode(seed);
    let config = load(
        "[database]\nurl = 'postgres://ferry:hunter2@db.internal/ferry?sslmode=require'",
        &[("FERRY_SERVER_KEY", &seed_std)],
    )
    .unwrap();
    let debug = format!("{config:?}");
    let printed = config.to_redacted_toml();
    for text in [&debug, &printed] {
        assert!(!text.contains(&seed_url), "{text}");
        assert!(!text.contains(&seed_std), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains(config::REDACTED), "{text}");
    }
    // The public key may be shown.
    assert!(debug.contains(&ServerKey::from_seed(seed).public_b64u()));
    // The printout is a valid configuration file again (apart from the redacted key).
    let mut round = printed.replace(&format!("key = \"{}\"", config::REDACTED), "key = \"\"");
    round = round.replace("ferry:REDACTED@", "ferry:hunter2@");
    let reloaded = load(&round, &[("FERRY_SERVER_KEY", &seed_std)]).unwrap();
    assert_eq!(reloaded, config);
}

#[test]
fn redacted_printout_of_defaults_round_trips() {
    let config = Config::load(None, &env(&[])).unwrap();
    let printed = config.to_redacted_toml();
    assert_eq!(load(&printed, &[]).unwrap(), config);
}

// ---- the example ---------------------------------------------------------------

#[test]
fn the_example_file_is_generated_from_the_declarations() {
    // Regenerate with `ferry config example > ferry.example.toml`.
    let generated = config::example();
    if generated != config::EXAMPLE {
        let first = generated
            .lines()
            .zip(config::EXAMPLE.lines())
            .position(|(g, f)| g != f)
            .unwrap_or(
                generated
                    .lines()
                    .count()
                    .min(config::EXAMPLE.lines().count()),
            );
        panic!(
            "ferry.example.toml differs from `ferry config example` at line {}:\n  generated: {:?}\n  file:      {:?}",
            first + 1,
            generated.lines().nth(first),
            config::EXAMPLE.lines().nth(first)
        );
    }
}

#[test]
fn log_format_setting() {
    let dev = Config::load(None, &env(&[])).unwrap();
    assert_eq!(dev.log.format, config::LogFormat::Text);
    let json = load("", &[("FERRY_LOG_FORMAT", "json")]).unwrap();
    assert_eq!(json.log.format, config::LogFormat::Json);
    let seed = seed_b64u([5; 32]);
    let production = load(
        "env = 'production'\n[server]\nallow_insecure_ws = true",
        &[("FERRY_SERVER_KEY", &seed)],
    )
    .unwrap();
    assert_eq!(production.log.format, config::LogFormat::Json);
    let text = load(
        "[log]\nformat = 'text'",
        &[
            ("FERRY_ENV", "production"),
            ("FERRY_SERVER_KEY", &seed),
            ("FERRY_SERVER_ALLOW_INSECURE_WS", "true"),
        ],
    )
    .unwrap();
    assert_eq!(text.log.format, config::LogFormat::Text);
    let err = rejects("[log]\nformat = 'xml'", &[], "log.format");
    assert!(err.to_string().contains("(FERRY_LOG_FORMAT)"), "{err}");
}

#[test]
fn telemetry_is_off_by_default_and_validated() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.telemetry.otlp_endpoint, None, "traces are off by default");
    assert_eq!(c.telemetry.service_name, "ferry");
    assert_eq!(c.telemetry.sample_ratio.get(), 1.0);
    assert_eq!(c.telemetry.export_interval, Duration::from_secs(5));
    assert_eq!(c.telemetry.export_timeout, Duration::from_secs(10));
    let c = load(
        "[telemetry]\notlp_endpoint = 'http://collector:4318/'\nsample_ratio = 0",
        &[
            ("FERRY_TELEMETRY_SERVICE_NAME", "relay-eu"),
            ("FERRY_TELEMETRY_EXPORT_INTERVAL", "250ms"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.telemetry.otlp_endpoint.as_deref(),
        Some("http://collector:4318")
    );
    assert_eq!(c.telemetry.service_name, "relay-eu");
    assert_eq!(c.telemetry.sample_ratio.get(), 0.0);
    assert_eq!(c.telemetry.export_interval, Duration::from_millis(250));
    let c = load("", &[("FERRY_TELEMETRY_SAMPLE_RATIO", "0.25")]).unwrap();
    assert_eq!(c.telemetry.sample_ratio.get(), 0.25);
    // The printout round-trips, float included.
    assert_eq!(load(&c.to_redacted_toml(), &[]).unwrap(), c);

    for (endpoint, says) in [
        ("https://collector:4318", "https is not supported"),
        ("grpc://collector:4317", "unsupported scheme"),
        ("collector", "is not a URL"),
        ("http://user:hunter2@collector:4318", "credentials"),
    ] {
        let err = rejects(
            "",
            &[("FERRY_TELEMETRY_OTLP_ENDPOINT", endpoint)],
            "telemetry.otlp_endpoint",
        );
        let text = err.to_string();
        assert!(text.contains(says), "{endpoint}: {text}");
        assert!(text.contains("(FERRY_TELEMETRY_OTLP_ENDPOINT)"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
    let err = rejects(
        "[telemetry]\nsample_ratio = 1.5",
        &[],
        "telemetry.sample_ratio",
    );
    assert!(err.to_string().contains("0.0 to 1.0"), "{err}");
    rejects(
        "[telemetry]\nsample_ratio = -1",
        &[],
        "telemetry.sample_ratio",
    );
    rejects(
        "[telemetry]\nsample_ratio = 'all'",
        &[],
        "telemetry.sample_ratio",
    );
    rejects(
        "",
        &[("FERRY_TELEMETRY_SAMPLE_RATIO", "half")],
        "telemetry.sample_ratio",
    );
    rejects(
        "[telemetry]\nservice_name = 'my relay'",
        &[],
        "telemetry.service_name",
    );
    rejects(
        "[telemetry]\nexport_interval = '10ms'",
        &[],
        "telemetry.export_interval",
    );
}

#[test]
fn retention_settings_are_validated() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.retention.interval, std::time::Duration::from_secs(60));
    assert_eq!(c.retention.batch, 5000);
    assert_eq!(c.retention.max_age, None);
    assert!(!c.retention.compact_keys, "compaction is off by default");
    assert_eq!(c.retention.inactive_device_after, None);
    let c = load(
        "[retention]\nmax_age = \"90d\"\ncompact_keys = true\ninactive_device_after = \"365d\"",
        &[("FERRY_RETENTION_MAX_EVENTS_PER_USER", "1000")],
    )
    .unwrap();
    assert_eq!(
        c.retention.max_age,
        Some(std::time::Duration::from_secs(90 * 86_400))
    );
    assert!(c.retention.compact_keys);
    assert_eq!(
        c.retention.compact_after,
        std::time::Duration::from_secs(7 * 86_400)
    );
    assert_eq!(c.retention.max_events_per_user, 1000);
    assert_eq!(
        c.retention.inactive_device_after,
        Some(std::time::Duration::from_secs(365 * 86_400))
    );
    // Empty means off, from the environment too.
    let c = load(
        "[retention]\nmax_age = \"90d\"",
        &[("FERRY_RETENTION_MAX_AGE", "")],
    )
    .unwrap();
    assert_eq!(c.retention.max_age, None);

    rejects(
        "[retention]\ninterval = \"500ms\"",
        &[],
        "retention.interval",
    );
    rejects("[retention]\ninterval = \"2d\"", &[], "retention.interval");
    rejects("", &[("FERRY_RETENTION_BATCH", "10")], "retention.batch");
    let e = rejects("[retention]\nmax_age = \"5m\"", &[], "retention.max_age");
    assert!(e.to_string().contains("or \"\" for off"), "{e}");
    rejects(
        "[retention]\nmax_age = \"ninety days\"",
        &[],
        "retention.max_age",
    );
    rejects(
        "",
        &[("FERRY_RETENTION_INACTIVE_DEVICE_AFTER", "1h")],
        "retention.inactive_device_after",
    );
    rejects(
        "[retention]\ncompact_after = \"1s\"",
        &[],
        "retention.compact_after",
    );
    rejects("[retention]\nmax_age = 90", &[], "retention.max_age");
}
