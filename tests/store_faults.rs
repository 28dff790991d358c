//! Infrastructure faults (BAD-INPUTS §3.5) at the store boundary. The SQLite faults
//! (disk full, locked, read-only) are unit tests in `src/store/sqlite/mod.rs`, where the
//! connection options can be tightened.

mod common;

use std::time::Duration;

use common::db::TestDb;
use ferry::store::{
    AppendOutcome, Backend, DeviceId, NewEvent, StoreError, StoreOptions, UserId, connect,
};
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

/// A row the append path did not expect (a seq taken behind its back, i.e. a bug or
/// a hand edit) breaks the log's unique index mid-batch: the whole batch fails,
/// nothing of it is stored, and once the stray row is gone
/// the same batch is stored with the seqs it should have had. On SQLite this is the
/// `OR ROLLBACK` path: SQLite ends the transaction itself and the store replaces its
/// writer connection.
///
/// The stray row comes in differently per backend. On PostgreSQL it is written
/// before the batch: the append numbers from the locked `users.head` and collides
/// with it. On SQLite the append numbers from the log itself, so a row written
/// before the batch would only be taken as the head; a trigger writes it during the
/// batch instead, between the batch's own two rows, where the append cannot see it.
#[tokio::test]
async fn a_seq_taken_behind_the_stores_back_fails_the_batch_whole() {
    for db in common::db::databases().await {
        let store = connect(db.url(), &StoreOptions::default()).await.unwrap();
        let user = UserId([9; 32]);
        assert_eq!(
            store.append(&[event(1)]).await.unwrap(),
            vec![AppendOutcome::Stored { seq: 1, ts: 1 }]
        );
        // Seq 3 of the user, written past the store.
        db.exec(
            "CREATE TRIGGER stray AFTER INSERT ON events WHEN NEW.seq = 2 BEGIN \
               INSERT INTO events (user_id, seq, event_id, device_id, ts, payload) \
               VALUES (NEW.user_id, 3, randomblob(16), NEW.device_id, 1, x'00'); \
             END",
            "INSERT INTO events (user_id, seq, event_id, device_id, ts, payload) \
             VALUES ('\\x0909090909090909090909090909090909090909090909090909090909090909'::bytea, 3, decode(md5(random()::text), 'hex'), \
                     '\\x0808080808080808080808080808080808080808080808080808080808080808'::bytea, 1, '\\x00'::bytea)",
        )
        .await;

        // Seqs 2 and 3: the second insert breaks (user_id, seq).
        let batch = [event(2), event(3)];
        let err = store.append(&batch).await.unwrap_err();
        assert!(
            !matches!(err, StoreError::Unavailable(_)),
            "a broken constraint is not a retryable outage: {err:?}"
        );
        // On SQLite the stray row went with the failed transaction; on PostgreSQL
        // it stays, and the head counts it (the log's newest seq).
        let (head, kept) = match db.backend() {
            Backend::Sqlite => (1, vec![1]),
            Backend::Postgres => (3, vec![1, 3]),
        };
        assert_eq!(store.head(&user).await.unwrap(), head);
        let page = store.events_after(&user, 0, 10, 1).await.unwrap();
        let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, kept, "seq 2 of the failed batch was kept");
        assert!(page.events.iter().all(|e| e.id != event(3).id));

        db.exec("DROP TRIGGER stray", "DELETE FROM events WHERE seq = 3")
            .await;
        assert_eq!(
            store.append(&batch).await.unwrap(),
            vec![
                AppendOutcome::Stored { seq: 2, ts: 1 },
                AppendOutcome::Stored { seq: 3, ts: 1 }
            ]
        );
        assert_eq!(store.head(&user).await.unwrap(), 3);
        drop(store);
        db.finish("a_seq_taken_behind_the_stores_back_fails_the_batch_whole")
            .await;
    }
}
