//! SQL that is the same on both backends, written once.
//!
//! Both sqlx drivers take `$N` placeholders (SQLite numbers `$N` parameters as
//! PostgreSQL does), so a statement that differs between the dialects only in its
//! placeholders is written here, and [`auth_and_admin_sql!`] instantiates it for
//! each backend: the [`AuthStore`] and [`AdminStore`] implementations. What really
//! differs between the dialects is a macro argument (a row lock's `FOR UPDATE`)
//! or stays in the backend (the event log, device registration, `database_bytes`).
//! `tests/store_conformance.rs` runs the same story on both backends.
//!
//! A backend that invokes the macro names its `reader` and `writer` pools (the same
//! pool on PostgreSQL) and provides an inherent `write_tx()` that begins a write
//! transaction and derefs to the backend's connection.
//!
//! [`AuthStore`]: super::AuthStore
//! [`AdminStore`]: super::AdminStore

use super::{StoreError, UserId, UserSummary, from_db, key32};

/// `user_id, created_at, head, pruned_through, devices, revoked devices, last_seen`.
pub(super) type SummaryRow = (Vec<u8>, i64, i64, i64, i64, i64, Option<i64>);

/// The admin API's view of users; a `WHERE` clause follows.
pub(super) const SUMMARY_SELECT: &str = concat!(
    "SELECT u.user_id, u.created_at, ",
    super::user_head!("u"),
    ", u.pruned_through, \
        (SELECT count(*) FROM devices AS d WHERE d.user_id = u.user_id), \
        (SELECT count(*) FROM devices AS d WHERE d.user_id = u.user_id AND d.revoked_at IS NOT NULL), \
        (SELECT max(d.last_seen) FROM devices AS d WHERE d.user_id = u.user_id) \
     FROM users AS u "
);

/// Registration: a device registered again after its user was erased is revoked
/// again if it was revoked before the erasure (and its certificate may still be
/// valid at `$1`, now). Returns `user_id, device_id, revoked_at` of each device it
/// revoked. Kept revocations are few (revoked devices of erased users), so driving
/// the update from them is cheap.
pub(super) const APPLY_KEPT_REVOCATIONS: &str = "UPDATE devices SET revoked_at = k.revoked_at \
     FROM kept_revocations AS k \
     WHERE devices.user_id = k.user_id AND devices.device_id = k.device_id \
       AND devices.revoked_at IS NULL AND (k.until IS NULL OR k.until > $1) \
     RETURNING devices.user_id, devices.device_id, devices.revoked_at";

pub(super) fn summary(row: SummaryRow) -> Result<UserSummary, StoreError> {
    let (user, created_at, head, pruned, devices, revoked, last_seen) = row;
    Ok(UserSummary {
        user: UserId(key32(&user, "users.user_id")?),
        created_at,
        head: from_db(head),
        pruned_through: from_db(pruned),
        devices: from_db(devices),
        revoked_devices: from_db(revoked),
        last_seen,
    })
}

/// Implements [`super::AuthStore`] and [`super::AdminStore`] for a backend (see
/// the module docs).
///
/// - `for_update`: appended to the `SELECT` that reads a presented refresh token,
///   so two instances presenting the same token at once cannot both spend it
///   (PostgreSQL `" FOR UPDATE"`; SQLite's `BEGIN IMMEDIATE` already serialises).
/// - `lock_user`: a statement run first when erasing a user, so an append of the
///   user waits for the erase instead of interleaving with it (`None` where the
///   write transaction already excludes appends).
macro_rules! auth_and_admin_sql {
    (
        store: $store:ty,
        db: $db:ty,
        conn: $conn:ty,
        reader: $reader:ident,
        writer: $writer:ident,
        for_update: $for_update:literal,
        lock_user: $lock_user:expr $(,)?
    ) => {
        /// Revokes every token of a refresh family and denylists the access tokens
        /// issued with them (those not expired yet).
        async fn revoke_family(
            conn: &mut $conn,
            family: &[u8],
            now: $crate::model::UnixMs,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(
                "INSERT INTO revoked_tokens (jti, expires_at) \
                 SELECT access_jti, access_expires_at FROM refresh_tokens \
                 WHERE family = $1 AND access_jti IS NOT NULL AND access_expires_at > $2 \
                 ON CONFLICT (jti) DO NOTHING",
            )
            .bind(family)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE family = $1",
            )
            .bind(family)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        #[async_trait::async_trait]
        impl $crate::store::AuthStore for $store {
            async fn put_challenge(
                &self,
                c: &$crate::model::AuthChallenge,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO auth_challenges (challenge, user_id, device_id, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&c.challenge[..])
                .bind(&c.user.0[..])
                .bind(&c.device.0[..])
                .bind(c.expires_at)
                .execute(&self.$writer)
                .await?;
                Ok(())
            }

            async fn take_challenge(
                &self,
                challenge: &[u8; 32],
                user: &$crate::model::UserId,
                device: &$crate::model::DeviceId,
                now: $crate::model::UnixMs,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query(
                    "DELETE FROM auth_challenges \
                     WHERE challenge = $1 AND user_id = $2 AND device_id = $3 AND expires_at > $4",
                )
                .bind(&challenge[..])
                .bind(&user.0[..])
                .bind(&device.0[..])
                .bind(now)
                .execute(&self.$writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn put_refresh_token(
                &self,
                t: &$crate::model::NewRefreshToken,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, family, user_id, device_id, \
                                                 created_at, expires_at, access_jti, \
                                                 access_expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&t.token_hash[..])
                .bind(&t.family[..])
                .bind(&t.user.0[..])
                .bind(&t.device.0[..])
                .bind(t.created_at)
                .bind(t.expires_at)
                .bind(&t.access_jti)
                .bind(t.access_expires_at)
                .execute(&self.$writer)
                .await?;
                Ok(())
            }

            async fn rotate_refresh_token(
                &self,
                presented: &[u8; 32],
                next: &$crate::model::RefreshSuccessor,
                now: $crate::model::UnixMs,
            ) -> Result<$crate::model::RefreshRotation, $crate::store::StoreError> {
                use $crate::model::{DeviceId, RefreshRotation, UserId};
                let mut tx = self.write_tx().await?;
                type Row = (Vec<u8>, Vec<u8>, Vec<u8>, i64, Option<i64>, Option<i64>);
                let row: Option<Row> = sqlx::query_as(concat!(
                    "SELECT family, user_id, device_id, expires_at, spent_at, revoked_at \
                     FROM refresh_tokens WHERE token_hash = $1",
                    $for_update
                ))
                .bind(&presented[..])
                .fetch_optional(&mut *tx)
                .await?;
                let Some((family, user, device, expires_at, spent_at, revoked_at)) = row else {
                    tx.rollback().await?;
                    return Ok(RefreshRotation::Invalid);
                };
                if spent_at.is_some() || revoked_at.is_some() {
                    revoke_family(&mut tx, &family, now).await?;
                    tx.commit().await?;
                    return Ok(if spent_at.is_some() {
                        RefreshRotation::Reused
                    } else {
                        RefreshRotation::Invalid
                    });
                }
                if expires_at <= now {
                    tx.rollback().await?;
                    return Ok(RefreshRotation::Invalid);
                }
                let device_revoked: Option<Option<i64>> = sqlx::query_scalar(
                    "SELECT revoked_at FROM devices WHERE user_id = $1 AND device_id = $2",
                )
                .bind(&user[..])
                .bind(&device[..])
                .fetch_optional(&mut *tx)
                .await?;
                if !matches!(device_revoked, Some(None)) {
                    revoke_family(&mut tx, &family, now).await?;
                    tx.commit().await?;
                    return Ok(RefreshRotation::Invalid);
                }
                sqlx::query("UPDATE refresh_tokens SET spent_at = $2 WHERE token_hash = $1")
                    .bind(&presented[..])
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, family, user_id, device_id, \
                                                 created_at, expires_at, access_jti, \
                                                 access_expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&next.token_hash[..])
                .bind(&family[..])
                .bind(&user[..])
                .bind(&device[..])
                .bind(next.created_at)
                .bind(next.expires_at)
                .bind(&next.access_jti)
                .bind(next.access_expires_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(RefreshRotation::Rotated {
                    user: UserId($crate::store::key32(&user, "refresh_tokens.user_id")?),
                    device: DeviceId($crate::store::key32(&device, "refresh_tokens.device_id")?),
                })
            }

            async fn revoke_access_token(
                &self,
                jti: &str,
                expires_at: $crate::model::UnixMs,
                now: $crate::model::UnixMs,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.write_tx().await?;
                sqlx::query(
                    "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
                     ON CONFLICT (jti) DO NOTHING",
                )
                .bind(jti)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
                let families: Vec<Vec<u8>> = sqlx::query_scalar(
                    "SELECT DISTINCT family FROM refresh_tokens WHERE access_jti = $1",
                )
                .bind(jti)
                .fetch_all(&mut *tx)
                .await?;
                for family in families {
                    revoke_family(&mut tx, &family, now).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn access_status(
                &self,
                user: &$crate::model::UserId,
                device: &$crate::model::DeviceId,
                jti: &str,
            ) -> Result<$crate::model::AccessStatus, $crate::store::StoreError> {
                use $crate::model::AccessStatus;
                // Counts, not booleans: `count(*)` is a BIGINT in both dialects.
                let (known, revoked, denied): (i64, i64, i64) = sqlx::query_as(
                    "SELECT (SELECT count(*) FROM devices \
                             WHERE user_id = $1 AND device_id = $2), \
                            (SELECT count(*) FROM devices \
                             WHERE user_id = $1 AND device_id = $2 AND revoked_at IS NOT NULL), \
                            (SELECT count(*) FROM revoked_tokens WHERE jti = $3)",
                )
                .bind(&user.0[..])
                .bind(&device.0[..])
                .bind(jti)
                .fetch_one(&self.$reader)
                .await?;
                Ok(if known == 0 {
                    AccessStatus::DeviceUnknown
                } else if revoked != 0 {
                    AccessStatus::DeviceRevoked
                } else if denied != 0 {
                    AccessStatus::TokenRevoked
                } else {
                    AccessStatus::Active
                })
            }

            async fn purge_expired_auth(
                &self,
                now: $crate::model::UnixMs,
                limit: u32,
            ) -> Result<u64, $crate::store::StoreError> {
                let mut removed = 0;
                for sql in [
                    "DELETE FROM auth_challenges WHERE challenge IN \
                       (SELECT challenge FROM auth_challenges WHERE expires_at <= $1 LIMIT $2)",
                    "DELETE FROM revoked_tokens WHERE jti IN \
                       (SELECT jti FROM revoked_tokens WHERE expires_at <= $1 LIMIT $2)",
                    "DELETE FROM refresh_tokens WHERE token_hash IN \
                       (SELECT token_hash FROM refresh_tokens WHERE expires_at <= $1 LIMIT $2)",
                    // A kept revocation ends when the certificate it blocks expires.
                    "DELETE FROM kept_revocations WHERE (user_id, device_id) IN \
                       (SELECT user_id, device_id FROM kept_revocations \
                        WHERE until IS NOT NULL AND until <= $1 LIMIT $2)",
                ] {
                    let left = u64::from(limit).saturating_sub(removed);
                    if left == 0 {
                        break;
                    }
                    removed += sqlx::query(sql)
                        .bind(now)
                        .bind($crate::store::to_db(left))
                        .execute(&self.$writer)
                        .await?
                        .rows_affected();
                }
                Ok(removed)
            }

            async fn count_expired_auth(
                &self,
                now: $crate::model::UnixMs,
            ) -> Result<u64, $crate::store::StoreError> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT (SELECT count(*) FROM auth_challenges WHERE expires_at <= $1) \
                          + (SELECT count(*) FROM revoked_tokens WHERE expires_at <= $1) \
                          + (SELECT count(*) FROM refresh_tokens WHERE expires_at <= $1) \
                          + (SELECT count(*) FROM kept_revocations \
                             WHERE until IS NOT NULL AND until <= $1)",
                )
                .bind(now)
                .fetch_one(&self.$reader)
                .await?;
                Ok($crate::store::from_db(n))
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::AdminStore for $store {
            async fn stats(&self) -> Result<$crate::model::StoreStats, $crate::store::StoreError> {
                use $crate::store::{Store as _, from_db};
                let (users, devices, active, events): (i64, i64, i64, i64) = sqlx::query_as(concat!(
                    "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM devices), \
                            (SELECT count(*) FROM devices WHERE revoked_at IS NULL), \
                            (SELECT CAST(COALESCE(sum(", $crate::store::user_head!("u"),
                    " - u.pruned_through), 0) AS BIGINT) FROM users AS u)",
                ))
                .fetch_one(&self.$reader)
                .await?;
                Ok($crate::model::StoreStats {
                    users: from_db(users),
                    devices: from_db(devices),
                    active_devices: from_db(active),
                    events: from_db(events),
                    database_bytes: self.database_bytes().await?,
                })
            }

            async fn users_page(
                &self,
                after: Option<&$crate::model::UserId>,
                limit: u32,
            ) -> Result<Vec<$crate::model::UserSummary>, $crate::store::StoreError> {
                use $crate::store::shared::{SUMMARY_SELECT, SummaryRow, summary};
                let mut q = sqlx::QueryBuilder::<$db>::new(SUMMARY_SELECT);
                q.push("WHERE u.user_id > ")
                    .push_bind(after.map_or_else(Vec::new, |u| u.0.to_vec()))
                    .push(" ORDER BY u.user_id LIMIT ")
                    .push_bind(i64::from(limit));
                let rows: Vec<SummaryRow> = q.build_query_as().fetch_all(&self.$reader).await?;
                rows.into_iter().map(summary).collect()
            }

            async fn user_summary(
                &self,
                user: &$crate::model::UserId,
            ) -> Result<Option<$crate::model::UserSummary>, $crate::store::StoreError> {
                use $crate::store::shared::{SUMMARY_SELECT, SummaryRow, summary};
                let mut q = sqlx::QueryBuilder::<$db>::new(SUMMARY_SELECT);
                q.push("WHERE u.user_id = ").push_bind(user.0.to_vec());
                let row: Option<SummaryRow> =
                    q.build_query_as().fetch_optional(&self.$reader).await?;
                row.map(summary).transpose()
            }

            async fn force_revoke_device(
                &self,
                user: &$crate::model::UserId,
                device: &$crate::model::DeviceId,
                now: $crate::model::UnixMs,
            ) -> Result<$crate::model::RevokeOutcome, $crate::store::StoreError> {
                let done = sqlx::query(
                    "UPDATE devices SET revoked_at = COALESCE(revoked_at, $3) \
                     WHERE user_id = $1 AND device_id = $2",
                )
                .bind(&user.0[..])
                .bind(&device.0[..])
                .bind(now)
                .execute(&self.$writer)
                .await?;
                Ok(if done.rows_affected() == 0 {
                    $crate::model::RevokeOutcome::UnknownDevice
                } else {
                    $crate::model::RevokeOutcome::Revoked
                })
            }

            async fn erase_user(
                &self,
                user: &$crate::model::UserId,
            ) -> Result<Option<$crate::model::ErasedCounts>, $crate::store::StoreError> {
                use $crate::model::ErasedCounts;
                let mut tx = self.write_tx().await?;
                let lock_user: Option<&'static str> = $lock_user;
                if let Some(sql) = lock_user {
                    sqlx::query(sql)
                        .bind(&user.0[..])
                        .fetch_optional(&mut *tx)
                        .await?;
                }
                let mut run = async |sql: &'static str| -> Result<u64, $crate::store::StoreError> {
                    Ok(sqlx::query(sql)
                        .bind(&user.0[..])
                        .execute(&mut *tx)
                        .await?
                        .rows_affected())
                };
                // Revocations outlive the erasure: a revoked (stolen) device must not
                // register again while its certificate may be valid.
                run("INSERT INTO kept_revocations (user_id, device_id, revoked_at, until) \
                     SELECT user_id, device_id, revoked_at, \
                            CASE WHEN cert_expires_at = 0 THEN NULL \
                                 ELSE cert_expires_at * 1000 END \
                     FROM devices WHERE user_id = $1 AND revoked_at IS NOT NULL \
                     ON CONFLICT (user_id, device_id) DO NOTHING")
                .await?;
                let counts = ErasedCounts {
                    events: run("DELETE FROM events WHERE user_id = $1").await?,
                    refresh_tokens: run("DELETE FROM refresh_tokens WHERE user_id = $1").await?,
                    challenges: run("DELETE FROM auth_challenges WHERE user_id = $1").await?,
                    revocations: run("DELETE FROM used_revocations WHERE user_id = $1").await?,
                    devices: run("DELETE FROM devices WHERE user_id = $1").await?,
                };
                run("DELETE FROM retired_keys WHERE user_id = $1").await?;
                let users = run("DELETE FROM users WHERE user_id = $1").await?;
                if users == 0 && counts == ErasedCounts::default() {
                    tx.rollback().await?;
                    return Ok(None);
                }
                tx.commit().await?;
                Ok(Some(counts))
            }
        }
    };
}

pub(super) use auth_and_admin_sql;

/// Implements [`super::EventLog`] for a backend: `head`, `events_after` and
/// `prune_before` (through the backend's `prune_in`, from
/// `super::retention::retention_sql!`), whose SQL is the same on both backends,
/// come from here; the backend writes `append` in its dialect inside the invocation.
macro_rules! event_log {
    (impl EventLog for $store:ty {
        reader: $reader:ident;
        $($dialect:tt)*
    }) => {
        #[async_trait::async_trait]
        impl $crate::store::EventLog for $store {
            async fn head(
                &self,
                user: &$crate::model::UserId,
            ) -> Result<u64, $crate::store::StoreError> {
                let head: Option<i64> = sqlx::query_scalar(concat!(
                    "SELECT ",
                    $crate::store::user_head!("u"),
                    " FROM users AS u WHERE u.user_id = $1"
                ))
                .bind(&user.0[..])
                        .fetch_optional(&self.$reader)
                        .await?;
                Ok(head.map_or(0, $crate::store::from_db))
            }

            async fn events_after(
                &self,
                user: &$crate::model::UserId,
                after: u64,
                limit: u32,
                now: $crate::model::UnixMs,
            ) -> Result<$crate::model::EventPage, $crate::store::StoreError> {
                // Events first, counters second: the head read afterwards is at least
                // the seq of every event returned (both commit in one transaction).
                let rows: Vec<$crate::store::EventRow> = sqlx::query_as(
                    "SELECT seq, event_id, device_id, ts, payload, event_key, ttl FROM events \
                     WHERE user_id = $1 AND seq > $2 AND (expires_at IS NULL OR expires_at > $3) \
                     ORDER BY seq LIMIT $4",
                )
                .bind(&user.0[..])
                .bind($crate::store::to_db(after))
                .bind(now)
                .bind(i64::from(limit) + 1)
                .fetch_all(&self.$reader)
                .await?;
                let counters: Option<(i64, i64)> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::user_head!("u"),
                    ", u.pruned_through FROM users AS u WHERE u.user_id = $1"
                ))
                .bind(&user.0[..])
                        .fetch_optional(&self.$reader)
                        .await?;
                $crate::store::page(rows, limit, after, counters)
            }

            async fn prune_before(
                &self,
                user: &$crate::model::UserId,
                before: u64,
                limit: u32,
            ) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.write_tx().await?;
                let n = Self::prune_in(&mut tx, user, before, limit).await?;
                tx.commit().await?;
                Ok(n)
            }

            $($dialect)*
        }
    };
}

/// Implements [`super::Devices`] for a backend: the reads (`device`,
/// `device_and_head`, `devices`), whose SQL is the same on both backends, come from
/// here; the backend writes the rest (registration, cursors, `last_seen`,
/// revocation) in its dialect inside the invocation.
macro_rules! devices {
    (impl Devices for $store:ty { reader: $reader:ident; $($dialect:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::store::Devices for $store {
            async fn device(
                &self,
                user: &$crate::model::UserId,
                device: &$crate::model::DeviceId,
            ) -> Result<Option<$crate::model::DeviceRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::DeviceRow> = sqlx::query_as(
                    "SELECT created_at, last_seen, cursor_seq, revoked_at FROM devices \
                     WHERE user_id = $1 AND device_id = $2",
                )
                .bind(&user.0[..])
                .bind(&device.0[..])
                .fetch_optional(&self.$reader)
                .await?;
                Ok(row.map(|r| $crate::store::device_record(*user, *device, r)))
            }

            async fn device_and_head(
                &self,
                user: &$crate::model::UserId,
                device: &$crate::model::DeviceId,
            ) -> Result<Option<($crate::model::DeviceRecord, u64)>, $crate::store::StoreError>
            {
                // Every device row has its users row (registration writes both in one
                // transaction, and a user goes with its devices).
                let row: Option<$crate::store::DeviceHeadRow> = sqlx::query_as(concat!(
                    "SELECT d.created_at, d.last_seen, d.cursor_seq, d.revoked_at, ",
                    $crate::store::user_head!("u"),
                    " FROM devices AS d JOIN users AS u ON u.user_id = d.user_id \
                     WHERE d.user_id = $1 AND d.device_id = $2"
                ))
                .bind(&user.0[..])
                .bind(&device.0[..])
                .fetch_optional(&self.$reader)
                .await?;
                Ok(row.map(|r| $crate::store::device_and_head(*user, *device, r)))
            }

            async fn devices(
                &self,
                user: &$crate::model::UserId,
            ) -> Result<Vec<$crate::model::DeviceRecord>, $crate::store::StoreError> {
                use $crate::model::DeviceId;
                let rows: Vec<(Vec<u8>, i64, i64, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT device_id, created_at, last_seen, cursor_seq, revoked_at \
                     FROM devices WHERE user_id = $1 ORDER BY created_at, device_id",
                )
                .bind(&user.0[..])
                .fetch_all(&self.$reader)
                .await?;
                rows.into_iter()
                    .map(|(d, c, l, cur, r)| {
                        let device = DeviceId($crate::store::key32(&d, "devices.device_id")?);
                        Ok($crate::store::device_record(*user, device, (c, l, cur, r)))
                    })
                    .collect()
            }

            $($dialect)*
        }
    };
}

pub(super) use {devices, event_log};
