//! `ferry-load retention`: does a large retention purge hurt live traffic?
//!
//! One invocation, with its own baseline, against its own `ferry serve` child
//! (SQLite in a temporary data directory unless `--database-url`), whose
//! background retention job is kept out of the way (`FERRY_RETENTION_INTERVAL=1d`)
//! and which has an admin key of write scope:
//!
//! 1. preload: `--backlog` events with a ttl of `--backlog-ttl` seconds, published
//!    as fast as the devices' windows allow; then a wait until all have expired
//!    (ttl + 2 s);
//! 2. quiet: `--rate` events/s over all devices for `--seconds`, without a ttl:
//!    publish→ack with nothing else going on;
//! 3. purge: the same load; as it starts, `POST /admin/v1/retention/run` runs one
//!    retention pass, which deletes the expired backlog; the load goes on for at
//!    least `--seconds` and until the pass has answered. publish→ack of the
//!    publishes sent while the pass ran, and of the whole phase.
//!
//! The report sets the two phases side by side (p99 purge / quiet), with the rows
//! the pass deleted, how long it took, rows/s, and the database's size
//! (`ferry_database_size_bytes`, and the SQLite files) before and after.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::child::{ServerSpec, SqliteFiles, TempDir, http_request};
use crate::common::say;
use crate::fleet::{Fleet, Live, Pace};
use crate::phases::{self, lat_ratio};
use crate::stats::{self, Summary, fmt_ratio};

/// The admin key of the scenario's server (write scope). The server is a
/// throwaway child listening on loopback only, so a fixed key will do.
pub(crate) const ADMIN_KEY: &str = "load-admin-key-0123456789abcdef";
/// The SHA-256 of [`ADMIN_KEY`], lowercase hex (`printf %s KEY | sha256sum`): what
/// the server's `FERRY_ADMIN_KEYS` holds.
pub(crate) const ADMIN_KEY_SHA256: &str =
    "db33d84a859b17d8ad3d9d3369ed8382fc910e87d20d0db43a9d7ed00eb0de0f";

/// The retention pass on demand.
const RUN_PATH: &str = "/admin/v1/retention/run";
/// The last pass's status.
const STATUS_PATH: &str = "/admin/v1/retention";
/// The database size gauge on `/metrics`.
pub(crate) const DB_SIZE_METRIC: &str = "ferry_database_size_bytes";

/// Arguments of `ferry-load retention`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:

  cargo build --release -p ferry -p ferry-load
  ./target/release/ferry-load retention --backlog 1000000 --rate 10000 --seconds 30

The exit code is non-zero when the purge request failed or any publish of any \
phase was lost (refused or left unanswered).")]
pub(crate) struct RetentionArgs {
    /// The `ferry` binary (default: `ferry` beside this executable).
    #[arg(long, visible_alias = "exe")]
    pub(crate) ferry: Option<PathBuf>,
    /// The server's database URL; empty: SQLite in the temporary data directory.
    /// A PostgreSQL database should be a fresh one (the scenario does not drop it).
    #[arg(long, default_value = "")]
    pub(crate) database_url: String,
    /// Events to preload (they expire before the purge).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) backlog: u64,
    /// ttl of the preloaded events, seconds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub(crate) backlog_ttl: u32,
    #[command(flatten)]
    pub(crate) fleet: crate::fleet::FleetShape,
    /// Events per second over all devices in the quiet and the purge phase.
    #[arg(long, default_value_t = 10_000.0)]
    pub(crate) rate: f64,
    /// Length of the quiet phase, and the least length of the purge phase, seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub(crate) seconds: u32,
    /// Rows per delete transaction (`FERRY_RETENTION_BATCH`); default: the server's.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch: Option<u32>,
    /// How long the purge request may take before it counts as failed.
    #[arg(long, default_value = "30m", value_parser = stats::parse_duration)]
    pub(crate) purge_timeout: Duration,
    /// How long the preload may take.
    #[arg(long, default_value = "30m", value_parser = stats::parse_duration)]
    pub(crate) preload_timeout: Duration,
    /// After a phase stops publishing, how long to wait for the last acks.
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

/// The answer of `POST /admin/v1/retention/run`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub(crate) struct RunResponse {
    #[serde(default)]
    pub(crate) dry_run: bool,
    #[serde(default)]
    pub(crate) skipped: bool,
    /// Unix ms.
    #[serde(default)]
    pub(crate) started_at: Option<u64>,
    pub(crate) duration_ms: u64,
    /// Rows deleted by reason (`expired`, `age`, `count`, `compacted`,
    /// `inactive_device`, `auth`, …).
    #[serde(default)]
    pub(crate) deleted: BTreeMap<String, u64>,
}

impl RunResponse {
    /// Rows deleted for any reason.
    pub(crate) fn total(&self) -> u64 {
        self.deleted.values().sum()
    }
}

/// What the purge request came to.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Purge {
    /// The HTTP status (`None`: no answer).
    pub(crate) status: Option<u16>,
    /// Why it failed, when it did.
    pub(crate) error: Option<String>,
    /// From sending the request to its answer, as the client saw it.
    pub(crate) request_secs: f64,
    pub(crate) response: Option<RunResponse>,
    pub(crate) deleted: u64,
    /// Deleted rows per second of the server's `duration_ms`.
    pub(crate) rows_per_sec: Option<f64>,
}

impl Purge {
    fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// Reads the answer of the run request.
    fn of(status: u16, body: &str, took: Duration) -> Self {
        let mut p = Self {
            status: Some(status),
            request_secs: took.as_secs_f64(),
            ..Self::default()
        };
        if status != 200 {
            p.error = Some(match status {
                409 => "409: another retention pass was running".to_string(),
                404 => "404: this server has no retention endpoint".to_string(),
                401 | 403 => format!("{status}: the admin key was refused"),
                _ => format!("{status}: {}", body.trim()),
            });
            return p;
        }
        match serde_json::from_str::<RunResponse>(body) {
            Err(e) => p.error = Some(format!("unreadable answer ({e}): {}", body.trim())),
            Ok(r) => {
                if r.skipped {
                    p.error = Some("the server skipped the pass".into());
                } else if r.dry_run {
                    p.error = Some("the server made a dry run".into());
                }
                p.deleted = r.total();
                p.rows_per_sec =
                    (r.duration_ms > 0).then(|| p.deleted as f64 * 1000.0 / r.duration_ms as f64);
                p.response = Some(r);
            }
        }
        p
    }

    fn text(&self) -> String {
        let Some(r) = &self.response else {
            return format!(
                "purge: FAILED after {:.2} s: {}",
                self.request_secs,
                self.error.as_deref().unwrap_or("no answer")
            );
        };
        let kinds: Vec<String> = r.deleted.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let mut s = format!(
            "purge: answered {} after {:.2} s (server: {} ms); deleted {} rows ({}) = {} rows/s",
            self.status.unwrap_or(0),
            self.request_secs,
            r.duration_ms,
            self.deleted,
            if kinds.is_empty() {
                "none".into()
            } else {
                kinds.join(", ")
            },
            self.rows_per_sec
                .map_or("n/a".into(), |r| format!("{r:.0}")),
        );
        if let Some(e) = &self.error {
            s += &format!("\n  FAILED: {e}");
        }
        s
    }
}

/// The database's size at one moment.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Size {
    /// `ferry_database_size_bytes` (`None`: the server does not export it).
    pub(crate) metric_bytes: Option<u64>,
    /// The SQLite files in the data directory (`None`: another database).
    pub(crate) files: Option<SqliteFiles>,
}

impl Size {
    /// Reads both now.
    pub(crate) async fn read(metrics_url: &str, sqlite_dir: Option<&Path>) -> Self {
        Self {
            metric_bytes: scrape_db_size(metrics_url).await,
            files: sqlite_dir.map(SqliteFiles::of),
        }
    }

    fn text(&self) -> String {
        let mut s = self
            .metric_bytes
            .map_or("n/a".into(), |b| format!("{} ({b} B)", stats::bytes(b)));
        if let Some(f) = self.files {
            s += &format!(
                "; ferry.db {}, ferry.db-wal {}",
                stats::bytes(f.db_bytes),
                stats::bytes(f.wal_bytes)
            );
        }
        s
    }
}

/// `ferry_database_size_bytes` from the server's metrics, if it exports it.
pub(crate) async fn scrape_db_size(metrics_url: &str) -> Option<u64> {
    let body = crate::progress::http_get(metrics_url).await.ok()?;
    crate::progress::metric_value(&body, DB_SIZE_METRIC).map(|v| v as u64)
}

/// Ratios of the purge phase's publish→ack latency over the quiet phase's.
#[derive(Debug, Serialize)]
struct Ratios {
    /// Publishes sent while the pass ran, over quiet.
    while_purging_p50: Option<f64>,
    while_purging_p99: Option<f64>,
    while_purging_max: Option<f64>,
    /// The whole purge phase, over quiet.
    phase_p50: Option<f64>,
    phase_p99: Option<f64>,
    phase_max: Option<f64>,
}

impl Ratios {
    fn of(quiet: &Summary, during: &Summary, phase: &Summary) -> Self {
        Self {
            while_purging_p50: lat_ratio(during, quiet, |s| s.p50_us),
            while_purging_p99: lat_ratio(during, quiet, |s| s.p99_us),
            while_purging_max: lat_ratio(during, quiet, |s| s.max_us),
            phase_p50: lat_ratio(phase, quiet, |s| s.p50_us),
            phase_p99: lat_ratio(phase, quiet, |s| s.p99_us),
            phase_max: lat_ratio(phase, quiet, |s| s.max_us),
        }
    }
}

/// Runs `ferry-load retention`; `Ok(false)` when the purge failed or a publish was
/// lost.
pub(crate) async fn run(args: &RetentionArgs) -> anyhow::Result<bool> {
    if !(args.rate > 0.0 && args.rate <= 1_000_000.0) {
        bail!("--rate must be in (0, 1000000] events/s");
    }
    let exe = crate::child::ferry_exe(args.ferry.as_deref())?;
    let dir = TempDir::new("retention", args.keep)?;
    let key_seed = crate::serve_env::random_seed();
    let mut extra = vec![
        ("FERRY_RETENTION_INTERVAL", "1d".to_string()),
        ("FERRY_ADMIN_KEYS", format!("load:write:{ADMIN_KEY_SHA256}")),
    ];
    if let Some(b) = args.batch {
        extra.push(("FERRY_RETENTION_BATCH", b.to_string()));
    }
    let spec = ServerSpec::new(exe, dir.path(), &args.database_url, &key_seed, &extra)?;
    let mut child = spec
        .start_ready(Duration::from_secs(60))
        .await
        .context("starting `ferry serve`")?;
    let sqlite_dir = args.database_url.is_empty().then(|| dir.path());
    let r = scenario(args, &spec, sqlite_dir, &key_seed).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let tail = spec.log_tail(20);
    if r.is_err() && !tail.trim().is_empty() {
        eprintln!("the server's log ends with:\n{tail}");
    }
    r
}

/// `GET /admin/v1/retention` must answer 200 before minutes go into the preload.
async fn preflight(spec: &ServerSpec) -> anyhow::Result<serde_json::Value> {
    let (status, body) = http_request(
        spec.admin,
        "GET",
        STATUS_PATH,
        &[("X-Admin-Key", ADMIN_KEY)],
        Duration::from_secs(10),
    )
    .await
    .context("the admin API did not answer")?;
    match status {
        200 => Ok(serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)),
        404 => bail!(
            "GET {STATUS_PATH} answered 404: {} has no retention job (build a newer ferry)",
            spec.exe.display()
        ),
        401 | 403 => bail!("GET {STATUS_PATH} answered {status}: the admin key was refused"),
        _ => bail!("GET {STATUS_PATH} answered {status}: {}", body.trim()),
    }
}

/// Sends the run request at `at`, marking the publishes sent until it answers.
async fn purge(
    spec_admin: std::net::SocketAddr,
    at: Instant,
    timeout: Duration,
    live: Arc<Live>,
) -> Purge {
    tokio::time::sleep_until(at.into()).await;
    live.mark(true);
    let sent = Instant::now();
    let r = http_request(
        spec_admin,
        "POST",
        RUN_PATH,
        &[("X-Admin-Key", ADMIN_KEY)],
        timeout,
    )
    .await;
    live.mark(false);
    let took = sent.elapsed();
    match r {
        Ok((status, body)) => Purge::of(status, &body, took),
        Err(e) => Purge {
            error: Some(format!("{e:#}")),
            request_secs: took.as_secs_f64(),
            ..Purge::default()
        },
    }
}

#[allow(clippy::too_many_lines)]
async fn scenario(
    args: &RetentionArgs,
    spec: &ServerSpec,
    sqlite_dir: Option<&Path>,
    key_seed: &[u8; 32],
) -> anyhow::Result<bool> {
    let json = args.json;
    let status_before = preflight(spec).await?;
    say(
        json,
        &format!(
            "retention: {} on {}; {} users × {} devices, {} B payloads, window {}; \
             preload {} events with ttl {} s, then {} events/s for {} s quiet and at least {} s with a purge",
            spec.exe.display(),
            if args.database_url.is_empty() {
                "SQLite"
            } else {
                "--database-url"
            },
            args.fleet.users,
            args.fleet.devices,
            args.fleet.payload,
            args.fleet.window,
            args.backlog,
            args.backlog_ttl,
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
    let metrics_url = spec.metrics_url();
    let size_start = Size::read(&metrics_url, sqlite_dir).await;

    // 1. Preload, then let it expire.
    let phase = fleet.start("preload", Pace::Count(args.backlog), Some(args.backlog_ttl));
    let preload = phase.finish(&mut fleet, args.preload_timeout).await;
    say(json, &preload.line());
    let expiry = Duration::from_secs(u64::from(args.backlog_ttl) + 2);
    say(
        json,
        &format!("waiting {} s for the backlog to expire", expiry.as_secs()),
    );
    tokio::time::sleep(expiry).await;
    let size_preloaded = Size::read(&metrics_url, sqlite_dir).await;

    // 2. Quiet.
    let seconds = Duration::from_secs(u64::from(args.seconds));
    let mut phase = fleet.start("quiet", Pace::Rate(args.rate), None);
    tokio::time::sleep_until((phase.started() + seconds).into()).await;
    phase.stop_publishing();
    let quiet = phase.finish(&mut fleet, args.drain).await;
    say(json, &quiet.line());

    // 3. The same load with a purge.
    let size_before = Size::read(&metrics_url, sqlite_dir).await;
    let mut phase = fleet.start("purge", Pace::Rate(args.rate), None);
    let purge_task = tokio::spawn(purge(
        spec.admin,
        phase.started(),
        args.purge_timeout,
        phase.live().clone(),
    ));
    tokio::time::sleep_until((phase.started() + seconds).into()).await;
    if !purge_task.is_finished() {
        say(
            json,
            "the purge is still running: the load goes on until it answers",
        );
    }
    let purge = purge_task.await.context("the purge task panicked")?;
    phase.stop_publishing();
    let purged = phase.finish(&mut fleet, args.drain).await;
    say(json, &purged.line());
    say(
        json,
        &format!(
            "  while purging: publish→ack {}",
            purged.marked_latency.line()
        ),
    );
    say(json, &purge.text());
    let size_after = Size::read(&metrics_url, sqlite_dir).await;
    let status_after = http_request(
        spec.admin,
        "GET",
        STATUS_PATH,
        &[("X-Admin-Key", ADMIN_KEY)],
        Duration::from_secs(10),
    )
    .await
    .ok()
    .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok());
    fleet.close().await;

    let ratios = Ratios::of(
        &quiet.ack_latency,
        &purged.marked_latency,
        &purged.ack_latency,
    );
    let lost = preload.lost() + quiet.lost() + purged.lost();
    let sessions_lost = preload.sessions_lost + quiet.sessions_lost + purged.sessions_lost;
    let ok = purge.ok() && preload.ok() && quiet.ok() && purged.ok();
    let mut text = String::from("\n");
    text += &phases::table(
        &preload,
        &quiet,
        &purged,
        "  while purging",
        purge.request_secs,
    );
    text += &format!(
        "\np99 publish→ack purge / quiet: {} while purging, {} over the phase \
         (p50 {} / {}, max {} / {})",
        fmt_ratio(ratios.while_purging_p99),
        fmt_ratio(ratios.phase_p99),
        fmt_ratio(ratios.while_purging_p50),
        fmt_ratio(ratios.phase_p50),
        fmt_ratio(ratios.while_purging_max),
        fmt_ratio(ratios.phase_max),
    );
    text += &format!(
        "\ndeleted {} rows in {} = {} rows/s",
        purge.deleted,
        purge
            .response
            .as_ref()
            .map_or("n/a".into(), |r| format!("{} ms", r.duration_ms)),
        purge
            .rows_per_sec
            .map_or("n/a".into(), |r| format!("{r:.0}")),
    );
    let expired = purge
        .response
        .as_ref()
        .and_then(|r| r.deleted.get("expired").copied());
    if let Some(e) = expired
        && e < preload.acked
    {
        text += &format!(
            " (note: {e} expired rows deleted of {} preloaded)",
            preload.acked
        );
    }
    text += &format!(
        "\ndatabase size ({DB_SIZE_METRIC}): at start {}\n  after the preload {}\n  \
         before the purge {}\n  after the purge {}",
        size_start.text(),
        size_preloaded.text(),
        size_before.text(),
        size_after.text()
    );
    text += &format!(
        "\n{}: purge {}, publishes lost {lost}, sessions lost {sessions_lost}",
        if ok { "PASS" } else { "FAIL" },
        if purge.ok() { "ok" } else { "failed" },
    );
    say(json, &text);
    if json {
        let doc = json!({
            "scenario": "retention",
            "settings": {
                "database": if args.database_url.is_empty() { "sqlite" } else { "database_url" },
                "backlog": args.backlog,
                "backlog_ttl": args.backlog_ttl,
                "users": args.fleet.users,
                "devices": args.fleet.devices,
                "payload": args.fleet.payload,
                "window": args.fleet.window,
                "rate": args.rate,
                "seconds": args.seconds,
                "batch": args.batch,
            },
            "preload": preload,
            "quiet": quiet,
            "purge": purged,
            "while_purging": purged.marked_latency,
            "purge_request": purge,
            "ratios": ratios,
            "database_size": {
                "start": size_start,
                "after_preload": size_preloaded,
                "before_purge": size_before,
                "after_purge": size_after,
            },
            "retention_status_before": status_before,
            "retention_status_after": status_after,
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

    #[test]
    fn run_responses() {
        let body = r#"{"dry_run":false,"skipped":false,"started_at":1767225600000,"duration_ms":2500,
            "deleted":{"expired":1000000,"age":0,"count":0,"compacted":0,"inactive_device":0,"auth":3}}"#;
        let p = Purge::of(200, body, Duration::from_millis(2600));
        assert!(p.ok(), "{:?}", p.error);
        assert_eq!(p.deleted, 1_000_003);
        assert_eq!(p.rows_per_sec, Some(400_001.2));
        assert!(p.text().contains("expired 1000000"), "{}", p.text());

        let p = Purge::of(409, "{}", Duration::ZERO);
        assert!(!p.ok());
        assert!(
            p.error
                .as_deref()
                .unwrap()
                .contains("another retention pass")
        );
        assert!(p.text().contains("FAILED"));

        let p = Purge::of(
            200,
            r#"{"skipped":true,"duration_ms":0,"deleted":{}}"#,
            Duration::ZERO,
        );
        assert!(!p.ok());
        assert_eq!(p.rows_per_sec, None);
        assert!(!Purge::of(200, "not json", Duration::ZERO).ok());
    }

    #[test]
    fn ratios() {
        use crate::phases::tests::s;
        let r = Ratios::of(
            &s(1000, 2000, 4000),
            &s(2000, 8000, 40_000),
            &s(1000, 3000, 40_000),
        );
        assert_eq!(r.while_purging_p99, Some(4.0));
        assert_eq!(r.phase_p99, Some(1.5));
        assert_eq!(r.while_purging_max, Some(10.0));
        let r = Ratios::of(
            &s(1000, 2000, 4000),
            &Summary::default(),
            &s(1000, 2000, 4000),
        );
        assert_eq!(r.while_purging_p99, None);
    }

    #[test]
    fn the_admin_key_hash_is_lowercase_hex() {
        assert_eq!(ADMIN_KEY_SHA256.len(), 64);
        assert!(
            ADMIN_KEY_SHA256
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
    }
}
