//! `ferry-load`: load-test tooling for the Ferry relay.
//!
//! ```text
//! ferry-load keys --users U --devices D [--out keys.json]
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod keys;

/// Load-test tooling for the Ferry relay.
#[derive(Debug, Parser)]
#[command(name = "ferry-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate user and device keys with device certificates (JSON, mode 0600).
    Keys(keys::KeysArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(args) => keys::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
