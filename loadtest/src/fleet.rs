//! A fleet of U users × D devices, connected once, that publishes in phases:
//! either a fixed number of events as fast as each device's window allows, or a
//! constant total rate until it is told to stop. Each phase measures publish→ack
//! (HDR) and counts what was published, acked, refused and left unanswered. The
//! `retention`, `steady` and `backup` scenarios drive it.
//!
//! One task per device and phase owns the socket: it reads acks (and the user's
//! other devices' events, which it only counts) and publishes when due, with at
//! most `window` publishes waiting for their ack. A device keeps its publish
//! counter across phases, so event ids never repeat and a late ack of an earlier
//! phase is recognised as such.
//!
//! On request ([`Fleet::track_deliveries`]) every device also logs the `seq` of
//! each of its acks and every event it receives, across phases, so that after a
//! final [`Fleet::settle`] the relay's exactly-once, in-order check
//! ([`crate::check`]) runs over the whole run ([`Fleet::delivery_check`]). It costs
//! about 8 bytes per publish and per delivery, so it is off by default.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt as _;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::check::{self, CheckReport, Header, PublisherLog, ReceiverLog};
use crate::common::{self, mono_ns};
use crate::net::{self, Failure, Failures, Lean, Opened, Session, Sources, Target};
use crate::progress::{Counter, Delta, Progress};
use crate::stats::{self, Samples, SharedHistogram, Summary};

/// Handshakes in flight while the fleet connects.
const CONNECT_CONCURRENCY: usize = 64;
/// Time limit of one device's connect and handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// One connected device and what it keeps across phases.
struct Device {
    session: Session,
    /// Global index: user `u`, slot `s` is `u × devices + s`.
    index: u32,
    /// Event id, shaped like a UUIDv7: 48-bit Unix ms (stamped per publish), 2
    /// random bytes of the run, the device, the counter.
    id: [u8; 16],
    /// The next publish's counter (also its `rid`).
    counter: u64,
    payload: Vec<u8>,
    /// Its acks and deliveries, when the fleet tracks them.
    logs: Option<Box<Logs>>,
}

/// One device's log for the exactly-once, in-order check.
struct Logs {
    /// The `seq` each of its publishes was acked with.
    acked: PublisherLog,
    /// The events of its user's other devices it received.
    received: ReceiverLog,
}

/// The connected devices, between phases.
/// The fleet's shape as the scenarios that start their own server take it
/// (`retention`, `steady`, `backup`): users, devices, payload and window.
#[derive(Clone, Copy, Debug, clap::Args)]
pub(crate) struct FleetShape {
    /// Users.
    #[arg(long, default_value_t = 333, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) users: u32,
    /// Devices per user (each publishes and receives the others' events).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) devices: u32,
    /// Payload bytes (at least 24).
    #[arg(long, default_value_t = 256)]
    pub(crate) payload: usize,
    /// Publishes in flight per device (sent, not yet acked).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) window: u32,
}

pub(crate) struct Fleet {
    devices: Vec<Device>,
    window: usize,
    /// Devices per user.
    per_user: u32,
    /// Devices connected at the start.
    total: u32,
}

impl Fleet {
    /// Connects `users` × `devices` fresh identities to the server at `ws_url`
    /// whose public key is `server_key` (b64u); every publish carries `payload`
    /// bytes and at most `window` publishes per device wait for their ack.
    pub(crate) async fn connect(
        ws_url: &str,
        server_key: &str,
        users: u32,
        devices: u32,
        payload: usize,
        window: u32,
        json: bool,
    ) -> anyhow::Result<Self> {
        let started = std::time::Instant::now();
        if payload < crate::check::HEADER_LEN {
            bail!(
                "--payload must be at least {} bytes",
                crate::check::HEADER_LEN
            );
        }
        let devices_per_user = devices;
        let total = users * devices;
        let limit = net::raise_fd_limit();
        if u64::from(total) + 64 > limit {
            bail!("{total} sessions need more open files than the limit ({limit})");
        }
        let target = Target::parse(ws_url)?;
        let pin = net::pin(Some(server_key))?;
        let sources = Arc::new(Sources::new(0)?);
        let creds: Vec<_> = net::identities(None, users, devices)?
            .into_iter()
            .flat_map(|u| u.devices)
            .collect();
        let sessions = common::connect_all(
            "connect",
            &target,
            &sources,
            pin,
            creds,
            CONNECT_CONCURRENCY,
            CONNECT_TIMEOUT,
        )
        .await
        .map_err(|f| {
            anyhow::anyhow!(
                "{} of {total} sessions failed to connect: {}",
                f.values().sum::<u64>(),
                common::failures_line(&f)
            )
        })?;
        let mut run = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut run[6..8]);
        run[6] = 0x70 | (run[6] & 0x0f);
        let devices = sessions
            .into_iter()
            .enumerate()
            .map(|(i, session)| {
                let mut id = run;
                id[8..12].copy_from_slice(&(i as u32).to_be_bytes());
                Device {
                    session,
                    index: i as u32,
                    id,
                    counter: 0,
                    payload: (0..payload).map(|k| (k * 31 + i) as u8).collect(),
                    logs: None,
                }
            })
            .collect();
        common::say(
            json,
            &format!(
                "connected {total} sessions in {:.1} s",
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(Self {
            devices,
            window: window.max(1) as usize,
            per_user: devices_per_user,
            total,
        })
    }

    /// From now on every device logs its acks and the events it receives, for
    /// [`Self::delivery_check`]. Call it before the first phase.
    pub(crate) fn track_deliveries(&mut self) {
        for d in &mut self.devices {
            d.logs.get_or_insert_with(|| {
                Box::new(Logs {
                    acked: PublisherLog::default(),
                    received: ReceiverLog::new(d.index, self.per_user),
                })
            });
        }
    }

    /// Between phases: every device reads what reached it until nothing more came
    /// for `quiet`, at most `max` in all (the events of the last publishes reach
    /// the other devices after their acks). Devices whose session fails are
    /// dropped; the count of those is returned.
    pub(crate) async fn settle(&mut self, quiet: Duration, max: Duration) -> u64 {
        let end = Instant::now() + max;
        let devices = std::mem::take(&mut self.devices);
        let tasks: Vec<_> = devices
            .into_iter()
            .map(|dev| tokio::spawn(settle_device(dev, quiet, end)))
            .collect();
        let mut lost = 0;
        for t in futures_util::future::join_all(tasks).await {
            match t {
                Ok(Some(dev)) => self.devices.push(dev),
                Ok(None) | Err(_) => lost += 1,
            }
        }
        self.devices.sort_by_key(|d| d.index);
        lost
    }

    /// The exactly-once, in-order check over everything since
    /// [`Self::track_deliveries`]: `None` when it was not called. A device lost on
    /// the way counts with no acks and no deliveries (its user's check fails).
    pub(crate) fn delivery_check(&self) -> Option<CheckReport> {
        let mut publishers = vec![PublisherLog::default(); self.total as usize];
        let mut receivers = Vec::with_capacity(self.devices.len());
        for d in &self.devices {
            let logs = d.logs.as_deref()?;
            if let Some(p) = publishers.get_mut(d.index as usize) {
                p.clone_from(&logs.acked);
            }
            receivers.push(logs.received.clone());
        }
        Some(check::check(&publishers, &receivers))
    }

    /// Starts a phase: every device publishes by `pace`, each event with `ttl`.
    pub(crate) fn start(&mut self, label: &'static str, pace: Pace, ttl: Option<u32>) -> Phase {
        let devices = std::mem::take(&mut self.devices);
        let n = devices.len().max(1) as u64;
        let live = Arc::new(Live::default());
        let (publishing_tx, publishing) = watch::channel(true);
        let (stop_tx, stop) = watch::channel(false);
        // A moment for every task to be spawned before the first publish is due.
        let start = Instant::now() + Duration::from_millis(200);
        let tasks = devices
            .into_iter()
            .enumerate()
            .map(|(i, dev)| {
                let i = i as u64;
                let schedule = match pace {
                    Pace::Count(total) => Schedule::Count {
                        count: total / n + u64::from(i < total % n),
                        first: start,
                    },
                    Pace::Rate(per_sec) => {
                        let interval = Duration::from_secs_f64(n as f64 / per_sec);
                        Schedule::Every {
                            interval,
                            first: start + interval.mul_f64(i as f64 / n as f64),
                        }
                    }
                };
                tokio::spawn(run_device(DeviceRun {
                    dev,
                    schedule,
                    ttl,
                    window: self.window,
                    live: live.clone(),
                    publishing: publishing.clone(),
                    stop: stop.clone(),
                }))
            })
            .collect();
        let progress = {
            let live = live.clone();
            let (mut p, mut a) = (Delta::default(), Delta::default());
            Progress::start(label, start, move |t| {
                format!(
                    "pub {:>7.0}/s  ack {:>7.0}/s  published {:>8}  in flight {:>6}  refused {}  lost sessions {}",
                    p.per_sec(live.published.get(), t),
                    a.per_sec(live.acked.get(), t),
                    live.published.get(),
                    live.in_flight(),
                    live.refused.get(),
                    live.dead.get()
                )
            })
        };
        Phase {
            label,
            devices: n as u32,
            ttl,
            pace,
            live,
            publishing: publishing_tx,
            stop: stop_tx,
            tasks,
            start,
            stopped_at: None,
            progress,
        }
    }

    /// Closes every session (bounded in time).
    pub(crate) async fn close(self) {
        futures_util::stream::iter(self.devices)
            .for_each_concurrent(256, |d| d.session.close())
            .await;
    }
}

/// How a phase publishes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pace {
    /// This many events over the fleet, each device as fast as its window allows;
    /// the phase ends when all are answered.
    Count(u64),
    /// This many events per second over the fleet, spread evenly over the devices
    /// and over time, until [`Phase::stop_publishing`].
    Rate(f64),
}

/// One device's share of a [`Pace`].
#[derive(Clone, Copy, Debug)]
enum Schedule {
    /// `count` publishes from `first` on, as fast as the window allows.
    Count { count: u64, first: Instant },
    /// One publish every `interval`, the first at `first`.
    Every { interval: Duration, first: Instant },
}

/// Counters and histograms the device tasks of one phase share.
#[derive(Default)]
pub(crate) struct Live {
    pub(crate) published: Counter,
    pub(crate) acked: Counter,
    refused: Counter,
    delivered: Counter,
    late_acks: Counter,
    dead: Counter,
    ack_latency: SharedHistogram,
    marked_latency: SharedHistogram,
    marked: AtomicBool,
    failures: Mutex<Failures>,
}

impl Live {
    /// Publishes sent from now on (until `false`) also count in the phase's
    /// marked histogram: the publishes sent while something else happened.
    pub(crate) fn mark(&self, on: bool) {
        self.marked.store(on, Ordering::Release);
    }

    /// Publishes sent and not answered yet.
    pub(crate) fn in_flight(&self) -> u64 {
        self.published
            .get()
            .saturating_sub(self.acked.get() + self.refused.get())
    }

    fn fail(&self, label: String) {
        net::count_failure(&self.failures, label);
    }
}

/// A running phase.
pub(crate) struct Phase {
    label: &'static str,
    devices: u32,
    ttl: Option<u32>,
    pace: Pace,
    live: Arc<Live>,
    publishing: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<(Option<Device>, Duration)>>,
    start: Instant,
    stopped_at: Option<Instant>,
    progress: Progress,
}

impl Phase {
    /// The phase's shared counters.
    pub(crate) fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// When the first publish was due: time zero of the phase.
    pub(crate) fn started(&self) -> Instant {
        self.start
    }

    /// Stops publishing (a [`Pace::Rate`] phase publishes until this).
    pub(crate) fn stop_publishing(&mut self) {
        if self.stopped_at.is_none() {
            self.stopped_at = Some(Instant::now());
        }
        let _ = self.publishing.send(false);
    }

    /// Ends the phase: publishing stops (a [`Pace::Count`] phase first publishes
    /// its count), the devices wait for their last answers, at most `drain` in
    /// all, and go back to the fleet; then the phase's figures.
    pub(crate) async fn finish(mut self, fleet: &mut Fleet, drain: Duration) -> Outcome {
        if matches!(self.pace, Pace::Rate(_)) {
            self.stop_publishing();
        }
        let mut all = std::pin::pin!(futures_util::future::join_all(self.tasks));
        let joined = tokio::select! {
            r = &mut all => r,
            () = tokio::time::sleep(drain) => {
                let _ = self.stop.send(true);
                all.await
            }
        };
        let ended = Instant::now();
        let mut max_lag = Duration::ZERO;
        for r in joined {
            match r {
                Ok((dev, lag)) => {
                    max_lag = max_lag.max(lag);
                    fleet.devices.extend(dev);
                }
                Err(_) => {
                    self.live.dead.inc();
                    self.live.fail("task_panicked".into());
                }
            }
        }
        fleet.devices.sort_by_key(|d| d.index);
        self.progress.stop().await;
        let live = &self.live;
        let secs = self
            .stopped_at
            .unwrap_or(ended)
            .saturating_duration_since(self.start);
        let acked = live.acked.get();
        Outcome {
            phase: self.label,
            devices: self.devices,
            ttl: self.ttl,
            secs: secs.as_secs_f64(),
            published: live.published.get(),
            acked,
            refused: live.refused.get(),
            unanswered: live.in_flight(),
            acked_per_sec: stats::rate(acked, secs),
            delivered: live.delivered.get(),
            late_acks: live.late_acks.get(),
            ack_latency: live.ack_latency.summary(),
            marked_latency: live.marked_latency.summary(),
            max_schedule_lag_us: micros(max_lag),
            sessions_lost: live.dead.get(),
            failures: live.failures.lock().expect("failures lock").clone(),
        }
    }
}

/// The figures of one phase.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Outcome {
    pub(crate) phase: &'static str,
    /// Devices that took part.
    pub(crate) devices: u32,
    pub(crate) ttl: Option<u32>,
    /// From the first publish due to the end of publishing (a count: to the last
    /// answer).
    pub(crate) secs: f64,
    pub(crate) published: u64,
    pub(crate) acked: u64,
    /// Publishes answered with an error, a conflict or a duplicate ack.
    pub(crate) refused: u64,
    /// Publishes without an answer at the end of the drain (or on a lost session).
    pub(crate) unanswered: u64,
    pub(crate) acked_per_sec: f64,
    /// Events of the user's other devices received.
    pub(crate) delivered: u64,
    /// Acks of an earlier phase's publishes.
    pub(crate) late_acks: u64,
    pub(crate) ack_latency: Summary,
    /// publish→ack of the publishes sent while [`Live::mark`] was on.
    pub(crate) marked_latency: Summary,
    pub(crate) max_schedule_lag_us: u64,
    pub(crate) sessions_lost: u64,
    pub(crate) failures: Failures,
}

impl Outcome {
    /// Publishes that were not stored: refused or unanswered.
    pub(crate) fn lost(&self) -> u64 {
        self.refused + self.unanswered
    }

    /// Every publish acked, no session lost.
    pub(crate) fn ok(&self) -> bool {
        self.lost() == 0 && self.sessions_lost == 0 && self.failures.is_empty()
    }

    /// One line for humans.
    pub(crate) fn line(&self) -> String {
        format!(
            "{}: {} devices, {:.1} s, published {}, acked {} ({:.0}/s), refused {}, unanswered {}, \
             sessions lost {}, failures {}; max schedule lag {}\n  publish→ack {}",
            self.phase,
            self.devices,
            self.secs,
            self.published,
            self.acked,
            self.acked_per_sec,
            self.refused,
            self.unanswered,
            self.sessions_lost,
            common::failures_line(&self.failures),
            stats::ms(self.max_schedule_lag_us),
            self.ack_latency.line()
        )
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Everything one device task needs.
struct DeviceRun {
    dev: Device,
    schedule: Schedule,
    ttl: Option<u32>,
    window: usize,
    live: Arc<Live>,
    publishing: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
}

/// Publishes by the schedule and reads answers until publishing is over and every
/// publish is answered, or the hard stop; hands the device back (`None`: its
/// session failed) with its largest schedule lag.
async fn run_device(run: DeviceRun) -> (Option<Device>, Duration) {
    let DeviceRun {
        mut dev,
        schedule,
        ttl,
        window,
        live,
        mut publishing,
        mut stop,
    } = run;
    // (counter, sent, marked)
    let mut inflight: VecDeque<(u64, Instant, bool)> = VecDeque::with_capacity(window);
    let mut acks = Samples::default();
    let mut marked = Samples::default();
    let mut open = true;
    let (mut budget, mut next_due) = match schedule {
        Schedule::Count { count, first } => (count, first),
        Schedule::Every { first, .. } => (u64::MAX, first),
    };
    let mut max_lag = Duration::ZERO;
    let sleep = tokio::time::sleep_until(next_due.into());
    tokio::pin!(sleep);
    let failure = loop {
        let more = open && budget > 0;
        if !more && inflight.is_empty() {
            break None;
        }
        let can_publish = more && inflight.len() < window;
        tokio::select! {
            biased;
            _ = stop.changed() => break None,
            r = publishing.changed(), if open => {
                if r.is_err() || !*publishing.borrow() {
                    open = false;
                }
            }
            msg = dev.session.ws.next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => break Some(net::ws_failure(e)),
                    None => break Some(Failure::Transport("eof")),
                };
                if let Err(f) = on_message(&mut dev.session, msg, &mut inflight, &live, &mut acks, &mut marked, dev.logs.as_deref_mut()) {
                    break Some(f);
                }
            }
            () = &mut sleep, if can_publish => {
                let now = Instant::now();
                let mut sent = 0;
                while budget > 0 && inflight.len() < window && next_due <= now {
                    max_lag = max_lag.max(now - next_due);
                    Header { origin: dev.index, counter: dev.counter, sent_ns: mono_ns(now) }
                        .write(&mut dev.payload);
                    let ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    dev.id[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
                    dev.id[12..16].copy_from_slice(&(dev.counter as u32).to_be_bytes());
                    let json = net::publish_json_ttl(dev.counter, &dev.id, &dev.payload, ttl);
                    if let Err(f) = dev.session.feed(json).await {
                        live.published.add(sent);
                        return end(None, &live, Some(f), max_lag, acks, marked);
                    }
                    inflight.push_back((dev.counter, now, live.marked.load(Ordering::Acquire)));
                    dev.counter += 1;
                    sent += 1;
                    if budget != u64::MAX {
                        budget -= 1;
                    }
                    match schedule {
                        Schedule::Count { .. } => next_due = now,
                        Schedule::Every { interval, .. } => next_due += interval,
                    }
                }
                if sent > 0 {
                    live.published.add(sent);
                    if let Err(f) = dev.session.flush().await {
                        break Some(f);
                    }
                }
                sleep.as_mut().reset(next_due.into());
            }
        }
    };
    match failure {
        None => end(Some(dev), &live, None, max_lag, acks, marked),
        Some(f) => end(None, &live, Some(f), max_lag, acks, marked),
    }
}

/// Handles one received message: an ack, an event of another device, a refusal.
fn on_message(
    session: &mut Session,
    msg: tokio_tungstenite::tungstenite::Message,
    inflight: &mut VecDeque<(u64, Instant, bool)>,
    live: &Live,
    acks: &mut Samples,
    marked: &mut Samples,
    logs: Option<&mut Logs>,
) -> Result<(), Failure> {
    let Opened::Plain(plain) = session.open(msg)? else {
        return Ok(());
    };
    let m: Lean<'_> =
        serde_json::from_slice(&plain).map_err(|_| Failure::Protocol("unreadable"))?;
    let counter = m.rid.and_then(|r| u64::try_from(r).ok());
    let waiting = counter.and_then(|c| inflight.iter().position(|&(k, _, _)| k == c));
    if let Some(logs) = logs {
        match m.ty {
            "event" => logs
                .received
                .record(m.seq.unwrap_or(0), m.payload.and_then(Header::read_b64u)),
            // A late ack is an event stored all the same.
            "ack" if !m.duplicate => {
                if let (Some(c), Some(seq)) = (counter, m.seq) {
                    logs.acked.ack(c, seq);
                }
            }
            _ => {}
        }
    }
    match m.ty {
        "event" => live.delivered.inc(),
        "ack" if !m.duplicate => match waiting {
            Some(i) => {
                let (_, sent, was_marked) = inflight.remove(i).expect("present");
                let us = micros(sent.elapsed());
                acks.push(us, &live.ack_latency);
                if was_marked {
                    marked.push(us, &live.marked_latency);
                }
                live.acked.inc();
            }
            None => live.late_acks.inc(),
        },
        "ack" | "error" | "conflict" => {
            if let Some(i) = waiting {
                inflight.remove(i);
                live.refused.inc();
            }
            let label = match m.ty {
                "ack" => "ack_duplicate".to_string(),
                "error" => format!("error_{}", m.code.unwrap_or("unknown")),
                _ => "conflict".to_string(),
            };
            live.fail(label);
        }
        _ => {}
    }
    Ok(())
}

/// Reads one device's messages until none came for `quiet`, or `end`; `None`
/// when its session failed.
async fn settle_device(mut dev: Device, quiet: Duration, end: Instant) -> Option<Device> {
    let live = Live::default();
    let mut inflight = VecDeque::new();
    let (mut acks, mut marked) = (Samples::default(), Samples::default());
    loop {
        let until = (Instant::now() + quiet).min(end);
        let msg = match tokio::time::timeout_at(until.into(), dev.session.ws.next()).await {
            Err(_) => return Some(dev),
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(_)) | None) => return None,
        };
        let logs = dev.logs.as_deref_mut();
        if on_message(
            &mut dev.session,
            msg,
            &mut inflight,
            &live,
            &mut acks,
            &mut marked,
            logs,
        )
        .is_err()
        {
            return None;
        }
    }
}

fn end(
    dev: Option<Device>,
    live: &Live,
    failure: Option<Failure>,
    max_lag: Duration,
    mut acks: Samples,
    mut marked: Samples,
) -> (Option<Device>, Duration) {
    acks.flush(&live.ack_latency);
    marked.flush(&live.marked_latency);
    if let Some(f) = failure {
        live.dead.inc();
        live.fail(format!("session_{}", f.label()));
    }
    (dev, max_lag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_counts_refused_and_unanswered_as_lost() {
        let mut o = Outcome {
            phase: "quiet",
            devices: 3,
            ttl: None,
            secs: 1.0,
            published: 10,
            acked: 10,
            refused: 0,
            unanswered: 0,
            acked_per_sec: 10.0,
            delivered: 20,
            late_acks: 0,
            ack_latency: Summary::default(),
            marked_latency: Summary::default(),
            max_schedule_lag_us: 0,
            sessions_lost: 0,
            failures: Failures::new(),
        };
        assert!(o.ok());
        o.unanswered = 2;
        o.refused = 1;
        assert_eq!(o.lost(), 3);
        assert!(!o.ok());
        assert!(o.line().starts_with("quiet: 3 devices"));
    }

    #[test]
    fn live_marks_and_in_flight() {
        let live = Live::default();
        live.published.add(5);
        live.acked.add(3);
        live.refused.inc();
        assert_eq!(live.in_flight(), 1);
        live.mark(true);
        assert!(live.marked.load(Ordering::Acquire));
        live.mark(false);
        assert!(!live.marked.load(Ordering::Acquire));
    }
}
