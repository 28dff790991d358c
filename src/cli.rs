//! The `ferry` command line.
//!
//! ```text
//! ferry serve [--config PATH]
//! ferry keygen [--out PATH] [--force]
//! ferry config check [--config PATH]
//! ferry config example
//! ferry migrate status | up [--to N] | down --to N  [--config PATH]
//! ferry admin key-hash [--name NAME] [--scope read|write] [--stdin]
//! ferry retention run [--dry-run]
//! ferry backup --to PATH
//! ferry restore --from PATH [--force]
//! ferry verify [--database-url URL]
//! ```
//!
//! Exit codes: 0 success, 1 failure at run time, 2 invalid configuration or usage.
//! Configuration errors are printed one per line as `error: <setting>: <problem>
//! (<ENV_VAR>)`.

use std::ffi::OsString;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};
use crate::keys::{self, ServerKey};

/// Exit code for an invalid configuration (the same as clap's usage errors).
pub const EXIT_CONFIG: u8 = 2;

/// Exit code for a failure at run time.
pub const EXIT_FAILURE: u8 = 1;

/// What `src/main.rs` calls: parses `std::env::args_os()` and runs the command.
pub fn main_entry() -> ExitCode {
    run(std::env::args_os())
}

/// Parses `args` (the first one is the program name) and runs the command, reading
/// `FERRY_*` settings from the process environment.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Prints help and version to stdout, usage errors to stderr.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_CONFIG));
        }
    };
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Keygen(args) => keygen(&args),
        Command::Config(ConfigCommand::Check(args)) => config_check(&args),
        Command::Config(ConfigCommand::Example) => {
            print_stdout(&config::example());
            ExitCode::SUCCESS
        }
        Command::Migrate(args) => migrate(&args),
        Command::Retention(RetentionCommand::Run(args)) => retention_run(&args),
        Command::Admin(AdminCommand::KeyHash(args)) => admin_key_hash(&args),
        Command::Backup(args) => backup(&args),
        Command::Restore(args) => restore(&args),
        Command::Verify(args) => verify(&args),
    }
}

/// Ferry: a relay server for end-to-end-encrypted device sync.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay server.
    Serve(ConfigArg),
    /// Generate a new server identity key file.
    Keygen(KeygenArgs),
    /// Check the configuration or print the example.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect or apply database migrations.
    Migrate(MigrateArgs),
    /// The retention job, on demand.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Admin API helpers.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Back up the configured database to a new file, while a server may run on it
    /// (SQLite: a verified snapshot; PostgreSQL: pg_dump's custom format).
    Backup(BackupArgs),
    /// Restore a backup into the configured database (verified first; refused
    /// while a server runs on a SQLite target, or into a PostgreSQL database that
    /// is not empty unless --force).
    Restore(RestoreArgs),
    /// Check a database (the configured one, or --database-url, which may name a
    /// SQLite backup file): exit 0 when sound, 1 with each problem named.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct BackupArgs {
    /// The backup file to write (it must not exist).
    #[arg(long, value_name = "PATH")]
    to: PathBuf,
    /// Configuration file (TOML). Without it: built-in defaults and FERRY_* variables.
    #[arg(long, short = 'c', value_name = "PATH", env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RestoreArgs {
    /// The backup file to restore.
    #[arg(long, value_name = "PATH")]
    from: PathBuf,
    /// PostgreSQL: replace what the target database holds.
    #[arg(long)]
    force: bool,
    /// Configuration file (TOML). Without it: built-in defaults and FERRY_* variables.
    #[arg(long, short = 'c', value_name = "PATH", env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The database to check (default: the configured one), e.g.
    /// sqlite:///var/backups/ferry/ferry-20261207.db
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Configuration file (TOML). Without it: built-in defaults and FERRY_* variables.
    #[arg(long, short = 'c', value_name = "PATH", env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum RetentionCommand {
    /// Run one retention pass now against the configured database, with the
    /// configured policies ([retention]), and print what each policy deleted.
    Run(RetentionRunArgs),
}

#[derive(Debug, Args)]
struct RetentionRunArgs {
    /// Count what each policy would delete; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Configuration file (TOML). Without it: built-in defaults and FERRY_* variables.
    #[arg(long, short = 'c', value_name = "PATH", env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Make an admin API key (or hash one read from stdin) and print the
    /// `[[admin.keys]]` entry for the configuration. The key is printed once.
    KeyHash(KeyHashArgs),
}

#[derive(Debug, Args)]
struct KeyHashArgs {
    /// The key's name in the configuration (shown in logs, never the key).
    #[arg(long, default_value = "admin")]
    name: String,
    /// `read` (GET endpoints) or `write` (everything).
    #[arg(long, default_value = "write", value_parser = ["read", "write"])]
    scope: String,
    /// Read the key from stdin (one line) instead of generating one.
    #[arg(long)]
    stdin: bool,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// Configuration file (TOML). Without it: built-in defaults and FERRY_* variables.
    #[arg(long, short = 'c', value_name = "PATH", env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Where to write the key file (created with mode 0600).
    #[arg(long, value_name = "PATH", default_value = "./ferry-data/server.key")]
    out: PathBuf,
    /// Replace an existing key file. Clients that pinned the old public key will no
    /// longer connect.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print it with secrets redacted.
    Check(ConfigArg),
    /// Print the example configuration (every setting with its default).
    Example,
}

#[derive(Debug, Args)]
struct MigrateArgs {
    #[command(subcommand)]
    action: MigrateAction,
    /// Configuration file (TOML). Without it: built-in defaults and FERRY_* variables.
    #[arg(
        long,
        short = 'c',
        value_name = "PATH",
        env = "FERRY_CONFIG",
        global = true
    )]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Show applied and pending migrations.
    Status,
    /// Apply pending migrations, all or up to version N.
    Up {
        /// Stop after this version.
        #[arg(long, value_name = "N")]
        to: Option<u32>,
    },
    /// Revert migrations down to version N (N stays applied).
    Down {
        /// The version to end at.
        #[arg(long, value_name = "N")]
        to: u32,
    },
}

fn serve(args: &ConfigArg) -> ExitCode {
    let (config, runtime) = match config_and_runtime(args.config.clone()) {
        Ok(both) => both,
        Err(code) => return code,
    };
    match runtime.block_on(crate::server::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format_args!("{e:#}")),
    }
}

fn keygen(args: &KeygenArgs) -> ExitCode {
    let key = ServerKey::generate(&mut rand::rngs::OsRng);
    if let Err(e) = keys::write_key_file(&args.out, &key, args.force) {
        return match e.kind() {
            io::ErrorKind::AlreadyExists => fail(format_args!("{e}")),
            _ => fail(format_args!("cannot write {}: {e}", args.out.display())),
        };
    }
    print_stdout(&format!(
        "wrote a new server key to {} (mode 0600)\npublic key: {}\n",
        args.out.display(),
        key.public_b64u()
    ));
    ExitCode::SUCCESS
}

fn admin_key_hash(args: &KeyHashArgs) -> ExitCode {
    let name_ok = !args.name.is_empty()
        && args.name.len() <= 64
        && args
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        let _ = writeln!(
            io::stderr().lock(),
            "error: --name must be 1 to 64 characters of A-Z a-z 0-9 - _ ."
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let (key, generated) = if args.stdin {
        let mut line = String::new();
        if let Err(e) = io::stdin().read_line(&mut line) {
            return fail(format_args!("cannot read stdin: {e}"));
        }
        let key = line.trim_end_matches(['\r', '\n']).to_string();
        if key.is_empty() || key.len() > crate::auth::admin_keys::MAX_KEY_LEN {
            return fail(format_args!(
                "the key must be 1 to {} bytes",
                crate::auth::admin_keys::MAX_KEY_LEN
            ));
        }
        (key, false)
    } else {
        (crate::auth::random_b64u::<32>(), true)
    };
    let hash = crate::auth::admin_keys::hash_hex(&key);
    let mut text = String::new();
    if generated {
        text.push_str(&format!(
            "key:    {key}\n        (shown once: keep it in a secret store; only its hash goes into the configuration)\n"
        ));
    }
    text.push_str(&format!(
        "sha256: {hash}\n\n[[admin.keys]]\nname = \"{name}\"\nscope = \"{scope}\"\nsha256 = \"{hash}\"\n\n\
         # or in the environment:\n# FERRY_ADMIN_KEYS=\"{name}:{scope}:{hash}\"\n",
        name = args.name,
        scope = args.scope,
    ));
    print_stdout(&text);
    ExitCode::SUCCESS
}

fn config_check(args: &ConfigArg) -> ExitCode {
    match load_config(args.config.clone()) {
        Ok(config) => {
            print_stdout(&format!(
                "# configuration is valid; effective values, secrets redacted\n{}",
                config.to_redacted_toml()
            ));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn migrate(args: &MigrateArgs) -> ExitCode {
    let (config, runtime) = match config_and_runtime(args.config.clone()) {
        Ok(both) => both,
        Err(code) => return code,
    };
    crate::telemetry::init(config.log.format);
    let url = config.database.url.as_str();
    let result: Result<String, String> = runtime.block_on(async {
        match args.action {
            MigrateAction::Status => crate::store::migrate_status(url)
                .await
                .map(|status| status.to_string()),
            MigrateAction::Up { to } => crate::store::migrate_up(url, to)
                .await
                .map(|applied| versions_line("applied", &applied)),
            MigrateAction::Down { to } => crate::store::migrate_down(url, to)
                .await
                .map(|reverted| versions_line("reverted", &reverted)),
        }
        .map_err(|e| e.to_string())
    });
    match result {
        Ok(text) => {
            print_stdout(&format!("{}\n", text.trim_end()));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format_args!(
            "migrate ({}): {e}",
            config.database.redacted_url()
        )),
    }
}

fn retention_run(args: &RetentionRunArgs) -> ExitCode {
    use crate::relay::retention::{self, Policy, Reason, Standalone};
    use std::io::IsTerminal as _;

    let (config, runtime) = match config_and_runtime(args.config.clone()) {
        Ok(both) => both,
        Err(code) => return code,
    };
    crate::telemetry::init(config.log.format);
    let opts = crate::store::StoreOptions {
        max_connections: 2,
        connect_timeout: config.database.connect_timeout,
        // A maintenance command never changes the schema.
        migrate: crate::store::MigrateMode::VerifyOnly,
        checkpoint_interval: config.database.checkpoint_interval,
    };
    let policy = Policy::from_config(&config.retention);
    let dry_run = args.dry_run;
    // On a terminal, one status line on stderr, rewritten after every transaction.
    let terminal = io::stderr().is_terminal();
    let mut progress = move |reason: Reason, rows: u64| {
        if terminal {
            let verb = if dry_run { "counted" } else { "deleted" };
            let _ = write!(
                io::stderr().lock(),
                "\r\x1b[2K{}: {rows} rows {verb}",
                reason.as_str()
            );
        }
    };
    let result = runtime.block_on(async {
        let store = crate::store::connect(&config.database.url, &opts)
            .await
            .map_err(|e| e.to_string())?;
        let now = crate::clock::system().unix_ms();
        retention::run_pass(
            store.as_ref(),
            &policy,
            now,
            dry_run,
            &Standalone,
            &mut progress,
        )
        .await
        .map_err(|f| format!("{} (after {} rows)", f.error, f.partial.deleted.total()))
    });
    if terminal {
        let _ = write!(io::stderr().lock(), "\r\x1b[2K");
    }
    match result {
        Ok(report) if report.skipped => fail(format_args!(
            "another retention run holds the lock ({}); nothing was done",
            config.database.redacted_url()
        )),
        Ok(report) => {
            let mut text = format!(
                "retention {}: {} rows {} in {:.2} s\n",
                if dry_run { "dry run" } else { "run" },
                report.deleted.total(),
                if dry_run {
                    "would be deleted"
                } else {
                    "deleted"
                },
                report.duration.as_secs_f64()
            );
            for reason in Reason::ALL {
                text.push_str(&format!(
                    "  {:<16} {:>12}\n",
                    reason.as_str(),
                    report.deleted.get(reason)
                ));
            }
            print_stdout(&text);
            ExitCode::SUCCESS
        }
        Err(e) => fail(format_args!(
            "retention ({}): {e}",
            config.database.redacted_url()
        )),
    }
}

fn versions_line(verb: &str, versions: &[u32]) -> String {
    if versions.is_empty() {
        return format!("nothing {verb}: already at the requested version");
    }
    let list: Vec<String> = versions.iter().map(u32::to_string).collect();
    format!("{verb} migrations: {}", list.join(", "))
}

/// Loads and validates; on failure prints every issue and returns exit code 2.
/// A progress line on stderr when it is a terminal; nothing otherwise.
fn terminal_progress() -> (bool, impl FnMut(&str) + Send) {
    use std::io::IsTerminal as _;
    let terminal = io::stderr().is_terminal();
    (terminal, move |text: &str| {
        if terminal {
            crate::backup::status_line(text);
        }
    })
}

fn summary_line(s: &crate::store::verify::Summary) -> String {
    let heads = s
        .heads
        .map_or("no users".to_string(), |(l, h)| format!("heads {l}–{h}"));
    format!(
        "{} users, {} devices, {} events, {heads}",
        s.users, s.devices, s.events
    )
}

fn backup(args: &BackupArgs) -> ExitCode {
    let (config, runtime) = match config_and_runtime(args.config.clone()) {
        Ok(both) => both,
        Err(code) => return code,
    };
    let (terminal, mut progress) = terminal_progress();
    let result = runtime.block_on(crate::backup::backup(
        &config.database.url,
        &args.to,
        &mut progress,
    ));
    if terminal {
        crate::backup::status_line("");
    }
    match result {
        Ok(w) => {
            print_stdout(&format!(
                "backup of {} written to {} ({} bytes) in {:.2} s: {}\n",
                config.database.redacted_url(),
                w.path.display(),
                w.bytes,
                w.took.as_secs_f64(),
                summary_line(&w.summary)
            ));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format_args!("backup failed: {e}")),
    }
}

fn restore(args: &RestoreArgs) -> ExitCode {
    let (config, runtime) = match config_and_runtime(args.config.clone()) {
        Ok(both) => both,
        Err(code) => return code,
    };
    let (terminal, mut progress) = terminal_progress();
    let result = runtime.block_on(crate::backup::restore(
        &config.database.url,
        &args.from,
        args.force,
        &mut progress,
    ));
    if terminal {
        crate::backup::status_line("");
    }
    match result {
        Ok(r) => {
            let kept = r
                .kept
                .map(|k| format!("; the replaced database is kept as {}", k.display()))
                .unwrap_or_default();
            print_stdout(&format!(
                "restored {} into {}: {}{kept}\n",
                args.from.display(),
                r.target,
                summary_line(&r.summary)
            ));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format_args!("restore refused or failed: {e}")),
    }
}

fn verify(args: &VerifyArgs) -> ExitCode {
    let url = match &args.database_url {
        Some(url) => url.clone(),
        None => match load_config(args.config.clone()) {
            Ok(config) => config.database.url.clone(),
            Err(code) => return code,
        },
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let total = crate::store::Backend::from_url(&url)
        .map(crate::store::verify::check_count)
        .unwrap_or(0);
    let (terminal, mut line) = terminal_progress();
    let mut n = 0;
    let mut progress = move |check: &str| {
        n += 1;
        line(&format!("check {n}/{total}: {check}"));
    };
    let result = runtime.block_on(crate::backup::verify(&url, &mut progress));
    if terminal {
        crate::backup::status_line("");
    }
    let shown = crate::config::redact_db_url(&url);
    match result {
        Ok(report) => {
            let mut text = format!(
                "{shown}: {} checks; {}; {} bytes\n",
                report.checks,
                summary_line(&report.summary),
                report.summary.bytes
            );
            for f in &report.findings {
                text.push_str(&format!("damage: {}: {}\n", f.check, f.detail));
            }
            if report.is_sound() {
                text.push_str("sound\n");
                print_stdout(&text);
                ExitCode::SUCCESS
            } else {
                text.push_str(&format!("{} problems found\n", report.findings.len()));
                print_stdout(&text);
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Err(e) => fail(format_args!("cannot verify {shown}: {e}")),
    }
}

fn load_config(file: Option<PathBuf>) -> Result<Config, ExitCode> {
    Config::from_process_env(file.as_deref()).map_err(|e| {
        let mut stderr = io::stderr().lock();
        for issue in &e.issues {
            let _ = writeln!(stderr, "error: {issue}");
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

/// The configuration and an async runtime: what a command on the database needs.
fn config_and_runtime(
    file: Option<PathBuf>,
) -> Result<(Config, tokio::runtime::Runtime), ExitCode> {
    Ok((load_config(file)?, runtime()?))
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format_args!("cannot start the async runtime: {e}")))
}

fn fail(message: std::fmt::Arguments<'_>) -> ExitCode {
    let _ = writeln!(io::stderr().lock(), "error: {message}");
    ExitCode::from(EXIT_FAILURE)
}

/// Writes to stdout, ignoring a closed pipe (`ferry config example | head`).
fn print_stdout(text: &str) {
    let mut stdout = io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_forms() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.command);
        assert!(matches!(parse(&["ferry", "serve"]), Ok(Command::Serve(_))));
        assert!(matches!(
            parse(&["ferry", "keygen", "--out", "k", "--force"]),
            Ok(Command::Keygen(KeygenArgs { force: true, .. }))
        ));
        assert!(matches!(
            parse(&["ferry", "config", "check", "--config", "f.toml"]),
            Ok(Command::Config(ConfigCommand::Check(ConfigArg {
                config: Some(_)
            })))
        ));
        assert!(matches!(
            parse(&["ferry", "migrate", "up", "--to", "3", "--config", "f.toml"]),
            Ok(Command::Migrate(MigrateArgs {
                action: MigrateAction::Up { to: Some(3) },
                config: Some(_)
            }))
        ));
        assert!(matches!(
            parse(&[
                "ferry", "migrate", "--config", "f.toml", "down", "--to", "1"
            ]),
            Ok(Command::Migrate(MigrateArgs {
                action: MigrateAction::Down { to: 1 },
                ..
            }))
        ));
        assert!(parse(&["ferry", "migrate", "down"]).is_err());
    }
}
