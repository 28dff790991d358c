//! `ferry-load`: load-test tooling for the Ferry relay.
//!
//! ```text
//! ferry-load keys      --users U --devices D [--out keys.json]
//! ferry-load serve-env                       # env block for a server under load
//! ferry-load handshake --rate R --duration D [--concurrency C] [--with-baseline]
//! ferry-load relay     --users U --devices D --rate R --payload P --duration D [--with-baseline]
//! ferry-load idle      --sessions N [--sources K] [--hold D] [--server-pid PID | --metrics-url URL]
//! ferry-load sync      --events N --payload P
//! ferry-load baseline  --mode echo|broadcast --port PORT
//! ```
//!
//! Every scenario runs for a fixed duration or count, prints a progress line on
//! stderr once per second, a human summary at the end, and with `--json` one JSON
//! document on stdout. Traffic goes to 127.0.0.0/8 only. See `docs/benchmarks.md`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod baseline;
mod check;
mod common;
mod handshake;
mod idle;
mod keys;
mod net;
mod progress;
mod relay;
mod stats;
mod sync;

/// Load-test tooling for the Ferry relay.
#[derive(Debug, Parser)]
#[command(name = "ferry-load", version, about)]
struct Cli {
    /// Worker threads of the generator's runtime (default: the CPUs this process
    /// may run on, so `taskset -c 1 ferry-load …` gives one).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate user and device keys with device certificates (JSON, mode 0600).
    Keys(keys::KeysArgs),
    /// Print the environment for a Ferry server under load (limits lifted, a server key).
    ServeEnv(ServeEnvArgs),
    /// A storm of new sessions at a target rate: handshakes/s, latency, failures.
    Handshake(handshake::HandshakeArgs),
    /// U×D devices publishing with pipelining: throughput, latency, exactly-once check.
    Relay(relay::RelayArgs),
    /// N idle authenticated sessions: the server's memory per session.
    Idle(idle::IdleArgs),
    /// A backlog of N events, then a fresh device catches up: events/s served.
    Sync(sync::SyncArgs),
    /// A raw WebSocket server (echo or group broadcast) to compare against.
    Baseline(baseline::BaselineArgs),
}

/// Arguments of `ferry-load serve-env`.
#[derive(Debug, clap::Args)]
struct ServeEnvArgs {
    /// The server key seed (b64u, 32 bytes); default: a fresh random one. Keep it
    /// across runs to keep the pinned public key.
    #[arg(long)]
    seed: Option<String>,
}

/// The limits a load test lifts (name, value, why).
const LOAD_LIMITS: &[(&str, &str, &str)] = &[
    (
        "FERRY_LIMITS_EVENTS_PER_SEC",
        "1000000",
        "publishes per second per device",
    ),
    ("FERRY_LIMITS_BURST", "10000000", "publish burst per device"),
    (
        "FERRY_LIMITS_HANDSHAKES_PER_IP_PER_SEC",
        "100000",
        "all handshakes come from a few loopback addresses",
    ),
    (
        "FERRY_LIMITS_MAX_CONNECTIONS_PER_IP",
        "100000",
        "so do all connections",
    ),
    (
        "FERRY_LIMITS_MAX_CONNECTIONS",
        "100000",
        "idle holds ~19,000 sessions",
    ),
    (
        "FERRY_LIMITS_OUTBOUND_QUEUE",
        "65536",
        "queued messages per session before 4009",
    ),
];

fn serve_env(args: &ServeEnvArgs) -> anyhow::Result<()> {
    let seed: [u8; 32] = match &args.seed {
        Some(s) => ferry_proto::b64u::decode_array(s.trim())
            .map_err(|_| anyhow::anyhow!("--seed must be b64u of 32 bytes"))?,
        None => {
            let mut s = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut s);
            s
        }
    };
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    println!(
        "# Ferry server under load test (from `ferry-load serve-env`): eval \"$(ferry-load serve-env)\""
    );
    for (name, value, why) in LOAD_LIMITS {
        println!("export {name}={value}  # {why}");
    }
    println!(
        "export FERRY_SERVER_KEY={}  # throwaway key; pin with --server-key {}",
        ferry_proto::b64u::encode(&seed),
        ferry_proto::b64u::encode(public.as_bytes())
    );
    println!(
        "export FERRYLOAD_SERVER_KEY={}",
        ferry_proto::b64u::encode(public.as_bytes())
    );
    println!(
        "# also: export FERRY_DATA_DIR=\"$(mktemp -d)\"; for idle, ulimit -n ≥ sessions + 100"
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_clock();
    let result = match cli.command {
        Command::Keys(args) => keys::run(&args).map(|()| true),
        Command::ServeEnv(args) => serve_env(&args).map(|()| true),
        command => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.enable_all();
            if let Some(n) = cli.threads {
                rt.worker_threads(n.max(1));
            }
            match rt.build() {
                Err(e) => Err(e.into()),
                Ok(rt) => rt.block_on(async move {
                    match command {
                        Command::Handshake(a) => handshake::run(&a).await,
                        Command::Relay(a) => relay::run(&a).await,
                        Command::Idle(a) => idle::run(&a).await,
                        Command::Sync(a) => sync::run(&a).await,
                        Command::Baseline(a) => baseline::run(&a).await.map(|()| true),
                        Command::Keys(_) | Command::ServeEnv(_) => unreachable!("handled above"),
                    }
                }),
            }
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("FAILED: see the check and failures above");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
