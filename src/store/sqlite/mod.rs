//! SQLite backend: one database file in WAL mode.
//!
//! Writes go through a pool of exactly one connection, so writers of this process
//! queue for it in FIFO order instead of spinning in SQLite's busy handler; every
//! read-then-write transaction starts with `BEGIN IMMEDIATE`, which takes the write
//! lock up front (sqlx's `begin()` is DEFERRED, and upgrading a read transaction to a
//! write fails with "database is locked" when another connection wrote meanwhile).
//! `busy_timeout` covers other processes on the same file. Reads use their own pool:
//! WAL lets them run while a write is in progress.
//!
//! Write transactions are [`WriteTx`], not sqlx's `Transaction`: see its docs for the
//! failure mode that rules the latter out.

use std::ops::{Deref, DerefMut};

use async_trait::async_trait;
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqlitePool, SqlitePoolOptions};
use sqlx::{Arguments, Executor, QueryBuilder};

use super::append::{self, Snapshot};
use super::options::sqlite_options as connect_options;
use super::{
    AppendOutcome, Backend, DeviceCert, DeviceId, DeviceRecord, DeviceRow, NewEvent, RevokeOutcome,
    Store, StoreError, StoreOptions, UnixMs, UserId, device_record, event_id, from_db, key32,
    migrate, to_db,
};

/// SQLite's default `SQLITE_MAX_VARIABLE_NUMBER` (since 3.32): multi-row statements
/// are chunked to stay under it.
const MAX_PARAMS: usize = 32_766;

/// The row count a multi-row statement for `n` rows is written for: `n` rounded up to
/// the next number with at most two significant bits (1, 2, 3, 4, 6, 8, 12, 16, 24,
/// ...), the rows past `n` bound to NULL and filtered out by the statement. So each of
/// the append's statements comes in 20 texts for batches up to 1,024 events (the relay
/// writer's largest), which stay in the connection's statement cache, instead of one
/// text per batch size: batch sizes vary with the load, and re-preparing the
/// statement of every size evicted from the cache took 3.6 % of the server's CPU at
/// 10,000 events/s (`docs/benchmarks.md`).
fn padded_rows(n: usize) -> usize {
    if n <= 4 {
        return n;
    }
    let high = 1usize << (usize::BITS - 1 - n.leading_zeros());
    if n == high {
        n
    } else if n <= high + high / 2 {
        high + high / 2
    } else {
        high * 2
    }
}

/// The most rows a padded multi-row statement with `params` parameters per row may
/// take: the largest [`padded_rows`] size that stays under [`MAX_PARAMS`].
const fn max_padded_rows(params: usize) -> usize {
    let limit = MAX_PARAMS / params;
    let high = 1usize << (usize::BITS - 1 - limit.leading_zeros());
    if high + high / 2 <= limit {
        high + high / 2
    } else {
        high
    }
}

/// A multi-row statement of the append, padded ([`padded_rows`]): `head`, a `VALUES`
/// list of rows of `params` parameters each, then `tail`, which filters the padding
/// rows out. Its texts are built once per size and kept for the life of the process
/// (one per [`padded_rows`] size a batch reaches: 20 up to 1,024 rows), so a batch
/// only binds its values.
struct PaddedStatement {
    head: &'static str,
    params: usize,
    tail: &'static str,
    texts: std::sync::Mutex<Vec<(usize, &'static str)>>,
}

impl PaddedStatement {
    const fn new(head: &'static str, params: usize, tail: &'static str) -> Self {
        Self {
            head,
            params,
            tail,
            texts: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The most rows one statement takes.
    const fn max_rows(&self) -> usize {
        max_padded_rows(self.params)
    }

    /// The text for `rows` rows (a [`padded_rows`] size).
    fn text(&self, rows: usize) -> &'static str {
        let mut texts = self
            .texts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, text)) = texts.iter().find(|(n, _)| *n == rows) {
            return text;
        }
        let row = format!("({})", vec!["?"; self.params].join(", "));
        let text = format!(
            "{}VALUES {}{}",
            self.head,
            vec![row; rows].join(", "),
            self.tail
        );
        let text: &'static str = Box::leak(text.into_boxed_str());
        texts.push((rows, text));
        text
    }

    /// The text and the arguments for `rows`: `bind` adds each row's `params`
    /// values, and each padding row is NULLs.
    fn bind<T>(
        &self,
        rows: &[T],
        mut bind: impl FnMut(&mut SqliteArguments, &T) -> Result<(), BoxDynError>,
    ) -> Result<(&'static str, SqliteArguments), StoreError> {
        let padded = padded_rows(rows.len());
        let mut args = SqliteArguments::default();
        Arguments::reserve(&mut args, padded * self.params, 0);
        for row in rows {
            bind(&mut args, row).map_err(sqlx::Error::Encode)?;
        }
        for _ in 0..(padded - rows.len()) * self.params {
            Arguments::add(&mut args, None::<i64>).map_err(sqlx::Error::Encode)?;
        }
        debug_assert_eq!(Arguments::len(&args), padded * self.params);
        Ok((self.text(padded), args))
    }
}

/// Each user's head (see `user_head!`): the newest seq in the log, one probe of the
/// `(user_id, seq)` index, or `users.head` where retention raised it when it deleted
/// the newest events.
static HEADS: PaddedStatement = PaddedStatement::new(
    "SELECT v.column1, u.head, \
            (SELECT max(e.seq) FROM events AS e WHERE e.user_id = v.column1) \
     FROM (",
    1,
    ") AS v LEFT JOIN users AS u ON u.user_id = v.column1 \
     WHERE v.column1 IS NOT NULL",
);

/// The batch's ids already in the log. CROSS JOIN keeps the `VALUES` list as the outer
/// loop: one probe of the `(event_id, user_id)` index per batch id. Padding rows
/// (NULL) match nothing.
static IDS: PaddedStatement = PaddedStatement::new(
    "SELECT e.user_id, e.event_id, e.seq, e.ts FROM (",
    2,
    ") AS v CROSS JOIN events AS e \
     ON e.event_id = v.column2 AND e.user_id = v.column1",
);

/// The newest seq of each key: its newest stored event, or the one retention retired
/// (deleted while it was the newest).
static KEY_HEADS: PaddedStatement = PaddedStatement::new(
    "SELECT v.column1, v.column2, \
            max(coalesce((SELECT max(e.seq) FROM events AS e \
                          WHERE e.user_id = v.column1 AND e.event_key = v.column2), 0), \
                coalesce((SELECT r.seq FROM retired_keys AS r \
                          WHERE r.user_id = v.column1 AND r.event_key = v.column2), 0)) \
     FROM (",
    2,
    ") AS v WHERE v.column1 IS NOT NULL",
);

/// The rows. Padding rows have no user.
static ROWS: PaddedStatement = PaddedStatement::new(
    "INSERT OR ROLLBACK INTO events \
         (user_id, seq, event_id, device_id, ts, payload, event_key, ttl, expires_at) \
     SELECT * FROM (",
    9,
    ") WHERE column1 IS NOT NULL",
);

/// Statements the write connection keeps prepared: the append's padded statements
/// (four, 20 sizes each up to 1,024 rows) and the rest of the writes.
const WRITER_STATEMENT_CACHE: usize = 512;

/// A [`Store`] on one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Exactly one connection: all writes.
    writer: SqlitePool,
    /// Reads.
    reader: SqlitePool,
    /// First-sight registrations, committed in groups by [`register_loop`] (its
    /// task ends when the last clone of the store drops).
    registrations: tokio::sync::mpsc::Sender<Registration>,
    /// Stops the background checkpointer when the last clone of the store drops
    /// (held only for its `Drop`).
    _checkpointer: std::sync::Arc<tokio_util::sync::DropGuard>,
    /// The retention lock of this process.
    retention: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The write-ahead log file, counted in [`Store::database_bytes`] (`None` for an
    /// in-memory database).
    wal: Option<std::path::PathBuf>,
}

/// One device to register, and where its row goes.
#[derive(Debug)]
struct Registration {
    user: UserId,
    device: DeviceId,
    cert: DeviceCert,
    now: UnixMs,
    reply: tokio::sync::oneshot::Sender<Result<DeviceRecord, StoreError>>,
}

/// Registrations committed together at most (one transaction, one sync).
const MAX_REGISTRATIONS: usize = 256;

/// How often, by default (`database.checkpoint_interval`), the background task looks
/// for new WAL frames to copy back into the database file. Each checkpoint ends with
/// a sync of the database file, and the writer's commits wait for syncs of the log
/// on the same disk: many small checkpoints keep each of those syncs short, where
/// one every half second was a burst that the commits queued behind
/// (publish→delivery p99 at 10,000 events/s: 17 ms with 500 ms, 8–9 ms with 10 ms;
/// `docs/benchmarks.md`).
pub(super) const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(10);
/// The longest time between two checkpoints, even when the log looks unchanged
/// (frames a reader held back from the last one are copied once it is done).
const CHECKPOINT_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// WAL pages after which the writer checkpoints by itself (about 40 MiB): only when
/// the background checkpointer falls far behind.
const WRITER_AUTOCHECKPOINT_PAGES: &str = "10000";
/// The write connection's page cache, in KiB. Not larger: at the end of a write
/// transaction in which a b-tree page split moved pages (SQLite parks one under the
/// lock-byte page's number, page 262,145 with 4 KiB pages), SQLite walks its whole
/// page cache to drop pages past the end of the file, as long as the database is
/// under 1 GiB, and the walk's length grows with the cache. With 64 MiB it took 2–15 %
/// of the server's CPU at 10,000 events/s (more with more users, and on a busier
/// machine); 8 MiB still holds the index pages that 3,333 users' appends touch, with
/// about as many reads as 64 MiB (`docs/benchmarks.md`, "the writer's page cache").
const WRITER_CACHE_KIB: u32 = 8192;

impl SqliteStore {
    /// Opens (creating if missing) the SQLite database a `sqlite:` URL names and
    /// prepares its schema as `opts.migrate` says. Prefer [`super::connect`], which
    /// picks the backend from the URL.
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Self, StoreError> {
        let conn_opts = connect_options(url, true)?;
        migrate::prepare(url, opts.migrate, opts.connect_timeout).await?;
        // The writer touches the index pages of every user in a batch: its page cache
        // is 8 MiB ([`WRITER_CACHE_KIB`]; SQLite's default is 2 MiB). Readers keep the
        // default.
        //
        // Checkpoints run on a background task instead of inside the writer's
        // commits (SQLite's default), and the statement journal of the multi-row
        // inserts stays in memory: both were visible costs of the append path.
        //
        // The write connection is kept for the life of the store (no idle or age
        // limit): its page cache stays warm, and `foreign_commits` reads one
        // connection's `data_version` throughout.
        //
        // Neither pool pings a connection before handing it out (sqlx's default):
        // a connection to a local file has no peer that could have gone away, and
        // each ping is a round trip to the connection's thread.
        let writer = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(opts.connect_timeout)
            .connect_with(
                conn_opts
                    .clone()
                    .statement_cache_capacity(WRITER_STATEMENT_CACHE)
                    .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
                    .pragma("temp_store", "MEMORY")
                    .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES),
            )
            .await?;
        let reader = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.connect_timeout)
            .connect_with(conn_opts.clone())
            .await?;
        let file = conn_opts.get_filename();
        let wal = (file != std::path::Path::new(":memory:")).then(|| {
            let mut name = file.as_os_str().to_owned();
            name.push("-wal");
            std::path::PathBuf::from(name)
        });
        Ok(Self::with_pools(
            writer,
            reader,
            wal,
            opts.checkpoint_interval,
        ))
    }

    /// The store on its two pools, with its background tasks (checkpoints every
    /// `checkpoint_every`, registrations) started.
    fn with_pools(
        writer: SqlitePool,
        reader: SqlitePool,
        wal: Option<std::path::PathBuf>,
        checkpoint_every: std::time::Duration,
    ) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(checkpoint_loop(
            reader.clone(),
            wal.clone(),
            checkpoint_every,
            stop.clone(),
        ));
        let (registrations, queue) = tokio::sync::mpsc::channel(MAX_REGISTRATIONS * 4);
        tokio::spawn(register_loop(writer.clone(), queue));
        Self {
            writer,
            reader,
            registrations,
            _checkpointer: std::sync::Arc::new(stop.drop_guard()),
            retention: std::sync::Arc::default(),
            wal,
        }
    }

    /// The retention lock: one run per process at a time (the write lock keeps the
    /// deletions of anyone else on the file apart from ours).
    async fn take_retention_lock(&self) -> Result<Option<super::RetentionLock>, StoreError> {
        Ok(self
            .retention
            .clone()
            .try_lock_owned()
            .ok()
            .map(super::RetentionLock::local))
    }
}

/// Copies committed WAL frames into the database file in the background (a
/// `PASSIVE` checkpoint never blocks the writer or readers): every `every` when the
/// log file changed since the last checkpoint began (its size or modification
/// time), and at least every [`CHECKPOINT_AT_LEAST_EVERY`] (or `every`, when that is
/// longer). An idle database costs one `stat` per tick.
async fn checkpoint_loop(
    pool: SqlitePool,
    wal: Option<std::path::PathBuf>,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    // The first checkpoint one interval after the start, like every later one.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stamp = |wal: &std::path::Path| {
        std::fs::metadata(wal)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    let mut last: Option<(u64, Option<std::time::SystemTime>)> = None;
    let mut last_run = tokio::time::Instant::now();
    // A connection of its own, taken out of the read pool: a checkpoint through the
    // pool would also ping the connection when it is returned (a second round trip
    // to SQLite's thread), and would wake whichever of the readers' threads was idle.
    let mut conn: Option<sqlx::SqliteConnection> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = wal.as_deref().and_then(stamp);
        if now.is_some() && now == last && last_run.elapsed() < CHECKPOINT_AT_LEAST_EVERY {
            continue;
        }
        last = now;
        last_run = tokio::time::Instant::now();
        let c = match &mut conn {
            Some(c) => c,
            None => match pool.acquire().await {
                Ok(c) => conn.insert(c.detach()),
                Err(e) => {
                    tracing::debug!(error = %e, "no connection for the background checkpoint");
                    continue;
                }
            },
        };
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut *c)
            .await
        {
            tracing::debug!(error = %e, "background checkpoint failed");
            // A fresh connection for the next one.
            conn = None;
        }
    }
}

/// Registers devices seen for the first time, every waiting one in one
/// transaction: a storm of new devices costs one commit (one sync of the WAL) per
/// group instead of one each. A failed group fails each of its registrations.
async fn register_loop(writer: SqlitePool, mut queue: tokio::sync::mpsc::Receiver<Registration>) {
    let mut batch = Vec::with_capacity(MAX_REGISTRATIONS);
    while queue.recv_many(&mut batch, MAX_REGISTRATIONS).await > 0 {
        match register_batch(&writer, &batch).await {
            Ok(rows) => {
                for (r, row) in batch.drain(..).zip(rows) {
                    let _ = r.reply.send(Ok(device_record(r.user, r.device, row)));
                }
            }
            Err(e) => {
                for r in batch.drain(..) {
                    let _ = r.reply.send(Err(StoreError::Unavailable(e.to_string())));
                }
            }
        }
    }
}

async fn register_batch(
    writer: &SqlitePool,
    batch: &[Registration],
) -> Result<Vec<DeviceRow>, StoreError> {
    // Two statements for the whole group. A device can be in it twice (two
    // handshakes at once): its second row takes the upsert path, and both
    // registrations get the row as stored.
    const _: () = assert!(MAX_REGISTRATIONS * 7 <= MAX_PARAMS);
    let mut tx = WriteTx::begin(writer).await?;
    let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO users (user_id, created_at) ");
    q.push_values(batch, |mut b, r| {
        b.push_bind(&r.user.0[..]).push_bind(r.now);
    });
    q.push(" ON CONFLICT (user_id) DO NOTHING");
    q.build().execute(&mut *tx).await?;
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO devices (user_id, device_id, cert_issued_at, cert_expires_at, cert_sig, \
                              created_at, last_seen) ",
    );
    q.push_values(batch, |mut b, r| {
        b.push_bind(&r.user.0[..])
            .push_bind(&r.device.0[..])
            .push_bind(to_db(r.cert.issued_at))
            .push_bind(to_db(r.cert.expires_at))
            .push_bind(&r.cert.sig[..])
            .push_bind(r.now)
            .push_bind(r.now);
    });
    q.push(
        " ON CONFLICT (user_id, device_id) \
             DO UPDATE SET last_seen = max(devices.last_seen, excluded.last_seen) \
         RETURNING user_id, device_id, created_at, last_seen, cursor_seq, revoked_at",
    );
    // RETURNING's order is unspecified: rows are matched to registrations by key.
    /// `user_id, device_id` and a [`DeviceRow`].
    type Returned = (Vec<u8>, Vec<u8>, i64, i64, i64, Option<i64>);
    let returned: Vec<Returned> = q.build_query_as().fetch_all(&mut *tx).await?;
    let mut rows = std::collections::HashMap::with_capacity(returned.len());
    for (u, d, created_at, last_seen, cursor, revoked_at) in returned {
        let key = (
            key32(&u, "devices.user_id")?,
            key32(&d, "devices.device_id")?,
        );
        rows.insert(key, (created_at, last_seen, cursor, revoked_at));
    }
    let now = batch.iter().map(|r| r.now).max().unwrap_or_default();
    let revoked: Vec<(Vec<u8>, Vec<u8>, Option<i64>)> =
        sqlx::query_as(super::shared::APPLY_KEPT_REVOCATIONS)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
    for (u, d, revoked_at) in revoked {
        let key = (
            key32(&u, "devices.user_id")?,
            key32(&d, "devices.device_id")?,
        );
        if let Some(row) = rows.get_mut(&key) {
            row.3 = revoked_at;
        }
    }
    let rows = batch
        .iter()
        .map(|r| {
            rows.get(&(r.user.0, r.device.0)).copied().ok_or_else(|| {
                StoreError::Other("a registered device is missing from RETURNING".into())
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Only an `Ok` here means the group is stored; before it, nothing is.
    tx.commit().await?;
    Ok(rows)
}

/// A write transaction on the writer connection, begun with `BEGIN IMMEDIATE`.
///
/// Managed by hand rather than with sqlx's `Transaction`: when SQLite rolls a
/// transaction back by itself (it may on `SQLITE_FULL`, `SQLITE_IOERR`,
/// `SQLITE_NOMEM`), sqlx's rollback-on-drop fails and leaves the pooled connection
/// believing it is still inside a transaction, so every later `begin` on the one
/// writer connection would fail until a restart. Here a transaction that does not
/// commit (error, or the future dropped mid-way) closes its connection, which makes
/// SQLite roll back whatever is left, and the pool opens a fresh one.
struct WriteTx {
    conn: PoolConnection<Sqlite>,
    /// Committed or rolled back: the connection is clean and may go back to the pool.
    finished: bool,
}

impl SqliteStore {
    /// A write transaction on the one writer connection (what the shared SQL in
    /// `super::shared` writes through).
    async fn write_tx(&self) -> Result<WriteTx, StoreError> {
        WriteTx::begin(&self.writer).await
    }
}

impl WriteTx {
    async fn begin(pool: &SqlitePool) -> Result<Self, StoreError> {
        let mut tx = Self {
            conn: pool.acquire().await?,
            finished: false,
        };
        // Prepared once and kept (`query`, not a bare string): these two run once
        // per write transaction.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *tx.conn)
            .await?;
        Ok(tx)
    }

    /// Commits; only an `Ok` here means the writes are durable.
    async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::query("COMMIT").execute(&mut *self.conn).await?;
        self.finished = true;
        Ok(())
    }

    /// Ends a transaction that has nothing to write (keeps the connection).
    async fn rollback(mut self) -> Result<(), StoreError> {
        self.conn.execute("ROLLBACK").await?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

impl Deref for WriteTx {
    type Target = sqlx::SqliteConnection;

    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

super::shared::auth_and_admin_sql! {
    store: SqliteStore,
    db: Sqlite,
    conn: sqlx::SqliteConnection,
    reader: reader,
    writer: writer,
    // `BEGIN IMMEDIATE` holds the write lock for the whole transaction.
    for_update: "",
    lock_user: None,
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.reader.execute("SELECT 1").await?;
        Ok(())
    }

    async fn foreign_commits(&self) -> Result<Option<i64>, StoreError> {
        // Every write of this store goes through the one write connection, so the
        // value moves only for commits by other processes on the file.
        let v: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&self.writer)
            .await?;
        Ok(Some(v))
    }

    async fn database_bytes(&self) -> Result<Option<u64>, StoreError> {
        let bytes: Option<i64> = sqlx::query_scalar(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_optional(&self.reader)
        .await?;
        // A missing log (before the first write, or after a clean close) is 0 bytes.
        let wal = self
            .wal
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        Ok(bytes.map(|b| from_db(b) + wal))
    }

    async fn append_with(
        &self,
        batch: &[NewEvent],
        chore: &crate::model::Chore,
    ) -> Result<(Vec<AppendOutcome>, super::ChoreResult), StoreError> {
        let mut tx = WriteTx::begin(&self.writer).await?;
        let outcomes = append_in(&mut tx, batch).await?;
        // The chore in a savepoint: its failure must not cost the batch. A failure
        // that ended the whole transaction (SQLite rolls back by itself on a full
        // disk, say) makes `ROLLBACK TO` fail, and then the batch fails too.
        tx.execute("SAVEPOINT chore").await?;
        let started = std::time::Instant::now();
        let done = Self::chore_in(&mut tx, chore)
            .await
            .map(|rows| (rows, started.elapsed()));
        if done.is_err() {
            tx.execute("ROLLBACK TO chore").await?;
        }
        tx.execute("RELEASE chore").await?;
        // Durable on return (synchronous = FULL): only now may outcomes be acked.
        tx.commit().await?;
        Ok((outcomes, done))
    }

    fn pool_stats(&self) -> (u32, u32) {
        let size = self.writer.size() + self.reader.size();
        let idle = (self.writer.num_idle() + self.reader.num_idle()) as u32;
        (size.saturating_sub(idle), idle)
    }
}

super::retention::retention_sql! {
    store: SqliteStore,
    db: Sqlite,
    conn: sqlx::SqliteConnection,
    reader: reader,
    writer: writer,
    delete_expired: "DELETE FROM events WHERE rowid IN \
          (SELECT rowid FROM events WHERE expires_at <= $1 LIMIT $2) \
        RETURNING user_id, seq, event_key",
    delete_superseded: concat!(
        "DELETE FROM events WHERE rowid IN (SELECT e.rowid FROM events AS e WHERE ",
        super::retention::superseded!(),
        " LIMIT $2)"
    ),
    // `BEGIN IMMEDIATE` already excludes appends.
    lock_head: "",
}

super::shared::event_log! {
    // The rest of the trait is SQL both backends share (`super::shared`).
    impl EventLog for SqliteStore {
        reader: reader;

        async fn append(&self, batch: &[NewEvent]) -> Result<Vec<AppendOutcome>, StoreError> {
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            // The write lock, for the whole batch: no other writer of this file can
            // assign seqs until we commit.
            let mut tx = WriteTx::begin(&self.writer).await?;
            let outcomes = append_in(&mut tx, batch).await?;
            // Durable on return (synchronous = FULL): only now may outcomes be acked.
            tx.commit().await?;
            Ok(outcomes)
        }
    }
}

/// The rows of an append batch, written inside `tx` (see [`EventLog::append`]); the
/// caller commits. Nothing is written for an empty batch.
///
/// [`EventLog::append`]: super::EventLog::append
async fn append_in(
    tx: &mut sqlx::SqliteConnection,
    batch: &[NewEvent],
) -> Result<Vec<AppendOutcome>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let users = append::users(batch);
    let ids = append::ids(batch);
    let cas_keys = append::cas_keys(batch);
    let now = batch.iter().map(|e| e.ts).max().unwrap_or_default();

    // The write lock, for the whole batch: no other writer of this file can
    // assign seqs until we commit.
    //
    // The writes below are `OR ROLLBACK`: a constraint they break (a bug: the plan
    // decided every outcome under this lock) ends the whole transaction instead of
    // undoing one statement. That spares SQLite a statement journal, a copy of
    // every page a multi-row statement touches first, which was ~10 % of the
    // writer thread in `perf`. The failed transaction's connection is discarded
    // by `WriteTx` either way.
    let mut snapshot = Snapshot::default();

    let mut missing = Vec::new();
    for chunk in users.chunks(HEADS.max_rows()) {
        // The append writes `users` only for a user it has not seen: the rows the
        // commit dirties are the log's.
        let (sql, args) = HEADS.bind(chunk, |a, u| Arguments::add(a, &u.0[..]))?;
        let rows: Vec<(Vec<u8>, Option<i64>, Option<i64>)> =
            sqlx::query_as_with(sql, args).fetch_all(&mut *tx).await?;
        for (u, floor, newest) in rows {
            let user = UserId(key32(&u, "users.user_id")?);
            if floor.is_none() {
                missing.push(user);
            }
            let head = floor.unwrap_or(0).max(newest.unwrap_or(0));
            snapshot.heads.insert(user, from_db(head));
        }
    }
    for chunk in missing.chunks(MAX_PARAMS / 2) {
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT OR ROLLBACK INTO users (user_id, created_at) ");
        q.push_values(chunk, |mut b, u| {
            b.push_bind(&u.0[..]).push_bind(now);
        });
        q.build().execute(&mut *tx).await?;
    }

    for chunk in ids.chunks(IDS.max_rows()) {
        let (sql, args) = IDS.bind(chunk, |a, (u, id)| {
            Arguments::add(a, &u.0[..])?;
            Arguments::add(a, &id.as_bytes()[..])
        })?;
        let rows: Vec<(Vec<u8>, Vec<u8>, i64, i64)> =
            sqlx::query_as_with(sql, args).fetch_all(&mut *tx).await?;
        for (u, id, seq, ts) in rows {
            let key = (UserId(key32(&u, "events.user_id")?), event_id(&id)?);
            snapshot.ids.insert(key, (from_db(seq), ts));
        }
    }

    for chunk in cas_keys.chunks(KEY_HEADS.max_rows()) {
        let (sql, args) = KEY_HEADS.bind(chunk, |a, (u, key)| {
            Arguments::add(a, &u.0[..])?;
            Arguments::add(a, *key)
        })?;
        let rows: Vec<(Vec<u8>, Vec<u8>, i64)> =
            sqlx::query_as_with(sql, args).fetch_all(&mut *tx).await?;
        for (u, key, seq) in rows {
            if seq > 0 {
                snapshot
                    .key_heads
                    .insert((UserId(key32(&u, "events.user_id")?), key), from_db(seq));
            }
        }
    }

    let plan = append::plan(batch, snapshot);

    for chunk in plan.rows.chunks(ROWS.max_rows()) {
        let (sql, args) = ROWS.bind(chunk, |a, row| {
            let e = row.event;
            Arguments::add(a, &e.user.0[..])?;
            Arguments::add(a, to_db(row.seq))?;
            Arguments::add(a, &e.id.as_bytes()[..])?;
            Arguments::add(a, &e.device.0[..])?;
            Arguments::add(a, e.ts)?;
            Arguments::add(a, &e.payload[..])?;
            Arguments::add(a, e.key.as_deref())?;
            Arguments::add(a, e.ttl.map(to_db))?;
            Arguments::add(a, row.expires_at)
        })?;
        sqlx::query_with(sql, args).execute(&mut *tx).await?;
    }

    Ok(plan.outcomes)
}

super::shared::devices! {
    // The rest of the trait is SQL both backends share (`super::shared`).
    impl Devices for SqliteStore {
        reader: reader;

        async fn register_device(
            &self,
            user: &UserId,
            device: &DeviceId,
            cert: &DeviceCert,
            now: UnixMs,
        ) -> Result<DeviceRecord, StoreError> {
            let stopped = || StoreError::Unavailable("registrations stopped".into());
            let (reply, answer) = tokio::sync::oneshot::channel();
            let r = Registration {
                user: *user,
                device: *device,
                cert: cert.clone(),
                now,
                reply,
            };
            self.registrations.send(r).await.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }

        async fn set_cursor(
            &self,
            user: &UserId,
            device: &DeviceId,
            seq: u64,
        ) -> Result<(), StoreError> {
            let done = sqlx::query(concat!(
                "UPDATE devices SET cursor_seq = max(cursor_seq, \
                     min(?, coalesce((SELECT ",
                super::user_head!("u"),
                " FROM users AS u WHERE u.user_id = devices.user_id), 0))) \
                 WHERE user_id = ? AND device_id = ?"
            ))
            .bind(to_db(seq))
            .bind(&user.0[..])
            .bind(&device.0[..])
            .execute(&self.writer)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        }

        async fn touch_devices(&self, seen: &[(UserId, DeviceId, UnixMs)]) -> Result<(), StoreError> {
            if seen.is_empty() {
                return Ok(());
            }
            let mut tx = WriteTx::begin(&self.writer).await?;
            for chunk in seen.chunks(MAX_PARAMS / 3) {
                let mut q = QueryBuilder::<Sqlite>::new(
                    "UPDATE devices SET last_seen = max(devices.last_seen, v.column3) FROM (",
                );
                q.push_values(chunk, |mut b, (user, device, at)| {
                    b.push_bind(&user.0[..])
                        .push_bind(&device.0[..])
                        .push_bind(*at);
                });
                q.push(") AS v WHERE devices.user_id = v.column1 AND devices.device_id = v.column2");
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        }

        async fn revoke_device(
            &self,
            user: &UserId,
            device: &DeviceId,
            ts: UnixMs,
            sig: &[u8; 64],
            now: UnixMs,
        ) -> Result<RevokeOutcome, StoreError> {
            let mut tx = WriteTx::begin(&self.writer).await?;
            let known: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?")
                    .bind(&user.0[..])
                    .bind(&device.0[..])
                    .fetch_optional(&mut *tx)
                    .await?;
            if known.is_none() {
                tx.rollback().await?;
                return Ok(RevokeOutcome::UnknownDevice);
            }
            let first_use = sqlx::query(
                "INSERT INTO used_revocations (user_id, device_id, ts, sig, used_at) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(&user.0[..])
            .bind(&device.0[..])
            .bind(ts)
            .bind(&sig[..])
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !first_use {
                tx.rollback().await?;
                return Ok(RevokeOutcome::Replayed);
            }
            sqlx::query(
                "UPDATE devices SET revoked_at = coalesce(revoked_at, ?) \
                 WHERE user_id = ? AND device_id = ?",
            )
            .bind(now)
            .bind(&user.0[..])
            .bind(&device.0[..])
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(RevokeOutcome::Revoked)
        }
    }
}

#[cfg(test)]
mod tests {
    //! Faults that must surface as [`StoreError::Unavailable`] (retryable, no ack)
    //! without taking the store down: BAD-INPUTS F2, F3, F5.

    use super::*;
    use crate::store::{Devices, EventLog, MigrateMode};
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{Connection, SqliteConnection};
    use std::time::Duration;

    const USER: UserId = UserId([3; 32]);

    async fn store_with(
        dir: &tempfile::TempDir,
        tweak: impl Fn(SqliteConnectOptions) -> SqliteConnectOptions,
    ) -> (SqliteStore, String) {
        let url = format!("sqlite://{}", dir.path().join("f.db").display());
        migrate::prepare(&url, MigrateMode::Apply, Duration::from_secs(5))
            .await
            .unwrap();
        let opts = tweak(connect_options(&url, true).unwrap());
        let pool = |n| {
            SqlitePoolOptions::new()
                .max_connections(n)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(opts.clone())
        };
        let store = SqliteStore::with_pools(
            pool(1).await.unwrap(),
            pool(2).await.unwrap(),
            None,
            CHECKPOINT_EVERY,
        );
        (store, url)
    }

    fn event(n: u128, payload: usize) -> NewEvent {
        NewEvent {
            user: USER,
            id: uuid::Uuid::from_u128(n),
            device: DeviceId([4; 32]),
            payload: vec![0xAB; payload],
            key: None,
            base: None,
            ttl: None,
            ts: 1,
        }
    }

    fn assert_unavailable<T: std::fmt::Debug>(r: Result<T, StoreError>, needle: &str) {
        match r {
            Err(StoreError::Unavailable(msg)) => assert!(msg.contains(needle), "{msg}"),
            other => panic!("expected Unavailable({needle}), got {other:?}"),
        }
    }

    /// `.cargo/config.toml` builds the bundled SQLite without memory statistics (a
    /// global mutex around each of its allocations).
    #[tokio::test]
    async fn sqlite_is_built_without_memory_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_with(&dir, |o| o).await;
        let options: Vec<String> = sqlx::query_scalar("SELECT * FROM pragma_compile_options")
            .fetch_all(&store.reader)
            .await
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }

    /// `.cargo/config.toml` tells the bundled SQLite that `fdatasync` works, so its
    /// syncs skip inode writes for changed times. SQLite does not list this flag
    /// among its compile options; what reaches the build is the variable the
    /// bundling crate's build script reads, which cargo sets for this crate too.
    #[test]
    fn sqlite_is_built_to_sync_with_fdatasync() {
        let flags = option_env!("LIBSQLITE3_FLAGS").unwrap_or_default();
        assert!(
            flags.split_whitespace().any(|f| f == "-DHAVE_FDATASYNC=1"),
            "LIBSQLITE3_FLAGS = {flags:?}"
        );
    }

    /// The write connection gets [`WRITER_CACHE_KIB`] of page cache, the readers
    /// SQLite's default.
    #[tokio::test]
    async fn the_writer_has_its_page_cache_and_the_readers_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let store = SqliteStore::connect(&url, &StoreOptions::default())
            .await
            .unwrap();
        let cache = |pool: &SqlitePool| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("PRAGMA cache_size")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(cache(&store.writer).await, -i64::from(WRITER_CACHE_KIB));
        assert_eq!(cache(&store.reader).await, -2000, "SQLite's default");
    }

    #[tokio::test]
    async fn commits_reach_the_database_file_without_another_write() {
        let dir = tempfile::tempdir().unwrap();
        let (_, url) = store_with(&dir, |o| o).await;
        let file = dir.path().join("f.db");
        let opts = connect_options(&url, true).unwrap();
        let pool = |n| {
            SqlitePoolOptions::new()
                .max_connections(n)
                .connect_with(opts.clone())
        };
        let wal = dir.path().join("f.db-wal");
        let store = SqliteStore::with_pools(
            pool(1).await.unwrap(),
            pool(2).await.unwrap(),
            Some(wal),
            CHECKPOINT_EVERY,
        );
        append_and_wait_for_checkpoint(&store, &file).await;
    }

    /// Appends 800 KiB and waits until a checkpoint has copied them into the database
    /// file: only a checkpoint writes that file (the writer's own starts at 10,000
    /// pages), so the file's growth is the background checkpoint's work.
    async fn append_and_wait_for_checkpoint(store: &SqliteStore, file: &std::path::Path) {
        let len = || std::fs::metadata(file).unwrap().len();
        let before = len();
        let events: Vec<_> = (1..=100).map(|n| event(n, 8 * 1024)).collect();
        store.append(&events).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while len() < before + 800 * 1024 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} bytes, {before} before",
                len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `database.checkpoint_interval` reaches the background checkpoint: with an hour,
    /// appended pages stay in the log (the first checkpoint is an hour after the
    /// store opens), and with 10 ms the same append reaches the database file. The
    /// write connection's own checkpoints start at 10,000 pages, far above this
    /// append's.
    #[tokio::test]
    async fn the_background_checkpoint_runs_at_the_configured_interval() {
        let open = |dir: &tempfile::TempDir, every| {
            let url = format!("sqlite://{}", dir.path().join("f.db").display());
            async move {
                let opts = StoreOptions {
                    checkpoint_interval: every,
                    ..StoreOptions::default()
                };
                SqliteStore::connect(&url, &opts).await.unwrap()
            }
        };
        let hourly = tempfile::tempdir().unwrap();
        let store = open(&hourly, Duration::from_secs(3600)).await;
        let file = hourly.path().join("f.db");
        let wal = hourly.path().join("f.db-wal");
        let len = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
        let before = len(&file);
        let events: Vec<_> = (1..=100).map(|n| event(n, 8 * 1024)).collect();
        store.append(&events).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(len(&file), before, "no checkpoint within the hour");
        assert!(len(&wal) >= 800 * 1024, "the log holds the append");

        let often = tempfile::tempdir().unwrap();
        let store = open(&often, Duration::from_millis(10)).await;
        append_and_wait_for_checkpoint(&store, &often.path().join("f.db")).await;
    }

    /// A checkpoint that fails drops its connection, and the next one runs on a
    /// fresh connection. The failure is SQLite's own: the first connection the
    /// checkpointer gets sits in an open read transaction, where
    /// `PRAGMA wal_checkpoint` fails with "database table is locked" every time.
    #[tokio::test]
    async fn a_failed_checkpoint_is_retried_on_a_fresh_connection() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let (_, url) = store_with(&dir, |o| o).await;
        let opts = connect_options(&url, true).unwrap();
        let opened = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = opened.clone();
        let reader = SqlitePoolOptions::new()
            .max_connections(2)
            .after_connect(move |conn, _| {
                let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
                Box::pin(async move {
                    if first {
                        sqlx::query("BEGIN").execute(&mut *conn).await?;
                        sqlx::query("SELECT count(*) FROM sqlite_schema")
                            .fetch_one(&mut *conn)
                            .await?;
                        let err = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                            .execute(&mut *conn)
                            .await
                            .expect_err("a checkpoint inside a transaction fails");
                        assert!(err.to_string().contains("locked"), "{err}");
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(opts.clone());
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .unwrap();
        let file = dir.path().join("f.db");
        let store = SqliteStore::with_pools(
            writer,
            reader,
            Some(dir.path().join("f.db-wal")),
            CHECKPOINT_EVERY,
        );
        append_and_wait_for_checkpoint(&store, &file).await;
        assert!(opened.load(Ordering::SeqCst) >= 2, "a second connection");
    }

    #[tokio::test]
    async fn disk_full_is_unavailable_and_recovers_after_pruning() {
        let dir = tempfile::tempdir().unwrap();
        // 64 pages of 4 KiB: the schema takes a few dozen.
        let (store, _) = store_with(&dir, |o| o.pragma("max_page_count", "64")).await;
        let mut n = 0;
        let err = loop {
            n += 1;
            assert!(n < 1000, "never filled up");
            if let Err(e) = store.append(&[event(n, 8 * 1024)]).await {
                break e;
            }
        };
        assert_unavailable(Err::<(), _>(err), "full");
        // Nothing half-written, reads go on.
        let head = store.head(&USER).await.unwrap();
        assert_eq!(head, n as u64 - 1);
        let page = store.events_after(&USER, 0, 1000, 0).await.unwrap();
        assert_eq!(page.events.len() as u64, head);
        // Retention can still delete, and then writes resume without a restart.
        store.prune_before(&USER, head + 1, 10_000).await.unwrap();
        let out = store.append(&[event(n, 8 * 1024)]).await.unwrap();
        assert_eq!(
            out,
            vec![AppendOutcome::Stored {
                seq: head + 1,
                ts: 1
            }]
        );
    }

    #[tokio::test]
    async fn locked_database_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let (store, url) = store_with(&dir, |o| o.busy_timeout(Duration::from_millis(100))).await;
        // Another process holds the write lock.
        let mut other = SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        assert_unavailable(store.append(&[event(1, 10)]).await, "locked");
        assert_unavailable(
            store
                .register_device(&USER, &DeviceId([4; 32]), &cert(), 1)
                .await,
            "locked",
        );
        // Registrations waiting together fail together, each with the reason.
        let waiting: Vec<_> = (5..9u8)
            .map(|d| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .register_device(&USER, &DeviceId([d; 32]), &cert(), 1)
                        .await
                })
            })
            .collect();
        for w in waiting {
            assert_unavailable(w.await.unwrap(), "locked");
        }
        // Reads are not blocked by a writer (WAL).
        assert_eq!(store.head(&USER).await.unwrap(), 0);
        assert!(store.devices(&USER).await.unwrap().is_empty());
        sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
        assert!(store.append(&[event(1, 10)]).await.is_ok());
        let d = DeviceId([5; 32]);
        let r = store.register_device(&USER, &d, &cert(), 1).await.unwrap();
        assert_eq!((r.user, r.device), (USER, d));
    }

    #[tokio::test]
    async fn one_group_registers_each_device_once_even_when_it_is_in_it_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_with(&dir, |o| o).await;
        let reg = |device: u8, now: UnixMs| Registration {
            user: USER,
            device: DeviceId([device; 32]),
            cert: cert(),
            now,
            reply: tokio::sync::oneshot::channel().0,
        };
        let group = [reg(4, 10), reg(5, 20), reg(4, 30)];
        let rows = register_batch(&store.writer, &group).await.unwrap();
        assert_eq!(rows.len(), 3);
        // One row for device 4, created by its first registration; both of its
        // registrations are answered with that row.
        assert_eq!(rows[0], rows[2]);
        assert_eq!(rows[0].0, 10);
        assert_eq!(rows[1].0, 20);
        let devices = store.devices(&USER).await.unwrap();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].last_seen, 30);
    }

    #[test]
    fn padded_sizes_have_two_significant_bits_and_fit_the_parameter_limit() {
        let first: Vec<_> = (1..=13).map(padded_rows).collect();
        assert_eq!(first, [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16]);
        let mut sizes = std::collections::BTreeSet::new();
        for n in 1..=MAX_PARAMS {
            let p = padded_rows(n);
            assert!(p >= n && 2 * p < 3 * n + 1, "{n} → {p}");
            assert!(p.count_ones() <= 2 && (p >> p.trailing_zeros()) <= 3, "{p}");
            sizes.insert(p);
        }
        assert_eq!(sizes.range(..=1024).count(), 20);
        for params in [1, 2, 3, 5, 9, MAX_PARAMS] {
            let rows = max_padded_rows(params);
            assert_eq!(padded_rows(rows), rows);
            assert!(rows * params <= MAX_PARAMS, "{params}: {rows}");
            assert!(
                padded_rows(rows + 1) * params > MAX_PARAMS,
                "{params}: {rows}"
            );
        }
        // Five rows of two: the text for six, the sixth row NULLs; built once.
        let stmt = PaddedStatement::new("SELECT * FROM (", 2, ") WHERE column1 IS NOT NULL");
        let rows = [1i64, 2, 3, 4, 5];
        let (sql, args) = stmt
            .bind(&rows, |a, n| {
                Arguments::add(a, *n)?;
                Arguments::add(a, -n)
            })
            .unwrap();
        assert_eq!(
            sql,
            "SELECT * FROM (VALUES (?, ?), (?, ?), (?, ?), (?, ?), (?, ?), (?, ?)) \
             WHERE column1 IS NOT NULL"
        );
        assert_eq!(Arguments::len(&args), 12);
        let two = |a: &mut SqliteArguments, n: &i64| {
            Arguments::add(a, *n)?;
            Arguments::add(a, *n)
        };
        let (four, _) = stmt.bind(&rows[..4], two).unwrap();
        assert!(!std::ptr::eq(sql, four), "4 rows: another size");
        let (same, _) = stmt.bind(&rows[..4], two).unwrap();
        assert!(std::ptr::eq(four, same), "the text is kept");
    }

    /// Batches of every size from 1 to 130, each event from its own user and with
    /// its user's key and that key's head as its base: every event is stored once,
    /// with the right seq, a batch sent twice is all duplicates, and the write
    /// connection holds a few dozen prepared statements, not one per batch size and
    /// kind.
    #[tokio::test]
    async fn appends_of_every_size_reuse_a_few_statements() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_with(&dir, |o| o).await;
        let user = |i: usize| UserId([(i % 200) as u8 + 1; 32]);
        let mut next = 0u128;
        let mut stored = 0;
        for size in 1..=130usize {
            let batch: Vec<_> = (0..size)
                .map(|i| {
                    next += 1;
                    // The key's newest event is the user's newest: seq size - 1 - i.
                    NewEvent {
                        user: user(i),
                        key: Some(format!("k{i}").into_bytes()),
                        base: Some((size - 1 - i) as u64),
                        ..event(next, 16)
                    }
                })
                .collect();
            let out = store.append(&batch).await.unwrap();
            for (i, o) in out.iter().enumerate() {
                // User i has been in every batch larger than i so far.
                let seq = (size - i) as u64;
                assert!(
                    matches!(o, AppendOutcome::Stored { seq: s, .. } if *s == seq),
                    "size {size}, row {i}: {o:?}"
                );
            }
            stored += size;
            // The same batch again: each is a duplicate of what was just stored.
            let again = store.append(&batch).await.unwrap();
            assert!(
                again
                    .iter()
                    .all(|o| matches!(o, AppendOutcome::Duplicate { .. })),
                "{again:?}"
            );
        }
        let mut heads = 0;
        for i in 0..130 {
            heads += store.head(&user(i)).await.unwrap();
        }
        assert_eq!(heads as usize, stored);
        let conn = store.writer.acquire().await.unwrap();
        // 4 statements (heads, ids, keys, rows) × 15 sizes up to 130, and the
        // users' first rows, BEGIN, COMMIT.
        let cached = sqlx::Connection::cached_statements_size(&*conn);
        assert!(cached <= 70, "{cached} statements");
    }

    #[tokio::test]
    async fn read_only_database_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_with(&dir, |o| o.read_only(true)).await;
        assert_unavailable(store.append(&[event(1, 10)]).await, "readonly");
        assert_eq!(store.head(&USER).await.unwrap(), 0);
    }

    fn cert() -> DeviceCert {
        DeviceCert {
            issued_at: 0,
            expires_at: 0,
            sig: [0; 64],
        }
    }
}
