//! The backend-neutral half of [`Store::append`](super::Store::append).
//!
//! A backend opens its transaction, serialises against other appenders of the same
//! users, reads a [`Snapshot`] of what the batch depends on (heads, existing ids,
//! key heads), and hands it to [`plan`], which decides every outcome and numbers the
//! new rows. The backend then inserts [`Plan::rows`], writes [`Plan::heads`] where
//! it keeps `users.head` equal to the head (PostgreSQL; on SQLite the log's newest
//! seq is the head, see `user_head!`) and commits. Keeping the decisions here means both backends answer a batch the same
//! way, and the rules are unit-tested without a database.

use std::collections::HashMap;

use super::{AppendOutcome, NewEvent, UnixMs, UserId};

/// What the batch depends on, read inside the append transaction after the users'
/// counters are locked.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    /// Current head of every user in the batch (missing: 0).
    pub(super) heads: HashMap<UserId, u64>,
    /// Events already in the log whose id appears in the batch: `(seq, ts)`.
    pub(super) ids: HashMap<(UserId, uuid::Uuid), (u64, UnixMs)>,
    /// Newest seq per `(user, key)` for the keys of compare-and-set events in the
    /// batch (missing: no event with that key, i.e. 0).
    pub(super) key_heads: HashMap<(UserId, Vec<u8>), u64>,
}

/// One event to insert, numbered.
#[derive(Debug)]
pub(super) struct NewRow<'a> {
    /// The input event.
    pub(super) event: &'a NewEvent,
    /// Its assigned seq.
    pub(super) seq: u64,
    /// `ts + ttl`, in Unix ms, saturating.
    pub(super) expires_at: Option<UnixMs>,
}

/// The decisions for one batch.
#[derive(Debug)]
pub(super) struct Plan<'a> {
    /// One outcome per input event, in input order.
    pub(super) outcomes: Vec<AppendOutcome>,
    /// The events to insert, in input order (seq ascending per user).
    pub(super) rows: Vec<NewRow<'a>>,
    /// New head of every user that got at least one event, sorted by user.
    pub(super) heads: Vec<(UserId, u64)>,
}

/// The distinct users of a batch, sorted: the order in which their counters are
/// locked, so two concurrent appenders never wait for each other in a cycle.
pub(super) fn users(batch: &[NewEvent]) -> Vec<UserId> {
    let mut users: Vec<UserId> = batch.iter().map(|e| e.user).collect();
    users.sort_unstable();
    users.dedup();
    users
}

/// The distinct `(user, id)` pairs of a batch: what the duplicate check looks up.
pub(super) fn ids(batch: &[NewEvent]) -> Vec<(UserId, uuid::Uuid)> {
    let mut ids: Vec<_> = batch.iter().map(|e| (e.user, e.id)).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The distinct `(user, key)` pairs of the batch's compare-and-set events (those with
/// both `key` and `base`): what the key-head lookup needs.
pub(super) fn cas_keys(batch: &[NewEvent]) -> Vec<(UserId, &[u8])> {
    let mut keys: Vec<(UserId, &[u8])> = batch
        .iter()
        .filter(|e| e.base.is_some())
        .filter_map(|e| Some((e.user, e.key.as_deref()?)))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Decides every outcome of `batch`, in order, against `snapshot` and the earlier
/// events of the same batch:
/// 1. an id the log (or an earlier stored event of the batch) holds: `Duplicate` with
///    the original seq and ts;
/// 2. `key` + `base` where the newest event with that key (counting the batch) has
///    another seq (`base = 0`: none may exist): `Conflict` with that seq;
/// 3. otherwise `Stored` with `head + 1`.
///
/// `base` without `key` is ignored (the protocol layer rejects it).
pub(super) fn plan<'a>(batch: &'a [NewEvent], snapshot: Snapshot) -> Plan<'a> {
    let Snapshot {
        mut heads,
        mut ids,
        mut key_heads,
    } = snapshot;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut rows = Vec::with_capacity(batch.len());
    let mut touched = Vec::new();

    for event in batch {
        if let Some(&(seq, ts)) = ids.get(&(event.user, event.id)) {
            outcomes.push(AppendOutcome::Duplicate { seq, ts });
            continue;
        }
        if let (Some(key), Some(base)) = (&event.key, event.base) {
            let key_head = key_heads
                .get(&(event.user, key.clone()))
                .copied()
                .unwrap_or(0);
            if key_head != base {
                outcomes.push(AppendOutcome::Conflict { key_head });
                continue;
            }
        }
        let head = heads.entry(event.user).or_insert(0);
        *head += 1;
        let seq = *head;
        touched.push(event.user);
        ids.insert((event.user, event.id), (seq, event.ts));
        if let Some(key) = &event.key {
            key_heads.insert((event.user, key.clone()), seq);
        }
        rows.push(NewRow {
            event,
            seq,
            expires_at: expires_at(event.ts, event.ttl),
        });
        outcomes.push(AppendOutcome::Stored { seq, ts: event.ts });
    }

    touched.sort_unstable();
    touched.dedup();
    let heads = touched.into_iter().map(|u| (u, heads[&u])).collect();
    Plan {
        outcomes,
        rows,
        heads,
    }
}

/// When an event published at `ts` with `ttl` seconds stops being served.
pub(super) fn expires_at(ts: UnixMs, ttl: Option<u64>) -> Option<UnixMs> {
    let ttl_ms = i64::try_from(ttl?.saturating_mul(1000)).unwrap_or(i64::MAX);
    Some(ts.saturating_add(ttl_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DeviceId;

    const A: UserId = UserId([1; 32]);
    const B: UserId = UserId([2; 32]);
    const DEV: DeviceId = DeviceId([9; 32]);

    fn ev(user: UserId, id: u128, key: Option<&str>, base: Option<u64>) -> NewEvent {
        NewEvent {
            user,
            id: uuid::Uuid::from_u128(id),
            device: DEV,
            payload: vec![id as u8],
            key: key.map(|k| k.as_bytes().to_vec()),
            base,
            ttl: None,
            ts: 1000 + id as i64,
        }
    }

    fn check<'a>(
        batch: &'a [NewEvent],
        snapshot: Snapshot,
        expected: &[AppendOutcome],
    ) -> Plan<'a> {
        let plan = plan(batch, snapshot);
        assert_eq!(plan.outcomes, expected);
        let stored = expected
            .iter()
            .filter(|o| matches!(o, AppendOutcome::Stored { .. }))
            .count();
        assert_eq!(plan.rows.len(), stored);
        plan
    }

    #[test]
    fn numbers_per_user_from_the_locked_heads() {
        let batch = [
            ev(A, 1, None, None),
            ev(B, 2, None, None),
            ev(A, 3, None, None),
        ];
        let snapshot = Snapshot {
            heads: HashMap::from([(A, 10)]),
            ..Snapshot::default()
        };
        let plan = check(
            &batch,
            snapshot,
            &[
                AppendOutcome::Stored { seq: 11, ts: 1001 },
                AppendOutcome::Stored { seq: 1, ts: 1002 },
                AppendOutcome::Stored { seq: 12, ts: 1003 },
            ],
        );
        assert_eq!(plan.heads, vec![(A, 12), (B, 1)]);
    }

    #[test]
    fn duplicates_in_log_and_in_batch() {
        let batch = [
            ev(A, 1, None, None),
            ev(A, 2, None, None),
            ev(A, 2, None, None),
        ];
        let snapshot = Snapshot {
            heads: HashMap::from([(A, 5)]),
            ids: HashMap::from([((A, uuid::Uuid::from_u128(1)), (3, 77))]),
            ..Snapshot::default()
        };
        let plan = check(
            &batch,
            snapshot,
            &[
                AppendOutcome::Duplicate { seq: 3, ts: 77 },
                AppendOutcome::Stored { seq: 6, ts: 1002 },
                AppendOutcome::Duplicate { seq: 6, ts: 1002 },
            ],
        );
        assert_eq!(plan.heads, vec![(A, 6)]);
    }

    #[test]
    fn same_id_for_another_user_is_not_a_duplicate() {
        let batch = [ev(A, 1, None, None), ev(B, 1, None, None)];
        check(
            &batch,
            Snapshot::default(),
            &[
                AppendOutcome::Stored { seq: 1, ts: 1001 },
                AppendOutcome::Stored { seq: 1, ts: 1001 },
            ],
        );
    }

    #[test]
    fn compare_and_set_chains_within_a_batch() {
        let batch = [
            ev(A, 1, Some("k"), Some(0)), // no such key yet: stored as 1
            ev(A, 2, Some("k"), Some(0)), // stale base: conflict, head of k is 1
            ev(A, 3, Some("k"), Some(1)), // chains on 1: stored as 2
            ev(A, 4, Some("k"), None),    // no base: stored unconditionally as 3
            ev(A, 5, Some("k"), Some(2)), // stale: conflict, head of k is 3
            ev(A, 2, Some("k"), Some(3)), // id 2 was refused, so not a duplicate: stored
            ev(A, 6, None, Some(42)),     // base without key is ignored
        ];
        check(
            &batch,
            Snapshot::default(),
            &[
                AppendOutcome::Stored { seq: 1, ts: 1001 },
                AppendOutcome::Conflict { key_head: 1 },
                AppendOutcome::Stored { seq: 2, ts: 1003 },
                AppendOutcome::Stored { seq: 3, ts: 1004 },
                AppendOutcome::Conflict { key_head: 3 },
                AppendOutcome::Stored { seq: 4, ts: 1002 },
                AppendOutcome::Stored { seq: 5, ts: 1006 },
            ],
        );
    }

    #[test]
    fn compare_and_set_against_the_log() {
        let batch = [ev(A, 1, Some("k"), Some(0)), ev(A, 2, Some("k"), Some(7))];
        let snapshot = Snapshot {
            heads: HashMap::from([(A, 9)]),
            key_heads: HashMap::from([((A, b"k".to_vec()), 7)]),
            ..Snapshot::default()
        };
        check(
            &batch,
            snapshot,
            &[
                AppendOutcome::Conflict { key_head: 7 },
                AppendOutcome::Stored { seq: 10, ts: 1002 },
            ],
        );
    }

    #[test]
    fn lookups_are_sorted_and_distinct() {
        let batch = [
            ev(B, 1, Some("k"), Some(0)),
            ev(A, 1, Some("k"), Some(0)),
            ev(A, 1, Some("k"), None),
            ev(A, 2, Some("j"), Some(0)),
        ];
        assert_eq!(users(&batch), vec![A, B]);
        assert_eq!(ids(&batch).len(), 3);
        assert_eq!(
            cas_keys(&batch),
            vec![(A, &b"j"[..]), (A, &b"k"[..]), (B, &b"k"[..])]
        );
    }

    #[test]
    fn expiry_saturates() {
        assert_eq!(expires_at(1000, None), None);
        assert_eq!(expires_at(1000, Some(2)), Some(3000));
        assert_eq!(expires_at(1000, Some(u64::MAX)), Some(i64::MAX));
    }
}
