//! The database side of `ferry backup` and `ferry restore` on SQLite: a consistent
//! snapshot of a live database, and what a database file says about itself.
//! (PostgreSQL backups are `pg_dump`'s, run by `crate::backup`.)

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

use super::StoreError;

/// Writes a consistent snapshot of the SQLite database at `url` to `dest` (which
/// must not exist) with `VACUUM INTO`: one read transaction, so the server's writer
/// goes on meanwhile (in WAL mode readers never block it), and the snapshot holds
/// exactly what was committed when it began. The copy is a single file in rollback
/// journal mode (no `-wal` beside it), compacted, with `secure_delete`'s zeroed pages
/// left out.
pub async fn sqlite_snapshot(url: &str, dest: &Path) -> Result<(), StoreError> {
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Other(format!("invalid SQLite URL: {e}")))?
        .read_only(true)
        .busy_timeout(Duration::from_secs(5));
    if !opts.get_filename().is_file() {
        return Err(StoreError::Other(format!(
            "{} does not exist",
            opts.get_filename().display()
        )));
    }
    let dest_text = dest
        .to_str()
        .ok_or_else(|| StoreError::Other(format!("{} is not UTF-8", dest.display())))?;
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
    let done = sqlx::query("VACUUM INTO ?")
        .bind(dest_text)
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    done?;
    // The copy keeps the source's journal mode in its header; a backup is one file.
    let copy = SqliteConnectOptions::new()
        .filename(dest)
        .journal_mode(SqliteJournalMode::Delete);
    let conn = sqlx::SqliteConnection::connect_with(&copy).await?;
    conn.close().await?;
    Ok(())
}

/// The file a `sqlite:` URL names.
pub fn sqlite_path(url: &str) -> Result<std::path::PathBuf, StoreError> {
    Ok(SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Other(format!("invalid SQLite URL: {e}")))?
        .get_filename()
        .to_path_buf())
}
