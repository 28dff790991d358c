//! The phase table of the scenarios that measure publish→ack while an operation
//! runs (`backup`, `retention`): the preload, the quiet phase, the operation's
//! phase and the publishes sent while the operation ran, each with its p99 over the
//! quiet phase's.

use std::time::Duration;

use crate::fleet::Outcome;
use crate::stats::{self, Summary, fmt_ratio, ratio};

/// `a / b` of two latencies picked by `f`; `None` when either has no samples.
pub(crate) fn lat_ratio(a: &Summary, b: &Summary, f: fn(&Summary) -> u64) -> Option<f64> {
    if a.count == 0 || b.count == 0 {
        None
    } else {
        ratio(f(a) as f64, f(b) as f64)
    }
}

/// One row; `p99_ratio` is this row's p99 over quiet's (`None`: no column value).
fn row(
    name: &str,
    secs: f64,
    published: Option<u64>,
    lost: Option<u64>,
    s: &Summary,
    p99_ratio: Option<Option<f64>>,
) -> String {
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let ms = |us: u64| {
        if s.count == 0 {
            "-".to_string()
        } else {
            stats::ms(us)
        }
    };
    format!(
        "{name:<19} {secs:>7.1} {:>10} {:>10} {:>6} {:>9.0} {:>10} {:>10} {:>10} {:>10}",
        opt(published),
        s.count,
        opt(lost),
        stats::rate(s.count, Duration::from_secs_f64(secs.max(0.0))),
        ms(s.p50_us),
        ms(s.p99_us),
        ms(s.max_us),
        p99_ratio.map_or("-".to_string(), fmt_ratio),
    )
}

/// The table: `preload`, `quiet`, the operation's phase `during`, and a last row
/// `marked` for the publishes sent while the operation ran (over `marked_secs`).
pub(crate) fn table(
    preload: &Outcome,
    quiet: &Outcome,
    during: &Outcome,
    marked: &str,
    marked_secs: f64,
) -> String {
    let q = &quiet.ack_latency;
    let mut t = format!(
        "{:<19} {:>7} {:>10} {:>10} {:>6} {:>9} {:>10} {:>10} {:>10} {:>10}\n",
        "phase",
        "secs",
        "published",
        "acked",
        "lost",
        "acked/s",
        "ack p50",
        "ack p99",
        "ack max",
        "p99/quiet"
    );
    let rows = [
        (preload, None),
        (quiet, Some(lat_ratio(q, q, |s| s.p99_us))),
        (
            during,
            Some(lat_ratio(&during.ack_latency, q, |s| s.p99_us)),
        ),
    ];
    for (o, r) in rows {
        t += &row(
            o.phase,
            o.secs,
            Some(o.published),
            Some(o.lost()),
            &o.ack_latency,
            r,
        );
        t.push('\n');
    }
    t += &row(
        marked,
        marked_secs,
        None,
        None,
        &during.marked_latency,
        Some(lat_ratio(&during.marked_latency, q, |s| s.p99_us)),
    );
    t
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 100 samples with these p50, p99 and max (µs).
    pub(crate) fn s(p50: u64, p99: u64, max: u64) -> Summary {
        Summary {
            count: 100,
            p50_us: p50,
            p99_us: p99,
            max_us: max,
            ..Summary::default()
        }
    }

    fn outcome(phase: &'static str, lat: Summary, marked: Summary) -> Outcome {
        Outcome {
            phase,
            devices: 3,
            ttl: None,
            secs: 10.0,
            published: lat.count,
            acked: lat.count,
            refused: 0,
            unanswered: 0,
            acked_per_sec: lat.count as f64 / 10.0,
            delivered: 0,
            late_acks: 0,
            ack_latency: lat,
            marked_latency: marked,
            max_schedule_lag_us: 0,
            sessions_lost: 0,
            failures: crate::net::Failures::new(),
        }
    }

    #[test]
    fn the_phase_table() {
        let t = table(
            &outcome("preload", s(5000, 9000, 20_000), Summary::default()),
            &outcome("quiet", s(1000, 2000, 4000), Summary::default()),
            &outcome("backup", s(1000, 3000, 9000), s(1200, 5000, 9000)),
            "  while backing up",
            7.5,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(lines[0].starts_with("phase") && lines[0].ends_with("p99/quiet"));
        assert!(
            lines[1].starts_with("preload") && lines[1].ends_with(" -"),
            "{t}"
        );
        assert!(
            lines[2].contains("2.00 ms") && lines[2].ends_with("1.00×"),
            "{t}"
        );
        assert!(lines[3].ends_with("1.50×"), "{t}");
        assert!(lines[4].starts_with("  while backing up") && lines[4].ends_with("2.50×"));
        assert!(lines[4].contains("    7.5 "), "{t}");
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width), "{t}");
    }

    #[test]
    fn rows_and_ratios() {
        let r = row(
            "quiet",
            10.0,
            Some(1000),
            Some(0),
            &s(1000, 2000, 4000),
            None,
        );
        assert!(r.starts_with("quiet"), "{r}");
        assert!(r.contains("2.00 ms"), "{r}");
        let r = row("x", 1.0, None, None, &Summary::default(), None);
        assert!(r.contains(" - "), "{r}");
        assert_eq!(
            lat_ratio(&s(1, 8000, 3), &s(1, 2000, 3), |s| s.p99_us),
            Some(4.0)
        );
        assert_eq!(
            lat_ratio(&Summary::default(), &s(1, 2, 3), |s| s.p99_us),
            None
        );
    }
}
