//! `ferry-client …`: a command-line sync client for trying a server out, built on
//! the SDK in this crate (`ferry_client`).
//!
//! ```text
//! ferry-client init --server URL [--server-key B64U] [--join] [--force]
//! ferry-client link --device-key B64U [--expires-days N]
//! ferry-client accept --cert BLOB|-
//! ferry-client publish [--key K] [--base N] [--ttl S] [--ephemeral] [--to DEVICE]… [--id UUID] TEXT|-
//! ferry-client tail [--after N]
//! ferry-client sync [--after N] [--limit N]
//! ferry-client devices
//! ferry-client revoke DEVICE
//! ferry-client token [--json]
//! ferry-client show
//! ```
//!
//! Every command takes `--profile DIR` (default `./ferry-client`). The server key is
//! pinned on first use and saved in the profile.
//!
//! Exit codes: 0 success, 1 failure at run time, 2 invalid usage.

use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use ferry_client::{
    Client, ClientOptions, DeviceKey, Event, LinkGrant, Profile, PublishOptions, tls_config,
    write_private,
};
use ferry_proto::b64u;
use serde::{Deserialize, Serialize};

/// Exit code for invalid usage (the same as clap's usage errors).
const EXIT_CONFIG: u8 = 2;

/// Exit code for a failure at run time.
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let args = match ClientArgs::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // Prints help and version to stdout, usage errors to stderr.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_CONFIG));
        }
    };
    run(&args)
}

const PROFILE_FILE: &str = "profile.json";
const PENDING_FILE: &str = "pending-device.json";

const CLIENT_HELP: &str = "\
Starting out (a new user whose first device is this one):
  ferry-client init --server ws://127.0.0.1:8080/v1/ws
  ferry-client publish 'hello'
  ferry-client sync

Linking another device to the same user:
  1. on the new device:          ferry-client init --join --server URL --profile DIR
                                 (prints the new device's key)
  2. on a device that holds      ferry-client link --device-key KEY
     the user key:               (prints a certificate blob on one line)
  3. on the new device:          ferry-client accept --cert BLOB --profile DIR
The blob holds only public values (the certificate, the server URL and the pinned
server key), so any channel you can see both ends of will do.

The server key is pinned the first time a profile connects (unless given with
--server-key) and checked on every connection after that.

Payloads are published exactly as given: this tool is for trying a server out.
Real applications encrypt payloads end to end before they publish them.";

/// A command-line sync client for trying a Ferry server out.
#[derive(Debug, Parser)]
#[command(
    name = "ferry-client",
    version,
    propagate_version = true,
    after_long_help = CLIENT_HELP
)]
struct ClientArgs {
    #[command(subcommand)]
    command: ClientCommand,
    /// Profile directory (holds profile.json, mode 0600).
    #[arg(
        long,
        short = 'p',
        value_name = "DIR",
        default_value = "./ferry-client",
        env = "FERRY_CLIENT_PROFILE",
        global = true
    )]
    profile: PathBuf,
    /// PEM file with the root certificates to trust for a wss:// server (none are
    /// built in).
    #[arg(long, value_name = "PATH", env = "FERRY_CLIENT_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Create a profile: a new user key, this device's key and its certificate.
    /// With --join: only a device key, to be linked to an existing user (see
    /// `ferry-client --help`).
    Init(InitArgs),
    /// On a device that holds the user key: certify a new device's key and print the
    /// certificate blob for it.
    Link(LinkArgs),
    /// On a new device, after `init --join`: store the certificate blob from `link`.
    Accept {
        /// The blob `ferry-client link` printed, or `-` to read it from stdin.
        #[arg(long, value_name = "BLOB", allow_hyphen_values = true)]
        cert: String,
    },
    /// Publish one event. The payload is sent as given; real applications encrypt it
    /// end to end first.
    Publish(PublishArgs),
    /// Print events as they arrive, one line each: seq, device (short), payload
    /// (UTF-8 when printable, else `b64u:` and base64url).
    Tail {
        /// Start after this seq (default: the newest, i.e. live only).
        #[arg(long, value_name = "N")]
        after: Option<u64>,
    },
    /// Print the stored events after a seq, in the format of `tail`, and exit.
    Sync {
        /// Events with a larger seq.
        #[arg(long, value_name = "N", default_value_t = 0)]
        after: u64,
        /// Page size, 1–1000.
        #[arg(long, value_name = "N", default_value_t = 500)]
        limit: u32,
    },
    /// List the user's devices.
    Devices,
    /// Revoke a device of the user (needs the user key): its sessions close and it
    /// can no longer connect.
    Revoke {
        /// The device key (b64u), or a unique prefix of it.
        #[arg(allow_hyphen_values = true)]
        device: String,
    },
    /// Print a REST API access token for this device (asked for over the
    /// WebSocket with the `token` message): `curl -H "Authorization: Bearer
    /// $(ferry-client token)" …`. With --json: the access token, its expiry and the
    /// refresh token.
    Token {
        /// Print `{"access_token","expires_at","refresh_token"}` instead.
        #[arg(long)]
        json: bool,
    },
    /// Show the profile: user, device, server and pinned server key.
    Show,
}

#[derive(Debug, Args)]
struct InitArgs {
    /// The server's WebSocket URL.
    #[arg(long, value_name = "URL")]
    server: String,
    /// Pin this server key (b64u) instead of trusting the first one seen.
    #[arg(long, value_name = "B64U", allow_hyphen_values = true)]
    server_key: Option<String>,
    /// Only create a device key, to be linked to an existing user with `link` and
    /// `accept`.
    #[arg(long)]
    join: bool,
    /// Replace an existing profile (its keys are lost).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct LinkArgs {
    /// The new device's key, as `init --join` printed it.
    #[arg(long, value_name = "B64U", allow_hyphen_values = true)]
    device_key: String,
    /// Let the certificate expire after this many days (default: never).
    #[arg(long, value_name = "DAYS")]
    expires_days: Option<u64>,
}

#[derive(Debug, Args)]
struct PublishArgs {
    /// The payload, or `-` to read it from stdin.
    payload: String,
    /// Key (UTF-8, 1–64 bytes) for compare-and-set with --base.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Store only if the newest event with --key has this seq (0: none).
    #[arg(long, value_name = "N", requires = "key")]
    base: Option<u64>,
    /// Time to live, seconds.
    #[arg(long, value_name = "SECS")]
    ttl: Option<u64>,
    /// Relay to the devices online now; never stored.
    #[arg(long, conflicts_with_all = ["key", "ttl"])]
    ephemeral: bool,
    /// With --ephemeral: only to this device (b64u); repeatable.
    #[arg(
        long,
        value_name = "DEVICE",
        requires = "ephemeral",
        allow_hyphen_values = true
    )]
    to: Vec<String>,
    /// Event id (lowercase UUID); default: a fresh one. Publishing an id again
    /// returns the original ack, marked duplicate.
    #[arg(long, value_name = "UUID")]
    id: Option<String>,
}

/// The state between `init --join` and `accept`.
#[derive(Serialize, Deserialize)]
struct Pending {
    server_url: String,
    server_key: Option<String>,
    device_secret: String,
}

/// A failure: exit code and message.
struct Failure(u8, String);

type Outcome = Result<(), Failure>;

fn fail(message: impl std::fmt::Display) -> Failure {
    Failure(EXIT_FAILURE, message.to_string())
}

fn usage(message: impl std::fmt::Display) -> Failure {
    Failure(EXIT_CONFIG, message.to_string())
}

/// Runs `ferry-client …`.
pub(crate) fn run(args: &ClientArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(fail(format_args!("cannot start the async runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        match &args.command {
            ClientCommand::Init(a) => init(args, a),
            ClientCommand::Link(a) => link(args, a),
            ClientCommand::Accept { cert } => accept(args, cert),
            ClientCommand::Show => show(args),
            ClientCommand::Publish(a) => publish(args, a).await,
            ClientCommand::Tail { after } => tail(args, *after).await,
            ClientCommand::Sync { after, limit } => sync(args, *after, *limit).await,
            ClientCommand::Devices => devices(args).await,
            ClientCommand::Revoke { device } => revoke(args, device).await,
            ClientCommand::Token { json } => token(args, *json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(f),
    }
}

fn report(f: Failure) -> ExitCode {
    let _ = writeln!(io::stderr().lock(), "error: {}", f.1);
    ExitCode::from(f.0)
}

fn out(line: &str) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

fn note(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn profile_path(args: &ClientArgs) -> PathBuf {
    args.profile.join(PROFILE_FILE)
}

fn pending_path(args: &ClientArgs) -> PathBuf {
    args.profile.join(PENDING_FILE)
}

fn key32(text: &str, what: &str) -> Result<[u8; 32], Failure> {
    b64u::decode_array::<32>(text.trim()).map_err(|_| {
        usage(format_args!(
            "{what} must be b64u of 32 bytes (43 characters)"
        ))
    })
}

fn check_url(url: &str) -> Outcome {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("ws://") || lower.starts_with("wss://") {
        Ok(())
    } else {
        Err(usage(format_args!(
            "--server must be a ws:// or wss:// URL, like ws://127.0.0.1:8080/v1/ws"
        )))
    }
}

fn create_dir(dir: &Path) -> Outcome {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| fail(format_args!("cannot create {}: {e}", dir.display())))
}

fn load_profile(args: &ClientArgs) -> Result<Profile, Failure> {
    let path = profile_path(args);
    match Profile::load(&path) {
        Ok(p) => Ok(p),
        Err(ferry_client::ClientError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
            let hint = if pending_path(args).exists() {
                "this device waits for its certificate: run `ferry-client accept --cert BLOB`"
            } else {
                "run `ferry-client init --server URL` first"
            };
            Err(fail(format_args!(
                "no profile at {}; {hint}",
                path.display()
            )))
        }
        Err(e) => Err(fail(format_args!("cannot read {}: {e}", path.display()))),
    }
}

fn save_profile(args: &ClientArgs, profile: &Profile) -> Outcome {
    let path = profile_path(args);
    profile
        .save(&path)
        .map_err(|e| fail(format_args!("cannot write {}: {e}", path.display())))
}

fn init(args: &ClientArgs, a: &InitArgs) -> Outcome {
    check_url(&a.server)?;
    let server_key = a
        .server_key
        .as_deref()
        .map(|k| key32(k, "--server-key"))
        .transpose()?;
    let path = profile_path(args);
    if path.exists() && !a.force {
        return Err(fail(format_args!(
            "{} exists; pass --force to replace it (its keys are lost)",
            path.display()
        )));
    }
    create_dir(&args.profile)?;
    if a.join {
        let device = DeviceKey::generate();
        let pending = Pending {
            server_url: a.server.clone(),
            server_key: server_key.as_ref().map(|k| b64u::encode(k)),
            device_secret: b64u::encode(&device.seed()),
        };
        let json = serde_json::to_vec_pretty(&pending).expect("pending serializes");
        let pending_file = pending_path(args);
        write_private(&pending_file, &json)
            .map_err(|e| fail(format_args!("cannot write {}: {e}", pending_file.display())))?;
        out(&device.public_b64u());
        note(&format!(
            "created a device key in {dir}.\n\
             On a device that holds the user key, run:\n    \
             ferry-client link --device-key {key}\n\
             then here:\n    \
             ferry-client accept --profile {dir} --cert BLOB",
            dir = args.profile.display(),
            key = device.public_b64u()
        ));
        return Ok(());
    }
    let profile = Profile::create(a.server.clone(), server_key);
    save_profile(args, &profile)?;
    let _ = std::fs::remove_file(pending_path(args));
    note(&format!(
        "created a new user and this device in {} (mode 0600; it holds the user key)",
        path.display()
    ));
    print_identity(&profile);
    Ok(())
}

fn print_identity(profile: &Profile) {
    out(&format!(
        "user:       {}",
        b64u::encode(&profile.user_public)
    ));
    out(&format!(
        "device:     {}",
        b64u::encode(&profile.device_public())
    ));
    out(&format!("server:     {}", profile.server_url));
    out(&format!(
        "server key: {}",
        profile
            .server_key
            .as_ref()
            .map_or_else(|| "(pinned on first use)".into(), |k| b64u::encode(k))
    ));
    out(&format!(
        "user key:   {}",
        if profile.user_secret.is_some() {
            "held by this device"
        } else {
            "not on this device"
        }
    ));
}

fn show(args: &ClientArgs) -> Outcome {
    print_identity(&load_profile(args)?);
    Ok(())
}

fn link(args: &ClientArgs, a: &LinkArgs) -> Outcome {
    let profile = load_profile(args)?;
    let user = profile.user_key().ok_or_else(|| {
        fail("this device does not hold the user key; run `link` on the device that does")
    })?;
    let device = key32(&a.device_key, "--device-key")?;
    let issued_at = now_secs();
    let expires_at = match a.expires_days {
        None | Some(0) => 0,
        Some(days) => issued_at.saturating_add(days.saturating_mul(86_400)),
    };
    let grant = user.link(
        &device,
        issued_at,
        expires_at,
        Some(profile.server_url.clone()),
        profile.server_key,
    );
    out(&grant.encode());
    note("on the new device, run: ferry-client accept --cert BLOB  (BLOB is the line above)");
    Ok(())
}

fn accept(args: &ClientArgs, cert: &str) -> Outcome {
    let pending_file = pending_path(args);
    let text = std::fs::read_to_string(&pending_file).map_err(|e| {
        fail(format_args!(
            "cannot read {}: {e}; run `ferry-client init --join --server URL` first",
            pending_file.display()
        ))
    })?;
    let pending: Pending = serde_json::from_str(&text)
        .map_err(|e| fail(format_args!("{} is malformed: {e}", pending_file.display())))?;
    let device = DeviceKey::from_seed(&key32(&pending.device_secret, "device_secret")?);
    let server_key = pending
        .server_key
        .as_deref()
        .map(|k| key32(k, "server_key"))
        .transpose()?;
    let blob = if cert == "-" {
        let mut s = String::new();
        io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| fail(format_args!("cannot read stdin: {e}")))?;
        s
    } else {
        cert.to_owned()
    };
    let grant = LinkGrant::decode(&blob).map_err(usage)?;
    let profile =
        Profile::join(pending.server_url.clone(), server_key, &device, &grant).map_err(usage)?;
    save_profile(args, &profile)?;
    let _ = std::fs::remove_file(&pending_file);
    note(&format!(
        "linked: this device now acts for the user; profile in {}",
        profile_path(args).display()
    ));
    print_identity(&profile);
    Ok(())
}

async fn connect(args: &ClientArgs) -> Result<(Client, Profile), Failure> {
    let mut profile = load_profile(args)?;
    let mut opts = ClientOptions::from_profile(&profile);
    opts.retry_deadline = Duration::from_secs(30);
    if let Some(ca) = &args.ca_file {
        opts.tls = Some(load_roots(ca)?);
    }
    let client = Client::connect(opts).await.map_err(|e| {
        fail(format_args!(
            "cannot connect to {}: {e}",
            profile.server_url
        ))
    })?;
    if profile.server_key.is_none() {
        profile.server_key = Some(client.server_key());
        save_profile(args, &profile)?;
        note(&format!(
            "pinned the server key {} (trust on first use)",
            b64u::encode(&client.server_key())
        ));
    }
    Ok((client, profile))
}

fn load_roots(path: &Path) -> Result<Arc<rustls::ClientConfig>, Failure> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let bytes = std::fs::read(path)
        .map_err(|e| fail(format_args!("cannot read {}: {e}", path.display())))?;
    let roots = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| usage(format_args!("{} is not valid PEM: {e}", path.display())))?;
    if roots.is_empty() {
        return Err(usage(format_args!(
            "{} contains no PEM CERTIFICATE block",
            path.display()
        )));
    }
    tls_config(roots).map_err(usage)
}

async fn publish(args: &ClientArgs, a: &PublishArgs) -> Outcome {
    let payload = if a.payload == "-" {
        let mut buf = Vec::new();
        io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| fail(format_args!("cannot read stdin: {e}")))?;
        buf
    } else {
        a.payload.clone().into_bytes()
    };
    let to = if a.to.is_empty() {
        None
    } else {
        Some(
            a.to.iter()
                .map(|d| key32(d, "--to"))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    let opts = PublishOptions {
        id: a.id.clone(),
        key: a.key.as_ref().map(|k| k.clone().into_bytes()),
        base: a.base,
        ttl: a.ttl,
        ephemeral: a.ephemeral,
        to,
    };
    let (client, _) = connect(args).await?;
    note("note: the payload is sent as given; real applications encrypt it end to end first");
    let result = client.publish(payload, opts).await;
    client.close().await;
    let ack = result.map_err(|e| fail(format_args!("publish failed: {e}")))?;
    match (ack.seq, ack.delivered) {
        (Some(seq), _) => out(&format!(
            "seq {seq} id {}{}",
            ack.id,
            if ack.duplicate { " (duplicate)" } else { "" }
        )),
        (None, delivered) => out(&format!(
            "ephemeral id {} delivered to {} device(s)",
            ack.id,
            delivered.unwrap_or(0)
        )),
    }
    Ok(())
}

/// `device` shortened for display.
fn short(device: &[u8; 32]) -> String {
    b64u::encode(device)[..8].to_owned()
}

/// The payload as UTF-8 when it is printable text, else as `b64u:…`.
fn payload_text(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => format!("b64u:{}", b64u::encode(payload)),
    }
}

fn event_line(e: &Event) -> String {
    format!(
        "{} {} {}",
        e.seq,
        short(&e.device),
        payload_text(&e.payload)
    )
}

async fn tail(args: &ClientArgs, after: Option<u64>) -> Outcome {
    let (client, _) = connect(args).await?;
    let start = after
        .or_else(|| client.auth_ok().map(|a| a.head))
        .unwrap_or(0);
    note(&format!("tailing after seq {start}; Ctrl-C to stop"));
    let mut events = client.sync_from(start);
    let mut presence = client.presence();
    let mut ephemeral = client.ephemeral();
    let result = loop {
        tokio::select! {
            item = events.next() => match item {
                Some(Ok(e)) => out(&event_line(&e)),
                Some(Err(ferry_client::ClientError::Truncated { oldest })) => {
                    note(&format!("# events before seq {oldest} were removed by retention"));
                }
                Some(Err(e @ ferry_client::ClientError::Protocol(_))) => {
                    note(&format!("# skipped an event: {e}"));
                }
                Some(Err(e)) => break Err(fail(e)),
                None => break Ok(()),
            },
            Some(p) = presence.recv() => {
                let what = if p.revoked { "revoked" } else if p.online { "online" } else { "offline" };
                note(&format!("# device {} {what}", short(&p.device)));
            }
            Some(e) = ephemeral.recv() => {
                out(&format!("- {} {}", short(&e.device), payload_text(&e.payload)));
            }
            _ = tokio::signal::ctrl_c() => break Ok(()),
        }
    };
    drop(events);
    client.close().await;
    result
}

async fn sync(args: &ClientArgs, after: u64, limit: u32) -> Outcome {
    if !(1..=1000).contains(&limit) {
        return Err(usage("--limit must be 1..=1000"));
    }
    let (client, _) = connect(args).await?;
    let mut after = after;
    let mut count = 0u64;
    let result = loop {
        let page = match client.sync(after, limit).await {
            Ok(p) => p,
            Err(e) => break Err(fail(format_args!("sync failed: {e}"))),
        };
        if let Some(oldest) = page.truncated {
            note(&format!(
                "# events before seq {oldest} were removed by retention"
            ));
        }
        for e in &page.events {
            out(&event_line(e));
            after = e.seq;
            count += 1;
        }
        if !page.more || page.events.is_empty() {
            note(&format!("# {count} event(s); head {}", page.head));
            break Ok(());
        }
    };
    client.close().await;
    result
}

fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

async fn devices(args: &ClientArgs) -> Outcome {
    let (client, profile) = connect(args).await?;
    let result = client.devices().await;
    client.close().await;
    let list = result.map_err(|e| fail(format_args!("devices failed: {e}")))?;
    let me = b64u::encode(&profile.device_public());
    for d in list {
        let mut line = format!(
            "{} {} cursor={} last_seen={}",
            d.device,
            if d.online { "online " } else { "offline" },
            d.cursor,
            format_ms(d.last_seen)
        );
        if let Some(at) = d.revoked_at {
            line.push_str(&format!(" revoked={}", format_ms(at)));
        }
        if d.device == me {
            line.push_str(" (this device)");
        }
        out(&line);
    }
    Ok(())
}

async fn revoke(args: &ClientArgs, device: &str) -> Outcome {
    let (client, profile) = connect(args).await?;
    let result = async {
        if profile.user_secret.is_none() {
            return Err(fail(
                "this device does not hold the user key; run `revoke` on the device that does",
            ));
        }
        let target = match b64u::decode_array::<32>(device) {
            Ok(k) => k,
            Err(_) => resolve_prefix(&client, device).await?,
        };
        client
            .revoke(&target)
            .await
            .map_err(|e| fail(format_args!("revoke failed: {e}")))?;
        out(&format!("revoked {}", b64u::encode(&target)));
        Ok(())
    }
    .await;
    client.close().await;
    result
}

async fn token(args: &ClientArgs, json: bool) -> Outcome {
    use ferry_client::Connection;
    use ferry_proto::message::{ClientMessage, ServerMessage};
    let mut profile = load_profile(args)?;
    let tls = match &args.ca_file {
        Some(ca) => Some(load_roots(ca)?),
        None => None,
    };
    let (conn, _) = Connection::connect_with_timeout(
        &profile.server_url,
        profile.credentials(),
        profile.pin(),
        tls,
        Duration::from_secs(15),
    )
    .await
    .map_err(|e| {
        fail(format_args!(
            "cannot connect to {}: {e}",
            profile.server_url
        ))
    })?;
    if profile.server_key.is_none() {
        profile.server_key = Some(conn.server_key());
        save_profile(args, &profile)?;
        note(&format!(
            "pinned the server key {} (trust on first use)",
            b64u::encode(&conn.server_key())
        ));
    }
    let reply = conn.request(ClientMessage::Token).await;
    conn.close().await;
    match reply.map_err(|e| fail(format_args!("token failed: {e}")))? {
        ServerMessage::Token {
            access_token,
            expires_at,
            refresh_token,
            ..
        } => {
            if json {
                out(&serde_json::json!({
                    "access_token": access_token,
                    "expires_at": expires_at,
                    "refresh_token": refresh_token,
                })
                .to_string());
            } else {
                out(&access_token);
            }
            Ok(())
        }
        other => Err(fail(format_args!("unexpected reply to token: {other:?}"))),
    }
}

async fn resolve_prefix(client: &Client, prefix: &str) -> Result<[u8; 32], Failure> {
    let list = client
        .devices()
        .await
        .map_err(|e| fail(format_args!("devices failed: {e}")))?;
    let matches: Vec<_> = list
        .iter()
        .filter(|d| d.revoked_at.is_none() && d.device.starts_with(prefix))
        .collect();
    match matches.as_slice() {
        [one] => key32(&one.device, "device"),
        [] => Err(usage(format_args!(
            "no active device starts with {prefix:?}"
        ))),
        _ => Err(usage(format_args!(
            "{} devices start with {prefix:?}; give more of the key",
            matches.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// clap's own consistency checks of the argument definitions.
    #[test]
    fn cli_definition_is_consistent() {
        ClientArgs::command().debug_assert();
    }

    /// A base64url key or blob may start with `-`: it is a value, not an option.
    #[test]
    fn b64u_values_may_start_with_a_hyphen() {
        use clap::Parser as _;
        for args in [
            &["ferry-client", "link", "--device-key", "-Dx1"][..],
            &["ferry-client", "accept", "--cert", "-abc"],
            &["ferry-client", "revoke", "-_x"],
            &[
                "ferry-client",
                "init",
                "--server",
                "ws://h",
                "--server-key",
                "-k",
            ],
            &["ferry-client", "publish", "hi", "--ephemeral", "--to", "-d"],
        ] {
            ClientArgs::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }

    #[test]
    fn payloads_print_as_text_or_b64u() {
        assert_eq!(payload_text(b"hello world"), "hello world");
        assert_eq!(payload_text("héllo".as_bytes()), "héllo");
        assert_eq!(
            payload_text(b"a\nb"),
            format!("b64u:{}", b64u::encode(b"a\nb"))
        );
        assert_eq!(payload_text(&[0xff, 0]), "b64u:_wA");
    }
}
