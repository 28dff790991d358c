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
        .foreign_keys(true)
        // Deleted rows leave the file, not only the table: SQLite overwrites the
        // content of deleted cells and freed pages with zeros (by default it leaves
        // it where it was until the space is reused), so the ciphertext of an
        // expired or pruned event is gone once the write-ahead log is checkpointed.
        .pragma("secure_delete", "ON");
    if create {
        create_private(opts.get_filename())?;
    }
    Ok(opts)
}

/// Creates a missing database file, and its missing parent directories, readable
/// by this user only: directories 0700, the file 0600. SQLite creates the `-wal` and
/// `-shm` files with the database file's permissions, so they are 0600 too. An
/// existing file or directory is left as it is.
fn create_private(file: &std::path::Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let failed = |what: &std::path::Path, e: std::io::Error| {
        StoreError::Unavailable(format!("cannot create {}: {e}", what.display()))
    };
    if let Some(parent) = file.parent()
        && !parent.as_os_str().is_empty()
    {
        let mut dirs = std::fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        dirs.mode(0o700);
        dirs.create(parent).map_err(|e| failed(parent, e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    match options.open(file) {
        // An empty file is an empty database.
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(failed(file, e)),
    }
}

/// Connection options for a `postgres://` URL.
pub(super) fn postgres_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Other(format!("invalid PostgreSQL URL: {e}")))
}
