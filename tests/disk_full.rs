//! SQLite on a full disk (BAD-INPUTS F5), end to end: publishes fail with a clear,
//! retryable error and no ack, readiness reports the failing writes (503,
//! `database: write_failing`), and once space is freed the same publish succeeds
//! and readiness recovers, without a restart. The disk is a small tmpfs mounted for
//! the test (it needs root, as CI runs).

mod common;

use std::path::Path;
use std::process::Command;

use common::client::TestUser;
use common::http::{Api, login};
use common::server::TestServer;
use serde_json::json;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A tmpfs of `size` at `dir`, unmounted on drop.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, size: &str) -> Self {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs at {} failed",
            dir.display()
        );
        Self(dir)
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

async fn ready(api: &Api) -> common::http::Resp {
    api.get("/health/ready", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_publishes_clearly_and_recovers_without_restart() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test mounts a tmpfs and needs root, which CI has"
        );
        eprintln!("disk_full: not root, so no tmpfs can be mounted here; CI runs it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _disk = Tmpfs::mount(dir.path(), "4m");
    // Room to free later.
    let filler = dir.path().join("filler");
    std::fs::write(&filler, vec![0u8; 1536 * 1024]).unwrap();
    let url = format!("sqlite:{}", dir.path().join("ferry.db").display());
    let srv = TestServer::start(&url, &[("FERRY_LIMITS_EVENTS_PER_SEC", "10000")]).await;
    let api = Api::new(&srv);
    let tokens = login(&api, &TestUser::random().device()).await;
    assert_eq!(ready(&api).await.status, 200);

    // Publish 60 KiB events until the disk refuses one.
    let payload = ferry_proto::b64u::encode(&vec![5u8; 60 * 1024]);
    let mut stored = 0;
    let refused_id = loop {
        let id = common::client::new_event_id();
        let r = api
            .post(
                "/v1/events",
                Some(&tokens.access),
                json!({"id": id, "payload": payload}),
            )
            .await;
        match r.status {
            200 => stored += 1,
            503 => {
                r.error(503, "unavailable");
                break id;
            }
            other => panic!("publish: unexpected {other}: {}", r.text),
        }
        assert!(stored < 200, "the 4 MiB disk never filled");
    };
    assert!(stored > 0, "nothing was stored before the disk filled");

    // Not ready while writes fail, and it says why.
    let r = ready(&api).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json["checks"]["database"], "write_failing", "{}", r.text);
    // Reads still work.
    let r = api
        .get("/v1/events?after=0&limit=1", Some(&tokens.access))
        .await;
    assert_eq!(r.ok()["head"], stored);

    // Space comes back: the same publish (same id) is stored, and readiness recovers.
    std::fs::remove_file(&filler).unwrap();
    let r = api
        .post(
            "/v1/events",
            Some(&tokens.access),
            json!({"id": refused_id, "payload": payload}),
        )
        .await;
    assert_eq!(r.ok()["seq"], stored + 1, "{}", r.text);
    assert_eq!(r.json["duplicate"], false);
    let r = ready(&api).await;
    assert_eq!(r.status, 200, "{}", r.text);
    srv.stop().await;
}
