//! Prometheus metrics. Every label value comes from a fixed set (outcome and
//! reason enums, route templates): never user ids, device ids or paths.

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The process's metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    /// Handshakes by `outcome` (`ok`, `failed`) and `reason`.
    pub handshakes: IntCounterVec,
    /// Authenticated sessions now open.
    pub sessions_live: IntGauge,
    /// TCP connections now open.
    pub connections_live: IntGauge,
    /// Connections or upgrades refused by `reason` (`per_ip`, `global`, `handshake_rate`, `tls`).
    pub connections_refused: IntCounterVec,
    /// HTTP connections the server closed for lack of requests, by `state`:
    /// `no_request` (none within `limits.handshake_timeout` of the accept) or `idle`
    /// (none in progress for `limits.http_idle_timeout`).
    pub connections_idle_closed: IntCounterVec,
    /// Sessions closed, by close `code`.
    pub sessions_closed: IntCounterVec,
    /// Protocol errors answered with `error`, by `code`.
    pub request_errors: IntCounterVec,
    /// Handshake duration from upgrade to `auth_ok`.
    pub handshake_seconds: Histogram,
    /// Devices admitted by a handshake, by where the answer came from: `memo` (the
    /// admission memo) or `store` (a read, or a first-sight registration).
    pub device_checks: IntCounterVec,
    /// Sealed frames that failed to open.
    pub open_failures: IntCounter,
    /// Events durably stored.
    pub events_stored: IntCounter,
    /// Publishes answered as duplicates.
    pub duplicates: IntCounter,
    /// Publishes answered with a conflict.
    pub conflicts: IntCounter,
    /// Events queued to live sessions (stored and ephemeral).
    pub deliveries: IntCounter,
    /// Deliveries refused because a session's queue was full (the session closes 4009).
    pub queue_overflows: IntCounter,
    /// Publishes refused by the rate limit.
    pub rate_limited: IntCounter,
    /// `sync` pages served.
    pub sync_pages: IntCounter,
    /// Events per group-commit transaction.
    pub batch_size: Histogram,
    /// From receiving a publish to its durable outcome.
    pub publish_ack_seconds: Histogram,
    /// Cross-instance messages dropped (queue full or Redis unreachable).
    pub bus_dropped: IntCounter,
    /// Cross-instance messages received from other instances.
    pub bus_received: IntCounter,
    /// `limits.max_connections`, set when the app is built, so alerts can compare
    /// `connections_live` with it.
    pub limits_max_connections: IntGauge,
    /// When the served TLS certificate expires (Unix seconds); registered only by
    /// [`Self::set_tls_certificate_expiry`], so it is absent without `[tls]`.
    tls_certificate_expiry: IntGauge,
    /// The REST API, its tokens and the admin API.
    pub api: ApiMetrics,
    /// The retention job and the database's size.
    pub retention: RetentionMetrics,
    /// Circuit breakers, shared limits and the cross-instance bus.
    pub cluster: ClusterMetrics,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("ferry".into()), None).expect("valid prefix");
        let handshakes = IntCounterVec::new(
            Opts::new(
                "handshakes_total",
                "WebSocket handshakes by outcome and reason",
            ),
            &["outcome", "reason"],
        )
        .expect("valid metric");
        let device_checks = IntCounterVec::new(
            Opts::new(
                "device_checks_total",
                "Device checks of handshakes by source (memo, store)",
            ),
            &["source"],
        )
        .expect("valid metric");
        let sessions_live = IntGauge::new("sessions_live", "Authenticated sessions open now")
            .expect("valid metric");
        let connections_live =
            IntGauge::new("connections_live", "TCP connections open now").expect("valid metric");
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "connections_refused_total",
                "Connections or upgrades refused, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let connections_idle_closed = IntCounterVec::new(
            Opts::new(
                "connections_idle_closed_total",
                "HTTP connections closed for sending no request, by state",
            ),
            &["state"],
        )
        .expect("valid metric");
        let sessions_closed = IntCounterVec::new(
            Opts::new(
                "sessions_closed_total",
                "Sessions closed by the server, by close code",
            ),
            &["code"],
        )
        .expect("valid metric");
        let request_errors = IntCounterVec::new(
            Opts::new(
                "request_errors_total",
                "Requests answered with an error, by code",
            ),
            &["code"],
        )
        .expect("valid metric");
        let handshake_seconds = Histogram::with_opts(
            HistogramOpts::new("handshake_seconds", "Time from upgrade to auth_ok").buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
        )
        .expect("valid metric");
        let open_failures = IntCounter::new(
            "sealed_open_failures_total",
            "Sealed frames that failed to open",
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let events_stored = counter("events_stored_total", "Events durably stored");
        let duplicates = counter(
            "publish_duplicates_total",
            "Publishes answered as duplicates",
        );
        let conflicts = counter(
            "publish_conflicts_total",
            "Publishes answered with a conflict",
        );
        let deliveries = counter("deliveries_total", "Events queued to live sessions");
        let queue_overflows = counter(
            "queue_overflows_total",
            "Deliveries refused by a full session queue",
        );
        let rate_limited = counter("rate_limited_total", "Publishes refused by the rate limit");
        let sync_pages = counter("sync_pages_total", "sync pages served");
        let bus_dropped = counter("bus_dropped_total", "Cross-instance messages dropped");
        let bus_received = counter("bus_received_total", "Cross-instance messages received");
        let limits_max_connections = IntGauge::new(
            "limits_max_connections",
            "Concurrent connections allowed in total (limits.max_connections)",
        )
        .expect("valid metric");
        let tls_certificate_expiry = IntGauge::new(
            "tls_certificate_expiry_timestamp_seconds",
            "When the TLS certificate served on the main listener expires (Unix seconds)",
        )
        .expect("valid metric");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("append_batch_events", "Events per group-commit transaction")
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ]),
        )
        .expect("valid metric");
        let publish_ack_seconds = Histogram::with_opts(
            HistogramOpts::new("publish_ack_seconds", "From a publish to its durable ack").buckets(
                vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            ),
        )
        .expect("valid metric");
        for c in [
            Box::new(handshakes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(sessions_live.clone()),
            Box::new(connections_live.clone()),
            Box::new(connections_refused.clone()),
            Box::new(connections_idle_closed.clone()),
            Box::new(sessions_closed.clone()),
            Box::new(request_errors.clone()),
            Box::new(handshake_seconds.clone()),
            Box::new(device_checks.clone()),
            Box::new(open_failures.clone()),
            Box::new(events_stored.clone()),
            Box::new(duplicates.clone()),
            Box::new(conflicts.clone()),
            Box::new(deliveries.clone()),
            Box::new(queue_overflows.clone()),
            Box::new(rate_limited.clone()),
            Box::new(sync_pages.clone()),
            Box::new(batch_size.clone()),
            Box::new(publish_ack_seconds.clone()),
            Box::new(bus_dropped.clone()),
            Box::new(bus_received.clone()),
            Box::new(limits_max_connections.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // process_resident_memory_bytes, open fds, CPU: what soak tests watch.
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
        let api = ApiMetrics::register(&registry);
        let retention = RetentionMetrics::register(&registry);
        let cluster = ClusterMetrics::register(&registry);
        Self {
            api,
            retention,
            cluster,
            registry,
            handshakes,
            sessions_live,
            connections_live,
            connections_refused,
            connections_idle_closed,
            sessions_closed,
            request_errors,
            handshake_seconds,
            device_checks,
            open_failures,
            events_stored,
            duplicates,
            conflicts,
            deliveries,
            queue_overflows,
            rate_limited,
            sync_pages,
            batch_size,
            publish_ack_seconds,
            bus_dropped,
            bus_received,
            limits_max_connections,
            tls_certificate_expiry,
        }
    }

    /// Records when the TLS certificate served on the main listener expires (the
    /// `notAfter` of the leaf of `tls.cert`, Unix seconds) and exports it as
    /// `ferry_tls_certificate_expiry_timestamp_seconds` from then on.
    pub fn set_tls_certificate_expiry(&self, unix_secs: i64) {
        // Registered on first use: without `[tls]` the series does not exist, so
        // an expiry alert has nothing to fire on. A second call finds it there.
        let _ = self
            .registry
            .register(Box::new(self.tls_certificate_expiry.clone()));
        self.tls_certificate_expiry.set(unix_secs);
    }

    /// The registry, for modules that add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Circuit breakers (`crate::breaker`), rate-limit decisions by where they were
/// made, the cross-instance bus's connection, and the live sessions it made catch up.
pub struct ClusterMetrics {
    /// `breaker_state{breaker}` and `breaker_transitions_total{breaker,to}`.
    pub breakers: crate::breaker::BreakerMetrics,
    /// Rate-limit decisions of shared limits by `source`: `shared` (made in Redis)
    /// or `fallback` (made by this instance because Redis did not answer).
    pub limit_decisions: IntCounterVec,
    /// 1 while the bus is subscribed to the other instances' messages (0 without a bus).
    pub bus_connected: IntGauge,
    /// Times the bus lost messages (a failed subscription or publish) and the live
    /// sessions were made to catch up from the store.
    pub bus_resyncs: IntCounter,
    /// Relayed events a live session got from the store instead of the hub: it had
    /// missed them (a gap in its stream, or a resync after the bus lost messages).
    pub gap_fills: IntCounter,
}

impl ClusterMetrics {
    fn register(registry: &Registry) -> Self {
        let breakers = crate::breaker::BreakerMetrics {
            state: IntGaugeVec::new(
                Opts::new(
                    "breaker_state",
                    "Circuit breaker state: 0 closed, 1 half-open, 2 open",
                ),
                &["breaker"],
            )
            .expect("valid metric"),
            transitions: IntCounterVec::new(
                Opts::new(
                    "breaker_transitions_total",
                    "Circuit breaker transitions by breaker and new state",
                ),
                &["breaker", "to"],
            )
            .expect("valid metric"),
        };
        let limit_decisions = IntCounterVec::new(
            Opts::new(
                "rate_limit_decisions_total",
                "Decisions of shared rate limits by source (shared: in Redis; fallback: local, Redis did not answer)",
            ),
            &["source"],
        )
        .expect("valid metric");
        let bus_connected = IntGauge::new(
            "bus_connected",
            "1 while subscribed to the other instances' messages",
        )
        .expect("valid metric");
        let bus_resyncs = IntCounter::new(
            "bus_resyncs_total",
            "Times live sessions caught up from the store after the bus lost messages",
        )
        .expect("valid metric");
        let gap_fills = IntCounter::new(
            "relay_gap_fills_total",
            "Relayed events a live session read from the store because it missed them",
        )
        .expect("valid metric");
        for c in [
            Box::new(breakers.state.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(breakers.transitions.clone()),
            Box::new(limit_decisions.clone()),
            Box::new(bus_connected.clone()),
            Box::new(bus_resyncs.clone()),
            Box::new(gap_fills.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            breakers,
            limit_decisions,
            bus_connected,
            bus_resyncs,
            gap_fills,
        }
    }
}

/// Metrics of the retention job (`crate::relay::retention`), and the database size
/// it watches.
pub struct RetentionMetrics {
    /// Rows deleted, by `reason` (`expired`, `age`, `count`, `compacted`,
    /// `inactive_device`, `auth`).
    pub deleted: IntCounterVec,
    /// Runs by `outcome` (`ok`, `error`, `skipped`: another runner held the lock).
    pub runs: IntCounterVec,
    /// When the last run that succeeded ended, Unix seconds (0: none yet).
    pub last_success: IntGauge,
    /// How long runs took.
    pub run_seconds: Histogram,
    /// The database's size on disk (SQLite: pages × page size plus the write-ahead
    /// log; PostgreSQL: `pg_database_size`), set when scraped.
    pub database_bytes: IntGauge,
}

impl RetentionMetrics {
    fn register(registry: &Registry) -> Self {
        let deleted = IntCounterVec::new(
            Opts::new(
                "retention_deleted_total",
                "Rows the retention job deleted, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let runs = IntCounterVec::new(
            Opts::new("retention_runs_total", "Retention runs by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let last_success = IntGauge::new(
            "retention_last_success_timestamp_seconds",
            "When the last successful retention run ended (Unix seconds)",
        )
        .expect("valid metric");
        let run_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "retention_run_duration_seconds",
                "How long retention runs took",
            )
            .buckets(vec![
                0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0,
            ]),
        )
        .expect("valid metric");
        let database_bytes = IntGauge::new(
            "database_size_bytes",
            "Size of the database on disk in bytes",
        )
        .expect("valid metric");
        for c in [
            Box::new(deleted.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(runs.clone()),
            Box::new(last_success.clone()),
            Box::new(run_seconds.clone()),
            Box::new(database_bytes.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // Every label value exists from the start, so rates and alerts see zeros.
        for reason in [
            "expired",
            "age",
            "count",
            "compacted",
            "inactive_device",
            "auth",
        ] {
            deleted.with_label_values(&[reason]);
        }
        for outcome in ["ok", "error", "skipped"] {
            runs.with_label_values(&[outcome]);
        }
        Self {
            deleted,
            runs,
            last_success,
            run_seconds,
            database_bytes,
        }
    }
}

/// Metrics of the HTTP API. Labels are route templates (`/v1/devices/{device}`, or
/// `unmatched`), methods from a fixed list, status codes the server itself chose,
/// and reason enums: never a path, a user, a key or a token.
pub struct ApiMetrics {
    /// Requests by `route`, `method` and `status`.
    pub requests: IntCounterVec,
    /// Request latency by `route`, `method` and `status`.
    pub request_seconds: HistogramVec,
    /// Bearer-token checks by `outcome` (`ok`, `refused`) and `reason`.
    pub auth_outcomes: IntCounterVec,
    /// Token events by `event` (`issued`, `refreshed`, `revoked`, `reuse_detected`).
    pub tokens: IntCounterVec,
    /// Admin API requests refused before any work, by `reason` (`missing`,
    /// `invalid`, `scope`, `rate_limited`).
    pub admin_auth_failures: IntCounterVec,
    /// Database pool connections by `state` (`in_use`, `idle`), set when scraped.
    pub db_pool: IntGaugeVec,
}

impl ApiMetrics {
    fn register(registry: &Registry) -> Self {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        };
        let requests = counter_vec(
            "http_requests_total",
            "HTTP requests by route template, method and status",
            &["route", "method", "status"],
        );
        let auth_outcomes = counter_vec(
            "auth_outcomes_total",
            "REST bearer-token checks by outcome and reason",
            &["outcome", "reason"],
        );
        let tokens = counter_vec(
            "tokens_total",
            "REST token events: issued, refreshed, revoked, reuse_detected",
            &["event"],
        );
        let admin_auth_failures = counter_vec(
            "admin_auth_failures_total",
            "Admin API requests refused by key checks, by reason",
            &["reason"],
        );
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("http_request_seconds", "HTTP request latency").buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(request_seconds.clone()))
            .expect("metric names are unique");
        let db_pool = IntGaugeVec::new(
            Opts::new("db_pool_connections", "Database pool connections by state"),
            &["state"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(db_pool.clone()))
            .expect("metric names are unique");
        Self {
            requests,
            request_seconds,
            auth_outcomes,
            tokens,
            admin_auth_failures,
            db_pool,
        }
    }
}
