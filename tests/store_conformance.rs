//! One story and the concurrency guarantees, run identically against every backend:
//! SQLite always, PostgreSQL when `FERRY_TEST_POSTGRES_URL` is set.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use common::db::TestDb;
use ferry::store::{
    AppendOutcome, DeviceCert, DeviceId, DeviceRecord, NewEvent, RevokeOutcome, Store, StoreError,
    StoreOptions, UserId, connect,
};
use uuid::Uuid;

/// Runs `$body(url)` as `$name::sqlite` and `$name::postgres`.
macro_rules! on_every_backend {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::TestDb::sqlite().await;
                super::$body(db.url()).await;
                db.finish(concat!(stringify!($name), "::sqlite")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = super::TestDb::postgres().await else {
                    return;
                };
                super::$body(db.url()).await;
                db.finish(concat!(stringify!($name), "::postgres")).await;
            }
        }
    };
}

on_every_backend!(story, story);
on_every_backend!(concurrent_appends_one_user, concurrent_appends_one_user);
on_every_backend!(two_instances_one_database, two_instances_one_database);
on_every_backend!(foreign_commits, foreign_commits);
on_every_backend!(concurrent_first_sights, concurrent_first_sights);
on_every_backend!(head_outlives_its_events, head_outlives_its_events);

const A: UserId = UserId([0xA1; 32]);
const B: UserId = UserId([0xB2; 32]);
const D1: DeviceId = DeviceId([0x01; 32]);
const D2: DeviceId = DeviceId([0x02; 32]);
const T0: i64 = 1_750_000_000_000;

async fn open(url: &str) -> Arc<dyn Store> {
    connect(url, &StoreOptions::default())
        .await
        .expect("connect")
}

fn cert() -> DeviceCert {
    DeviceCert {
        issued_at: 1_700_000_000,
        expires_at: 0,
        sig: [0x5A; 64],
    }
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// An event of `user` with id `n`, published at `T0 + n`, payload tagged with its
/// owner (so isolation can be checked from payloads alone).
fn ev(user: UserId, n: u128) -> NewEvent {
    let mut payload = user.0[..4].to_vec();
    payload.extend_from_slice(&n.to_be_bytes());
    NewEvent {
        user,
        id: id(n),
        device: D1,
        payload,
        key: None,
        base: None,
        ttl: None,
        ts: T0 + n as i64,
    }
}

fn keyed(user: UserId, n: u128, key: &str, base: Option<u64>) -> NewEvent {
    NewEvent {
        key: Some(key.as_bytes().to_vec()),
        base,
        ..ev(user, n)
    }
}

fn stored(seq: u64, n: u128) -> AppendOutcome {
    AppendOutcome::Stored {
        seq,
        ts: T0 + n as i64,
    }
}

fn dup(seq: u64, n: u128) -> AppendOutcome {
    AppendOutcome::Duplicate {
        seq,
        ts: T0 + n as i64,
    }
}

fn conflict(key_head: u64) -> AppendOutcome {
    AppendOutcome::Conflict { key_head }
}

async fn seqs(store: &dyn Store, user: UserId, after: u64, limit: u32, now: i64) -> Vec<u64> {
    let page = store.events_after(&user, after, limit, now).await.unwrap();
    page.events.iter().map(|e| e.seq).collect()
}

async fn story(url: &str) {
    let store = open(url).await;
    let s = &*store;
    s.ping().await.unwrap();

    // A user nobody has seen.
    assert_eq!(s.head(&A).await.unwrap(), 0);
    assert_eq!(s.device(&A, &D1).await.unwrap(), None);
    assert_eq!(s.device_and_head(&A, &D1).await.unwrap(), None);
    assert!(s.devices(&A).await.unwrap().is_empty());
    let empty = s.events_after(&A, 0, 10, T0).await.unwrap();
    assert_eq!((empty.events.len(), empty.head, empty.more), (0, 0, false));
    assert_eq!(empty.truncated_oldest, None);

    // Devices: first sight, last_seen only moves forward.
    let first = s.register_device(&A, &D1, &cert(), 1000).await.unwrap();
    let expected = DeviceRecord {
        user: A,
        device: D1,
        created_at: 1000,
        last_seen: 1000,
        cursor: 0,
        revoked_at: None,
    };
    assert_eq!(first, expected);
    let again = s.register_device(&A, &D1, &cert(), 2000).await.unwrap();
    assert_eq!((again.created_at, again.last_seen), (1000, 2000));
    let older = s.register_device(&A, &D1, &cert(), 1500).await.unwrap();
    assert_eq!(older.last_seen, 2000);
    s.register_device(&A, &D2, &cert(), 3000).await.unwrap();
    s.register_device(&B, &D1, &cert(), 4000).await.unwrap();
    let devices = s.devices(&A).await.unwrap();
    assert_eq!(
        devices.iter().map(|d| d.device).collect::<Vec<_>>(),
        vec![D1, D2]
    );
    assert_eq!(s.device(&A, &D1).await.unwrap().unwrap().last_seen, 2000);

    // last_seen in batches: only forward, unknown devices skipped and never created.
    s.touch_devices(&[]).await.unwrap();
    s.touch_devices(&[(A, D1, 2500), (A, D2, 100), (B, D2, 9999)])
        .await
        .unwrap();
    assert_eq!(s.device(&A, &D1).await.unwrap().unwrap().last_seen, 2500);
    assert_eq!(s.device(&A, &D2).await.unwrap().unwrap().last_seen, 3000);
    assert_eq!(s.device(&B, &D2).await.unwrap(), None);
    // More devices than one SQLite statement takes (its parameter limit splits them
    // into several statements of the one transaction): the first and the last land.
    let mut many: Vec<(UserId, DeviceId, i64)> = (0..11_000u32)
        .map(|i| {
            let mut d = [0xee; 32];
            d[..4].copy_from_slice(&i.to_be_bytes());
            (B, DeviceId(d), 1)
        })
        .collect();
    many[0] = (A, D1, 2600);
    many[10_999] = (A, D2, 3100);
    s.touch_devices(&many).await.unwrap();
    assert_eq!(s.device(&A, &D1).await.unwrap().unwrap().last_seen, 2600);
    assert_eq!(s.device(&A, &D2).await.unwrap().unwrap().last_seen, 3100);
    assert_eq!(
        s.devices(&B).await.unwrap().len(),
        1,
        "unknown devices are not created"
    );

    // Append across users; seq per user.
    let out = s.append(&[ev(A, 1), ev(A, 2), ev(B, 3)]).await.unwrap();
    assert_eq!(out, vec![stored(1, 1), stored(2, 2), stored(1, 3)]);
    assert_eq!(
        (s.head(&A).await.unwrap(), s.head(&B).await.unwrap()),
        (2, 1)
    );
    assert_eq!(s.append(&[]).await.unwrap(), vec![]);

    // Duplicates: from the log (with the original ts, not the retry's) and in-batch.
    let mut retry = ev(A, 1);
    retry.ts += 999;
    retry.payload = b"different".to_vec();
    let out = s.append(&[retry, ev(A, 10), ev(A, 10)]).await.unwrap();
    assert_eq!(out, vec![dup(1, 1), stored(3, 10), dup(3, 10)]);
    // The same id in another user's log is not a duplicate.
    assert_eq!(s.append(&[ev(B, 10)]).await.unwrap(), vec![stored(2, 10)]);

    // Compare-and-set against the log and chained within a batch.
    assert_eq!(
        s.append(&[keyed(A, 20, "k", Some(0))]).await.unwrap(),
        vec![stored(4, 20)]
    );
    assert_eq!(
        s.append(&[keyed(A, 21, "k", Some(0))]).await.unwrap(),
        vec![conflict(4)]
    );
    let out = s
        .append(&[
            keyed(A, 22, "k", Some(4)),
            keyed(A, 23, "k", Some(5)),
            keyed(A, 24, "k", Some(4)),
            keyed(A, 25, "other", Some(0)),
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![stored(5, 22), stored(6, 23), conflict(6), stored(7, 25)]
    );
    // A key without base always stores and becomes the key's head.
    assert_eq!(
        s.append(&[keyed(A, 26, "k", None)]).await.unwrap(),
        vec![stored(8, 26)]
    );
    assert_eq!(
        s.append(&[keyed(A, 27, "k", Some(6))]).await.unwrap(),
        vec![conflict(8)]
    );
    // A refused id is not a duplicate later.
    assert_eq!(
        s.append(&[keyed(A, 21, "k", Some(8))]).await.unwrap(),
        vec![stored(9, 21)]
    );
    // Keys are per user.
    assert_eq!(
        s.append(&[keyed(B, 28, "k", Some(0))]).await.unwrap(),
        vec![stored(3, 28)]
    );
    assert_eq!(s.head(&A).await.unwrap(), 9);
    // The handshake's one read: the device as `device` has it, with its user's head.
    for (user, device, head) in [(A, D1, 9), (A, D2, 9), (B, D1, 3)] {
        let Some((record, h)) = s.device_and_head(&user, &device).await.unwrap() else {
            panic!("device_and_head: {device:?} of {user:?} missing");
        };
        assert_eq!(Some(record), s.device(&user, &device).await.unwrap());
        assert_eq!(h, head);
    }
    assert_eq!(s.device_and_head(&B, &D2).await.unwrap(), None);

    // Reading: everything, then paging.
    let now = T0 + 1_000_000;
    let page = s.events_after(&A, 0, 100, now).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>()
    );
    assert_eq!(
        (page.head, page.more, page.truncated_oldest),
        (9, false, None)
    );
    let e4 = &page.events[3];
    assert_eq!(e4.id, id(20));
    assert_eq!((e4.device, e4.ts, e4.ttl), (D1, T0 + 20, None));
    assert_eq!(e4.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(e4.payload, ev(A, 20).payload);
    assert_eq!(page.events[0].key, None);

    let p1 = s.events_after(&A, 0, 4, now).await.unwrap();
    assert_eq!(
        p1.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(p1.more);
    let p2 = s.events_after(&A, 4, 4, now).await.unwrap();
    assert_eq!(
        p2.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5, 6, 7, 8]
    );
    assert!(p2.more);
    let p3 = s.events_after(&A, 8, 4, now).await.unwrap();
    assert_eq!((p3.events.len(), p3.more, p3.head), (1, false, 9));
    let p4 = s.events_after(&A, 9, 4, now).await.unwrap();
    assert_eq!((p4.events.len(), p4.more, p4.head), (0, false, 9));
    // Absurd positions: nothing, no error, no wrap-around to "from the start".
    assert!(seqs(s, A, u64::MAX, 10, now).await.is_empty());
    assert!(seqs(s, A, i64::MAX as u64 + 1, 10, now).await.is_empty());
    let zero = s.events_after(&A, 0, 0, now).await.unwrap();
    assert!(zero.events.is_empty() && zero.more);

    // TTL: served until ts + ttl, then left out, still holding its seq.
    let ttl_event = NewEvent {
        ttl: Some(10),
        ..ev(A, 30)
    };
    let ttl_ts = ttl_event.ts;
    let out = s.append(&[ttl_event, ev(A, 31)]).await.unwrap();
    assert_eq!(out, vec![stored(10, 30), stored(11, 31)]);
    let before_expiry = s.events_after(&A, 9, 10, ttl_ts + 9_999).await.unwrap();
    assert_eq!(
        before_expiry
            .events
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![10, 11]
    );
    assert_eq!(before_expiry.events[0].ttl, Some(10));
    assert_eq!(seqs(s, A, 9, 10, ttl_ts + 10_000).await, vec![11]);
    // The limit counts served events only: an expired event never fills a page.
    let one = s.events_after(&A, 9, 1, ttl_ts + 10_000).await.unwrap();
    assert_eq!(
        one.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![11]
    );
    assert!(!one.more);
    let at_expired = s.events_after(&A, 9, 1, ttl_ts + 10_000).await.unwrap();
    assert_eq!(at_expired.head, 11);
    // A retry of the expired event is still a duplicate.
    assert_eq!(s.append(&[ev(A, 30)]).await.unwrap(), vec![dup(10, 30)]);

    // Cursor: forward only, capped at the head, unknown device refused.
    s.set_cursor(&A, &D1, 5).await.unwrap();
    assert_eq!(s.device(&A, &D1).await.unwrap().unwrap().cursor, 5);
    s.set_cursor(&A, &D1, 3).await.unwrap();
    assert_eq!(s.device(&A, &D1).await.unwrap().unwrap().cursor, 5);
    s.set_cursor(&A, &D1, u64::MAX).await.unwrap();
    assert_eq!(s.device(&A, &D1).await.unwrap().unwrap().cursor, 11);
    assert_eq!(s.device(&A, &D2).await.unwrap().unwrap().cursor, 0);
    let unknown = DeviceId([0x77; 32]);
    assert!(matches!(
        s.set_cursor(&A, &unknown, 1).await,
        Err(StoreError::NotFound)
    ));

    // Revocation: once per signed message; the first revoked_at stays.
    let sig = [0x42; 64];
    assert_eq!(
        s.revoke_device(&A, &D2, 111, &sig, 5000).await.unwrap(),
        RevokeOutcome::Revoked
    );
    assert_eq!(
        s.device(&A, &D2).await.unwrap().unwrap().revoked_at,
        Some(5000)
    );
    assert_eq!(
        s.revoke_device(&A, &D2, 111, &sig, 6000).await.unwrap(),
        RevokeOutcome::Replayed
    );
    let sig2 = [0x43; 64];
    assert_eq!(
        s.revoke_device(&A, &D2, 112, &sig2, 7000).await.unwrap(),
        RevokeOutcome::Revoked
    );
    assert_eq!(
        s.device(&A, &D2).await.unwrap().unwrap().revoked_at,
        Some(5000)
    );
    assert_eq!(
        s.revoke_device(&A, &unknown, 113, &sig, 7000)
            .await
            .unwrap(),
        RevokeOutcome::UnknownDevice
    );
    // D2 is A's device, not B's.
    assert_eq!(
        s.revoke_device(&B, &D2, 114, &sig, 7000).await.unwrap(),
        RevokeOutcome::UnknownDevice
    );
    // The same signed message for the other user's device is a different revocation.
    assert_eq!(
        s.revoke_device(&B, &D1, 111, &sig, 8000).await.unwrap(),
        RevokeOutcome::Revoked
    );
    // A revoked device that shows up again is reported as revoked.
    let back = s.register_device(&A, &D2, &cert(), 9000).await.unwrap();
    assert_eq!((back.revoked_at, back.last_seen), (Some(5000), 9000));
    assert_eq!(s.device(&A, &D1).await.unwrap().unwrap().revoked_at, None);

    // Retention: truncated_oldest once events after `after` are gone.
    assert_eq!(s.prune_before(&A, 4, 100).await.unwrap(), 3);
    let t = s.events_after(&A, 0, 100, now).await.unwrap();
    assert_eq!(t.truncated_oldest, Some(4));
    assert_eq!(t.events.first().map(|e| e.seq), Some(4));
    assert_eq!(
        s.events_after(&A, 2, 100, now)
            .await
            .unwrap()
            .truncated_oldest,
        Some(4)
    );
    assert_eq!(
        s.events_after(&A, 3, 100, now)
            .await
            .unwrap()
            .truncated_oldest,
        None
    );
    // Bounded batches: one event per call, watermark follows what was deleted.
    assert_eq!(s.prune_before(&A, 7, 1).await.unwrap(), 1);
    assert_eq!(
        s.events_after(&A, 0, 100, now)
            .await
            .unwrap()
            .truncated_oldest,
        Some(5)
    );
    assert_eq!(s.prune_before(&A, 7, 100).await.unwrap(), 2);
    assert_eq!(
        s.events_after(&A, 0, 100, now)
            .await
            .unwrap()
            .truncated_oldest,
        Some(7)
    );
    // Idempotent.
    assert_eq!(s.prune_before(&A, 7, 100).await.unwrap(), 0);
    // Everything: the watermark stops at the head, and seqs are never reused.
    assert_eq!(s.prune_before(&A, u64::MAX, 1000).await.unwrap(), 5);
    let all_gone = s.events_after(&A, 0, 100, now).await.unwrap();
    assert_eq!((all_gone.events.len(), all_gone.head), (0, 11));
    assert_eq!(all_gone.truncated_oldest, Some(12));
    assert_eq!(
        s.events_after(&A, 11, 100, now)
            .await
            .unwrap()
            .truncated_oldest,
        None
    );
    assert_eq!(s.append(&[ev(A, 40)]).await.unwrap(), vec![stored(12, 40)]);
    assert_eq!(seqs(s, A, 11, 100, now).await, vec![12]);
    assert_eq!(
        s.prune_before(&UserId([0xEE; 32]), 100, 100).await.unwrap(),
        0
    );

    // Isolation: B's reads hold only B's events, and A's pruning did not touch them.
    let b = s.events_after(&B, 0, 100, now).await.unwrap();
    assert_eq!(
        b.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(b.events.iter().all(|e| e.payload.starts_with(&B.0[..4])));
    assert_eq!(b.truncated_oldest, None);
    let a = s.events_after(&A, 0, 100, now).await.unwrap();
    assert!(a.events.iter().all(|e| e.payload.starts_with(&A.0[..4])));
}

/// Appends `per_task` events of `user` from each of `tasks` tasks, through the given
/// stores (round robin), mixing single events, batches, retries and a second user.
/// Checks every outcome and that the log is exactly 1..=N with each id once.
async fn hammer(stores: Vec<Arc<dyn Store>>, tasks: u128, per_task: u128) {
    let user = UserId([0xC3; 32]);
    let other = UserId([0xD4; 32]);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = stores[t as usize % stores.len()].clone();
        handles.push(tokio::spawn(async move {
            let mut acked: HashMap<Uuid, u64> = HashMap::new();
            let mut next = 0u128;
            let mut round = 0usize;
            while next < per_task {
                // Sizes 1, 7, 1, 23, …: single publishes and group-commit batches.
                let size = [1, 7, 1, 23, 1, 50][round % 6].min((per_task - next) as usize);
                round += 1;
                let mut batch: Vec<NewEvent> = (0..size as u128)
                    .map(|i| ev(user, t * 1_000_000 + next + i))
                    .collect();
                next += size as u128;
                // Interleave the other user (both users' counters locked per batch)
                // and retry an id acked earlier (it must come back as a duplicate).
                batch.push(ev(other, t * 1_000_000 + next + 500_000));
                let retried = acked.iter().next().map(|(id, seq)| (*id, *seq));
                if let Some((rid, _)) = retried {
                    batch.push(NewEvent {
                        id: rid,
                        ..ev(user, 0)
                    });
                }
                let out = store.append(&batch).await.expect("append");
                assert_eq!(out.len(), batch.len());
                for (e, o) in batch.iter().zip(&out) {
                    match (o, retried) {
                        (AppendOutcome::Duplicate { seq, .. }, Some((rid, rseq)))
                            if e.id == rid =>
                        {
                            assert_eq!(*seq, rseq);
                        }
                        (AppendOutcome::Stored { seq, .. }, _) if e.user == user => {
                            assert_ne!(Some(e.id), retried.map(|r| r.0), "retry stored twice");
                            acked.insert(e.id, *seq);
                        }
                        (AppendOutcome::Stored { .. }, _) => {}
                        other => panic!("unexpected outcome {other:?} for {e:?}"),
                    }
                }
            }
            acked
        }));
    }
    let mut acked: HashMap<Uuid, u64> = HashMap::new();
    for h in handles {
        for (id, seq) in h.await.unwrap() {
            assert!(acked.insert(id, seq).is_none());
        }
    }
    let n = (tasks * per_task) as u64;
    let seqs: BTreeSet<u64> = acked.values().copied().collect();
    assert_eq!(seqs.len() as u64, n, "two acks share a seq");
    assert_eq!(
        seqs.into_iter().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );

    let store = &stores[0];
    let page = store
        .events_after(&user, 0, n as u32 + 10, T0)
        .await
        .unwrap();
    assert_eq!(page.head, n);
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    let logged: HashMap<Uuid, u64> = page.events.iter().map(|e| (e.id, e.seq)).collect();
    assert_eq!(logged, acked, "log and acks disagree");
    let others = store.events_after(&other, 0, 100_000, T0).await.unwrap();
    let other_seqs: Vec<u64> = others.events.iter().map(|e| e.seq).collect();
    assert_eq!(other_seqs, (1..=others.head).collect::<Vec<_>>());
}

/// The head stays where it was when the newest events go, whichever way they go
/// (expiry, pruning), and the next event takes the next seq: every read of the head
/// agrees, and so does the device cursor's cap.
async fn head_outlives_its_events(url: &str) {
    let store = open(url).await;
    let s = &*store;
    s.register_device(&A, &D1, &cert(), T0).await.unwrap();
    let expiring = |n| NewEvent {
        ttl: Some(1),
        ..ev(A, n)
    };
    let out = s
        .append(&[ev(A, 1), expiring(2), expiring(3)])
        .await
        .unwrap();
    assert_eq!(out, vec![stored(1, 1), stored(2, 2), stored(3, 3)]);
    // Both expiring events, the newest two of the log, go.
    assert_eq!(s.delete_expired(T0 + 10_000, 100).await.unwrap(), 2);
    assert_eq!(s.head(&A).await.unwrap(), 3);
    let page = s.events_after(&A, 0, 10, T0).await.unwrap();
    assert_eq!((page.head, page.events.len()), (3, 1));
    assert_eq!(s.device_and_head(&A, &D1).await.unwrap().unwrap().1, 3);
    let summary = s.users_page(None, 10).await.unwrap();
    assert_eq!(summary.iter().map(|u| u.head).collect::<Vec<_>>(), vec![3]);
    s.set_cursor(&A, &D1, 100).await.unwrap();
    assert_eq!(s.device(&A, &D1).await.unwrap().unwrap().cursor, 3);
    assert_eq!(s.append(&[ev(A, 4)]).await.unwrap(), vec![stored(4, 4)]);

    // Pruning the whole log, newest event included.
    assert_eq!(s.prune_before(&A, u64::MAX, 100).await.unwrap(), 2);
    assert_eq!(s.head(&A).await.unwrap(), 4);
    assert_eq!(s.append(&[ev(A, 5)]).await.unwrap(), vec![stored(5, 5)]);
    assert_eq!(seqs(s, A, 0, 10, T0).await, vec![5]);
    // The admin totals count the log from the watermark to the head.
    assert_eq!(s.stats().await.unwrap().events, 1);
}

async fn concurrent_appends_one_user(url: &str) {
    hammer(vec![open(url).await], 8, 250).await;
}

/// Two stores with their own pools on one database: two server instances.
async fn two_instances_one_database(url: &str) {
    hammer(vec![open(url).await, open(url).await], 8, 250).await;
}

/// `foreign_commits` moves for another store's commits on the same database and
/// never for the store's own writes (SQLite); PostgreSQL cannot tell.
async fn foreign_commits(url: &str) {
    let a = open(url).await;
    let Some(v0) = a.foreign_commits().await.unwrap() else {
        assert!(
            url.starts_with("postgres"),
            "SQLite says whether others wrote"
        );
        return;
    };
    a.register_device(&A, &D1, &cert(), T0).await.unwrap();
    a.append(&[ev(A, 1), ev(A, 2)]).await.unwrap();
    a.set_cursor(&A, &D1, 1).await.unwrap();
    a.touch_devices(&[(A, D1, T0 + 5)]).await.unwrap();
    a.revoke_device(&A, &D1, T0, &[7; 64], T0).await.unwrap();
    assert_eq!(a.events_after(&A, 0, 10, T0).await.unwrap().events.len(), 2);
    assert_eq!(
        a.foreign_commits().await.unwrap(),
        Some(v0),
        "own writes only"
    );

    let b = open(url).await;
    b.register_device(&B, &D2, &cert(), T0).await.unwrap();
    let v1 = a.foreign_commits().await.unwrap().unwrap();
    assert_ne!(v1, v0, "another store committed");
    assert_eq!(a.foreign_commits().await.unwrap(), Some(v1));
    // Another store's reads are not commits.
    b.devices(&A).await.unwrap();
    assert_eq!(a.foreign_commits().await.unwrap(), Some(v1));
}

/// Many devices seen for the first time at once (a storm of new devices, which
/// SQLite registers in groups): each gets its own row, a device registered twice at
/// once is one row, and a revoked device stays revoked when it shows up again.
async fn concurrent_first_sights(url: &str) {
    let store = open(url).await;
    let user = |n: u32| UserId([(n % 40) as u8 + 1; 32]);
    let device = |n: u32| {
        let mut d = [0xD0; 32];
        d[..4].copy_from_slice(&n.to_be_bytes());
        DeviceId(d)
    };
    store
        .register_device(&user(7), &device(7), &cert(), T0)
        .await
        .unwrap();
    store
        .revoke_device(&user(7), &device(7), T0, &[7; 64], T0)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..400u32)
        .map(|i| {
            let store = store.clone();
            // Every device twice, at once.
            let n = i / 2;
            tokio::spawn(async move {
                let r = store
                    .register_device(&user(n), &device(n), &cert(), T0 + i64::from(i))
                    .await
                    .unwrap();
                (n, r)
            })
        })
        .collect();
    for t in tasks {
        let (n, r) = t.await.unwrap();
        assert_eq!((r.user, r.device), (user(n), device(n)));
        assert_eq!(r.revoked_at.is_some(), n == 7, "device {n}");
    }
    let mut total = 0;
    for u in 0..40 {
        let devices = store.devices(&user(u)).await.unwrap();
        assert!(devices.iter().all(|d| d.user == user(u)));
        total += devices.len();
    }
    assert_eq!(total, 200);
}
