//! Latency histograms (HDR, microseconds) and their summaries, rates and ratios.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram holds, in microseconds (10 minutes); larger values
/// are recorded as this.
pub(crate) const MAX_MICROS: u64 = 600_000_000;

/// A fresh latency histogram: 1 µs to [`MAX_MICROS`], 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Records `d` in `h` as microseconds, clamped into the histogram's range.
pub(crate) fn record(h: &mut Histogram<u64>, d: Duration) {
    record_micros(h, u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
}

/// Records `us` microseconds, clamped into the histogram's range.
pub(crate) fn record_micros(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_MICROS));
}

/// A histogram many tasks add to: each keeps a small local buffer and merges it
/// under the lock now and then, so a thousand tasks don't each hold a full
/// histogram and don't contend on every sample.
#[derive(Debug)]
pub(crate) struct SharedHistogram {
    inner: Mutex<Histogram<u64>>,
}

impl Default for SharedHistogram {
    fn default() -> Self {
        Self {
            inner: Mutex::new(histogram()),
        }
    }
}

impl SharedHistogram {
    /// Merges and clears `buf` (microseconds).
    pub(crate) fn merge(&self, buf: &mut Vec<u64>) {
        if buf.is_empty() {
            return;
        }
        let mut h = self.inner.lock().expect("histogram lock");
        for &us in buf.iter() {
            record_micros(&mut h, us);
        }
        buf.clear();
    }

    /// Records one sample.
    pub(crate) fn record(&self, d: Duration) {
        record(&mut self.inner.lock().expect("histogram lock"), d);
    }

    /// The summary of everything recorded so far.
    pub(crate) fn summary(&self) -> Summary {
        Summary::of(&self.inner.lock().expect("histogram lock"))
    }
}

/// A local sample buffer that merges into a [`SharedHistogram`] when full.
#[derive(Debug)]
pub(crate) struct Samples {
    buf: Vec<u64>,
}

/// Samples buffered before a merge.
const SAMPLE_BUFFER: usize = 256;

impl Default for Samples {
    fn default() -> Self {
        Self {
            buf: Vec::with_capacity(SAMPLE_BUFFER),
        }
    }
}

impl Samples {
    /// Adds one sample (microseconds), merging into `into` when the buffer is full.
    pub(crate) fn push(&mut self, us: u64, into: &SharedHistogram) {
        self.buf.push(us);
        if self.buf.len() >= SAMPLE_BUFFER {
            into.merge(&mut self.buf);
        }
    }

    /// Merges whatever is left.
    pub(crate) fn flush(&mut self, into: &SharedHistogram) {
        into.merge(&mut self.buf);
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Summary {
    /// Number of samples.
    pub(crate) count: u64,
    /// Arithmetic mean.
    pub(crate) mean_us: f64,
    pub(crate) p50_us: u64,
    pub(crate) p90_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
}

impl Summary {
    /// Summarizes `h` (all zeros when it is empty).
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }

    /// One line: `p50 1.23 ms  p90 …  p99 …  p99.9 …  max …  (n=…)`.
    pub(crate) fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            self.count
        )
    }
}

/// Microseconds as milliseconds with a precision that suits the size.
pub(crate) fn ms(us: u64) -> String {
    let v = us as f64 / 1000.0;
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// Bytes for humans: `812 B`, `4.0 KiB`, `12.3 MiB`, `1.20 GiB`.
pub(crate) fn bytes(b: u64) -> String {
    const KIB: f64 = 1024.0;
    let v = b as f64;
    if v < KIB {
        format!("{b} B")
    } else if v < KIB * KIB {
        format!("{:.1} KiB", v / KIB)
    } else if v < KIB * KIB * KIB {
        format!("{:.1} MiB", v / KIB / KIB)
    } else {
        format!("{:.2} GiB", v / KIB / KIB / KIB)
    }
}

/// Events per second over `elapsed` (0 when nothing elapsed).
pub(crate) fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// `a / b`, or `None` when `b` is zero (no meaningful ratio).
pub(crate) fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// A ratio for humans: `0.42×`, or `n/a`.
pub(crate) fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".into(), |r| format!("{r:.2}×"))
}

/// Parses a duration: `30s`, `2m`, `500ms`, `1h`, or plain seconds (`30`, `0.5`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 30s, 2m, 500ms)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{s:?} is out of range (0 to 24 h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_uniform_distribution() {
        let mut h = histogram();
        for us in 1..=10_000u64 {
            record_micros(&mut h, us);
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, 10_000);
        // 3 significant digits: each quantile within 0.1 % of the exact value.
        let near = |got: u64, want: u64| {
            let err = (got as f64 - want as f64).abs() / want as f64;
            assert!(err <= 0.001, "got {got}, want {want}");
        };
        near(s.p50_us, 5_000);
        near(s.p90_us, 9_000);
        near(s.p99_us, 9_900);
        near(s.p999_us, 9_990);
        near(s.max_us, 10_000);
        assert!((s.mean_us - 5_000.5).abs() < 5.0, "{}", s.mean_us);
        assert!(s.p50_us <= s.p90_us && s.p90_us <= s.p99_us && s.p99_us <= s.p999_us);
        assert!(s.p999_us <= s.max_us);
    }

    #[test]
    fn tail_is_visible_and_outliers_are_clamped() {
        let mut h = histogram();
        for _ in 0..999 {
            record(&mut h, Duration::from_micros(100));
        }
        record(&mut h, Duration::from_secs(3600)); // beyond the range: clamped
        record(&mut h, Duration::ZERO); // below: recorded as 1 µs
        let s = Summary::of(&h);
        assert_eq!(s.count, 1001);
        assert_eq!(s.p50_us, 100);
        assert_eq!(s.p99_us, 100);
        let max_err = (s.max_us as f64 - MAX_MICROS as f64).abs() / MAX_MICROS as f64;
        assert!(max_err <= 0.001, "{}", s.max_us);
        assert!(s.p999_us >= 100);
    }

    #[test]
    fn empty_summary_is_zero_and_says_so() {
        let s = Summary::of(&histogram());
        assert_eq!(s, Summary::default());
        assert_eq!(s.line(), "no samples");
    }

    #[test]
    fn shared_histogram_merges_local_buffers() {
        let shared = SharedHistogram::default();
        let mut a = Samples::default();
        let mut b = Samples::default();
        for i in 0..1000 {
            a.push(1_000 + i % 10, &shared);
            b.push(2_000, &shared);
        }
        // Not everything merged yet: the buffers hold the rest.
        assert!(shared.summary().count < 2000);
        a.flush(&shared);
        b.flush(&shared);
        shared.record(Duration::from_millis(5));
        let s = shared.summary();
        assert_eq!(s.count, 2001);
        assert!((1_000..1_010).contains(&s.p50_us) || s.p50_us == 2_000);
        // HDR reports the highest value equivalent to 5 ms at 3 significant digits.
        assert!((5_000..=5_005).contains(&s.max_us), "{}", s.max_us);
    }

    #[test]
    fn summary_json_names_and_line() {
        let mut h = histogram();
        record_micros(&mut h, 1_500);
        let s = Summary::of(&h);
        let v = serde_json::to_value(s).unwrap();
        for k in [
            "count", "mean_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(
            s.line(),
            "p50 1.50 ms  p90 1.50 ms  p99 1.50 ms  p99.9 1.50 ms  max 1.50 ms  (n=1)"
        );
        assert_eq!(ms(250_000), "250 ms");
        assert_eq!(ms(25_000), "25.0 ms");
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(12_897_484), "12.3 MiB");
        assert_eq!(bytes(1_288_490_189), "1.20 GiB");
    }

    #[test]
    fn rates_ratios_and_durations() {
        assert_eq!(rate(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(fmt_ratio(Some(0.5)), "0.50×");
        assert_eq!(fmt_ratio(None), "n/a");
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("48h").is_err());
    }
}
