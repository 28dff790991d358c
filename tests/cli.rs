//! The `ferry` binary, run as a user would: exit codes, stdout/stderr, files written.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use ferry::config::{self, Config};
use ferry::keys;

/// The binary with no inherited `FERRY_*` variables, run in `dir`.
fn ferry(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FERRY_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir).args(args).envs(env.iter().copied());
    cmd.output().expect("run the ferry binary")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_writes_a_private_key_file_and_prints_only_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/server.key");
    let out = ferry(
        dir.path(),
        &["keygen", "--out", path.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);

    let key = keys::read_key_file(&path).unwrap();
    let seed_line = std::fs::read_to_string(&path).unwrap();
    let text = stdout(&out);
    assert!(text.contains(&key.public_b64u()), "{text}");
    assert!(text.contains(path.to_str().unwrap()), "{text}");
    assert!(
        !text.contains(seed_line.trim()),
        "the seed must never be printed"
    );
    assert!(!stderr(&out).contains(seed_line.trim()));

    // No silent overwrite.
    let again = ferry(
        dir.path(),
        &["keygen", "--out", path.to_str().unwrap()],
        &[],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(keys::read_key_file(&path).unwrap(), key);

    let forced = ferry(
        dir.path(),
        &["keygen", "--out", path.to_str().unwrap(), "--force"],
        &[],
    );
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_ne!(keys::read_key_file(&path).unwrap(), key);
}

#[test]
fn keygen_defaults_to_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(dir.path(), &["keygen"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = keys::read_key_file(&dir.path().join("ferry-data/server.key")).unwrap();
    assert!(stdout(&out).contains(&key.public_b64u()));
}

#[test]
fn config_check_with_a_bad_port_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(
        dir.path(),
        &["config", "check"],
        &[("FERRY_SERVER_LISTEN", "127.0.0.1:70000")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: server.listen: "), "{err}");
    assert!(err.contains("FERRY_SERVER_LISTEN"), "{err}");
    assert!(stdout(&out).is_empty());

    // The same from a file.
    let file = dir.path().join("ferry.toml");
    std::fs::write(&file, "[server]\nlisten = \"0.0.0.0:70000\"\n").unwrap();
    let out = ferry(
        dir.path(),
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("FERRY_SERVER_LISTEN"));

    // FERRY_CONFIG names the file too.
    let out = ferry(
        dir.path(),
        &["config", "check"],
        &[("FERRY_CONFIG", file.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_check_prints_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(
        dir.path(),
        &["config", "check"],
        &[
            ("FERRY_ENV", "production"),
            ("FERRY_SERVER_CORS_ORIGINS", "*"),
            ("FERRY_NOT_A_SETTING", "1"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for needle in [
        "server.key",
        "tls.cert",
        "server.cors_origins",
        "FERRY_NOT_A_SETTING",
    ] {
        assert!(err.contains(needle), "{needle} missing:\n{err}");
    }
    assert!(err.lines().all(|l| l.starts_with("error: ")), "{err}");
}

#[test]
fn config_check_redacts_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let seed = ferry_proto::b64u::encode(&[0x5a; 32]);
    let out = ferry(
        dir.path(),
        &["config", "check"],
        &[
            ("FERRY_SERVER_KEY", &seed),
            (
                "FERRY_DATABASE_URL",
                "postgres://ferry:hunter2@localhost/ferry",
            ),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains(&seed), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains(config::REDACTED), "{text}");
    // The printout is TOML in the configuration's own shape.
    let printed = text.replace(&format!("key = \"{}\"", config::REDACTED), "key = \"\"");
    Config::from_toml(&printed, &HashMap::new()).unwrap();
}

#[test]
fn config_example_parses() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(dir.path(), &["config", "example"], &[]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert_eq!(text, config::EXAMPLE);
    Config::from_toml(&text, &HashMap::new()).unwrap();
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        ferry(dir.path(), &["frobnicate"], &[]).status.code(),
        Some(2)
    );
    assert_eq!(
        ferry(dir.path(), &["migrate", "down"], &[]).status.code(),
        Some(2)
    );
    let help = ferry(dir.path(), &["--help"], &[]);
    assert_eq!(help.status.code(), Some(0));
    for sub in ["serve", "keygen", "config", "migrate"] {
        assert!(stdout(&help).contains(sub), "{}", stdout(&help));
    }
}

/// `ferry retention run`: `--dry-run` counts and deletes nothing; a run deletes and
/// prints a line per reason; both against the configured (SQLite) database.
#[test]
fn retention_run_counts_then_deletes() {
    use ferry::store::{DeviceId, NewEvent, StoreOptions, UserId};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ferry.db");
    let url = format!("sqlite://{}", db.display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let count = |url: &str| -> i64 {
        rt.block_on(async {
            use sqlx::Connection as _;
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(&mut c)
                .await
                .unwrap()
        })
    };
    rt.block_on(async {
        let store = ferry::store::connect(&url, &StoreOptions::default())
            .await
            .unwrap();
        // Seven events that expired long ago, three that never expire.
        let batch: Vec<NewEvent> = (0..10)
            .map(|i| NewEvent {
                user: UserId([7; 32]),
                id: uuid::Uuid::now_v7(),
                device: DeviceId([8; 32]),
                payload: vec![i; 16],
                key: None,
                base: None,
                ttl: (i < 7).then_some(1),
                ts: 1_000,
            })
            .collect();
        store.append(&batch).await.unwrap();
    });
    assert_eq!(count(&url), 10);
    let data_dir = dir.path().display().to_string();
    let env = [("FERRY_DATA_DIR", data_dir.as_str())];

    let out = ferry(dir.path(), &["retention", "run", "--dry-run"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("retention dry run: 7 rows would be deleted"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["expired", "7"])),
        "{text}"
    );
    assert_eq!(count(&url), 10, "a dry run deletes nothing");

    let out = ferry(dir.path(), &["retention", "run"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("retention run: 7 rows deleted"), "{text}");
    for reason in ["age", "count", "compacted", "inactive_device", "auth"] {
        assert!(
            text.lines().any(|l| l.split_whitespace().eq([reason, "0"])),
            "{reason}: {text}"
        );
    }
    assert_eq!(count(&url), 3);

    // A database the binary cannot run on: a clear error, exit 1.
    let out = ferry(
        dir.path(),
        &["retention", "run"],
        &[("FERRY_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("error: retention ("),
        "{}",
        stderr(&out)
    );
}
