//! Logs and metrics. Spans carry peer, session id and device id — never keys,
//! secrets or payloads.
//!
//! Logs go to stderr, one line per event: text for people (coloured only when stderr
//! is a terminal, so a redirected log has no escape sequences), or one JSON object per
//! line (`timestamp`, `level`, `message` and the event's fields) for log collectors;
//! `log.format` (`FERRY_LOG_FORMAT`) chooses.

pub mod metrics;

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global tracing subscriber, writing to stderr in `format`: `FERRY_LOG`
/// (or `RUST_LOG`) filters, `info` by default.
pub fn init(format: LogFormat) {
    let filter = std::env::var("FERRY_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a file or a pipe.
        .with_ansi(format == LogFormat::Text && std::io::stderr().is_terminal())
        .with_target(false);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
