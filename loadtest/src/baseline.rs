//! `ferry-load baseline`: a minimal raw WebSocket server (tokio-tungstenite, the
//! same 4 KiB buffers as Ferry's defaults) with no handshake, no sealing, no JSON and no
//! storage — what the machine does when a relay costs nothing but the sockets.
//!
//! - `echo`: answers each data frame with the same frame.
//! - `broadcast`: the connection joins the group named by its path (`/g/<group>`,
//!   or `?group=<group>`). Each binary frame gets the group's next `seq`, goes to
//!   every *other* member as `[2][seq u64be][frame]` through a bounded queue that
//!   the member's own task drains (up to 256 frames per flush, like Ferry's
//!   session loop), and the sender gets `[1][seq u64be][frame[..24]]` as its ack.
//!   That is the fan-out pattern of `relay`, minus everything Ferry adds.
//!
//! `relay --with-baseline` (and `handshake`, `idle`) start this as a child process
//! (`ferry-load baseline … --port 0`), pinned like the server under test, and read
//! the bound address from its first line of output.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::accept_hdr_async_with_config;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::check::HEADER_LEN;

/// Frame kinds of broadcast mode.
pub(crate) const KIND_ACK: u8 = 1;
/// A relayed frame.
pub(crate) const KIND_EVENT: u8 = 2;
/// Queued frames per connection before a slow member loses frames.
const OUT_QUEUE: usize = 65_536;
/// Frames written per flush.
const MAX_BATCH: usize = 256;

/// What the baseline server does with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Answer each frame with itself.
    Echo,
    /// Relay each frame to the other members of its group, ack the sender.
    Broadcast,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Broadcast => "broadcast",
        }
    }
}

/// Arguments of `ferry-load baseline`.
#[derive(Debug, clap::Args)]
pub(crate) struct BaselineArgs {
    /// What to do with each frame.
    #[arg(long, value_enum, default_value = "echo")]
    pub(crate) mode: Mode,
    /// Port to listen on (0: any free port; the first line of output names it).
    #[arg(long, default_value_t = 9400)]
    pub(crate) port: u16,
    /// Address to listen on (127.0.0.0/8 only).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) listen: std::net::Ipv4Addr,
    /// Stop after this long (the server never runs unbounded).
    #[arg(long, default_value = "1h", value_parser = crate::stats::parse_duration)]
    pub(crate) max_time: Duration,
}

#[derive(Default)]
struct Group {
    seq: u64,
    members: Vec<(u64, mpsc::Sender<Bytes>)>,
}

#[derive(Default)]
struct State {
    groups: Mutex<HashMap<String, Arc<Mutex<Group>>>>,
    next_id: AtomicU64,
    dropped: AtomicU64,
}

/// The group a request path names: `/g/<group>` or `?group=<group>`; else `""`.
pub(crate) fn group_of(path_and_query: &str) -> String {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    if let Some(g) = path.strip_prefix("/g/") {
        return g.to_string();
    }
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("group="))
        .unwrap_or("")
        .to_string()
}

/// Runs `ferry-load baseline` until `--max-time` passes.
pub(crate) async fn run(args: &BaselineArgs) -> anyhow::Result<()> {
    crate::net::check_loopback(args.listen.into())?;
    crate::net::raise_fd_limit();
    let listener = TcpListener::bind(SocketAddr::from((args.listen, args.port)))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.listen, args.port))?;
    let addr = listener.local_addr()?;
    // The first line is read by the parent when this runs as a child.
    println!("listening {addr} mode={}", args.mode.as_str());
    let state = Arc::new(State::default());
    let mode = args.mode;
    let deadline = tokio::time::sleep(args.max_time);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = connection(tcp, mode, state).await;
                });
            }
        }
    }
    let dropped = state.dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        eprintln!("baseline: {dropped} frames dropped at full queues");
    }
    Ok(())
}

async fn connection(tcp: TcpStream, mode: Mode, state: Arc<State>) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let mut path = String::new();
    #[allow(clippy::result_large_err)] // the signature tungstenite's callback demands
    let callback = |req: &Request, resp: Response| {
        path = req.uri().to_string();
        Ok(resp)
    };
    let mut ws = accept_hdr_async_with_config(
        tcp,
        callback,
        Some(crate::net::ws_config(crate::net::SERVER_WS_BUFFER)),
    )
    .await?;
    match mode {
        Mode::Echo => {
            while let Some(msg) = ws.next().await {
                match msg? {
                    m @ (Message::Binary(_) | Message::Text(_)) => ws.send(m).await?,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = ws.close(None).await;
        }
        Mode::Broadcast => {
            let group = state
                .groups
                .lock()
                .expect("groups lock")
                .entry(group_of(&path))
                .or_default()
                .clone();
            let id = state.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, mut rx) = mpsc::channel::<Bytes>(OUT_QUEUE);
            group.lock().expect("group lock").members.push((id, tx));
            let result = async {
                loop {
                    tokio::select! {
                        biased;
                        msg = ws.next() => {
                            let frame = match msg {
                                Some(Ok(Message::Binary(b))) => b,
                                Some(Ok(Message::Close(_))) | None => break,
                                Some(Ok(_)) => continue,
                                Some(Err(e)) => return Err(e.into()),
                            };
                            let ack = relay(&group, id, &frame, &state);
                            ws.send(Message::Binary(ack)).await?;
                        }
                        Some(first) = rx.recv() => {
                            ws.feed(Message::Binary(first)).await?;
                            let mut n = 1;
                            while n < MAX_BATCH {
                                let Ok(next) = rx.try_recv() else { break };
                                ws.feed(Message::Binary(next)).await?;
                                n += 1;
                            }
                            ws.flush().await?;
                        }
                    }
                }
                anyhow::Ok(())
            }
            .await;
            group
                .lock()
                .expect("group lock")
                .members
                .retain(|(m, _)| *m != id);
            let _ = ws.close(None).await;
            result?;
        }
    }
    Ok(())
}

/// Assigns the next seq, queues the frame for the other members (in seq order,
/// under the group's lock) and returns the sender's ack.
fn relay(group: &Mutex<Group>, me: u64, frame: &[u8], state: &State) -> Bytes {
    let mut g = group.lock().expect("group lock");
    g.seq += 1;
    let seq = g.seq;
    let mut out = Vec::with_capacity(9 + frame.len());
    out.push(KIND_EVENT);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(frame);
    let out = Bytes::from(out);
    for (id, tx) in &g.members {
        if *id != me && tx.try_send(out.clone()).is_err() {
            state.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    drop(g);
    let mut ack = Vec::with_capacity(9 + HEADER_LEN);
    ack.push(KIND_ACK);
    ack.extend_from_slice(&seq.to_be_bytes());
    ack.extend_from_slice(&frame[..frame.len().min(HEADER_LEN)]);
    Bytes::from(ack)
}

/// A baseline server running as a child process.
pub(crate) struct Child {
    child: tokio::process::Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its process id (for `/proc` readings).
    pub(crate) pid: u32,
    /// The CPUs it was pinned to, if any.
    pub(crate) cpus: Option<String>,
}

impl Child {
    /// Starts `ferry-load baseline --mode MODE --port 0`, under `taskset -c CPUS`
    /// when `cpus` is given, for at most `max_time`.
    pub(crate) async fn spawn(
        mode: Mode,
        cpus: Option<String>,
        max_time: Duration,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let args: Vec<String> = vec![
            "baseline".into(),
            "--mode".into(),
            mode.as_str().into(),
            "--port".into(),
            "0".into(),
            "--max-time".into(),
            format!("{}s", max_time.as_secs().max(1)),
        ];
        let (mut child, pid) =
            spawn_pinned(exe, args, cpus.as_deref(), Stdio::inherit(), "the baseline")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("the baseline server did not start in 10 s")??
            .context("the baseline server exited before listening")?;
        let Some(addr) = first
            .strip_prefix("listening ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        else {
            bail!("unexpected first line from the baseline server: {first:?}");
        };
        Ok(Self {
            child,
            addr,
            pid,
            cpus,
        })
    }

    /// A `ws://` target on it with `path`.
    pub(crate) fn target(&self, path: &str) -> crate::net::Target {
        crate::net::Target::parse(&format!("ws://{}{path}", self.addr))
            .expect("the baseline listens on loopback")
    }

    /// Stops it (it is our own child, by handle).
    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// Starts `program args…` on `cpus` (a taskset list: `taskset -c CPUS program
/// args…`, which execs the program in the same process, so the child's pid is the
/// server's; without `cpus`, the program itself), with stdin closed, stdout piped,
/// `stderr` as given, and killed when dropped. Returns the child and its pid; `what`
/// names it in errors.
pub(crate) fn spawn_pinned(
    program: std::path::PathBuf,
    args: Vec<String>,
    cpus: Option<&str>,
    stderr: Stdio,
    what: &str,
) -> anyhow::Result<(tokio::process::Child, u32)> {
    let (program, args) = pinned(program, args, cpus);
    let child = tokio::process::Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let pid = child
        .id()
        .with_context(|| format!("{what} exited at once"))?;
    Ok((child, pid))
}

/// The program and arguments of [`spawn_pinned`]: `taskset -c CPUS program args…`,
/// or without `cpus` the program itself.
fn pinned(
    program: std::path::PathBuf,
    args: Vec<String>,
    cpus: Option<&str>,
) -> (std::path::PathBuf, Vec<String>) {
    match cpus {
        Some(list) => {
            let mut with = vec![
                "-c".to_string(),
                list.to_string(),
                program.display().to_string(),
            ];
            with.extend(args);
            (std::path::PathBuf::from("taskset"), with)
        }
        None => (program, args),
    }
}

/// The CPUs to pin a baseline to: `--baseline-cpus`, else those the server under
/// test may use (`--server-pid`), else none.
pub(crate) fn cpus_for(explicit: Option<&str>, server_pid: Option<u32>) -> Option<String> {
    explicit
        .map(str::to_string)
        .or_else(|| server_pid.and_then(crate::progress::cpus_allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_from_paths() {
        assert_eq!(group_of("/g/17"), "17");
        assert_eq!(group_of("/ws?group=abc&x=1"), "abc");
        assert_eq!(group_of("/"), "");
    }

    #[test]
    fn pinned_commands_go_through_taskset() {
        let (p, a) = pinned("srv".into(), vec!["-p".into(), "1".into()], Some("0-1"));
        assert_eq!(p, std::path::PathBuf::from("taskset"));
        assert_eq!(a, ["-c", "0-1", "srv", "-p", "1"]);
        let (p, a) = pinned("srv".into(), vec!["-p".into()], None);
        assert_eq!(
            (p.to_str(), a.as_slice()),
            (Some("srv"), ["-p".to_string()].as_slice())
        );
    }

    #[test]
    fn relay_orders_fans_out_and_acks() {
        let state = State::default();
        let group = Mutex::new(Group::default());
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let (tx_b, mut rx_b) = mpsc::channel(8);
        group.lock().unwrap().members = vec![(1, tx_a), (2, tx_b)];
        let frame = [9u8; 40];
        let ack = relay(&group, 1, &frame, &state);
        assert_eq!(ack[0], KIND_ACK);
        assert_eq!(u64::from_be_bytes(ack[1..9].try_into().unwrap()), 1);
        assert_eq!(&ack[9..], &frame[..HEADER_LEN]);
        assert!(rx_a.try_recv().is_err(), "the sender gets no copy");
        let got = rx_b.try_recv().unwrap();
        assert_eq!(got[0], KIND_EVENT);
        assert_eq!(&got[9..], &frame);
        let ack = relay(&group, 2, &frame, &state);
        assert_eq!(u64::from_be_bytes(ack[1..9].try_into().unwrap()), 2);
        assert_eq!(rx_a.try_recv().unwrap()[8], 2);
    }
}
