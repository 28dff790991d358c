//! `ferry-load idle`: N authenticated sessions that do nothing but answer the
//! server's pings, to measure what an idle session costs the server in memory.
//!
//! Source addresses rotate over 127.0.0.2 ..= 127.0.0.(K+1) so N can exceed the
//! ephemeral ports of one address, and the open-file limit is raised to the hard
//! limit. The server's RSS is read before the sessions open, once they are all
//! open, and at the end of `--hold`; a sample of sessions then pings through the
//! sealed channel and every session must still be alive.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::baseline;
use crate::common::{self, BaselineOpts, ConnArgs, ReportArgs, say};
use crate::net::{self, Failure, Failures, Opened, Session, Sources, Ws};
use crate::progress::{Counter, ProcSample, Progress, ServerProbe};
use crate::stats::{self, SharedHistogram, Summary, fmt_ratio, ratio};

/// Arguments of `ferry-load idle`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The server needs FERRY_LIMITS_MAX_CONNECTIONS ≥ N, a high \
FERRY_LIMITS_MAX_CONNECTIONS_PER_IP and FERRY_LIMITS_HANDSHAKES_PER_IP_PER_SEC \
(`ferry-load serve-env`), and an open-file limit above N (`ulimit -n`). \
Give --server-pid (reads /proc/<pid>/status VmRSS) or --metrics-url \
(process_resident_memory_bytes) for the memory figures.")]
pub(crate) struct IdleArgs {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    #[command(flatten)]
    pub(crate) report: ReportArgs,
    #[command(flatten)]
    pub(crate) baseline: BaselineOpts,
    /// Sessions to open and hold.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) sessions: u32,
    /// How long to hold them once all are open.
    #[arg(long, default_value = "30s", value_parser = stats::parse_duration)]
    pub(crate) hold: Duration,
    /// Sessions that ping through the sealed channel at the end of the hold.
    #[arg(long, default_value_t = 100)]
    pub(crate) sample: u32,
    /// Devices per user (1: every session is its own user).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) devices_per_user: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Hold,
    Check,
    Close,
}

#[derive(Default)]
struct Live {
    alive: Counter,
    pings_ok: Counter,
    pings_failed: Counter,
    ping_latency: SharedHistogram,
    deaths: Mutex<Failures>,
}

// One per held connection, in its own task: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Held {
    Ferry(Session),
    Raw(Ws),
}

impl Held {
    fn ws(&mut self) -> &mut Ws {
        match self {
            Self::Ferry(s) => &mut s.ws,
            Self::Raw(ws) => ws,
        }
    }

    /// Handles one message while idle; `Err` when the session ended.
    fn on_message(&mut self, msg: Message) -> Result<(), Failure> {
        match self {
            // Every sealed frame must be opened, or the receive counter falls behind.
            Self::Ferry(s) => s.open(msg).map(|_: Opened| ()),
            Self::Raw(_) => match msg {
                Message::Close(f) => Err(Failure::Closed(f.map_or(1005, |f| u16::from(f.code)))),
                _ => Ok(()),
            },
        }
    }

    /// One round trip: a sealed `ping` → `pong`, or a raw frame → its echo.
    async fn ping(&mut self) -> Result<(), Failure> {
        match self {
            Self::Ferry(s) => s
                .request(b"{\"type\":\"ping\",\"rid\":1}".to_vec(), 1)
                .await
                .map(drop),
            Self::Raw(ws) => {
                ws.send(Message::Binary(vec![1u8; 16].into()))
                    .await
                    .map_err(net::ws_failure)?;
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Binary(_))) => return Ok(()),
                        Some(Ok(Message::Close(f))) => {
                            return Err(Failure::Closed(f.map_or(1005, |f| u16::from(f.code))));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(net::ws_failure(e)),
                        None => return Err(Failure::Transport("eof")),
                    }
                }
            }
        }
    }
}

async fn hold(mut c: Held, sampled: bool, mut phase: watch::Receiver<Phase>, live: Arc<Live>) {
    let death = loop {
        tokio::select! {
            msg = c.ws().next() => match msg {
                Some(Ok(m)) => {
                    if let Err(f) = c.on_message(m) {
                        break Some(f);
                    }
                }
                Some(Err(e)) => break Some(net::ws_failure(e)),
                None => break Some(Failure::Transport("eof")),
            },
            changed = phase.changed() => {
                if changed.is_err() {
                    break None;
                }
                let now = *phase.borrow_and_update();
                match now {
                    Phase::Hold => {}
                    Phase::Check if sampled => {
                        let t0 = Instant::now();
                        match tokio::time::timeout(Duration::from_secs(10), c.ping()).await {
                            Ok(Ok(())) => {
                                live.pings_ok.inc();
                                live.ping_latency.record(t0.elapsed());
                            }
                            Ok(Err(f)) => {
                                live.pings_failed.inc();
                                break Some(f);
                            }
                            Err(_) => {
                                live.pings_failed.inc();
                                break Some(Failure::Timeout);
                            }
                        }
                    }
                    Phase::Check => {}
                    Phase::Close => break None,
                }
            }
        }
    };
    match death {
        None => net::close(c.ws()).await,
        Some(f) => {
            live.alive.sub(1);
            *live
                .deaths
                .lock()
                .expect("deaths lock")
                .entry(f.label())
                .or_default() += 1;
        }
    }
}

/// The figures of one idle run.
#[derive(Debug, Serialize)]
struct Outcome {
    server: &'static str,
    sessions: u32,
    connect_secs: f64,
    alive_at_end: u64,
    deaths: Failures,
    pings_ok: u64,
    pings_failed: u64,
    ping_latency: Summary,
    rss_before: Option<u64>,
    rss_all_open: Option<u64>,
    rss_end_of_hold: Option<u64>,
    /// (RSS at the end of the hold − RSS before) / sessions.
    rss_bytes_per_session: Option<f64>,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.alive_at_end == u64::from(self.sessions) && self.pings_failed == 0
    }

    fn text(&self) -> String {
        let mib =
            |b: Option<u64>| b.map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / 1_048_576.0));
        let mut s = format!(
            "{}: {} sessions opened in {:.1} s; alive at the end {}; pings {} ok, {} failed ({})\n",
            self.server,
            self.sessions,
            self.connect_secs,
            self.alive_at_end,
            self.pings_ok,
            self.pings_failed,
            self.ping_latency.line()
        );
        s += &format!(
            "  server RSS before {} → all open {} → end of hold {}",
            mib(self.rss_before),
            mib(self.rss_all_open),
            mib(self.rss_end_of_hold)
        );
        if let Some(per) = self.rss_bytes_per_session {
            s += &format!("  =  {:.2} KiB per session", per / 1024.0);
        }
        if !self.deaths.is_empty() {
            s += &format!("\n  sessions lost: {}", common::failures_line(&self.deaths));
        }
        s
    }
}

async fn rss(probe: Option<&ServerProbe>) -> Option<u64> {
    match probe?.sample().await {
        Ok(ProcSample { rss_bytes, .. }) => Some(rss_bytes),
        Err(e) => {
            eprintln!("warning: cannot read the server's memory: {e:#}");
            None
        }
    }
}

/// Holds `conns`, then checks and closes them; fills in the outcome.
async fn hold_all(
    server: &'static str,
    conns: Vec<Held>,
    sample: u32,
    hold_for: Duration,
    probe: Option<&ServerProbe>,
    rss_before: Option<u64>,
    connect_secs: f64,
) -> Outcome {
    let n = conns.len() as u32;
    let live = Arc::new(Live::default());
    live.alive.add(u64::from(n));
    let (phase_tx, phase_rx) = watch::channel(Phase::Hold);
    let every = (n / sample.clamp(1, n.max(1))).max(1);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let sampled = sample > 0 && (i as u32).is_multiple_of(every);
            tokio::spawn(hold(c, sampled, phase_rx.clone(), live.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_all_open = rss(probe).await;
    let started = Instant::now();
    let progress = {
        let live = live.clone();
        Progress::start(server, started, move |_| {
            format!("alive {}/{n}", live.alive.get())
        })
    };
    tokio::time::sleep(hold_for).await;
    let rss_end = rss(probe).await;
    let _ = phase_tx.send(Phase::Check);
    // Let the sample ping (each bounded to 10 s).
    let until = Instant::now() + Duration::from_secs(12);
    let sampled = u64::from(if sample == 0 { 0 } else { n.div_ceil(every) });
    while live.pings_ok.get() + live.pings_failed.get() < sampled && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let alive_at_end = live.alive.get();
    let _ = phase_tx.send(Phase::Close);
    for t in tasks {
        let _ = t.await;
    }
    progress.stop().await;
    let per = rss_before
        .zip(rss_end)
        .map(|(b, a)| (a as f64 - b as f64) / f64::from(n.max(1)));
    Outcome {
        server,
        sessions: n,
        connect_secs,
        alive_at_end,
        deaths: live.deaths.lock().expect("deaths lock").clone(),
        pings_ok: live.pings_ok.get(),
        pings_failed: live.pings_failed.get(),
        ping_latency: live.ping_latency.summary(),
        rss_before,
        rss_all_open,
        rss_end_of_hold: rss_end,
        rss_bytes_per_session: per,
    }
}

/// Opens `n` raw WebSockets to `target`, `concurrency` at a time.
async fn open_raw(
    target: &net::Target,
    sources: &Arc<Sources>,
    n: u32,
    concurrency: usize,
) -> Result<Vec<Held>, Failures> {
    let open = |_| {
        let (t, source): (net::Target, Option<IpAddr>) = (target.clone(), sources.pick());
        async move { net::open(&t, source).await }
    };
    let held = net::open_each(n, concurrency, open).await?;
    Ok(held.into_iter().map(Held::Raw).collect())
}

/// Runs `ferry-load idle`; `Ok(false)` when a session died or a ping failed.
pub(crate) async fn run(args: &IdleArgs) -> anyhow::Result<bool> {
    let n = args.sessions;
    let limit = net::raise_fd_limit();
    if u64::from(n) + 200 > limit {
        bail!(
            "{n} sessions need more open files than this process may have ({limit}); lower --sessions"
        );
    }
    let target = net::Target::parse(&args.conn.url)?;
    let pin = net::pin(args.conn.server_key.as_deref())?;
    let k = args.conn.sources.unwrap_or(4);
    let sources = Arc::new(Sources::new(k)?);
    let probe = ServerProbe::from_args(&args.report.server_pid, args.report.metrics_url.as_deref());
    let json = args.report.json;
    if probe.is_none() {
        eprintln!("note: without --server-pid or --metrics-url there are no memory figures");
    }
    say(
        json,
        &format!(
            "idle: {n} sessions from {} source addresses, held {:.0} s, {} pinged at the end \
             (open-file limit {limit})",
            k.max(1),
            args.hold.as_secs_f64(),
            args.sample.min(n)
        ),
    );

    let baseline = if let Some(child) = args
        .baseline
        .start(
            baseline::Mode::Echo,
            args.report.server_pid.first().copied(),
            args.hold + Duration::from_secs(600),
        )
        .await?
    {
        let child_probe = ServerProbe::Pid(child.pid);
        let before = rss(Some(&child_probe)).await;
        let t0 = Instant::now();
        let conns = match open_raw(
            &child.target("/"),
            &sources,
            n,
            args.conn.connect_concurrency,
        )
        .await
        {
            Ok(c) => c,
            Err(f) => {
                child.stop().await;
                bail!("baseline connections failed: {}", common::failures_line(&f));
            }
        };
        let o = hold_all(
            "baseline",
            conns,
            args.sample,
            args.hold,
            Some(&child_probe),
            before,
            t0.elapsed().as_secs_f64(),
        )
        .await;
        child.stop().await;
        say(json, &o.text());
        Some(o)
    } else {
        None
    };

    let users = n.div_ceil(args.devices_per_user);
    let creds: Vec<_> = net::identities(args.conn.keys.as_deref(), users, args.devices_per_user)?
        .into_iter()
        .flat_map(|u| u.devices)
        .take(n as usize)
        .collect();
    let before = rss(probe.as_ref()).await;
    let t0 = Instant::now();
    let sessions = common::connect_all_or_fail(&target, &sources, pin, creds, &args.conn).await?;
    let connect_secs = t0.elapsed().as_secs_f64();
    let ferry = hold_all(
        "ferry",
        sessions.into_iter().map(Held::Ferry).collect(),
        args.sample,
        args.hold,
        probe.as_ref(),
        before,
        connect_secs,
    )
    .await;
    say(json, &ferry.text());
    let mem_ratio = baseline.as_ref().and_then(|b| {
        ferry
            .rss_bytes_per_session
            .zip(b.rss_bytes_per_session)
            .and_then(|(f, b)| ratio(f, b))
    });
    if baseline.is_some() {
        say(
            json,
            &format!(
                "ferry / baseline: memory per session {}",
                fmt_ratio(mem_ratio)
            ),
        );
    }
    let ok = ferry.ok() && baseline.as_ref().is_none_or(Outcome::ok);
    if json {
        let doc = json!({
            "scenario": "idle",
            "sessions": n,
            "sources": k,
            "hold_s": args.hold.as_secs_f64(),
            "ferry": ferry,
            "baseline": baseline,
            "ratios": { "rss_per_session": mem_ratio },
            "ok": ok,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(ok)
}
