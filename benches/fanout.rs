//! In-memory fan-out: what the relay does with an event once it is committed —
//! `Hub::fanout_stored` hands it to every live session of its user, as the group-commit
//! writer (`relay::writer`, `relay_stored`) does for each stored event in commit
//! order — against the same number of pushes into plain `tokio::sync::mpsc`
//! channels of the same capacity (see `docs/benchmarks.md`). A session's own queue
//! is a locked `VecDeque` in its handle (`relay::Inbox`), which allocates nothing
//! while empty.
//!
//! No database, no network, no runtime: `Hub::register` and the queues need none.
//!
//! All benches live in one group, `fanout`; throughput is in deliveries (messages
//! queued for a session):
//!
//! - `hub/sessions_{1,3,10}`: one `Hub::fanout_stored` of a committed event to a user with
//!   1, 3 or 10 registered sessions, with `except` set to a device that has no
//!   session here (a REST publish, or a device connected to another instance), so
//!   every session receives it: shard lookup and lock, the device filter, one
//!   push into each session's queue.
//! - `raw/sessions_{1,3,10}`: the same message `try_send` into 1, 3 or 10 plain
//!   channels of the same capacity, the result matched as `SessionHandle::deliver`
//!   does: the floor any fan-out through bounded channels pays.
//! - `hub/batch_500x333x3`: the fan-out of one committed batch as the writer does
//!   it: 500 events interleaved over 333 users with 3 sessions each (the "Relay"
//!   load test's shape), each published by one of its user's devices and so
//!   delivered to the other two: 1,000 deliveries.
//! - `raw/batch_500x333x3`: the same 1,000 pushes into the same 999 channels, the
//!   targets of every event looked up beforehand.
//!
//! The message is the `event` JSON of a 256-byte payload (`writer::event_json`),
//! built once outside the measurement: `fanout` gets a `make` that clones the
//! `Arc`. Serializing it (≈ 0.5 µs per event, `json/encode_event_256` in
//! `benches/crypto.rs`) and the writer's two counter increments are left out, so
//! hub / raw is the hub's own overhead.
//!
//! # Queues never overflow, and draining is not measured
//!
//! Every session's queue holds 1,024 messages (the default `limits.outbound_queue`).
//! `iter_custom` times the operations in chunks (64 single fan-outs, or 4 batches:
//! at most 64 resp. 8 messages per queue), then empties every receiver outside the
//! timed window and asserts it got exactly what was fanned out to it. No session
//! is ever closed with 4009, and the receivers' work (the session loop's) is not
//! counted on either side. One `Instant::now` pair per chunk is in both sides.
//!
//! # Sequencing
//!
//! Group `sequencing`: the in-memory half of `Store::append` (`store::append`'s
//! `plan`, reached through `ferry::store::plan_batch`): numbering a batch per user
//! and deciding duplicates and compare-and-set conflicts, with the heads read
//! beforehand, as both backends do between their reads and their inserts.
//! `users_1000/batch_{100,500}` spreads the batch over 1,000 users,
//! `users_1/batch_500` puts it on one. Throughput in events.
//!
//! `cargo bench --bench fanout`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry::relay::hub::{Fanout, Hub, Inbox, Outbound};
use ferry::relay::writer::event_json;
use ferry::store::{DeviceId, NewEvent, UserId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Per-session queue capacity: the default `limits.outbound_queue`.
const QUEUE: usize = 1024;
/// Single fan-outs per timed window (≤ 64 messages queued per session).
const SINGLE_CHUNK: u64 = 64;
/// Batches per timed window (≤ 8 messages queued per session).
const BATCH_CHUNK: u64 = 4;
const BATCH: usize = 500;
const USERS: usize = 333;
const DEVICES: usize = 3;

fn user(i: usize) -> UserId {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(i as u64).to_be_bytes());
    UserId(k)
}

fn device(user: usize, d: usize) -> DeviceId {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(user as u64).to_be_bytes());
    k[8] = d as u8 + 1;
    DeviceId(k)
}

/// The `event` message of a stored 256-byte event, as the writer relays it.
fn message(user: UserId, device: DeviceId, n: u64) -> Outbound {
    let ev = NewEvent {
        user,
        id: uuid::Uuid::from_u128(u128::from(n) + 1),
        device,
        payload: vec![0xab; 256],
        key: None,
        base: None,
        ttl: None,
        ts: 1_767_225_600_000,
    };
    event_json(&ev, Some(n + 1), ev.ts)
}

/// Empties `rx` and returns how many messages it held.
fn drain(rx: &mut mpsc::Receiver<Outbound>) -> u64 {
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    n
}

/// Empties a session's inbox and returns how many messages it held.
fn drain_inbox(rx: &mut Inbox) -> u64 {
    let mut n = 0;
    while rx.try_recv().is_some() {
        n += 1;
    }
    n
}

/// Runs `op` `iters` times in timed windows of `chunk`, calling `check(n)`
/// (untimed) after each window of `n` operations. Returns the timed total.
fn chunked(iters: u64, chunk: u64, mut op: impl FnMut(), mut check: impl FnMut(u64)) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(chunk);
        let start = Instant::now();
        for _ in 0..n {
            op();
        }
        total += start.elapsed();
        check(n);
        left -= n;
    }
    total
}

/// What `SessionHandle::deliver` does with a `try_send` result, without the hub.
fn raw_deliver(tx: &mpsc::Sender<Outbound>, msg: &Outbound, out: &mut Fanout) {
    match tx.try_send(msg.clone()) {
        Ok(()) => out.delivered += 1,
        Err(mpsc::error::TrySendError::Full(_)) => out.overflowed += 1,
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

fn single(c: &mut Criterion) {
    let root = CancellationToken::new();
    let target = user(0);
    // Published by a device with no session on this instance: nobody is left out.
    let origin = device(0, 200);
    let msg = message(target, origin, 0);
    let mut g = c.benchmark_group("fanout");

    for sessions in [1usize, 3, 10] {
        g.throughput(Throughput::Elements(sessions as u64));

        let hub = Hub::new(QUEUE, usize::MAX);
        let mut links: Vec<_> = (0..sessions)
            .map(|d| hub.register(target, device(0, d), &root))
            .collect();
        let out = hub.fanout_stored(&target, Some(&origin), || msg.clone());
        assert_eq!(out.delivered, sessions as u64);
        for l in &mut links {
            assert_eq!(drain_inbox(&mut l.rx), 1);
        }

        g.bench_function(format!("hub/sessions_{sessions}"), |b| {
            b.iter_custom(|iters| {
                chunked(
                    iters,
                    SINGLE_CHUNK,
                    || {
                        black_box(
                            hub.fanout_stored(black_box(&target), Some(&origin), || msg.clone()),
                        );
                    },
                    |n| {
                        for l in &mut links {
                            assert_eq!(drain_inbox(&mut l.rx), n);
                        }
                    },
                )
            })
        });

        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..sessions)
            .map(|_| mpsc::channel::<Outbound>(QUEUE))
            .unzip();
        g.bench_function(format!("raw/sessions_{sessions}"), |b| {
            b.iter_custom(|iters| {
                chunked(
                    iters,
                    SINGLE_CHUNK,
                    || {
                        let mut out = Fanout::default();
                        for tx in black_box(&txs) {
                            raw_deliver(tx, &msg, &mut out);
                        }
                        black_box(out);
                    },
                    |n| {
                        for rx in &mut rxs {
                            assert_eq!(drain(rx), n);
                        }
                    },
                )
            })
        });
    }
    g.finish();
}

/// One committed event of the batch: its user, the publishing device and the
/// indexes (into `user * DEVICES + device`) of the sessions it goes to.
struct Committed {
    user: UserId,
    origin: DeviceId,
    msg: Outbound,
    targets: [usize; DEVICES - 1],
}

fn batch(c: &mut Criterion) {
    let root = CancellationToken::new();
    let events: Vec<Committed> = (0..BATCH)
        .map(|i| {
            // 7919 is prime to 333: every user once, then 167 of them twice.
            let u = (i * 7919) % USERS;
            let o = i % DEVICES;
            let mut targets = [0; DEVICES - 1];
            for (t, d) in targets.iter_mut().zip((0..DEVICES).filter(|&d| d != o)) {
                *t = u * DEVICES + d;
            }
            Committed {
                user: user(u),
                origin: device(u, o),
                msg: message(user(u), device(u, o), i as u64),
                targets,
            }
        })
        .collect();
    // Messages each session receives per batch.
    let mut per_batch = vec![0u64; USERS * DEVICES];
    for e in &events {
        for &t in &e.targets {
            per_batch[t] += 1;
        }
    }
    let deliveries: u64 = per_batch.iter().sum();
    assert_eq!(deliveries, (BATCH * (DEVICES - 1)) as u64);

    let hub = Hub::new(QUEUE, usize::MAX);
    let mut links: Vec<_> = (0..USERS * DEVICES)
        .map(|s| hub.register(user(s / DEVICES), device(s / DEVICES, s % DEVICES), &root))
        .collect();
    let name = format!("batch_{BATCH}x{USERS}x{DEVICES}");
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(deliveries));

    // The writer's loop over a committed batch, in commit order.
    let relay = |hub: &Hub| {
        let mut delivered = 0;
        for e in black_box(&events) {
            delivered += hub
                .fanout_stored(&e.user, Some(&e.origin), || e.msg.clone())
                .delivered;
        }
        delivered
    };
    assert_eq!(relay(&hub), deliveries);
    for (l, &n) in links.iter_mut().zip(&per_batch) {
        assert_eq!(drain_inbox(&mut l.rx), n);
    }

    g.bench_function(format!("hub/{name}"), |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                BATCH_CHUNK,
                || {
                    black_box(relay(&hub));
                },
                |n| {
                    for (l, &k) in links.iter_mut().zip(&per_batch) {
                        assert_eq!(drain_inbox(&mut l.rx), n * k);
                    }
                },
            )
        })
    });

    let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..USERS * DEVICES)
        .map(|_| mpsc::channel::<Outbound>(QUEUE))
        .unzip();
    g.bench_function(format!("raw/{name}"), |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                BATCH_CHUNK,
                || {
                    let mut out = Fanout::default();
                    for e in black_box(&events) {
                        for &t in &e.targets {
                            raw_deliver(&txs[t], &e.msg, &mut out);
                        }
                    }
                    black_box(out);
                },
                |n| {
                    for (rx, &k) in rxs.iter_mut().zip(&per_batch) {
                        assert_eq!(drain(rx), n * k);
                    }
                },
            )
        })
    });
    g.finish();
}

fn sequencing(c: &mut Criterion) {
    let mut g = c.benchmark_group("sequencing");
    for (users, batch) in [(1000usize, 100usize), (1000, 500), (1, 500)] {
        let events: Vec<NewEvent> = (0..batch)
            .map(|i| NewEvent {
                user: user((i * 7919) % users),
                id: uuid::Uuid::from_u128(i as u128 + 1),
                device: device(0, 0),
                payload: vec![0xab; 256],
                key: None,
                base: None,
                ttl: None,
                ts: 1_767_225_600_000,
            })
            .collect();
        let heads: std::collections::HashMap<UserId, u64> =
            (0..users).map(|u| (user(u), 1_000)).collect();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("users_{users}/batch_{batch}"), |b| {
            b.iter_batched(
                || heads.clone(),
                |heads| {
                    let outcomes = ferry::store::plan_batch(black_box(&events), heads);
                    assert_eq!(outcomes.len(), batch);
                    outcomes
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, sequencing, single, batch);
criterion_main!(benches);
