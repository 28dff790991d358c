//! The retention SQL: [`super::RetentionStore`] for both backends, written once
//! with `$N` placeholders like `super::shared`, and the lock that keeps runs from
//! overlapping ([`RetentionLock`]).
//!
//! The two statements that pick rows to delete by a row identifier (`rowid` on
//! SQLite, `ctid` on PostgreSQL) are macro arguments; everything else is shared.

use sqlx::pool::PoolConnection;

/// Key of the PostgreSQL session advisory lock held while a retention run goes on
/// ("ferry-rt" in ASCII; the migration lock is "ferry-mg").
pub(super) const PG_RETENTION_LOCK: i64 = 0x6665_7272_792d_7274;

/// The retention lock, held while this value lives (see
/// [`super::RetentionStore::retention_lock`]). [`RetentionLock::release`] gives it
/// back; dropping it without that also ends it (PostgreSQL: its connection is
/// closed, which ends the session and its advisory lock).
#[derive(Debug)]
pub struct RetentionLock {
    held: Held,
}

#[derive(Debug)]
enum Held {
    /// A lock of this process (SQLite).
    Local(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>),
    /// The advisory lock of this connection's session (PostgreSQL).
    Postgres(Option<PoolConnection<sqlx::Postgres>>),
}

impl RetentionLock {
    pub(super) fn local(guard: tokio::sync::OwnedMutexGuard<()>) -> Self {
        Self {
            held: Held::Local(guard),
        }
    }

    pub(super) fn postgres(conn: PoolConnection<sqlx::Postgres>) -> Self {
        Self {
            held: Held::Postgres(Some(conn)),
        }
    }

    /// Releases the lock (PostgreSQL: unlocks, and the connection goes back to the
    /// pool; if the unlock fails the connection is closed instead).
    pub async fn release(mut self) {
        if let Held::Postgres(conn) = &mut self.held
            && let Some(mut conn) = conn.take()
        {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(PG_RETENTION_LOCK)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                conn.close_on_drop();
            }
        }
    }
}

impl Drop for RetentionLock {
    fn drop(&mut self) {
        if let Held::Postgres(Some(conn)) = &mut self.held {
            conn.close_on_drop();
        }
    }
}

/// Upserts the seqs of deleted events into `retired_keys` where each was the newest
/// of its key (no newer event of the key is left); a `VALUES` list of
/// `(user, key, seq)` follows, then [`RETIRE_KEYS_END`].
pub(super) const RETIRE_KEYS: &str = "INSERT INTO retired_keys (user_id, event_key, seq) \
     SELECT v.column1, v.column2, v.column3 FROM (";

/// The end of [`RETIRE_KEYS`].
pub(super) const RETIRE_KEYS_END: &str = ") AS v WHERE NOT EXISTS \
       (SELECT 1 FROM events AS e \
        WHERE e.user_id = v.column1 AND e.event_key = v.column2 AND e.seq > v.column3) \
     ON CONFLICT (user_id, event_key) DO UPDATE SET seq = excluded.seq \
       WHERE excluded.seq > retired_keys.seq";

/// Raises `users.head` to the newest seq deleted of each user, where it is lower; a
/// `VALUES` list of `(user, seq)` follows, then [`RAISE_HEADS_END`].
pub(super) const RAISE_HEADS: &str = "UPDATE users SET head = v.column2 FROM (";

/// The end of [`RAISE_HEADS`].
pub(super) const RAISE_HEADS_END: &str =
    ") AS v WHERE users.user_id = v.column1 AND users.head < v.column2";

/// Before a prefix of a user's log (`$1`, every `seq <= $2`) is deleted: retires
/// each key whose newest event is in it.
pub(super) const RETIRE_PREFIX_KEYS: &str = "INSERT INTO retired_keys (user_id, event_key, seq) \
     SELECT e.user_id, e.event_key, max(e.seq) FROM events AS e \
     WHERE e.user_id = $1 AND e.seq <= $2 AND e.event_key IS NOT NULL \
       AND NOT EXISTS (SELECT 1 FROM events AS n \
                       WHERE n.user_id = e.user_id AND n.event_key = e.event_key AND n.seq > $2) \
     GROUP BY e.user_id, e.event_key \
     ON CONFLICT (user_id, event_key) DO UPDATE SET seq = excluded.seq \
       WHERE excluded.seq > retired_keys.seq";

/// The condition of a superseded keyed event `e` (`$1`: the cutoff).
macro_rules! superseded {
    () => {
        "e.event_key IS NOT NULL AND EXISTS (SELECT 1 FROM events AS n \
         WHERE n.user_id = e.user_id AND n.event_key = e.event_key AND n.seq > e.seq \
           AND n.ts <= $1)"
    };
}
pub(super) use superseded;

/// Implements [`super::RetentionStore`] for a backend that has an inherent
/// `write_tx()` (as for `super::shared`) and `take_retention_lock()`, and the
/// deletions as inherent functions on a connection inside a write transaction
/// (`expired_in`, `superseded_in`, `prune_in`, `chore_in`), so a backend can also
/// run them inside a transaction of its own (SQLite: its appends').
///
/// - `conn`: the backend's connection type;
/// - `delete_expired`: deletes up to `$2` events with `expires_at <= $1`, returning
///   `user_id, seq, event_key` of each;
/// - `delete_superseded`: deletes up to `$2` events `e` meeting [`superseded!`];
/// - `lock_head`: appended to the `SELECT` that reads the user's head when pruning,
///   so an append of the user waits for the prune (PostgreSQL
///   `" FOR NO KEY UPDATE"`; empty where the write transaction already excludes
///   appends).
macro_rules! retention_sql {
    (
        store: $store:ty,
        db: $db:ty,
        conn: $conn:ty,
        reader: $reader:ident,
        writer: $writer:ident,
        delete_expired: $delete_expired:expr,
        delete_superseded: $delete_superseded:expr,
        lock_head: $lock_head:literal $(,)?
    ) => {
        impl $store {
            /// [`RetentionStore::delete_expired`] inside the caller's transaction.
            ///
            /// [`RetentionStore::delete_expired`]: $crate::store::RetentionStore::delete_expired
            async fn expired_in(
                conn: &mut $conn,
                now: $crate::model::UnixMs,
                limit: u32,
            ) -> Result<u64, $crate::store::StoreError> {
                let rows: Vec<(Vec<u8>, i64, Option<Vec<u8>>)> = sqlx::query_as($delete_expired)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *conn)
                    .await?;
                // The head of each user stays where it was: `users.head` is raised to
                // the newest deleted seq (the user's newest event may be among them).
                let mut newest: std::collections::HashMap<&[u8], i64> =
                    std::collections::HashMap::new();
                for (user, seq, _) in &rows {
                    let s = newest.entry(&user[..]).or_insert(*seq);
                    *s = (*s).max(*seq);
                }
                let newest: Vec<_> = newest.into_iter().collect();
                for chunk in newest.chunks(10_000) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        $crate::store::retention::RAISE_HEADS,
                    );
                    q.push_values(chunk, |mut b, (user, seq)| {
                        b.push_bind(*user).push_bind(*seq);
                    });
                    q.push($crate::store::retention::RAISE_HEADS_END);
                    q.build().execute(&mut *conn).await?;
                }
                // The newest deleted seq of each key, then retired if nothing newer is
                // left (after the delete, in the same transaction): one statement.
                let mut keys: std::collections::HashMap<(&[u8], &[u8]), i64> =
                    std::collections::HashMap::new();
                for (user, seq, key) in &rows {
                    if let Some(key) = key {
                        let s = keys.entry((&user[..], &key[..])).or_insert(*seq);
                        *s = (*s).max(*seq);
                    }
                }
                // At most `limit` rows (100000), three parameters each.
                let keys: Vec<_> = keys.into_iter().collect();
                for chunk in keys.chunks(10_000) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        $crate::store::retention::RETIRE_KEYS,
                    );
                    q.push_values(chunk, |mut b, ((user, key), seq)| {
                        b.push_bind(*user).push_bind(*key).push_bind(*seq);
                    });
                    q.push($crate::store::retention::RETIRE_KEYS_END);
                    q.build().execute(&mut *conn).await?;
                }
                Ok(rows.len() as u64)
            }

            /// [`RetentionStore::delete_superseded`] inside the caller's transaction.
            ///
            /// [`RetentionStore::delete_superseded`]: $crate::store::RetentionStore::delete_superseded
            async fn superseded_in(
                conn: &mut $conn,
                cutoff: $crate::model::UnixMs,
                limit: u32,
            ) -> Result<u64, $crate::store::StoreError> {
                let done = sqlx::query($delete_superseded)
                    .bind(cutoff)
                    .bind(i64::from(limit))
                    .execute(&mut *conn)
                    .await?;
                Ok(done.rows_affected())
            }

            /// [`EventLog::prune_before`] inside the caller's transaction.
            ///
            /// [`EventLog::prune_before`]: $crate::store::EventLog::prune_before
            async fn prune_in(
                conn: &mut $conn,
                user: &$crate::model::UserId,
                before: u64,
                limit: u32,
            ) -> Result<u64, $crate::store::StoreError> {
                use $crate::store::{from_db, to_db, watermark};
                let head: Option<i64> = sqlx::query_scalar(concat!(
                    "SELECT ",
                    $crate::store::user_head!("u"),
                    " FROM users AS u WHERE u.user_id = $1",
                    $lock_head
                ))
                .bind(&user.0[..])
                .fetch_optional(&mut *conn)
                .await?;
                let Some(head) = head else {
                    return Ok(0);
                };
                let (upper, count): (Option<i64>, i64) = sqlx::query_as(
                    "SELECT max(seq), count(*) FROM \
                     (SELECT seq FROM events WHERE user_id = $1 AND seq < $2 \
                      ORDER BY seq LIMIT $3) AS p",
                )
                .bind(&user.0[..])
                .bind(to_db(before))
                .bind(i64::from(limit))
                .fetch_one(&mut *conn)
                .await?;
                if let Some(upper) = upper {
                    sqlx::query($crate::store::retention::RETIRE_PREFIX_KEYS)
                        .bind(&user.0[..])
                        .bind(upper)
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("DELETE FROM events WHERE user_id = $1 AND seq <= $2")
                        .bind(&user.0[..])
                        .bind(upper)
                        .execute(&mut *conn)
                        .await?;
                }
                // The head is written down with the watermark: the prefix may have
                // held the user's newest events.
                sqlx::query(
                    "UPDATE users SET pruned_through = \
                       CASE WHEN pruned_through < $2 THEN $2 ELSE pruned_through END, \
                       head = CASE WHEN head < $3 THEN $3 ELSE head END \
                     WHERE user_id = $1",
                )
                .bind(&user.0[..])
                .bind(watermark(head, before, limit, upper, count))
                .bind(head)
                .execute(&mut *conn)
                .await?;
                Ok(from_db(count))
            }

            /// One [`Chore`](crate::model::Chore) inside the caller's transaction
            /// (SQLite's `append_with`; unused on PostgreSQL, whose chores run on
            /// their own).
            #[allow(dead_code)]
            async fn chore_in(
                conn: &mut $conn,
                chore: &$crate::model::Chore,
            ) -> Result<u64, $crate::store::StoreError> {
                use $crate::model::Chore;
                match chore {
                    Chore::DeleteExpired { now, limit } => Self::expired_in(conn, *now, *limit).await,
                    Chore::DeleteSuperseded { cutoff, limit } => {
                        Self::superseded_in(conn, *cutoff, *limit).await
                    }
                    Chore::Prune { user, before, limit } => {
                        Self::prune_in(conn, user, *before, *limit).await
                    }
                }
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::RetentionStore for $store {
            async fn retention_lock(
                &self,
            ) -> Result<Option<$crate::store::RetentionLock>, $crate::store::StoreError> {
                self.take_retention_lock().await
            }

            async fn delete_expired(
                &self,
                now: $crate::model::UnixMs,
                limit: u32,
            ) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.write_tx().await?;
                let n = Self::expired_in(&mut tx, now, limit).await?;
                tx.commit().await?;
                Ok(n)
            }

            async fn count_expired(
                &self,
                now: $crate::model::UnixMs,
            ) -> Result<u64, $crate::store::StoreError> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM events WHERE expires_at IS NOT NULL AND expires_at <= $1",
                )
                .bind(now)
                .fetch_one(&self.$reader)
                .await?;
                Ok($crate::store::from_db(n))
            }

            async fn delete_superseded(
                &self,
                cutoff: $crate::model::UnixMs,
                limit: u32,
            ) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.write_tx().await?;
                let n = Self::superseded_in(&mut tx, cutoff, limit).await?;
                tx.commit().await?;
                Ok(n)
            }

            async fn count_superseded(
                &self,
                cutoff: $crate::model::UnixMs,
            ) -> Result<u64, $crate::store::StoreError> {
                let n: i64 = sqlx::query_scalar(concat!(
                    "SELECT count(*) FROM events AS e WHERE ",
                    $crate::store::retention::superseded!()
                ))
                .bind(cutoff)
                .fetch_one(&self.$reader)
                .await?;
                Ok($crate::store::from_db(n))
            }

            async fn users_with_events_before(
                &self,
                cutoff: $crate::model::UnixMs,
                after: Option<&$crate::model::UserId>,
                limit: u32,
            ) -> Result<Vec<$crate::model::UserId>, $crate::store::StoreError> {
                let rows: Vec<Vec<u8>> = sqlx::query_scalar(
                    "SELECT u.user_id FROM users AS u WHERE u.user_id > $1 \
                       AND (SELECT e.ts FROM events AS e WHERE e.user_id = u.user_id \
                            ORDER BY e.seq LIMIT 1) < $2 \
                     ORDER BY u.user_id LIMIT $3",
                )
                .bind(after.map_or_else(Vec::new, |u| u.0.to_vec()))
                .bind(cutoff)
                .bind(i64::from(limit))
                .fetch_all(&self.$reader)
                .await?;
                rows.iter()
                    .map(|u| Ok($crate::model::UserId($crate::store::key32(u, "users.user_id")?)))
                    .collect()
            }

            async fn users_spanning_more_than(
                &self,
                keep: u64,
                after: Option<&$crate::model::UserId>,
                limit: u32,
            ) -> Result<Vec<$crate::model::UserId>, $crate::store::StoreError> {
                let rows: Vec<Vec<u8>> = sqlx::query_scalar(concat!(
                    "SELECT u.user_id FROM users AS u WHERE u.user_id > $1 AND ",
                    $crate::store::user_head!("u"),
                    " - u.pruned_through > $2 ORDER BY u.user_id LIMIT $3"
                ))
                .bind(after.map_or_else(Vec::new, |u| u.0.to_vec()))
                .bind($crate::store::to_db(keep))
                .bind(i64::from(limit))
                .fetch_all(&self.$reader)
                .await?;
                rows.iter()
                    .map(|u| Ok($crate::model::UserId($crate::store::key32(u, "users.user_id")?)))
                    .collect()
            }

            async fn oldest_events(
                &self,
                user: &$crate::model::UserId,
                after: u64,
                limit: u32,
            ) -> Result<Vec<(u64, $crate::model::UnixMs)>, $crate::store::StoreError> {
                let rows: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT seq, ts FROM events WHERE user_id = $1 AND seq > $2 \
                     ORDER BY seq LIMIT $3",
                )
                .bind(&user.0[..])
                .bind($crate::store::to_db(after))
                .bind(i64::from(limit))
                .fetch_all(&self.$reader)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(seq, ts)| ($crate::store::from_db(seq), ts))
                    .collect())
            }

            async fn nth_newest_seq(
                &self,
                user: &$crate::model::UserId,
                n: u64,
            ) -> Result<Option<u64>, $crate::store::StoreError> {
                let seq: Option<i64> = sqlx::query_scalar(
                    "SELECT seq FROM events WHERE user_id = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2",
                )
                .bind(&user.0[..])
                .bind($crate::store::to_db(n.saturating_sub(1)))
                .fetch_optional(&self.$reader)
                .await?;
                Ok(seq.map($crate::store::from_db))
            }

            async fn count_events_before(
                &self,
                user: &$crate::model::UserId,
                before: u64,
            ) -> Result<u64, $crate::store::StoreError> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM events WHERE user_id = $1 AND seq < $2",
                )
                .bind(&user.0[..])
                .bind($crate::store::to_db(before))
                .fetch_one(&self.$reader)
                .await?;
                Ok($crate::store::from_db(n))
            }

            async fn devices_seen_before(
                &self,
                seen_before: $crate::model::UnixMs,
                after: Option<($crate::model::UserId, $crate::model::DeviceId)>,
                limit: u32,
            ) -> Result<
                Vec<($crate::model::UserId, $crate::model::DeviceId)>,
                $crate::store::StoreError,
            > {
                use $crate::model::{DeviceId, UserId};
                let (au, ad) = after.map_or_else(
                    || (Vec::new(), Vec::new()),
                    |(u, d)| (u.0.to_vec(), d.0.to_vec()),
                );
                let rows: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
                    "SELECT user_id, device_id FROM devices WHERE last_seen < $1 \
                       AND (user_id > $2 OR (user_id = $2 AND device_id > $3)) \
                     ORDER BY user_id, device_id LIMIT $4",
                )
                .bind(seen_before)
                .bind(au)
                .bind(ad)
                .bind(i64::from(limit))
                .fetch_all(&self.$reader)
                .await?;
                rows.iter()
                    .map(|(u, d)| {
                        Ok((
                            UserId($crate::store::key32(u, "devices.user_id")?),
                            DeviceId($crate::store::key32(d, "devices.device_id")?),
                        ))
                    })
                    .collect()
            }

            async fn remove_devices(
                &self,
                devices: &[($crate::model::UserId, $crate::model::DeviceId)],
                seen_before: $crate::model::UnixMs,
                now: $crate::model::UnixMs,
            ) -> Result<u64, $crate::store::StoreError> {
                if devices.is_empty() {
                    return Ok(0);
                }
                // Three statements for all of them, each naming the devices in a
                // `VALUES` list (two parameters each; callers pass a few hundred).
                let listed = |q: &mut sqlx::QueryBuilder<$db>| {
                    q.push("(user_id, device_id) IN (");
                    q.push_values(devices, |mut b, (user, device)| {
                        b.push_bind(user.0.to_vec()).push_bind(device.0.to_vec());
                    });
                    q.push(") AND last_seen < ").push_bind(seen_before);
                };
                let mut tx = self.write_tx().await?;
                // A revoked device is remembered while its certificate may be valid.
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO kept_revocations (user_id, device_id, revoked_at, until) \
                     SELECT user_id, device_id, revoked_at, \
                            CASE WHEN cert_expires_at = 0 THEN NULL \
                                 ELSE cert_expires_at * 1000 END \
                     FROM devices WHERE ",
                );
                listed(&mut q);
                q.push(" AND revoked_at IS NOT NULL AND (cert_expires_at = 0 OR cert_expires_at * 1000 > ")
                    .push_bind(now)
                    .push(") ON CONFLICT (user_id, device_id) DO NOTHING");
                q.build().execute(&mut *tx).await?;
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "DELETE FROM refresh_tokens WHERE (user_id, device_id) IN \
                       (SELECT user_id, device_id FROM devices WHERE ",
                );
                listed(&mut q);
                q.push(")");
                q.build().execute(&mut *tx).await?;
                let mut q = sqlx::QueryBuilder::<$db>::new("DELETE FROM devices WHERE ");
                listed(&mut q);
                let removed = q.build().execute(&mut *tx).await?.rows_affected();
                tx.commit().await?;
                Ok(removed)
            }
        }
    };
}

pub(super) use retention_sql;
