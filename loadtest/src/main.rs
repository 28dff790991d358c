//! `ferry-load`: load-test tooling for the Ferry relay.
//!
//! ```text
//! ferry-load keys      --users U --devices D [--out keys.json]
//! ferry-load serve-env                       # env block for a server under load
//! ferry-load handshake --rate R --duration D [--concurrency C] [--with-baseline]
//! ferry-load relay     --users U --devices D --rate R --payload P --duration D [--ttl S] [--with-baseline]
//!                      [--urls URL,URL,… --server-pid PID,PID,…]
//!                      [--with-peers jetstream,redis-streams [--idle-connections N] [--peer-dir DIR]
//!                       [--nats-server PATH] [--redis-server PATH]] [--skip-ferry]
//! ferry-load idle      --sessions N [--sources K] [--hold D] [--server-pid PID | --metrics-url URL]
//! ferry-load sync      --events N --payload P
//! ferry-load baseline  --mode echo|broadcast --port PORT
//! ferry-load crash     [--backend sqlite|postgres] [--cycles N] [--seed S]
//! ferry-load flood     [--max-connections N] [--max-per-ip N] [--hold D]
//! ferry-load retention [--backlog N] [--rate R] [--seconds T] [--database-url URL]
//! ferry-load backup    [--events N] [--rate R] [--seconds T] [--keep]
//! ferry-load steady    [--rate R] [--ttl S] [--minutes M] [--interval I] [--sample-every D]
//! ferry-load cluster   [--instances N] [--rounds R] [--users U --devices D --rate R] [--duration D]
//! ```
//!
//! Every scenario runs for a fixed duration or count, prints a progress line on
//! stderr once per second, a human summary at the end, and with `--json` one JSON
//! document on stdout. Traffic goes to 127.0.0.0/8 only. See `docs/benchmarks.md`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backup;
mod baseline;
mod check;
mod child;
mod cluster;
mod common;
mod crash;
mod durability;
mod fleet;
mod flood;
mod handshake;
mod idle;
mod keys;
mod net;
mod pattern;
mod peers;
mod phases;
mod progress;
mod relay;
mod retention;
mod serve_env;
mod stats;
mod steady;
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
    ServeEnv(serve_env::ServeEnvArgs),
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
    /// N kill -9 cycles of a `ferry serve` child under publishing: acked events durable?
    Crash(crash::CrashArgs),
    /// Idle, HTTP/2-preface and slowloris connections up to the caps; client latency quiet vs flooded.
    Flood(flood::FloodArgs),
    /// A purge of an expired backlog under constant publishing: publish→ack quiet vs purging, rows/s.
    Retention(retention::RetentionArgs),
    /// `ferry backup` and `ferry verify` of a large SQLite database: wall times, and publish→ack quiet vs backing up.
    #[command(long_about = backup::LONG_ABOUT)]
    Backup(backup::BackupArgs),
    /// Events with a ttl at a constant rate for minutes: does the SQLite file stop growing?
    Steady(steady::SteadyArgs),
    /// Three instances on PostgreSQL and Redis under relay load: rate limits shared in Redis vs per instance.
    #[command(long_about = cluster::LONG_ABOUT)]
    Cluster(cluster::ClusterArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_clock();
    let result = match cli.command {
        Command::Keys(args) => keys::run(&args).map(|()| true),
        Command::ServeEnv(args) => serve_env::run(&args).map(|()| true),
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
                        Command::Crash(a) => crash::run(&a).await,
                        Command::Flood(a) => flood::run(&a).await,
                        Command::Retention(a) => retention::run(&a).await,
                        Command::Backup(a) => backup::run(&a).await,
                        Command::Steady(a) => steady::run(&a).await,
                        Command::Cluster(a) => cluster::run(&a).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One b64u public key in 64 begins with `-`: `--server-key` must still take it
    /// (the documented commands pass `--server-key "$FERRYLOAD_SERVER_KEY"`).
    #[test]
    fn a_server_key_beginning_with_a_hyphen_is_a_value() {
        let key = "-bCdEfGhIjKlMnOpQrStUvWxYz0123456789_-AbCdEf";
        let cli = Cli::try_parse_from(["ferry-load", "relay", "--server-key", key, "--users", "3"])
            .expect("parses");
        match cli.command {
            Command::Relay(args) => assert_eq!(args.conn.server_key.as_deref(), Some(key)),
            other => panic!("not relay: {other:?}"),
        }
    }
}
