//! `ferry-load cluster`: what deciding the rate limits in Redis costs a cluster.
//!
//! The scenario starts its own `--instances` (3) `ferry serve` children with the
//! same server key, `serve-env`'s limits and a fresh PostgreSQL database (created
//! on `--postgres-url` with a unique name, dropped at the end), all with
//! `FERRY_REDIS_URL`: stored events published on one instance reach the user's
//! devices on the others over Redis. It then runs the `relay` engine against them,
//! U×D devices spread round-robin over the instances (device `d` of user `u` on
//! instance `(u + d) mod N`), in rounds that alternate `FERRY_LIMITS_SHARED=true`
//! (every rate limit decided in Redis) and `false` (per instance, in memory):
//! shared, local, shared, local, … — `--rounds` of each, the children restarted
//! between rounds. The limits are high, so the load never trips them; the shared
//! limiter still asks Redis on every publish.
//!
//! Per round and per mode it reports events/s, deliveries/s, publish→ack p99,
//! publish→delivery p99 for same-instance and cross-instance deliveries, and the
//! children's CPU (utime + stime from `/proc/<pid>/stat`, summed over the
//! instances, from the start of the measured window to the end of the drain) per
//! stored event; and the modes' ratios shared / local. The exit code is non-zero
//! when any round fails its exactly-once/in-order check or loses a publish or a
//! session, and an error (exit code 1) when PostgreSQL or Redis cannot be reached.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Child;

use crate::child::{PgDatabase, ServerSpec, TempDir, redact_url};
use crate::common::say;
use crate::pattern::{Outcome, Pattern};
use crate::progress::ServerProbe;
use crate::relay::{self, Endpoints};
use crate::stats::{self, fmt_ratio, ratio};

/// The help text of `ferry-load cluster --help`.
pub(crate) const LONG_ABOUT: &str = "\
Three (--instances) `ferry serve` instances on one PostgreSQL database, relaying to \
each other over Redis, under the relay load (devices spread round-robin over the instances), \
in rounds that alternate FERRY_LIMITS_SHARED=true (rate limits decided in Redis) \
and false (per instance): events/s, deliveries/s, publish→ack p99, publish→delivery \
p99 same-instance and cross-instance, and the instances' CPU per stored event, per \
mode and shared / local.

It creates a database with a unique name on --postgres-url and drops it at the end; \
it needs psql, and fails at once when PostgreSQL or Redis does not answer.

Example (about 5,000 events/s; two rounds of each mode, ABAB):

  cargo build --release -p ferry -p ferry-load
  ./target/release/ferry-load cluster --users 250 --devices 4 --rate 5 \\
      --duration 30s --warmup 5s --rounds 2

The scenario pins nothing. The children inherit the CPUs of ferry-load, so to give \
the servers and the generator separate cores, pin the generator and start the \
servers through a wrapper that pins them (exec keeps the pid, so their CPU time is \
still read):

  printf '#!/bin/sh\\nexec taskset -c 0 %s \"$@\"\\n' \"$PWD/target/release/ferry\" > ferry-on-cpu0
  chmod +x ferry-on-cpu0
  taskset -c 1 ./target/release/ferry-load --threads 1 cluster --ferry ./ferry-on-cpu0

PostgreSQL and Redis run wherever they were started (`taskset -cp LIST PID` moves \
a running one); their own CPU time is not counted in the CPU per event.";

/// Arguments of `ferry-load cluster`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The exit code is 2 when a round failed the exactly-once/in-order check or lost a \
publish or a session, and 1 when PostgreSQL or Redis cannot be reached or an \
instance does not start.")]
pub(crate) struct ClusterArgs {
    /// The `ferry` binary (default: `ferry` beside this executable).
    #[arg(long, visible_alias = "exe")]
    pub(crate) ferry: Option<PathBuf>,
    /// PostgreSQL server on which the run's database is created (with `psql`) and
    /// dropped at the end.
    #[arg(
        long,
        env = "FERRY_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) postgres_url: String,
    /// The Redis the instances share (`FERRY_REDIS_URL`).
    #[arg(
        long,
        env = "FERRY_TEST_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub(crate) redis_url: String,
    /// Instances (`ferry serve` children).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=16))]
    pub(crate) instances: u32,
    /// The publish limit per device the instances enforce
    /// (`FERRY_LIMITS_EVENTS_PER_SEC`): the server's default, so that shared limits
    /// lease as many publishes per round trip to Redis as they would in production
    /// (a tenth of a second's worth, at most a quarter of the burst). The load's own
    /// rate stays well below it.
    #[arg(long, default_value_t = 200)]
    pub(crate) events_per_sec: u32,
    /// The publish burst per device (`FERRY_LIMITS_BURST`), the server's default.
    #[arg(long, default_value_t = 400)]
    pub(crate) burst: u32,
    /// Rounds of each mode (shared, local, shared, local, …).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) rounds: u32,
    /// Users.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) users: u32,
    /// Devices per user (all connected; each publishes and receives the others').
    /// With 4 devices on 3 instances, slots 0 and 3 share an instance, so there are
    /// same-instance deliveries besides the cross-instance ones.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub(crate) devices: u32,
    /// Publishes per second per device.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) rate: f64,
    /// Payload bytes (at least 24: the header with origin, counter and send time).
    #[arg(long, default_value_t = 256)]
    pub(crate) payload: usize,
    /// How long devices publish in the measured window of a round.
    #[arg(long, default_value = "30s", value_parser = stats::parse_duration)]
    pub(crate) duration: Duration,
    /// How long devices publish before the measured window of a round.
    #[arg(long, default_value = "5s", value_parser = stats::parse_duration)]
    pub(crate) warmup: Duration,
    /// Publishes in flight per device (sent, not yet acked).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) window: u32,
    /// After publishing stops, how long to wait for the last acks and deliveries.
    #[arg(long, default_value = "10s", value_parser = stats::parse_duration)]
    pub(crate) drain: Duration,
    /// Handshakes in flight while connecting a round's sessions.
    #[arg(long, default_value_t = 64)]
    pub(crate) connect_concurrency: usize,
    /// Time limit of one connection's TCP connect, upgrade and handshake.
    #[arg(long, default_value = "20s", value_parser = stats::parse_duration)]
    pub(crate) connect_timeout: Duration,
    /// How long an instance may take to answer `/health/ready`.
    #[arg(long, default_value = "60s", value_parser = stats::parse_duration)]
    pub(crate) start_timeout: Duration,
    /// Keep the instances' data directories and logs.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Print the results as one JSON document on stdout (the human summary goes to
    /// stderr).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Where the rate limits are decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// In Redis, for all instances (`FERRY_LIMITS_SHARED=true`).
    Shared,
    /// Per instance, in memory (`FERRY_LIMITS_SHARED=false`).
    Local,
}

impl Mode {
    /// The value of `FERRY_LIMITS_SHARED`.
    fn env_value(self) -> &'static str {
        match self {
            Self::Shared => "true",
            Self::Local => "false",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Local => "local",
        }
    }
}

/// The rounds in order: shared, local, shared, local, … (`per_mode` of each).
fn schedule(per_mode: u32) -> Vec<Mode> {
    (0..2 * per_mode)
        .map(|i| {
            if i % 2 == 0 {
                Mode::Shared
            } else {
                Mode::Local
            }
        })
        .collect()
}

/// The figures of one round the table needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
struct Figures {
    events_per_sec: f64,
    deliveries_per_sec: f64,
    /// publish→ack p99, µs (`None`: no sample).
    ack_p99_us: Option<u64>,
    /// publish→delivery p99 of same-instance deliveries, µs.
    same_p99_us: Option<u64>,
    /// The same of cross-instance deliveries.
    cross_p99_us: Option<u64>,
    /// The instances' CPU time over the measured window (`None`: unreadable).
    server_cpu_secs: Option<f64>,
    /// Stored events of the measured window.
    events: u64,
    /// CPU per stored event, µs.
    cpu_us_per_event: Option<f64>,
}

impl Figures {
    fn of(o: &Outcome) -> Self {
        let p99 = |s: &stats::Summary| (s.count > 0).then_some(s.p99_us);
        Self {
            events_per_sec: o.events_per_sec,
            deliveries_per_sec: o.deliveries_per_sec,
            ack_p99_us: p99(&o.ack_latency),
            same_p99_us: p99(&o.delivery_same_instance),
            cross_p99_us: p99(&o.delivery_cross_instance),
            server_cpu_secs: o.server_cpu_secs,
            events: o.measured_events,
            cpu_us_per_event: o.server_cpu_us_per_event,
        }
    }

    /// A mode's figures over its rounds: the means of the rates and of the p99s
    /// (of the rounds that have them), and the CPU time of all rounds over their
    /// stored events (`None` when any round's CPU time is missing).
    fn mean(rounds: &[Self]) -> Self {
        if rounds.is_empty() {
            return Self::default();
        }
        let n = rounds.len() as f64;
        let mean_us = |get: fn(&Self) -> Option<u64>| {
            let v: Vec<u64> = rounds.iter().filter_map(get).collect();
            (!v.is_empty()).then(|| v.iter().sum::<u64>() / v.len() as u64)
        };
        let cpu: Option<f64> = rounds.iter().map(|r| r.server_cpu_secs).sum();
        let events = rounds.iter().map(|r| r.events).sum::<u64>();
        Self {
            events_per_sec: rounds.iter().map(|r| r.events_per_sec).sum::<f64>() / n,
            deliveries_per_sec: rounds.iter().map(|r| r.deliveries_per_sec).sum::<f64>() / n,
            ack_p99_us: mean_us(|r| r.ack_p99_us),
            same_p99_us: mean_us(|r| r.same_p99_us),
            cross_p99_us: mean_us(|r| r.cross_p99_us),
            server_cpu_secs: cpu,
            events,
            cpu_us_per_event: cpu.and_then(|c| (events > 0).then(|| c * 1e6 / events as f64)),
        }
    }
}

/// Shared over local, per column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
struct Ratios {
    events_per_sec: Option<f64>,
    deliveries_per_sec: Option<f64>,
    ack_p99: Option<f64>,
    same_p99: Option<f64>,
    cross_p99: Option<f64>,
    cpu_per_event: Option<f64>,
}

impl Ratios {
    fn of(shared: &Figures, local: &Figures) -> Self {
        let us =
            |a: Option<u64>, b: Option<u64>| a.zip(b).and_then(|(a, b)| ratio(a as f64, b as f64));
        Self {
            events_per_sec: ratio(shared.events_per_sec, local.events_per_sec),
            deliveries_per_sec: ratio(shared.deliveries_per_sec, local.deliveries_per_sec),
            ack_p99: us(shared.ack_p99_us, local.ack_p99_us),
            same_p99: us(shared.same_p99_us, local.same_p99_us),
            cross_p99: us(shared.cross_p99_us, local.cross_p99_us),
            cpu_per_event: shared
                .cpu_us_per_event
                .zip(local.cpu_us_per_event)
                .and_then(|(a, b)| ratio(a, b)),
        }
    }
}

/// The header of the tables.
fn table_header(first: &str) -> String {
    format!(
        "{first:<14} {:>10} {:>13} {:>10} {:>10} {:>10} {:>13}",
        "events/s", "deliveries/s", "ack p99", "same p99", "cross p99", "CPU µs/event"
    )
}

/// One row of figures.
fn table_row(name: &str, f: &Figures) -> String {
    let ms = |us: Option<u64>| us.map_or("-".to_string(), stats::ms);
    format!(
        "{name:<14} {:>10.0} {:>13.0} {:>10} {:>10} {:>10} {:>13}",
        f.events_per_sec,
        f.deliveries_per_sec,
        ms(f.ack_p99_us),
        ms(f.same_p99_us),
        ms(f.cross_p99_us),
        f.cpu_us_per_event
            .map_or("n/a".to_string(), |c| format!("{c:.1}")),
    )
}

/// The row of ratios shared / local.
fn ratio_row(r: &Ratios) -> String {
    format!(
        "{:<14} {:>10} {:>13} {:>10} {:>10} {:>10} {:>13}",
        "shared/local",
        fmt_ratio(r.events_per_sec),
        fmt_ratio(r.deliveries_per_sec),
        fmt_ratio(r.ack_p99),
        fmt_ratio(r.same_p99),
        fmt_ratio(r.cross_p99),
        fmt_ratio(r.cpu_per_event),
    )
}

/// The tables: every round, then each mode over its rounds and the ratios.
fn table(rounds: &[(Mode, Figures)], shared: &Figures, local: &Figures, r: &Ratios) -> String {
    let mut t = table_header("round");
    for (i, (mode, f)) in rounds.iter().enumerate() {
        t += "\n";
        t += &table_row(&format!("{} {}", i + 1, mode.name()), f);
    }
    t += "\n\n";
    t += &table_header("mode (mean)");
    t += "\n";
    t += &table_row(Mode::Shared.name(), shared);
    t += "\n";
    t += &table_row(Mode::Local.name(), local);
    t += "\n";
    t += &ratio_row(r);
    t
}

/// Where a Redis server listens, and the credentials to give it.
#[derive(Debug, PartialEq, Eq)]
struct RedisAddr {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    /// `rediss://`: only the TCP connection can be checked.
    tls: bool,
}

/// Reads `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` (or `rediss://…`).
fn parse_redis_url(url: &str) -> anyhow::Result<RedisAddr> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("redis://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("rediss://") {
        (true, r)
    } else {
        bail!("{}: not a redis:// or rediss:// URL", redact_url(url));
    };
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(info) => match info.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
            None => (Some(info.to_string()), None),
        },
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .with_context(|| format!("{}: unclosed [", redact_url(url)))?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        bail!("{}: no host", redact_url(url));
    }
    let port = match port {
        None | Some("") => 6379,
        Some(p) => p
            .parse()
            .with_context(|| format!("{}: bad port {p:?}", redact_url(url)))?,
    };
    Ok(RedisAddr {
        host: host.to_string(),
        port,
        user,
        password,
        tls,
    })
}

/// One Redis command in RESP.
fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// Connects to the Redis of `url` and has it answer `PING` (after `AUTH` when the
/// URL has credentials), within 5 s.
async fn redis_ping(url: &str) -> anyhow::Result<()> {
    let addr = parse_redis_url(url)?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((addr.host.as_str(), addr.port))
            .await
            .with_context(|| format!("cannot connect to {}:{}", addr.host, addr.port))?;
        if addr.tls {
            // The instances speak TLS to it; a TCP connection is all this checks.
            return Ok(());
        }
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        if let Some(password) = &addr.password {
            let auth = match &addr.user {
                Some(user) => resp_command(&["AUTH", user, password]),
                None => resp_command(&["AUTH", password]),
            };
            stream.get_mut().write_all(&auth).await?;
            stream.read_line(&mut line).await?;
            if !line.starts_with("+OK") {
                bail!("AUTH answered {:?}", line.trim_end());
            }
            line.clear();
        }
        stream.get_mut().write_all(&resp_command(&["PING"])).await?;
        stream.read_line(&mut line).await?;
        if !line.starts_with("+PONG") {
            bail!("PING answered {:?}", line.trim_end());
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("no answer within 5 s")?
}

/// The instances of one round.
struct Cluster {
    specs: Vec<ServerSpec>,
    children: Vec<Child>,
}

impl Cluster {
    /// Starts `instances` children in `mode` and waits until all are ready.
    async fn start(
        args: &ClusterArgs,
        exe: &Path,
        dir: &Path,
        database_url: &str,
        key_seed: &[u8; 32],
        mode: Mode,
    ) -> anyhow::Result<Self> {
        let extra = [
            ("FERRY_REDIS_URL", args.redis_url.clone()),
            ("FERRY_LIMITS_SHARED", mode.env_value().to_string()),
            (
                "FERRY_LIMITS_EVENTS_PER_SEC",
                args.events_per_sec.to_string(),
            ),
            ("FERRY_LIMITS_BURST", args.burst.to_string()),
        ];
        let mut specs = Vec::with_capacity(args.instances as usize);
        for i in 0..args.instances {
            let data_dir = dir.join(format!("instance-{i}"));
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("cannot create {}", data_dir.display()))?;
            specs.push(ServerSpec::new(
                exe.to_path_buf(),
                &data_dir,
                database_url,
                key_seed,
                &extra,
            )?);
        }
        // Migrations are serialised by the server (an advisory lock), so all may
        // start at once; a child whose start failed is killed on drop.
        let children = futures_util::future::try_join_all(specs.iter().enumerate().map(
            |(i, spec)| async move {
                spec.start_ready(args.start_timeout)
                    .await
                    .with_context(|| format!("starting instance {i} (`ferry serve`)"))
            },
        ))
        .await?;
        Ok(Self { specs, children })
    }

    /// The WebSocket URLs, by instance.
    fn urls(&self) -> Vec<String> {
        self.specs.iter().map(ServerSpec::ws_url).collect()
    }

    /// The process ids, by instance.
    fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(Child::id).collect()
    }

    /// Instances that have exited, with their status and the end of their log.
    fn exited(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .zip(&self.specs)
            .enumerate()
            .filter_map(|(i, (c, spec))| match c.try_wait() {
                Ok(Some(status)) => Some(format!(
                    "instance {i} exited during the round ({status}); its log ends with:\n{}",
                    spec.log_tail(20)
                )),
                _ => None,
            })
            .collect()
    }

    /// The end of every instance's log.
    fn log_tails(&self) -> String {
        self.specs
            .iter()
            .enumerate()
            .map(|(i, s)| format!("instance {i}'s log ends with:\n{}", s.log_tail(20)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Kills every instance (our own children, by handle) and waits for them.
    async fn stop(mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
        }
        for c in &mut self.children {
            let _ = c.wait().await;
        }
    }
}

/// Runs `ferry-load cluster`; `Ok(false)` when a round failed its check or lost a
/// publish or a session.
pub(crate) async fn run(args: &ClusterArgs) -> anyhow::Result<bool> {
    let pat = Pattern {
        users: args.users,
        devices: args.devices,
        rate: args.rate,
        payload: args.payload,
        duration: args.duration,
        warmup: args.warmup,
        window: args.window,
        drain: args.drain,
        ttl: None,
    };
    pat.check()?;
    let exe = crate::child::ferry_exe(args.ferry.as_deref())?;
    redis_ping(&args.redis_url).await.with_context(|| {
        format!(
            "Redis at {} does not answer (start it, or pass --redis-url)",
            redact_url(&args.redis_url)
        )
    })?;
    let (db, database_url) =
        PgDatabase::create(&args.postgres_url, "cluster").with_context(|| {
            format!(
                "cannot create the run's database on PostgreSQL at {} (start it, or pass \
             --postgres-url)",
                redact_url(&args.postgres_url)
            )
        })?;
    let dir = match TempDir::new("cluster", args.keep) {
        Ok(d) => d,
        Err(e) => {
            let _ = db.drop_now();
            return Err(e);
        }
    };
    let name = db.name().to_string();
    let r = rounds(args, &pat, &exe, dir.path(), &database_url, &name).await;
    if let Err(e) = db.drop_now() {
        eprintln!("warning: cannot drop the database {name}: {e:#}");
    }
    r
}

async fn rounds(
    args: &ClusterArgs,
    pat: &Pattern,
    exe: &Path,
    dir: &Path,
    database_url: &str,
    database: &str,
) -> anyhow::Result<bool> {
    let json = args.json;
    let key_seed = crate::serve_env::random_seed();
    let modes = schedule(args.rounds);
    say(
        json,
        &format!(
            "cluster: {} instances of {} on PostgreSQL database {database} and Redis {}; \
             {} users × {} devices, {} events/s per device ({:.0}/s offered), {} B \
             payloads, {:.0} s after {:.0} s of warm-up per round; {} rounds (shared, \
             local, …)",
            args.instances,
            exe.display(),
            redact_url(&args.redis_url),
            args.users,
            args.devices,
            args.rate,
            pat.offered(),
            args.payload,
            args.duration.as_secs_f64(),
            args.warmup.as_secs_f64(),
            modes.len(),
        ),
    );
    let mut results: Vec<(Mode, Outcome)> = Vec::with_capacity(modes.len());
    for (i, &mode) in modes.iter().enumerate() {
        say(
            json,
            &format!(
                "\nround {}/{}: FERRY_LIMITS_SHARED={}",
                i + 1,
                modes.len(),
                mode.env_value()
            ),
        );
        let mut cluster = Cluster::start(args, exe, dir, database_url, &key_seed, mode).await?;
        let endpoints = Endpoints {
            urls: cluster.urls(),
            server_key: Some(crate::serve_env::public_key(&key_seed)),
            keys: None,
            sources: 0,
            connect_concurrency: args.connect_concurrency,
            connect_timeout: args.connect_timeout,
        };
        let probe = ServerProbe::Pids(cluster.pids());
        let outcome = relay::run_ferry(pat, &endpoints, Some(probe), json).await;
        let exited = cluster.exited();
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                eprintln!(
                    "{}",
                    if exited.is_empty() {
                        cluster.log_tails()
                    } else {
                        exited.join("\n")
                    }
                );
                cluster.stop().await;
                return Err(e.context(format!("round {} ({})", i + 1, mode.name())));
            }
        };
        cluster.stop().await;
        say(json, &outcome.text());
        if !exited.is_empty() {
            eprintln!("{}", exited.join("\n"));
            bail!(
                "round {} ({}): {} of {} instances exited during the round",
                i + 1,
                mode.name(),
                exited.len(),
                args.instances
            );
        }
        results.push((mode, outcome));
    }

    let figures: Vec<(Mode, Figures)> = results.iter().map(|(m, o)| (*m, Figures::of(o))).collect();
    let of_mode = |mode: Mode| {
        Figures::mean(
            &figures
                .iter()
                .filter(|(m, _)| *m == mode)
                .map(|(_, f)| *f)
                .collect::<Vec<_>>(),
        )
    };
    let (shared, local) = (of_mode(Mode::Shared), of_mode(Mode::Local));
    let ratios = Ratios::of(&shared, &local);
    let failed: Vec<String> = results
        .iter()
        .enumerate()
        .filter(|(_, (_, o))| !o.ok())
        .map(|(i, (m, _))| format!("{} ({})", i + 1, m.name()))
        .collect();
    let ok = failed.is_empty();
    let mut text = format!("\n{}\n", table(&figures, &shared, &local, &ratios));
    text += &format!(
        "server CPU per stored event, shared / local: {}",
        fmt_ratio(ratios.cpu_per_event)
    );
    if !ok {
        text += &format!(
            "\nFAILED rounds: {} (see their check and failures above)",
            failed.join(", ")
        );
    }
    say(json, &text);
    if json {
        let doc = json!({
            "scenario": "cluster",
            "pattern": pat,
            "instances": args.instances,
            "redis_url": redact_url(&args.redis_url),
            "rounds": results
                .iter()
                .zip(&figures)
                .enumerate()
                .map(|(i, ((mode, o), (_, f)))| json!({
                    "round": i + 1,
                    "mode": mode,
                    "figures": f,
                    "result": o,
                }))
                .collect::<Vec<_>>(),
            "modes": { "shared": shared, "local": local },
            "ratios_shared_over_local": ratios,
            "ok": ok,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_alternate_shared_and_local() {
        assert_eq!(schedule(1), [Mode::Shared, Mode::Local]);
        assert_eq!(
            schedule(2),
            [Mode::Shared, Mode::Local, Mode::Shared, Mode::Local]
        );
        assert_eq!(Mode::Shared.env_value(), "true");
        assert_eq!(Mode::Local.env_value(), "false");
    }

    fn fig(eps: f64, same: Option<u64>, cpu: Option<f64>, events: u64) -> Figures {
        Figures {
            events_per_sec: eps,
            deliveries_per_sec: eps * 3.0,
            ack_p99_us: Some(1_000),
            same_p99_us: same,
            cross_p99_us: Some(4_000),
            server_cpu_secs: cpu,
            events,
            cpu_us_per_event: cpu.map(|c| c * 1e6 / events as f64),
        }
    }

    #[test]
    fn modes_average_their_rounds() {
        let m = Figures::mean(&[
            fig(5_000.0, Some(2_000), Some(1.0), 10_000),
            fig(4_000.0, None, Some(3.0), 10_000),
        ]);
        assert_eq!(m.events_per_sec, 4_500.0);
        assert_eq!(m.deliveries_per_sec, 13_500.0);
        // Only rounds with same-instance samples count for its p99.
        assert_eq!(m.same_p99_us, Some(2_000));
        assert_eq!(m.cross_p99_us, Some(4_000));
        assert_eq!(m.events, 20_000);
        assert_eq!(m.cpu_us_per_event, Some(200.0));
        let unread = Figures::mean(&[fig(1.0, None, Some(1.0), 10), fig(1.0, None, None, 10)]);
        assert_eq!(
            (unread.server_cpu_secs, unread.cpu_us_per_event),
            (None, None)
        );
        assert_eq!(unread.same_p99_us, None);
        assert_eq!(Figures::mean(&[]), Figures::default());

        let shared = fig(5_000.0, Some(3_000), Some(3.0), 10_000);
        let local = fig(5_000.0, Some(2_000), Some(2.0), 10_000);
        let r = Ratios::of(&shared, &local);
        assert_eq!(r.cpu_per_event, Some(1.5));
        assert_eq!(r.same_p99, Some(1.5));
        assert_eq!(r.events_per_sec, Some(1.0));
        assert_eq!(Ratios::of(&shared, &fig(0.0, None, None, 0)).same_p99, None);

        let t = table(
            &[(Mode::Shared, shared), (Mode::Local, local)],
            &shared,
            &local,
            &r,
        );
        assert!(t.contains("1 shared") && t.contains("2 local"), "{t}");
        assert!(t.contains("shared/local") && t.contains("1.50×"), "{t}");
        assert!(table_row("x", &fig(1.0, None, None, 0)).contains(" - "));
    }

    #[test]
    fn redis_urls() {
        let a = parse_redis_url("redis://127.0.0.1:6379").unwrap();
        assert_eq!((a.host.as_str(), a.port, a.tls), ("127.0.0.1", 6379, false));
        assert_eq!((a.user, a.password), (None, None));
        let a = parse_redis_url("redis://:secret@localhost/2").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("localhost", 6379));
        assert_eq!((a.user, a.password.as_deref()), (None, Some("secret")));
        let a = parse_redis_url("rediss://app:pw@[::1]:7000/0").unwrap();
        assert_eq!((a.host.as_str(), a.port, a.tls), ("::1", 7000, true));
        assert_eq!(a.user.as_deref(), Some("app"));
        assert!(parse_redis_url("http://127.0.0.1:6379").is_err());
        assert!(parse_redis_url("redis://127.0.0.1:x").is_err());
        assert!(parse_redis_url("redis://:6379").is_err());
        assert_eq!(resp_command(&["PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            resp_command(&["AUTH", "pw"]),
            b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n"
        );
    }

    #[tokio::test]
    async fn redis_ping_wants_pong() {
        use tokio::io::AsyncReadExt as _;
        async fn serve(answers: &'static [&'static str]) -> String {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                for a in answers {
                    let mut buf = [0u8; 256];
                    let _ = s.read(&mut buf).await;
                    s.write_all(a.as_bytes()).await.unwrap();
                }
            });
            format!("redis://:pw@{addr}")
        }
        redis_ping(&serve(&["+OK\r\n", "+PONG\r\n"]).await)
            .await
            .unwrap();
        let e = redis_ping(&serve(&["-WRONGPASS invalid password\r\n"]).await)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("WRONGPASS"), "{e:#}");
        let closed = crate::child::free_port().unwrap();
        assert!(redis_ping(&format!("redis://{closed}")).await.is_err());
    }
}
