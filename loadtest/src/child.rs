//! A `ferry serve` child process for the scenarios that start, kill and restart
//! their own server: its binary, data directory, database, ports and environment
//! (`serve-env`'s, plus the scenario's own settings), and its readiness probe.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

/// How to start the server, the same way every time.
#[derive(Debug)]
pub(crate) struct ServerSpec {
    /// The `ferry` binary.
    pub(crate) exe: PathBuf,
    /// The main listener (`/v1/ws`, `/health/ready`).
    pub(crate) addr: SocketAddr,
    /// The admin listener (`/metrics`).
    pub(crate) admin: SocketAddr,
    /// Environment variables on top of the inherited ones.
    pub(crate) env: Vec<(String, String)>,
    /// Where its stderr goes (appended).
    pub(crate) log: PathBuf,
}

impl ServerSpec {
    /// A server on two free loopback ports with `data_dir`, `database_url` (empty:
    /// SQLite in the data directory), `serve-env`'s limits and the key `seed`,
    /// then `extra` (which wins over all of those).
    pub(crate) fn new(
        exe: PathBuf,
        data_dir: &Path,
        database_url: &str,
        seed: &[u8; 32],
        extra: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let addr = free_port()?;
        let admin = free_port()?;
        let mut env = crate::serve_env::vars(seed);
        env.push(("FERRY_SERVER_LISTEN".into(), addr.to_string()));
        env.push(("FERRY_SERVER_ADMIN_LISTEN".into(), admin.to_string()));
        env.push(("FERRY_DATA_DIR".into(), data_dir.display().to_string()));
        env.push(("FERRY_DATABASE_URL".into(), database_url.to_string()));
        env.push(("FERRY_LOG".into(), "warn".into()));
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push(((*k).to_string(), v.clone()));
        }
        Ok(Self {
            exe,
            addr,
            admin,
            env,
            log: data_dir.join("server.log"),
        })
    }

    /// Starts `ferry serve`; it is killed when the handle is dropped.
    pub(crate) fn spawn(&self) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        Command::new(&self.exe)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))
    }

    /// The WebSocket URL.
    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// The Prometheus endpoint.
    pub(crate) fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.admin)
    }

    /// Whether `GET /health/ready` answers 200 now.
    pub(crate) async fn ready(&self) -> bool {
        matches!(http_status(self.addr, "/health/ready").await, Ok(200))
    }

    /// The last `lines` lines of the server's log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The `ferry` binary beside this executable (both are built into the same
/// target directory), or `explicit`.
pub(crate) fn ferry_exe(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let me = std::env::current_exe().context("cannot find this executable")?;
    let exe = me.with_file_name("ferry");
    if !exe.exists() {
        bail!(
            "{} does not exist: build it (cargo build -p ferry, with the same profile) or pass --ferry",
            exe.display()
        );
    }
    Ok(exe)
}

/// A free TCP port on 127.0.0.1 (bound and released at once).
pub(crate) fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind a free port")?;
    Ok(l.local_addr()?)
}

/// The status of a plain HTTP/1.1 `GET path` on a loopback address, within 2 s.
pub(crate) async fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    crate::net::check_loopback(addr.ip())?;
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        anyhow::Ok(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .context("no answer within 2 s")??;
    let text = std::str::from_utf8(&head).unwrap_or("");
    match text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3)?.parse().ok())
    {
        Some(code) => Ok(code),
        None => bail!("not an HTTP/1.1 status line: {text:?}"),
    }
}

/// A temporary directory, removed on drop unless kept.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `$TMPDIR/ferry-load-<what>-<random>`, mode 0700.
    pub(crate) fn new(what: &str, keep: bool) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let path =
            std::env::temp_dir().join(format!("ferry-load-{what}-{:016x}", rand::random::<u64>()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path, keep })
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_layers_the_environment() {
        let dir = TempDir::new("test", false).unwrap();
        let spec = ServerSpec::new(
            PathBuf::from("/nonexistent/ferry"),
            dir.path(),
            "",
            &[1u8; 32],
            &[("FERRY_LIMITS_MAX_CONNECTIONS", "2000".into())],
        )
        .unwrap();
        let get = |k: &str| {
            spec.env
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("FERRY_LIMITS_MAX_CONNECTIONS"), ["2000"]);
        assert_eq!(get("FERRY_SERVER_LISTEN"), [spec.addr.to_string().as_str()]);
        assert_eq!(spec.ws_url(), format!("ws://{}/v1/ws", spec.addr));
        assert!(spec.spawn().is_err(), "a missing binary is an error");
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn http_status_reads_the_status_line() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
                .await
                .unwrap();
        });
        assert_eq!(http_status(addr, "/health/ready").await.unwrap(), 503);
        let closed = free_port().unwrap();
        assert!(http_status(closed, "/").await.is_err());
    }
}
