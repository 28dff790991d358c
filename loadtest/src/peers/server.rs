//! A peer's server as a child process: found in PATH, started on a free
//! loopback port with a fresh data directory, pinned like the baseline, probed
//! until it answers, its output kept in memory (so that logging is not counted
//! as bytes written to storage), killed and its data removed at the end.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader,
};
use tokio::net::TcpStream;

use super::{Peer, PeerOpts};
use crate::child::{TempDir, free_port};
use crate::net::Failure;

/// How long a server may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of the server's output kept for error messages.
const LOG_LINES: usize = 50;
/// Time limit of one idle connection's handshake.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How a peer's server ran, for the report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ServerInfo {
    /// The peer's name.
    pub(crate) peer: &'static str,
    /// `<binary> --version`.
    pub(crate) version: String,
    /// The command line (without the taskset prefix).
    pub(crate) command: String,
    pub(crate) pid: u32,
    /// The CPUs it was pinned to, if any.
    pub(crate) cpus: Option<String>,
    /// When an acked event is on disk.
    pub(crate) durability: &'static str,
}

/// A running peer server.
pub(super) struct PeerServer {
    child: tokio::process::Child,
    /// Where it listens.
    pub(super) addr: SocketAddr,
    /// Its process id (for `/proc` readings).
    pub(super) pid: u32,
    info: ServerInfo,
    log: Arc<Mutex<VecDeque<String>>>,
    /// Its data directory, removed when this is dropped (after the kill).
    _dir: TempDir,
}

impl PeerServer {
    /// Starts `peer`'s server on the `cpus` given and waits until it answers.
    pub(super) async fn start(
        peer: Peer,
        opts: &PeerOpts,
        cpus: Option<String>,
    ) -> anyhow::Result<Self> {
        let program = match peer {
            Peer::JetStream => &opts.nats_server,
            Peer::RedisStreams => &opts.redis_server,
        };
        let program = find_program(program).with_context(|| {
            format!(
                "{}: cannot find its server (install it, or pass --{})",
                peer.name(),
                match peer {
                    Peer::JetStream => "nats-server",
                    Peer::RedisStreams => "redis-server",
                }
            )
        })?;
        let version = version(&program)?;
        let parent = opts.peer_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = TempDir::new_in(&parent, peer.name(), false)?;
        let addr = free_port()?;
        let args = args(peer, addr.port(), dir.path());
        let command = std::iter::once(program.display().to_string())
            .chain(args.iter().map(|a| {
                if a.is_empty() {
                    "\"\"".into()
                } else {
                    a.clone()
                }
            }))
            .collect::<Vec<_>>()
            .join(" ");
        let (mut child, pid) = crate::baseline::spawn_pinned(
            program.clone(),
            args,
            cpus.as_deref(),
            Stdio::piped(),
            "the server",
        )?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(keep_tail(out, log.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(keep_tail(err, log.clone()));
        }
        let mut server = Self {
            child,
            addr,
            pid,
            info: ServerInfo {
                peer: peer.name(),
                version,
                command,
                pid,
                cpus,
                durability: peer.durability(),
            },
            log,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                // Let the output readers catch up.
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!(
                    "{} exited at start ({status}); its output ends with:\n{}",
                    server.info.command,
                    server.log_tail(20)
                );
            }
            if hello(peer, addr).await.is_ok() {
                return Ok(server);
            }
            if started.elapsed() > START_TIMEOUT {
                let tail = server.log_tail(20);
                server.stop().await;
                bail!(
                    "{} did not answer within {START_TIMEOUT:?}; its output ends with:\n{tail}",
                    peer.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How it runs.
    pub(super) fn info(&self) -> ServerInfo {
        self.info.clone()
    }

    /// The last `lines` lines of its output.
    pub(super) fn log_tail(&self, lines: usize) -> String {
        let log = self.log.lock().expect("log lock");
        let skip = log.len().saturating_sub(lines);
        log.iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Kills it (our own child, by handle) and removes its data directory.
    pub(super) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// The server's arguments: a loopback port, `dir` for its data.
fn args(peer: Peer, port: u16, dir: &Path) -> Vec<String> {
    let port = port.to_string();
    let dir = dir.display().to_string();
    let v: Vec<&str> = match peer {
        Peer::JetStream => vec!["-a", "127.0.0.1", "-p", &port, "-js", "-sd", &dir],
        Peer::RedisStreams => vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir,
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
    };
    v.into_iter().map(str::to_string).collect()
}

/// `program` when it names a file (has a `/`), else the first match in PATH.
fn find_program(program: &Path) -> anyhow::Result<PathBuf> {
    if program.components().count() > 1 {
        if program.is_file() {
            return Ok(program.to_path_buf());
        }
        bail!("{} does not exist", program.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{} is not in PATH", program.display()))
}

/// The first line of `program --version`.
fn version(program: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} --version", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // `Redis server v=7.0.15 sha=… malloc=… bits=64 build=…`: up to the version.
    let first = text.lines().next().unwrap_or("");
    Ok(first.split(" sha=").next().unwrap_or("").trim().to_string())
}

/// Keeps the last [`LOG_LINES`] lines of a child's output.
async fn keep_tail(out: impl AsyncRead + Unpin, log: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut log = log.lock().expect("log lock");
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

/// Opens a client connection to `peer` at `addr` and completes its handshake:
/// NATS: the server's INFO, our CONNECT and PING, its PONG; Redis: PING, PONG.
/// The connection is then idle (the readiness probe, and the idle measurement).
pub(super) async fn hello(peer: Peer, addr: SocketAddr) -> Result<TcpStream, Failure> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| Failure::Connect(format!("{:?}", e.kind()).to_ascii_lowercase()))?;
        tcp.set_nodelay(true)
            .map_err(|_| Failure::Transport("io"))?;
        let mut buf = Vec::with_capacity(1024);
        match peer {
            Peer::JetStream => {
                read_until(&mut tcp, &mut buf, b"\r\n").await?;
                if !buf.starts_with(b"INFO ") {
                    return Err(Failure::Protocol("nats_no_info"));
                }
                buf.clear();
                tcp.write_all(
                    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"ferry-load\",\
                      \"version\":\"0\",\"protocol\":1,\"echo\":false}\r\nPING\r\n",
                )
                .await
                .map_err(|_| Failure::Transport("io"))?;
                read_until(&mut tcp, &mut buf, b"\r\n").await?;
                if buf.starts_with(b"-ERR") {
                    return Err(Failure::Protocol("nats_err"));
                }
                if !buf.starts_with(b"PONG") {
                    return Err(Failure::Protocol("nats_no_pong"));
                }
            }
            Peer::RedisStreams => {
                tcp.write_all(b"PING\r\n")
                    .await
                    .map_err(|_| Failure::Transport("io"))?;
                read_until(&mut tcp, &mut buf, b"\r\n").await?;
                if !buf.starts_with(b"+PONG") {
                    return Err(Failure::Protocol("redis_no_pong"));
                }
            }
        }
        Ok(tcp)
    };
    tokio::time::timeout(HELLO_TIMEOUT, exchange)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

/// Reads into `buf` until it holds `end`.
async fn read_until(tcp: &mut TcpStream, buf: &mut Vec<u8>, end: &[u8]) -> Result<(), Failure> {
    let mut chunk = [0u8; 1024];
    while !buf.windows(end.len()).any(|w| w == end) {
        match tcp.read(&mut chunk).await {
            Ok(0) => return Err(Failure::Transport("eof")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Err(Failure::Transport("io")),
        }
        if buf.len() > 64 * 1024 {
            return Err(Failure::Protocol("line_too_long"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let dir = Path::new("/d");
        assert_eq!(
            args(Peer::JetStream, 4300, dir).join(" "),
            "-a 127.0.0.1 -p 4300 -js -sd /d"
        );
        assert_eq!(
            args(Peer::RedisStreams, 6400, dir),
            [
                "--port",
                "6400",
                "--bind",
                "127.0.0.1",
                "--dir",
                "/d",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always"
            ]
        );
    }

    #[test]
    fn programs_are_found_in_path() {
        assert!(find_program(Path::new("sh")).unwrap().is_absolute());
        assert!(find_program(Path::new("/nonexistent/nats-server")).is_err());
        let missing = find_program(Path::new("no-such-server-here")).unwrap_err();
        assert!(missing.to_string().contains("not in PATH"), "{missing}");
    }

    #[tokio::test]
    async fn hello_speaks_both_protocols() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            // A NATS server, then a Redis server, then one that says nothing useful.
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"INFO {\"server_id\":\"x\"}\r\n")
                .await
                .unwrap();
            let mut buf = Vec::new();
            read_until(&mut s, &mut buf, b"PING\r\n").await.unwrap();
            assert!(buf.starts_with(b"CONNECT {"));
            s.write_all(b"PONG\r\n").await.unwrap();
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            read_until(&mut s, &mut buf, b"\r\n").await.unwrap();
            assert_eq!(buf, b"PING\r\n");
            s.write_all(b"+PONG\r\n").await.unwrap();
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"-ERR nope\r\n").await.unwrap();
            (s, l)
        });
        assert!(hello(Peer::JetStream, addr).await.is_ok());
        assert!(hello(Peer::RedisStreams, addr).await.is_ok());
        assert_eq!(
            hello(Peer::RedisStreams, addr).await.unwrap_err(),
            Failure::Protocol("redis_no_pong")
        );
        drop(server.await.unwrap());
        let closed = free_port().unwrap();
        assert!(matches!(
            hello(Peer::JetStream, closed).await,
            Err(Failure::Connect(_))
        ));
    }
}
