//! `relay --with-peers`: the relay pattern against servers a user might pick
//! instead of Ferry, in the same invocation, with the same device tasks, open-loop
//! clock, window, drain, exactly-once check and figures ([`run_pattern`]).
//!
//! Each peer is a child process that `ferry-load` starts on a free loopback port,
//! with a fresh data directory (removed afterwards), pinned to the CPUs of the
//! Ferry server (`--server-pid`) or `--baseline-cpus`, like the baseline; its CPU
//! time and the bytes it writes to storage are read from `/proc/<pid>`.
//!
//! - **`jetstream`**: `nats-server -a 127.0.0.1 -p PORT -js -sd DIR`, one
//!   file-backed stream `FERRY` over the subjects `ferry.<user>`. A device is one
//!   NATS connection: it publishes to its user's subject with JetStream publishes
//!   (the PubAck is the ack; its stream sequence is the `seq`) and reads its user's
//!   subject through an *ordered push consumer* filtered to it. That is the
//!   consumer a sync client would pick: like a Ferry device it keeps its own
//!   position (the last stream sequence it saw) and the server keeps nothing per
//!   device — an ephemeral, flow-controlled consumer without acks that delivers in
//!   stream order and that the client recreates from its last sequence after a
//!   gap or a reconnect (what NATS's own key-value watchers use). A durable pull
//!   consumer would keep each device's position on the server and need an ack
//!   per message and device. Caveat: nats-server 2.9 acks a publish once it is
//!   in the stream file's page cache, before fsync; it syncs every 2 minutes, and
//!   this version has no setting for it.
//! - **`redis-streams`**: `redis-server --port PORT --bind 127.0.0.1 --dir DIR
//!   --save "" --appendonly yes --appendfsync always`: the append-only file is
//!   written and fsynced before a reply, so an acked event is durable as with
//!   Ferry. A device publishes with `XADD ferry:<user> * p <payload>` on its own
//!   multiplexed connection (the reply, the entry ID, is the ack and the `seq`) and
//!   reads with `XREAD BLOCK 0 STREAMS ferry:<user> <last-id>` in a loop on a
//!   second, dedicated connection (a blocking read holds its connection).
//!
//! A peer delivers a device's own events back to it; the device's reader skips
//! them, as Ferry never sends them. Publishes are pipelined up to `--window`;
//! a failed publish is a refusal with its reason, a reader error ends the device's
//! session, and both fail the run, as for Ferry.
//!
//! After the runs, `--idle-connections N` opens N idle client connections to a
//! fresh server of each peer (and of the baseline) and reports the growth of its
//! RSS over N (Ferry's figure comes from `ferry-load idle`).

mod jetstream;
mod redis_streams;
mod server;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::check::Header;
use crate::common::{self, ConnArgs, say};
use crate::net::{self, Failure};
use crate::pattern::{Decoded, Outcome, Pattern, Ratios, run_pattern};
use crate::progress::{self, ServerProbe};
use crate::stats::{self, fmt_ratio};

use server::PeerServer;
pub(crate) use server::ServerInfo;

/// A server to compare Ferry with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Peer {
    /// NATS JetStream (`nats-server -js`), a file-backed stream.
    #[value(name = "jetstream")]
    JetStream,
    /// Redis Streams with an append-only file fsynced before each reply.
    #[value(name = "redis-streams")]
    RedisStreams,
}

impl Peer {
    /// Its name in the output.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::JetStream => "jetstream",
            Self::RedisStreams => "redis-streams",
        }
    }

    /// When an acked event is on disk.
    pub(crate) fn durability(self) -> &'static str {
        match self {
            Self::JetStream => {
                "acked before fsync: nats-server 2.9 syncs its stream files every 2 minutes \
                 and has no sync_interval setting"
            }
            Self::RedisStreams => {
                "acked after fsync: appendfsync always writes and fsyncs the append-only file \
                 before the replies"
            }
        }
    }
}

/// Options of `relay --with-peers`.
#[derive(Debug, clap::Args)]
pub(crate) struct PeerOpts {
    /// Also run the pattern against these servers (children started here, on the
    /// baseline's CPUs), before Ferry, and print one table: jetstream (NATS
    /// JetStream, file storage), redis-streams (Redis Streams, AOF fsync always).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "PEER,PEER")]
    pub(crate) with_peers: Vec<Peer>,
    /// With --with-peers: idle client connections to open to a fresh server of
    /// each peer (and of the baseline, with --with-baseline) for its memory per
    /// connection; 0 skips it. Ferry's: `ferry-load idle`.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub(crate) idle_connections: u32,
    /// Where the peers' fresh data directories go (each removed afterwards);
    /// default: the temporary directory. Put it on the file system of Ferry's
    /// data directory so the disk is the same.
    #[arg(long, value_name = "DIR")]
    pub(crate) peer_dir: Option<PathBuf>,
    /// The nats-server binary (2.9 or later; a name is looked up in PATH).
    #[arg(long, default_value = "nats-server", value_name = "PATH")]
    pub(crate) nats_server: PathBuf,
    /// The redis-server binary (a name is looked up in PATH).
    #[arg(long, default_value = "redis-server", value_name = "PATH")]
    pub(crate) redis_server: PathBuf,
}

impl PeerOpts {
    /// The peers asked for, each once, in the order given.
    pub(crate) fn peers(&self) -> Vec<Peer> {
        let mut out: Vec<Peer> = Vec::new();
        for p in &self.with_peers {
            if !out.contains(p) {
                out.push(*p);
            }
        }
        out
    }

    /// Refuses what cannot run: more connections than open files.
    pub(crate) fn check(&self, pat: &Pattern) -> anyhow::Result<()> {
        let peers = self.peers();
        if peers.is_empty() {
            return Ok(());
        }
        // Redis Streams: a publishing and a reading connection per device.
        let per_device = if peers.contains(&Peer::RedisStreams) {
            2
        } else {
            1
        };
        let need = (u64::from(pat.sessions()) * per_device).max(u64::from(self.idle_connections));
        let limit = net::raise_fd_limit();
        if need + 64 > limit {
            bail!("the peers need {need} connections: more open files than the limit ({limit})");
        }
        Ok(())
    }
}

/// One peer's run of the pattern.
#[derive(Debug, Serialize)]
pub(crate) struct PeerRun {
    /// The server and how it ran.
    pub(crate) server: ServerInfo,
    /// The figures.
    pub(crate) outcome: Outcome,
}

/// Starts `peer`, connects the pattern's devices, runs the pattern, stops the
/// server (removing its data) and returns the figures.
pub(crate) async fn run(
    peer: Peer,
    pat: &Pattern,
    opts: &PeerOpts,
    conn: &ConnArgs,
    cpus: Option<String>,
    json: bool,
) -> anyhow::Result<PeerRun> {
    let server = PeerServer::start(peer, opts, cpus).await?;
    let info = server.info();
    say(
        json,
        &format!(
            "{}: {} pid {} on {} (CPUs {}), fresh data directory; {}",
            peer.name(),
            info.version,
            info.pid,
            server.addr,
            info.cpus.as_deref().unwrap_or("any"),
            peer.durability()
        ),
    );
    let probe = Some(ServerProbe::Pid(server.pid));
    let connect_started = Instant::now();
    let outcome = match peer {
        Peer::JetStream => match jetstream::connect(server.addr, pat, conn).await {
            Ok(wires) => {
                connected(json, wires.len(), connect_started);
                Ok(run_pattern(peer.name(), wires, pat, 1, probe).await)
            }
            Err(e) => Err(e),
        },
        Peer::RedisStreams => match redis_streams::connect(server.addr, pat, conn).await {
            Ok(wires) => {
                connected(json, wires.len(), connect_started);
                Ok(run_pattern(peer.name(), wires, pat, 1, probe).await)
            }
            Err(e) => Err(e),
        },
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let tail = server.log_tail(10);
            server.stop().await;
            return Err(e.context(format!("{}; its log ends with:\n{tail}", peer.name())));
        }
    };
    server.stop().await;
    say(json, &outcome.text());
    Ok(PeerRun {
        server: info,
        outcome,
    })
}

fn connected(json: bool, n: usize, since: Instant) {
    say(
        json,
        &format!(
            "connected {n} devices in {:.1} s",
            since.elapsed().as_secs_f64()
        ),
    );
}

/// A server's resident memory per idle client connection.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct IdleMemory {
    /// Connections opened and held.
    pub(crate) connections: u32,
    /// The server's RSS before they opened (a fresh server, settled), bytes.
    pub(crate) rss_before: u64,
    /// Its RSS with all of them open and settled, bytes.
    pub(crate) rss_after: u64,
    /// (after − before) / connections.
    pub(crate) bytes_per_connection: f64,
}

impl IdleMemory {
    fn of(connections: u32, rss_before: u64, rss_after: u64) -> Self {
        Self {
            connections,
            rss_before,
            rss_after,
            bytes_per_connection: (rss_after as f64 - rss_before as f64)
                / f64::from(connections.max(1)),
        }
    }

    /// One line for humans.
    pub(crate) fn text(&self, server: &str) -> String {
        format!(
            "{server}: {} idle connections: RSS {} → {} = {} per connection",
            self.connections,
            stats::bytes(self.rss_before),
            stats::bytes(self.rss_after),
            kib(self.bytes_per_connection)
        )
    }
}

/// How long a server settles before and after the idle connections open.
const SETTLE: Duration = Duration::from_secs(1);
/// Idle connections being opened at once.
const IDLE_CONCURRENCY: usize = 64;

/// Opens `n` idle client connections to a fresh `peer` server: a NATS client
/// that sent CONNECT and got its PONG, or a Redis client that got its PONG.
pub(crate) async fn idle_peer(
    peer: Peer,
    opts: &PeerOpts,
    cpus: Option<String>,
    n: u32,
) -> anyhow::Result<IdleMemory> {
    let server = PeerServer::start(peer, opts, cpus).await?;
    let addr = server.addr;
    let measured = measure_idle(server.pid, n, move |_| server::hello(peer, addr)).await;
    server.stop().await;
    measured
}

/// Opens `n` idle WebSockets, each in a group of its own, to a fresh baseline
/// broadcast server.
pub(crate) async fn idle_baseline(cpus: Option<String>, n: u32) -> anyhow::Result<IdleMemory> {
    let child = crate::baseline::Child::spawn(
        crate::baseline::Mode::Broadcast,
        cpus,
        Duration::from_secs(300),
    )
    .await?;
    let target = child.target("/");
    let measured = measure_idle(child.pid, n, move |i| {
        let t = target.with_path(&format!("/g/idle-{i}"));
        async move { net::open(&t, None).await }
    })
    .await;
    child.stop().await;
    measured
}

/// RSS of `pid` after it settled, `n` connections made by `open`, RSS after they
/// settled; then closes them.
async fn measure_idle<C, F, Fut>(pid: u32, n: u32, open: F) -> anyhow::Result<IdleMemory>
where
    C: Send + 'static,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Result<C, Failure>> + Send + 'static,
{
    tokio::time::sleep(SETTLE).await;
    let before = progress::read_proc(pid)?.rss_bytes;
    let conns = connect_all("idle", n, IDLE_CONCURRENCY, open).await?;
    tokio::time::sleep(SETTLE).await;
    let after = progress::read_proc(pid)?.rss_bytes;
    drop(conns);
    Ok(IdleMemory::of(n, before, after))
}

/// Runs `connect(i)` for every `i` in `0..n`, `concurrency` at a time
/// ([`net::open_each`]); the connections in order, or an error naming the failures.
async fn connect_all<C, F, Fut>(
    what: &str,
    n: u32,
    concurrency: usize,
    connect: F,
) -> anyhow::Result<Vec<C>>
where
    C: Send + 'static,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Result<C, Failure>> + Send + 'static,
{
    net::open_each(n, concurrency, connect)
        .await
        .or_else(|failures| {
            bail!(
                "{} of {n} {what} connections failed: {}",
                failures.values().sum::<u64>(),
                common::failures_line(&failures)
            )
        })
}

/// One received event or reader failure, with the time it arrived.
type Event = Result<(Instant, Decoded), Failure>;
/// Events a device's reader task may queue ahead of the device task.
const EVENT_QUEUE: usize = 4096;

/// What a device task reads from a peer: the replies to its pipelined publishes
/// (as they complete) and the events its reader task forwards.
struct Inbox {
    replies: FuturesUnordered<BoxFuture<'static, Decoded>>,
    events: mpsc::Receiver<Event>,
    reader: tokio::task::JoinHandle<()>,
}

impl Inbox {
    /// An inbox fed by the reader task `reader` through `events`.
    fn new(events: mpsc::Receiver<Event>, reader: tokio::task::JoinHandle<()>) -> Self {
        Self {
            replies: FuturesUnordered::new(),
            events,
            reader,
        }
    }

    /// Waits for the reply of a publish (polled from [`Self::next`]).
    fn push(&mut self, reply: impl Future<Output = Decoded> + Send + 'static) {
        self.replies.push(Box::pin(reply));
    }

    /// The next reply or event (cancel-safe).
    async fn next(&mut self) -> Event {
        tokio::select! {
            Some(reply) = self.replies.next(), if !self.replies.is_empty() => {
                Ok((Instant::now(), reply))
            }
            event = self.events.recv() => event.unwrap_or(Err(Failure::Transport("reader_ended"))),
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// What a device's reader forwards for an entry stored at `seq`: an event, or
/// `None` for the device's own events (a peer delivers them back; Ferry does not).
fn delivery(me: u32, seq: u64, payload: &[u8]) -> Option<Decoded> {
    let header = Header::read(payload);
    if header.is_some_and(|h| h.origin == me) {
        return None;
    }
    Some(Decoded::Event { seq, header })
}

/// A failure label from an error kind's `Debug` name: `publish_timed_out` from
/// `("publish", TimedOut)`.
fn label(prefix: &str, kind: &impl std::fmt::Debug) -> String {
    let name = format!("{kind:?}");
    let name = name.split(['(', '{', ' ']).next().unwrap_or("");
    let mut out = format!("{prefix}_");
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A publish refused with `label`.
fn refused(counter: u64, label: String) -> Decoded {
    Decoded::Refused {
        counter: Some(counter),
        label,
    }
}

/// One row of the comparison table.
pub(crate) struct Row<'a> {
    /// The run's figures (its `server` names the row).
    pub(crate) outcome: &'a Outcome,
    /// Memory per idle connection, when measured.
    pub(crate) idle: Option<&'a IdleMemory>,
    /// Ferry's figures over this row's (none for Ferry's own row).
    pub(crate) vs_ferry: Option<&'a Ratios>,
}

/// Bytes as KiB with two decimals (may be negative: RSS can shrink).
fn kib(b: f64) -> String {
    format!("{:.2} KiB", b / 1024.0)
}

/// The comparison table: one row per server, then the notes.
pub(crate) fn table(rows: &[Row<'_>], idle_connections: u32) -> String {
    let header = [
        "server",
        "events/s",
        "deliveries/s",
        "CPU/event",
        "ack p50",
        "ack p99",
        "delivery p99",
        "written/event",
        "RSS/idle conn",
        "Ferry/x CPU",
        "Ferry/x dlv p99",
        "Ferry/x written",
    ];
    let na = || "n/a".to_string();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let o = r.outcome;
            let ratio = |f: fn(&Ratios) -> Option<f64>| {
                r.vs_ferry.map_or("–".into(), |x| fmt_ratio(f(x)))
            };
            vec![
                o.server.to_string(),
                format!("{:.0}", o.events_per_sec),
                format!("{:.0}", o.deliveries_per_sec),
                o.server_cpu_us_per_event
                    .map_or_else(na, |v| format!("{v:.1} µs")),
                stats::ms(o.ack_latency.p50_us),
                stats::ms(o.ack_latency.p99_us),
                stats::ms(o.delivery_latency.p99_us),
                o.server_write_bytes_per_event
                    .map_or_else(na, |v| format!("{v:.0} B")),
                r.idle.map_or_else(na, |m| kib(m.bytes_per_connection)),
                ratio(|x| x.server_cpu_per_event),
                ratio(|x| x.delivery_p99),
                ratio(|x| x.write_bytes_per_event),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            cells
                .iter()
                .map(|row| row[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |row: &[String]| {
        let mut s = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                s += cell;
                s += &" ".repeat(pad);
            } else {
                s += "  ";
                s += &" ".repeat(pad);
                s += cell;
            }
        }
        s.trim_end().to_string()
    };
    let mut s = line(&header.map(str::to_string));
    for row in &cells {
        s.push('\n');
        s += &line(row);
    }
    s += "\n(events/s: acked in the measured window; CPU and bytes written to storage \
          (/proc/<pid>/io write_bytes) per stored event over the measured window and the drain; \
          latencies from the publish";
    if idle_connections > 0 {
        let _ = write!(
            s,
            "; RSS/idle conn: a fresh server's RSS growth over {idle_connections} idle \
             connections (Ferry's: ferry-load idle)"
        );
    }
    s += ")";
    for r in rows {
        if r.outcome.server == Peer::JetStream.name() {
            let _ = write!(s, "\njetstream: {}", Peer::JetStream.durability());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Summary;

    #[test]
    fn peer_lists_parse() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            peers: PeerOpts,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([
            "relay",
            "--with-peers",
            "jetstream,redis-streams",
            "--with-peers",
            "jetstream",
        ])
        .unwrap();
        assert_eq!(cli.peers.peers(), [Peer::JetStream, Peer::RedisStreams]);
        assert_eq!(cli.peers.idle_connections, 1000);
        assert_eq!(cli.peers.nats_server, PathBuf::from("nats-server"));
        let cli = <Cli as clap::Parser>::try_parse_from([
            "relay",
            "--with-peers=redis-streams",
            "--idle-connections",
            "0",
            "--peer-dir",
            "/data",
        ])
        .unwrap();
        assert_eq!(cli.peers.peers(), [Peer::RedisStreams]);
        assert_eq!(cli.peers.idle_connections, 0);
        assert_eq!(cli.peers.peer_dir, Some(PathBuf::from("/data")));
        let none = <Cli as clap::Parser>::try_parse_from(["relay"]).unwrap();
        assert!(none.peers.peers().is_empty());
        assert!(<Cli as clap::Parser>::try_parse_from(["relay", "--with-peers", "kafka"]).is_err());
        assert_eq!(Peer::JetStream.name(), "jetstream");
        assert_eq!(Peer::RedisStreams.name(), "redis-streams");
    }

    #[test]
    fn own_events_are_skipped() {
        let mut payload = vec![0u8; 64];
        Header {
            origin: 3,
            counter: 7,
            sent_ns: 11,
        }
        .write(&mut payload);
        assert_eq!(delivery(3, 5, &payload), None);
        assert_eq!(
            delivery(4, 5, &payload),
            Some(Decoded::Event {
                seq: 5,
                header: Header::read(&payload)
            })
        );
        // Not one of ours: delivered as foreign (the check fails it).
        assert_eq!(
            delivery(4, 6, b"garbage"),
            Some(Decoded::Event {
                seq: 6,
                header: None
            })
        );
    }

    #[test]
    fn labels_from_error_kinds() {
        #[allow(dead_code)]
        #[derive(Debug)]
        enum Kind {
            TimedOut,
            StreamNotFound,
            Extension(String),
        }
        assert_eq!(label("publish", &Kind::TimedOut), "publish_timed_out");
        assert_eq!(
            label("publish", &Kind::StreamNotFound),
            "publish_stream_not_found"
        );
        assert_eq!(
            label("xadd", &Kind::Extension("X Y".into())),
            "xadd_extension"
        );
    }

    #[test]
    fn idle_memory_per_connection() {
        let m = IdleMemory::of(1000, 10 << 20, 30 << 20);
        assert_eq!(m.bytes_per_connection, 20_971.52);
        assert!(
            m.text("jetstream").ends_with("20.48 KiB per connection"),
            "{}",
            m.text("x")
        );
        // RSS may shrink; the figure says so rather than hiding it.
        assert!(IdleMemory::of(10, 2048, 1024).bytes_per_connection < 0.0);
        assert_eq!(IdleMemory::of(0, 0, 10).bytes_per_connection, 10.0);
    }

    fn outcome(server: &'static str, cpu: Option<f64>, written: Option<f64>, p99: u64) -> Outcome {
        let mut o = Outcome::named(server);
        o.events_per_sec = 600.0;
        o.deliveries_per_sec = 1200.0;
        o.server_cpu_us_per_event = cpu;
        o.server_write_bytes_per_event = written;
        o.ack_latency = Summary {
            count: 1,
            p50_us: 500,
            p99_us: 2_000,
            ..Summary::default()
        };
        o.delivery_latency = Summary {
            count: 1,
            p99_us: p99,
            ..Summary::default()
        };
        o
    }

    #[test]
    fn ratios_to_peers() {
        let ferry = outcome("ferry", Some(80.0), Some(8192.0), 8_000);
        let js = outcome("jetstream", Some(40.0), Some(512.0), 4_000);
        let baseline = outcome("baseline", Some(20.0), Some(0.0), 2_000);
        let r = Ratios::of(&ferry, &js);
        assert_eq!(r.server_cpu_per_event, Some(2.0));
        assert_eq!(r.delivery_p99, Some(2.0));
        assert_eq!(r.write_bytes_per_event, Some(16.0));
        // Nothing written by the other: no ratio rather than infinity.
        let r = Ratios::of(&ferry, &baseline);
        assert_eq!(r.write_bytes_per_event, None);
        assert_eq!(r.server_cpu_per_event, Some(4.0));
        // Not measured on either side: no ratio.
        let unmeasured = outcome("redis-streams", None, None, 4_000);
        let r = Ratios::of(&ferry, &unmeasured);
        assert_eq!(
            (r.server_cpu_per_event, r.write_bytes_per_event),
            (None, None)
        );
    }

    #[test]
    fn the_table_has_a_row_per_server() {
        let ferry = outcome("ferry", Some(80.0), Some(8192.0), 8_000);
        let js = outcome("jetstream", Some(40.0), Some(512.0), 4_000);
        let redis = outcome("redis-streams", None, None, 4_000);
        let (r_js, r_redis) = (Ratios::of(&ferry, &js), Ratios::of(&ferry, &redis));
        let idle = IdleMemory::of(100, 0, 102_400);
        let t = table(
            &[
                Row {
                    outcome: &js,
                    idle: Some(&idle),
                    vs_ferry: Some(&r_js),
                },
                Row {
                    outcome: &redis,
                    idle: None,
                    vs_ferry: Some(&r_redis),
                },
                Row {
                    outcome: &ferry,
                    idle: None,
                    vs_ferry: None,
                },
            ],
            100,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("server ") && lines[0].ends_with("Ferry/x written"),
            "{t}"
        );
        let js_row: Vec<&str> = lines[1]
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            js_row,
            [
                "jetstream",
                "600",
                "1200",
                "40.0 µs",
                "0.50 ms",
                "2.00 ms",
                "4.00 ms",
                "512 B",
                "1.00 KiB",
                "2.00×",
                "2.00×",
                "16.00×"
            ],
            "{t}"
        );
        assert!(
            lines[2].starts_with("redis-streams") && lines[2].contains("n/a"),
            "{t}"
        );
        assert!(
            lines[3].starts_with("ferry") && lines[3].ends_with('–'),
            "{t}"
        );
        // Columns line up: every row is as wide as the header.
        assert!(
            lines[..4]
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count()),
            "{t}"
        );
        assert!(t.contains("100 idle connections") && t.contains("jetstream: acked before fsync"));
    }
}
