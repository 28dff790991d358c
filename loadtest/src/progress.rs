//! Shared counters, the once-a-second progress line, and what the server process
//! costs (RSS, CPU time and bytes written to storage, from `/proc`; RSS and CPU
//! time also from its Prometheus endpoint).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

/// A counter many tasks add to.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn inc(&self) {
        self.add(1);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Prints `line(elapsed, since_last)` to stderr once per second until dropped or
/// stopped; the line builder keeps its own previous values for per-second rates.
pub(crate) struct Progress {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts reporting; `started` is time zero of the printed clock.
    pub(crate) fn start<F>(label: &'static str, started: Instant, mut line: F) -> Self
    where
        F: FnMut(Duration) -> String + Send + 'static,
    {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + Duration::from_secs(1),
                Duration::from_secs(1),
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let t = started.elapsed();
                        eprintln!("[{label} {:>5.1}s] {}", t.as_secs_f64(), line(t));
                    }
                    _ = stopped.changed() => break,
                }
            }
        });
        Self { stop, task }
    }

    /// Stops reporting.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Per-second rate helper for progress lines: `delta(now_value)` → per-second.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    last: u64,
    last_t: Duration,
}

impl Delta {
    /// The rate since the previous call.
    pub(crate) fn per_sec(&mut self, value: u64, t: Duration) -> f64 {
        let dt = (t - self.last_t.min(t)).as_secs_f64();
        let r = if dt > 0.0 {
            value.saturating_sub(self.last) as f64 / dt
        } else {
            0.0
        };
        self.last = value;
        self.last_t = t;
        r
    }
}

/// Where to read the server's cost from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ServerProbe {
    /// `/proc/<pid>/status` and `/proc/<pid>/stat`.
    Pid(u32),
    /// The same of several processes (the instances of a cluster), summed.
    Pids(Vec<u32>),
    /// A Prometheus endpoint (`process_resident_memory_bytes`,
    /// `process_cpu_seconds_total`) on loopback.
    Metrics(String),
}

/// One reading of a server process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct ProcSample {
    /// Resident memory, bytes.
    pub(crate) rss_bytes: u64,
    /// User + system CPU time, seconds.
    pub(crate) cpu_secs: f64,
    /// Bytes the process sent to the storage layer (`write_bytes` of
    /// `/proc/<pid>/io`), when readable; never from a Prometheus endpoint.
    pub(crate) write_bytes: Option<u64>,
}

impl ServerProbe {
    /// `--server-pid` (one or several) wins over `--metrics-url`; neither: no probe.
    pub(crate) fn from_args(pids: &[u32], metrics_url: Option<&str>) -> Option<Self> {
        match pids {
            [] => metrics_url.map(|u| Self::Metrics(u.to_string())),
            [pid] => Some(Self::Pid(*pid)),
            many => Some(Self::Pids(many.to_vec())),
        }
    }

    /// Reads the process (or the sum of the processes) now.
    pub(crate) async fn sample(&self) -> anyhow::Result<ProcSample> {
        match self {
            Self::Pid(pid) => read_proc(*pid),
            Self::Pids(pids) => pids.iter().try_fold(
                ProcSample {
                    write_bytes: Some(0),
                    ..ProcSample::default()
                },
                |sum, &pid| {
                    let s = read_proc(pid)?;
                    Ok(ProcSample {
                        rss_bytes: sum.rss_bytes + s.rss_bytes,
                        cpu_secs: sum.cpu_secs + s.cpu_secs,
                        write_bytes: sum.write_bytes.zip(s.write_bytes).map(|(a, b)| a + b),
                    })
                },
            ),
            Self::Metrics(url) => {
                let body = http_get(url).await?;
                parse_metrics(&body)
            }
        }
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// RSS, CPU time and bytes written of `pid` from `/proc` (`write_bytes` is `None`
/// when `/proc/<pid>/io` cannot be read, e.g. a process of another user).
pub(crate) fn read_proc(pid: u32) -> anyhow::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status (is the server running?)"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    Ok(ProcSample {
        rss_bytes: parse_vm_rss(&status).context("no VmRSS in /proc/<pid>/status")?,
        cpu_secs: parse_stat_cpu(&stat).context("malformed /proc/<pid>/stat")?,
        write_bytes: std::fs::read_to_string(format!("/proc/{pid}/io"))
            .ok()
            .and_then(|io| parse_io_write_bytes(&io)),
    })
}

/// `write_bytes: 12345` of `/proc/<pid>/io`: the bytes the process caused to be
/// sent to the storage layer, counted when page-cache pages are dirtied (a page
/// dirtied again before it was written back counts once).
pub(crate) fn parse_io_write_bytes(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// `VmRSS:   12345 kB` → bytes.
pub(crate) fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime (fields 14 and 15) of `/proc/<pid>/stat`, in seconds.
pub(crate) fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 → index 11.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// The CPU list a process may run on (`Cpus_allowed_list`), e.g. `0` or `0-1`.
pub(crate) fn cpus_allowed(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
}

/// Reads `process_resident_memory_bytes` and `process_cpu_seconds_total` (Ferry's
/// are `ferry_process_…`).
pub(crate) fn parse_metrics(body: &str) -> anyhow::Result<ProcSample> {
    let value = |name: &str| {
        body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == name).then(|| it.next()?.parse::<f64>().ok())?
        })
    };
    // Ferry's registry prefixes the process collector's names (`ferry_process_…`);
    // other servers export them bare.
    let either = |name: &str| value(&format!("ferry_{name}")).or_else(|| value(name));
    let Some(rss) = either("process_resident_memory_bytes") else {
        bail!("the metrics have no (ferry_)process_resident_memory_bytes");
    };
    Ok(ProcSample {
        rss_bytes: rss as u64,
        cpu_secs: either("process_cpu_seconds_total").unwrap_or(0.0),
        write_bytes: None,
    })
}

/// The samples of `name` (with any labels) in a Prometheus text body whose line
/// contains `label` (when given).
fn metric_samples<'a>(
    body: &'a str,
    name: &'a str,
    label: Option<&'a str>,
) -> impl Iterator<Item = f64> + 'a {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(move |l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{'))
        })
        .filter(move |l| label.is_none_or(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}

/// Sums `name` (all label sets) in a Prometheus text body; 0 when it is absent.
pub(crate) fn metric_sum(body: &str, name: &str, label: Option<&str>) -> f64 {
    metric_samples(body, name, label).sum()
}

/// The value of `name` (summed over label sets), or `None` when the body has no
/// sample of it (a server that does not export it).
pub(crate) fn metric_value(body: &str, name: &str) -> Option<f64> {
    metric_samples(body, name, None).reduce(|a, b| a + b)
}

/// A plain HTTP/1.1 GET to a loopback URL; returns the body.
pub(crate) async fn http_get(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .context("--metrics-url must be an http:// URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: std::net::SocketAddr = authority
        .parse()
        .with_context(|| format!("{url:?}: the host must be IP:PORT"))?;
    crate::net::check_loopback(addr.ip())?;
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .context("metrics request timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("malformed HTTP response from {url}");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{url}: {}", head.lines().next().unwrap_or(""));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // Chunk-size lines are hex digits alone on a line; metric lines never are.
        return Ok(body
            .lines()
            .filter(|l| !l.trim().chars().all(|c| c.is_ascii_hexdigit()))
            .collect::<Vec<_>>()
            .join("\n"));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsing() {
        let status = "Name:\tferry\nVmPeak:\t  99999 kB\nVmRSS:\t   20480 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(20 * 1024 * 1024));
        let stat = "1234 (ferry serve) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
        assert!(parse_vm_rss("Name: x\n").is_none());
        let io = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 0\n\
                  write_bytes: 1228800\ncancelled_write_bytes: 4096\n";
        assert_eq!(parse_io_write_bytes(io), Some(1_228_800));
        assert_eq!(parse_io_write_bytes("rchar: 10\n"), None);
    }

    #[test]
    fn probes_from_the_options() {
        assert_eq!(ServerProbe::from_args(&[], None), None);
        assert_eq!(
            ServerProbe::from_args(&[], Some("http://127.0.0.1:9090/metrics")),
            Some(ServerProbe::Metrics("http://127.0.0.1:9090/metrics".into()))
        );
        assert_eq!(
            ServerProbe::from_args(&[7], Some("http://127.0.0.1:9090/metrics")),
            Some(ServerProbe::Pid(7))
        );
        assert_eq!(
            ServerProbe::from_args(&[7, 8, 9], None),
            Some(ServerProbe::Pids(vec![7, 8, 9]))
        );
    }

    #[tokio::test]
    async fn several_pids_are_summed() {
        let me = std::process::id();
        let one = ServerProbe::Pid(me).sample().await.unwrap();
        let two = ServerProbe::Pids(vec![me, me]).sample().await.unwrap();
        assert!(one.rss_bytes > 0);
        // RSS may move between the readings; it is summed, so about twice.
        assert!(two.rss_bytes > one.rss_bytes, "{one:?} {two:?}");
        assert!(two.cpu_secs >= 2.0 * one.cpu_secs, "{one:?} {two:?}");
        // Our own /proc/<pid>/io is readable; the sum is at least twice one reading.
        let (w1, w2) = (one.write_bytes.unwrap(), two.write_bytes.unwrap());
        assert!(w2 >= 2 * w1, "{one:?} {two:?}");
        let gone = ServerProbe::Pids(vec![me, u32::MAX]).sample().await;
        assert!(gone.is_err(), "a missing process is an error");
    }

    #[test]
    fn metrics_parsing() {
        let body = "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
                    # TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes 1.2345e7\n\
                    process_cpu_seconds_total 4.5\n";
        let s = parse_metrics(body).unwrap();
        assert_eq!(s.rss_bytes, 12_345_000);
        assert_eq!(s.cpu_secs, 4.5);
        assert!(parse_metrics("other 1\n").is_err());
    }

    #[test]
    fn metric_sums() {
        let body = "# HELP x\nferry_connections_live 12\nferry_connections_live_other 5\n\
                    ferry_connections_refused_total{reason=\"per_ip\"} 3\n\
                    ferry_connections_refused_total{reason=\"global\"} 4\n";
        assert_eq!(metric_sum(body, "ferry_connections_live", None), 12.0);
        assert_eq!(
            metric_sum(body, "ferry_connections_refused_total", None),
            7.0
        );
        assert_eq!(
            metric_sum(body, "ferry_connections_refused_total", Some("per_ip")),
            3.0
        );
        assert_eq!(metric_value(body, "ferry_connections_live"), Some(12.0));
        assert_eq!(metric_value(body, "ferry_database_size_bytes"), None);
        assert_eq!(
            metric_value(
                "ferry_database_size_bytes 4.096e3\n",
                "ferry_database_size_bytes"
            ),
            Some(4096.0)
        );
    }

    #[test]
    fn delta_rates() {
        let mut d = Delta::default();
        assert_eq!(d.per_sec(100, Duration::from_secs(1)), 100.0);
        assert_eq!(d.per_sec(300, Duration::from_secs(2)), 200.0);
        assert_eq!(d.per_sec(300, Duration::from_secs(2)), 0.0);
    }
}
