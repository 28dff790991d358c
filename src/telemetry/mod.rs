//! Logs and metrics. Spans carry peer, session id and device id — never keys,
//! secrets or payloads.

pub mod metrics;

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber: `FERRY_LOG` (or `RUST_LOG`) filters,
/// JSON lines when `json` is set (production), human-readable otherwise.
pub fn init(json: bool) {
    let filter = std::env::var("FERRY_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
