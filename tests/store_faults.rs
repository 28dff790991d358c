//! Infrastructure faults (BAD-INPUTS §3.5) at the store boundary. The SQLite faults
//! (disk full, locked, read-only) are unit tests in `src/store/sqlite.rs`, where the
//! connection options can be tightened.

mod common;

use std::time::Duration;

use common::db::TestDb;
use ferry::store::{AppendOutcome, DeviceId, NewEvent, StoreError, StoreOptions, UserId, connect};
use sqlx::{Connection, PgConnection};

fn event(n: u128) -> NewEvent {
    NewEvent {
        user: UserId([9; 32]),
        id: uuid::Uuid::from_u128(n),
        device: DeviceId([8; 32]),
        payload: vec![1, 2, 3],
        key: None,
        base: None,
        ttl: None,
        ts: 1,
    }
}

/// F2: every connection of the pool is killed (a PostgreSQL restart or failover).
/// Calls fail fast with a retryable error or succeed; the pool reconnects by itself,
/// and no seq is lost or reused.
#[tokio::test]
async fn postgres_connections_killed_then_recovered() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let opts = StoreOptions {
        max_connections: 4,
        connect_timeout: Duration::from_secs(3),
        ..StoreOptions::default()
    };
    let store = connect(db.url(), &opts).await.unwrap();
    assert_eq!(
        store.append(&[event(1)]).await.unwrap(),
        vec![AppendOutcome::Stored { seq: 1, ts: 1 }]
    );

    let mut admin = PgConnection::connect(db.url()).await.unwrap();
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!killed.is_empty());
    admin.close().await.unwrap();

    let mut stored = vec![1];
    for n in 2..=10 {
        match store.append(&[event(n)]).await {
            Ok(out) => match out[..] {
                [AppendOutcome::Stored { seq, .. }] => stored.push(seq),
                ref other => panic!("{other:?}"),
            },
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("expected a retryable error, got {e:?}"),
        }
    }
    assert!(stored.len() >= 9, "the pool did not recover: {stored:?}");
    assert_eq!(stored, (1..=stored.len() as u64).collect::<Vec<_>>());
    store.ping().await.unwrap();
    drop(store);
    db.finish("postgres_connections_killed_then_recovered")
        .await;
}
