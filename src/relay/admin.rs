//! The operator's view of the relay and the operator's actions: totals, users,
//! force-revocation, disconnecting and erasing a user.

use ferry_proto::CloseCode;

use super::Relay;
use crate::model::{DeviceId, ErasedCounts, RevokeOutcome, StoreStats, UserId, UserSummary};
use crate::store::StoreError;

/// A user as the admin API shows it: what the store holds and how many sessions
/// of it are live on this instance.
#[derive(Clone, Copy, Debug)]
pub struct UserView {
    /// The stored summary.
    pub summary: UserSummary,
    /// Live sessions of the user on this instance.
    pub live_sessions: u64,
}

/// What erasing a user removed.
#[derive(Clone, Copy, Debug)]
pub struct Erased {
    /// Rows removed, per kind.
    pub counts: ErasedCounts,
    /// Sessions closed (on this instance).
    pub sessions_closed: u64,
}

impl Relay {
    /// Stored totals and the live sessions of every instance (of this one when the
    /// cluster's directory does not answer).
    pub async fn stats(&self) -> Result<(StoreStats, u64), StoreError> {
        let stats = self.inner.store.stats().await?;
        let local = self.inner.hub.len() as u64;
        let live = match self.directory() {
            Some(d) => d.total_sessions(local).await.unwrap_or(local),
            None => local,
        };
        Ok((stats, live))
    }

    /// The users with their live sessions on every instance (on this one when the
    /// cluster's directory does not answer).
    async fn views(&self, summaries: Vec<UserSummary>) -> Vec<UserView> {
        let users: Vec<UserId> = summaries.iter().map(|s| s.user).collect();
        let cluster = match self.directory() {
            Some(d) => d.users_sessions(&users).await,
            None => None,
        };
        summaries
            .into_iter()
            .enumerate()
            .map(|(i, summary)| UserView {
                live_sessions: cluster
                    .as_ref()
                    .and_then(|c| c.get(i).copied())
                    .unwrap_or_else(|| self.inner.hub.sessions(&summary.user).len() as u64),
                summary,
            })
            .collect()
    }

    /// Up to `limit` users with an id greater than `after`, in id order.
    pub async fn users_page(
        &self,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<UserView>, StoreError> {
        let page = self.inner.store.users_page(after, limit).await?;
        Ok(self.views(page).await)
    }

    /// One user, if known.
    pub async fn user(&self, user: &UserId) -> Result<Option<UserView>, StoreError> {
        let summary = self.inner.store.user_summary(user).await?;
        Ok(match summary {
            Some(s) => self.views(vec![s]).await.pop(),
            None => None,
        })
    }

    /// Closes every session of a known user with 1001, on every instance;
    /// `None` for an unknown user.
    pub async fn disconnect(&self, user: &UserId) -> Result<Option<u64>, StoreError> {
        if self.inner.store.user_summary(user).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(
            self.inner.hub.close_user(user, CloseCode::GoingAway) as u64
        ))
    }

    /// Revokes a device without a user signature (an operator's decision): its
    /// admission is forgotten, its sessions close with 4003 and the user's other
    /// sessions are told. `false` when the user has no such device; revoking a
    /// revoked device again succeeds.
    pub async fn force_revoke(&self, user: &UserId, device: &DeviceId) -> Result<bool, StoreError> {
        let now = self.inner.clock.unix_ms();
        match self
            .inner
            .store
            .force_revoke_device(user, device, now)
            .await?
        {
            RevokeOutcome::UnknownDevice => Ok(false),
            _ => {
                self.revoked(user, device, now);
                Ok(true)
            }
        }
    }

    /// Erases everything stored for a user. Its sessions close first (4012, erased:
    /// the devices are not revoked, and may reconnect to a log at head 0), so no
    /// live session appends while the rows go; then the admission memo is cleared,
    /// so the user's devices are unknown again and their next handshakes read the
    /// store. `None` when nothing was stored for the user.
    pub async fn erase_user(&self, user: &UserId) -> Result<Option<Erased>, StoreError> {
        let inner = &self.inner;
        let closed = inner.hub.close_user(user, CloseCode::Erased) as u64;
        let Some(counts) = inner.store.erase_user(user).await? else {
            return Ok(None);
        };
        inner.admissions.clear();
        Ok(Some(Erased {
            counts,
            sessions_closed: closed,
        }))
    }
}
