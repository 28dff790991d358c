//! Schema migrations: refinery driven through sqlx, down scripts, and the operations
//! behind `ferry migrate status | up | down`.
//!
//! Refinery has no sqlx driver, so [`Migrator`] (one dedicated sqlx connection)
//! implements refinery-core's `AsyncTransaction` and `AsyncQuery`, which gives it
//! `AsyncMigrate`: refinery then plans and records migrations in its usual
//! `refinery_schema_history` table, and we run each migration's SQL plus its history
//! row inside one sqlx transaction. A dedicated connection rather than the pool, so a
//! PostgreSQL session advisory lock can serialise server instances that start
//! together (and is released by closing the connection, even on error paths).
//!
//! # Adding a migration
//! Add `migrations/sqlite/V{n}__{name}.sql` and `migrations/postgres/V{n}__{name}.sql`
//! with the same tables and columns, and their down scripts
//! `migrations/sqlite-down/U{n}__{name}.sql` and `migrations/postgres-down/U{n}__{name}.sql`.
//! No Rust changes: `embed_migrations!` picks up the up scripts and `build.rs`
//! generates the down-script table (and fails the build if a script is missing).
//! The down scripts live outside the scanned folders because refinery recurses into
//! subfolders and would run `U…` files as "unversioned" migrations.

use std::fmt;
use std::time::Duration;

use refinery_core::traits::r#async::{AsyncQuery, AsyncTransaction};
use refinery_core::{AsyncMigrate, Migration, Runner, Target};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Backend, MigrateMode, StoreError};

mod embedded_sqlite {
    #![allow(unreachable_pub, missing_docs)]
    refinery::embed_migrations!("migrations/sqlite");
}

mod embedded_postgres {
    #![allow(unreachable_pub, missing_docs)]
    refinery::embed_migrations!("migrations/postgres");
}

/// The script that reverts one migration.
#[derive(Debug)]
pub(crate) struct DownScript {
    /// Version of the migration it reverts.
    pub(crate) version: u32,
    /// Name of the migration it reverts.
    pub(crate) name: &'static str,
    /// The SQL.
    pub(crate) sql: &'static str,
}

impl DownScript {
    /// The error for a down script the database refused (nothing was changed: the
    /// whole `down` runs in one transaction).
    fn failed(&self, e: sqlx::Error) -> StoreError {
        StoreError::Migration(one_line(&format!(
            "down script U{}__{} failed, nothing reverted: {e}",
            self.version, self.name
        )))
    }
}

// Defines `SQLITE_DOWN` and `POSTGRES_DOWN`, sorted by version (see build.rs).
include!(concat!(env!("OUT_DIR"), "/down_migrations.rs"));

/// Key of the PostgreSQL advisory lock held while migrating ("ferry-mg" in ASCII).
const PG_MIGRATION_LOCK: i64 = 0x6665_7272_792d_6d67;

/// How often `prepare` plans again when a concurrent migration got in its way.
const PREPARE_RETRIES: u32 = 10;

/// How long `ferry migrate` waits for a connection.
const CLI_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a database stands relative to the migrations this binary carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationStatus {
    /// The database's backend.
    pub backend: Backend,
    /// Every migration this binary knows, by version.
    pub known: Vec<KnownMigration>,
    /// Migrations the database records that this binary does not know (written by a
    /// newer Ferry): this binary refuses to run on such a database.
    pub unknown: Vec<UnknownMigration>,
}

/// A migration this binary carries, and whether the database has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownMigration {
    /// Schema version.
    pub version: u32,
    /// Name from the file name.
    pub name: String,
    /// When it was applied (RFC 3339, as recorded); `None` while pending.
    pub applied_on: Option<String>,
    /// `false` when the database recorded this version with another name or checksum
    /// (the script was edited after it was applied): this binary refuses to run.
    pub matches: bool,
}

/// A migration recorded in the database that this binary does not carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownMigration {
    /// Schema version.
    pub version: i64,
    /// Recorded name.
    pub name: String,
    /// Recorded time of application.
    pub applied_on: Option<String>,
}

impl MigrationStatus {
    /// Versions this binary carries that the database has not applied.
    pub fn pending(&self) -> Vec<u32> {
        self.known
            .iter()
            .filter(|m| m.applied_on.is_none())
            .map(|m| m.version)
            .collect()
    }

    /// Whether the server can start on this database without migrating: nothing
    /// pending, nothing unknown, no checksum mismatch.
    pub fn is_current(&self) -> bool {
        self.unknown.is_empty()
            && self
                .known
                .iter()
                .all(|m| m.applied_on.is_some() && m.matches)
    }
}

impl fmt::Display for MigrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "backend: {}", self.backend)?;
        let name_width = self
            .known
            .iter()
            .map(|m| m.name.len())
            .chain(self.unknown.iter().map(|m| m.name.len()))
            .chain([4])
            .max()
            .unwrap_or(4);
        writeln!(
            f,
            "{:>7}  {:<name_width$}  {:<9}  applied on",
            "version", "name", "state"
        )?;
        for m in &self.known {
            let state = match (&m.applied_on, m.matches) {
                (None, _) => "pending",
                (Some(_), true) => "applied",
                (Some(_), false) => "MODIFIED",
            };
            let on = m.applied_on.as_deref().unwrap_or("-");
            writeln!(
                f,
                "{:>7}  {:<name_width$}  {state:<9}  {on}",
                m.version, m.name
            )?;
        }
        for m in &self.unknown {
            let on = m.applied_on.as_deref().unwrap_or("-");
            writeln!(
                f,
                "{:>7}  {:<name_width$}  {:<9}  {on}",
                m.version, m.name, "UNKNOWN"
            )?;
        }
        let pending = self.pending().len();
        if !self.unknown.is_empty() {
            write!(
                f,
                "the database has migrations this binary does not know: upgrade ferry"
            )
        } else if self.known.iter().any(|m| !m.matches) {
            write!(
                f,
                "applied migrations differ from the ones built into this binary (MODIFIED)"
            )
        } else if pending > 0 {
            write!(f, "{}; run `ferry migrate up`", pending_text(pending))
        } else {
            write!(f, "up to date")
        }
    }
}

/// Reports which migrations this binary carries and which the database at `url` has
/// applied. Changes nothing (a missing SQLite file is an error, not created).
pub async fn migrate_status(url: &str) -> Result<MigrationStatus, StoreError> {
    let mut migrator = Migrator::open(url, Open::ReadOnly, CLI_CONNECT_TIMEOUT).await?;
    let status = migrator.status().await;
    migrator.close().await;
    status
}

/// Applies pending migrations up to and including version `to` (all when `None`) and
/// returns the versions applied, ascending. Refuses when the database holds an
/// unknown or modified migration.
pub async fn migrate_up(url: &str, to: Option<u32>) -> Result<Vec<u32>, StoreError> {
    let mut migrator = Migrator::open(url, Open::Migrate, CLI_CONNECT_TIMEOUT).await?;
    let result = migrator.up(to).await;
    migrator.close().await;
    result
}

/// Reverts applied migrations above version `to` (`0`: all of them), newest first,
/// by running their down scripts and deleting their history rows in ONE transaction,
/// and returns the reverted versions in the order they were reverted. Refuses when
/// the database holds an unknown or modified migration. Down scripts drop data.
pub async fn migrate_down(url: &str, to: u32) -> Result<Vec<u32>, StoreError> {
    let mut migrator = Migrator::open(url, Open::Migrate, CLI_CONNECT_TIMEOUT).await?;
    let result = migrator.down(to).await;
    migrator.close().await;
    result
}

/// Brings a database to the schema this binary needs, or refuses: what
/// [`super::connect`] runs before serving.
pub(super) async fn prepare(
    url: &str,
    mode: MigrateMode,
    timeout: Duration,
) -> Result<(), StoreError> {
    let sqlite = Backend::from_url(url)? == Backend::Sqlite;
    let mut attempt = 0u32;
    loop {
        match prepare_once(url, mode, timeout).await {
            // Processes setting up one fresh SQLite file at the same moment (switching
            // it to WAL, creating the history table) can get SQLITE_BUSY at once,
            // without the busy timeout: try again, then only what is pending is done.
            Err(StoreError::Unavailable(msg))
                if sqlite && msg.contains("database is locked") && attempt < PREPARE_RETRIES =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50) * attempt).await;
            }
            other => return other,
        }
    }
}

async fn prepare_once(url: &str, mode: MigrateMode, timeout: Duration) -> Result<(), StoreError> {
    let open = match mode {
        MigrateMode::Apply => Open::Migrate,
        MigrateMode::VerifyOnly => Open::Verify,
    };
    let mut migrator = Migrator::open(url, open, timeout).await?;
    let result = match mode {
        MigrateMode::Apply => {
            let mut attempt = 0u32;
            loop {
                match migrator.up(None).await {
                    Ok(_) => break Ok(()),
                    // Another process on the same SQLite file may have applied a
                    // migration between our planning and our applying, or hold the
                    // write lock for its own (PostgreSQL has the advisory lock for
                    // that): fine if the schema is current now; while it is only
                    // behind (nothing unknown or modified), plan again after a pause,
                    // so only what is still pending is applied. Every migration is
                    // one transaction, so nothing is half-applied.
                    Err(e) => match migrator.status().await {
                        Ok(status) if status.is_current() => break Ok(()),
                        Ok(status)
                            if attempt < PREPARE_RETRIES
                                && status.unknown.is_empty()
                                && status.known.iter().all(|m| m.matches) =>
                        {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(50) * attempt).await;
                        }
                        _ => break Err(e),
                    },
                }
            }
        }
        MigrateMode::VerifyOnly => migrator.verify_current().await,
    };
    migrator.close().await;
    result
}

/// How [`Migrator::open`] treats the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    /// Reads only; a missing SQLite file is an error.
    ReadOnly,
    /// Reads only, but creates a missing SQLite file like the server would.
    Verify,
    /// Will change the schema: creates a missing SQLite file and, on PostgreSQL, takes
    /// the migration advisory lock.
    Migrate,
}

/// One database connection that refinery migrates through.
pub(crate) struct Migrator {
    conn: Conn,
}

enum Conn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

/// A row of the history table.
#[derive(Debug)]
struct HistoryRow {
    version: i32,
    name: Option<String>,
    applied_on: Option<String>,
    checksum: Option<String>,
}

impl HistoryRow {
    fn into_migration(self) -> Migration {
        let applied_on = self
            .applied_on
            .as_deref()
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        // An unparsable checksum compares unequal to every real one: divergent.
        let checksum = self
            .checksum
            .as_deref()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Migration::applied(
            self.version,
            self.name.unwrap_or_default(),
            applied_on,
            checksum,
        )
    }
}

impl Migrator {
    async fn open(url: &str, open: Open, timeout: Duration) -> Result<Self, StoreError> {
        let connecting = async {
            Ok::<_, StoreError>(match Backend::from_url(url)? {
                Backend::Sqlite => {
                    let opts = super::options::sqlite_options(url, open != Open::ReadOnly)?;
                    Conn::Sqlite(opts.connect().await?)
                }
                Backend::Postgres => {
                    Conn::Postgres(super::options::postgres_options(url)?.connect().await?)
                }
            })
        };
        let mut conn = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("no database connection within {timeout:?}"))
            })??;
        if let (Conn::Postgres(c), Open::Migrate) = (&mut conn, open) {
            // Held until `close` (or until the connection drops). A second instance
            // starting at the same time waits here, however long the first one's
            // migrations take, then finds nothing left to apply.
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(PG_MIGRATION_LOCK)
                .execute(&mut *c)
                .await?;
        }
        Ok(Self { conn })
    }

    /// Closes the connection (which releases the PostgreSQL advisory lock). Errors
    /// are ignored: the work is committed or rolled back by now.
    async fn close(self) {
        let _ = match self.conn {
            Conn::Sqlite(c) => c.close().await,
            Conn::Postgres(c) => c.close().await,
        };
    }

    fn backend(&self) -> Backend {
        match self.conn {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// The migrations this binary carries for this backend, by version.
    fn known(&self) -> Vec<Migration> {
        let mut known = runner(self.backend()).get_migrations().clone();
        known.sort();
        known
    }

    fn down_scripts(&self) -> &'static [DownScript] {
        match self.backend() {
            Backend::Sqlite => SQLITE_DOWN,
            Backend::Postgres => POSTGRES_DOWN,
        }
    }

    /// The history table's rows, by version; empty when the table does not exist.
    async fn applied(&mut self) -> Result<Vec<HistoryRow>, StoreError> {
        let exists = match &mut self.conn {
            Conn::Sqlite(c) => {
                sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master \
                     WHERE type = 'table' AND name = 'refinery_schema_history')",
                )
                .fetch_one(c)
                .await?
            }
            Conn::Postgres(c) => {
                sqlx::query_scalar::<_, bool>(
                    "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
                )
                .fetch_one(c)
                .await?
            }
        };
        if !exists {
            return Ok(Vec::new());
        }
        Ok(self
            .history(
                "SELECT version, name, applied_on, checksum \
                 FROM refinery_schema_history ORDER BY version",
            )
            .await?)
    }

    async fn history(&mut self, sql: &str) -> Result<Vec<HistoryRow>, sqlx::Error> {
        type Row = (i32, Option<String>, Option<String>, Option<String>);
        let sql = AssertSqlSafe(sql.to_owned());
        let rows: Vec<Row> = match &mut self.conn {
            Conn::Sqlite(c) => sqlx::query_as(sql).fetch_all(c).await?,
            Conn::Postgres(c) => sqlx::query_as(sql).fetch_all(c).await?,
        };
        Ok(rows
            .into_iter()
            .map(|(version, name, applied_on, checksum)| HistoryRow {
                version,
                name,
                applied_on,
                checksum,
            })
            .collect())
    }

    async fn status(&mut self) -> Result<MigrationStatus, StoreError> {
        let applied = self.applied().await?;
        Ok(status_of(self.backend(), &self.known(), &applied))
    }

    /// Refuses a database this binary must not run on: see [`check`].
    async fn checked_status(&mut self) -> Result<MigrationStatus, StoreError> {
        let status = self.status().await?;
        check(&status)?;
        Ok(status)
    }

    async fn verify_current(&mut self) -> Result<(), StoreError> {
        let pending = self.checked_status().await?.pending().len();
        if pending > 0 {
            return Err(StoreError::Migration(format!(
                "{}; run `ferry migrate up`",
                pending_text(pending)
            )));
        }
        Ok(())
    }

    async fn up(&mut self, to: Option<u32>) -> Result<Vec<u32>, StoreError> {
        // Our own check first for a clear message; refinery checks the same again
        // (abort_divergent / abort_missing) right before applying.
        self.checked_status().await?;
        let target = match to {
            None => Target::Latest,
            Some(v) => Target::Version(i32::try_from(v).unwrap_or(i32::MAX)),
        };
        let runner = runner(self.backend())
            .set_target(target)
            .set_abort_divergent(true)
            .set_abort_missing(true);
        let report = runner
            .run_async(self)
            .await
            .map_err(|e| StoreError::Migration(one_line(&e.to_string())))?;
        Ok(report
            .applied_migrations()
            .iter()
            .map(|m| u32::try_from(m.version()).unwrap_or(0))
            .collect())
    }

    async fn down(&mut self, to: u32) -> Result<Vec<u32>, StoreError> {
        let status = self.checked_status().await?;
        let mut revert: Vec<u32> = status
            .known
            .iter()
            .filter(|m| m.applied_on.is_some() && m.version > to)
            .map(|m| m.version)
            .collect();
        revert.sort_unstable_by(|a, b| b.cmp(a));
        if revert.is_empty() {
            return Ok(revert);
        }
        let scripts = self.down_scripts();
        let script = |v: u32| {
            scripts
                .iter()
                .find(|s| s.version == v)
                .ok_or_else(|| StoreError::Migration(format!("migration V{v} has no down script")))
        };
        match &mut self.conn {
            Conn::Sqlite(c) => {
                let mut tx = c.begin_with("BEGIN IMMEDIATE").await?;
                for &v in &revert {
                    let s = script(v)?;
                    sqlx::raw_sql(s.sql)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| s.failed(e))?;
                    sqlx::query("DELETE FROM refinery_schema_history WHERE version = ?")
                        .bind(i64::from(v))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Conn::Postgres(c) => {
                let mut tx = c.begin().await?;
                for &v in &revert {
                    let s = script(v)?;
                    sqlx::raw_sql(s.sql)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| s.failed(e))?;
                    sqlx::query("DELETE FROM refinery_schema_history WHERE version = $1")
                        .bind(i32::try_from(v).unwrap_or(i32::MAX))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(revert)
    }
}

impl AsyncTransaction for Migrator {
    type Error = sqlx::Error;

    /// Runs `queries` (a migration's SQL, then its history row) in one transaction.
    /// `raw_sql` so multi-statement scripts work on PostgreSQL too.
    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &'a mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let mut count = 0;
        match &mut self.conn {
            Conn::Sqlite(c) => {
                let mut tx = c.begin_with("BEGIN IMMEDIATE").await?;
                for sql in queries {
                    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *tx).await?;
                    count += 1;
                }
                tx.commit().await?;
            }
            Conn::Postgres(c) => {
                let mut tx = c.begin().await?;
                for sql in queries {
                    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *tx).await?;
                    count += 1;
                }
                tx.commit().await?;
            }
        }
        Ok(count)
    }
}

impl AsyncQuery<Vec<Migration>> for Migrator {
    /// Reads refinery's history table (`query` is refinery's SELECT on it).
    async fn query<'a>(&'a mut self, query: &'a str) -> Result<Vec<Migration>, Self::Error> {
        let rows = self.history(query).await?;
        Ok(rows.into_iter().map(HistoryRow::into_migration).collect())
    }
}

impl AsyncMigrate for Migrator {}

/// The newest schema version this binary carries for `backend`.
pub fn latest_version(backend: Backend) -> u32 {
    runner(backend)
        .get_migrations()
        .iter()
        .map(|m| u32::try_from(m.version()).unwrap_or(0))
        .max()
        .unwrap_or(0)
}

/// Refinery's runner over the embedded up scripts of `backend`.
fn runner(backend: Backend) -> Runner {
    match backend {
        Backend::Sqlite => embedded_sqlite::migrations::runner(),
        Backend::Postgres => embedded_postgres::migrations::runner(),
    }
}

fn status_of(backend: Backend, known: &[Migration], applied: &[HistoryRow]) -> MigrationStatus {
    let known_out = known
        .iter()
        .map(|k| {
            let row = applied.iter().find(|a| a.version == k.version());
            KnownMigration {
                version: u32::try_from(k.version()).unwrap_or(0),
                name: k.name().to_owned(),
                applied_on: row.map(|a| a.applied_on.clone().unwrap_or_default()),
                matches: row.is_none_or(|a| {
                    a.name.as_deref() == Some(k.name())
                        && a.checksum.as_deref() == Some(k.checksum().to_string().as_str())
                }),
            }
        })
        .collect();
    let unknown = applied
        .iter()
        .filter(|a| !known.iter().any(|k| k.version() == a.version))
        .map(|a| UnknownMigration {
            version: i64::from(a.version),
            name: a.name.clone().unwrap_or_default(),
            applied_on: a.applied_on.clone(),
        })
        .collect();
    MigrationStatus {
        backend,
        known: known_out,
        unknown,
    }
}

/// Refuses a database holding a migration this binary does not know (a newer Ferry
/// migrated it), or one whose recorded name or checksum differs from the built-in
/// script.
fn check(status: &MigrationStatus) -> Result<(), StoreError> {
    if let Some(u) = status.unknown.first() {
        return Err(StoreError::Migration(format!(
            "the database has migration V{}__{} that this binary does not know; \
             run a newer ferry (or restore a matching backup)",
            u.version, u.name
        )));
    }
    if let Some(m) = status.known.iter().find(|m| !m.matches) {
        return Err(StoreError::Migration(format!(
            "applied migration V{}__{} differs from the one built into this binary \
             (checksum mismatch); refusing to run",
            m.version, m.name
        )));
    }
    Ok(())
}

fn pending_text(n: usize) -> String {
    if n == 1 {
        "1 pending migration".to_owned()
    } else {
        format!("{n} pending migrations")
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_has_a_down_script_and_both_dialects_agree() {
        for (backend, downs) in [
            (Backend::Sqlite, SQLITE_DOWN),
            (Backend::Postgres, POSTGRES_DOWN),
        ] {
            let ups = runner(backend).get_migrations().clone();
            assert!(!ups.is_empty());
            assert_eq!(ups.len(), downs.len(), "{backend}");
            for up in &ups {
                let down = downs
                    .iter()
                    .find(|d| i64::from(d.version) == i64::from(up.version()))
                    .unwrap_or_else(|| panic!("{backend}: no down script for {up}"));
                assert_eq!(down.name, up.name());
            }
        }
        let versions = |b| {
            let mut v: Vec<_> = runner(b)
                .get_migrations()
                .iter()
                .map(|m| m.version())
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(versions(Backend::Sqlite), versions(Backend::Postgres));
    }

    #[test]
    fn down_scripts_are_not_embedded_as_migrations() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            for m in runner(backend).get_migrations() {
                // Display is `{prefix}{version}__{name}`: `U` would be "unversioned".
                assert!(m.to_string().starts_with('V'), "{m}");
            }
        }
    }

    #[test]
    fn status_table_and_checks() {
        let known = runner(Backend::Sqlite).get_migrations().clone();
        let row = |m: &Migration, checksum: String| HistoryRow {
            version: m.version(),
            name: Some(m.name().to_owned()),
            applied_on: Some("2026-01-02T03:04:05Z".to_owned()),
            checksum: Some(checksum),
        };
        // Every known migration applied, V1's checksum replaced by `v1_checksum`.
        let applied = |v1_checksum: Option<&str>| -> Vec<HistoryRow> {
            known
                .iter()
                .enumerate()
                .map(|(i, m)| match v1_checksum {
                    Some(c) if i == 0 => row(m, c.to_owned()),
                    _ => row(m, m.checksum().to_string()),
                })
                .collect()
        };

        let pending = status_of(Backend::Sqlite, &known, &[]);
        let all: Vec<u32> = (1..=known.len() as u32).collect();
        assert_eq!(pending.pending(), all);
        assert!(!pending.is_current());
        assert!(check(&pending).is_ok());
        assert!(pending.to_string().contains("pending"), "{pending}");

        let current = status_of(Backend::Sqlite, &known, &applied(None));
        assert!(current.is_current(), "{current}");
        assert!(current.to_string().contains("up to date"), "{current}");

        let modified = status_of(Backend::Sqlite, &known, &applied(Some("12345")));
        let err = check(&modified).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
        assert!(modified.to_string().contains("MODIFIED"), "{modified}");

        let mut with_newer = applied(None);
        with_newer.push(HistoryRow {
            version: 999,
            name: Some("from_the_future".to_owned()),
            applied_on: Some("2030-01-01T00:00:00Z".to_owned()),
            checksum: Some("1".to_owned()),
        });
        let newer = status_of(Backend::Sqlite, &known, &with_newer);
        let err = check(&newer).unwrap_err().to_string();
        assert!(err.contains("V999"), "{err}");
        assert!(!err.contains('\n'));
        assert!(newer.to_string().contains("UNKNOWN"), "{newer}");
    }

    /// Refinery itself (not only our pre-check) refuses unknown and modified history
    /// through this adapter: the guarantee must hold even if the pre-check changes.
    #[tokio::test]
    async fn refinery_aborts_on_unknown_and_divergent_history() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        let mut m = Migrator::open(&url, Open::Migrate, Duration::from_secs(5))
            .await
            .unwrap();
        let report = runner(Backend::Sqlite).run_async(&mut m).await.unwrap();
        assert_eq!(
            report.applied_migrations().len(),
            runner(Backend::Sqlite).get_migrations().len()
        );

        let Conn::Sqlite(c) = &mut m.conn else {
            unreachable!()
        };
        sqlx::query(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
             VALUES (999, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
        )
        .execute(&mut *c)
        .await
        .unwrap();
        let err = runner(Backend::Sqlite).run_async(&mut m).await.unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");

        let Conn::Sqlite(c) = &mut m.conn else {
            unreachable!()
        };
        sqlx::query("DELETE FROM refinery_schema_history WHERE version = 999")
            .execute(&mut *c)
            .await
            .unwrap();
        sqlx::query("UPDATE refinery_schema_history SET checksum = '42' WHERE version = 1")
            .execute(&mut *c)
            .await
            .unwrap();
        let err = runner(Backend::Sqlite).run_async(&mut m).await.unwrap_err();
        assert!(err.to_string().contains("different"), "{err}");
        m.close().await;
    }
}
