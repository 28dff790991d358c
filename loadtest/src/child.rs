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

    /// Starts `ferry serve` and waits until `/health/ready` answers 200, at most
    /// `within`; an error carries the tail of the server's log.
    pub(crate) async fn start_ready(&self, within: Duration) -> anyhow::Result<Child> {
        let mut child = self.spawn()?;
        let started = std::time::Instant::now();
        while !self.ready().await {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "the server ({}) exited at start ({status}); its log ends with:\n{}",
                    self.exe.display(),
                    self.log_tail(20)
                );
            }
            if started.elapsed() > within {
                let _ = child.start_kill();
                let _ = child.wait().await;
                bail!(
                    "the server was not ready within {within:?}; its log ends with:\n{}",
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(child)
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

/// A plain HTTP/1.1 request without a body to a loopback address, with extra
/// `headers`, answered within `timeout`: the status and the body (de-chunked).
pub(crate) async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    crate::net::check_loopback(addr.ip())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{method} {path}: no answer within {timeout:?}"))?
        .with_context(|| format!("{method} {path} to {addr}"))?;
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("{method} {path}: malformed HTTP response {text:?}");
    };
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3)?.parse().ok())
        .with_context(|| format!("{method} {path}: not an HTTP status line: {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body).with_context(|| format!("{method} {path}: malformed chunked body"))?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size_line, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// Sizes of the files of an SQLite database: the database and its write-ahead log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct SqliteFiles {
    /// `ferry.db`, bytes (0: missing).
    pub(crate) db_bytes: u64,
    /// `ferry.db-wal`, bytes (0: missing).
    pub(crate) wal_bytes: u64,
}

impl SqliteFiles {
    /// Stats `<data_dir>/ferry.db` and `<data_dir>/ferry.db-wal` (the database of
    /// a server with an empty database URL).
    pub(crate) fn of(data_dir: &Path) -> Self {
        let len = |name: &str| std::fs::metadata(data_dir.join(name)).map_or(0, |m| m.len());
        Self {
            db_bytes: len("ferry.db"),
            wal_bytes: len("ferry.db-wal"),
        }
    }
}

/// A PostgreSQL database made for one run, dropped on [`Self::drop_now`].
#[derive(Debug)]
pub(crate) struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    /// Creates `ferry_<what>_<random>` on the server of `admin_url` (with `psql`);
    /// returns it and its URL.
    pub(crate) fn create(admin_url: &str, what: &str) -> anyhow::Result<(Self, String)> {
        let name = format!("ferry_{what}_{:016x}", rand::random::<u64>());
        psql(admin_url, &format!("CREATE DATABASE {name}"))?;
        let url = with_database(admin_url, &name);
        Ok((
            Self {
                admin_url: admin_url.to_string(),
                name,
            },
            url,
        ))
    }

    /// Its name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Drops it (closing any connection still open to it).
    pub(crate) fn drop_now(self) -> anyhow::Result<()> {
        psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
    }
}

/// `url` with its database name replaced by `name` (the query string kept).
pub(crate) fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let authority_at = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_at..].find('/') {
        Some(i) => &base[..authority_at + i],
        None => base,
    };
    if query.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{server}/{name}?{query}")
    }
}

/// `scheme://user:PASSWORD@host…` with the password replaced by `***`, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    let authority_at = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_at..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..authority_at],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

/// Runs one SQL statement with `psql` (at most 10 s to connect).
fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .context("cannot run psql (the PostgreSQL client) to create or drop the run's database")?;
    if !out.status.success() {
        bail!(
            "psql -c {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
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
        Self::new_in(&std::env::temp_dir(), what, keep)
    }

    /// Creates `<parent>/ferry-load-<what>-<random>`, mode 0700.
    pub(crate) fn new_in(parent: &Path, what: &str, keep: bool) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let path = parent.join(format!("ferry-load-{what}-{:016x}", rand::random::<u64>()));
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

    #[tokio::test]
    async fn http_request_sends_headers_and_reads_the_body() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
            )
            .await
            .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let (status, body) = http_request(
            addr,
            "POST",
            "/admin/v1/x",
            &[("X-Admin-Key", "k")],
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        assert_eq!((status, body.as_str()), (200, "{\"a\":1}"));
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /admin/v1/x HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("X-Admin-Key: k\r\n") && req.contains("Content-Length: 0\r\n"));
        assert!(
            http_request(
                free_port().unwrap(),
                "GET",
                "/",
                &[],
                Duration::from_secs(1)
            )
            .await
            .is_err()
        );
    }

    #[test]
    fn database_urls() {
        let u = "postgres://postgres@127.0.0.1:5432/postgres";
        assert_eq!(
            with_database(u, "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "x"),
            "postgresql://u:p@h/x?sslmode=disable"
        );
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(
            redact_url("redis://:pw@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(dechunk("5\r\nhello\r\n0\r\n\r\n").as_deref(), Some("hello"));
        assert_eq!(dechunk("0\r\n\r\n").as_deref(), Some(""));
        assert_eq!(dechunk("5\r\nhel").as_deref(), None);
        assert_eq!(dechunk("zz\r\n").as_deref(), None);
    }

    #[test]
    fn sqlite_file_sizes() {
        let dir = TempDir::new("test", false).unwrap();
        assert_eq!(SqliteFiles::of(dir.path()), SqliteFiles::default());
        std::fs::write(dir.path().join("ferry.db"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("ferry.db-wal"), [0u8; 3]).unwrap();
        let f = SqliteFiles::of(dir.path());
        assert_eq!((f.db_bytes, f.wal_bytes), (10, 3));
    }
}
