//! PostgreSQL backend.
//!
//! Several server instances may share one database, so seq assignment cannot rely on
//! anything in this process: [`Store::append`] locks the counter row of every user in
//! the batch (`FOR NO KEY UPDATE`, in sorted user order so two instances never wait
//! for each other in a cycle), numbers the events from the locked heads, and writes
//! the new heads before commit. `UNIQUE (user_id, seq)` is the backstop. PostgreSQL
//! sequences are not used: they are not gap-free.
//!
//! Batch statements pass columns as arrays and `UNNEST` them, so one statement (with
//! one cached plan) serves any batch size without bind-parameter limits.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Executor;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::append::{self, Snapshot};
use super::options::postgres_options as connect_options;
use super::{
    AppendOutcome, Backend, DeviceCert, DeviceId, DeviceRecord, DeviceRow, NewEvent, RevokeOutcome,
    Store, StoreError, StoreOptions, UnixMs, UserId, device_record, event_id, from_db, key32,
    migrate, to_db,
};

/// Upper bound for any one statement of the server's pool, so a stuck lock or a slow
/// disk turns into a retryable error instead of a hung request.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Plan every execution of a prepared statement with its real parameters.
///
/// sqlx prepares and caches every statement per connection, and after five
/// executions PostgreSQL may switch a prepared statement to a generic plan, built
/// once without the parameters and kept for the connection's life. A server starts on
/// an empty database, so the generic plans of the append path's `UNNEST` lookups are
/// made while `events` is tiny (sequential scans and hash joins) and then scan the
/// whole log on every batch as it grows: measured with `cargo bench --bench store`,
/// batches of 500 fell from 40k to 8k events/s. Custom plans use the indexes every
/// time; their planning did not show: single-event appends got faster too (552 to
/// 897 events/s in the same comparison).
const PLAN_CACHE_MODE: &str = "force_custom_plan";

/// A [`Store`] on a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

/// Connection options of the server's pool: [`connect_options`] plus the session
/// settings every pooled connection runs with.
fn pool_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    Ok(connect_options(url)?.options([
        (
            "statement_timeout",
            format!("{}ms", STATEMENT_TIMEOUT.as_millis()),
        ),
        ("plan_cache_mode", PLAN_CACHE_MODE.to_string()),
    ]))
}

impl PgStore {
    /// Connects to the PostgreSQL database a `postgres://` URL names and prepares its
    /// schema as `opts.migrate` says. Prefer [`super::connect`], which picks the
    /// backend from the URL.
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Self, StoreError> {
        let conn_opts = pool_options(url)?;
        migrate::prepare(url, opts.migrate, opts.connect_timeout).await?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.connect_timeout)
            .connect_with(conn_opts)
            .await?;
        Ok(Self { pool })
    }
}

super::shared::auth_and_admin_sql! {
    store: PgStore,
    db: sqlx::Postgres,
    conn: sqlx::PgConnection,
    reader: pool,
    writer: pool,
    // Two instances presenting the same refresh token at once: one waits.
    for_update: " FOR UPDATE",
    // The user's counter row, locked first as `append` does.
    lock_user: Some("SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE"),
}

super::retention::retention_sql! {
    store: PgStore,
    db: sqlx::Postgres,
    conn: sqlx::PgConnection,
    reader: pool,
    writer: pool,
    // `ctid = ANY(ARRAY(…))`: a TID scan of exactly the rows picked.
    delete_expired: "DELETE FROM events WHERE ctid = ANY(ARRAY( \
          SELECT ctid FROM events WHERE expires_at <= $1 LIMIT $2)) \
        RETURNING user_id, seq, event_key",
    delete_superseded: concat!(
        "DELETE FROM events WHERE ctid = ANY(ARRAY(SELECT e.ctid FROM events AS e WHERE ",
        super::retention::superseded!(),
        " LIMIT $2))"
    ),
    // The user's counter row, locked as `append` locks it.
    lock_head: " FOR NO KEY UPDATE",
}

impl PgStore {
    /// The retention lock: a session advisory lock on a connection taken from the
    /// pool for as long as the lock is held (`None`: another session holds it).
    async fn take_retention_lock(&self) -> Result<Option<super::RetentionLock>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(super::retention::PG_RETENTION_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then(|| super::RetentionLock::postgres(conn)))
    }

    /// A write transaction (what the shared SQL in `super::shared` writes through).
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.execute("SELECT 1").await?;
        Ok(())
    }

    async fn database_bytes(&self) -> Result<Option<u64>, StoreError> {
        let bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(from_db(bytes)))
    }

    fn pool_stats(&self) -> (u32, u32) {
        let size = self.pool.size();
        let idle = self.pool.num_idle() as u32;
        (size.saturating_sub(idle), idle)
    }
}

super::shared::event_log! {
    // The rest of the trait is SQL both backends share (`super::shared`).
    impl EventLog for PgStore {
        reader: pool;

        async fn append(&self, batch: &[NewEvent]) -> Result<Vec<AppendOutcome>, StoreError> {
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            let users = append::users(batch);
            let user_keys: Vec<&[u8]> = users.iter().map(|u| &u.0[..]).collect();
            let now = batch.iter().map(|e| e.ts).max().unwrap_or_default();

            let mut tx = self.pool.begin().await?;

            // Create missing counter rows, then lock them all. Both in sorted user order:
            // an instance waiting for another's uncommitted insert or row lock never holds
            // anything that one needs next, so appends cannot deadlock. NO KEY UPDATE
            // serialises appenders without blocking foreign-key checks of `devices`.
            sqlx::query(
                "INSERT INTO users (user_id, created_at) \
                 SELECT u, $2 FROM UNNEST($1::bytea[]) AS t(u) ORDER BY u \
                 ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(&user_keys[..])
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let heads: Vec<(Vec<u8>, i64)> = sqlx::query_as(
                "SELECT user_id, head FROM users WHERE user_id = ANY($1) \
                 ORDER BY user_id FOR NO KEY UPDATE",
            )
            .bind(&user_keys[..])
            .fetch_all(&mut *tx)
            .await?;

            // From here on (READ COMMITTED: each statement sees everything committed before
            // it started) no other transaction can add events for these users.
            let mut snapshot = Snapshot::default();
            for (u, head) in heads {
                snapshot
                    .heads
                    .insert(UserId(key32(&u, "users.user_id")?), from_db(head));
            }

            let ids = append::ids(batch);
            let id_users: Vec<&[u8]> = ids.iter().map(|(u, _)| &u.0[..]).collect();
            let id_ids: Vec<&[u8]> = ids.iter().map(|(_, id)| &id.as_bytes()[..]).collect();
            let existing: Vec<(Vec<u8>, Vec<u8>, i64, i64)> = sqlx::query_as(
                "SELECT e.user_id, e.event_id, e.seq, e.ts \
                 FROM UNNEST($1::bytea[], $2::bytea[]) AS v(user_id, event_id) \
                 JOIN events AS e ON e.user_id = v.user_id AND e.event_id = v.event_id",
            )
            .bind(&id_users[..])
            .bind(&id_ids[..])
            .fetch_all(&mut *tx)
            .await?;
            for (u, id, seq, ts) in existing {
                let key = (UserId(key32(&u, "events.user_id")?), event_id(&id)?);
                snapshot.ids.insert(key, (from_db(seq), ts));
            }

            let cas_keys = append::cas_keys(batch);
            if !cas_keys.is_empty() {
                let key_users: Vec<&[u8]> = cas_keys.iter().map(|(u, _)| &u.0[..]).collect();
                let key_keys: Vec<&[u8]> = cas_keys.iter().map(|(_, k)| *k).collect();
                // The newest seq of the key: its newest stored event, or the one
                // retention retired (deleted while it was the newest).
                let key_heads: Vec<(Vec<u8>, Vec<u8>, Option<i64>)> = sqlx::query_as(
                    "SELECT v.user_id, v.event_key, \
                        GREATEST((SELECT max(e.seq) FROM events AS e \
                                  WHERE e.user_id = v.user_id AND e.event_key = v.event_key), \
                                 (SELECT r.seq FROM retired_keys AS r \
                                  WHERE r.user_id = v.user_id AND r.event_key = v.event_key)) \
                     FROM UNNEST($1::bytea[], $2::bytea[]) AS v(user_id, event_key)",
                )
                .bind(&key_users[..])
                .bind(&key_keys[..])
                .fetch_all(&mut *tx)
                .await?;
                for (u, key, seq) in key_heads {
                    if let Some(seq) = seq {
                        snapshot
                            .key_heads
                            .insert((UserId(key32(&u, "events.user_id")?), key), from_db(seq));
                    }
                }
            }

            let plan = append::plan(batch, snapshot);

            if !plan.rows.is_empty() {
                let n = plan.rows.len();
                let (mut user_col, mut seq_col, mut id_col, mut device_col) = (
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                );
                let (mut ts_col, mut payload_col, mut key_col, mut ttl_col, mut expires_col) = (
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                );
                for row in &plan.rows {
                    let e = row.event;
                    user_col.push(&e.user.0[..]);
                    seq_col.push(to_db(row.seq));
                    id_col.push(&e.id.as_bytes()[..]);
                    device_col.push(&e.device.0[..]);
                    ts_col.push(e.ts);
                    payload_col.push(&e.payload[..]);
                    key_col.push(e.key.as_deref());
                    ttl_col.push(e.ttl.map(to_db));
                    expires_col.push(row.expires_at);
                }
                sqlx::query(
                    "INSERT INTO events \
                     (user_id, seq, event_id, device_id, ts, payload, event_key, ttl, expires_at) \
                     SELECT * FROM UNNEST($1::bytea[], $2::int8[], $3::bytea[], $4::bytea[], \
                                          $5::int8[], $6::bytea[], $7::bytea[], $8::int8[], $9::int8[])",
                )
                .bind(&user_col[..])
                .bind(&seq_col[..])
                .bind(&id_col[..])
                .bind(&device_col[..])
                .bind(&ts_col[..])
                .bind(&payload_col[..])
                .bind(&key_col[..])
                .bind(&ttl_col[..])
                .bind(&expires_col[..])
                .execute(&mut *tx)
                .await?;

                // `users.head` stays equal to the head on PostgreSQL (see
                // `user_head!`): the locked row is what the next appender reads, and
                // under READ COMMITTED a row it waited to lock is re-read at its newest
                // version, where a subquery over the log would still see this
                // statement's snapshot, without the events committed meanwhile.
                let head_users: Vec<&[u8]> = plan.heads.iter().map(|(u, _)| &u.0[..]).collect();
                let head_values: Vec<i64> = plan.heads.iter().map(|(_, h)| to_db(*h)).collect();
                sqlx::query(
                    "UPDATE users AS u SET head = v.head \
                     FROM UNNEST($1::bytea[], $2::int8[]) AS v(user_id, head) \
                     WHERE u.user_id = v.user_id",
                )
                .bind(&head_users[..])
                .bind(&head_values[..])
                .execute(&mut *tx)
                .await?;
            }

            // A commit error means the outcome is unknown to us: report it, never ack.
            tx.commit().await?;
            Ok(plan.outcomes)
        }
    }
}

super::shared::devices! {
    // The rest of the trait is SQL both backends share (`super::shared`).
    impl Devices for PgStore {
        reader: pool;

        async fn register_device(
            &self,
            user: &UserId,
            device: &DeviceId,
            cert: &DeviceCert,
            now: UnixMs,
        ) -> Result<DeviceRecord, StoreError> {
            let mut tx = self.pool.begin().await?;
            sqlx::query("INSERT INTO users (user_id, created_at) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING")
                .bind(&user.0[..])
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let row: DeviceRow = sqlx::query_as(
                "INSERT INTO devices (user_id, device_id, cert_issued_at, cert_expires_at, cert_sig, \
                                      created_at, last_seen) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) \
                 ON CONFLICT (user_id, device_id) \
                     DO UPDATE SET last_seen = GREATEST(devices.last_seen, EXCLUDED.last_seen) \
                 RETURNING created_at, last_seen, cursor_seq, revoked_at",
            )
            .bind(&user.0[..])
            .bind(&device.0[..])
            .bind(to_db(cert.issued_at))
            .bind(to_db(cert.expires_at))
            .bind(&cert.sig[..])
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let mut row = row;
            let revoked: Vec<(Vec<u8>, Vec<u8>, Option<i64>)> =
                sqlx::query_as(super::shared::APPLY_KEPT_REVOCATIONS)
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await?;
            for (u, d, revoked_at) in revoked {
                if u == user.0 && d == device.0 {
                    row.3 = revoked_at;
                }
            }
            tx.commit().await?;
            Ok(device_record(*user, *device, row))
        }

        async fn set_cursor(
            &self,
            user: &UserId,
            device: &DeviceId,
            seq: u64,
        ) -> Result<(), StoreError> {
            let done = sqlx::query(concat!(
                "UPDATE devices SET cursor_seq = GREATEST(cursor_seq, \
                     LEAST($3, COALESCE((SELECT ",
                super::user_head!("u"),
                " FROM users AS u WHERE u.user_id = $1), 0))) \
                 WHERE user_id = $1 AND device_id = $2"
            ))
            .bind(&user.0[..])
            .bind(&device.0[..])
            .bind(to_db(seq))
            .execute(&self.pool)
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
            // Sorted, so two instances flushing overlapping devices lock rows in the
            // same order.
            let mut seen = seen.to_vec();
            seen.sort_unstable_by_key(|&(u, d, _)| (u, d));
            let users: Vec<&[u8]> = seen.iter().map(|(u, _, _)| &u.0[..]).collect();
            let devices: Vec<&[u8]> = seen.iter().map(|(_, d, _)| &d.0[..]).collect();
            let times: Vec<i64> = seen.iter().map(|(_, _, t)| *t).collect();
            sqlx::query(
                "UPDATE devices AS d SET last_seen = GREATEST(d.last_seen, v.at) \
                 FROM UNNEST($1::bytea[], $2::bytea[], $3::int8[]) AS v(user_id, device_id, at) \
                 WHERE d.user_id = v.user_id AND d.device_id = v.device_id",
            )
            .bind(&users[..])
            .bind(&devices[..])
            .bind(&times[..])
            .execute(&self.pool)
            .await?;
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
            let mut tx = self.pool.begin().await?;
            let known: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2")
                    .bind(&user.0[..])
                    .bind(&device.0[..])
                    .fetch_optional(&mut *tx)
                    .await?;
            if known.is_none() {
                return Ok(RevokeOutcome::UnknownDevice);
            }
            // A concurrent use of the same revocation waits on the primary key here and
            // then sees the conflict: exactly one caller gets `Revoked`.
            let first_use = sqlx::query(
                "INSERT INTO used_revocations (user_id, device_id, ts, sig, used_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
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
                return Ok(RevokeOutcome::Replayed);
            }
            sqlx::query(
                "UPDATE devices SET revoked_at = COALESCE(revoked_at, $3) \
                 WHERE user_id = $1 AND device_id = $2",
            )
            .bind(&user.0[..])
            .bind(&device.0[..])
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(RevokeOutcome::Revoked)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_connections_time_out_statements_and_plan_with_real_parameters() {
        let opts = pool_options("postgres://ferry@localhost/ferry").unwrap();
        let options = opts.get_options().unwrap();
        assert!(options.contains("statement_timeout=30000ms"), "{options}");
        assert!(
            options.contains("plan_cache_mode=force_custom_plan"),
            "{options}"
        );
    }
}
