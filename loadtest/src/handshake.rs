//! `ferry-load handshake`: a storm of new sessions at a target arrival rate. Each
//! arrival opens a TCP connection, upgrades it, runs the v1 handshake (the
//! sans-IO `ClientHandshake` over tokio-tungstenite), waits for `auth_ok`, and
//! closes. Arrivals that find `--concurrency` handshakes already in flight are
//! dropped and counted (the generator could not keep the rate).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::future::BoxFuture;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::baseline;
use crate::common::{self, BaselineOpts, ConnArgs, ReportArgs, say};
use crate::net::{self, Failure, Failures, Sources};
use crate::progress::{Counter, Delta, Progress, ServerProbe};
use crate::stats::{self, SharedHistogram, Summary, fmt_ratio, ratio};

/// Arguments of `ferry-load handshake`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
All handshakes come from few addresses: start the server with a high \
FERRY_LIMITS_HANDSHAKES_PER_IP_PER_SEC and FERRY_LIMITS_MAX_CONNECTIONS_PER_IP \
(see `ferry-load serve-env`). A device has one session at a time, so the pool \
should hold many more devices than handshakes in flight.")]
pub(crate) struct HandshakeArgs {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    #[command(flatten)]
    pub(crate) report: ReportArgs,
    #[command(flatten)]
    pub(crate) baseline: BaselineOpts,
    /// New sessions per second.
    #[arg(long, default_value_t = 500.0)]
    pub(crate) rate: f64,
    /// How long arrivals keep coming.
    #[arg(long, default_value = "10s", value_parser = stats::parse_duration)]
    pub(crate) duration: Duration,
    /// Handshakes in flight at most; an arrival beyond it is dropped.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) concurrency: u32,
    /// Devices to rotate through when no --keys is given (one user each).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) pool: u32,
}

/// How long one attempt took.
#[derive(Clone, Copy, Debug)]
struct Timing {
    /// TCP connect and WebSocket upgrade.
    connect: Duration,
    /// From the start to `auth_ok` (baseline: to the echo).
    total: Duration,
}

type Attempt = Result<(Timing, BoxFuture<'static, ()>), Failure>;

#[derive(Default)]
struct Live {
    ok: Counter,
    ok_in_window: Counter,
    failed: Counter,
    dropped: Counter,
    closing: Counter,
    connect: SharedHistogram,
    total: SharedHistogram,
    failures: Mutex<Failures>,
}

/// The figures of one storm.
#[derive(Debug, Serialize)]
pub(crate) struct Outcome {
    server: &'static str,
    attempted: u64,
    ok: u64,
    failed: u64,
    dropped: u64,
    /// Sessions established within the arrival window, per second.
    per_sec: f64,
    connect_latency: Summary,
    latency: Summary,
    failures: Failures,
    server_cpu_secs: Option<f64>,
    server_cpu_us_per_session: Option<f64>,
}

impl Outcome {
    fn text(&self) -> String {
        let mut s = format!(
            "{}: {} arrivals, {} ok ({:.0}/s), {} failed, {} dropped (concurrency cap)\n",
            self.server, self.attempted, self.ok, self.per_sec, self.failed, self.dropped
        );
        s += &format!("  connect+upgrade  {}\n", self.connect_latency.line());
        s += &format!("  to auth_ok/echo  {}\n", self.latency.line());
        s += &format!("  failures: {}", common::failures_line(&self.failures));
        if let (Some(cpu), Some(per)) = (self.server_cpu_secs, self.server_cpu_us_per_session) {
            s += &format!("\n  server CPU {cpu:.2} s = {per:.0} µs per session");
        }
        s
    }
}

/// Fires `attempt(n)` at `rate`/s for `duration`, at most `concurrency` at once.
async fn storm<F, Fut>(
    server: &'static str,
    rate: f64,
    duration: Duration,
    concurrency: u32,
    probe: Option<ServerProbe>,
    attempt: F,
) -> Outcome
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Attempt> + Send + 'static,
{
    let live = Arc::new(Live::default());
    let sem = Arc::new(Semaphore::new(concurrency as usize));
    let before = match &probe {
        Some(p) => p.sample().await.ok(),
        None => None,
    };
    let start = Instant::now();
    let end = start + duration;
    let progress = {
        let live = live.clone();
        let sem = sem.clone();
        let mut d = Delta::default();
        Progress::start(server, start, move |t| {
            format!(
                "ok {:>6.0}/s  in flight {:>4}  failed {}  dropped {}",
                d.per_sec(live.ok.get(), t),
                concurrency as usize - sem.available_permits(),
                live.failed.get(),
                live.dropped.get()
            )
        })
    };
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut launched = 0u64;
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        let due = ((now - start).as_secs_f64() * rate) as u64;
        while launched < due {
            let n = launched;
            launched += 1;
            let Ok(permit) = sem.clone().try_acquire_owned() else {
                live.dropped.inc();
                continue;
            };
            let fut = attempt(n);
            let live = live.clone();
            tokio::spawn(async move {
                match fut.await {
                    Ok((t, closer)) => {
                        live.ok.inc();
                        if Instant::now() <= end {
                            live.ok_in_window.inc();
                        }
                        live.connect.record(t.connect);
                        live.total.record(t.total);
                        drop(permit);
                        live.closing.inc();
                        closer.await;
                        live.closing.sub(1);
                    }
                    Err(f) => {
                        live.failed.inc();
                        *live
                            .failures
                            .lock()
                            .expect("failures lock")
                            .entry(f.label())
                            .or_default() += 1;
                        drop(permit);
                    }
                }
            });
        }
    }
    // Let the last attempts finish (each is bounded by its own timeout).
    let settle = Instant::now() + Duration::from_secs(30);
    while (sem.available_permits() < concurrency as usize || live.closing.get() > 0)
        && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.stop().await;
    let after = match &probe {
        Some(p) => p.sample().await.ok(),
        None => None,
    };
    let cpu = before.zip(after).map(|(b, a)| a.cpu_secs - b.cpu_secs);
    let ok = live.ok.get();
    Outcome {
        server,
        attempted: launched,
        ok,
        failed: live.failed.get(),
        dropped: live.dropped.get(),
        per_sec: stats::rate(live.ok_in_window.get(), duration),
        connect_latency: live.connect.summary(),
        latency: live.total.summary(),
        failures: live.failures.lock().expect("failures lock").clone(),
        server_cpu_secs: cpu,
        server_cpu_us_per_session: cpu.and_then(|c| (ok > 0).then(|| c * 1e6 / ok as f64)),
    }
}

/// Runs `ferry-load handshake`; `Ok(false)` when any handshake failed.
pub(crate) async fn run(args: &HandshakeArgs) -> anyhow::Result<bool> {
    if !(args.rate > 0.0 && args.rate <= 1_000_000.0) {
        bail!("--rate must be in (0, 1000000]");
    }
    net::raise_fd_limit();
    let target = net::Target::parse(&args.conn.url)?;
    let pin = net::pin(args.conn.server_key.as_deref())?;
    let sources = Arc::new(Sources::new(args.conn.sources.unwrap_or(0))?);
    let probe = ServerProbe::from_args(&args.report.server_pid, args.report.metrics_url.as_deref());
    let json = args.report.json;
    let timeout = args.conn.connect_timeout;
    let creds: Arc<Vec<_>> = Arc::new(match &args.conn.keys {
        Some(path) => {
            let (users, devices) = net::key_file_shape(path)?;
            net::identities(Some(path), users, devices)?
                .into_iter()
                .flat_map(|u| u.devices)
                .collect()
        }
        None => net::identities(None, args.pool, 1)?
            .into_iter()
            .flat_map(|u| u.devices)
            .collect(),
    });
    say(
        json,
        &format!(
            "handshake: {} new sessions/s for {:.0} s, at most {} in flight, {} devices",
            args.rate,
            args.duration.as_secs_f64(),
            args.concurrency,
            creds.len()
        ),
    );

    let baseline = if let Some(child) = args
        .baseline
        .start(
            baseline::Mode::Echo,
            args.report.server_pid.first().copied(),
            args.duration + Duration::from_secs(120),
        )
        .await?
    {
        say(
            json,
            &format!(
                "baseline: raw echo server pid {} (CPUs {}): connect, upgrade, one echo, close",
                child.pid,
                child.cpus.as_deref().unwrap_or("any")
            ),
        );
        let t = child.target("/");
        let s = sources.clone();
        let o = storm(
            "baseline",
            args.rate,
            args.duration,
            args.concurrency,
            Some(ServerProbe::Pid(child.pid)),
            move |_| {
                let (t, source) = (t.clone(), s.pick());
                async move {
                    tokio::time::timeout(timeout, async move {
                        let t0 = Instant::now();
                        let mut ws = net::open(&t, source).await?;
                        let t1 = Instant::now();
                        ws.send(Message::Binary(vec![0u8; 32].into()))
                            .await
                            .map_err(net::ws_failure)?;
                        loop {
                            match ws.next().await {
                                Some(Ok(Message::Binary(_))) => break,
                                Some(Ok(_)) => {}
                                Some(Err(e)) => return Err(net::ws_failure(e)),
                                None => return Err(Failure::Transport("eof")),
                            }
                        }
                        let timing = Timing {
                            connect: t1 - t0,
                            total: t0.elapsed(),
                        };
                        let closer: BoxFuture<'static, ()> =
                            Box::pin(async move { net::close(&mut ws).await });
                        Ok((timing, closer))
                    })
                    .await
                    .map_err(|_| Failure::Timeout)?
                }
            },
        )
        .await;
        child.stop().await;
        say(json, &o.text());
        Some(o)
    } else {
        None
    };

    let ferry = {
        let (t, s, c) = (target.clone(), sources.clone(), creds.clone());
        storm(
            "ferry",
            args.rate,
            args.duration,
            args.concurrency,
            probe,
            move |n| {
                let (t, source) = (t.clone(), s.pick());
                let creds = c[(n % c.len() as u64) as usize].clone();
                async move {
                    tokio::time::timeout(timeout, async move {
                        let t0 = Instant::now();
                        let ws = net::open(&t, source).await?;
                        let t1 = Instant::now();
                        let session = net::handshake(ws, creds, pin).await?;
                        let timing = Timing {
                            connect: t1 - t0,
                            total: t0.elapsed(),
                        };
                        let closer: BoxFuture<'static, ()> = Box::pin(session.close());
                        Ok((timing, closer))
                    })
                    .await
                    .map_err(|_| Failure::Timeout)?
                }
            },
        )
        .await
    };
    say(json, &ferry.text());
    let ratios = baseline.as_ref().map(|b| {
        let r = |a: u64, b: u64| ratio(a as f64, b as f64);
        json!({
            "per_sec": ratio(ferry.per_sec, b.per_sec),
            "latency_p50": r(ferry.latency.p50_us, b.latency.p50_us),
            "latency_p99": r(ferry.latency.p99_us, b.latency.p99_us),
            "server_cpu_per_session": ferry.server_cpu_us_per_session
                .zip(b.server_cpu_us_per_session)
                .and_then(|(a, b)| ratio(a, b)),
        })
    });
    if let Some(r) = &ratios {
        let f = |k: &str| fmt_ratio(r[k].as_f64());
        say(
            json,
            &format!(
                "ferry / baseline: sessions/s {}  latency p50 {} p99 {}  server CPU/session {}",
                f("per_sec"),
                f("latency_p50"),
                f("latency_p99"),
                f("server_cpu_per_session")
            ),
        );
    }
    let ok = ferry.failed == 0 && baseline.as_ref().is_none_or(|b| b.failed == 0);
    if json {
        let doc = json!({
            "scenario": "handshake",
            "rate": args.rate,
            "duration_s": args.duration.as_secs_f64(),
            "concurrency": args.concurrency,
            "ferry": ferry,
            "baseline": baseline,
            "ratios": ratios,
            "ok": ok,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(ok)
}
