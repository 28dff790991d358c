//! A real server on port 0 for integration tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ferry::config::Config;
use ferry::server::Listeners;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Fixed seed of the test server key: tests pin its public key.
pub const SERVER_SEED: [u8; 32] = [7u8; 32];

/// The server's signing key in tests.
pub fn server_key() -> SigningKey {
    SigningKey::from_bytes(&SERVER_SEED)
}

/// A running server.
pub struct TestServer {
    /// Public listener address.
    pub addr: SocketAddr,
    /// Admin listener address.
    pub admin: SocketAddr,
    /// The database the server runs on.
    pub db_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ferry::server::ServerError>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server on `database_url` with extra `FERRY_*` settings.
    pub async fn start(database_url: &str, extra: &[(&str, &str)]) -> Self {
        Self::start_clocked(database_url, extra, ferry::clock::system()).await
    }

    /// [`Self::start`] with the server reading the time from `clock`.
    pub async fn start_clocked(
        database_url: &str,
        extra: &[(&str, &str)],
        clock: ferry::clock::SharedClock,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("FERRY_DATA_DIR".into(), dir.path().display().to_string());
        env.insert("FERRY_DATABASE_URL".into(), database_url.into());
        env.insert(
            "FERRY_SERVER_KEY".into(),
            ferry_proto::b64u::encode(&SERVER_SEED),
        );
        // Tests open many connections from 127.0.0.1.
        env.insert(
            "FERRY_LIMITS_HANDSHAKES_PER_IP_PER_SEC".into(),
            "10000".into(),
        );
        env.insert("FERRY_SERVER_SHUTDOWN_DEADLINE".into(), "5s".into());
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        let config =
            Config::load(None, &env).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        Self::start_with_clock(config, dir, clock).await
    }

    /// Starts a server with a prepared configuration.
    pub async fn start_with(config: Config, dir: tempfile::TempDir) -> Self {
        Self::start_with_clock(config, dir, ferry::clock::system()).await
    }

    /// [`Self::start_with`] with the server reading the time from `clock`.
    pub async fn start_with_clock(
        config: Config,
        dir: tempfile::TempDir,
        clock: ferry::clock::SharedClock,
    ) -> Self {
        let config_url = config.database.url.clone();
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = public.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ferry::server::run_with(
            config,
            Listeners {
                public,
                admin: Some(admin),
            },
            async move {
                let _ = stopped.await;
            },
            clock,
        ));
        let server = Self {
            addr,
            admin: admin_addr,
            db_url: config_url,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        // The listener is bound before `run` starts; readiness means the store is
        // open and the accept loop runs. Poll /health/ready (no sleeping guesses).
        for _ in 0..500 {
            if let Ok(body) = http_get(self.admin, "/health/ready").await
                && body.starts_with("HTTP/1.1 200")
            {
                return;
            }
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                panic!("server exited during start");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("server not ready");
    }

    /// `ws://addr/v1/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("server stops within its deadline")
                .unwrap()
                .unwrap();
        }
    }

    /// Starts shutdown without waiting.
    pub fn begin_stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Waits for `run` to return after [`Self::begin_stop`].
    pub async fn join(mut self) {
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("server stops within its deadline")
                .unwrap()
                .unwrap();
        }
    }
}

/// A minimal HTTP/1.1 GET returning the raw response text.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}
