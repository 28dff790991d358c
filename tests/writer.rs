//! The group-commit writer's batching rule on every backend (SQLite always,
//! PostgreSQL when `FERRY_TEST_POSTGRES_URL` is set): a publish that arrives within
//! `database.commit_interval` of the previous commit's start waits for the interval
//! and shares the next commit with what arrives meanwhile; with `0ms` every publish
//! is written at once. Acks come after the commit either way.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::db::databases;
use ferry::relay::hub::Hub;
use ferry::relay::writer::{WriteHealth, Writer};
use ferry::store::{AppendOutcome, DeviceId, NewEvent, StoreOptions, UserId, connect};
use ferry::telemetry::metrics::Metrics;
use tracing::Span;

const USER: UserId = UserId([7; 32]);

fn event(n: u128) -> NewEvent {
    NewEvent {
        user: USER,
        id: uuid::Uuid::from_u128(n),
        device: DeviceId([8; 32]),
        payload: vec![n as u8],
        key: None,
        base: None,
        ttl: None,
        ts: 1_000,
    }
}

fn seq(o: AppendOutcome) -> u64 {
    match o {
        AppendOutcome::Stored { seq, .. } => seq,
        other => panic!("not stored: {other:?}"),
    }
}

/// On the database at `url`, with a writer spaced by `commit_interval`: publishes
/// event 1 and waits for its ack, then event 2 at once and event 3 20 ms later.
/// Returns their seqs and the number of commits.
async fn one_then_two(url: &str, commit_interval: Duration) -> (Vec<u64>, u64) {
    let store = connect(url, &StoreOptions::default()).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let (writer, _task) = Writer::spawn(
        store.clone(),
        Hub::new(16, 1 << 20),
        metrics.clone(),
        16,
        Arc::new(WriteHealth::default()),
        commit_interval,
        ferry::clock::system(),
    );
    let first = writer.append(event(1), Span::none()).await.unwrap();
    let w = writer.clone();
    let second = tokio::spawn(async move { w.append(event(2), Span::none()).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let third = writer.append(event(3), Span::none()).await.unwrap();
    let second = second.await.unwrap().unwrap();
    let page = store.events_after(&USER, 0, 10, 2_000).await.unwrap();
    assert_eq!(page.events.len(), 3, "every acked event is in the log");
    (
        vec![seq(first), seq(second), seq(third)],
        metrics.batch_size.get_sample_count(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_soon_after_a_commit_waits_for_the_interval_and_shares_a_commit() {
    for db in databases().await {
        // Event 2 arrives right after event 1's commit began: it waits for the
        // interval (far longer than the 20 ms before event 3), and event 3 joins
        // its commit.
        let (seqs, commits) = one_then_two(db.url(), Duration::from_secs(2)).await;
        assert_eq!(seqs, [1, 2, 3], "{:?}", db.backend());
        assert_eq!(commits, 2, "{:?}", db.backend());
        db.finish("a_publish_soon_after_a_commit_waits_for_the_interval_and_shares_a_commit")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_interval_each_publish_is_written_at_once() {
    for db in databases().await {
        let (seqs, commits) = one_then_two(db.url(), Duration::ZERO).await;
        assert_eq!(seqs, [1, 2, 3], "{:?}", db.backend());
        assert_eq!(commits, 3, "{:?}", db.backend());
        db.finish("without_an_interval_each_publish_is_written_at_once")
            .await;
    }
}
