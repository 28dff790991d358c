//! Migrations on every backend: up/down round trip, schema parity between the
//! dialects, and refusal to run on a database this binary does not understand.

mod common;

use std::collections::BTreeSet;

use common::db::TestDb;
use ferry::store::{
    Backend, MigrateMode, NewEvent, StoreError, StoreOptions, connect, migrate_down,
    migrate_status, migrate_up,
};
use sqlx::{Connection, PgConnection, SqliteConnection};

/// Runs `$body(&TestDb)` as `$name::sqlite` and `$name::postgres`.
macro_rules! on_every_backend {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let db = super::TestDb::sqlite().await;
                super::$body(&db).await;
                db.finish(concat!(stringify!($name), "::sqlite")).await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(db) = super::TestDb::postgres().await else {
                    return;
                };
                super::$body(&db).await;
                db.finish(concat!(stringify!($name), "::postgres")).await;
            }
        }
    };
}

on_every_backend!(up_down_up_round_trip, up_down_up_round_trip);
on_every_backend!(refuses_unknown_newer_version, refuses_unknown_newer_version);
on_every_backend!(refuses_modified_migration, refuses_modified_migration);
on_every_backend!(verify_only_refuses_pending, verify_only_refuses_pending);
on_every_backend!(instances_starting_together, instances_starting_together);

const HISTORY: &str = "refinery_schema_history";

/// The tables of V1, without refinery's history table.
fn v1_tables() -> BTreeSet<String> {
    [
        "devices",
        "events",
        "refresh_tokens",
        "revoked_tokens",
        "used_revocations",
        "users",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// The tables up to V3 (V2 adds the REST login challenges; V3 only an index).
fn v3_tables() -> BTreeSet<String> {
    let mut t = v1_tables();
    t.insert("auth_challenges".into());
    t
}

/// The tables up to V4 (V4 adds the revocations kept across erasure).
fn v4_tables() -> BTreeSet<String> {
    let mut t = v3_tables();
    t.insert("kept_revocations".into());
    t
}

/// The tables of every migration (V5 adds the keys retention retired).
fn all_tables() -> BTreeSet<String> {
    let mut t = v4_tables();
    t.insert("retired_keys".into());
    t
}

/// `(table, column)` of every table except refinery's history table.
async fn columns(db: &TestDb) -> BTreeSet<(String, String)> {
    let rows: Vec<(String, String)> = match db.backend() {
        Backend::Sqlite => {
            let mut c = SqliteConnection::connect(db.url()).await.unwrap();
            sqlx::query_as(
                "SELECT m.name, p.name FROM sqlite_master AS m, pragma_table_info(m.name) AS p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
                   AND m.name <> 'refinery_schema_history'",
            )
            .fetch_all(&mut c)
            .await
            .unwrap()
        }
        Backend::Postgres => {
            let mut c = PgConnection::connect(db.url()).await.unwrap();
            sqlx::query_as(
                "SELECT table_name::text, column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() \
                   AND table_name <> 'refinery_schema_history'",
            )
            .fetch_all(&mut c)
            .await
            .unwrap()
        }
    };
    rows.into_iter().collect()
}

/// `users.head` of every user, in user order.
async fn users_head_column(db: &TestDb) -> Vec<i64> {
    const SQL: &str = "SELECT head FROM users ORDER BY user_id";
    match db.backend() {
        Backend::Sqlite => {
            let mut c = SqliteConnection::connect(db.url()).await.unwrap();
            sqlx::query_scalar(SQL).fetch_all(&mut c).await.unwrap()
        }
        Backend::Postgres => {
            let mut c = PgConnection::connect(db.url()).await.unwrap();
            sqlx::query_scalar(SQL).fetch_all(&mut c).await.unwrap()
        }
    }
}

/// The names of the indexes on `events` (PostgreSQL: including those behind
/// constraints).
async fn event_indexes(db: &TestDb) -> BTreeSet<String> {
    let rows: Vec<(String,)> = match db.backend() {
        Backend::Sqlite => {
            let mut c = SqliteConnection::connect(db.url()).await.unwrap();
            sqlx::query_as(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' \
                   AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(&mut c)
            .await
            .unwrap()
        }
        Backend::Postgres => {
            let mut c = PgConnection::connect(db.url()).await.unwrap();
            sqlx::query_as(
                "SELECT indexname::text FROM pg_indexes \
                 WHERE schemaname = current_schema() AND tablename = 'events'",
            )
            .fetch_all(&mut c)
            .await
            .unwrap()
        }
    };
    rows.into_iter().map(|(n,)| n).collect()
}

/// The idempotency index of each schema version: V3 puts the event id first.
async fn assert_idempotency_index(db: &TestDb, version: u32) {
    let names = event_indexes(db).await;
    let (want, gone) = if version >= 3 {
        ("events_event_id_user", "events_user_event_id")
    } else {
        ("events_user_event_id", "events_event_id_user")
    };
    assert!(
        names.contains(want),
        "V{version}: {want} missing in {names:?}"
    );
    assert!(
        !names.contains(gone),
        "V{version}: {gone} left in {names:?}"
    );
}

async fn tables(db: &TestDb) -> BTreeSet<String> {
    columns(db).await.into_iter().map(|(t, _)| t).collect()
}

fn migration_error(result: Result<impl Sized, StoreError>) -> String {
    match result {
        Err(StoreError::Migration(msg)) => {
            assert!(!msg.contains('\n'), "one line: {msg}");
            msg
        }
        Err(e) => panic!("expected a migration error, got {e:?}"),
        Ok(_) => panic!("expected a migration error, got Ok"),
    }
}

async fn up_down_up_round_trip(db: &TestDb) {
    let url = db.url();
    assert_eq!(migrate_up(url, None).await.unwrap(), vec![1, 2, 3, 4, 5, 6]);
    let status = migrate_status(url).await.unwrap();
    assert!(status.is_current(), "{status}");
    assert_eq!(status.backend, db.backend());
    assert!(status.known[0].applied_on.is_some());
    assert_eq!(tables(db).await, all_tables());
    // Nothing left to apply.
    assert_eq!(migrate_up(url, None).await.unwrap(), Vec::<u32>::new());

    // Data goes with the tables; the store works in between.
    let store = connect(url, &StoreOptions::default()).await.unwrap();
    let user = ferry::store::UserId([1; 32]);
    assert_eq!(store.head(&user).await.unwrap(), 0);
    let batch: Vec<NewEvent> = (1..=3u8)
        .map(|i| NewEvent {
            user,
            id: uuid::Uuid::from_u128(u128::from(i)),
            device: ferry::store::DeviceId([2; 32]),
            payload: vec![i],
            key: None,
            base: None,
            ttl: None,
            ts: 1_000,
        })
        .collect();
    store.append(&batch).await.unwrap();
    assert_eq!(store.head(&user).await.unwrap(), 3);
    drop(store);
    if db.backend() == Backend::Sqlite {
        // The SQLite append leaves `users.head` behind: the log holds the head.
        assert_eq!(users_head_column(db).await, vec![0]);
    }

    assert_idempotency_index(db, 3).await;

    // Down one version: V6's down script writes each head into `users.head`, which
    // is what the binaries of V5 read as the head (the SQLite append of V6 leaves
    // it behind the log).
    assert_eq!(migrate_down(url, 5).await.unwrap(), vec![6]);
    assert_eq!(users_head_column(db).await, vec![3]);
    assert_eq!(tables(db).await, all_tables());

    // Down one more: V5's table goes.
    assert_eq!(migrate_down(url, 4).await.unwrap(), vec![5]);
    assert_eq!(tables(db).await, v4_tables());

    // Down one more: V4's table goes.
    assert_eq!(migrate_down(url, 3).await.unwrap(), vec![4]);
    assert_eq!(tables(db).await, v3_tables());
    assert_idempotency_index(db, 3).await;

    // Down one more: V3's index order goes back, the tables stay.
    assert_eq!(migrate_down(url, 2).await.unwrap(), vec![3]);
    assert_eq!(tables(db).await, v3_tables());
    assert_idempotency_index(db, 2).await;

    // Down once more: V2's table and columns go, V1's stay.
    assert_eq!(migrate_down(url, 1).await.unwrap(), vec![2]);
    assert_eq!(tables(db).await, v1_tables());
    assert_idempotency_index(db, 1).await;
    assert!(
        !columns(db)
            .await
            .contains(&("refresh_tokens".into(), "access_jti".into()))
    );
    assert_eq!(migrate_up(url, None).await.unwrap(), vec![2, 3, 4, 5, 6]);
    assert_eq!(tables(db).await, all_tables());
    assert_idempotency_index(db, 3).await;

    assert_eq!(migrate_down(url, 0).await.unwrap(), vec![6, 5, 4, 3, 2, 1]);
    assert!(
        tables(db).await.is_empty(),
        "tables left: {:?}",
        tables(db).await
    );
    let status = migrate_status(url).await.unwrap();
    assert_eq!(status.pending(), vec![1, 2, 3, 4, 5, 6]);
    assert!(status.to_string().contains("pending"), "{status}");
    assert_eq!(migrate_down(url, 0).await.unwrap(), Vec::<u32>::new());

    // `--to` below the first version applies nothing; then everything comes back.
    assert_eq!(migrate_up(url, Some(0)).await.unwrap(), Vec::<u32>::new());
    assert_eq!(migrate_up(url, Some(1)).await.unwrap(), vec![1]);
    assert_eq!(tables(db).await, v1_tables());
    assert_eq!(migrate_up(url, None).await.unwrap(), vec![2, 3, 4, 5, 6]);
    assert_eq!(tables(db).await, all_tables());
    assert!(migrate_status(url).await.unwrap().is_current());
}

async fn refuses_unknown_newer_version(db: &TestDb) {
    let url = db.url();
    migrate_up(url, None).await.unwrap();
    db.exec(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES (999, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES (999, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
    )
    .await;

    for migrate in [MigrateMode::Apply, MigrateMode::VerifyOnly] {
        let opts = StoreOptions {
            migrate,
            ..StoreOptions::default()
        };
        let msg = migration_error(connect(url, &opts).await);
        assert!(msg.contains("V999"), "{msg}");
    }
    assert!(migration_error(migrate_up(url, None).await).contains("V999"));
    assert!(migration_error(migrate_down(url, 0).await).contains("V999"));
    // The schema was left alone.
    assert_eq!(tables(db).await, all_tables());

    let status = migrate_status(url).await.unwrap();
    assert_eq!(status.unknown.len(), 1);
    assert_eq!(status.unknown[0].version, 999);
    assert!(status.to_string().contains("UNKNOWN"), "{status}");
    assert!(!status.is_current());
}

async fn refuses_modified_migration(db: &TestDb) {
    let url = db.url();
    migrate_up(url, None).await.unwrap();
    db.exec(
        "UPDATE refinery_schema_history SET checksum = '12345' WHERE version = 1",
        "UPDATE refinery_schema_history SET checksum = '12345' WHERE version = 1",
    )
    .await;
    for migrate in [MigrateMode::Apply, MigrateMode::VerifyOnly] {
        let opts = StoreOptions {
            migrate,
            ..StoreOptions::default()
        };
        let msg = migration_error(connect(url, &opts).await);
        assert!(
            msg.contains("V1__initial") && msg.contains("checksum"),
            "{msg}"
        );
    }
    migration_error(migrate_down(url, 0).await);
    assert_eq!(tables(db).await, all_tables());
    let status = migrate_status(url).await.unwrap();
    assert!(!status.known[0].matches);
    assert!(status.to_string().contains("MODIFIED"), "{status}");
}

async fn verify_only_refuses_pending(db: &TestDb) {
    let url = db.url();
    let verify = StoreOptions {
        migrate: MigrateMode::VerifyOnly,
        ..StoreOptions::default()
    };
    let msg = migration_error(connect(url, &verify).await);
    assert_eq!(msg, "6 pending migrations; run `ferry migrate up`");
    assert!(tables(db).await.is_empty());
    migrate_up(url, None).await.unwrap();
    connect(url, &verify).await.unwrap().ping().await.unwrap();
    // Apply mode on a current database is a no-op.
    connect(url, &StoreOptions::default()).await.unwrap();
}

/// Several servers starting at once on a fresh database: all of them come up, and
/// the migration is applied once.
async fn instances_starting_together(db: &TestDb) {
    let starts = (0..4).map(|_| async { connect(db.url(), &StoreOptions::default()).await });
    for result in futures_util::future::join_all(starts).await {
        result
            .expect("instance failed to start")
            .ping()
            .await
            .unwrap();
    }
    let status = migrate_status(db.url()).await.unwrap();
    assert!(status.is_current(), "{status}");
    assert_eq!(tables(db).await, all_tables());
}

/// Both dialects create the same tables with the same columns.
#[tokio::test]
async fn sqlite_and_postgres_schemas_have_the_same_columns() {
    let Some(pg) = TestDb::postgres().await else {
        return;
    };
    let lite = TestDb::sqlite().await;
    migrate_up(lite.url(), None).await.unwrap();
    migrate_up(pg.url(), None).await.unwrap();
    let (l, p) = (columns(&lite).await, columns(&pg).await);
    assert!(!l.is_empty());
    assert_eq!(
        l,
        p,
        "only in SQLite: {:?}; only in PostgreSQL: {:?}",
        l.difference(&p),
        p.difference(&l)
    );
    assert!(!l.iter().any(|(t, _)| t == HISTORY));
    pg.finish("sqlite_and_postgres_schemas_have_the_same_columns")
        .await;
}

#[tokio::test]
async fn status_of_a_missing_sqlite_file_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.db");
    let url = format!("sqlite://{}", path.display());
    assert!(migrate_status(&url).await.is_err());
    assert!(!path.exists());
}

#[tokio::test]
async fn sqlite_connect_creates_the_file_and_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/ferry.db");
    // Both URL spellings.
    for url in [
        format!("sqlite://{}", path.display()),
        format!("sqlite:{}", path.display()),
    ] {
        connect(&url, &StoreOptions::default())
            .await
            .unwrap()
            .ping()
            .await
            .unwrap();
        assert!(path.exists());
    }
}

#[tokio::test]
async fn unknown_scheme_and_memory_are_refused() {
    for (url, needle) in [
        ("mysql://localhost/ferry", "mysql"),
        ("ferry.db", "scheme"),
        ("sqlite::memory:", "memory"),
    ] {
        match connect(url, &StoreOptions::default()).await {
            Err(StoreError::Other(msg)) => assert!(msg.contains(needle), "{url}: {msg}"),
            Err(e) => panic!("{url}: {e:?}"),
            Ok(_) => panic!("{url}: connected"),
        }
    }
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable() {
    let opts = StoreOptions {
        connect_timeout: std::time::Duration::from_secs(2),
        ..StoreOptions::default()
    };
    // Port 1 on localhost: connection refused.
    match connect("postgres://ferry@127.0.0.1:1/ferry", &opts).await {
        Err(StoreError::Unavailable(_)) => {}
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("connected"),
    }
}
