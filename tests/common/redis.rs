//! A Redis server of the test's own, on a free port, that the test can stop and
//! start again on the same port (an outage), started from the `redis-server`
//! binary on the `PATH`. It keeps nothing on disk. Or the shared one of
//! `FERRY_TEST_REDIS_URL` ([`url_from_env`]).

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// `FERRY_TEST_REDIS_URL` once it answers `PING`, or `None` outside CI when it is
/// unset or unreachable.
///
/// # Panics
/// With `CI` set, when the variable is missing or Redis does not answer.
pub async fn url_from_env() -> Option<String> {
    let url = match std::env::var("FERRY_TEST_REDIS_URL") {
        Ok(u) => u,
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("FERRY_TEST_REDIS_URL must be set in CI")
        }
        Err(_) => {
            eprintln!("FERRY_TEST_REDIS_URL not set: skipping the Redis suite");
            return None;
        }
    };
    let reachable = async {
        let client = redis::Client::open(url.as_str()).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut c).await.ok()
    };
    match reachable.await {
        Some(_) => Some(url),
        None if std::env::var_os("CI").is_some() => {
            panic!("Redis at FERRY_TEST_REDIS_URL is unreachable")
        }
        None => {
            eprintln!("Redis unreachable: skipping the Redis suite");
            None
        }
    }
}

/// A `redis-server` child process.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one, or returns `None` when `redis-server` is not installed outside CI.
    ///
    /// # Panics
    /// With `CI` set, when `redis-server` is missing or does not start.
    pub async fn start() -> Option<Self> {
        let found = std::process::Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if std::env::var_os("CI").is_some() {
                panic!("redis-server is not installed: the cluster suite needs it in CI");
            }
            eprintln!("redis-server not installed: skipping the cluster suite");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            port,
            child: None,
            _dir: tempfile::tempdir().unwrap(),
        };
        server.resume().await;
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (an outage: connections drop, new ones are refused).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("redis-server runs");
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// Starts it again on the same port (empty: it keeps nothing).
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self._dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        for _ in 0..500 {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok()
    }
}
