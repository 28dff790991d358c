//! `relay::last_seen`: the `last_seen` times of ended sessions, written in batches
//! (`Store::touch_devices`) on a real SQLite file. The end-to-end path (written at
//! shutdown) is in `tests/ws_session.rs`.

use std::sync::Arc;

use ferry::relay::last_seen::LastSeen;
use ferry::store::{DeviceCert, DeviceId, Store, StoreOptions, UserId, connect};
use sqlx::{Connection, SqliteConnection};

const USER: UserId = UserId([5; 32]);
const DEVICE: DeviceId = DeviceId([6; 32]);

/// A fresh SQLite store with `DEVICE` of `USER` registered at t = 1,000, and its URL.
async fn store_with_device(dir: &tempfile::TempDir) -> (Arc<dyn Store>, String) {
    let url = format!("sqlite://{}", dir.path().join("l.db").display());
    let store = connect(&url, &StoreOptions::default()).await.unwrap();
    let cert = DeviceCert {
        issued_at: 0,
        expires_at: 0,
        sig: [0; 64],
    };
    store
        .register_device(&USER, &DEVICE, &cert, 1_000)
        .await
        .unwrap();
    (store, url)
}

async fn last_seen_of(store: &dyn Store, device: DeviceId) -> Option<i64> {
    store
        .device(&USER, &device)
        .await
        .unwrap()
        .map(|d| d.last_seen)
}

#[tokio::test]
async fn flush_writes_the_latest_time_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_with_device(&dir).await;
    let seen = LastSeen::default();
    seen.record(USER, DEVICE, 5_000);
    seen.record(USER, DEVICE, 4_000);
    seen.record(USER, DeviceId([7; 32]), 6_000);
    assert_eq!(seen.len(), 2);
    seen.flush(store.as_ref()).await;
    assert!(seen.is_empty());
    assert_eq!(last_seen_of(store.as_ref(), DEVICE).await, Some(5_000));
    // The unknown device was skipped, not created.
    assert_eq!(last_seen_of(store.as_ref(), DeviceId([7; 32])).await, None);
    // Nothing pending: a flush is a no-op.
    seen.flush(store.as_ref()).await;
    assert_eq!(last_seen_of(store.as_ref(), DEVICE).await, Some(5_000));
}

/// A flush that fails (here: the devices table is away) keeps the recorded times,
/// and the next flush writes them, a newer time winning.
#[tokio::test]
async fn a_failed_flush_is_retried_with_the_newest_time() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = store_with_device(&dir).await;
    let mut raw = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("ALTER TABLE devices RENAME TO devices_away")
        .execute(&mut raw)
        .await
        .unwrap();
    let seen = LastSeen::default();
    seen.record(USER, DEVICE, 7_000);
    seen.flush(store.as_ref()).await;
    assert_eq!(seen.len(), 1, "kept for the next flush");
    seen.record(USER, DEVICE, 8_000);
    sqlx::query("ALTER TABLE devices_away RENAME TO devices")
        .execute(&mut raw)
        .await
        .unwrap();
    seen.flush(store.as_ref()).await;
    assert!(seen.is_empty());
    assert_eq!(last_seen_of(store.as_ref(), DEVICE).await, Some(8_000));
}
