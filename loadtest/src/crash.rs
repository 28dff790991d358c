//! `ferry-load crash`: the crash-durability campaign.
//!
//! It starts `ferry serve` as a child process, lets U×D devices publish
//! continuously (a window of publishes in flight each), and `kill -9`s the server
//! at a random moment (seeded) after the cycle's first ack, N times. A device keeps
//! every publish it sent until it is acked; after reconnecting it sends the unacked
//! ones again with the same event id (idempotent retries). After the last kill the
//! server starts once more, the devices finish their unacked publishes, and a fresh
//! device of each user reads the whole log with `sync`: every acked event must be
//! there exactly once, at the seq of its ack, and every log gap-free
//! (`durability.rs`).
//!
//! Per cycle it measures the restart: process start to `/health/ready` 200, and to
//! the first ack. The database is SQLite in a temporary directory or a fresh
//! PostgreSQL database, created with `psql` and dropped at the end.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::check::{HEADER_LEN, Header};
use crate::child::{PgDatabase, ServerSpec, TempDir};
use crate::common::say;
use crate::durability::{Acks, DurabilityReport, UserLog};
use crate::net::{self, Failure, Failures, Lean, Opened, Session, Target};
use crate::progress::Counter;
use crate::stats::parse_duration;

/// Where the events are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Backend {
    /// `sqlite:` in a temporary directory.
    Sqlite,
    /// A fresh database on `--postgres-url`'s server.
    Postgres,
}

/// Arguments of `ferry-load crash`.
#[derive(Debug, clap::Args)]
pub(crate) struct CrashArgs {
    /// The `ferry` binary (default: `ferry` beside this executable).
    #[arg(long)]
    pub(crate) ferry: Option<PathBuf>,
    /// Storage backend.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub(crate) backend: Backend,
    /// PostgreSQL server on which a fresh database is created (with `psql`) and
    /// dropped at the end.
    #[arg(
        long,
        env = "FERRY_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) postgres_url: String,
    /// Kill cycles.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) cycles: u32,
    /// Seed of the kill moments (default: random, printed).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Users.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) users: u32,
    /// Publishing devices per user.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) devices: u32,
    /// Publishes in flight per device.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) window: u32,
    /// Payload bytes (at least 24).
    #[arg(long, default_value_t = 64)]
    pub(crate) payload: usize,
    /// Earliest kill after the cycle's first ack.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub(crate) kill_min: Duration,
    /// Latest kill after the cycle's first ack.
    #[arg(long, default_value = "700ms", value_parser = parse_duration)]
    pub(crate) kill_max: Duration,
    /// Time limit from a start to its first ack, and of the final drain and check.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) step_timeout: Duration,
    /// Keep the data directory and the server's log.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Print the results as one JSON document on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What the devices are doing.
const RUN: u8 = 0;
const DRAIN: u8 = 1;
const STOP: u8 = 2;

/// State shared by the coordinator and the devices.
struct Shared {
    /// Which server process is the current one (1, 2, …).
    generation: AtomicU64,
    /// The highest generation that has had its first ack.
    first_acked: AtomicU64,
    /// Tells the coordinator about a generation's first ack.
    first_ack: mpsc::UnboundedSender<(u64, Instant)>,
    phase: AtomicU8,
    /// Publishes sent and not yet acked, over all devices.
    in_flight: Counter,
    acked: Counter,
    /// Publishes sent again after a reconnect.
    retried: Counter,
    /// Acks of retries that said `duplicate`: stored before a kill, ack lost.
    duplicate_acks: Counter,
    /// Acks for a counter that was not waiting for one.
    stray_acks: Counter,
    errors: Mutex<Failures>,
}

/// One publishing device's identity and what it has sent.
struct Device {
    origin: u32,
    creds: ferry_proto::handshake::DeviceCredentials,
    nonce: [u8; 8],
    payload: Vec<u8>,
    next: u64,
    /// Sent (or to send again) and not acked.
    pending: BTreeSet<u64>,
    acks: Acks,
}

impl Device {
    fn publish(&mut self, counter: u64) -> Vec<u8> {
        Header {
            origin: self.origin,
            counter,
            sent_ns: 0,
        }
        .write(&mut self.payload);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.nonce);
        id[8..12].copy_from_slice(&self.origin.to_be_bytes());
        id[12..].copy_from_slice(&(counter as u32).to_be_bytes());
        net::publish_json(counter, &id, &self.payload)
    }
}

/// Reconnects and publishes until told to stop; returns the device with its acks.
async fn device(
    mut dev: Device,
    target: Target,
    pin: ferry_proto::handshake::ServerPin,
    window: u32,
    shared: Arc<Shared>,
) -> Device {
    loop {
        let phase = shared.phase.load(Ordering::Acquire);
        if phase == STOP || (phase == DRAIN && dev.pending.is_empty()) {
            return dev;
        }
        let generation = shared.generation.load(Ordering::Acquire);
        match net::connect(
            &target,
            None,
            dev.creds.clone(),
            pin,
            Duration::from_secs(5),
        )
        .await
        {
            Ok(s) => {
                // A kill ends sessions with resets and EOFs: expected, not counted.
                if let Err(Failure::Protocol(what)) =
                    session(&mut dev, s, generation, window, &shared).await
                {
                    *shared
                        .errors
                        .lock()
                        .expect("errors")
                        .entry(what.to_string())
                        .or_default() += 1;
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// One session: sends the unacked publishes again, then keeps `window` in flight.
async fn session(
    dev: &mut Device,
    mut s: Session,
    generation: u64,
    window: u32,
    shared: &Shared,
) -> Result<(), Failure> {
    for c in dev.pending.clone() {
        s.feed(dev.publish(c)).await?;
        shared.retried.inc();
    }
    loop {
        let phase = shared.phase.load(Ordering::Acquire);
        if phase == STOP || (phase == DRAIN && dev.pending.is_empty()) {
            s.close().await;
            return Ok(());
        }
        while phase == RUN && dev.pending.len() < window as usize {
            let c = dev.next;
            dev.next += 1;
            dev.pending.insert(c);
            shared.in_flight.inc();
            s.feed(dev.publish(c)).await?;
        }
        s.flush().await?;
        let msg = match tokio::time::timeout(Duration::from_millis(200), s.ws.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(net::ws_failure(e)),
            Ok(None) => return Err(Failure::Transport("eof")),
        };
        let Opened::Plain(plain) = s.open(msg)? else {
            continue;
        };
        let m: Lean<'_> =
            serde_json::from_slice(&plain).map_err(|_| Failure::Protocol("unreadable"))?;
        match m.ty {
            "ack" => {
                let (Some(rid), Some(seq)) = (m.rid, m.seq) else {
                    return Err(Failure::Protocol("ack_without_rid_or_seq"));
                };
                let c = rid as u64;
                if !dev.pending.remove(&c) {
                    shared.stray_acks.inc();
                    continue;
                }
                shared.in_flight.sub(1);
                dev.acks.ack(c, seq);
                shared.acked.inc();
                if m.duplicate {
                    shared.duplicate_acks.inc();
                }
                if shared.first_acked.fetch_max(generation, Ordering::AcqRel) < generation {
                    let _ = shared.first_ack.send((generation, Instant::now()));
                }
            }
            "error" | "conflict" => {
                // Reconnecting sends everything unacked again.
                let code = format!("{}_{}", m.ty, m.code.unwrap_or(""));
                *shared
                    .errors
                    .lock()
                    .expect("errors")
                    .entry(code)
                    .or_default() += 1;
                s.close().await;
                return Ok(());
            }
            _ => {}
        }
    }
}

/// Reads a user's whole log with a fresh device.
async fn read_log(
    target: &Target,
    pin: ferry_proto::handshake::ServerPin,
    user: &ferry_client::UserKey,
) -> Result<UserLog, Failure> {
    let mut s = net::connect(
        target,
        None,
        net::fresh_device(user),
        pin,
        Duration::from_secs(10),
    )
    .await?;
    let mut log = UserLog::default();
    let mut after = 0;
    for page in 1.. {
        let req = format!("{{\"type\":\"sync\",\"rid\":{page},\"after\":{after},\"limit\":1000}}");
        let plain = s.request(req.into_bytes(), page).await?;
        let m: Lean<'_> =
            serde_json::from_slice(&plain).map_err(|_| Failure::Protocol("unreadable"))?;
        if m.ty != "events" {
            return Err(Failure::Protocol("sync_refused"));
        }
        log.head = m.head.unwrap_or(log.head);
        for e in &m.events {
            let seq = e.seq.unwrap_or(0);
            log.events.push((seq, Header::read_b64u(e.payload)));
            after = after.max(seq);
        }
        if !m.more || m.events.is_empty() {
            break;
        }
    }
    s.close().await;
    Ok(log)
}

/// min / median / max of a list of durations, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Spread {
    min_ms: f64,
    median_ms: f64,
    max_ms: f64,
}

impl Spread {
    fn of(ds: &[Duration]) -> Self {
        let mut ms: Vec<f64> = ds.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        if ms.is_empty() {
            return Self::default();
        }
        let median = if ms.len() % 2 == 1 {
            ms[ms.len() / 2]
        } else {
            (ms[ms.len() / 2 - 1] + ms[ms.len() / 2]) / 2.0
        };
        Self {
            min_ms: ms[0],
            median_ms: median,
            max_ms: ms[ms.len() - 1],
        }
    }

    fn line(&self) -> String {
        format!(
            "min {:.1} ms  median {:.1} ms  max {:.1} ms",
            self.min_ms, self.median_ms, self.max_ms
        )
    }
}

/// The figures of a campaign.
#[derive(Debug, Serialize)]
struct Outcome {
    backend: Backend,
    cycles: u32,
    seed: u64,
    users: u32,
    devices: u32,
    window: u32,
    published: u64,
    acked: u64,
    retried: u64,
    duplicate_acks: u64,
    stray_acks: u64,
    errors: Failures,
    /// `kill -9`s that found publishes in flight.
    kills_in_flight: u32,
    in_flight_at_kill: Spread3,
    /// Exits of the server that were not our kill.
    unexpected_exits: u32,
    start_to_ready: Spread,
    start_to_first_ack: Spread,
    check: DurabilityReport,
    secs: f64,
}

/// min / median / max of counts.
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Spread3 {
    min: u64,
    median: u64,
    max: u64,
}

impl Spread3 {
    fn of(mut v: Vec<u64>) -> Self {
        v.sort_unstable();
        match v.len() {
            0 => Self::default(),
            n => Self {
                min: v[0],
                median: v[n / 2],
                max: v[n - 1],
            },
        }
    }
}

/// Runs `ferry-load crash`; `Ok(false)` when the check failed.
pub(crate) async fn run(args: &CrashArgs) -> anyhow::Result<bool> {
    if args.payload < HEADER_LEN {
        bail!("--payload must be at least {HEADER_LEN} bytes");
    }
    if args.kill_max < args.kill_min {
        bail!("--kill-max must not be below --kill-min");
    }
    let exe = crate::child::ferry_exe(args.ferry.as_deref())?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = TempDir::new("crash", args.keep)?;
    let (pg, database_url) = match args.backend {
        Backend::Sqlite => (
            None,
            format!("sqlite:{}", dir.path().join("ferry.db").display()),
        ),
        Backend::Postgres => {
            let (db, url) = PgDatabase::create(&args.postgres_url, "crash")?;
            (Some(db), url)
        }
    };
    let key_seed = crate::serve_env::random_seed();
    let spec = ServerSpec::new(exe, dir.path(), &database_url, &key_seed, &[])?;
    let result = campaign(args, seed, &mut rng, &spec, &key_seed).await;
    if let Err(e) = &result {
        eprintln!("the server's log ends with:\n{}", spec.log_tail(20));
        eprintln!("error: {e:#}");
    }
    if let Some(Err(e)) = pg.map(PgDatabase::drop_now) {
        eprintln!("warning: {e:#}");
    }
    result
}

async fn campaign(
    args: &CrashArgs,
    seed: u64,
    rng: &mut rand::rngs::StdRng,
    spec: &ServerSpec,
    key_seed: &[u8; 32],
) -> anyhow::Result<bool> {
    let json = args.json;
    say(
        json,
        &format!(
            "crash: {} kill -9 cycles of {} on {:?}, {}×{} devices publishing ({} in flight each), seed {seed}",
            args.cycles,
            spec.exe.display(),
            args.backend,
            args.users,
            args.devices,
            args.window
        ),
    );
    let target = Target::parse(&spec.ws_url())?;
    let pin = net::pin(Some(&crate::serve_env::public_key(key_seed)))?;
    let users = net::identities(None, args.users, args.devices)?;
    let (first_ack_tx, mut first_ack_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        generation: AtomicU64::new(0),
        first_acked: AtomicU64::new(0),
        first_ack: first_ack_tx,
        phase: AtomicU8::new(RUN),
        in_flight: Counter::default(),
        acked: Counter::default(),
        retried: Counter::default(),
        duplicate_acks: Counter::default(),
        stray_acks: Counter::default(),
        errors: Mutex::new(Failures::new()),
    });
    let mut tasks = Vec::new();
    let mut nonce = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    for (u, user) in users.iter().enumerate() {
        for (slot, creds) in user.devices.iter().enumerate() {
            let dev = Device {
                origin: u as u32 * args.devices + slot as u32,
                creds: creds.clone(),
                nonce,
                payload: vec![0x5A; args.payload],
                next: 0,
                pending: BTreeSet::new(),
                acks: Acks::default(),
            };
            tasks.push(tokio::spawn(device(
                dev,
                target.clone(),
                pin,
                args.window,
                shared.clone(),
            )));
        }
    }
    let started = Instant::now();
    let (mut to_ready, mut to_ack, mut in_flight) = (Vec::new(), Vec::new(), Vec::new());
    let mut unexpected_exits = 0;
    let mut kills_in_flight = 0;
    let mut child;
    let mut generation = 0;
    loop {
        generation += 1;
        shared.generation.store(generation, Ordering::Release);
        let t0 = Instant::now();
        child = spec.spawn()?;
        // Readiness and the first ack, whichever comes first; both are awaited.
        let deadline = t0 + args.step_timeout;
        let mut ready_at = None;
        let mut ack_at = None;
        while ready_at.is_none() || ack_at.is_none() {
            if Instant::now() > deadline {
                bail!(
                    "start {generation}: not ready and acking within {:?}",
                    args.step_timeout
                );
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("start {generation}: the server exited at once ({status})");
            }
            if ready_at.is_none() && spec.ready().await {
                ready_at = Some(t0.elapsed());
            }
            while let Ok((g, at)) = first_ack_rx.try_recv() {
                if g == generation {
                    ack_at = Some(at.saturating_duration_since(t0));
                }
            }
            if ready_at.is_none() || ack_at.is_none() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        to_ready.push(ready_at.unwrap_or_default());
        to_ack.push(ack_at.unwrap_or_default());
        if generation > u64::from(args.cycles) {
            break;
        }
        let wait = rng.gen_range(args.kill_min..=args.kill_max);
        tokio::select! {
            status = child.wait() => {
                unexpected_exits += 1;
                eprintln!("cycle {generation}: the server exited by itself ({status:?})");
                continue;
            }
            () = tokio::time::sleep(wait) => {}
        }
        let n = shared.in_flight.get();
        in_flight.push(n);
        if n > 0 {
            kills_in_flight += 1;
        }
        child.start_kill().context("kill -9")?;
        let _ = child.wait().await;
        if generation % 10 == 0 || generation == u64::from(args.cycles) {
            eprintln!(
                "[crash {:>6.1}s] cycle {generation}/{}: acked {}, retried {}, duplicate acks {}, in flight at kill {n}",
                started.elapsed().as_secs_f64(),
                args.cycles,
                shared.acked.get(),
                shared.retried.get(),
                shared.duplicate_acks.get()
            );
        }
    }

    // The last start: finish every unacked publish, then read the logs.
    shared.phase.store(DRAIN, Ordering::Release);
    let mut devices = Vec::new();
    let drained = tokio::time::timeout(args.step_timeout, async {
        for t in tasks.drain(..) {
            devices.push(t.await.context("a device task panicked")?);
        }
        anyhow::Ok(())
    })
    .await;
    shared.phase.store(STOP, Ordering::Release);
    match drained {
        Err(_) => bail!(
            "the devices did not get their unacked publishes acked within {:?}",
            args.step_timeout
        ),
        Ok(r) => r?,
    }
    devices.sort_by_key(|d| d.origin);
    let mut logs = Vec::new();
    for user in &users {
        let log = tokio::time::timeout(args.step_timeout, read_log(&target, pin, &user.user))
            .await
            .context("reading a log timed out")?
            .map_err(|f| anyhow::anyhow!("reading a log: {f}"))?;
        logs.push(log);
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    let acks: Vec<Acks> = devices.iter().map(|d| d.acks.clone()).collect();
    let check = crate::durability::check(args.devices, &acks, &logs);
    let o = Outcome {
        backend: args.backend,
        cycles: args.cycles,
        seed,
        users: args.users,
        devices: args.devices,
        window: args.window,
        published: devices.iter().map(|d| d.next).sum(),
        acked: shared.acked.get(),
        retried: shared.retried.get(),
        duplicate_acks: shared.duplicate_acks.get(),
        stray_acks: shared.stray_acks.get(),
        errors: shared.errors.lock().expect("errors").clone(),
        kills_in_flight,
        in_flight_at_kill: Spread3::of(in_flight),
        unexpected_exits,
        start_to_ready: Spread::of(&to_ready),
        start_to_first_ack: Spread::of(&to_ack),
        check,
        secs: started.elapsed().as_secs_f64(),
    };
    let ok = o.check.ok() && o.unexpected_exits == 0 && o.stray_acks == 0 && o.acked == o.published;
    say(
        json,
        &format!(
            "{} kill -9 cycles in {:.0} s ({} starts), {kills_in_flight} kills with publishes in flight \
             (in flight at kill: min {} median {} max {})\n  published {}, acked {}, retried after a kill {}, \
             of which already stored (duplicate ack) {}, stray acks {}, unexpected exits {}, errors {}\n  \
             start → /health/ready 200: {}\n  start → first ack:         {}\n  check {}",
            o.cycles,
            o.secs,
            generation,
            o.in_flight_at_kill.min,
            o.in_flight_at_kill.median,
            o.in_flight_at_kill.max,
            o.published,
            o.acked,
            o.retried,
            o.duplicate_acks,
            o.stray_acks,
            o.unexpected_exits,
            crate::common::failures_line(&o.errors),
            o.start_to_ready.line(),
            o.start_to_first_ack.line(),
            o.check.line(),
        ),
    );
    if json {
        let doc = json!({ "scenario": "crash", "result": o, "ok": ok });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads() {
        let s = Spread::of(&[
            Duration::from_millis(30),
            Duration::from_millis(10),
            Duration::from_millis(20),
        ]);
        assert_eq!((s.min_ms, s.median_ms, s.max_ms), (10.0, 20.0, 30.0));
        let s = Spread::of(&[Duration::from_millis(10), Duration::from_millis(20)]);
        assert_eq!(s.median_ms, 15.0);
        assert_eq!(Spread::of(&[]).max_ms, 0.0);
        let c = Spread3::of(vec![5, 1, 9]);
        assert_eq!((c.min, c.median, c.max), (1, 5, 9));
    }

    #[test]
    fn ids_and_payloads_repeat_for_a_retry() {
        let user = &net::identities(None, 1, 1).unwrap()[0];
        let mut dev = Device {
            origin: 7,
            creds: user.devices[0].clone(),
            nonce: [1; 8],
            payload: vec![0; 32],
            next: 0,
            pending: BTreeSet::new(),
            acks: Acks::default(),
        };
        let first = dev.publish(3);
        assert_eq!(first, dev.publish(3));
        assert_ne!(first, dev.publish(4));
        let h = Header::read(&dev.payload).unwrap();
        assert_eq!((h.origin, h.counter), (7, 4));
    }
}
