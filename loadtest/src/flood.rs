//! `ferry-load flood`: connections that hold a slot and never finish a request —
//! idle TCP connections (nothing sent), connections that send only the HTTP/2
//! preface, and slowloris connections (a WebSocket upgrade request, one byte a
//! second) — from many loopback source addresses, up to the server's per-IP and
//! global connection caps, while another client measures handshake and
//! publish→ack latency.
//!
//! It starts its own `ferry serve` (SQLite in a temporary directory, `serve-env`'s
//! limits but the connection caps of the run). The client's figures are measured on
//! the quiet server first, then under the flood, and reported side by side. Every
//! flood connection watches for the server closing it and records when; what is
//! still open at the end of `--hold` is reported as such. Last, a saturation probe
//! fills the remaining global slots, tries a few more handshakes and publishes, and
//! then a handshake every 250 ms until one succeeds (at most `--lockout-max`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferry_proto::handshake::{DeviceCredentials, ServerPin};
use futures_util::StreamExt as _;
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::child::{ServerSpec, TempDir};
use crate::common::{failures_line, say};
use crate::net::{self, Failures, Target};
use crate::progress::metric_sum;
use crate::stats::{self, SharedHistogram, Summary};

/// Arguments of `ferry-load flood`.
#[derive(Debug, clap::Args)]
pub(crate) struct FloodArgs {
    /// The `ferry` binary (default: `ferry` beside this executable).
    #[arg(long)]
    pub(crate) ferry: Option<PathBuf>,
    /// The server's global cap (`limits.max_connections`) for the run.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(10..=15_000))]
    pub(crate) max_connections: u32,
    /// The server's per-IP cap (`limits.max_connections_per_ip`) for the run.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=15_000))]
    pub(crate) max_per_ip: u32,
    /// Global slots the flood leaves free for the measuring client.
    #[arg(long, default_value_t = 16)]
    pub(crate) headroom: u32,
    /// How long the flood is held (from the moment it is open).
    #[arg(long, default_value = "60s", value_parser = stats::parse_duration)]
    pub(crate) hold: Duration,
    /// Handshakes the client times in each phase (one at a time).
    #[arg(long, default_value_t = 50)]
    pub(crate) handshakes: u32,
    /// Publishes the client times in each phase (one at a time, each to its ack).
    #[arg(long, default_value_t = 200)]
    pub(crate) publishes: u32,
    /// Once every global slot is taken, how long the client keeps trying to get a
    /// session (a handshake every 250 ms).
    #[arg(long, default_value = "20s", value_parser = stats::parse_duration)]
    pub(crate) lockout_max: Duration,
    /// Keep the data directory and the server's log.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Print the results as one JSON document on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What a flood connection sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    /// Connects and sends nothing.
    Idle,
    /// Sends the HTTP/2 client preface, then nothing.
    H2Preface,
    /// Sends a WebSocket upgrade request one byte a second.
    Slowloris,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::H2Preface => "h2 preface",
            Self::Slowloris => "slowloris",
        }
    }
}

const KINDS: [Kind; 3] = [Kind::Idle, Kind::H2Preface, Kind::Slowloris];
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What happened to one flood connection.
#[derive(Clone, Copy, Debug)]
struct Fate {
    kind: Kind,
    /// How long after it connected the server closed it; `None`: still open.
    closed_after: Option<Duration>,
}

/// The client's figures in one phase.
#[derive(Debug, Default, Serialize)]
struct Probe {
    handshake: Summary,
    handshake_failures: Failures,
    publish_ack: Summary,
    publish_failures: Failures,
}

impl Probe {
    fn line(&self, label: &str) -> String {
        format!(
            "{label}: handshake {} failures {}\n{:width$}  publish→ack {} failures {}",
            self.handshake.line(),
            failures_line(&self.handshake_failures),
            "",
            self.publish_ack.line(),
            failures_line(&self.publish_failures),
            width = label.len()
        )
    }
}

/// Times `handshakes` sequential handshakes of `hs_dev` and `publishes` sequential
/// publishes of `pub_dev`, each to its ack.
async fn probe(
    target: &Target,
    pin: ServerPin,
    hs_dev: &DeviceCredentials,
    pub_dev: &DeviceCredentials,
    handshakes: u32,
    publishes: u32,
) -> Probe {
    let timeout = Duration::from_secs(10);
    let mut p = Probe::default();
    let hs = SharedHistogram::default();
    for _ in 0..handshakes {
        let t = Instant::now();
        match net::connect(target, None, hs_dev.clone(), pin, timeout).await {
            Ok(s) => {
                hs.record(t.elapsed());
                s.close().await;
            }
            Err(f) => *p.handshake_failures.entry(f.label()).or_default() += 1,
        }
    }
    p.handshake = hs.summary();
    let acks = SharedHistogram::default();
    match net::connect(target, None, pub_dev.clone(), pin, timeout).await {
        Err(f) => *p.publish_failures.entry(f.label()).or_default() += publishes as u64,
        Ok(mut s) => {
            let mut id = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id[..8]);
            for i in 0..publishes {
                id[8..].copy_from_slice(&u64::from(i).to_be_bytes());
                let rid = i64::from(i) + 1;
                let t = Instant::now();
                let req = net::publish_json(rid as u64, &id, &[0x42; 64]);
                match tokio::time::timeout(timeout, s.request(req, rid)).await {
                    Ok(Ok(plain)) if plain.windows(12).any(|w| w == b"\"type\":\"ack\"") => {
                        acks.record(t.elapsed());
                    }
                    Ok(Ok(_)) => *p.publish_failures.entry("not_ack".into()).or_default() += 1,
                    Ok(Err(f)) => {
                        *p.publish_failures.entry(f.label()).or_default() += 1;
                        break;
                    }
                    Err(_) => {
                        *p.publish_failures.entry("timeout".into()).or_default() += 1;
                        break;
                    }
                }
            }
            s.close().await;
        }
    }
    p.publish_ack = acks.summary();
    p
}

/// Tries a handshake every 250 ms for at most `max`: how long until one succeeded
/// (`None`: none did), and how many were tried.
async fn lockout(
    target: &Target,
    pin: ServerPin,
    dev: &DeviceCredentials,
    max: Duration,
) -> (Option<Duration>, u32) {
    let started = Instant::now();
    let mut attempts = 0;
    while started.elapsed() < max {
        attempts += 1;
        match net::connect(target, None, dev.clone(), pin, Duration::from_secs(2)).await {
            Ok(s) => {
                let took = started.elapsed();
                s.close().await;
                return (Some(took), attempts);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    (None, attempts)
}

/// Opens a TCP connection from `source`.
async fn open_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source, 0))?;
    tokio::time::timeout(Duration::from_secs(5), sock.connect(to))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Holds one flood connection until `until` or `stop`; returns when the server
/// closed it.
async fn hold(
    kind: Kind,
    mut tcp: TcpStream,
    host: String,
    until: tokio::time::Instant,
    mut stop: watch::Receiver<bool>,
) -> Fate {
    let opened = Instant::now();
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut sent = 0;
    if kind == Kind::H2Preface && tcp.write_all(H2_PREFACE).await.is_err() {
        return Fate {
            kind,
            closed_after: Some(opened.elapsed()),
        };
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            r = tcp.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Fate { kind, closed_after: Some(opened.elapsed()) },
                Ok(_) => {}
            },
            _ = tick.tick(), if kind == Kind::Slowloris && sent < request.len() => {
                if tcp.write_all(&request.as_bytes()[sent..=sent]).await.is_err() {
                    return Fate { kind, closed_after: Some(opened.elapsed()) };
                }
                sent += 1;
            }
            () = tokio::time::sleep_until(until) => return Fate { kind, closed_after: None },
            _ = stop.changed() => return Fate { kind, closed_after: None },
        }
    }
}

/// Per kind: opened, closed by the server (and when), still open.
#[derive(Debug, Default, Serialize)]
struct KindReport {
    opened: u64,
    connect_failed: u64,
    closed_by_server: u64,
    closed_within_1s: u64,
    closed_after_secs_min: Option<f64>,
    closed_after_secs_median: Option<f64>,
    closed_after_secs_max: Option<f64>,
    still_open: u64,
}

impl KindReport {
    fn of(kind: Kind, fates: &[Fate], connect_failed: u64) -> Self {
        let mine: Vec<&Fate> = fates.iter().filter(|f| f.kind == kind).collect();
        let mut closed: Vec<f64> = mine
            .iter()
            .filter_map(|f| f.closed_after.map(|d| d.as_secs_f64()))
            .collect();
        closed.sort_by(f64::total_cmp);
        Self {
            opened: mine.len() as u64,
            connect_failed,
            closed_by_server: closed.len() as u64,
            closed_within_1s: closed.iter().filter(|&&s| s < 1.0).count() as u64,
            closed_after_secs_min: closed.first().copied(),
            closed_after_secs_median: closed.get(closed.len() / 2).copied(),
            closed_after_secs_max: closed.last().copied(),
            still_open: mine.iter().filter(|f| f.closed_after.is_none()).count() as u64,
        }
    }
}

/// The flood's source addresses: 127.0.0.10 and up, each carrying at most `per_ip`.
fn plan(total: u32, per_ip: u32) -> Vec<(IpAddr, u32)> {
    let mut out = Vec::new();
    let mut left = total;
    let mut i = 0u8;
    while left > 0 {
        let n = left.min(per_ip);
        out.push((IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i)), n));
        left -= n;
        i += 1;
    }
    out
}

/// Runs `ferry-load flood`.
pub(crate) async fn run(args: &FloodArgs) -> anyhow::Result<bool> {
    let total = args.max_connections.saturating_sub(args.headroom);
    let sources = plan(total, args.max_per_ip);
    if sources.len() > 180 {
        bail!(
            "the flood would need {} source addresses: raise --max-per-ip",
            sources.len()
        );
    }
    let fds = net::raise_fd_limit();
    if fds < u64::from(args.max_connections) * 2 + 200 {
        bail!(
            "the open-file limit is {fds}: the flood and the server need about {} (lower --max-connections)",
            args.max_connections * 2 + 200
        );
    }
    let exe = crate::child::ferry_exe(args.ferry.as_deref())?;
    let dir = TempDir::new("flood", args.keep)?;
    let key_seed = crate::serve_env::random_seed();
    let spec = ServerSpec::new(
        exe,
        dir.path(),
        "",
        &key_seed,
        &[
            (
                "FERRY_LIMITS_MAX_CONNECTIONS",
                args.max_connections.to_string(),
            ),
            (
                "FERRY_LIMITS_MAX_CONNECTIONS_PER_IP",
                args.max_per_ip.to_string(),
            ),
        ],
    )?;
    let mut child = spec.start_ready(Duration::from_secs(60)).await?;
    let r = flood(args, &spec, &key_seed, &sources, total).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    if r.is_err() {
        eprintln!("the server's log ends with:\n{}", spec.log_tail(20));
    }
    r
}

async fn flood(
    args: &FloodArgs,
    spec: &ServerSpec,
    key_seed: &[u8; 32],
    sources: &[(IpAddr, u32)],
    total: u32,
) -> anyhow::Result<bool> {
    let json = args.json;
    let target = Target::parse(&spec.ws_url())?;
    let pin = net::pin(Some(&crate::serve_env::public_key(key_seed)))?;
    let user = net::identities(None, 1, 2)?
        .into_iter()
        .next()
        .context("no user")?;
    let (hs_dev, pub_dev) = (&user.devices[0], &user.devices[1]);
    say(
        json,
        &format!(
            "flood: caps {} connections, {} per IP; flood of {total} connections (idle, HTTP/2 preface, \
             slowloris in turn) from {} source addresses, held {:?}",
            args.max_connections,
            args.max_per_ip,
            sources.len(),
            args.hold
        ),
    );

    let quiet = probe(
        &target,
        pin,
        hs_dev,
        pub_dev,
        args.handshakes,
        args.publishes,
    )
    .await;
    say(json, &quiet.line("quiet"));

    // The flood: every connection in its own task, opened 64 at a time.
    let flood_started = Instant::now();
    let hold_end = tokio::time::Instant::now() + args.hold;
    // A bound on every flood connection's life; `stop` ends them all earlier.
    let until = hold_end + args.lockout_max + Duration::from_secs(60);
    let (stop_tx, stop) = watch::channel(false);
    let host = spec.addr.to_string();
    let failed_connects = Arc::new(Mutex::new([0u64; 3]));
    let conns: Vec<(IpAddr, Kind)> = sources
        .iter()
        .flat_map(|&(ip, n)| (0..n).map(move |i| (ip, i)))
        .enumerate()
        .map(|(k, (ip, _))| (ip, KINDS[k % 3]))
        .collect();
    let tasks: Vec<tokio::task::JoinHandle<Fate>> = futures_util::stream::iter(conns)
        .map(|(ip, kind)| {
            let (host, failed, stop) = (host.clone(), failed_connects.clone(), stop.clone());
            let to = spec.addr;
            async move {
                match open_from(ip, to).await {
                    Ok(tcp) => Some(tokio::spawn(hold(kind, tcp, host, until, stop))),
                    Err(_) => {
                        failed.lock().expect("counts")[kind as usize] += 1;
                        None
                    }
                }
            }
        })
        .buffered(64)
        .filter_map(|h| async move { h })
        .collect()
        .await;
    let open_secs = flood_started.elapsed().as_secs_f64();
    // One connection more from each source, over its per-IP cap.
    let mut over_ip = Vec::new();
    for &(ip, n) in sources {
        if n == args.max_per_ip
            && let Ok(tcp) = open_from(ip, spec.addr).await
        {
            over_ip.push(tokio::spawn(hold(
                Kind::Idle,
                tcp,
                host.clone(),
                until,
                stop.clone(),
            )));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = crate::progress::http_get(&spec.metrics_url())
        .await
        .unwrap_or_default();
    say(
        json,
        &format!(
            "flood open: {} connections in {open_secs:.1} s; server: connections_live {}, refused per_ip {}, global {}",
            tasks.len(),
            metric_sum(&metrics, "ferry_connections_live", None) as u64,
            metric_sum(&metrics, "ferry_connections_refused_total", Some("per_ip")) as u64,
            metric_sum(&metrics, "ferry_connections_refused_total", Some("global")) as u64,
        ),
    );

    let flooded = probe(
        &target,
        pin,
        hs_dev,
        pub_dev,
        args.handshakes,
        args.publishes,
    )
    .await;
    say(json, &flooded.line("flood"));

    // Hold, reporting how many flood connections the server still keeps open.
    let mut last_live = 0;
    while tokio::time::Instant::now() + Duration::from_secs(5) <= hold_end {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let body = crate::progress::http_get(&spec.metrics_url())
            .await
            .unwrap_or_default();
        last_live = metric_sum(&body, "ferry_connections_live", None) as u64;
        eprintln!(
            "[flood {:>5.1}s] server connections_live {last_live}",
            flood_started.elapsed().as_secs_f64()
        );
    }

    // Saturation: fill the free global slots (and a few more), then try the client
    // again.
    let body = crate::progress::http_get(&spec.metrics_url())
        .await
        .unwrap_or_default();
    let live = metric_sum(&body, "ferry_connections_live", None) as u32;
    let free = args.max_connections.saturating_sub(live);
    let mut filler = Vec::new();
    for (ip, n) in plan(free + 4, args.max_per_ip) {
        let IpAddr::V4(v4) = ip else { continue };
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, v4.octets()[3]));
        for _ in 0..n {
            if let Ok(tcp) = open_from(ip, spec.addr).await {
                filler.push(tokio::spawn(hold(
                    Kind::Idle,
                    tcp,
                    host.clone(),
                    until,
                    stop.clone(),
                )));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    say(
        json,
        &format!("cap full: {free} free global slots filled, and 4 connections more"),
    );
    let saturated = probe(&target, pin, hs_dev, pub_dev, 5, 5).await;
    say(json, &saturated.line("cap full"));
    let (lockout, attempts) = lockout(&target, pin, hs_dev, args.lockout_max).await;
    say(
        json,
        &match lockout {
            Some(d) => format!(
                "cap full: the client's first session after {:.1} s ({attempts} attempts)",
                d.as_secs_f64()
            ),
            None => format!(
                "cap full: the client still had no session after {:.1} s ({attempts} attempts)",
                args.lockout_max.as_secs_f64()
            ),
        },
    );
    let _ = stop_tx.send(true);

    let mut fates = Vec::new();
    for t in tasks {
        if let Ok(f) = t.await {
            fates.push(f);
        }
    }
    let held_secs = flood_started.elapsed().as_secs_f64();
    let failed = *failed_connects.lock().expect("counts");
    let by_kind: Vec<(Kind, KindReport)> = KINDS
        .iter()
        .map(|&k| (k, KindReport::of(k, &fates, failed[k as usize])))
        .collect();
    let mut over_fates = Vec::new();
    for t in over_ip.into_iter().chain(filler) {
        if let Ok(f) = t.await {
            over_fates.push(f);
        }
    }
    let over = KindReport::of(Kind::Idle, &over_fates, 0);
    let still_open: u64 = by_kind.iter().map(|(_, r)| r.still_open).sum();
    let mut text =
        format!("flood connections after {held_secs:.0} s (from the moment the flood started):");
    for (k, r) in &by_kind {
        text.push_str(&format!(
            "\n  {}: opened {}, connect failed {}, closed by the server {} ({} within 1 s of connecting; \
             after {} s min, {} s median, {} s max), still open {}",
            k.label(),
            r.opened,
            r.connect_failed,
            r.closed_by_server,
            r.closed_within_1s,
            r.closed_after_secs_min.map_or("-".into(), |s| format!("{s:.1}")),
            r.closed_after_secs_median.map_or("-".into(), |s| format!("{s:.1}")),
            r.closed_after_secs_max.map_or("-".into(), |s| format!("{s:.1}")),
            r.still_open
        ));
    }
    text.push_str(&format!(
        "\n  over a cap (one more per full source, then every free global slot and 4 more): opened {}, closed by the server {} \
         ({} within 1 s), still open {}\n  {still_open} flood connections still open after {:.0} s \
         (server connections_live {last_live} at the last reading)",
        over.opened, over.closed_by_server, over.closed_within_1s, over.still_open, held_secs
    ));
    say(json, &text);
    if json {
        let doc = json!({
            "scenario": "flood",
            "max_connections": args.max_connections,
            "max_per_ip": args.max_per_ip,
            "flood_connections": total,
            "sources": sources.len(),
            "hold_secs": args.hold.as_secs_f64(),
            "quiet": quiet,
            "flood": flooded,
            "cap_full": saturated,
            "cap_full_first_session_secs": lockout.map(|d| d.as_secs_f64()),
            "cap_full_attempts": attempts,
            "lockout_max_secs": args.lockout_max.as_secs_f64(),
            "flood_by_kind": by_kind.iter().map(|(k, r)| json!({ "kind": k, "report": r })).collect::<Vec<_>>(),
            "over_cap": over,
            "still_open": still_open,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_fills_each_source_up_to_the_per_ip_cap() {
        let p = plan(1984, 256);
        assert_eq!(p.len(), 8);
        assert!(p[..7].iter().all(|&(_, n)| n == 256));
        assert_eq!(p[7].1, 1984 - 7 * 256);
        assert_eq!(p[0].0.to_string(), "127.0.0.10");
        assert_eq!(p.iter().map(|&(_, n)| n).sum::<u32>(), 1984);
    }

    #[test]
    fn fates_by_kind() {
        let fates = [
            Fate {
                kind: Kind::Idle,
                closed_after: None,
            },
            Fate {
                kind: Kind::Idle,
                closed_after: Some(Duration::from_millis(200)),
            },
            Fate {
                kind: Kind::Idle,
                closed_after: Some(Duration::from_secs(10)),
            },
            Fate {
                kind: Kind::Slowloris,
                closed_after: None,
            },
        ];
        let r = KindReport::of(Kind::Idle, &fates, 2);
        assert_eq!(
            (
                r.opened,
                r.closed_by_server,
                r.closed_within_1s,
                r.still_open,
                r.connect_failed
            ),
            (3, 2, 1, 1, 2)
        );
        assert_eq!(r.closed_after_secs_max, Some(10.0));
    }

    #[tokio::test]
    async fn a_held_connection_sees_the_server_close_it() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; H2_PREFACE.len()];
            s.read_exact(&mut buf).await.unwrap();
            buf
        });
        let tcp = open_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)), addr)
            .await
            .unwrap();
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        let (_stop_tx, stop) = watch::channel(false);
        let fate = hold(Kind::H2Preface, tcp, addr.to_string(), until, stop).await;
        assert_eq!(server.await.unwrap(), H2_PREFACE);
        assert!(fate.closed_after.is_some());
    }
}
