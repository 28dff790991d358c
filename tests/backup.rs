//! `ferry backup`, `ferry restore` and `ferry verify`, run as an operator would (the
//! binary, in a process of its own) against real databases, on both backends.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::client::{TestUser, connect, new_event_id};
use common::db::{TestDb, databases};
use common::server::TestServer;
use ferry::store::Backend;
use ferry_proto::message::ServerMessage;

/// The binary with no inherited `FERRY_*` variables, run in `dir` on `url`.
fn ferry(dir: &Path, url: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FERRY_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir)
        .args(args)
        .env("FERRY_DATA_DIR", dir.join("data"))
        .env("FERRY_DATABASE_URL", url);
    cmd.output().expect("run the ferry binary")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Where a backup of `backend` goes.
fn backup_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "backup.db",
        Backend::Postgres => "backup.dump",
    }
}

/// A fresh, empty database of the same backend as `like`.
async fn fresh_like(like: &TestDb) -> TestDb {
    match like.backend() {
        Backend::Sqlite => TestDb::sqlite().await,
        Backend::Postgres => TestDb::postgres().await.expect("PostgreSQL is available"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_every_event_acked_before_it() {
    for db in databases().await {
        let work = tempfile::tempdir().unwrap();
        // The publisher below sends as fast as the server acks: the rate limit is
        // lifted, or a fast enough server refuses it into a 4008 close, which is not
        // what this test is about.
        let srv = TestServer::start(
            db.url(),
            &[
                ("FERRY_LIMITS_EVENTS_PER_SEC", "1000000"),
                ("FERRY_LIMITS_BURST", "1000000"),
            ],
        )
        .await;
        let user = TestUser::random();
        let mut client = connect(&srv.ws_url(), user.device()).await;
        // Acked (seq, id), in order, shared with the test.
        let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
        let stop = Arc::new(tokio::sync::Notify::new());
        let publisher = {
            let (acked, stop) = (acked.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let window: Vec<(String, Vec<u8>)> = (0..8)
                        .map(|_| (new_event_id(), b"backup".to_vec()))
                        .collect();
                    let mut ids = BTreeMap::new();
                    client
                        .publish_window(&window, |m| {
                            if let ServerMessage::Ack {
                                seq: Some(seq), id, ..
                            } = m
                            {
                                ids.insert(seq, id);
                            }
                        })
                        .await
                        .expect("the session stays up during the backup");
                    acked.lock().unwrap().extend(ids);
                    let stopped = stop.notified();
                    tokio::pin!(stopped);
                    if futures_util::poll!(stopped.as_mut()).is_ready() {
                        return client;
                    }
                }
            })
        };
        // Let some events in, then take the backup while publishing goes on.
        while acked.lock().unwrap().len() < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before: Vec<(u64, String)> = acked.lock().unwrap().clone();
        let backup = work.path().join(backup_name(db.backend()));
        let url = db.url().to_string();
        let work_path = work.path().to_path_buf();
        let backup_arg = backup.display().to_string();
        let out = tokio::task::spawn_blocking(move || {
            ferry(&work_path, &url, &["backup", "--to", &backup_arg])
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let report = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(report.contains("written to"), "{report}");
        assert!(report.contains(" events"), "{report}");
        stop.notify_one();
        let client = publisher.await.unwrap();
        drop(client);
        let during = acked.lock().unwrap().len();
        assert!(
            during > before.len(),
            "publishing went on during the backup"
        );
        srv.stop().await;

        // Restored into a fresh database, the backup is sound and holds every event
        // acked before the backup began, at its seq.
        let target = fresh_like(&db).await;
        let out = ferry(
            work.path(),
            target.url(),
            &["restore", "--from", &backup.display().to_string()],
        );
        assert!(out.status.success(), "{}", text(&out));
        let out = ferry(work.path(), target.url(), &["verify"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("sound"));
        let srv = TestServer::start(target.url(), &[]).await;
        let mut reader = connect(&srv.ws_url(), user.device()).await;
        let (events, head) = reader.sync_all(1000).await;
        let restored: BTreeMap<u64, String> =
            events.into_iter().map(|e| (e.seq.unwrap(), e.id)).collect();
        for (seq, id) in &before {
            assert_eq!(
                restored.get(seq),
                Some(id),
                "event {seq} acked before the backup"
            );
        }
        // Seqs stay gap-free and the head matches the log the backup caught.
        let max = *restored.keys().last().unwrap();
        assert_eq!(head, max);
        assert_eq!(restored.len() as u64, max, "no hole in the restored log");
        drop(reader);
        srv.stop().await;
        target.finish("restored_backup_target").await;
        db.finish("a_backup_taken_under_load_restores_every_event_acked_before_it")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_target_in_use_and_a_newer_schema() {
    for db in databases().await {
        let work = tempfile::tempdir().unwrap();
        let srv = TestServer::start(db.url(), &[]).await;
        let user = TestUser::random();
        let mut c = connect(&srv.ws_url(), user.device()).await;
        c.request(&common::client::publish_json(&new_event_id(), b"x"))
            .await;
        drop(c);
        let backup = work.path().join(backup_name(db.backend()));
        let backup_arg = backup.display().to_string();
        let out = ferry(work.path(), db.url(), &["backup", "--to", &backup_arg]);
        assert!(out.status.success(), "{}", text(&out));
        // A second backup never overwrites the first.
        let out = ferry(work.path(), db.url(), &["backup", "--to", &backup_arg]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("exists"), "{}", text(&out));

        // The server still runs on its database: a restore into it is refused
        // (SQLite: the server's lock; PostgreSQL: the database is not empty).
        let out = ferry(work.path(), db.url(), &["restore", "--from", &backup_arg]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let why = match db.backend() {
            Backend::Sqlite => "a server runs on this database",
            Backend::Postgres => "is not empty",
        };
        assert!(text(&out).contains(why), "{}", text(&out));
        srv.stop().await;
        if db.backend() == Backend::Sqlite {
            // Stopped: the restore goes through and keeps the replaced file; a
            // second restore refuses while that file is still there.
            let out = ferry(work.path(), db.url(), &["restore", "--from", &backup_arg]);
            assert!(out.status.success(), "{}", text(&out));
            assert!(text(&out).contains(".pre-restore"), "{}", text(&out));
            let out = ferry(work.path(), db.url(), &["restore", "--from", &backup_arg]);
            assert_eq!(out.status.code(), Some(1), "{}", text(&out));
            assert!(
                text(&out).contains("from an earlier restore"),
                "{}",
                text(&out)
            );
        }
        if db.backend() == Backend::Postgres {
            // --force replaces what the database holds.
            let out = ferry(
                work.path(),
                db.url(),
                &["restore", "--from", &backup_arg, "--force"],
            );
            assert!(out.status.success(), "{}", text(&out));
        }

        // A backup whose schema is newer than this binary is refused.
        let newer = fresh_like(&db).await;
        let out = ferry(
            work.path(),
            newer.url(),
            &["restore", "--from", &backup_arg],
        );
        assert!(out.status.success(), "{}", text(&out));
        newer
            .exec(
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
                 VALUES (99, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
                 VALUES (99, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
            )
            .await;
        let newer_backup = work
            .path()
            .join(format!("newer-{}", backup_name(db.backend())));
        let newer_arg = newer_backup.display().to_string();
        let out = ferry(work.path(), newer.url(), &["backup", "--to", &newer_arg]);
        // A SQLite backup verifies its snapshot, which names the unknown migration.
        if db.backend() == Backend::Sqlite {
            assert_eq!(out.status.code(), Some(1), "{}", text(&out));
            assert!(text(&out).contains("newer"), "{}", text(&out));
            // Copied by hand instead, it is refused at restore.
            let path = ferry::store::backup::sqlite_path(newer.url()).unwrap();
            std::fs::copy(&path, &newer_backup).unwrap();
        } else {
            assert!(out.status.success(), "{}", text(&out));
        }
        let fresh = fresh_like(&db).await;
        let out = ferry(work.path(), fresh.url(), &["restore", "--from", &newer_arg]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains("newer than this binary"),
            "{}",
            text(&out)
        );
        fresh.finish("restore_refuses_fresh").await;
        newer.finish("restore_refuses_newer").await;
        db.finish("restore_refuses_a_target_in_use_and_a_newer_schema")
            .await;
    }
}

/// Rows written behind the store's back, one broken invariant each: `(check,
/// SQLite statement, PostgreSQL statement, statement that undoes it)`.
const BREAKAGES: &[(&str, &str, &str, &str)] = &[
    (
        "cursor_above_head",
        "UPDATE devices SET cursor_seq = 1000",
        "UPDATE devices SET cursor_seq = 1000",
        "UPDATE devices SET cursor_seq = 0",
    ),
    (
        "pruned_above_head",
        "UPDATE users SET pruned_through = head + 5",
        "UPDATE users SET pruned_through = head + 5",
        "UPDATE users SET pruned_through = 0",
    ),
    (
        "id_sizes",
        "UPDATE events SET event_id = x'00' WHERE seq = 1",
        "UPDATE events SET event_id = '\\x00'::bytea WHERE seq = 1",
        "",
    ),
    (
        "key_sizes",
        "UPDATE events SET event_key = zeroblob(65) WHERE seq = 2",
        "UPDATE events SET event_key = decode(repeat('00', 65), 'hex') WHERE seq = 2",
        "UPDATE events SET event_key = NULL WHERE seq = 2",
    ),
    (
        "event_without_user",
        "DELETE FROM users",
        "DELETE FROM users",
        "",
    ),
    (
        "migrations",
        "UPDATE refinery_schema_history SET checksum = '42' WHERE version = 1",
        "UPDATE refinery_schema_history SET checksum = '42' WHERE version = 1",
        "",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_each_broken_invariant_and_passes_a_sound_database() {
    for db in databases().await {
        let work = tempfile::tempdir().unwrap();
        let srv = TestServer::start(db.url(), &[]).await;
        let user = TestUser::random();
        let mut c = connect(&srv.ws_url(), user.device()).await;
        for _ in 0..3 {
            c.request(&common::client::publish_json(&new_event_id(), b"x"))
                .await;
        }
        drop(c);
        srv.stop().await;
        let backup = work.path().join(backup_name(db.backend()));
        let backup_arg = backup.display().to_string();
        let out = ferry(work.path(), db.url(), &["backup", "--to", &backup_arg]);
        assert!(out.status.success(), "{}", text(&out));
        let out = ferry(work.path(), db.url(), &["verify"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(
            text(&out).contains("1 users, 1 devices, 3 events"),
            "{}",
            text(&out)
        );

        for (check, sqlite, postgres, _) in BREAKAGES {
            // Each on a fresh copy of the sound database.
            let copy = fresh_like(&db).await;
            let out = ferry(work.path(), copy.url(), &["restore", "--from", &backup_arg]);
            assert!(out.status.success(), "{}", text(&out));
            copy.exec(sqlite, postgres).await;
            let out = ferry(work.path(), copy.url(), &["verify"]);
            assert_eq!(out.status.code(), Some(1), "{check}: {}", text(&out));
            assert!(
                text(&out).contains(&format!("damage: {check}:")),
                "{check}: {}",
                text(&out)
            );
            copy.finish("verify_breakage").await;
        }
        db.finish("verify_names_each_broken_invariant_and_passes_a_sound_database")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_overwritten_bytes_in_a_sqlite_file() {
    let db = TestDb::sqlite().await;
    let work = tempfile::tempdir().unwrap();
    let srv = TestServer::start(db.url(), &[]).await;
    let user = TestUser::random();
    let mut c = connect(&srv.ws_url(), user.device()).await;
    for _ in 0..400 {
        c.request(&common::client::publish_json(&new_event_id(), &[7u8; 200]))
            .await;
    }
    drop(c);
    srv.stop().await;
    let backup = work.path().join("backup.db");
    let out = ferry(
        work.path(),
        db.url(),
        &["backup", "--to", &backup.display().to_string()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let sound = ferry(
        work.path(),
        db.url(),
        &[
            "verify",
            "--database-url",
            &ferry::backup::sqlite_url(&backup),
        ],
    );
    assert_eq!(sound.status.code(), Some(0), "{}", text(&sound));
    // Garbage over the middle pages of a copy (past the schema on page 1).
    let damaged = work.path().join("damaged.db");
    let mut bytes = std::fs::read(&backup).unwrap();
    let page = 4096;
    let pages = bytes.len() / page;
    assert!(pages > 8, "{pages} pages");
    for b in &mut bytes[page * (pages / 2)..page * (pages / 2) + 3 * page] {
        *b = 0xA5;
    }
    std::fs::write(&damaged, &bytes).unwrap();
    let out = ferry(
        work.path(),
        db.url(),
        &[
            "verify",
            "--database-url",
            &ferry::backup::sqlite_url(&damaged),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("damage: integrity:"), "{}", text(&out));
    // A damaged backup is not restored.
    let target = TestDb::sqlite().await;
    let out = ferry(
        work.path(),
        target.url(),
        &["restore", "--from", &damaged.display().to_string()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("failed verification"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_password_never_appears_in_output() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    // Trust authentication accepts any password: the URL carries one, as a
    // production URL would.
    let password = "pw-Zq8x-never-printed";
    let mut url = url::Url::parse(db.url()).unwrap();
    url.set_password(Some(password)).unwrap();
    let url = url.to_string();
    let work = tempfile::tempdir().unwrap();
    let srv = TestServer::start(&url, &[]).await;
    srv.stop().await;
    let backup = work.path().join("backup.dump");
    let backup_arg = backup.display().to_string();
    let runs = [
        ferry(work.path(), &url, &["backup", "--to", &backup_arg]),
        ferry(work.path(), &url, &["verify"]),
        // Refused (not empty), and the refusal names the database.
        ferry(work.path(), &url, &["restore", "--from", &backup_arg]),
        ferry(
            work.path(),
            &url,
            &["restore", "--from", &backup_arg, "--force"],
        ),
        // A failure from pg_dump itself (the file exists now).
        ferry(work.path(), &url, &["backup", "--to", &backup_arg]),
    ];
    for out in &runs {
        let all = text(out);
        assert!(!all.contains(password), "{all}");
    }
    assert!(runs[0].status.success(), "{}", text(&runs[0]));
    assert!(runs[1].status.success(), "{}", text(&runs[1]));
    assert_eq!(runs[2].status.code(), Some(1), "{}", text(&runs[2]));
    assert!(
        text(&runs[2]).contains("REDACTED") || text(&runs[2]).contains("***"),
        "{}",
        text(&runs[2])
    );
    assert!(runs[3].status.success(), "{}", text(&runs[3]));
    db.finish("the_postgres_password_never_appears_in_output")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_an_older_schema_restores_and_migrates() {
    for db in databases().await {
        let work = tempfile::tempdir().unwrap();
        // A database as an older release left it.
        let out = ferry(work.path(), db.url(), &["migrate", "up", "--to", "4"]);
        assert!(out.status.success(), "{}", text(&out));
        let out = ferry(work.path(), db.url(), &["verify"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains("damage: migrations_pending:"),
            "{}",
            text(&out)
        );
        let backup = work.path().join(backup_name(db.backend()));
        let backup_arg = backup.display().to_string();
        let out = ferry(work.path(), db.url(), &["backup", "--to", &backup_arg]);
        assert!(out.status.success(), "{}", text(&out));
        let target = fresh_like(&db).await;
        let out = ferry(
            work.path(),
            target.url(),
            &["restore", "--from", &backup_arg],
        );
        assert!(out.status.success(), "{}", text(&out));
        // The next start (here: `ferry migrate up`) brings it up to date.
        let out = ferry(work.path(), target.url(), &["migrate", "up"]);
        assert!(out.status.success(), "{}", text(&out));
        let out = ferry(work.path(), target.url(), &["verify"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        target.finish("older_schema_target").await;
        db.finish("a_backup_of_an_older_schema_restores_and_migrates")
            .await;
    }
}
