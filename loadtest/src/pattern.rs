//! The engine of the relay pattern, shared by `ferry-load relay`, `cluster` and the
//! peers: U users × D devices, each device one task that publishes on an open-loop
//! clock and reads its acks and its user's other devices' events, behind [`Wire`]
//! (Ferry's sealed sessions, the raw baseline's frames, or a peer's client); then the
//! figures ([`Outcome`]) and the exactly-once, in-order check.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::baseline::{KIND_ACK, KIND_EVENT};
use crate::check::{self, CheckReport, HEADER_LEN, Header, PublisherLog, ReceiverLog};
use crate::common::{self, mono_ns};
use crate::net::{self, Failure, Failures, Lean, Opened, Session, Ws};
use crate::progress::{Counter, Delta, Progress, ServerProbe};
use crate::stats::{self, Samples, SharedHistogram, Summary, fmt_ratio, ratio};

/// The publish pattern, independent of the server.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Pattern {
    pub(crate) users: u32,
    /// Devices per user.
    pub(crate) devices: u32,
    /// Publishes per second per device.
    pub(crate) rate: f64,
    /// Payload bytes.
    pub(crate) payload: usize,
    /// The measured window.
    #[serde(serialize_with = "secs")]
    pub(crate) duration: Duration,
    /// Publishing before the measured window.
    #[serde(serialize_with = "secs")]
    pub(crate) warmup: Duration,
    /// Publishes in flight per device.
    pub(crate) window: u32,
    /// The most time for the last acks and deliveries after publishing stops.
    #[serde(serialize_with = "secs")]
    pub(crate) drain: Duration,
    /// `ttl` of every stored event, seconds.
    pub(crate) ttl: Option<u32>,
}

impl Pattern {
    /// Refuses what cannot run: a payload too short for the header, a rate out of
    /// range, more sessions than open files.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        if self.payload < HEADER_LEN {
            bail!("--payload must be at least {HEADER_LEN} bytes");
        }
        if !(self.rate > 0.0 && self.rate <= 100_000.0) {
            bail!("--rate must be in (0, 100000] events/s per device");
        }
        let total = self.sessions();
        let limit = net::raise_fd_limit();
        if u64::from(total) + 64 > limit {
            bail!("{total} sessions need more open files than the limit ({limit})");
        }
        Ok(())
    }

    /// Devices over all users.
    pub(crate) fn sessions(&self) -> u32 {
        self.users * self.devices
    }

    /// Publishes per second over all devices.
    pub(crate) fn offered(&self) -> f64 {
        self.rate * f64::from(self.sessions())
    }
}

/// The instance (index into the URLs) that global device `device` connects to:
/// slot `d` of user `u` goes to `(u + d) mod instances`, so with two devices or
/// more and two instances or more every user has devices on different instances.
pub(crate) fn instance_of(device: u32, devices_per_user: u32, instances: u32) -> u32 {
    let (u, d) = (device / devices_per_user, device % devices_per_user);
    ((u64::from(u) + u64::from(d)) % u64::from(instances.max(1))) as u32
}

/// Where a delivery went, relative to where its event was published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Locality {
    /// Publisher and receiver on the same instance.
    Same,
    /// On different instances (relayed between them).
    Cross,
}

impl Locality {
    /// Of an event of device `origin` delivered to device `receiver`.
    fn of(origin: u32, receiver: u32, devices_per_user: u32, instances: u32) -> Self {
        if instance_of(origin, devices_per_user, instances)
            == instance_of(receiver, devices_per_user, instances)
        {
            Self::Same
        } else {
            Self::Cross
        }
    }
}

/// Publish→delivery latency, over all deliveries and split by [`Locality`].
#[derive(Default)]
struct DeliveryLatency {
    all: SharedHistogram,
    same: SharedHistogram,
    cross: SharedHistogram,
}

/// One device's buffers of [`DeliveryLatency`] samples.
#[derive(Default)]
struct DeliverySamples {
    all: Samples,
    same: Samples,
    cross: Samples,
}

impl DeliverySamples {
    /// Adds one delivery's latency (microseconds) to the total and to its locality.
    fn push(&mut self, us: u64, locality: Locality, into: &DeliveryLatency) {
        self.all.push(us, &into.all);
        match locality {
            Locality::Same => self.same.push(us, &into.same),
            Locality::Cross => self.cross.push(us, &into.cross),
        }
    }

    /// Merges whatever is left.
    fn flush(&mut self, into: &DeliveryLatency) {
        self.all.flush(&into.all);
        self.same.flush(&into.same);
        self.cross.flush(&into.cross);
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// One received message, as far as the pattern cares.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Ack { counter: u64, seq: u64 },
    Event { seq: u64, header: Option<Header> },
    Refused { counter: Option<u64>, label: String },
    Other,
}

/// How a device talks to a server: a WebSocket ([`WsWire`]: Ferry's sealed JSON,
/// the baseline's raw frames) or a peer's client (`peers`).
pub(crate) trait Wire: Send + 'static {
    /// The next message from the server and when it arrived; an error ends the
    /// session. Cancel-safe: the device task awaits it in a `select!`.
    fn next(&mut self) -> impl Future<Output = Result<(Instant, Decoded), Failure>> + Send;
    /// Sends publish number `counter` of `payload`, or queues it for [`Self::flush`];
    /// an error ends the session (a publish the server refuses comes back from
    /// [`Self::next`] as [`Decoded::Refused`]).
    fn feed(
        &mut self,
        counter: u64,
        payload: &[u8],
    ) -> impl Future<Output = Result<(), Failure>> + Send;
    /// Sends what [`Self::feed`] queued.
    fn flush(&mut self) -> impl Future<Output = Result<(), Failure>> + Send;
    /// Ends the session cleanly.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// A device on one WebSocket: Ferry's sealed JSON, or the baseline's raw frames.
trait WsWire: Send + 'static {
    fn ws(&mut self) -> &mut Ws;
    fn publish(&mut self, counter: u64, payload: &[u8]) -> Result<Message, Failure>;
    fn decode(&mut self, msg: Message) -> Result<Decoded, Failure>;
}

impl<T: WsWire> Wire for T {
    async fn next(&mut self) -> Result<(Instant, Decoded), Failure> {
        let msg = match self.ws().next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(net::ws_failure(e)),
            None => return Err(Failure::Transport("eof")),
        };
        let now = Instant::now();
        Ok((now, self.decode(msg)?))
    }

    async fn feed(&mut self, counter: u64, payload: &[u8]) -> Result<(), Failure> {
        let frame = self.publish(counter, payload)?;
        self.ws().feed(frame).await.map_err(net::ws_failure)
    }

    async fn flush(&mut self) -> Result<(), Failure> {
        self.ws().flush().await.map_err(net::ws_failure)
    }

    async fn close(&mut self) {
        net::close(self.ws()).await;
    }
}

pub(crate) struct FerryWire {
    pub(crate) session: Session,
    /// Event id, shaped like a UUIDv7 as the client SDK makes them: 48-bit Unix ms
    /// (stamped per publish), 2 random bytes of this run, the device, the counter.
    pub(crate) id: [u8; 16],
    /// `ttl` of every publish.
    pub(crate) ttl: Option<u32>,
}

impl WsWire for FerryWire {
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

pub(crate) struct RawWire {
    pub(crate) ws: Ws,
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

impl WsWire for RawWire {
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
    /// Acks of publishes sent in the measured window (whenever they came).
    acked_measured: Counter,
    acked_in_window: Counter,
    delivered_in_window: Counter,
    ack_latency: SharedHistogram,
    delivery_latency: DeliveryLatency,
    failures: Mutex<Failures>,
}

impl Live {
    fn fail(&self, label: String) {
        net::count_failure(&self.failures, label);
    }
}

/// What one device task hands back.
struct DeviceOut {
    publisher: PublisherLog,
    receiver: ReceiverLog,
    max_lag: Duration,
}

struct Clock {
    /// Publishing starts (the warm-up, if any).
    start: Instant,
    /// The measured window starts.
    measure_start: Instant,
    /// [`Self::measure_start`] on the [`mono_ns`] clock of the payload headers.
    measure_ns: u64,
    /// Publishing and the measured window end.
    publish_end: Instant,
}

impl Clock {
    /// Whether a message received at `now` falls in the measured window.
    fn in_window(&self, now: Instant) -> bool {
        now >= self.measure_start && now <= self.publish_end
    }
}

/// Where a device sits: its global index among `total`, and the number of
/// instances the devices are spread over.
#[derive(Clone, Copy, Debug)]
struct Seat {
    me: u32,
    total: u32,
    instances: u32,
}

#[allow(clippy::too_many_lines)]
async fn run_device<W: Wire>(
    mut w: W,
    seat: Seat,
    pat: Arc<Pattern>,
    live: Arc<Live>,
    clock: Arc<Clock>,
    mut stop: watch::Receiver<bool>,
) -> DeviceOut {
    let Seat {
        me,
        total,
        instances,
    } = seat;
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
    let mut delivery_samples = DeliverySamples::default();
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
            msg = w.next() => {
                let (now, msg) = match msg {
                    Ok(m) => m,
                    Err(f) => break Some(f),
                };
                match msg {
                    Decoded::Ack { counter: c, seq } => {
                        let mut measured = false;
                        if let Some(i) = inflight.iter().position(|&(k, _)| k == c) {
                            let (_, sent) = inflight.remove(i).expect("present");
                            if sent >= clock.measure_start {
                                measured = true;
                                ack_samples.push(micros(now - sent), &live.ack_latency);
                            }
                        }
                        if out.publisher.ack(c, seq) {
                            live.acked.inc();
                            if measured {
                                live.acked_measured.inc();
                            }
                            if clock.in_window(now) {
                                live.acked_in_window.inc();
                            }
                        } else {
                            live.fail("ack_repeated".into());
                        }
                    }
                    Decoded::Event { seq, header } => {
                        out.receiver.record(seq, header);
                        if let Some(h) = header
                            && h.sent_ns >= clock.measure_ns
                        {
                            let lat = mono_ns(now).saturating_sub(h.sent_ns) / 1000;
                            let locality = Locality::of(h.origin, me, pat.devices, instances);
                            delivery_samples.push(lat, locality, &live.delivery_latency);
                        }
                        live.delivered.inc();
                        if clock.in_window(now) {
                            live.delivered_in_window.inc();
                        }
                    }
                    Decoded::Refused { counter: c, label } => {
                        if let Some(c) = c
                            && let Some(i) = inflight.iter().position(|&(k, _)| k == c)
                        {
                            inflight.remove(i);
                        }
                        live.refused.inc();
                        live.fail(label);
                    }
                    Decoded::Other => {}
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
                    if let Err(f) = w.feed(counter, &payload).await {
                        return finish(out, &live, Some(f), ack_samples, delivery_samples);
                    }
                    inflight.push_back((counter, now));
                    counter += 1;
                    sent += 1;
                    next_due += interval;
                }
                if sent > 0 {
                    live.published.add(sent);
                    if let Err(f) = w.flush().await {
                        break Some(f);
                    }
                }
                sleep.as_mut().reset(next_due.into());
            }
        }
    };
    if end.is_none() {
        w.close().await;
    }
    finish(out, &live, end, ack_samples, delivery_samples)
}

fn finish(
    out: DeviceOut,
    live: &Live,
    failure: Option<Failure>,
    mut acks: Samples,
    mut deliveries: DeliverySamples,
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

/// The figures of one run of the pattern against one server (or cluster).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Outcome {
    pub(crate) server: &'static str,
    /// Instances the devices were spread over.
    pub(crate) instances: u32,
    published: u64,
    acked: u64,
    refused: u64,
    /// Publishes still without a reply when the drain time was up.
    unanswered: u64,
    delivered: u64,
    offered_per_sec: f64,
    /// Acks received in the measured window, per second of it.
    pub(crate) events_per_sec: f64,
    /// Deliveries received in the measured window, per second.
    pub(crate) deliveries_per_sec: f64,
    /// Publish→ack of the publishes sent in the measured window.
    pub(crate) ack_latency: Summary,
    /// Publish→delivery of the events published in the measured window.
    pub(crate) delivery_latency: Summary,
    /// The same, of deliveries to a device on the publisher's instance.
    pub(crate) delivery_same_instance: Summary,
    /// The same, of deliveries to a device on another instance.
    pub(crate) delivery_cross_instance: Summary,
    max_schedule_lag_us: u64,
    failures: Failures,
    sessions_lost: u64,
    check: CheckReport,
    /// Events stored (acked) of the publishes sent in the measured window: what
    /// the server CPU is divided by.
    pub(crate) measured_events: u64,
    /// Server CPU time (user + system) from the start of the measured window to
    /// the end of the drain, when it could be read.
    pub(crate) server_cpu_secs: Option<f64>,
    /// Server CPU per stored event, microseconds.
    pub(crate) server_cpu_us_per_event: Option<f64>,
    /// Bytes the server sent to storage (`write_bytes` of `/proc/<pid>/io`) over
    /// the same span as the CPU time, when it could be read.
    pub(crate) server_write_bytes: Option<u64>,
    /// Those bytes per stored event.
    pub(crate) server_write_bytes_per_event: Option<f64>,
}

impl Outcome {
    /// An empty outcome of `server` (tests fill in the figures).
    #[cfg(test)]
    pub(crate) fn named(server: &'static str) -> Self {
        Self {
            server,
            ..Self::default()
        }
    }

    /// The check passed and no publish or session failed.
    pub(crate) fn ok(&self) -> bool {
        self.check.ok()
            && self.failures.is_empty()
            && self.sessions_lost == 0
            && self.unanswered == 0
    }

    /// The human summary.
    pub(crate) fn text(&self) -> String {
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
        if self.instances > 1 {
            s += &format!(
                "    same instance  {}\n",
                self.delivery_same_instance.line()
            );
            s += &format!(
                "    cross instance {}\n",
                self.delivery_cross_instance.line()
            );
        }
        s += &format!(
            "  max schedule lag {}; failures: {}; sessions lost: {}\n",
            stats::ms(self.max_schedule_lag_us),
            common::failures_line(&self.failures),
            self.sessions_lost
        );
        if let (Some(cpu), Some(per)) = (self.server_cpu_secs, self.server_cpu_us_per_event) {
            s += &format!("  server CPU {cpu:.2} s = {per:.1} µs per stored event\n");
        }
        if let (Some(b), Some(per)) = (self.server_write_bytes, self.server_write_bytes_per_event) {
            s += &format!(
                "  server wrote {} to storage = {per:.0} B per stored event\n",
                stats::bytes(b)
            );
        }
        s += &format!("  check {}", self.check.line());
        if self.unanswered > 0 {
            s += "\n  (the drain time ran out: the check saw the run as it stood, with \
                  publishes still in flight)";
        }
        s
    }
}

/// Runs the pattern over already connected wires (indexed by global device, each
/// connected to its [`instance_of`] among `instances`).
pub(crate) async fn run_pattern<W: Wire>(
    server: &'static str,
    wires: Vec<W>,
    pat: &Pattern,
    instances: u32,
    probe: Option<ServerProbe>,
) -> Outcome {
    let total = wires.len() as u32;
    let pat = Arc::new(pat.clone());
    let live = Arc::new(Live::default());
    let start = Instant::now() + Duration::from_millis(200);
    let measure_start = start + pat.warmup;
    let clock = Arc::new(Clock {
        start,
        measure_start,
        measure_ns: mono_ns(measure_start),
        publish_end: measure_start + pat.duration,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks: Vec<_> = wires
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            tokio::spawn(run_device(
                w,
                Seat {
                    me: i as u32,
                    total,
                    instances,
                },
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
    tokio::time::sleep_until(clock.measure_start.into()).await;
    let before = match &probe {
        Some(p) => p.sample().await.ok(),
        None => None,
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
    let measured = live.acked_measured.get();
    let cpu = before.zip(after).map(|(b, a)| a.cpu_secs - b.cpu_secs);
    let written = before
        .zip(after)
        .and_then(|(b, a)| Some(a.write_bytes?.saturating_sub(b.write_bytes?)));
    Outcome {
        server,
        instances,
        published: live.published.get(),
        acked,
        refused: live.refused.get(),
        unanswered: live
            .published
            .get()
            .saturating_sub(acked + live.refused.get()),
        delivered: live.delivered.get(),
        offered_per_sec: stats::rate(live.published.get(), pat.warmup + pat.duration),
        events_per_sec: stats::rate(live.acked_in_window.get(), pat.duration),
        deliveries_per_sec: stats::rate(live.delivered_in_window.get(), pat.duration),
        ack_latency: live.ack_latency.summary(),
        delivery_latency: live.delivery_latency.all.summary(),
        delivery_same_instance: live.delivery_latency.same.summary(),
        delivery_cross_instance: live.delivery_latency.cross.summary(),
        max_schedule_lag_us: micros(max_lag),
        failures: live.failures.lock().expect("failures lock").clone(),
        sessions_lost: live.dead.get(),
        check,
        measured_events: measured,
        server_cpu_secs: cpu,
        server_cpu_us_per_event: cpu
            .and_then(|c| (measured > 0).then(|| c * 1e6 / measured as f64)),
        server_write_bytes: written,
        server_write_bytes_per_event: written
            .and_then(|w| (measured > 0).then(|| w as f64 / measured as f64)),
    }
}

/// Ferry's figures over another server's (the baseline's, a peer's).
#[derive(Debug, Serialize)]
pub(crate) struct Ratios {
    events_per_sec: Option<f64>,
    deliveries_per_sec: Option<f64>,
    ack_p50: Option<f64>,
    ack_p99: Option<f64>,
    delivery_p50: Option<f64>,
    pub(crate) delivery_p99: Option<f64>,
    delivery_p999: Option<f64>,
    delivery_max: Option<f64>,
    pub(crate) server_cpu_per_event: Option<f64>,
    /// Bytes written to storage per stored event (none when the other server
    /// wrote nothing, as the baseline does).
    pub(crate) write_bytes_per_event: Option<f64>,
}

impl Ratios {
    /// Ferry's outcome `f` over the other server's `b`.
    pub(crate) fn of(f: &Outcome, b: &Outcome) -> Self {
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
            write_bytes_per_event: f
                .server_write_bytes_per_event
                .zip(b.server_write_bytes_per_event)
                .and_then(|(a, b)| ratio(a, b)),
        }
    }

    /// One line: `ferry / <other>: events/s …`.
    pub(crate) fn text(&self, other: &str) -> String {
        format!(
            "ferry / {other}: events/s {}  deliveries/s {}  ack p50 {} p99 {}  \
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_go_round_robin_over_the_instances() {
        // 3 devices per user, 3 instances: user u's device d on (u + d) mod 3.
        let placed: Vec<u32> = (0..9).map(|i| instance_of(i, 3, 3)).collect();
        assert_eq!(placed, [0, 1, 2, 1, 2, 0, 2, 0, 1]);
        // Every user has devices on different instances, and every instance has
        // the same number of devices.
        for (users, devices, instances) in [(10, 2, 2), (10, 3, 3), (7, 4, 3), (5, 2, 3)] {
            let mut per_instance = vec![0u32; instances as usize];
            for u in 0..users {
                let on: Vec<u32> = (0..devices)
                    .map(|d| instance_of(u * devices + d, devices, instances))
                    .collect();
                assert!(on.iter().any(|&i| i != on[0]), "user {u}: {on:?}");
                for i in on {
                    per_instance[i as usize] += 1;
                }
            }
            let (min, max) = (
                per_instance.iter().min().unwrap(),
                per_instance.iter().max().unwrap(),
            );
            assert!(max - min <= 1 + users / instances, "{per_instance:?}");
        }
        // A single instance takes everyone.
        assert!((0..12).all(|i| instance_of(i, 4, 1) == 0));
        assert_eq!(instance_of(5, 3, 0), 0);
    }

    #[test]
    fn deliveries_split_into_same_and_cross_instance() {
        // 4 devices per user on 3 instances: slots 0 and 3 share an instance.
        assert_eq!(Locality::of(0, 3, 4, 3), Locality::Same);
        assert_eq!(Locality::of(3, 0, 4, 3), Locality::Same);
        assert_eq!(Locality::of(0, 1, 4, 3), Locality::Cross);
        assert_eq!(Locality::of(5, 6, 4, 3), Locality::Cross);
        assert_eq!(Locality::of(0, 1, 4, 1), Locality::Same);

        let into = DeliveryLatency::default();
        let mut a = DeliverySamples::default();
        let mut b = DeliverySamples::default();
        for origin in 1..4 {
            let l = Locality::of(origin, 0, 4, 3);
            a.push(100 * u64::from(origin), l, &into);
        }
        b.push(50, Locality::Cross, &into);
        a.flush(&into);
        b.flush(&into);
        let (all, same, cross) = (
            into.all.summary(),
            into.same.summary(),
            into.cross.summary(),
        );
        assert_eq!((all.count, same.count, cross.count), (4, 1, 3));
        assert_eq!(same.max_us, 300);
        assert_eq!((cross.p50_us, cross.max_us), (100, 200));
    }

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
