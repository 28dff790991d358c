//! `ferry verify`: whether a database (live, or a backup file) is sound — the
//! database engine's own checks, Ferry's invariants, and the migration history —
//! read-only, naming each problem found.
//!
//! Each invariant is one query counting the rows that break it, written once for
//! both backends. A row that breaks one was written behind the store's back (or by
//! damage): the store never writes one.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::{Connection as _, Row as _};

use super::{Backend, StoreError, migrate_status};

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Which check found it (`integrity`, `cursor_above_head`, `migrations`, …).
    pub check: &'static str,
    /// What is wrong, for people.
    pub detail: String,
}

/// What a database holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Users.
    pub users: u64,
    /// Devices (active and revoked).
    pub devices: u64,
    /// Stored events.
    pub events: u64,
    /// The lowest and highest head of a user (`None` without users).
    pub heads: Option<(u64, u64)>,
    /// Size on disk (SQLite: the file and its `-wal`; PostgreSQL:
    /// `pg_database_size`).
    pub bytes: u64,
}

/// The outcome of [`verify`].
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// What the database holds (as far as it could be read).
    pub summary: Summary,
    /// Problems; empty when the database is sound.
    pub findings: Vec<Finding>,
    /// Checks run.
    pub checks: usize,
    /// Checks that failed on a missing table.
    missing_tables: Vec<&'static str>,
}

/// The check that reports migrations this binary carries and the database has not
/// applied: the schema is older, which `ferry serve` or `ferry migrate up` mends.
pub const PENDING: &str = "migrations_pending";

impl Report {
    /// No problem found.
    pub fn is_sound(&self) -> bool {
        self.findings.is_empty()
    }

    /// No problem found but an older schema (pending migrations): sound enough to
    /// restore, since the server migrates it on its next start.
    pub fn is_sound_but_older(&self) -> bool {
        self.findings.iter().all(|f| f.check == PENDING)
    }
}

/// Ferry's invariants: `(name, what a breaking row means, query counting them)`.
const INVARIANTS: &[(&str, &str, &str)] = &[
    (
        "duplicate_seq",
        "(user, seq) pairs held by more than one event",
        "SELECT count(*) FROM (SELECT user_id, seq FROM events GROUP BY user_id, seq \
         HAVING count(*) > 1) d",
    ),
    (
        "duplicate_event_id",
        "(user, event id) pairs held by more than one event",
        "SELECT count(*) FROM (SELECT user_id, event_id FROM events \
         GROUP BY user_id, event_id HAVING count(*) > 1) d",
    ),
    (
        "event_without_user",
        "events of a user with no users row (no head)",
        "SELECT count(*) FROM events e WHERE NOT EXISTS \
         (SELECT 1 FROM users u WHERE u.user_id = e.user_id)",
    ),
    (
        "cursor_above_head",
        "devices whose processed position is past their user's head",
        concat!(
            "SELECT count(*) FROM devices d JOIN users u ON u.user_id = d.user_id \
             WHERE d.cursor_seq > ",
            super::user_head!("u")
        ),
    ),
    (
        "event_at_or_below_pruned",
        "events at or below their user's pruned_through (retention removed that prefix)",
        "SELECT count(*) FROM events e JOIN users u ON u.user_id = e.user_id \
         WHERE e.seq <= u.pruned_through",
    ),
    (
        "seq_not_positive",
        "events with a seq below 1",
        "SELECT count(*) FROM events WHERE seq < 1",
    ),
    (
        "pruned_above_head",
        "users whose pruned_through is above their head",
        concat!(
            "SELECT count(*) FROM users u WHERE u.head < 0 OR u.pruned_through > ",
            super::user_head!("u")
        ),
    ),
    (
        "retired_key_above_head",
        "retired keys whose seq is above their user's head",
        concat!(
            "SELECT count(*) FROM retired_keys r JOIN users u ON u.user_id = r.user_id \
             WHERE r.seq > ",
            super::user_head!("u")
        ),
    ),
    (
        "id_sizes",
        "ids of the wrong length (user and device keys 32 bytes, event ids 16)",
        "SELECT (SELECT count(*) FROM users WHERE length(user_id) <> 32) \
         + (SELECT count(*) FROM devices WHERE length(user_id) <> 32 OR length(device_id) <> 32) \
         + (SELECT count(*) FROM events WHERE length(user_id) <> 32 OR length(device_id) <> 32 \
            OR length(event_id) <> 16)",
    ),
    (
        "key_sizes",
        "event keys empty or longer than 64 bytes",
        "SELECT count(*) FROM events WHERE event_key IS NOT NULL \
         AND (length(event_key) < 1 OR length(event_key) > 64)",
    ),
    (
        "device_without_user",
        "devices of a user with no users row",
        "SELECT count(*) FROM devices d WHERE NOT EXISTS \
         (SELECT 1 FROM users u WHERE u.user_id = d.user_id)",
    ),
];

/// The checks [`verify`] runs on a backend, for progress reports.
pub fn check_count(backend: Backend) -> usize {
    INVARIANTS.len()
        + 2
        + match backend {
            Backend::Sqlite => 2,
            Backend::Postgres => 0,
        }
}

/// How long opening the database may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Problems listed per engine check at most (an integrity check of a badly damaged
/// file can report thousands).
const MAX_ENGINE_FINDINGS: usize = 20;

/// Verifies the database at `url` without writing to it. `progress` is called with
/// each check's name before it runs. `Err` only when the database cannot be read at
/// all; everything else it finds is a [`Finding`].
pub async fn verify(
    url: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Report, StoreError> {
    let backend = Backend::from_url(url)?;
    let mut report = Report::default();
    match backend {
        Backend::Sqlite => {
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Other(format!("invalid SQLite URL: {e}")))?
                .read_only(true)
                .busy_timeout(Duration::from_secs(5));
            let path = opts.get_filename().to_path_buf();
            if !path.is_file() {
                return Err(StoreError::Other(format!(
                    "{} does not exist",
                    path.display()
                )));
            }
            let mut conn =
                tokio::time::timeout(CONNECT_TIMEOUT, sqlx::SqliteConnection::connect_with(&opts))
                    .await
                    .map_err(|_| {
                        StoreError::Unavailable("timed out opening the database".into())
                    })??;
            progress("integrity");
            report.checks += 1;
            engine_check(
                &mut conn,
                "integrity",
                "PRAGMA integrity_check",
                &mut report,
            )
            .await;
            progress("foreign_keys");
            report.checks += 1;
            engine_check(
                &mut conn,
                "foreign_keys",
                "PRAGMA foreign_key_check",
                &mut report,
            )
            .await;
            invariants_sqlite(&mut conn, progress, &mut report).await;
            report.summary = summary_sqlite(&mut conn, &mut report).await;
            let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
            report.summary.bytes = [path, wal]
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            let _ = conn.close().await;
        }
        Backend::Postgres => {
            let opts = super::options::postgres_options(url)?;
            let mut conn =
                tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(&opts))
                    .await
                    .map_err(|_| StoreError::Unavailable("timed out connecting".into()))??;
            // Read-only, and one snapshot for every check.
            sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut conn)
                .await?;
            invariants_pg(&mut conn, progress, &mut report).await;
            report.summary = summary_pg(&mut conn, &mut report).await;
            report.summary.bytes =
                sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
                    .fetch_one(&mut conn)
                    .await
                    .map_or(0, |b| u64::try_from(b).unwrap_or(0));
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
            let _ = conn.close().await;
        }
    }
    progress("migrations");
    report.checks += 1;
    match migrate_status(url).await {
        Ok(status) => {
            for m in &status.unknown {
                report.findings.push(Finding {
                    check: "migrations",
                    detail: format!(
                        "migration {} ({}) is not known to this binary: the schema is newer",
                        m.version, m.name
                    ),
                });
            }
            for m in &status.known {
                let (check, detail) = match (&m.applied_on, m.matches) {
                    (None, _) => (
                        PENDING,
                        format!(
                            "migration {} ({}) is not applied (the schema is older than \
                             this binary)",
                            m.version, m.name
                        ),
                    ),
                    (Some(_), false) => (
                        "migrations",
                        format!(
                            "migration {} ({}) was recorded with another name or checksum",
                            m.version, m.name
                        ),
                    ),
                    (Some(_), true) => continue,
                };
                report.findings.push(Finding { check, detail });
            }
        }
        Err(e) => report.findings.push(Finding {
            check: "migrations",
            detail: format!("the migration history cannot be read: {e}"),
        }),
    }
    // On an older schema, the checks of tables it does not have yet are moot.
    if report.findings.iter().any(|f| f.check == PENDING) {
        let moot = std::mem::take(&mut report.missing_tables);
        report.findings.retain(|f| !moot.contains(&f.check));
    }
    Ok(report)
}

/// What the database at `url` holds (for a backup's report), read in one snapshot.
pub async fn summary_of(url: &str) -> Result<Summary, StoreError> {
    let mut report = Report::default();
    let summary = match Backend::from_url(url)? {
        Backend::Sqlite => {
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Other(format!("invalid SQLite URL: {e}")))?
                .read_only(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
            let s = summary_sqlite(&mut conn, &mut report).await;
            let _ = conn.close().await;
            s
        }
        Backend::Postgres => {
            let opts = super::options::postgres_options(url)?;
            let mut conn = sqlx::PgConnection::connect_with(&opts).await?;
            let s = summary_pg(&mut conn, &mut report).await;
            let _ = conn.close().await;
            s
        }
    };
    match report.findings.first() {
        Some(f) => Err(StoreError::Other(f.detail.clone())),
        None => Ok(summary),
    }
}

/// The newest migration the database at `url` records (known to this binary or
/// not); `None` before any.
pub async fn newest_migration(url: &str) -> Result<Option<u32>, StoreError> {
    let status = migrate_status(url).await?;
    let known = status
        .known
        .iter()
        .filter(|m| m.applied_on.is_some())
        .map(|m| m.version);
    let unknown = status
        .unknown
        .iter()
        .map(|m| u32::try_from(m.version).unwrap_or(u32::MAX));
    Ok(known.chain(unknown).max())
}

/// Whether the PostgreSQL database at `url` holds no Ferry schema (neither the
/// migration history nor the event log).
pub async fn is_empty(url: &str) -> Result<bool, StoreError> {
    let opts = super::options::postgres_options(url)?;
    let mut conn = sqlx::PgConnection::connect_with(&opts).await?;
    let empty = sqlx::query_scalar::<_, bool>(
        "SELECT to_regclass('refinery_schema_history') IS NULL \
         AND to_regclass('events') IS NULL AND to_regclass('users') IS NULL",
    )
    .fetch_one(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok(empty)
}

/// A SQLite pragma that answers `ok` (integrity) or nothing (foreign keys) when all
/// is well, and one row per problem otherwise.
async fn engine_check(
    conn: &mut sqlx::SqliteConnection,
    check: &'static str,
    pragma: &'static str,
    report: &mut Report,
) {
    match sqlx::query(pragma).fetch_all(&mut *conn).await {
        Ok(rows) => {
            let problems: Vec<String> = rows
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| {
                            r.try_get::<String, _>(i)
                                .or_else(|_| r.try_get::<i64, _>(i).map(|n| n.to_string()))
                                .unwrap_or_default()
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .filter(|line| line != "ok")
                .collect();
            let total = problems.len();
            for p in problems.into_iter().take(MAX_ENGINE_FINDINGS) {
                report.findings.push(Finding { check, detail: p });
            }
            if total > MAX_ENGINE_FINDINGS {
                report.findings.push(Finding {
                    check,
                    detail: format!("… and {} more", total - MAX_ENGINE_FINDINGS),
                });
            }
        }
        Err(e) => report.findings.push(Finding {
            check,
            detail: format!("the check could not run: {e}"),
        }),
    }
}

/// [`INVARIANTS`] and the summary on a connection of one backend (the same
/// statements on both).
macro_rules! checks_on {
    ($invariants:ident, $summary:ident, $conn:ty, savepoints: $savepoints:literal) => {
        async fn $invariants(
            conn: &mut $conn,
            progress: &mut (dyn FnMut(&str) + Send),
            report: &mut Report,
        ) {
            for (check, meaning, sql) in INVARIANTS {
                progress(check);
                report.checks += 1;
                // PostgreSQL aborts a transaction at its first error: each check
                // gets a savepoint, so one that fails leaves the others running.
                if $savepoints {
                    let _ = sqlx::query("SAVEPOINT ferry_check")
                        .execute(&mut *conn)
                        .await;
                }
                let counted = sqlx::query_scalar::<_, i64>(*sql)
                    .fetch_one(&mut *conn)
                    .await;
                if $savepoints {
                    let end = if counted.is_ok() {
                        "RELEASE SAVEPOINT ferry_check"
                    } else {
                        "ROLLBACK TO SAVEPOINT ferry_check"
                    };
                    let _ = sqlx::query(end).execute(&mut *conn).await;
                }
                match counted {
                    Ok(0) => {}
                    Ok(n) => report.findings.push(Finding {
                        check,
                        detail: format!("{n} {meaning}"),
                    }),
                    Err(e) => {
                        let text = e.to_string();
                        // A table an older schema does not have yet: damage only if
                        // no migration is pending (decided after the history check).
                        if text.contains("no such table") || text.contains("does not exist") {
                            report.missing_tables.push(check);
                        }
                        report.findings.push(Finding {
                            check,
                            detail: format!("the check could not run: {e}"),
                        });
                    }
                }
            }
        }

        /// What the database holds; a count that cannot be read is a finding.
        async fn $summary(conn: &mut $conn, report: &mut Report) -> Summary {
            report.checks += 1;
            let row = sqlx::query_as::<_, (i64, i64, i64, Option<i64>, Option<i64>)>(concat!(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM devices), \
                 (SELECT count(*) FROM events), min(h.head), max(h.head) \
                 FROM (SELECT ",
                $crate::store::user_head!("u"),
                " AS head FROM users AS u) AS h"
            ))
            .fetch_one(&mut *conn)
            .await;
            match row {
                Ok((users, devices, events, low, high)) => Summary {
                    users: users.max(0) as u64,
                    devices: devices.max(0) as u64,
                    events: events.max(0) as u64,
                    heads: low
                        .zip(high)
                        .map(|(l, h)| (l.max(0) as u64, h.max(0) as u64)),
                    bytes: 0,
                },
                Err(e) => {
                    report.findings.push(Finding {
                        check: "summary",
                        detail: format!("the totals could not be read: {e}"),
                    });
                    Summary::default()
                }
            }
        }
    };
}

checks_on!(invariants_sqlite, summary_sqlite, sqlx::SqliteConnection, savepoints: false);
checks_on!(invariants_pg, summary_pg, sqlx::PgConnection, savepoints: true);
