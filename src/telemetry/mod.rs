//! Logs, traces and metrics. Log spans carry peer, session id and device id — never
//! keys, secrets or payloads; trace spans ([`trace`]) carry less.
//!
//! Logs go to stderr, one line per event: text for people (coloured only when stderr
//! is a terminal, so a redirected log has no escape sequences), or one JSON object per
//! line (`timestamp`, `level`, `message` and the event's fields) for log collectors;
//! `log.format` (`FERRY_LOG_FORMAT`) chooses.

pub mod metrics;
pub mod trace;

use std::io::IsTerminal as _;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::LogFormat;

/// Installs the global tracing subscriber, writing to stderr in `format`: `FERRY_LOG`
/// (or `RUST_LOG`) filters, `info` by default.
pub fn init(format: LogFormat) {
    install(format, None);
}

/// [`init`], and with `traces` the spans of [`trace::TARGET`] go to that tracer
/// (`ferry serve` with `telemetry.otlp_endpoint`).
pub fn init_with_traces(format: LogFormat, traces: opentelemetry_sdk::trace::SdkTracer) {
    install(format, Some(traces));
}

fn install(format: LogFormat, traces: Option<opentelemetry_sdk::trace::SdkTracer>) {
    let filter = std::env::var("FERRY_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
        // The trace spans are never log spans, whatever the filter says.
        .add_directive(
            format!("{}=off", trace::TARGET)
                .parse()
                .expect("a valid directive"),
        );
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a file or a pipe.
        .with_ansi(format == LogFormat::Text && std::io::stderr().is_terminal())
        .with_target(false);
    let logs = match format {
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
        LogFormat::Text => logs.boxed(),
    }
    .with_filter(filter);
    let registry = tracing_subscriber::registry().with(logs);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match traces {
        None => registry.try_init(),
        Some(tracer) => registry
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_location(false)
                    .with_threads(false)
                    .with_target(false)
                    .with_tracked_inactivity(false)
                    .with_filter(Targets::new().with_target(trace::TARGET, LevelFilter::INFO)),
            )
            .try_init(),
    };
}
