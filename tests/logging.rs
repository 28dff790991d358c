//! The log of the real `ferry serve` binary, with stderr redirected to a pipe as a
//! service manager or a log collector would: no colour codes, listener addresses as
//! `IP:PORT`, one JSON object per line with `log.format = "json"`, and no secret.

#[path = "common/child.rs"]
#[allow(unreachable_pub)]
mod child;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The fixed seed of the server key in these tests (it must never be logged).
const SEED: [u8; 32] = [0x5a; 32];

/// A port that was free a moment ago.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// What `ferry serve` logged until its admin listener was up.
struct Log {
    addr: SocketAddr,
    admin: SocketAddr,
    text: String,
}

/// Runs `ferry serve` in `dir` with no inherited `FERRY_*` variables (plus `env`),
/// stderr to a pipe, until it logs its admin listener; then stops it.
fn serve_log(dir: &Path, env: &[(&str, &str)]) -> Log {
    // A port taken between probing and binding makes the server exit: try anew.
    for _ in 0..3 {
        let (addr, admin) = (free_addr(), free_addr());
        let seed = ferry_proto::b64u::encode(&SEED);
        let mut child = child::ferry_serve(dir)
            .env("FERRY_SERVER_KEY", &seed)
            .env("FERRY_SERVER_LISTEN", addr.to_string())
            .env("FERRY_SERVER_ADMIN_LISTEN", admin.to_string())
            .env("FERRY_LOG", "info")
            .envs(env.iter().copied())
            .spawn()
            .expect("start the ferry binary");
        let rx = child::stderr_lines(&mut child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut text = String::new();
        let mut up = false;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    up |= line.contains("admin listener");
                    text.push_str(&line);
                    text.push('\n');
                    if up {
                        break;
                    }
                }
                // The process exited (or the deadline passed).
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        if up {
            return Log { addr, admin, text };
        }
        assert!(
            text.contains("in use"),
            "ferry serve did not start:\n{text}"
        );
    }
    panic!("no free ports for ferry");
}

fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn text_log_to_a_pipe_has_no_colour_codes_and_plain_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let log = serve_log(dir.path(), &[]);
    assert!(
        !log.text.contains("\x1b["),
        "escape sequences in a redirected log:\n{}",
        log.text.escape_debug()
    );
    let listening = lines_with(&log.text, "ferry listening");
    assert_eq!(listening.len(), 1, "{}", log.text);
    assert!(
        listening[0].contains(&format!("addr={}", log.addr)),
        "{}",
        listening[0]
    );
    let admin = lines_with(&log.text, "admin listener");
    assert!(
        admin[0].contains(&format!("addr={}", log.admin)),
        "{}",
        admin[0]
    );
    assert!(!log.text.contains("Some("), "{}", log.text);
    assert!(
        !log.text.contains(&ferry_proto::b64u::encode(&SEED)),
        "the server key reached the log"
    );
}

#[test]
fn json_log_is_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = serve_log(dir.path(), &[("FERRY_LOG_FORMAT", "json")]);
    assert!(!log.text.contains("\x1b["), "{}", log.text.escape_debug());
    let mut messages = Vec::new();
    for line in log.text.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("not a JSON object: {line}"));
        assert!(object["level"].is_string(), "{line}");
        assert!(object["timestamp"].is_string(), "{line}");
        let message = object["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{line}"));
        messages.push((message.to_string(), object.clone()));
    }
    let field = |message: &str, name: &str| {
        messages
            .iter()
            .find(|(m, _)| m == message)
            .unwrap_or_else(|| panic!("no {message:?} line in:\n{}", log.text))
            .1[name]
            .clone()
    };
    assert_eq!(field("ferry listening", "level"), "INFO");
    assert_eq!(
        field("ferry listening", "addr"),
        log.addr.to_string().as_str()
    );
    assert_eq!(
        field("admin listener (metrics, admin API)", "addr"),
        log.admin.to_string().as_str()
    );
    assert!(!log.text.contains(&ferry_proto::b64u::encode(&SEED)));
}
