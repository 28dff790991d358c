//! `ferry-load steady`: does the database stop growing when every event has a ttl
//! and retention runs?
//!
//! Against its own `ferry serve` child on SQLite (a temporary data directory), U×D
//! devices publish events with `--ttl` at a constant `--rate` for `--minutes`; the
//! server's retention job runs at its default interval, or `--interval`. Every
//! `--sample-every` the scenario records the time, the events published and acked
//! so far, the sizes of `ferry.db` and `ferry.db-wal`, and
//! `ferry_database_size_bytes`. At the end it says whether each file stopped
//! growing: its largest size over the second half of the run is at most
//! `--growth-limit` (1.1) times its largest size up to the half-way mark.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::json;

use crate::child::{ServerSpec, SqliteFiles, TempDir};
use crate::common::say;
use crate::fleet::{Fleet, Pace};
use crate::retention::scrape_db_size;
use crate::stats;

/// Arguments of `ferry-load steady`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example (10 minutes; retention every minute, events live 60 s):

  cargo build --release -p ferry -p ferry-load
  ./target/release/ferry-load steady --rate 1000 --ttl 60 --minutes 10

The exit code is non-zero when any publish was lost (refused or left unanswered), \
and with --fail-on-growth also unless the database file stopped growing.")]
pub(crate) struct SteadyArgs {
    /// The `ferry` binary (default: `ferry` beside this executable).
    #[arg(long, visible_alias = "exe")]
    pub(crate) ferry: Option<PathBuf>,
    /// ttl of every event, seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) ttl: u32,
    /// Events per second over all devices.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) rate: f64,
    /// How long to publish, minutes (fractions allowed: 0.5 is 30 s).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) minutes: f64,
    /// How often to record the sizes.
    #[arg(long, default_value = "30s", value_parser = stats::parse_duration)]
    pub(crate) sample_every: Duration,
    /// The retention job's interval (`FERRY_RETENTION_INTERVAL`, e.g. 30s, 1m);
    /// default: the server's (1m).
    #[arg(long)]
    pub(crate) interval: Option<String>,
    #[command(flatten)]
    pub(crate) fleet: crate::fleet::FleetShape,
    /// A file stopped growing when its largest size over the second half is at most
    /// this many times its largest size up to the half-way mark.
    #[arg(long, default_value_t = 1.1)]
    pub(crate) growth_limit: f64,
    /// Fail (exit code 2) unless `ferry.db` stopped growing (kept growing, or too
    /// few samples to tell, fails).
    #[arg(long)]
    pub(crate) fail_on_growth: bool,
    /// After publishing stops, how long to wait for the last acks.
    #[arg(long, default_value = "30s", value_parser = stats::parse_duration)]
    pub(crate) drain: Duration,
    /// Keep the data directory and the server's log.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Print the results as one JSON document on stdout (the human summary goes to
    /// stderr).
    #[arg(long)]
    pub(crate) json: bool,
}

/// One reading.
#[derive(Clone, Copy, Debug, Serialize)]
struct Sample {
    /// Seconds since publishing started.
    secs: f64,
    published: u64,
    acked: u64,
    /// `ferry.db`, bytes.
    db_bytes: u64,
    /// `ferry.db-wal`, bytes.
    wal_bytes: u64,
    /// `ferry_database_size_bytes` (`None`: not exported).
    metric_bytes: Option<u64>,
}

/// Whether one size stopped growing.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
struct Plateau {
    /// Largest size up to the half-way mark.
    max_first_half: u64,
    /// Largest size after it.
    max_second_half: u64,
    /// `max_second_half / max_first_half`.
    growth: Option<f64>,
    /// `max_second_half ≤ limit × max_first_half`; `None`: no sample after the
    /// half-way mark, or nothing to compare with (size 0 up to it).
    stopped_growing: Option<bool>,
}

impl Plateau {
    fn of(samples: &[(f64, u64)], half: f64, limit: f64) -> Self {
        let max = |it: &mut dyn Iterator<Item = u64>| it.max();
        let first = max(&mut samples.iter().filter(|s| s.0 <= half).map(|s| s.1)).unwrap_or(0);
        let second = max(&mut samples.iter().filter(|s| s.0 > half).map(|s| s.1));
        Self {
            max_first_half: first,
            max_second_half: second.unwrap_or(0),
            growth: second.and_then(|s| stats::ratio(s as f64, first as f64)),
            stopped_growing: second
                .filter(|_| first > 0)
                .map(|s| s as f64 <= limit * first as f64),
        }
    }

    fn text(&self, name: &str, half: f64, limit: f64) -> String {
        let verdict = match self.stopped_growing {
            None if self.max_first_half == 0 => {
                "cannot tell (size 0 up to the half-way mark)".to_string()
            }
            None => "cannot tell (no sample after the half-way mark)".to_string(),
            Some(true) => format!("stopped growing (≤ {limit}×)"),
            Some(false) => format!("KEPT GROWING (> {limit}×)"),
        };
        format!(
            "{name}: largest {} up to {half:.0} s, {} after ({}): {verdict}",
            stats::bytes(self.max_first_half),
            stats::bytes(self.max_second_half),
            stats::fmt_ratio(self.growth),
        )
    }
}

/// Runs `ferry-load steady`; `Ok(false)` when a publish was lost (or, with
/// `--fail-on-growth`, the file kept growing).
pub(crate) async fn run(args: &SteadyArgs) -> anyhow::Result<bool> {
    if !(args.rate > 0.0 && args.rate <= 1_000_000.0) {
        bail!("--rate must be in (0, 1000000] events/s");
    }
    if !(args.minutes > 0.0 && args.minutes <= 24.0 * 60.0) {
        bail!("--minutes must be in (0, 1440]");
    }
    if args.sample_every < Duration::from_millis(100) {
        bail!("--sample-every must be at least 100ms");
    }
    if args.growth_limit.is_nan() || args.growth_limit < 1.0 {
        bail!("--growth-limit must be at least 1");
    }
    let exe = crate::child::ferry_exe(args.ferry.as_deref())?;
    let dir = TempDir::new("steady", args.keep)?;
    let key_seed = crate::serve_env::random_seed();
    let mut extra = Vec::new();
    if let Some(i) = &args.interval {
        extra.push(("FERRY_RETENTION_INTERVAL", i.clone()));
    }
    let spec = ServerSpec::new(exe, dir.path(), "", &key_seed, &extra)?;
    let mut child = spec
        .start_ready(Duration::from_secs(60))
        .await
        .context("starting `ferry serve`")?;
    let r = scenario(args, &spec, dir.path(), &key_seed).await;
    if let Ok(Some(status)) = child.try_wait() {
        eprintln!("the server exited during the run ({status})");
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    let tail = spec.log_tail(20);
    if r.is_err() && !tail.trim().is_empty() {
        eprintln!("the server's log ends with:\n{tail}");
    }
    r
}

async fn scenario(
    args: &SteadyArgs,
    spec: &ServerSpec,
    data_dir: &std::path::Path,
    key_seed: &[u8; 32],
) -> anyhow::Result<bool> {
    let json = args.json;
    let run_for = Duration::from_secs_f64(args.minutes * 60.0);
    say(
        json,
        &format!(
            "steady: {} on SQLite, retention interval {}; {} users × {} devices, {} events/s \
             with ttl {} s, {} B payloads, for {:.0} s, sizes every {:.0} s",
            spec.exe.display(),
            args.interval.as_deref().unwrap_or("the server's default"),
            args.fleet.users,
            args.fleet.devices,
            args.rate,
            args.ttl,
            args.fleet.payload,
            run_for.as_secs_f64(),
            args.sample_every.as_secs_f64(),
        ),
    );
    let mut fleet = Fleet::connect(
        &spec.ws_url(),
        &crate::serve_env::public_key(key_seed),
        args.fleet.users,
        args.fleet.devices,
        args.fleet.payload,
        args.fleet.window,
        json,
    )
    .await?;
    let metrics_url = spec.metrics_url();
    let mut phase = fleet.start("steady", Pace::Rate(args.rate), Some(args.ttl));
    let start = phase.started();
    let end = start + run_for;
    let mut samples = Vec::new();
    let mut k = 0u32;
    loop {
        let due = (start + args.sample_every * k).min(end);
        tokio::time::sleep_until(due.into()).await;
        let live = phase.live();
        let files = SqliteFiles::of(data_dir);
        let s = Sample {
            secs: due.saturating_duration_since(start).as_secs_f64(),
            published: live.published.get(),
            acked: live.acked.get(),
            db_bytes: files.db_bytes,
            wal_bytes: files.wal_bytes,
            metric_bytes: scrape_db_size(&metrics_url).await,
        };
        eprintln!(
            "[sample {:>6.0}s] published {}  ferry.db {}  -wal {}  {} {}",
            s.secs,
            s.published,
            stats::bytes(s.db_bytes),
            stats::bytes(s.wal_bytes),
            crate::retention::DB_SIZE_METRIC,
            s.metric_bytes.map_or("n/a".into(), stats::bytes)
        );
        samples.push(s);
        if due >= end {
            break;
        }
        k += 1;
    }
    phase.stop_publishing();
    let outcome = phase.finish(&mut fleet, args.drain).await;
    fleet.close().await;
    say(json, &outcome.line());

    let half = run_for.as_secs_f64() / 2.0;
    let db = Plateau::of(
        &samples
            .iter()
            .map(|s| (s.secs, s.db_bytes))
            .collect::<Vec<_>>(),
        half,
        args.growth_limit,
    );
    let wal = Plateau::of(
        &samples
            .iter()
            .map(|s| (s.secs, s.wal_bytes))
            .collect::<Vec<_>>(),
        half,
        args.growth_limit,
    );
    let metric = samples.iter().all(|s| s.metric_bytes.is_some()).then(|| {
        Plateau::of(
            &samples
                .iter()
                .map(|s| (s.secs, s.metric_bytes.unwrap_or(0)))
                .collect::<Vec<_>>(),
            half,
            args.growth_limit,
        )
    });
    let mut text = format!(
        "\n{:>8} {:>10} {:>10} {:>12} {:>12} {:>26}\n",
        "elapsed",
        "published",
        "acked",
        "ferry.db",
        "ferry.db-wal",
        crate::retention::DB_SIZE_METRIC
    );
    for s in &samples {
        text += &format!(
            "{:>7.0}s {:>10} {:>10} {:>12} {:>12} {:>26}\n",
            s.secs,
            s.published,
            s.acked,
            stats::bytes(s.db_bytes),
            stats::bytes(s.wal_bytes),
            s.metric_bytes.map_or("n/a".into(), stats::bytes)
        );
    }
    text += &db.text("ferry.db", half, args.growth_limit);
    text += "\n";
    text += &wal.text("ferry.db-wal", half, args.growth_limit);
    if let Some(m) = &metric {
        text += "\n";
        text += &m.text(crate::retention::DB_SIZE_METRIC, half, args.growth_limit);
    }
    let grew = db.stopped_growing != Some(true);
    let ok = outcome.ok() && !(args.fail_on_growth && grew);
    text += &format!(
        "\n{}: publishes lost {}, sessions lost {}; the database file {}",
        if ok { "PASS" } else { "FAIL" },
        outcome.lost(),
        outcome.sessions_lost,
        match db.stopped_growing {
            Some(true) => "stopped growing",
            Some(false) => "kept growing",
            None => "cannot be judged (see above)",
        }
    );
    say(json, &text);
    if json {
        let doc = json!({
            "scenario": "steady",
            "settings": {
                "ttl": args.ttl,
                "rate": args.rate,
                "minutes": args.minutes,
                "sample_every_secs": args.sample_every.as_secs_f64(),
                "interval": args.interval,
                "users": args.fleet.users,
                "devices": args.fleet.devices,
                "payload": args.fleet.payload,
                "window": args.fleet.window,
                "growth_limit": args.growth_limit,
            },
            "publishing": outcome,
            "samples": samples,
            "db_file": db,
            "wal_file": wal,
            "database_size_metric": metric,
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
    fn plateau_verdicts() {
        let flat = [
            (0.0, 100),
            (30.0, 900),
            (60.0, 1000),
            (90.0, 1050),
            (120.0, 1000),
        ];
        let p = Plateau::of(&flat, 60.0, 1.1);
        assert_eq!((p.max_first_half, p.max_second_half), (1000, 1050));
        assert_eq!(p.stopped_growing, Some(true));
        assert!(p.text("ferry.db", 60.0, 1.1).contains("stopped growing"));

        let growing = [
            (0.0, 100),
            (30.0, 500),
            (60.0, 1000),
            (90.0, 1500),
            (120.0, 2000),
        ];
        let p = Plateau::of(&growing, 60.0, 1.1);
        assert_eq!(p.stopped_growing, Some(false));
        assert_eq!(p.growth, Some(2.0));
        assert!(p.text("ferry.db", 60.0, 1.1).contains("KEPT GROWING"));

        let p = Plateau::of(&[(0.0, 100)], 60.0, 1.1);
        assert_eq!(p.stopped_growing, None);
        assert!(p.text("x", 60.0, 1.1).contains("no sample after"));
        let p = Plateau::of(&[(0.0, 0), (90.0, 0)], 60.0, 1.1);
        assert_eq!(p.stopped_growing, None);
        assert!(p.text("x", 60.0, 1.1).contains("size 0"));
    }
}
