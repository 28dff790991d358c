//! `ferry-load relay`: U users × D devices, every device publishing at R events/s
//! with pipelining; measures publish→ack and publish→delivery and checks that every
//! device received each of its user's other devices' events exactly once, in order.
//!
//! One task per device owns its socket: it reads acks and events as they come and,
//! when publishes are due, seals them all, queues them and flushes once. At most
//! `--window` publishes per device wait for their ack.
//!
//! With `--urls` the devices connect to several instances of one cluster (one
//! PostgreSQL database, Redis between them): device `d` of user `u` to instance
//! `(u + d) mod N`, so a user's devices sit on different instances. Publish→delivery
//! is then also reported apart for same-instance deliveries (publisher and
//! receiver on one instance) and cross-instance ones (relayed over Redis). The
//! `cluster` scenario runs this engine against instances it starts itself
//! ([`run_ferry`]).
//!
//! With `--warmup` devices publish for that long before the measured window:
//! rates, latencies and the server's CPU count only what was published after it;
//! the exactly-once/in-order check covers everything.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::baseline::{self};
use crate::common::{self, BaselineOpts, ConnArgs, ReportArgs, say};
use crate::net::{self, Failures, Sources, Target};
use crate::pattern::{FerryWire, Outcome, Pattern, Ratios, RawWire, instance_of, run_pattern};
use crate::peers;
use crate::progress::ServerProbe;
use crate::stats::{self};

/// Arguments of `ferry-load relay`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Start the server with limits a load test does not trip (all load comes from one \
address and few devices publish fast), for example:

  eval \"$(ferry-load serve-env)\"   # prints FERRY_LIMITS_EVENTS_PER_SEC, _BURST,
                                   # _HANDSHAKES_PER_IP_PER_SEC, _MAX_CONNECTIONS_PER_IP,
                                   # _OUTBOUND_QUEUE … and a server key to pin
  taskset -c 0 ferry serve &
  taskset -c 1 ferry-load relay --server-key <public key> --users 333 --devices 3 \\
      --rate 30 --payload 256 --duration 30s --with-baseline --server-pid <pid>

Against several instances of one cluster (same server key, one PostgreSQL \
database, FERRY_REDIS_URL set), with their CPU time summed:

  ferry-load relay --server-key <public key> --users 333 --devices 3 --rate 5 \\
      --urls ws://127.0.0.1:18080/v1/ws,ws://127.0.0.1:18081/v1/ws,ws://127.0.0.1:18082/v1/ws \\
      --server-pid <pid1>,<pid2>,<pid3>

Against NATS JetStream and Redis Streams as well (each started here on a free \
port with a fresh data directory, on the CPUs of --server-pid), then Ferry, with one \
table of events/s, CPU and bytes written per stored event, latencies, memory per \
idle connection and Ferry's ratios to each:

  ferry-load relay --server-key <public key> --users 20 --devices 3 --rate 10 \\
      --duration 10s --with-baseline --with-peers jetstream,redis-streams --server-pid <pid>

The exit code is non-zero when the exactly-once/in-order check fails or any \
publish or session failed (against any server).")]
pub(crate) struct RelayArgs {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    #[command(flatten)]
    pub(crate) report: ReportArgs,
    #[command(flatten)]
    pub(crate) baseline: BaselineOpts,
    #[command(flatten)]
    pub(crate) peers: peers::PeerOpts,
    /// Run only the baseline and the peers (--with-baseline, --with-peers), not
    /// Ferry: no Ferry server needed, no ratios.
    #[arg(long)]
    pub(crate) skip_ferry: bool,
    /// The WebSocket URLs of several instances of one cluster (comma-separated or
    /// the option repeated; all with the same server key). Device d of user u
    /// connects to instance (u + d) mod N. Wins over --url.
    #[arg(long, value_delimiter = ',', value_name = "URL,URL,…")]
    pub(crate) urls: Vec<String>,
    /// Users.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) users: u32,
    /// Devices per user (all connected; each publishes and receives the others').
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub(crate) devices: u32,
    /// Publishes per second per device.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) rate: f64,
    /// Payload bytes (at least 24: the header with origin, counter and send time).
    #[arg(long, default_value_t = 256)]
    pub(crate) payload: usize,
    /// How long devices publish in the measured window.
    #[arg(long, default_value = "10s", value_parser = stats::parse_duration)]
    pub(crate) duration: Duration,
    /// How long devices publish before the measured window (not counted in rates,
    /// latencies and server CPU; checked for exactly-once all the same).
    #[arg(long, default_value = "0s", value_parser = stats::parse_duration)]
    pub(crate) warmup: Duration,
    /// Publishes in flight per device (sent, not yet acked).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) window: u32,
    /// After publishing stops, how long to wait for the last acks and deliveries.
    #[arg(long, default_value = "10s", value_parser = stats::parse_duration)]
    pub(crate) drain: Duration,
    /// Every stored event carries `"ttl": SECS` (it expires then and retention may
    /// delete it); default: no ttl. The baseline server ignores it.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) ttl: Option<u32>,
}

/// The URLs to load: `--urls` when given (trimmed, empty entries dropped), else
/// `--url`. The same URL twice is refused: it would count one instance as two.
pub(crate) fn parse_urls(url: &str, urls: &[String]) -> anyhow::Result<Vec<String>> {
    if urls.is_empty() {
        return Ok(vec![url.trim().to_string()]);
    }
    let list: Vec<String> = urls
        .iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        bail!("--urls lists no URL");
    }
    for (i, u) in list.iter().enumerate() {
        if list[..i].contains(u) {
            bail!("--urls lists {u} twice");
        }
    }
    Ok(list)
}

/// Where the devices of a run against Ferry connect, and how.
#[derive(Clone, Debug)]
pub(crate) struct Endpoints {
    /// The WebSocket URL of each instance (one: a single server).
    pub(crate) urls: Vec<String>,
    /// The server key to pin (b64u); `None` trusts the first key seen.
    pub(crate) server_key: Option<String>,
    /// Identities from a key file; `None`: fresh ones in memory.
    pub(crate) keys: Option<PathBuf>,
    /// Source addresses to spread over (0: the kernel's choice).
    pub(crate) sources: u32,
    /// Handshakes in flight while connecting.
    pub(crate) connect_concurrency: usize,
    /// Time limit of one connection's connect, upgrade and handshake.
    pub(crate) connect_timeout: Duration,
}

/// Connects the pattern's devices to the instances of `endpoints` (device `i` to
/// [`instance_of`]), runs the pattern, closes the sessions, and returns the
/// figures; `probe` reads the servers' CPU time.
pub(crate) async fn run_ferry(
    pat: &Pattern,
    endpoints: &Endpoints,
    probe: Option<ServerProbe>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let targets = endpoints
        .urls
        .iter()
        .map(|u| Target::parse(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if targets.is_empty() {
        bail!("no server URL to connect to");
    }
    let instances = targets.len() as u32;
    let pin = net::pin(endpoints.server_key.as_deref())?;
    let sources = Arc::new(Sources::new(endpoints.sources)?);
    let ids = net::identities(endpoints.keys.as_deref(), pat.users, pat.devices)?;
    let devices: Vec<_> = ids
        .into_iter()
        .flat_map(|u| u.devices)
        .enumerate()
        .map(|(i, c)| {
            let at = instance_of(i as u32, pat.devices, instances) as usize;
            (targets[at].clone(), c)
        })
        .collect();
    let total = devices.len();
    let connect_started = Instant::now();
    let sessions = common::connect_each_or_fail(
        &sources,
        pin,
        devices,
        endpoints.connect_concurrency,
        endpoints.connect_timeout,
    )
    .await?;
    say(
        json,
        &format!(
            "connected {total} sessions{} in {:.1} s",
            if instances > 1 {
                format!(" to {instances} instances")
            } else {
                String::new()
            },
            connect_started.elapsed().as_secs_f64()
        ),
    );
    let mut run_id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut run_id[6..8]);
    run_id[6] = 0x70 | (run_id[6] & 0x0f);
    let wires: Vec<FerryWire> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, session)| {
            let mut id = run_id;
            id[8..12].copy_from_slice(&(i as u32).to_be_bytes());
            FerryWire {
                session,
                id,
                ttl: pat.ttl,
            }
        })
        .collect();
    Ok(run_pattern("ferry", wires, pat, instances, probe).await)
}

/// Runs `ferry-load relay`; `Ok(false)` when the check or a publish failed.
pub(crate) async fn run(args: &RelayArgs) -> anyhow::Result<bool> {
    let pat = Pattern {
        users: args.users,
        devices: args.devices,
        rate: args.rate,
        payload: args.payload,
        duration: args.duration,
        warmup: args.warmup,
        window: args.window,
        drain: args.drain,
        ttl: args.ttl,
    };
    pat.check()?;
    args.peers.check(&pat)?;
    let total = pat.sessions();
    let endpoints = Endpoints {
        urls: parse_urls(&args.conn.url, &args.urls)?,
        server_key: args.conn.server_key.clone(),
        keys: args.conn.keys.clone(),
        sources: args.conn.sources.unwrap_or(0),
        connect_concurrency: args.conn.connect_concurrency,
        connect_timeout: args.conn.connect_timeout,
    };
    for u in &endpoints.urls {
        Target::parse(u)?;
    }
    let sources = Arc::new(Sources::new(endpoints.sources)?);
    let probe = ServerProbe::from_args(&args.report.server_pid, args.report.metrics_url.as_deref());
    let json = args.report.json;
    say(
        json,
        &format!(
            "relay: {} users × {} devices, {} events/s per device ({:.0}/s offered), \
             {} B payloads{}, window {}, {:.0} s{}{}",
            args.users,
            args.devices,
            args.rate,
            pat.offered(),
            args.payload,
            args.ttl
                .map_or(String::new(), |t| format!(" with ttl {t} s")),
            args.window,
            args.duration.as_secs_f64(),
            if args.warmup.is_zero() {
                String::new()
            } else {
                format!(" after {:.0} s of warm-up", args.warmup.as_secs_f64())
            },
            match endpoints.urls.len() {
                1 => String::new(),
                n => format!(", over {n} instances"),
            }
        ),
    );

    let baseline = if let Some(child) = args
        .baseline
        .start(
            baseline::Mode::Broadcast,
            args.report.server_pid.first().copied(),
            args.warmup + args.duration + args.drain + Duration::from_secs(120),
        )
        .await?
    {
        say(
            json,
            &format!(
                "baseline: raw broadcast server pid {} on {} (CPUs {})",
                child.pid,
                child.addr,
                child.cpus.as_deref().unwrap_or("any")
            ),
        );
        let mut wires = Vec::with_capacity(total as usize);
        let mut failures = Failures::new();
        for u in 0..args.users {
            for _ in 0..args.devices {
                let t = child.target(&format!("/g/{u}"));
                match net::open(&t, sources.pick()).await {
                    Ok(ws) => wires.push(RawWire { ws }),
                    Err(f) => *failures.entry(f.label()).or_default() += 1,
                }
            }
        }
        if !failures.is_empty() {
            child.stop().await;
            bail!(
                "baseline connections failed: {}",
                common::failures_line(&failures)
            );
        }
        let o = run_pattern(
            "baseline",
            wires,
            &pat,
            1,
            Some(ServerProbe::Pid(child.pid)),
        )
        .await;
        child.stop().await;
        say(json, &o.text());
        Some(o)
    } else {
        None
    };

    let server_pid = args.report.server_pid.first().copied();
    let cpus = baseline::cpus_for(args.baseline.baseline_cpus.as_deref(), server_pid);
    let peer_list = args.peers.peers();
    let mut peer_runs = Vec::with_capacity(peer_list.len());
    for &peer in &peer_list {
        peer_runs.push(peers::run(peer, &pat, &args.peers, &args.conn, cpus.clone(), json).await?);
    }

    let ferry = if args.skip_ferry {
        None
    } else {
        let f = run_ferry(&pat, &endpoints, probe, json).await?;
        say(json, &f.text());
        Some(f)
    };
    let ratios = ferry
        .as_ref()
        .zip(baseline.as_ref())
        .map(|(f, b)| Ratios::of(f, b));
    if let Some(r) = &ratios {
        say(json, &r.text("baseline"));
    }
    let peer_ratios: Vec<Option<Ratios>> = peer_runs
        .iter()
        .map(|p| ferry.as_ref().map(|f| Ratios::of(f, &p.outcome)))
        .collect();

    // Memory per idle connection, on fresh servers after the runs.
    let n_idle = if peer_list.is_empty() {
        0
    } else {
        args.peers.idle_connections
    };
    let mut idle_failed = false;
    let mut idle = |name: &str, r: anyhow::Result<peers::IdleMemory>| match r {
        Ok(m) => {
            say(json, &m.text(name));
            Some(m)
        }
        Err(e) => {
            eprintln!("{name}: the idle-connection measurement failed: {e:#}");
            idle_failed = true;
            None
        }
    };
    let baseline_idle = if n_idle > 0 && baseline.is_some() {
        idle("baseline", peers::idle_baseline(cpus.clone(), n_idle).await)
    } else {
        None
    };
    let mut peer_idle = Vec::with_capacity(peer_list.len());
    for &peer in &peer_list {
        peer_idle.push(if n_idle > 0 {
            idle(
                peer.name(),
                peers::idle_peer(peer, &args.peers, cpus.clone(), n_idle).await,
            )
        } else {
            None
        });
    }

    if !peer_list.is_empty() {
        let mut rows = Vec::new();
        if let Some(b) = &baseline {
            rows.push(peers::Row {
                outcome: b,
                idle: baseline_idle.as_ref(),
                vs_ferry: ratios.as_ref(),
            });
        }
        for ((p, r), m) in peer_runs.iter().zip(&peer_ratios).zip(&peer_idle) {
            rows.push(peers::Row {
                outcome: &p.outcome,
                idle: m.as_ref(),
                vs_ferry: r.as_ref(),
            });
        }
        if let Some(f) = &ferry {
            rows.push(peers::Row {
                outcome: f,
                idle: None,
                vs_ferry: None,
            });
        }
        say(json, &peers::table(&rows, n_idle));
    }

    let ok = ferry.as_ref().is_none_or(Outcome::ok)
        && baseline.as_ref().is_none_or(Outcome::ok)
        && peer_runs.iter().all(|p| p.outcome.ok())
        && !idle_failed;
    if json {
        let peers_json: Vec<_> = peer_runs
            .iter()
            .zip(&peer_ratios)
            .zip(&peer_idle)
            .map(|((p, r), m)| {
                json!({
                    "peer": p.server.peer,
                    "server": p.server,
                    "outcome": p.outcome,
                    "ratios": r,
                    "idle": m,
                })
            })
            .collect();
        let doc = json!({
            "scenario": "relay",
            "pattern": pat,
            "urls": endpoints.urls,
            "ferry": ferry,
            "baseline": baseline,
            "ratios": ratios,
            "peers": peers_json,
            "baseline_idle": baseline_idle,
            "idle_connections": n_idle,
            "ok": ok,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn url_lists() {
        let one = "ws://127.0.0.1:8080/v1/ws";
        assert_eq!(parse_urls(one, &[]).unwrap(), [one]);
        // clap splits `--urls a,b` at the commas; spaces and empty entries go.
        let got = parse_urls(
            one,
            &strings(&["ws://127.0.0.1:1/v1/ws", " ws://127.0.0.1:2/v1/ws", ""]),
        )
        .unwrap();
        assert_eq!(got, ["ws://127.0.0.1:1/v1/ws", "ws://127.0.0.1:2/v1/ws"]);
        assert!(parse_urls(one, &strings(&["", " "])).is_err());
        let twice = parse_urls(
            one,
            &strings(&["ws://127.0.0.1:1/v1/ws", "ws://127.0.0.1:1/v1/ws "]),
        );
        assert!(twice.unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn relay_args_take_urls_and_several_pids() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            relay: RelayArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([
            "relay",
            "--urls",
            "ws://127.0.0.1:1/v1/ws,ws://127.0.0.1:2/v1/ws",
            "--urls",
            "ws://127.0.0.1:3/v1/ws",
            "--server-pid",
            "11,12",
            "--server-pid",
            "13",
        ])
        .unwrap();
        assert_eq!(cli.relay.urls.len(), 3);
        assert_eq!(cli.relay.report.server_pid, [11, 12, 13]);
        let cli = <Cli as clap::Parser>::try_parse_from(["relay", "--server-pid", "7"]).unwrap();
        assert_eq!(cli.relay.report.server_pid, [7]);
        assert!(cli.relay.urls.is_empty());
        assert_eq!(cli.relay.warmup, Duration::ZERO);
    }
}
