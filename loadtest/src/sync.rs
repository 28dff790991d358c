//! `ferry-load sync`: one device publishes a backlog of N events (pipelined), then
//! a fresh device of the same user catches up from 0 with `sync` pages of
//! `--limit` events, one page in flight at a time, as the SDK does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use serde::Serialize;
use serde_json::json;

use crate::check::{HEADER_LEN, Header};
use crate::common::{ConnArgs, ReportArgs, say};
use crate::net::{self, Failure, Lean, Opened, Session, Sources};
use crate::progress::{Counter, Delta, Progress, ServerProbe};
use crate::stats::{self, SharedHistogram, Summary};

/// Arguments of `ferry-load sync`.
#[derive(Debug, clap::Args)]
pub(crate) struct SyncArgs {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    #[command(flatten)]
    pub(crate) report: ReportArgs,
    /// Events in the backlog.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub(crate) events: u64,
    /// Payload bytes (at least 24).
    #[arg(long, default_value_t = 256)]
    pub(crate) payload: usize,
    /// Publishes in flight while building the backlog.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) window: u32,
    /// Events per `sync` page (1–1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) limit: u32,
    /// Time limit of each phase (publishing, catching up).
    #[arg(long, default_value = "10m", value_parser = stats::parse_duration)]
    pub(crate) max_time: Duration,
}

#[derive(Default)]
struct Live {
    published: Counter,
    acked: Counter,
    synced: Counter,
}

/// The figures of one run.
#[derive(Debug, Serialize)]
struct Outcome {
    published: u64,
    publish_secs: f64,
    publish_per_sec: f64,
    head: u64,
    synced: u64,
    pages: u64,
    sync_secs: f64,
    /// Events served per second while catching up.
    sync_events_per_sec: f64,
    /// Sealed bytes received per second while catching up.
    sync_mib_per_sec: f64,
    page_latency: Summary,
    contiguous: bool,
    ours: u64,
    server_cpu_secs_sync: Option<f64>,
}

async fn publish_backlog(s: &mut Session, args: &SyncArgs, live: &Live) -> Result<(), Failure> {
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id[..8]);
    let mut payload = vec![0x5Au8; args.payload];
    let (mut sent, mut done, mut inflight) = (0u64, 0u64, 0u32);
    while done < args.events {
        while inflight < args.window && sent < args.events {
            Header {
                origin: 0,
                counter: sent,
                sent_ns: 0,
            }
            .write(&mut payload);
            id[8..16].copy_from_slice(&sent.to_be_bytes());
            s.feed(net::publish_json(sent, &id, &payload)).await?;
            sent += 1;
            inflight += 1;
        }
        live.published.add(sent - live.published.get());
        s.flush().await?;
        let msg = match s.ws.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(net::ws_failure(e)),
            None => return Err(Failure::Transport("eof")),
        };
        let Opened::Plain(plain) = s.open(msg)? else {
            continue;
        };
        let m: Lean<'_> =
            serde_json::from_slice(&plain).map_err(|_| Failure::Protocol("unreadable"))?;
        match m.ty {
            "ack" => {
                inflight -= 1;
                done += 1;
                live.acked.inc();
            }
            "error" | "conflict" => {
                eprintln!("publish refused: {}", m.code.unwrap_or(m.ty));
                return Err(Failure::Protocol("publish_refused"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs `ferry-load sync`; `Ok(false)` when the catch-up was not complete and in order.
pub(crate) async fn run(args: &SyncArgs) -> anyhow::Result<bool> {
    if args.payload < HEADER_LEN {
        bail!("--payload must be at least {HEADER_LEN} bytes");
    }
    let target = net::Target::parse(&args.conn.url)?;
    let pin = net::pin(args.conn.server_key.as_deref())?;
    let sources = Arc::new(Sources::new(args.conn.sources.unwrap_or(0))?);
    let probe = ServerProbe::from_args(&args.report.server_pid, args.report.metrics_url.as_deref());
    let json = args.report.json;
    let user = net::identities(args.conn.keys.as_deref(), 1, 1)?
        .into_iter()
        .next()
        .context("no user")?;
    let timeout = args.conn.connect_timeout;
    say(
        json,
        &format!(
            "sync: backlog of {} events of {} B, then a fresh device catches up in pages of {}",
            args.events, args.payload, args.limit
        ),
    );
    let live = Arc::new(Live::default());

    // Phase 1: the backlog.
    let mut publisher = net::connect(
        &target,
        sources.pick(),
        user.devices[0].clone(),
        pin,
        timeout,
    )
    .await
    .map_err(|f| anyhow::anyhow!("publisher: {f}"))?;
    let head_before = publisher.head;
    let t0 = Instant::now();
    let progress = {
        let live = live.clone();
        let (mut p, mut a) = (Delta::default(), Delta::default());
        Progress::start("publish", t0, move |t| {
            format!(
                "pub {:>7.0}/s  ack {:>7.0}/s  acked {}",
                p.per_sec(live.published.get(), t),
                a.per_sec(live.acked.get(), t),
                live.acked.get()
            )
        })
    };
    let r = tokio::time::timeout(args.max_time, publish_backlog(&mut publisher, args, &live)).await;
    progress.stop().await;
    let publish_secs = t0.elapsed().as_secs_f64();
    match r {
        Err(_) => bail!("the backlog was not stored within --max-time"),
        Ok(Err(f)) => bail!("publishing failed: {f}"),
        Ok(Ok(())) => {}
    }
    publisher.close().await;
    say(
        json,
        &format!(
            "stored {} events in {publish_secs:.1} s ({:.0}/s)",
            args.events,
            args.events as f64 / publish_secs
        ),
    );

    // Phase 2: a fresh device catches up from 0.
    let mut reader = net::connect(
        &target,
        sources.pick(),
        net::fresh_device(&user.user),
        pin,
        timeout,
    )
    .await
    .map_err(|f| anyhow::anyhow!("fresh device: {f}"))?;
    let page_latency = SharedHistogram::default();
    let cpu_before = match &probe {
        Some(p) => p.sample().await.ok(),
        None => None,
    };
    let t1 = Instant::now();
    let progress = {
        let live = live.clone();
        let mut d = Delta::default();
        Progress::start("sync", t1, move |t| {
            format!(
                "served {:>7.0}/s  total {}",
                d.per_sec(live.synced.get(), t),
                live.synced.get()
            )
        })
    };
    let catch_up = async {
        let (mut after, mut pages, mut bytes, mut ours) = (0u64, 0u64, 0u64, 0u64);
        let mut contiguous = true;
        let mut head = 0;
        loop {
            pages += 1;
            let rid = pages as i64;
            let req = format!(
                "{{\"type\":\"sync\",\"rid\":{rid},\"after\":{after},\"limit\":{}}}",
                args.limit
            );
            let sent = Instant::now();
            let plain = reader.request(req.into_bytes(), rid).await?;
            page_latency.record(sent.elapsed());
            bytes += plain.len() as u64;
            let m: Lean<'_> =
                serde_json::from_slice(&plain).map_err(|_| Failure::Protocol("unreadable"))?;
            if m.ty != "events" {
                return Err(Failure::Protocol("sync_refused"));
            }
            head = m.head.unwrap_or(head);
            for e in &m.events {
                let seq = e.seq.unwrap_or(0);
                if seq != after + 1 {
                    contiguous = false;
                }
                after = after.max(seq);
                if Header::read_b64u(e.payload).is_some() {
                    ours += 1;
                }
            }
            live.synced.add(m.events.len() as u64);
            if !m.more || m.events.is_empty() {
                return Ok((after, head, pages, bytes, ours, contiguous));
            }
        }
    };
    let r = tokio::time::timeout(args.max_time, catch_up).await;
    let sync_secs = t1.elapsed().as_secs_f64();
    progress.stop().await;
    let cpu_after = match &probe {
        Some(p) => p.sample().await.ok(),
        None => None,
    };
    let (last, head, pages, bytes, ours, contiguous) = match r {
        Err(_) => bail!("the catch-up did not finish within --max-time"),
        Ok(Err(f)) => bail!("catching up failed: {f}"),
        Ok(Ok(v)) => v,
    };
    reader.close().await;
    let synced = live.synced.get();
    let o = Outcome {
        published: args.events,
        publish_secs,
        publish_per_sec: args.events as f64 / publish_secs,
        head,
        synced,
        pages,
        sync_secs,
        sync_events_per_sec: synced as f64 / sync_secs,
        sync_mib_per_sec: bytes as f64 / 1_048_576.0 / sync_secs,
        page_latency: page_latency.summary(),
        contiguous,
        ours,
        server_cpu_secs_sync: cpu_before
            .zip(cpu_after)
            .map(|(b, a)| a.cpu_secs - b.cpu_secs),
    };
    let ok = contiguous && synced == head && last == head && head >= head_before + args.events;
    say(
        json,
        &format!(
            "caught up {synced} events (head {head}) in {pages} pages, {sync_secs:.2} s: \
             {:.0} events/s served, {:.1} MiB/s of plaintext\n  page latency {}\n  \
             check {}: seqs 1..={head} contiguous: {contiguous}, this run's events: {ours}{}",
            o.sync_events_per_sec,
            o.sync_mib_per_sec,
            o.page_latency.line(),
            if ok { "PASS" } else { "FAIL" },
            o.server_cpu_secs_sync
                .map(|c| format!("\n  server CPU while serving: {c:.2} s"))
                .unwrap_or_default()
        ),
    );
    if json {
        let doc = json!({ "scenario": "sync", "limit": args.limit, "payload": args.payload, "result": o, "ok": ok });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(ok)
}
