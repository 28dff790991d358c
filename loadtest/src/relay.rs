//! `ferry-load relay`: U users × D devices, every device publishing at R events/s
//! with pipelining; measures publish→ack and publish→delivery and checks that every
//! device received each of its user's other devices' events exactly once, in order.
//!
//! One task per device owns its socket: it reads acks and events as they come and,
//! when publishes are due, seals them all, queues them and flushes once. At most
//! `--window` publishes per device wait for their ack.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::baseline::{self, KIND_ACK, KIND_EVENT};
use crate::check::{self, CheckReport, HEADER_LEN, Header, PublisherLog, ReceiverLog};
use crate::common::{self, BaselineOpts, ConnArgs, ReportArgs, mono_ns, say};
use crate::net::{self, Failure, Failures, Lean, Opened, Session, Sources, Ws};
use crate::progress::{Counter, Delta, Progress, ServerProbe};
use crate::stats::{self, Samples, SharedHistogram, Summary, fmt_ratio, ratio};

/// Arguments of `ferry-load relay`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Start the server with limits a load test does not trip (all load comes from one \
address and few devices publish fast), for example:

  eval \"$(ferry-load serve-env)\"   # prints FERRY_LIMITS_EVENTS_PER_SEC, _BURST,
                                   # _HANDSHAKES_PER_IP_PER_SEC, _MAX_CONNECTIONS_PER_IP,
                                   # _OUTBOUND_QUEUE … and a server key to pin
  taskset -c 0 ferry serve &
  taskset -c 1 ferry-load relay --server-key <public key> --users 333 --devices 3 \\
      --rate 30 --payload 256 --duration 30s --with-baseline --server-pid <pid>

The exit code is non-zero when the exactly-once/in-order check fails or any \
publish or session failed.")]
pub(crate) struct RelayArgs {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    #[command(flatten)]
    pub(crate) report: ReportArgs,
    #[command(flatten)]
    pub(crate) baseline: BaselineOpts,
    /// Users.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) users: u32,
    /// Devices per user (all connected; each publishes and receives the others').
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub(crate) devices: u32,
    /// Publishes per second per device.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) rate: f64,
    /// Payload bytes (at least 24: the header with origin, counter and send time).
    #[arg(long, default_value_t = 256)]
    pub(crate) payload: usize,
    /// How long devices publish.
    #[arg(long, default_value = "10s", value_parser = stats::parse_duration)]
    pub(crate) duration: Duration,
    /// Publishes in flight per device (sent, not yet acked).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) window: u32,
    /// After publishing stops, how long to wait for the last acks and deliveries.
    #[arg(long, default_value = "10s", value_parser = stats::parse_duration)]
    pub(crate) drain: Duration,
    /// Every stored event carries `"ttl": SECS` (it expires then and retention may
    /// delete it); default: no ttl. The baseline server ignores it.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) ttl: Option<u32>,
}

/// The publish pattern, independent of the server.
#[derive(Clone, Debug, Serialize)]
struct Pattern {
    users: u32,
    devices: u32,
    rate: f64,
    payload: usize,
    #[serde(serialize_with = "secs")]
    duration: Duration,
    window: u32,
    #[serde(serialize_with = "secs")]
    drain: Duration,
    /// `ttl` of every stored event, seconds.
    ttl: Option<u32>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// One received message, as far as the pattern cares.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    Ack { counter: u64, seq: u64 },
    Event { seq: u64, header: Option<Header> },
    Refused { counter: Option<u64>, label: String },
    Other,
}

/// How a device talks to a server: Ferry's sealed JSON, or the baseline's raw frames.
trait Wire: Send + 'static {
    fn ws(&mut self) -> &mut Ws;
    fn publish(&mut self, counter: u64, payload: &[u8]) -> Result<Message, Failure>;
    fn decode(&mut self, msg: Message) -> Result<Decoded, Failure>;
}

struct FerryWire {
    session: Session,
    /// Event id, shaped like a UUIDv7 as the client SDK makes them: 48-bit Unix ms
    /// (stamped per publish), 2 random bytes of this run, the device, the counter.
    id: [u8; 16],
    /// `ttl` of every publish.
    ttl: Option<u32>,
}

impl Wire for FerryWire {
    fn ws(&mut self) -> &mut Ws {
        &mut self.session.ws
    }

    fn publish(&mut self, counter: u64, payload: &[u8]) -> Result<Message, Failure> {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.id[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        self.id[12..16].copy_from_slice(&(counter as u32).to_be_bytes());
        let mut json = net::publish_json_ttl(counter, &self.id, payload, self.ttl);
        self.session.seal(&mut json)?;
        Ok(Message::Binary(json.into()))
    }

    fn decode(&mut self, msg: Message) -> Result<Decoded, Failure> {
        let Opened::Plain(plain) = self.session.open(msg)? else {
            return Ok(Decoded::Other);
        };
        let m: Lean<'_> =
            serde_json::from_slice(&plain).map_err(|_| Failure::Protocol("unreadable"))?;
        let counter = m.rid.and_then(|r| u64::try_from(r).ok());
        Ok(match m.ty {
            "ack" if m.duplicate => Decoded::Refused {
                counter,
                label: "ack_duplicate".into(),
            },
            "ack" => match (counter, m.seq) {
                (Some(counter), Some(seq)) => Decoded::Ack { counter, seq },
                _ => Decoded::Refused {
                    counter,
                    label: "ack_without_rid_or_seq".into(),
                },
            },
            "event" => Decoded::Event {
                seq: m.seq.unwrap_or(0),
                header: m.payload.and_then(Header::read_b64u),
            },
            "error" => Decoded::Refused {
                counter,
                label: format!("error_{}", m.code.unwrap_or("unknown")),
            },
            "conflict" => Decoded::Refused {
                counter,
                label: "conflict".into(),
            },
            _ => Decoded::Other,
        })
    }
}

struct RawWire {
    ws: Ws,
}

fn decode_raw(b: &[u8]) -> Decoded {
    if b.len() < 9 {
        return Decoded::Other;
    }
    let seq = u64::from_be_bytes(b[1..9].try_into().expect("8 bytes"));
    let header = Header::read(&b[9..]);
    match b[0] {
        KIND_ACK => match header {
            Some(h) => Decoded::Ack {
                counter: h.counter,
                seq,
            },
            None => Decoded::Refused {
                counter: None,
                label: "bad_ack".into(),
            },
        },
        KIND_EVENT => Decoded::Event { seq, header },
        _ => Decoded::Other,
    }
}

impl Wire for RawWire {
    fn ws(&mut self) -> &mut Ws {
        &mut self.ws
    }

    fn publish(&mut self, _counter: u64, payload: &[u8]) -> Result<Message, Failure> {
        Ok(Message::Binary(Bytes::copy_from_slice(payload)))
    }

    fn decode(&mut self, msg: Message) -> Result<Decoded, Failure> {
        match msg {
            Message::Binary(b) => Ok(decode_raw(&b)),
            Message::Close(f) => Err(Failure::Closed(f.map_or(1005, |f| u16::from(f.code)))),
            _ => Ok(Decoded::Other),
        }
    }
}

/// Counters and histograms all device tasks share.
#[derive(Default)]
struct Live {
    published: Counter,
    acked: Counter,
    refused: Counter,
    delivered: Counter,
    dead: Counter,
    acked_in_window: Counter,
    delivered_in_window: Counter,
    ack_latency: SharedHistogram,
    delivery_latency: SharedHistogram,
    failures: Mutex<Failures>,
}

impl Live {
    fn fail(&self, label: String) {
        *self
            .failures
            .lock()
            .expect("failures lock")
            .entry(label)
            .or_default() += 1;
    }
}

/// What one device task hands back.
struct DeviceOut {
    publisher: PublisherLog,
    receiver: ReceiverLog,
    max_lag: Duration,
}

struct Clock {
    start: Instant,
    publish_end: Instant,
}

#[allow(clippy::too_many_lines)]
async fn run_device<W: Wire>(
    mut w: W,
    me: u32,
    total: u32,
    pat: Arc<Pattern>,
    live: Arc<Live>,
    clock: Arc<Clock>,
    mut stop: watch::Receiver<bool>,
) -> DeviceOut {
    let mut out = DeviceOut {
        publisher: PublisherLog::default(),
        receiver: ReceiverLog::new(me, pat.devices),
        max_lag: Duration::ZERO,
    };
    let interval = Duration::from_secs_f64(1.0 / pat.rate);
    // Spread the devices' publishes evenly over one interval.
    let mut next_due = clock.start + interval.mul_f64(f64::from(me) / f64::from(total));
    let window = pat.window as usize;
    let mut inflight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(window);
    let mut payload: Vec<u8> = (0..pat.payload)
        .map(|i| (i * 31 + me as usize) as u8)
        .collect();
    let mut counter = 0u64;
    let mut ack_samples = Samples::default();
    let mut delivery_samples = Samples::default();
    let sleep = tokio::time::sleep_until(next_due.into());
    tokio::pin!(sleep);
    let end = loop {
        // No publish leaves after the end, even one scheduled before it.
        let can_publish = next_due < clock.publish_end
            && inflight.len() < window
            && Instant::now() < clock.publish_end;
        tokio::select! {
            biased;
            _ = stop.changed() => break None,
            msg = w.ws().next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => break Some(net::ws_failure(e)),
                    None => break Some(Failure::Transport("eof")),
                };
                let now = Instant::now();
                match w.decode(msg) {
                    Ok(Decoded::Ack { counter: c, seq }) => {
                        if let Some(i) = inflight.iter().position(|&(k, _)| k == c) {
                            let (_, sent) = inflight.remove(i).expect("present");
                            ack_samples.push(micros(now - sent), &live.ack_latency);
                        }
                        if out.publisher.ack(c, seq) {
                            live.acked.inc();
                            if now <= clock.publish_end {
                                live.acked_in_window.inc();
                            }
                        } else {
                            live.fail("ack_repeated".into());
                        }
                    }
                    Ok(Decoded::Event { seq, header }) => {
                        out.receiver.record(seq, header);
                        if let Some(h) = header {
                            let lat = mono_ns(now).saturating_sub(h.sent_ns) / 1000;
                            delivery_samples.push(lat, &live.delivery_latency);
                        }
                        live.delivered.inc();
                        if now <= clock.publish_end {
                            live.delivered_in_window.inc();
                        }
                    }
                    Ok(Decoded::Refused { counter: c, label }) => {
                        if let Some(c) = c
                            && let Some(i) = inflight.iter().position(|&(k, _)| k == c)
                        {
                            inflight.remove(i);
                        }
                        live.refused.inc();
                        live.fail(label);
                    }
                    Ok(Decoded::Other) => {}
                    Err(f) => break Some(f),
                }
            }
            _ = &mut sleep, if can_publish => {
                let now = Instant::now();
                let mut sent = 0;
                while next_due <= now
                    && next_due < clock.publish_end
                    && now < clock.publish_end
                    && inflight.len() < window
                {
                    out.max_lag = out.max_lag.max(now - next_due);
                    Header { origin: me, counter, sent_ns: mono_ns(now) }.write(&mut payload);
                    let frame = match w.publish(counter, &payload) {
                        Ok(f) => f,
                        Err(f) => return finish(out, &live, Some(f), ack_samples, delivery_samples),
                    };
                    if let Err(e) = w.ws().feed(frame).await {
                        return finish(out, &live, Some(net::ws_failure(e)), ack_samples, delivery_samples);
                    }
                    inflight.push_back((counter, now));
                    counter += 1;
                    sent += 1;
                    next_due += interval;
                }
                if sent > 0 {
                    live.published.add(sent);
                    if let Err(e) = w.ws().flush().await {
                        break Some(net::ws_failure(e));
                    }
                }
                sleep.as_mut().reset(next_due.into());
            }
        }
    };
    if end.is_none() {
        net::close(w.ws()).await;
    }
    finish(out, &live, end, ack_samples, delivery_samples)
}

fn finish(
    out: DeviceOut,
    live: &Live,
    failure: Option<Failure>,
    mut acks: Samples,
    mut deliveries: Samples,
) -> DeviceOut {
    acks.flush(&live.ack_latency);
    deliveries.flush(&live.delivery_latency);
    if let Some(f) = failure {
        live.dead.inc();
        live.fail(format!("session_{}", f.label()));
    }
    out
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The figures of one run of the pattern against one server.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Outcome {
    server: &'static str,
    published: u64,
    acked: u64,
    refused: u64,
    /// Publishes still without a reply when the drain time was up.
    unanswered: u64,
    delivered: u64,
    offered_per_sec: f64,
    /// Acks received while devices published, per second of publishing.
    events_per_sec: f64,
    /// Deliveries received while devices published, per second.
    deliveries_per_sec: f64,
    ack_latency: Summary,
    delivery_latency: Summary,
    max_schedule_lag_us: u64,
    failures: Failures,
    sessions_lost: u64,
    check: CheckReport,
    /// Server CPU time during the run (user + system), when it could be read.
    server_cpu_secs: Option<f64>,
    /// Server CPU per stored event, microseconds.
    server_cpu_us_per_event: Option<f64>,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.check.ok()
            && self.failures.is_empty()
            && self.sessions_lost == 0
            && self.unanswered == 0
    }

    fn text(&self) -> String {
        let mut s = format!(
            "{}: published {} ({:.0}/s offered), acked {} ({:.0} events/s stored), \
             delivered {} ({:.0}/s), refused {}, unanswered at the end {}\n",
            self.server,
            self.published,
            self.offered_per_sec,
            self.acked,
            self.events_per_sec,
            self.delivered,
            self.deliveries_per_sec,
            self.refused,
            self.unanswered
        );
        s += &format!("  publish→ack      {}\n", self.ack_latency.line());
        s += &format!("  publish→delivery {}\n", self.delivery_latency.line());
        s += &format!(
            "  max schedule lag {}; failures: {}; sessions lost: {}\n",
            stats::ms(self.max_schedule_lag_us),
            common::failures_line(&self.failures),
            self.sessions_lost
        );
        if let (Some(cpu), Some(per)) = (self.server_cpu_secs, self.server_cpu_us_per_event) {
            s += &format!("  server CPU {cpu:.2} s = {per:.1} µs per stored event\n");
        }
        s += &format!("  check {}", self.check.line());
        if self.unanswered > 0 {
            s += "\n  (the drain time ran out: the check saw the run as it stood, with \
                  publishes still in flight)";
        }
        s
    }
}

/// Runs the pattern over already connected wires (indexed by global device).
async fn run_pattern<W: Wire>(
    server: &'static str,
    wires: Vec<W>,
    pat: &Pattern,
    probe: Option<ServerProbe>,
) -> Outcome {
    let total = wires.len() as u32;
    let pat = Arc::new(pat.clone());
    let live = Arc::new(Live::default());
    let start = Instant::now() + Duration::from_millis(200);
    let clock = Arc::new(Clock {
        start,
        publish_end: start + pat.duration,
    });
    let before = match &probe {
        Some(p) => p.sample().await.ok(),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks: Vec<_> = wires
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            tokio::spawn(run_device(
                w,
                i as u32,
                total,
                pat.clone(),
                live.clone(),
                clock.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let progress = {
        let live = live.clone();
        let (mut p, mut a, mut d) = (Delta::default(), Delta::default(), Delta::default());
        Progress::start(server, start, move |t| {
            format!(
                "pub {:>7.0}/s  ack {:>7.0}/s  dlv {:>7.0}/s  in flight {:>5}  refused {}  lost {}",
                p.per_sec(live.published.get(), t),
                a.per_sec(live.acked.get(), t),
                d.per_sec(live.delivered.get(), t),
                live.published
                    .get()
                    .saturating_sub(live.acked.get() + live.refused.get()),
                live.refused.get(),
                live.dead.get()
            )
        })
    };
    tokio::time::sleep_until(clock.publish_end.into()).await;
    // Drain: every publish answered and every acked event delivered to the user's
    // other devices — or the drain time is up.
    let drain_end = Instant::now() + pat.drain;
    let fanout = u64::from(pat.devices - 1);
    while Instant::now() < drain_end {
        let answered = live.acked.get() + live.refused.get() >= live.published.get();
        let delivered = live.delivered.get() >= live.acked.get() * fanout;
        if (answered && delivered) || live.dead.get() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let mut publishers = Vec::with_capacity(total as usize);
    let mut receivers = Vec::with_capacity(total as usize);
    let mut max_lag = Duration::ZERO;
    for t in tasks {
        match t.await {
            Ok(o) => {
                publishers.push(o.publisher);
                receivers.push(o.receiver);
                max_lag = max_lag.max(o.max_lag);
            }
            Err(_) => {
                live.fail("task_panicked".into());
                publishers.push(PublisherLog::default());
            }
        }
    }
    progress.stop().await;
    let after = match &probe {
        Some(p) => p.sample().await.ok(),
        None => None,
    };
    let check = check::check(&publishers, &receivers);
    let acked = live.acked.get();
    let cpu = before.zip(after).map(|(b, a)| a.cpu_secs - b.cpu_secs);
    Outcome {
        server,
        published: live.published.get(),
        acked,
        refused: live.refused.get(),
        unanswered: live
            .published
            .get()
            .saturating_sub(acked + live.refused.get()),
        delivered: live.delivered.get(),
        offered_per_sec: stats::rate(live.published.get(), pat.duration),
        events_per_sec: stats::rate(live.acked_in_window.get(), pat.duration),
        deliveries_per_sec: stats::rate(live.delivered_in_window.get(), pat.duration),
        ack_latency: live.ack_latency.summary(),
        delivery_latency: live.delivery_latency.summary(),
        max_schedule_lag_us: micros(max_lag),
        failures: live.failures.lock().expect("failures lock").clone(),
        sessions_lost: live.dead.get(),
        check,
        server_cpu_secs: cpu,
        server_cpu_us_per_event: cpu.and_then(|c| (acked > 0).then(|| c * 1e6 / acked as f64)),
    }
}

/// Ferry's figures over the baseline's.
#[derive(Debug, Serialize)]
struct Ratios {
    events_per_sec: Option<f64>,
    deliveries_per_sec: Option<f64>,
    ack_p50: Option<f64>,
    ack_p99: Option<f64>,
    delivery_p50: Option<f64>,
    delivery_p99: Option<f64>,
    delivery_p999: Option<f64>,
    delivery_max: Option<f64>,
    server_cpu_per_event: Option<f64>,
}

impl Ratios {
    fn of(f: &Outcome, b: &Outcome) -> Self {
        let r = |a: u64, b: u64| ratio(a as f64, b as f64);
        Self {
            events_per_sec: ratio(f.events_per_sec, b.events_per_sec),
            deliveries_per_sec: ratio(f.deliveries_per_sec, b.deliveries_per_sec),
            ack_p50: r(f.ack_latency.p50_us, b.ack_latency.p50_us),
            ack_p99: r(f.ack_latency.p99_us, b.ack_latency.p99_us),
            delivery_p50: r(f.delivery_latency.p50_us, b.delivery_latency.p50_us),
            delivery_p99: r(f.delivery_latency.p99_us, b.delivery_latency.p99_us),
            delivery_p999: r(f.delivery_latency.p999_us, b.delivery_latency.p999_us),
            delivery_max: r(f.delivery_latency.max_us, b.delivery_latency.max_us),
            server_cpu_per_event: f
                .server_cpu_us_per_event
                .zip(b.server_cpu_us_per_event)
                .and_then(|(a, b)| ratio(a, b)),
        }
    }

    fn text(&self) -> String {
        format!(
            "ferry / baseline: events/s {}  deliveries/s {}  ack p50 {} p99 {}  \
             delivery p50 {} p99 {} p99.9 {} max {}  server CPU/event {}",
            fmt_ratio(self.events_per_sec),
            fmt_ratio(self.deliveries_per_sec),
            fmt_ratio(self.ack_p50),
            fmt_ratio(self.ack_p99),
            fmt_ratio(self.delivery_p50),
            fmt_ratio(self.delivery_p99),
            fmt_ratio(self.delivery_p999),
            fmt_ratio(self.delivery_max),
            fmt_ratio(self.server_cpu_per_event),
        )
    }
}

/// Runs `ferry-load relay`; `Ok(false)` when the check or a publish failed.
pub(crate) async fn run(args: &RelayArgs) -> anyhow::Result<bool> {
    if args.payload < HEADER_LEN {
        bail!("--payload must be at least {HEADER_LEN} bytes");
    }
    if !(args.rate > 0.0 && args.rate <= 100_000.0) {
        bail!("--rate must be in (0, 100000] events/s per device");
    }
    let total = args.users * args.devices;
    let limit = net::raise_fd_limit();
    if u64::from(total) + 64 > limit {
        bail!("{total} sessions need more open files than the limit ({limit})");
    }
    let pat = Pattern {
        users: args.users,
        devices: args.devices,
        rate: args.rate,
        payload: args.payload,
        duration: args.duration,
        window: args.window,
        drain: args.drain,
        ttl: args.ttl,
    };
    let target = net::Target::parse(&args.conn.url)?;
    let pin = net::pin(args.conn.server_key.as_deref())?;
    let sources = Arc::new(Sources::new(args.conn.sources.unwrap_or(0))?);
    let probe = ServerProbe::from_args(args.report.server_pid, args.report.metrics_url.as_deref());
    let json = args.report.json;
    say(
        json,
        &format!(
            "relay: {} users × {} devices, {} events/s per device ({:.0}/s offered), \
             {} B payloads{}, window {}, {:.0} s",
            args.users,
            args.devices,
            args.rate,
            args.rate * f64::from(total),
            args.payload,
            args.ttl
                .map_or(String::new(), |t| format!(" with ttl {t} s")),
            args.window,
            args.duration.as_secs_f64()
        ),
    );

    let baseline = if let Some(child) = args
        .baseline
        .start(
            baseline::Mode::Broadcast,
            args.report.server_pid,
            args.duration + args.drain + Duration::from_secs(120),
        )
        .await?
    {
        say(
            json,
            &format!(
                "baseline: raw broadcast server pid {} on {} (CPUs {})",
                child.pid,
                child.addr,
                child.cpus.as_deref().unwrap_or("any")
            ),
        );
        let mut wires = Vec::with_capacity(total as usize);
        let mut failures = Failures::new();
        for u in 0..args.users {
            for _ in 0..args.devices {
                let t = child.target(&format!("/g/{u}"));
                match net::open(&t, sources.pick()).await {
                    Ok(ws) => wires.push(RawWire { ws }),
                    Err(f) => *failures.entry(f.label()).or_default() += 1,
                }
            }
        }
        if !failures.is_empty() {
            child.stop().await;
            bail!(
                "baseline connections failed: {}",
                common::failures_line(&failures)
            );
        }
        let o = run_pattern("baseline", wires, &pat, Some(ServerProbe::Pid(child.pid))).await;
        child.stop().await;
        say(json, &o.text());
        Some(o)
    } else {
        None
    };

    let ids = net::identities(args.conn.keys.as_deref(), args.users, args.devices)?;
    let creds: Vec<_> = ids.into_iter().flat_map(|u| u.devices).collect();
    let connect_started = Instant::now();
    let sessions = common::connect_all_or_fail(&target, &sources, pin, creds, &args.conn).await?;
    say(
        json,
        &format!(
            "connected {total} sessions in {:.1} s",
            connect_started.elapsed().as_secs_f64()
        ),
    );
    let mut run_id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut run_id[6..8]);
    run_id[6] = 0x70 | (run_id[6] & 0x0f);
    let wires: Vec<FerryWire> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, session)| {
            let mut id = run_id;
            id[8..12].copy_from_slice(&(i as u32).to_be_bytes());
            FerryWire {
                session,
                id,
                ttl: args.ttl,
            }
        })
        .collect();
    let ferry = run_pattern("ferry", wires, &pat, probe).await;
    say(json, &ferry.text());
    let ratios = baseline.as_ref().map(|b| Ratios::of(&ferry, b));
    if let Some(r) = &ratios {
        say(json, &r.text());
    }
    let ok = ferry.ok() && baseline.as_ref().is_none_or(Outcome::ok);
    if json {
        let doc = json!({
            "scenario": "relay",
            "pattern": pat,
            "ferry": ferry,
            "baseline": baseline,
            "ratios": ratios,
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
    fn raw_frames_decode() {
        let h = Header {
            origin: 4,
            counter: 9,
            sent_ns: 77,
        };
        let mut payload = vec![0u8; 40];
        h.write(&mut payload);
        let mut ack = vec![KIND_ACK];
        ack.extend_from_slice(&12u64.to_be_bytes());
        ack.extend_from_slice(&payload[..HEADER_LEN]);
        assert_eq!(
            decode_raw(&ack),
            Decoded::Ack {
                counter: 9,
                seq: 12
            }
        );
        let mut ev = vec![KIND_EVENT];
        ev.extend_from_slice(&13u64.to_be_bytes());
        ev.extend_from_slice(&payload);
        assert_eq!(
            decode_raw(&ev),
            Decoded::Event {
                seq: 13,
                header: Some(h)
            }
        );
        assert_eq!(decode_raw(&[1, 2]), Decoded::Other);
    }
}
