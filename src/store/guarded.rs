//! [`Guarded`]: a circuit breaker ([`crate::breaker`]) around a [`Store`].
//!
//! When the database goes away (a restart, a failover, a database that refuses
//! connections), every call waits for the pool to give up before it fails, and new
//! requests keep arriving meanwhile: they pile up behind the pool's timeout,
//! holding sessions, memory and the writer's queue. The decorator stops that. Every
//! call of every store trait asks the breaker first:
//!
//! - **closed**: the call goes to the database. A result of
//!   [`StoreError::Unavailable`] counts as a failure; any other result (a value,
//!   `NotFound`, `Conflict`, any other error) means the database answered, and
//!   resets the count. After [`DATABASE_FAILURES_TO_OPEN`] failures in a row the
//!   breaker opens.
//! - **open**: the call is refused at once with [`StoreError::CircuitOpen`] and the
//!   time left, without touching the database. Clients get `unavailable` with
//!   `retry_after_ms` (REST: 503 with `Retry-After`) and readiness answers 503.
//! - **half-open**: after [`DATABASE_OPEN_FOR`] the next call goes through as a
//!   probe (the others are still refused). A readiness probe is such a call, so the
//!   breaker finds out by itself when the database is back: the probe's success
//!   closes it, its failure opens it for another period.
//!
//! The breaker is named `database`: its state is `ferry_breaker_state{breaker=
//! "database"}`, its transitions `ferry_breaker_transitions_total` and one log line
//! each. The synchronous calls ([`Store::backend`], [`Store::pool_stats`]) touch no
//! database and are passed straight through. A call whose caller stops waiting
//! reports nothing; a half-open probe lost so is replaced after another period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    AccessStatus, AdminStore, AppendOutcome, AuthChallenge, AuthStore, Backend, Chore, ChoreResult,
    DeviceCert, DeviceId, DeviceRecord, Devices, ErasedCounts, EventLog, EventPage, NewEvent,
    NewRefreshToken, RefreshRotation, RefreshSuccessor, RetentionLock, RetentionStore,
    RevokeOutcome, Store, StoreError, StoreStats, UnixMs, UserId, UserSummary,
};
use crate::breaker::{Breaker, BreakerMetrics, State};
use crate::clock::SharedClock;

/// How many [`StoreError::Unavailable`] results in a row open the database's
/// breaker: enough that one dropped connection (the pool replaces it) does not.
pub const DATABASE_FAILURES_TO_OPEN: u32 = 5;

/// How long the database's breaker stays open before a call probes the database
/// again: short, since an outage ends when the database answers, and the probes
/// are single cheap calls.
pub const DATABASE_OPEN_FOR: Duration = Duration::from_secs(1);

/// A [`Store`] behind a circuit breaker (see the module docs).
pub struct Guarded {
    inner: Arc<dyn Store>,
    breaker: Arc<Breaker>,
    clock: SharedClock,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("backend", &self.inner.backend())
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl Guarded {
    /// `inner` behind `breaker`, which reads the time from `clock`.
    pub fn new(inner: Arc<dyn Store>, breaker: Arc<Breaker>, clock: SharedClock) -> Self {
        Self {
            inner,
            breaker,
            clock,
        }
    }

    /// `inner` behind the breaker named `database` ([`DATABASE_FAILURES_TO_OPEN`],
    /// [`DATABASE_OPEN_FOR`]), reporting to `metrics`.
    pub fn database(inner: Arc<dyn Store>, metrics: BreakerMetrics, clock: SharedClock) -> Self {
        let breaker = Breaker::new(
            "database",
            DATABASE_FAILURES_TO_OPEN,
            DATABASE_OPEN_FOR,
            Some(metrics),
        );
        Self::new(inner, Arc::new(breaker), clock)
    }

    /// The breaker.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Runs `call` if the breaker allows it, and reports its outcome.
    async fn guard<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.breaker
            .allow(self.clock.now())
            .map_err(StoreError::CircuitOpen)?;
        let result = call.await;
        match &result {
            Err(StoreError::Unavailable(_)) => self.breaker.failure(self.clock.now()),
            _ => self.breaker.success(),
        }
        result
    }
}

#[async_trait]
impl EventLog for Guarded {
    async fn head(&self, user: &UserId) -> Result<u64, StoreError> {
        self.guard(self.inner.head(user)).await
    }

    async fn append(&self, batch: &[NewEvent]) -> Result<Vec<AppendOutcome>, StoreError> {
        self.guard(self.inner.append(batch)).await
    }

    async fn events_after(
        &self,
        user: &UserId,
        after: u64,
        limit: u32,
        now: UnixMs,
    ) -> Result<EventPage, StoreError> {
        self.guard(self.inner.events_after(user, after, limit, now))
            .await
    }

    async fn prune_before(
        &self,
        user: &UserId,
        before: u64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.guard(self.inner.prune_before(user, before, limit))
            .await
    }
}

#[async_trait]
impl Devices for Guarded {
    async fn register_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        cert: &DeviceCert,
        now: UnixMs,
    ) -> Result<DeviceRecord, StoreError> {
        self.guard(self.inner.register_device(user, device, cert, now))
            .await
    }

    async fn device(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        self.guard(self.inner.device(user, device)).await
    }

    async fn device_and_head(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<(DeviceRecord, u64)>, StoreError> {
        self.guard(self.inner.device_and_head(user, device)).await
    }

    async fn devices(&self, user: &UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        self.guard(self.inner.devices(user)).await
    }

    async fn set_cursor(
        &self,
        user: &UserId,
        device: &DeviceId,
        seq: u64,
    ) -> Result<(), StoreError> {
        self.guard(self.inner.set_cursor(user, device, seq)).await
    }

    async fn touch_devices(&self, seen: &[(UserId, DeviceId, UnixMs)]) -> Result<(), StoreError> {
        self.guard(self.inner.touch_devices(seen)).await
    }

    async fn revoke_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        ts: UnixMs,
        sig: &[u8; 64],
        now: UnixMs,
    ) -> Result<RevokeOutcome, StoreError> {
        self.guard(self.inner.revoke_device(user, device, ts, sig, now))
            .await
    }
}

#[async_trait]
impl AuthStore for Guarded {
    async fn put_challenge(&self, challenge: &AuthChallenge) -> Result<(), StoreError> {
        self.guard(self.inner.put_challenge(challenge)).await
    }

    async fn take_challenge(
        &self,
        challenge: &[u8; 32],
        user: &UserId,
        device: &DeviceId,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        self.guard(self.inner.take_challenge(challenge, user, device, now))
            .await
    }

    async fn put_refresh_token(&self, token: &NewRefreshToken) -> Result<(), StoreError> {
        self.guard(self.inner.put_refresh_token(token)).await
    }

    async fn rotate_refresh_token(
        &self,
        presented: &[u8; 32],
        next: &RefreshSuccessor,
        now: UnixMs,
    ) -> Result<RefreshRotation, StoreError> {
        self.guard(self.inner.rotate_refresh_token(presented, next, now))
            .await
    }

    async fn revoke_access_token(
        &self,
        jti: &str,
        expires_at: UnixMs,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        self.guard(self.inner.revoke_access_token(jti, expires_at, now))
            .await
    }

    async fn access_status(
        &self,
        user: &UserId,
        device: &DeviceId,
        jti: &str,
    ) -> Result<AccessStatus, StoreError> {
        self.guard(self.inner.access_status(user, device, jti))
            .await
    }

    async fn purge_expired_auth(&self, now: UnixMs, limit: u32) -> Result<u64, StoreError> {
        self.guard(self.inner.purge_expired_auth(now, limit)).await
    }

    async fn count_expired_auth(&self, now: UnixMs) -> Result<u64, StoreError> {
        self.guard(self.inner.count_expired_auth(now)).await
    }
}

#[async_trait]
impl AdminStore for Guarded {
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.guard(self.inner.stats()).await
    }

    async fn users_page(
        &self,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<UserSummary>, StoreError> {
        self.guard(self.inner.users_page(after, limit)).await
    }

    async fn user_summary(&self, user: &UserId) -> Result<Option<UserSummary>, StoreError> {
        self.guard(self.inner.user_summary(user)).await
    }

    async fn force_revoke_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        now: UnixMs,
    ) -> Result<RevokeOutcome, StoreError> {
        self.guard(self.inner.force_revoke_device(user, device, now))
            .await
    }

    async fn erase_user(&self, user: &UserId) -> Result<Option<ErasedCounts>, StoreError> {
        self.guard(self.inner.erase_user(user)).await
    }
}

#[async_trait]
impl RetentionStore for Guarded {
    async fn retention_lock(&self) -> Result<Option<RetentionLock>, StoreError> {
        self.guard(self.inner.retention_lock()).await
    }

    async fn delete_expired(&self, now: UnixMs, limit: u32) -> Result<u64, StoreError> {
        self.guard(self.inner.delete_expired(now, limit)).await
    }

    async fn count_expired(&self, now: UnixMs) -> Result<u64, StoreError> {
        self.guard(self.inner.count_expired(now)).await
    }

    async fn delete_superseded(&self, cutoff: UnixMs, limit: u32) -> Result<u64, StoreError> {
        self.guard(self.inner.delete_superseded(cutoff, limit))
            .await
    }

    async fn count_superseded(&self, cutoff: UnixMs) -> Result<u64, StoreError> {
        self.guard(self.inner.count_superseded(cutoff)).await
    }

    async fn users_with_events_before(
        &self,
        cutoff: UnixMs,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<UserId>, StoreError> {
        self.guard(self.inner.users_with_events_before(cutoff, after, limit))
            .await
    }

    async fn users_spanning_more_than(
        &self,
        keep: u64,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<UserId>, StoreError> {
        self.guard(self.inner.users_spanning_more_than(keep, after, limit))
            .await
    }

    async fn oldest_events(
        &self,
        user: &UserId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, UnixMs)>, StoreError> {
        self.guard(self.inner.oldest_events(user, after, limit))
            .await
    }

    async fn nth_newest_seq(&self, user: &UserId, n: u64) -> Result<Option<u64>, StoreError> {
        self.guard(self.inner.nth_newest_seq(user, n)).await
    }

    async fn count_events_before(&self, user: &UserId, before: u64) -> Result<u64, StoreError> {
        self.guard(self.inner.count_events_before(user, before))
            .await
    }

    async fn devices_seen_before(
        &self,
        seen_before: UnixMs,
        after: Option<(UserId, DeviceId)>,
        limit: u32,
    ) -> Result<Vec<(UserId, DeviceId)>, StoreError> {
        self.guard(self.inner.devices_seen_before(seen_before, after, limit))
            .await
    }

    async fn remove_devices(
        &self,
        devices: &[(UserId, DeviceId)],
        seen_before: UnixMs,
        now: UnixMs,
    ) -> Result<u64, StoreError> {
        self.guard(self.inner.remove_devices(devices, seen_before, now))
            .await
    }
}

/// Every call is the inner store's, so a backend's own versions of the calls with
/// default bodies (SQLite's [`Store::append_with`], say) keep working as they do.
#[async_trait]
impl Store for Guarded {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    fn breaker_state(&self) -> Option<State> {
        Some(self.breaker.state())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.guard(self.inner.ping()).await
    }

    async fn foreign_commits(&self) -> Result<Option<i64>, StoreError> {
        self.guard(self.inner.foreign_commits()).await
    }

    async fn database_bytes(&self) -> Result<Option<u64>, StoreError> {
        self.guard(self.inner.database_bytes()).await
    }

    fn pool_stats(&self) -> (u32, u32) {
        self.inner.pool_stats()
    }

    async fn append_with(
        &self,
        batch: &[NewEvent],
        chore: &Chore,
    ) -> Result<(Vec<AppendOutcome>, ChoreResult), StoreError> {
        self.guard(self.inner.append_with(batch, chore)).await
    }

    async fn run_chore(&self, chore: &Chore) -> Result<u64, StoreError> {
        self.guard(self.inner.run_chore(chore)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock as _, JumpingClock};
    use crate::store::{StoreOptions, connect};

    /// The decorator's wiring on a real store: an open breaker refuses every call
    /// without reaching the store, a call after the open period probes it, and a
    /// database that answers (even "not found") closes the breaker.
    #[tokio::test]
    async fn refuses_while_open_and_a_probe_that_answers_closes_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        let inner = connect(&url, &StoreOptions::default()).await.unwrap();
        let clock = JumpingClock::new();
        let breaker = Arc::new(Breaker::new(
            "database",
            DATABASE_FAILURES_TO_OPEN,
            DATABASE_OPEN_FOR,
            None,
        ));
        let store = Guarded::new(inner, breaker.clone(), clock.clone());
        let user = UserId([5; 32]);
        assert_eq!(store.breaker_state(), Some(State::Closed));
        assert_eq!(store.head(&user).await.unwrap(), 0);

        for _ in 0..DATABASE_FAILURES_TO_OPEN {
            breaker.failure(clock.now());
        }
        assert_eq!(store.breaker_state(), Some(State::Open));
        for err in [
            store.ping().await.unwrap_err(),
            store.head(&user).await.unwrap_err(),
            store.append(&[]).await.unwrap_err(),
        ] {
            let StoreError::CircuitOpen(wait) = err else {
                panic!("expected CircuitOpen, got {err:?}");
            };
            assert!(
                wait > Duration::ZERO && wait <= DATABASE_OPEN_FOR,
                "{wait:?}"
            );
        }
        // Synchronous calls do not ask the breaker.
        assert_eq!(store.backend(), Backend::Sqlite);

        // The period is over: the next call probes the database, which answers.
        clock.advance_monotonic(DATABASE_OPEN_FOR);
        assert_eq!(store.device(&user, &DeviceId([6; 32])).await.unwrap(), None);
        assert_eq!(store.breaker_state(), Some(State::Closed));
        store.ping().await.unwrap();
    }
}
