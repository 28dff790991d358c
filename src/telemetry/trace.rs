//! Traces: OpenTelemetry spans exported over OTLP/HTTP (protobuf), when
//! `telemetry.otlp_endpoint` is set.
//!
//! The spans are `tracing` spans of one target, [`TARGET`], made only by the
//! functions below (the catalogue: names and attributes in one place). The
//! OpenTelemetry layer sees these spans and nothing else (no log line becomes a span
//! event), and the log layer never sees them. With traces off no layer wants them:
//! each is a disabled span, which costs a check of its call site and no allocation.
//!
//! Attributes are outcomes, counts, seqs and HTTP route templates: never a key, a
//! token, a payload, a user or device id, or an address.
//!
//! Across instances, the W3C trace context of the span that relays an event
//! ([`current`]) travels with it on the bus, and the other instance delivers it under
//! a span whose parent is that one ([`deliver`]): one publish and its deliveries
//! everywhere form one trace.

use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider};
use tracing::field::Empty;
use tracing::{Span, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::config::TelemetryConfig;
use crate::model::AppendOutcome;

/// The `tracing` target of every span meant for OpenTelemetry (and only those).
pub const TARGET: &str = "ferry_trace";

/// The exporter's side of the pipeline: flush it at shutdown ([`Self::shutdown`]).
pub struct Exporter {
    provider: SdkTracerProvider,
    timeout: Duration,
}

impl Exporter {
    /// Builds the OTLP/HTTP exporter and its batching task (on the current tokio
    /// runtime) for `config`, whose endpoint must be set; `instance` becomes the
    /// spans' `service.instance.id`. Returns the tracer for the `tracing` layer.
    pub fn start(config: &TelemetryConfig, instance: &str) -> Result<(Self, SdkTracer), String> {
        let base = config
            .otlp_endpoint
            .as_deref()
            .ok_or("telemetry.otlp_endpoint is not set")?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{base}/v1/traces"))
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let batches = BatchConfigBuilder::default()
            .with_scheduled_delay(config.export_interval)
            .with_max_export_timeout(config.export_timeout)
            .build();
        let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_batch_config(batches)
            .build();
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attributes([
                KeyValue::new("service.instance.id", instance.to_string()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio.get(),
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("ferry");
        Ok((
            Self {
                provider,
                timeout: config.export_timeout,
            },
            tracer,
        ))
    }

    /// Sends the spans still waiting, within `telemetry.export_timeout`, and stops
    /// the exporter. Spans that end later are dropped.
    pub async fn shutdown(self) {
        let Self { provider, timeout } = self;
        // Blocks until the batching task (on this runtime) has exported: not on a
        // worker thread.
        let done = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout));
        match tokio::time::timeout(timeout + Duration::from_secs(1), done).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "flushing the last spans failed"),
            _ => tracing::warn!("flushing the last spans timed out"),
        }
    }
}

/// A span's W3C trace context, as the bus carries it between instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The parent span.
    pub span_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

/// The trace context of the current span, if traces are on and a span of
/// [`TARGET`] is current.
pub fn current() -> Option<TraceParent> {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return None;
    }
    let cx = Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| TraceParent {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    })
}

/// `handshake`: from the upgrade until the session keys are established or the
/// connection closes. `outcome` (`ok`, `failed`) and `reason` are the labels of
/// `ferry_handshakes_total` ([`record_handshake`]).
pub fn handshake() -> Span {
    info_span!(target: TARGET, "handshake", outcome = Empty, reason = Empty)
}

/// Records a handshake's outcome on the current span, if it is [`handshake`]'s.
pub fn record_handshake(outcome: &str, reason: &str) {
    let span = Span::current();
    if span.metadata().is_some_and(|m| m.target() == TARGET) {
        span.record("outcome", outcome).record("reason", reason);
    }
}

/// `publish`: a publish on a WebSocket session, from the request to its ack.
/// `outcome`: `stored`, `duplicate`, `conflict`, `ephemeral`, `refused` or
/// `unavailable`; `seq` for a stored event.
pub fn publish() -> Span {
    info_span!(target: TARGET, "publish", outcome = Empty, seq = Empty)
}

/// `append`: an event through the group-commit writer, from the queue to its
/// durable outcome (`outcome`, `seq` as for [`publish`]); a child of the current
/// span (`publish`, or the REST request).
pub fn append() -> Span {
    info_span!(target: TARGET, "append", outcome = Empty, seq = Empty)
}

/// Records an append's outcome (`outcome`, and `seq` when the event is stored) on
/// its `append` or `publish` span.
pub fn record_append<E>(span: &Span, result: &Result<AppendOutcome, E>) {
    if span.is_disabled() {
        return;
    }
    let (outcome, seq) = match result {
        Ok(AppendOutcome::Stored { seq, .. }) => ("stored", Some(*seq)),
        Ok(AppendOutcome::Duplicate { seq, .. }) => ("duplicate", Some(*seq)),
        Ok(AppendOutcome::Conflict { .. }) => ("conflict", None),
        Err(_) => ("unavailable", None),
    };
    span.record("outcome", outcome);
    if let Some(seq) = seq {
        span.record("seq", seq);
    }
}

/// `fanout`: a stored event relayed after its commit, a child of its `append`:
/// `delivered` and `overflowed` count this instance's sessions. The other
/// instances' deliveries are children of this span.
pub fn fanout(append: &Span) -> Span {
    info_span!(target: TARGET, parent: append, "fanout", delivered = Empty, overflowed = Empty)
}

/// `deliver`: an event from another instance queued for this instance's sessions
/// (`delivered`, `overflowed`), a child of the span that relayed it there. Opened
/// only where the event's user has a live session.
pub fn deliver(parent: TraceParent) -> Span {
    let span = info_span!(target: TARGET, "deliver", delivered = Empty, overflowed = Empty);
    if !span.is_disabled() {
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
    span
}

/// `sync`: one page of a user's events read (`after`, `limit`; `events` and `more`
/// once read), for a WebSocket `sync` or the REST API.
pub fn sync(after: u64, limit: u32) -> Span {
    info_span!(target: TARGET, "sync", after, limit, events = Empty, more = Empty)
}

/// An HTTP request (REST, admin, the WebSocket upgrade), named `METHOD route` after
/// its route template: `http.request.method`, `http.route`,
/// `http.response.status_code` ([`record_status`]).
pub fn http_request(method: &'static str, route: &str) -> Span {
    let span = info_span!(
        target: TARGET,
        "http_request",
        otel.name = Empty,
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = Empty,
    );
    if !span.is_disabled() {
        span.record("otel.name", format!("{method} {route}"));
    }
    span
}

/// Records a REST request's status on its [`http_request`] span.
pub fn record_status(span: &Span, status: u16) {
    span.record("http.response.status_code", status);
}
