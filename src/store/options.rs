//! Connection options for a database URL, shared by the backends and the migration
//! runner (which opens its own connections).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::StoreError;

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection options for a `sqlite:` URL: WAL, `synchronous = FULL`, busy timeout,
/// foreign keys. With `create`, a missing file and its parent directory are created.
pub(super) fn sqlite_options(url: &str, create: bool) -> Result<SqliteConnectOptions, StoreError> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Err(StoreError::Other(
            "in-memory SQLite is not supported (acked events must be durable, and each \
             pooled connection would see its own database); use a file"
                .into(),
        ));
    }
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Other(format!("invalid SQLite URL: {e}")))?
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        // Durability: in WAL mode FULL syncs the log on every commit, so an event that
        // was acked after its commit survives a power loss. NORMAL would only protect
        // against a crash of the process and could lose the last acked events.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    if create
        && let Some(parent) = opts.get_filename().parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    Ok(opts)
}

/// Connection options for a `postgres://` URL.
pub(super) fn postgres_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Other(format!("invalid PostgreSQL URL: {e}")))
}
