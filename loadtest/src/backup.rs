//! `ferry-load backup`: how long do `ferry backup` and `ferry verify` take on a
//! large SQLite database, and does a backup of the live database hurt traffic?
//!
//! One invocation, with its own baseline, against its own `ferry serve` child on
//! SQLite in a temporary data directory (`FERRY_RETENTION_INTERVAL=1d` keeps the
//! retention job out of the way; `FERRY_LIMITS_IDLE_TIMEOUT=1h` keeps the sessions
//! open while nothing is published):
//!
//! 1. preload: `--events` events (no ttl), published as fast as the devices'
//!    windows allow, then the last deliveries are read;
//! 2. backup with no load: `ferry backup --to <tmp>/backup-1.db`, run as a child
//!    process with the server's own environment (so the same `FERRY_DATA_DIR` and
//!    `FERRY_DATABASE_URL`); its wall time and the backup's size; then
//!    `ferry verify --database-url sqlite://<backup>` and its wall time (exit 0
//!    required);
//! 3. quiet: `--rate` events/s over all devices for `--seconds`: publish→ack with
//!    nothing else going on;
//! 4. backup under load: the same load; as it starts, `ferry backup --to
//!    <tmp>/backup-2.db`; the load goes on for at least `--seconds` and until the
//!    backup has exited. publish→ack of the publishes sent while the backup ran,
//!    and of the whole phase; then `ferry verify` of backup-2.
//!
//! Every device logs its acks and the events it receives over the whole run, and
//! at the end the relay's exactly-once, in-order check runs over all of them. The
//! sizes of `ferry.db` and `ferry.db-wal` are sampled while each backup runs (a
//! backup is one long read transaction, so the log cannot be checkpointed past it).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::json;
use tokio::process::Command;

use crate::child::{ServerSpec, SqliteFiles, TempDir};
use crate::common::say;
use crate::fleet::{Fleet, Live, Pace};
use crate::phases::{self, lat_ratio};
use crate::stats::{self, Summary, fmt_ratio};

/// The long help of `ferry-load backup`.
pub(crate) const LONG_ABOUT: &str = "\
A backup of a large live SQLite database: `ferry backup` and `ferry verify` wall \
times on a database of --events events with no load, then publish→ack quiet vs \
while a second `ferry backup` runs under --rate events/s.

Against its own `ferry serve` child on SQLite in a temporary data directory: \
preload --events events (no ttl) as fast as the devices allow; `ferry backup --to \
<tmp>/backup-1.db` with no load, then `ferry verify` of it; --seconds of --rate \
events/s (quiet); the same load with `ferry backup --to <tmp>/backup-2.db` started \
as it begins, going on until the backup has exited; `ferry verify` of backup-2. \
`ferry backup` and `ferry verify` are run with the server's own environment. The \
exactly-once, in-order check runs over every delivery of the run.

Example (the defaults: 1,000,000 events, then 5,000 events/s for 20 s):

  cargo build --release -p ferry -p ferry-load
  ./target/release/ferry-load backup --ferry ./target/release/ferry

The scenario pins nothing: the server, `ferry backup`, `ferry verify` and the \
generator share the CPUs ferry-load may run on. To give the server a core of its \
own, pin the generator and start the server through a wrapper that pins it (the \
wrapper is also what runs `ferry backup` and `ferry verify`, so they share the \
server's core):

  printf '#!/bin/sh\\nexec taskset -c 0 %s \"$@\"\\n' \"$PWD/target/release/ferry\" > ferry-on-cpu0
  chmod +x ferry-on-cpu0
  taskset -c 1 ./target/release/ferry-load --threads 1 backup --ferry ./ferry-on-cpu0

The exit code is non-zero when a backup or a verification failed, a publish was \
lost (refused or left unanswered), a session was lost, or the exactly-once, \
in-order check failed. --keep keeps the data directory with both backups.";

/// How often the SQLite files are sampled while a backup runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// After the last publish of a phase, how long no message may arrive before the
/// devices count as settled.
const SETTLE_QUIET: Duration = Duration::from_secs(1);
/// The longest a settle may take.
const SETTLE_MAX: Duration = Duration::from_secs(60);

/// Arguments of `ferry-load backup`.
#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    /// The `ferry` binary (default: `ferry` beside this executable).
    #[arg(long, visible_alias = "exe")]
    pub(crate) ferry: Option<PathBuf>,
    /// Events to preload (no ttl) before the first backup.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) events: u64,
    #[command(flatten)]
    pub(crate) fleet: crate::fleet::FleetShape,
    /// Events per second over all devices in the quiet and the backup phase.
    #[arg(long, default_value_t = 5_000.0)]
    pub(crate) rate: f64,
    /// Length of the quiet phase, and the least length of the backup phase, seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub(crate) seconds: u32,
    /// How long one `ferry backup` or `ferry verify` may take before it counts as
    /// failed (it is killed).
    #[arg(long, default_value = "30m", value_parser = stats::parse_duration)]
    pub(crate) tool_timeout: Duration,
    /// How long the preload may take.
    #[arg(long, default_value = "30m", value_parser = stats::parse_duration)]
    pub(crate) preload_timeout: Duration,
    /// After a phase stops publishing, how long to wait for the last acks.
    #[arg(long, default_value = "30s", value_parser = stats::parse_duration)]
    pub(crate) drain: Duration,
    /// Keep the data directory (the database, both backups, the server's log).
    #[arg(long)]
    pub(crate) keep: bool,
    /// Print the results as one JSON document on stdout (the human summary goes to
    /// stderr).
    #[arg(long)]
    pub(crate) json: bool,
}

/// One run of a `ferry` command.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct ToolRun {
    /// The command line after the binary.
    pub(crate) args: Vec<String>,
    /// Its exit code (`None`: killed, timed out or not started).
    pub(crate) exit_code: Option<i32>,
    /// Why it failed, when it did.
    pub(crate) error: Option<String>,
    /// From spawning it to its exit, as this process saw it.
    pub(crate) wall_secs: f64,
    /// Its stdout, trimmed.
    pub(crate) stdout: String,
    /// Its stderr, trimmed.
    pub(crate) stderr: String,
}

impl ToolRun {
    fn ok(&self) -> bool {
        self.error.is_none() && self.exit_code == Some(0)
    }

    /// The reason it failed, for a line.
    fn failure(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        let said = if self.stderr.is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        format!(
            "exit {}: {}",
            self.exit_code.map_or("-".into(), |c| c.to_string()),
            said.lines().last().unwrap_or("")
        )
    }
}

/// The SQLite files while a backup ran.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct FilesDuring {
    pub(crate) before: SqliteFiles,
    /// The largest `ferry.db-wal` seen (sampled every 100 ms).
    pub(crate) wal_peak_bytes: u64,
    /// The largest `ferry.db` seen.
    pub(crate) db_peak_bytes: u64,
    pub(crate) after: SqliteFiles,
}

impl FilesDuring {
    /// Takes a sample into the peaks.
    fn note(&mut self, f: SqliteFiles) {
        self.wal_peak_bytes = self.wal_peak_bytes.max(f.wal_bytes);
        self.db_peak_bytes = self.db_peak_bytes.max(f.db_bytes);
    }
}

/// What one `ferry backup` came to.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct BackupRun {
    pub(crate) path: PathBuf,
    pub(crate) run: ToolRun,
    /// The backup's size on disk (`None`: no file).
    pub(crate) bytes: Option<u64>,
    /// `… (N bytes) in S s: …` as `ferry backup` printed it.
    pub(crate) reported: Option<Reported>,
    pub(crate) files: FilesDuring,
}

/// The figures of `ferry backup`'s own line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Reported {
    pub(crate) bytes: u64,
    pub(crate) secs: f64,
    /// The events the backup holds (`None`: not in the line).
    pub(crate) events: Option<u64>,
}

/// What one `ferry verify` came to.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct VerifyRun {
    pub(crate) run: ToolRun,
    /// The checks it ran (from its line).
    pub(crate) checks: Option<u64>,
    /// Exit 0 and `sound`.
    pub(crate) sound: bool,
}

/// Reads `backup of URL written to PATH (N bytes) in S s: U users, D devices, E
/// events, …`.
pub(crate) fn parse_backup_line(stdout: &str) -> Option<Reported> {
    let line = stdout.lines().find(|l| l.starts_with("backup of "))?;
    let at = line.rfind(" bytes) in ")?;
    let bytes = line[..at].rsplit('(').next()?.trim().parse().ok()?;
    let rest = &line[at + " bytes) in ".len()..];
    let (secs, summary) = rest.split_once(" s")?;
    let events = summary.split(", ").find_map(|part| {
        part.trim_start_matches(':')
            .trim()
            .strip_suffix(" events")?
            .parse()
            .ok()
    });
    Some(Reported {
        bytes,
        secs: secs.trim().parse().ok()?,
        events,
    })
}

/// Reads `URL: N checks; …` of `ferry verify`.
pub(crate) fn parse_verify_checks(stdout: &str) -> Option<u64> {
    stdout.lines().find_map(|l| {
        let (head, _) = l.split_once(" checks;")?;
        head.rsplit(' ').next()?.parse().ok()
    })
}

/// Runs `ferry ARGS` with the server's environment, at most `timeout`. While it
/// runs, the SQLite files in `data_dir` are sampled.
async fn run_ferry(
    spec: &ServerSpec,
    args: &[String],
    timeout: Duration,
    data_dir: &Path,
) -> (ToolRun, FilesDuring) {
    let mut run = ToolRun {
        args: args.to_vec(),
        ..ToolRun::default()
    };
    let mut files = FilesDuring {
        before: SqliteFiles::of(data_dir),
        ..FilesDuring::default()
    };
    files.note(files.before);
    let started = Instant::now();
    let child = Command::new(&spec.exe)
        .args(args)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            run.error = Some(format!("cannot start {}: {e}", spec.exe.display()));
            return (run, files);
        }
    };
    let output = child.wait_with_output();
    tokio::pin!(output);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let result = loop {
        tokio::select! {
            r = &mut output => break Some(r),
            () = &mut deadline => break None,
            _ = tick.tick() => files.note(SqliteFiles::of(data_dir)),
        }
    };
    run.wall_secs = started.elapsed().as_secs_f64();
    files.after = SqliteFiles::of(data_dir);
    files.note(files.after);
    match result {
        None => run.error = Some(format!("no exit within {timeout:?}: killed")),
        Some(Err(e)) => run.error = Some(format!("waiting for it: {e}")),
        Some(Ok(out)) => {
            run.exit_code = out.status.code();
            run.stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
            run.stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        }
    }
    (run, files)
}

/// `ferry backup --to PATH`; with `live`, the publishes sent meanwhile are marked.
async fn backup(
    spec: &ServerSpec,
    to: PathBuf,
    timeout: Duration,
    data_dir: &Path,
    live: Option<&Live>,
) -> BackupRun {
    let args = vec![
        "backup".to_string(),
        "--to".into(),
        to.display().to_string(),
    ];
    if let Some(l) = live {
        l.mark(true);
    }
    let (run, files) = run_ferry(spec, &args, timeout, data_dir).await;
    if let Some(l) = live {
        l.mark(false);
    }
    let bytes = std::fs::metadata(&to).ok().map(|m| m.len());
    let reported = parse_backup_line(&run.stdout);
    BackupRun {
        path: to,
        run,
        bytes,
        reported,
        files,
    }
}

/// `ferry verify --database-url sqlite://PATH`.
async fn verify(spec: &ServerSpec, path: &Path, timeout: Duration, data_dir: &Path) -> VerifyRun {
    let args = vec![
        "verify".to_string(),
        "--database-url".into(),
        format!("sqlite://{}", path.display()),
    ];
    let (run, _) = run_ferry(spec, &args, timeout, data_dir).await;
    let checks = parse_verify_checks(&run.stdout);
    let sound = run.ok() && run.stdout.lines().any(|l| l.trim() == "sound");
    VerifyRun { run, checks, sound }
}

impl BackupRun {
    fn ok(&self) -> bool {
        self.run.ok() && self.bytes.is_some_and(|b| b > 0)
    }
}

/// Ratios of the backup phase's publish→ack latency over the quiet phase's.
#[derive(Debug, Default, PartialEq, Serialize)]
struct Ratios {
    /// Publishes sent while the backup ran, over quiet.
    while_backing_up_p50: Option<f64>,
    while_backing_up_p99: Option<f64>,
    while_backing_up_max: Option<f64>,
    /// The whole backup phase, over quiet.
    phase_p50: Option<f64>,
    phase_p99: Option<f64>,
    phase_max: Option<f64>,
}

impl Ratios {
    fn of(quiet: &Summary, during: &Summary, phase: &Summary) -> Self {
        Self {
            while_backing_up_p50: lat_ratio(during, quiet, |s| s.p50_us),
            while_backing_up_p99: lat_ratio(during, quiet, |s| s.p99_us),
            while_backing_up_max: lat_ratio(during, quiet, |s| s.max_us),
            phase_p50: lat_ratio(phase, quiet, |s| s.p50_us),
            phase_p99: lat_ratio(phase, quiet, |s| s.p99_us),
            phase_max: lat_ratio(phase, quiet, |s| s.max_us),
        }
    }
}

/// One row of the backup table.
fn backup_row(name: &str, b: &BackupRun, v: Option<&VerifyRun>) -> String {
    let size = b
        .bytes
        .map_or("-".to_string(), |n| format!("{} ({n} B)", stats::bytes(n)));
    let reported = b
        .reported
        .map_or("-".to_string(), |r| format!("{:.2} s", r.secs));
    let events = b
        .reported
        .and_then(|r| r.events)
        .map_or("-".to_string(), |e| e.to_string());
    let (verify_secs, checks, result) = match v {
        None => ("-".to_string(), "-".to_string(), "not run"),
        Some(v) => (
            format!("{:.2} s", v.run.wall_secs),
            v.checks.map_or("-".to_string(), |c| c.to_string()),
            if v.sound { "sound" } else { "FAILED" },
        ),
    };
    let result = if b.ok() { result } else { "BACKUP FAILED" };
    format!(
        "{name:<16} {:>9} {:>10} {:>26} {:>10} {:>9} {:>6}  {result}",
        format!("{:.2} s", b.run.wall_secs),
        reported,
        size,
        events,
        verify_secs,
        checks,
    )
}

/// The backup table: each backup's wall time, `ferry backup`'s own time, size,
/// events, and its verification.
fn backup_table(rows: &[(&str, &BackupRun, Option<&VerifyRun>)]) -> String {
    let mut t = format!(
        "{:<16} {:>9} {:>10} {:>26} {:>10} {:>9} {:>6}  {}\n",
        "backup", "wall", "ferry says", "size", "events", "verify", "checks", "result"
    );
    for (name, b, v) in rows {
        t += &backup_row(name, b, *v);
        t.push('\n');
    }
    t.pop();
    t
}

/// The SQLite files around one backup, on one line.
fn files_line(name: &str, f: &FilesDuring) -> String {
    format!(
        "{name}: ferry.db {} → {} (peak {}), ferry.db-wal {} → {} (peak {})",
        stats::bytes(f.before.db_bytes),
        stats::bytes(f.after.db_bytes),
        stats::bytes(f.db_peak_bytes),
        stats::bytes(f.before.wal_bytes),
        stats::bytes(f.after.wal_bytes),
        stats::bytes(f.wal_peak_bytes),
    )
}

/// Runs `ferry-load backup`; `Ok(false)` when a backup or verification failed, a
/// publish or session was lost, or the delivery check failed.
pub(crate) async fn run(args: &BackupArgs) -> anyhow::Result<bool> {
    if !(args.rate > 0.0 && args.rate <= 1_000_000.0) {
        bail!("--rate must be in (0, 1000000] events/s");
    }
    let exe = crate::child::ferry_exe(args.ferry.as_deref())?;
    let dir = TempDir::new("backup", args.keep)?;
    let key_seed = crate::serve_env::random_seed();
    let extra = [
        ("FERRY_RETENTION_INTERVAL", "1d".to_string()),
        ("FERRY_LIMITS_IDLE_TIMEOUT", "1h".to_string()),
    ];
    let spec = ServerSpec::new(exe, dir.path(), "", &key_seed, &extra)?;
    let mut child = spec
        .start_ready(Duration::from_secs(60))
        .await
        .context("starting `ferry serve`")?;
    let r = scenario(args, &spec, dir.path(), &key_seed).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let tail = spec.log_tail(20);
    if r.is_err() && !tail.trim().is_empty() {
        eprintln!("the server's log ends with:\n{tail}");
    }
    r
}

/// Says how a backup went.
fn backup_text(name: &str, b: &BackupRun) -> String {
    if b.ok() {
        format!(
            "{name}: {:.2} s wall, {} ({})",
            b.run.wall_secs,
            b.bytes.map_or("-".into(), stats::bytes),
            b.run.stdout.lines().last().unwrap_or("")
        )
    } else {
        format!(
            "{name}: FAILED after {:.2} s: {}",
            b.run.wall_secs,
            b.run.failure()
        )
    }
}

/// Says how a verification went.
fn verify_text(name: &str, v: &VerifyRun) -> String {
    if v.sound {
        format!(
            "verify {name}: sound, {} checks in {:.2} s",
            v.checks.map_or("?".into(), |c| c.to_string()),
            v.run.wall_secs
        )
    } else {
        let damage: Vec<&str> = v
            .run
            .stdout
            .lines()
            .filter(|l| l.starts_with("damage:"))
            .collect();
        format!(
            "verify {name}: FAILED after {:.2} s: {}{}",
            v.run.wall_secs,
            v.run.failure(),
            if damage.is_empty() {
                String::new()
            } else {
                format!("\n  {}", damage.join("\n  "))
            }
        )
    }
}

#[allow(clippy::too_many_lines)]
async fn scenario(
    args: &BackupArgs,
    spec: &ServerSpec,
    data_dir: &Path,
    key_seed: &[u8; 32],
) -> anyhow::Result<bool> {
    let json = args.json;
    say(
        json,
        &format!(
            "backup: {} on SQLite; {} users × {} devices, {} B payloads, window {}; \
             preload {} events, a backup and a verification with no load, then {} events/s \
             for {} s quiet and at least {} s with a backup",
            spec.exe.display(),
            args.fleet.users,
            args.fleet.devices,
            args.fleet.payload,
            args.fleet.window,
            args.events,
            args.rate,
            args.seconds,
            args.seconds
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
    fleet.track_deliveries();
    let mut settle_lost = 0;

    // 1. Preload, then read the last deliveries so the server is idle.
    let phase = fleet.start("preload", Pace::Count(args.events), None);
    let preload = phase.finish(&mut fleet, args.preload_timeout).await;
    say(json, &preload.line());
    settle_lost += fleet.settle(SETTLE_QUIET, SETTLE_MAX).await;

    // 2. A backup and its verification with no load.
    say(json, "backup 1: `ferry backup` with no load");
    let backup1 = backup(
        spec,
        data_dir.join("backup-1.db"),
        args.tool_timeout,
        data_dir,
        None,
    )
    .await;
    say(json, &backup_text("backup 1", &backup1));
    say(json, &files_line("  files", &backup1.files));
    let verify1 = if backup1.ok() {
        let v = verify(spec, &backup1.path, args.tool_timeout, data_dir).await;
        say(json, &verify_text("backup 1", &v));
        Some(v)
    } else {
        None
    };

    // 3. Quiet.
    let seconds = Duration::from_secs(u64::from(args.seconds));
    let mut phase = fleet.start("quiet", Pace::Rate(args.rate), None);
    tokio::time::sleep_until((phase.started() + seconds).into()).await;
    phase.stop_publishing();
    let quiet = phase.finish(&mut fleet, args.drain).await;
    say(json, &quiet.line());

    // 4. The same load with a backup.
    let mut phase = fleet.start("backup", Pace::Rate(args.rate), None);
    let live = phase.live().clone();
    let (at, until) = (phase.started(), phase.started() + seconds);
    let backup_run = async {
        tokio::time::sleep_until(at.into()).await;
        backup(
            spec,
            data_dir.join("backup-2.db"),
            args.tool_timeout,
            data_dir,
            Some(&live),
        )
        .await
    };
    tokio::pin!(backup_run);
    let backup2 = tokio::select! {
        b = &mut backup_run => {
            tokio::time::sleep_until(until.into()).await;
            b
        }
        () = tokio::time::sleep_until(until.into()) => {
            say(json, "the backup is still running: the load goes on until it exits");
            backup_run.await
        }
    };
    phase.stop_publishing();
    let backed_up = phase.finish(&mut fleet, args.drain).await;
    say(json, &backed_up.line());
    say(
        json,
        &format!(
            "  while backing up: publish→ack {}",
            backed_up.marked_latency.line()
        ),
    );
    say(json, &backup_text("backup 2", &backup2));
    say(json, &files_line("  files", &backup2.files));
    settle_lost += fleet.settle(SETTLE_QUIET, SETTLE_MAX).await;
    let verify2 = if backup2.ok() {
        let v = verify(spec, &backup2.path, args.tool_timeout, data_dir).await;
        say(json, &verify_text("backup 2", &v));
        Some(v)
    } else {
        None
    };
    let deliveries = fleet.delivery_check().unwrap_or_default();
    fleet.close().await;

    let ratios = Ratios::of(
        &quiet.ack_latency,
        &backed_up.marked_latency,
        &backed_up.ack_latency,
    );
    let lost = preload.lost() + quiet.lost() + backed_up.lost();
    let sessions_lost =
        preload.sessions_lost + quiet.sessions_lost + backed_up.sessions_lost + settle_lost;
    let backups_ok = backup1.ok()
        && backup2.ok()
        && verify1.as_ref().is_some_and(|v| v.sound)
        && verify2.as_ref().is_some_and(|v| v.sound);
    let ok = backups_ok
        && preload.ok()
        && quiet.ok()
        && backed_up.ok()
        && settle_lost == 0
        && deliveries.ok();
    let mut text = String::from("\n");
    text += &phases::table(
        &preload,
        &quiet,
        &backed_up,
        "  while backing up",
        backup2.run.wall_secs,
    );
    text += &format!(
        "\np99 publish→ack backup / quiet: {} while the backup ran, {} over the phase \
         (p50 {} / {}, max {} / {})\n\n",
        fmt_ratio(ratios.while_backing_up_p99),
        fmt_ratio(ratios.phase_p99),
        fmt_ratio(ratios.while_backing_up_p50),
        fmt_ratio(ratios.phase_p50),
        fmt_ratio(ratios.while_backing_up_max),
        fmt_ratio(ratios.phase_max),
    );
    text += &backup_table(&[
        ("1 (no load)", &backup1, verify1.as_ref()),
        ("2 (under load)", &backup2, verify2.as_ref()),
    ]);
    text += &format!(
        "\n{}\n{}",
        files_line("files during backup 1", &backup1.files),
        files_line("files during backup 2", &backup2.files)
    );
    text += &format!("\ndeliveries: {}", deliveries.line());
    text += &format!(
        "\n{}: backups {}, publishes lost {lost}, sessions lost {sessions_lost}",
        if ok { "PASS" } else { "FAIL" },
        if backups_ok { "ok" } else { "failed" },
    );
    say(json, &text);
    if json {
        let doc = json!({
            "scenario": "backup",
            "settings": {
                "database": "sqlite",
                "events": args.events,
                "users": args.fleet.users,
                "devices": args.fleet.devices,
                "payload": args.fleet.payload,
                "window": args.fleet.window,
                "rate": args.rate,
                "seconds": args.seconds,
            },
            "preload": preload,
            "backup_1": backup1,
            "verify_1": verify1,
            "quiet": quiet,
            "backup_phase": backed_up,
            "while_backing_up": backed_up.marked_latency,
            "backup_2": backup2,
            "verify_2": verify2,
            "ratios": ratios,
            "delivery_check": deliveries,
            "publishes_lost": lost,
            "sessions_lost": sessions_lost,
            "ok": ok,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: BackupArgs,
    }

    #[test]
    fn defaults_and_options() {
        let a = Cli::try_parse_from(["x"]).unwrap().args;
        assert_eq!(a.events, 1_000_000);
        assert_eq!(
            (a.fleet.users, a.fleet.devices, a.fleet.payload),
            (333, 3, 256)
        );
        assert!((a.rate - 5_000.0).abs() < f64::EPSILON);
        assert_eq!(a.seconds, 20);
        assert!(a.ferry.is_none() && !a.keep && !a.json);
        let a = Cli::try_parse_from([
            "x",
            "--ferry",
            "/opt/ferry",
            "--events",
            "1000",
            "--rate",
            "100",
            "--seconds",
            "3",
            "--users",
            "2",
            "--devices",
            "2",
            "--payload",
            "64",
            "--keep",
            "--json",
        ])
        .unwrap()
        .args;
        assert_eq!(a.ferry.as_deref(), Some(Path::new("/opt/ferry")));
        assert_eq!(
            (a.events, a.seconds, a.fleet.users, a.fleet.devices),
            (1000, 3, 2, 2)
        );
        assert!(a.keep && a.json);
        assert!(Cli::try_parse_from(["x", "--events", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--seconds", "0"]).is_err());
    }

    #[test]
    fn backup_lines() {
        let out = "backup of sqlite:///tmp/d/ferry.db written to /tmp/d/backup-1.db \
                   (431230976 bytes) in 41.37 s: 333 users, 999 devices, 1000000 events, heads 1–3003";
        assert_eq!(
            parse_backup_line(out),
            Some(Reported {
                bytes: 431_230_976,
                secs: 41.37,
                events: Some(1_000_000),
            })
        );
        let out = "backup of sqlite://x (db).db written to /t/b (1).db (12 bytes) in 0.01 s: \
                   0 users, 0 devices, 0 events, no users";
        assert_eq!(
            parse_backup_line(out).map(|r| (r.bytes, r.events)),
            Some((12, Some(0)))
        );
        assert_eq!(parse_backup_line("error: backup failed: no"), None);
        assert_eq!(parse_backup_line(""), None);
    }

    #[test]
    fn verify_lines() {
        let out = "sqlite:///tmp/d/backup-1.db: 9 checks; 333 users, 999 devices, \
                   1000000 events, heads 1–3003; 431230976 bytes\nsound\n";
        assert_eq!(parse_verify_checks(out), Some(9));
        assert_eq!(parse_verify_checks("error: cannot verify"), None);
    }

    use crate::phases::tests::s;

    #[test]
    fn ratios() {
        let r = Ratios::of(
            &s(1000, 2000, 4000),
            &s(2000, 8000, 40_000),
            &s(1000, 3000, 40_000),
        );
        assert_eq!(r.while_backing_up_p99, Some(4.0));
        assert_eq!(r.phase_p99, Some(1.5));
        assert_eq!(r.while_backing_up_max, Some(10.0));
        let r = Ratios::of(&s(1, 2, 3), &Summary::default(), &Summary::default());
        assert_eq!(r, Ratios::default());
    }

    #[test]
    fn the_backup_table() {
        let b = BackupRun {
            path: "b.db".into(),
            run: ToolRun {
                exit_code: Some(0),
                wall_secs: 12.5,
                ..ToolRun::default()
            },
            bytes: Some(3 * 1024 * 1024),
            reported: Some(Reported {
                bytes: 3 * 1024 * 1024,
                secs: 12.2,
                events: Some(1000),
            }),
            files: FilesDuring::default(),
        };
        let v = VerifyRun {
            run: ToolRun {
                exit_code: Some(0),
                wall_secs: 3.0,
                ..ToolRun::default()
            },
            checks: Some(9),
            sound: true,
        };
        let failed = BackupRun {
            run: ToolRun {
                exit_code: Some(1),
                stderr: "error: backup failed: disk full".into(),
                ..ToolRun::default()
            },
            ..BackupRun::default()
        };
        let t = backup_table(&[
            ("1 (no load)", &b, Some(&v)),
            ("2 (under load)", &failed, None),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[1].contains("12.50 s") && lines[1].contains("12.20 s"),
            "{t}"
        );
        assert!(lines[1].contains("3.0 MiB (3145728 B)") && lines[1].contains(" 1000 "));
        assert!(
            lines[1].contains("3.00 s") && lines[1].ends_with("sound"),
            "{t}"
        );
        assert!(lines[2].ends_with("BACKUP FAILED"), "{t}");
        assert!(!failed.ok());
        assert_eq!(
            failed.run.failure(),
            "exit 1: error: backup failed: disk full"
        );
        let killed = ToolRun {
            error: Some("no exit within 1s: killed".into()),
            ..ToolRun::default()
        };
        assert!(!killed.ok());
        assert!(killed.failure().contains("killed"));
    }

    #[test]
    fn file_lines() {
        let f = FilesDuring {
            before: SqliteFiles {
                db_bytes: 1024,
                wal_bytes: 0,
            },
            wal_peak_bytes: 2048,
            db_peak_bytes: 1024,
            after: SqliteFiles {
                db_bytes: 1024,
                wal_bytes: 512,
            },
        };
        assert_eq!(
            files_line("x", &f),
            "x: ferry.db 1.0 KiB → 1.0 KiB (peak 1.0 KiB), ferry.db-wal 0 B → 512 B (peak 2.0 KiB)"
        );
    }
}
