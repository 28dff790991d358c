//! `ferry-load relay --with-peers jetstream,redis-streams` end to end, at a tiny
//! load, against real `nats-server` and `redis-server` binaries that ferry-load
//! starts itself (and the built-in baseline). Ferry is skipped (`--skip-ferry`):
//! this crate's tests do not build the `ferry` binary.
//!
//! Both servers must be installed (in PATH): a missing one fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// 3 users × 2 devices × 5 events/s for 2 s.
const USERS: u64 = 3;
const DEVICES: u64 = 2;
const IDLE: u64 = 50;

fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn require(name: &str) {
    assert!(
        in_path(name).is_some(),
        "{name} is not in PATH: this test needs it (install it; the test does not skip)"
    );
}

fn number(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is missing or not a number: {v}"))
}

fn run(peer_dir: &Path) -> (Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-load"))
        .args([
            "relay",
            "--users",
            &USERS.to_string(),
            "--devices",
            &DEVICES.to_string(),
            "--rate",
            "5",
            "--payload",
            "64",
            "--duration",
            "2s",
            "--drain",
            "10s",
            "--with-baseline",
            "--with-peers",
            "jetstream,redis-streams",
            "--idle-connections",
            &IDLE.to_string(),
            "--skip-ferry",
            "--json",
        ])
        .arg("--peer-dir")
        .arg(peer_dir)
        .output()
        .expect("run ferry-load");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "ferry-load relay --with-peers failed ({}):\n{stderr}",
        out.status
    );
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (doc, stderr)
}

/// Every publish stored and every event delivered to the user's other device,
/// and the server's CPU and bytes written read.
fn assert_complete(name: &str, o: &Value) {
    let published = o["published"].as_u64().unwrap();
    // 5/s for 2 s per device, give or take one at the window's edges.
    let per_device = published as f64 / (USERS * DEVICES) as f64;
    assert!(
        (9.0..=11.0).contains(&per_device),
        "{name}: published {published}"
    );
    assert_eq!(o["acked"], published, "{name}: every publish stored: {o}");
    assert_eq!(o["refused"], 0, "{name}: {o}");
    assert_eq!(o["unanswered"], 0, "{name}: {o}");
    assert_eq!(
        o["delivered"],
        published * (DEVICES - 1),
        "{name}: every event delivered to the user's other device once: {o}"
    );
    let check = &o["check"];
    assert_eq!(check["missing"], 0, "{name}: {check}");
    assert_eq!(
        check["expected"],
        published * (DEVICES - 1),
        "{name}: {check}"
    );
    assert_eq!(check["received"], check["expected"], "{name}: {check}");
    for k in [
        "unexpected",
        "duplicates",
        "order_violations",
        "seq_mismatches",
        "foreign",
    ] {
        assert_eq!(check[k], 0, "{name}: {k}: {check}");
    }
    assert_eq!(o["failures"], serde_json::json!({}), "{name}: {o}");
    assert_eq!(o["sessions_lost"], 0, "{name}: {o}");
    assert!(
        number(&o["events_per_sec"], "events_per_sec") > 0.0,
        "{name}"
    );
    assert!(
        number(&o["delivery_latency"]["p99_us"], "delivery p99") > 0.0,
        "{name}"
    );
    assert!(
        number(&o["ack_latency"]["p99_us"], "ack p99") > 0.0,
        "{name}"
    );
    // Read from /proc for every server: present, and not negative.
    for k in [
        "server_cpu_secs",
        "server_cpu_us_per_event",
        "server_write_bytes",
        "server_write_bytes_per_event",
    ] {
        assert!(number(&o[k], k) >= 0.0, "{name}: {k}");
    }
}

#[test]
fn peers_store_and_deliver_every_event() {
    require("nats-server");
    require("redis-server");
    require("taskset");
    // The peers' data on the target directory's disk (not a tmpfs), where an
    // fsync reaches the storage layer.
    let peer_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("peers-test");
    std::fs::create_dir_all(&peer_dir).unwrap();
    let (doc, stderr) = run(&peer_dir);
    assert_eq!(doc["ok"], true, "{stderr}");
    assert_eq!(doc["ferry"], Value::Null);

    assert_complete("baseline", &doc["baseline"]);
    let idle = &doc["baseline_idle"];
    assert_eq!(idle["connections"], IDLE, "{doc}");
    number(&idle["bytes_per_connection"], "baseline idle memory");

    let peers = doc["peers"].as_array().expect("peers");
    let names: Vec<&str> = peers.iter().map(|p| p["peer"].as_str().unwrap()).collect();
    assert_eq!(names, ["jetstream", "redis-streams"]);
    for p in peers {
        let name = p["peer"].as_str().unwrap();
        assert_complete(name, &p["outcome"]);
        assert_eq!(p["outcome"]["server"], name);
        assert!(p["server"]["pid"].as_u64().unwrap() > 0);
        assert!(!p["server"]["version"].as_str().unwrap().is_empty());
        assert_eq!(p["idle"]["connections"], IDLE, "{name}");
        number(&p["idle"]["bytes_per_connection"], "idle memory");
        assert!(
            number(&p["idle"]["rss_after"], "rss_after") > 0.0,
            "{name}: {}",
            p["idle"]
        );
    }
    let js = &peers[0]["server"];
    assert!(
        js["command"].as_str().unwrap().contains(" -js -sd "),
        "{js}"
    );
    assert!(js["durability"].as_str().unwrap().contains("before fsync"));
    let redis = &peers[1];
    assert!(
        redis["server"]["command"]
            .as_str()
            .unwrap()
            .ends_with("--appendonly yes --appendfsync always"),
        "{}",
        redis["server"]
    );
    // Every XADD is fsynced before its reply: the writes must show.
    assert!(
        number(&redis["outcome"]["server_write_bytes"], "redis bytes") > 0.0,
        "{}",
        redis["outcome"]
    );
    // The table went to stderr (--json), with a row per server.
    for row in ["\nbaseline ", "\njetstream ", "\nredis-streams "] {
        assert!(stderr.contains(row), "no {row:?} row in:\n{stderr}");
    }
    // The data directories are gone.
    let left: Vec<_> = std::fs::read_dir(&peer_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
