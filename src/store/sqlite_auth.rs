//! SQLite: REST authentication (challenges, refresh-token families, the `jti`
//! denylist) and the administration queries. Inherent methods of [`SqliteStore`]
//! that its `impl Store` delegates to; writes go through the one writer connection
//! with `BEGIN IMMEDIATE`, like every other read-then-write of this backend.

use sqlx::Sqlite;

use super::super::{
    AccessStatus, AuthChallenge, DeviceId, ErasedCounts, NewRefreshToken, RefreshRotation,
    RefreshSuccessor, RevokeOutcome, StoreError, StoreStats, UnixMs, UserId, UserSummary, from_db,
    key32,
};
use super::{SqliteStore, WriteTx};

/// `user_id, created_at, head, pruned_through, devices, revoked devices, last_seen`.
type SummaryRow = (Vec<u8>, i64, i64, i64, i64, i64, Option<i64>);

const SUMMARY_SELECT: &str = "SELECT u.user_id, u.created_at, u.head, u.pruned_through, \
        (SELECT count(*) FROM devices AS d WHERE d.user_id = u.user_id), \
        (SELECT count(*) FROM devices AS d WHERE d.user_id = u.user_id AND d.revoked_at IS NOT NULL), \
        (SELECT max(d.last_seen) FROM devices AS d WHERE d.user_id = u.user_id) \
     FROM users AS u ";

fn summary(row: SummaryRow) -> Result<UserSummary, StoreError> {
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

/// Revokes every token of a refresh family and denylists the access tokens issued
/// with them (those not expired yet).
async fn revoke_family(
    conn: &mut sqlx::SqliteConnection,
    family: &[u8],
    now: UnixMs,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, expires_at) \
         SELECT access_jti, access_expires_at FROM refresh_tokens \
         WHERE family = ? AND access_jti IS NOT NULL AND access_expires_at > ? \
         ON CONFLICT (jti) DO NOTHING",
    )
    .bind(family)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE family = ?")
        .bind(now)
        .bind(family)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl SqliteStore {
    pub(super) async fn do_put_challenge(&self, c: &AuthChallenge) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO auth_challenges (challenge, user_id, device_id, expires_at) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(&c.challenge[..])
        .bind(&c.user.0[..])
        .bind(&c.device.0[..])
        .bind(c.expires_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn do_take_challenge(
        &self,
        challenge: &[u8; 32],
        user: &UserId,
        device: &DeviceId,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM auth_challenges \
             WHERE challenge = ? AND user_id = ? AND device_id = ? AND expires_at > ?",
        )
        .bind(&challenge[..])
        .bind(&user.0[..])
        .bind(&device.0[..])
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn do_put_refresh_token(&self, t: &NewRefreshToken) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, device_id, created_at, \
                                         expires_at, access_jti, access_expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.token_hash[..])
        .bind(&t.family[..])
        .bind(&t.user.0[..])
        .bind(&t.device.0[..])
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(&t.access_jti)
        .bind(t.access_expires_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn do_rotate_refresh_token(
        &self,
        presented: &[u8; 32],
        next: &RefreshSuccessor,
        now: UnixMs,
    ) -> Result<RefreshRotation, StoreError> {
        let mut tx = WriteTx::begin(&self.writer).await?;
        type Row = (Vec<u8>, Vec<u8>, Vec<u8>, i64, Option<i64>, Option<i64>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT family, user_id, device_id, expires_at, spent_at, revoked_at \
             FROM refresh_tokens WHERE token_hash = ?",
        )
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
            "SELECT revoked_at FROM devices WHERE user_id = ? AND device_id = ?",
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
        sqlx::query("UPDATE refresh_tokens SET spent_at = ? WHERE token_hash = ?")
            .bind(now)
            .bind(&presented[..])
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, device_id, created_at, \
                                         expires_at, access_jti, access_expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
            user: UserId(key32(&user, "refresh_tokens.user_id")?),
            device: DeviceId(key32(&device, "refresh_tokens.device_id")?),
        })
    }

    pub(super) async fn do_revoke_access_token(
        &self,
        jti: &str,
        expires_at: UnixMs,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let mut tx = WriteTx::begin(&self.writer).await?;
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        let families: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT DISTINCT family FROM refresh_tokens WHERE access_jti = ?")
                .bind(jti)
                .fetch_all(&mut *tx)
                .await?;
        for family in families {
            revoke_family(&mut tx, &family, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn do_access_status(
        &self,
        user: &UserId,
        device: &DeviceId,
        jti: &str,
    ) -> Result<AccessStatus, StoreError> {
        let (revoked, denied): (Option<i64>, i64) = sqlx::query_as(
            "SELECT (SELECT revoked_at IS NOT NULL FROM devices \
                     WHERE user_id = ? AND device_id = ?), \
                    EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = ?)",
        )
        .bind(&user.0[..])
        .bind(&device.0[..])
        .bind(jti)
        .fetch_one(&self.reader)
        .await?;
        Ok(match (revoked, denied) {
            (None, _) => AccessStatus::DeviceUnknown,
            (Some(r), _) if r != 0 => AccessStatus::DeviceRevoked,
            (_, d) if d != 0 => AccessStatus::TokenRevoked,
            _ => AccessStatus::Active,
        })
    }

    pub(super) async fn do_purge_expired_auth(&self, now: UnixMs) -> Result<u64, StoreError> {
        let mut removed = 0;
        for sql in [
            "DELETE FROM auth_challenges WHERE expires_at <= ?",
            "DELETE FROM revoked_tokens WHERE expires_at <= ?",
            "DELETE FROM refresh_tokens WHERE expires_at <= ?",
        ] {
            removed += sqlx::query(sql)
                .bind(now)
                .execute(&self.writer)
                .await?
                .rows_affected();
        }
        Ok(removed)
    }

    pub(super) async fn do_stats(&self) -> Result<StoreStats, StoreError> {
        let (users, devices, active, events): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM devices), \
                    (SELECT count(*) FROM devices WHERE revoked_at IS NULL), \
                    (SELECT coalesce(sum(head - pruned_through), 0) FROM users)",
        )
        .fetch_one(&self.reader)
        .await?;
        let bytes: Option<i64> = sqlx::query_scalar(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_optional(&self.reader)
        .await?;
        Ok(StoreStats {
            users: from_db(users),
            devices: from_db(devices),
            active_devices: from_db(active),
            events: from_db(events),
            database_bytes: bytes.map(from_db),
        })
    }

    pub(super) async fn do_users_page(
        &self,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<UserSummary>, StoreError> {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(SUMMARY_SELECT);
        q.push("WHERE u.user_id > ")
            .push_bind(after.map_or_else(Vec::new, |u| u.0.to_vec()))
            .push(" ORDER BY u.user_id LIMIT ")
            .push_bind(i64::from(limit));
        let rows: Vec<SummaryRow> = q.build_query_as().fetch_all(&self.reader).await?;
        rows.into_iter().map(summary).collect()
    }

    pub(super) async fn do_user_summary(
        &self,
        user: &UserId,
    ) -> Result<Option<UserSummary>, StoreError> {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(SUMMARY_SELECT);
        q.push("WHERE u.user_id = ").push_bind(&user.0[..]);
        let row: Option<SummaryRow> = q.build_query_as().fetch_optional(&self.reader).await?;
        row.map(summary).transpose()
    }

    pub(super) async fn do_force_revoke_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        now: UnixMs,
    ) -> Result<RevokeOutcome, StoreError> {
        let done = sqlx::query(
            "UPDATE devices SET revoked_at = coalesce(revoked_at, ?) \
             WHERE user_id = ? AND device_id = ?",
        )
        .bind(now)
        .bind(&user.0[..])
        .bind(&device.0[..])
        .execute(&self.writer)
        .await?;
        Ok(if done.rows_affected() == 0 {
            RevokeOutcome::UnknownDevice
        } else {
            RevokeOutcome::Revoked
        })
    }

    pub(super) async fn do_erase_user(
        &self,
        user: &UserId,
    ) -> Result<Option<ErasedCounts>, StoreError> {
        let mut tx = WriteTx::begin(&self.writer).await?;
        let mut run = async |sql: &'static str| -> Result<u64, StoreError> {
            Ok(sqlx::query(sql)
                .bind(&user.0[..])
                .execute(&mut *tx)
                .await?
                .rows_affected())
        };
        let counts = ErasedCounts {
            events: run("DELETE FROM events WHERE user_id = ?").await?,
            refresh_tokens: run("DELETE FROM refresh_tokens WHERE user_id = ?").await?,
            challenges: run("DELETE FROM auth_challenges WHERE user_id = ?").await?,
            revocations: run("DELETE FROM used_revocations WHERE user_id = ?").await?,
            devices: run("DELETE FROM devices WHERE user_id = ?").await?,
        };
        let users = run("DELETE FROM users WHERE user_id = ?").await?;
        if users == 0 && counts == ErasedCounts::default() {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(counts))
    }

    pub(super) fn do_pool_stats(&self) -> (u32, u32) {
        let size = self.writer.size() + self.reader.size();
        let idle = (self.writer.num_idle() + self.reader.num_idle()) as u32;
        (size.saturating_sub(idle), idle)
    }
}
