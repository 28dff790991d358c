//! Options and helpers every scenario shares.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferry_proto::handshake::{DeviceCredentials, ServerPin};
use futures_util::StreamExt as _;

use crate::net::{self, Failures, Session, Sources, Target};
use crate::progress::{Counter, Progress};

/// Where the server is and who connects.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnArgs {
    /// The relay's WebSocket URL (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
    pub(crate) url: String,
    /// The server's public key (b64u) to pin; without it the first key seen is trusted.
    /// A b64u key may begin with `-`, so a value that looks like a flag is taken too.
    #[arg(long, env = "FERRYLOAD_SERVER_KEY", allow_hyphen_values = true)]
    pub(crate) server_key: Option<String>,
    /// Key file from `ferry-load keys`; without it fresh identities are made in memory.
    #[arg(long)]
    pub(crate) keys: Option<PathBuf>,
    /// Spread client source addresses over 127.0.0.2 ..= 127.0.0.(K+1) (0: the
    /// kernel's choice, 127.0.0.1). Default 0; `idle` defaults to 4.
    #[arg(long)]
    pub(crate) sources: Option<u32>,
    /// Handshakes in flight while connecting the sessions of a scenario.
    #[arg(long, default_value_t = 64)]
    pub(crate) connect_concurrency: usize,
    /// Time limit of one connection's TCP connect, upgrade and handshake.
    #[arg(long, default_value = "20s", value_parser = crate::stats::parse_duration)]
    pub(crate) connect_timeout: Duration,
}

/// How to observe the server process, and output.
#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// The server's process id: its RSS and CPU time are read from /proc. Several
    /// instances: several ids (comma-separated or the option repeated), whose RSS
    /// and CPU time are summed.
    #[arg(long, value_delimiter = ',', value_name = "PID")]
    pub(crate) server_pid: Vec<u32>,
    /// Or its Prometheus endpoint (process_resident_memory_bytes,
    /// process_cpu_seconds_total), e.g. http://127.0.0.1:9090/metrics.
    #[arg(long)]
    pub(crate) metrics_url: Option<String>,
    /// Print the results as one JSON document on stdout (the human summary goes
    /// to stderr).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Options of the built-in baseline server a scenario compares against.
#[derive(Debug, clap::Args)]
pub(crate) struct BaselineOpts {
    /// First run the same pattern against the built-in raw WebSocket baseline
    /// server (a child process) and report Ferry's figures as ratios to it.
    #[arg(long)]
    pub(crate) with_baseline: bool,
    /// CPUs for the baseline server, and for the peers of `relay --with-peers`
    /// (taskset list); default: the CPUs that --server-pid (the first one) may
    /// use, so all servers get the same cores.
    #[arg(long)]
    pub(crate) baseline_cpus: Option<String>,
}

impl BaselineOpts {
    /// With `--with-baseline`, starts the baseline server in `mode` on the CPUs of
    /// `--baseline-cpus` (or those `server_pid` may use) for at most `lifetime`.
    pub(crate) async fn start(
        &self,
        mode: crate::baseline::Mode,
        server_pid: Option<u32>,
        lifetime: Duration,
    ) -> anyhow::Result<Option<crate::baseline::Child>> {
        if !self.with_baseline {
            return Ok(None);
        }
        let cpus = crate::baseline::cpus_for(self.baseline_cpus.as_deref(), server_pid);
        Ok(Some(
            crate::baseline::Child::spawn(mode, cpus, lifetime).await?,
        ))
    }
}

static ANCHOR: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds from this process's clock anchor to `t` (monotonic; shared by all
/// tasks, so one device can time another's publish).
pub(crate) fn mono_ns(t: Instant) -> u64 {
    let anchor = *ANCHOR.get_or_init(Instant::now);
    u64::try_from(t.saturating_duration_since(anchor).as_nanos()).unwrap_or(u64::MAX)
}

/// Sets the clock anchor (call once, early).
pub(crate) fn init_clock() {
    let _ = mono_ns(Instant::now());
}

/// [`connect_all`] with the connection settings of `conn`; any failure is an error
/// naming how many of the sessions failed and why.
pub(crate) async fn connect_all_or_fail(
    target: &Target,
    sources: &std::sync::Arc<Sources>,
    pin: ServerPin,
    creds: Vec<DeviceCredentials>,
    conn: &ConnArgs,
) -> anyhow::Result<Vec<Session>> {
    let devices = creds.into_iter().map(|c| (target.clone(), c)).collect();
    connect_each_or_fail(
        sources,
        pin,
        devices,
        conn.connect_concurrency,
        conn.connect_timeout,
    )
    .await
}

/// [`connect_each`]; any failure is an error naming how many of the sessions
/// failed and why.
pub(crate) async fn connect_each_or_fail(
    sources: &std::sync::Arc<Sources>,
    pin: ServerPin,
    devices: Vec<(Target, DeviceCredentials)>,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Session>> {
    let total = devices.len();
    connect_each("connect", sources, pin, devices, concurrency, timeout)
        .await
        .map_err(|f| {
            anyhow::anyhow!(
                "{} of {total} sessions failed to connect: {}",
                f.values().sum::<u64>(),
                failures_line(&f)
            )
        })
}

/// Connects and authenticates every device, `concurrency` at a time (each in its
/// own task, so handshakes use every worker thread). Returns the sessions in the
/// order of `creds`, or the failures by label when any connection failed.
pub(crate) async fn connect_all(
    label: &'static str,
    target: &Target,
    sources: &std::sync::Arc<Sources>,
    pin: ServerPin,
    creds: Vec<DeviceCredentials>,
    concurrency: usize,
    timeout: Duration,
) -> Result<Vec<Session>, Failures> {
    let devices = creds.into_iter().map(|c| (target.clone(), c)).collect();
    connect_each(label, sources, pin, devices, concurrency, timeout).await
}

/// [`connect_all`] with a server per device (the instances of a cluster): returns
/// the sessions in the order of `devices`, or the failures by label.
pub(crate) async fn connect_each(
    label: &'static str,
    sources: &std::sync::Arc<Sources>,
    pin: ServerPin,
    devices: Vec<(Target, DeviceCredentials)>,
    concurrency: usize,
    timeout: Duration,
) -> Result<Vec<Session>, Failures> {
    let total = devices.len();
    let done = std::sync::Arc::new(Counter::default());
    let started = Instant::now();
    let progress = (total >= 2000).then(|| {
        let done = done.clone();
        Progress::start(label, started, move |_| {
            format!("connected {}/{total}", done.get())
        })
    });
    let results: Vec<Result<Session, net::Failure>> = futures_util::stream::iter(devices)
        .map(|(target, c)| {
            let source = sources.pick();
            let done = done.clone();
            tokio::spawn(async move {
                let r = net::connect(&target, source, c, pin, timeout).await;
                done.inc();
                r
            })
        })
        .buffered(concurrency.max(1))
        .map(|joined| joined.unwrap_or(Err(net::Failure::Transport("task_panicked"))))
        .collect()
        .await;
    if let Some(p) = progress {
        p.stop().await;
    }
    let mut failures = Failures::new();
    let mut sessions = Vec::with_capacity(total);
    for r in results {
        match r {
            Ok(s) => sessions.push(s),
            Err(f) => *failures.entry(f.label()).or_default() += 1,
        }
    }
    if failures.is_empty() {
        Ok(sessions)
    } else {
        // Close what did connect, so the server is left clean.
        futures_util::stream::iter(sessions)
            .for_each_concurrent(256, Session::close)
            .await;
        Err(failures)
    }
}

/// `{"close_4002": 3, …}` as `close_4002×3, …`.
pub(crate) fn failures_line(f: &Failures) -> String {
    if f.is_empty() {
        return "none".into();
    }
    f.iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prints the human summary to stdout, or to stderr when JSON goes to stdout.
pub(crate) fn say(json: bool, text: &str) {
    if json {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
}
