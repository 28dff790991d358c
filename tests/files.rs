//! What Ferry writes to disk is readable by its own user only: the SQLite database,
//! its `-wal` and `-shm` files (0600), and the directories it creates for them
//! (0700). A real SQLite file in a directory that does not exist yet.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use ferry::store::{DeviceCert, DeviceId, StoreOptions, UserId};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn the_database_files_and_their_directory_are_private() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data").join("ferry");
    let db = dir.join("ferry.db");
    let url = format!("sqlite:{}", db.display());
    let store = ferry::store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    // A write, so the WAL and its index exist.
    let cert = DeviceCert {
        issued_at: 0,
        expires_at: 0,
        sig: [0; 64],
    };
    store
        .register_device(&UserId([1; 32]), &DeviceId([2; 32]), &cert, 0)
        .await
        .unwrap();
    for d in [root.path().join("data"), dir.clone()] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    for f in ["ferry.db", "ferry.db-wal", "ferry.db-shm"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    drop(store);
}
