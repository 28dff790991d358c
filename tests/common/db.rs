//! Test databases: a SQLite file in a temp dir, always; a fresh PostgreSQL database
//! when `FERRY_TEST_POSTGRES_URL` is set (CI sets it, and there its absence or an
//! unreachable server fails the test run instead of silently skipping).
//!
//! Every test gets its own database, dropped afterwards, so tests run in parallel.
//! A PostgreSQL test that completes writes `postgres: ran <test name>` to stderr
//! (uncaptured), so CI logs show how many PostgreSQL tests really ran.

use std::io::Write as _;

use ferry::store::Backend;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use tempfile::TempDir;

/// The env var naming a PostgreSQL server for tests (any database on it; each test
/// creates its own).
pub const POSTGRES_URL_VAR: &str = "FERRY_TEST_POSTGRES_URL";

/// A `sqlite:` URL for a database file inside `dir` (created on first connect).
pub async fn sqlite_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("ferry.db").display())
}

/// A fresh PostgreSQL database, or `None` when `FERRY_TEST_POSTGRES_URL` is unset (or
/// the server is unreachable) outside CI.
///
/// # Panics
/// With `CI` set, when the variable is missing or the server unreachable.
pub async fn postgres() -> Option<PgTestDb> {
    let in_ci = std::env::var_os("CI").is_some();
    let base = match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ if in_ci => panic!("{POSTGRES_URL_VAR} must be set in CI"),
        _ => return None,
    };
    let mut admin = match PgConnection::connect(&base).await {
        Ok(conn) => conn,
        Err(e) if in_ci => panic!("{POSTGRES_URL_VAR} is set but PostgreSQL is unreachable: {e}"),
        Err(e) => {
            eprintln!("skipping PostgreSQL: {POSTGRES_URL_VAR} unreachable: {e}");
            return None;
        }
    };
    let name = format!("ferry_test_{:016x}", rand::random::<u64>());
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let _ = admin.close().await;
    let mut url = url::Url::parse(&base).expect("FERRY_TEST_POSTGRES_URL is a URL");
    url.set_path(&format!("/{name}"));
    Some(PgTestDb {
        url: url.to_string(),
        admin_url: base,
        name,
        dropped: false,
    })
}

/// A PostgreSQL database that exists for one test. Dropped (`WITH (FORCE)`, so open
/// pools do not keep it alive) by [`PgTestDb::drop_db`], or on drop.
#[derive(Debug)]
pub struct PgTestDb {
    url: String,
    admin_url: String,
    name: String,
    dropped: bool,
}

impl PgTestDb {
    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name (`ferry_test_<hex>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database now.
    pub async fn drop_db(mut self) {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name).await;
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Also runs when a test panics; a runtime may or may not be around, so use a
        // thread with its own.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(drop_database(&admin_url, &name));
        })
        .join();
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    match PgConnection::connect(admin_url).await {
        Ok(mut admin) => {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(e) = admin.execute(AssertSqlSafe(sql)).await {
                eprintln!("warning: could not drop test database {name}: {e}");
            }
            let _ = admin.close().await;
        }
        Err(e) => eprintln!("warning: could not drop test database {name}: {e}"),
    }
}

/// One test database of either backend.
#[derive(Debug)]
pub enum TestDb {
    /// A SQLite file in a temp dir (removed on drop).
    Sqlite {
        /// The directory holding the file.
        dir: TempDir,
        /// The `sqlite:` URL.
        url: String,
    },
    /// A fresh PostgreSQL database.
    Postgres(PgTestDb),
}

impl TestDb {
    /// A fresh SQLite database.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = sqlite_url(&dir).await;
        Self::Sqlite { dir, url }
    }

    /// A fresh PostgreSQL database, if available (see [`postgres`]).
    pub async fn postgres() -> Option<Self> {
        postgres().await.map(Self::Postgres)
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } => url,
            Self::Postgres(db) => db.url(),
        }
    }

    /// Which backend.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite { .. } => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs one statement on the database outside the store (to tamper with it):
    /// `sqlite` or `postgres`, whichever dialect this database speaks.
    pub async fn exec(&self, sqlite: &'static str, postgres: &'static str) {
        match self.backend() {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(self.url()).await.unwrap();
                sqlx::query(sqlite).execute(&mut c).await.unwrap();
            }
            Backend::Postgres => {
                let mut c = PgConnection::connect(self.url()).await.unwrap();
                sqlx::query(postgres).execute(&mut c).await.unwrap();
            }
        }
    }

    /// Removes the database after a test that completed; for PostgreSQL also writes
    /// `postgres: ran <test_name>` to stderr, past the test harness's capture.
    pub async fn finish(self, test_name: &str) {
        if let Self::Postgres(db) = self {
            db.drop_db().await;
            ran_on_postgres(test_name);
        }
    }
}

/// Every available backend's fresh database: SQLite always, PostgreSQL when
/// configured.
pub async fn databases() -> Vec<TestDb> {
    let mut dbs = vec![TestDb::sqlite().await];
    dbs.extend(TestDb::postgres().await);
    dbs
}

/// Records in the (uncaptured) stderr that a PostgreSQL test ran to completion.
pub fn ran_on_postgres(test_name: &str) {
    let _ = writeln!(std::io::stderr(), "postgres: ran {test_name}");
}
