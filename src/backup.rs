//! `ferry backup`, `ferry restore` and `ferry verify`: backups an operator can
//! restore, and a check that finds damage.
//!
//! - **SQLite**: a backup is a consistent snapshot of the live database
//!   ([`store::backup::sqlite_snapshot`]), written under a temporary name, synced,
//!   then renamed, and verified. A restore verifies the backup, refuses while a
//!   server holds the database (the lock [`DatabaseLock`] that `ferry serve` takes),
//!   and swaps the file in atomically, keeping the replaced one (and its `-wal`) as
//!   `<file>.pre-restore`.
//! - **PostgreSQL**: `pg_dump --format=custom` and `pg_restore`, run with the
//!   configured URL; the password travels in `PGPASSWORD`, never on a command line,
//!   and no output names it.
//!
//! Either way a restore refuses a backup whose schema is newer than this binary.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::store::verify::{Report, Summary};
use crate::store::{self, Backend};

/// Why a backup, restore or verification could not be done.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Refused, with the reason (nothing was changed).
    #[error("{0}")]
    Refused(String),
    /// A tool or the database failed.
    #[error("{0}")]
    Failed(String),
}

impl From<store::StoreError> for BackupError {
    fn from(e: store::StoreError) -> Self {
        Self::Failed(e.to_string())
    }
}

fn io_failed(what: &str, path: &Path, e: std::io::Error) -> BackupError {
    BackupError::Failed(format!("{what} {}: {e}", path.display()))
}

/// The first bytes of a SQLite database file.
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";
/// The first bytes of a `pg_dump --format=custom` archive.
const PG_DUMP_MAGIC: &[u8] = b"PGDMP";

/// What kind of backup a file is, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupKind {
    /// A SQLite database file.
    Sqlite,
    /// A PostgreSQL custom-format archive.
    PgDump,
}

/// Reads the kind of the backup at `path`.
pub fn backup_kind(path: &Path) -> Result<BackupKind, BackupError> {
    let mut head = [0u8; 16];
    let n = std::io::Read::read(
        &mut File::open(path).map_err(|e| io_failed("cannot open", path, e))?,
        &mut head,
    )
    .map_err(|e| io_failed("cannot read", path, e))?;
    if head[..n].starts_with(SQLITE_MAGIC) {
        Ok(BackupKind::Sqlite)
    } else if head[..n].starts_with(PG_DUMP_MAGIC) {
        Ok(BackupKind::PgDump)
    } else {
        Err(BackupError::Refused(format!(
            "{} is neither a SQLite database nor a pg_dump custom-format archive",
            path.display()
        )))
    }
}

/// The exclusive lock `ferry serve` holds on a SQLite database while it runs
/// (`<database file>.lock`, beside it), so `ferry restore` cannot swap the file
/// under a running server. Released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
    path: PathBuf,
}

impl DatabaseLock {
    /// The lock file of the SQLite database at `db`.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock of the SQLite database at `db`, or says who holds it.
    pub fn acquire(db: &Path) -> Result<Self, BackupError> {
        let path = Self::path_for(db);
        #[cfg(unix)]
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            let mut dirs = std::fs::DirBuilder::new();
            dirs.recursive(true);
            #[cfg(unix)]
            dirs.mode(0o700);
            dirs.create(dir)
                .map_err(|e| io_failed("cannot create", dir, e))?;
        }
        let mut options = File::options();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        options.mode(0o600);
        let file = options
            .open(&path)
            .map_err(|e| io_failed("cannot open", &path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(std::fs::TryLockError::WouldBlock) => Err(BackupError::Refused(format!(
                "{} is in use: a server runs on this database (it holds {}); stop it first",
                db.display(),
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(io_failed("cannot lock", &path, e)),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a backup wrote.
#[derive(Clone, Debug)]
pub struct Written {
    /// The backup file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// What the database held (the backup's own contents for SQLite; the source at
    /// the start of the dump for PostgreSQL).
    pub summary: Summary,
    /// How long it took.
    pub took: Duration,
}

/// Progress for a terminal: a line rewritten in place.
pub type Progress<'a> = &'a mut (dyn FnMut(&str) + Send);

/// Backs up the database at `url` to `to` (which must not exist), while a server may
/// be running on it. See the module docs.
pub async fn backup(url: &str, to: &Path, progress: Progress<'_>) -> Result<Written, BackupError> {
    let started = Instant::now();
    if to.exists() {
        return Err(BackupError::Refused(format!(
            "{} exists; choose a new name (backups are never overwritten)",
            to.display()
        )));
    }
    let tmp = temporary_beside(to)?;
    let result = match Backend::from_url(url)? {
        Backend::Sqlite => sqlite_backup(url, to, &tmp, progress).await,
        Backend::Postgres => pg_backup(url, to, &tmp, progress).await,
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let summary = result?;
    let bytes = std::fs::metadata(to)
        .map_err(|e| io_failed("cannot read", to, e))?
        .len();
    Ok(Written {
        path: to.to_path_buf(),
        bytes,
        summary,
        took: started.elapsed(),
    })
}

async fn sqlite_backup(
    url: &str,
    to: &Path,
    tmp: &Path,
    progress: Progress<'_>,
) -> Result<Summary, BackupError> {
    let source = store::backup::sqlite_path(url)?;
    let total = file_len(&source) + file_len(&sidecar(&source, "-wal"));
    // Readable by this user only, like the database (VACUUM INTO fills an empty file).
    create_private(tmp)?;
    // Written back as it grows, so no single sync at the end queues the server's
    // own syncs behind the whole snapshot.
    let trickle = Trickle::start(tmp)?;
    let snapshot = store::backup::sqlite_snapshot(url, tmp);
    tokio::pin!(snapshot);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            r = &mut snapshot => { r?; break; }
            _ = tick.tick() => progress(&format!(
                "snapshot: {} of about {} written",
                mib(file_len(tmp)),
                mib(total)
            )),
        }
    }
    trickle.finish();
    sync_file(tmp)?;
    // The snapshot must be sound before it takes the backup's name.
    progress("verifying the snapshot");
    let report = store::verify::verify(&sqlite_url(tmp), &mut |c| {
        progress(&format!("verifying the snapshot: {c}"));
    })
    .await?;
    if !report.is_sound_but_older() {
        return Err(BackupError::Failed(format!(
            "the snapshot failed verification, so no backup was written: {}",
            findings_line(&report)
        )));
    }
    rename_synced(tmp, to)?;
    Ok(report.summary)
}

async fn pg_backup(
    url: &str,
    to: &Path,
    tmp: &Path,
    progress: Progress<'_>,
) -> Result<Summary, BackupError> {
    // The totals of the source as the dump begins (the dump is one snapshot of its
    // own, taken just after).
    let summary = store::verify::summary_of(url).await?;
    let conn = PgConn::parse(url)?;
    let mut cmd = tokio::process::Command::new("pg_dump");
    cmd.arg("--format=custom")
        .arg("--no-owner")
        .arg("--file")
        .arg(tmp)
        .arg("--dbname")
        .arg(&conn.url_without_password);
    conn.apply_env(&mut cmd);
    progress("pg_dump running");
    run_tool(cmd, "pg_dump").await?;
    sync_file(tmp)?;
    rename_synced(tmp, to)?;
    Ok(summary)
}

/// What `ferry restore` did.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The database restored into (redacted).
    pub target: String,
    /// The replaced SQLite file, kept.
    pub kept: Option<PathBuf>,
    /// What the restored database holds.
    pub summary: Summary,
}

/// Restores the backup `from` into the database at `url` (see the module docs);
/// `force` lets a PostgreSQL restore replace a database that is not empty.
pub async fn restore(
    url: &str,
    from: &Path,
    force: bool,
    progress: Progress<'_>,
) -> Result<Restored, BackupError> {
    let kind = backup_kind(from)?;
    match (Backend::from_url(url)?, kind) {
        (Backend::Sqlite, BackupKind::Sqlite) => sqlite_restore(url, from, progress).await,
        (Backend::Postgres, BackupKind::PgDump) => pg_restore(url, from, force, progress).await,
        (Backend::Sqlite, BackupKind::PgDump) => Err(BackupError::Refused(
            "a PostgreSQL backup cannot be restored into SQLite".into(),
        )),
        (Backend::Postgres, BackupKind::Sqlite) => Err(BackupError::Refused(
            "a SQLite backup cannot be restored into PostgreSQL".into(),
        )),
    }
}

/// Refuses a backup whose newest migration is newer than this binary's.
fn refuse_newer(backend: Backend, newest: Option<u32>) -> Result<(), BackupError> {
    let ours = store::latest_version(backend);
    match newest {
        Some(v) if v > ours => Err(BackupError::Refused(format!(
            "the backup's schema (version {v}) is newer than this binary's (version {ours}): \
             restore it with the Ferry release that wrote it"
        ))),
        _ => Ok(()),
    }
}

async fn sqlite_restore(
    url: &str,
    from: &Path,
    progress: Progress<'_>,
) -> Result<Restored, BackupError> {
    let from_url = sqlite_url(from);
    refuse_newer(
        Backend::Sqlite,
        store::verify::newest_migration(&from_url).await?,
    )?;
    progress("verifying the backup");
    let report = store::verify::verify(&from_url, &mut |c| {
        progress(&format!("verifying the backup: {c}"));
    })
    .await?;
    // An older schema is restored as it is: the next start migrates it.
    if !report.is_sound_but_older() {
        return Err(BackupError::Refused(format!(
            "the backup failed verification: {}",
            findings_line(&report)
        )));
    }
    let target = store::backup::sqlite_path(url)?;
    let _lock = DatabaseLock::acquire(&target)?;
    let kept = sidecar(&target, ".pre-restore");
    if target.exists() && kept.exists() {
        return Err(BackupError::Refused(format!(
            "{} exists from an earlier restore: move it away first (the database this \
             restore replaces is kept under that name)",
            kept.display()
        )));
    }
    let tmp = temporary_beside(&target)?;
    progress("copying");
    create_private(&tmp)?;
    let copied = File::open(from).and_then(|mut src| {
        let mut dst = File::options().write(true).open(&tmp)?;
        std::io::copy(&mut src, &mut dst)
    });
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_failed("cannot copy the backup to", &tmp, e));
    }
    sync_file(&tmp)?;
    let kept = if target.exists() {
        // The replaced file with its log, under one name SQLite pairs them by.
        std::fs::rename(&target, &kept).map_err(|e| io_failed("cannot move", &target, e))?;
        let wal = sidecar(&target, "-wal");
        if wal.exists() {
            std::fs::rename(&wal, sidecar(&kept, "-wal"))
                .map_err(|e| io_failed("cannot move", &wal, e))?;
        }
        let _ = std::fs::remove_file(sidecar(&target, "-shm"));
        Some(kept)
    } else {
        None
    };
    rename_synced(&tmp, &target)?;
    Ok(Restored {
        target: target.display().to_string(),
        kept,
        summary: report.summary,
    })
}

async fn pg_restore(
    url: &str,
    from: &Path,
    force: bool,
    progress: Progress<'_>,
) -> Result<Restored, BackupError> {
    let conn = PgConn::parse(url)?;
    progress("reading the archive");
    refuse_newer(Backend::Postgres, dump_newest_migration(from).await?)?;
    if !force && !store::verify::is_empty(url).await? {
        return Err(BackupError::Refused(format!(
            "{} is not empty: restore into an empty database, or pass --force to replace \
             what it holds",
            crate::config::redact_db_url(url)
        )));
    }
    let mut cmd = tokio::process::Command::new("pg_restore");
    cmd.arg("--no-owner")
        .arg("--no-privileges")
        .arg("--exit-on-error")
        .arg("--single-transaction");
    if force {
        cmd.arg("--clean").arg("--if-exists");
    }
    cmd.arg("--dbname")
        .arg(&conn.url_without_password)
        .arg(from);
    conn.apply_env(&mut cmd);
    progress("pg_restore running");
    run_tool(cmd, "pg_restore").await?;
    progress("verifying the restored database");
    let report = store::verify::verify(url, &mut |c| {
        progress(&format!("verifying the restored database: {c}"));
    })
    .await?;
    if !report.is_sound_but_older() {
        return Err(BackupError::Failed(format!(
            "the restored database failed verification: {}",
            findings_line(&report)
        )));
    }
    Ok(Restored {
        target: crate::config::redact_db_url(url),
        kept: None,
        summary: report.summary,
    })
}

/// The newest migration version recorded in a `pg_dump` archive, read with
/// `pg_restore --data-only --table=refinery_schema_history --file=-`.
async fn dump_newest_migration(from: &Path) -> Result<Option<u32>, BackupError> {
    let mut cmd = tokio::process::Command::new("pg_restore");
    cmd.arg("--data-only")
        .arg("--table=refinery_schema_history")
        .arg("--file=-")
        .arg(from);
    let out = run_tool(cmd, "pg_restore").await?;
    let text = String::from_utf8_lossy(&out);
    let mut rows = false;
    let mut newest = None;
    for line in text.lines() {
        if line.starts_with("COPY ") {
            rows = true;
            continue;
        }
        if line == "\\." {
            rows = false;
            continue;
        }
        if rows && let Some(v) = line.split('\t').next().and_then(|v| v.parse::<u32>().ok()) {
            newest = newest.max(Some(v));
        }
    }
    Ok(newest)
}

/// Verifies the database at `url` (see [`store::verify`]).
pub async fn verify(url: &str, progress: Progress<'_>) -> Result<Report, BackupError> {
    Ok(store::verify::verify(url, progress).await?)
}

/// The findings on one line, for an error message.
pub fn findings_line(report: &Report) -> String {
    report
        .findings
        .iter()
        .map(|f| format!("{}: {}", f.check, f.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A PostgreSQL URL split for the client tools: the URL without its password, and
/// the password for `PGPASSWORD`.
struct PgConn {
    url_without_password: String,
    password: Option<String>,
}

impl PgConn {
    fn parse(url: &str) -> Result<Self, BackupError> {
        let mut parsed = url::Url::parse(url)
            .map_err(|e| BackupError::Refused(format!("invalid PostgreSQL URL: {e}")))?;
        let password = parsed.password().map(percent_decode);
        let _ = parsed.set_password(None);
        // A password in the query string (`?password=`) moves to the environment too.
        let mut query_password = None;
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .filter_map(|(k, v)| {
                if k.eq_ignore_ascii_case("password") {
                    query_password = Some(v.into_owned());
                    None
                } else {
                    Some((k.into_owned(), v.into_owned()))
                }
            })
            .collect();
        if pairs.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
        Ok(Self {
            url_without_password: parsed.to_string(),
            password: password.or(query_password),
        })
    }

    fn apply_env(&self, cmd: &mut tokio::process::Command) {
        cmd.env_remove("PGPASSWORD");
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        cmd.env("PGCONNECT_TIMEOUT", "10");
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs a PostgreSQL client tool; its stdout on success. A missing tool is named.
async fn run_tool(mut cmd: tokio::process::Command, tool: &str) -> Result<Vec<u8>, BackupError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = match cmd.output().await {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::Failed(format!(
                "{tool} not found: install the PostgreSQL client tools (for example the \
                 postgresql-client package) in a version at least that of the server"
            )));
        }
        Err(e) => return Err(BackupError::Failed(format!("cannot run {tool}: {e}"))),
    };
    if out.status.success() {
        Ok(out.stdout)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(BackupError::Failed(format!(
            "{tool} failed ({}): {}",
            out.status,
            stderr.trim()
        )))
    }
}

/// `sqlite://<path>` for a file.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A new name in `target`'s directory for a file that becomes `target` by rename.
fn temporary_beside(target: &Path) -> Result<PathBuf, BackupError> {
    let name = target
        .file_name()
        .ok_or_else(|| BackupError::Refused(format!("{} is not a file name", target.display())))?;
    let dir = target.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir
        && !dir.is_dir()
    {
        return Err(BackupError::Refused(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".partial-{:08x}", rand::random::<u32>()));
    Ok(match dir {
        Some(dir) => dir.join(tmp_name),
        None => PathBuf::from(tmp_name),
    })
}

/// Creates an empty file readable and writable by this user only.
fn create_private(path: &Path) -> Result<(), BackupError> {
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = File::options();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options
        .open(path)
        .map(drop)
        .map_err(|e| io_failed("cannot create", path, e))
}

/// Syncs a file that another writer fills, every [`TRICKLE_BYTES`] it grows, on a
/// thread of its own until dropped. A snapshot written to the page cache in one go
/// and synced once at the end is a burst of hundreds of megabytes on the disk's
/// queue, and the server's commits (each waiting for a sync of its log) queue
/// behind it; written back in small steps, each sync is a few milliseconds of
/// the disk's time.
struct Trickle {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

/// How much a file being snapshotted may grow before it is synced.
const TRICKLE_BYTES: u64 = 8 << 20;
/// How often the trickle looks at the file's size.
const TRICKLE_POLL: Duration = Duration::from_millis(10);

impl Trickle {
    fn start(path: &Path) -> Result<Self, BackupError> {
        use std::sync::atomic::Ordering;
        let file = File::open(path).map_err(|e| io_failed("cannot open", path, e))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("backup-trickle".into())
            .spawn(move || {
                let (mut synced, mut syncs) = (0u64, 0u64);
                while !stopped.load(Ordering::Acquire) {
                    std::thread::sleep(TRICKLE_POLL);
                    let len = file.metadata().map_or(0, |m| m.len());
                    // Errors here are not the backup's: the final sync reports them.
                    if len >= synced + TRICKLE_BYTES && file.sync_data().is_ok() {
                        synced = len;
                        syncs += 1;
                    }
                }
                syncs
            })
            .map_err(|e| BackupError::Failed(format!("cannot start a thread: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread; returns how many syncs it made.
    fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn sync_file(path: &Path) -> Result<(), BackupError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_failed("cannot sync", path, e))
}

/// Renames `from` to `to` and syncs the directory, so the new name survives a crash.
fn rename_synced(from: &Path, to: &Path) -> Result<(), BackupError> {
    std::fs::rename(from, to).map_err(|e| io_failed("cannot rename to", to, e))?;
    let dir = to
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_failed("cannot sync", dir, e))
}

/// Writes `text` to stderr as a line rewritten in place (a terminal only).
pub fn status_line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{text}");
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url_for_the_environment() {
        let c = PgConn::parse("postgres://ferry:s%40cret@db:5432/ferry?sslmode=require").unwrap();
        assert_eq!(
            c.url_without_password,
            "postgres://ferry@db:5432/ferry?sslmode=require"
        );
        assert_eq!(c.password.as_deref(), Some("s@cret"));
        let c = PgConn::parse("postgres://db/ferry?password=hunter2&application_name=x").unwrap();
        assert!(
            !c.url_without_password.contains("hunter2"),
            "{}",
            c.url_without_password
        );
        assert_eq!(c.password.as_deref(), Some("hunter2"));
        let c = PgConn::parse("postgres://postgres@127.0.0.1/test").unwrap();
        assert_eq!(c.password, None);
        assert_eq!(c.url_without_password, "postgres://postgres@127.0.0.1/test");
    }

    #[test]
    fn a_growing_snapshot_is_synced_as_it_grows() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot");
        let mut file = File::create(&path).unwrap();
        // Less than one step: never synced by the trickle.
        let trickle = Trickle::start(&path).unwrap();
        file.write_all(&[7u8; 1 << 20]).unwrap();
        std::thread::sleep(TRICKLE_POLL * 5);
        assert_eq!(trickle.finish(), 0);
        // Three steps, each left to the trickle before the next.
        let trickle = Trickle::start(&path).unwrap();
        for _ in 0..3 {
            file.write_all(&vec![7u8; TRICKLE_BYTES as usize]).unwrap();
            std::thread::sleep(TRICKLE_POLL * 5);
        }
        let syncs = trickle.finish();
        assert!((1..=3).contains(&syncs), "{syncs} syncs");
    }

    #[test]
    fn a_temporary_name_is_hidden_beside_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let t = temporary_beside(&dir.path().join("b.db")).unwrap();
        assert_eq!(t.parent(), Some(dir.path()));
        let name = t.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".b.db.partial-"), "{name}");
        assert!(temporary_beside(&dir.path().join("missing/b.db")).is_err());
    }

    #[test]
    fn the_lock_refuses_a_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ferry.db");
        let held = DatabaseLock::acquire(&db).unwrap();
        assert_eq!(held.path(), dir.path().join("ferry.db.lock"));
        let refused = DatabaseLock::acquire(&db).unwrap_err();
        assert!(matches!(refused, BackupError::Refused(_)), "{refused}");
        drop(held);
        DatabaseLock::acquire(&db).unwrap();
    }
}
