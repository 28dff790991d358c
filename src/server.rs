//! Running the relay: build the shared state, serve the public and admin
//! listeners, and shut down within a deadline.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::app::{App, AppState};
use crate::auth::Auth;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::keys::{self, KeyOrigin, ServerKey};
use crate::limits::{ConnLimiter, Gcra, Limiter, RestLimiters, Shared, SharedLimits};
use crate::relay::{Relay, RelayLimits};
use crate::store::{self, MigrateMode, Store, StoreOptions};
use crate::telemetry::metrics::Metrics;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The server key could not be loaded or created.
    #[error("server key: {0}")]
    Key(#[from] keys::KeyError),
    /// The database could not be opened or its migrations are not runnable.
    #[error("database: {0}")]
    Store(#[from] store::StoreError),
    /// TLS material could not be loaded.
    #[error("tls: {0}")]
    Tls(String),
    /// Redis (cross-instance relay) could not be reached at start.
    #[error("redis: {0}")]
    Redis(String),
    /// The trace exporter (`[telemetry]`) could not be built.
    #[error("telemetry: {0}")]
    Telemetry(String),
    /// A listener could not be bound.
    #[error("{what} {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The sockets the server accepts on, bound by the caller (tests bind port 0).
pub struct Listeners {
    /// WebSocket and REST.
    pub public: TcpListener,
    /// `/metrics` (and the admin API); `None` disables it.
    pub admin: Option<TcpListener>,
}

/// Binds the configured addresses and runs until SIGINT or SIGTERM. With
/// `telemetry.otlp_endpoint`, exports traces, and sends the last spans before it
/// returns.
pub async fn serve(config: Config) -> Result<(), ServerError> {
    let traces = match &config.telemetry.otlp_endpoint {
        None => {
            crate::telemetry::init(config.log.format);
            None
        }
        Some(endpoint) => {
            // Tells this process's spans from the other instances'.
            let instance = uuid::Uuid::new_v4().simple().to_string();
            let (exporter, tracer) =
                crate::telemetry::trace::Exporter::start(&config.telemetry, &instance)
                    .map_err(ServerError::Telemetry)?;
            crate::telemetry::init_with_traces(config.log.format, tracer);
            info!(%endpoint, %instance, "exporting traces over OTLP");
            Some(exporter)
        }
    };
    let result = serve_on(config).await;
    if let Some(exporter) = traces {
        exporter.shutdown().await;
    }
    result
}

async fn serve_on(config: Config) -> Result<(), ServerError> {
    let bind = |what: &'static str, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { what, addr, source })
    };
    let listeners = Listeners {
        public: bind("listen", config.server.listen).await?,
        admin: Some(bind("admin_listen", config.server.admin_listen).await?),
    };
    run(config, listeners, crate::shutdown::signal()).await
}

/// Runs the relay on `listeners` until `shutdown` resolves, then stops accepting,
/// closes every session with 1001 and waits at most `server.shutdown_deadline`.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    run_with(config, listeners, shutdown, crate::clock::system()).await
}

/// [`run`] with the decisions reading the time from `clock` (tests jump it).
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
    clock: SharedClock,
) -> Result<(), ServerError> {
    // One server per SQLite database: `ferry restore` checks this lock before it
    // swaps the file. Held until `run_with` returns.
    let _database_lock =
        match crate::store::Backend::from_url(&config.database.url) {
            Ok(crate::store::Backend::Sqlite) => {
                let path = crate::store::backup::sqlite_path(&config.database.url)?;
                Some(crate::backup::DatabaseLock::acquire(&path).map_err(|e| {
                    ServerError::Store(crate::store::StoreError::Other(e.to_string()))
                })?)
            }
            _ => None,
        };
    let (key, origin) = keys::load_or_create(config.key_settings())?;
    if let KeyOrigin::Generated(path) = &origin {
        info!(path = %path.display(), public_key = %key.public_b64u(), "created a new server key");
    }
    let opts = StoreOptions {
        max_connections: config.database.max_connections,
        connect_timeout: config.database.connect_timeout,
        migrate: if config.database.migrate_on_start {
            MigrateMode::Apply
        } else {
            MigrateMode::VerifyOnly
        },
        checkpoint_interval: config.database.checkpoint_interval,
    };
    let store = store::connect(&config.database.url, &opts).await?;
    let tls = match &config.tls {
        Some(t) => {
            let mut cfg = (*t
                .load_rustls()
                .map_err(|e| ServerError::Tls(e.to_string()))?)
            .clone();
            // WebSocket upgrades need HTTP/1.1.
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(TlsAcceptor::from(Arc::new(cfg)))
        }
        None => None,
    };
    // The database behind its circuit breaker: while it is down, calls fail fast
    // instead of piling up behind the pool's timeout (`store::Guarded`).
    let metrics = Arc::new(Metrics::new());
    // Read once, like the certificate itself: a renewed file is served (and
    // measured) after a restart.
    if let Some(t) = &config.tls {
        match t.certificate_not_after() {
            Ok(at) => metrics.set_tls_certificate_expiry(at),
            Err(e) => warn!(error = %e, "cannot read the TLS certificate's expiry"),
        }
    }
    let store: Arc<dyn Store> = Arc::new(store::Guarded::database(
        store,
        metrics.cluster.breakers.clone(),
        clock.clone(),
    ));
    let (app, writer_task) = build_app_on(config, key, store, clock, metrics);
    if let Some(url) = app.config.redis_url.clone() {
        app.relay
            .connect_bus(&url.0, app.shutdown.clone(), &app.tracker)
            .await
            .map_err(|e| ServerError::Redis(format!("{} ({})", e, url.redacted())))?;
        info!(redis = %url.redacted(), "cross-instance relay over Redis");
        if app.config.limits.shared {
            let cluster = &app.metrics.cluster;
            let shared = SharedLimits::connect(
                &url.0,
                cluster.breakers.clone(),
                cluster.limit_decisions.clone(),
            )
            .await
            .map_err(|e| ServerError::Redis(format!("{} ({})", e, url.redacted())))?;
            app.shared_limits.attach(shared);
            info!("rate limits shared across instances in Redis");
        }
    }
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let public_addr = listeners.public.local_addr().ok();
    info!(
        addr = public_addr.map(tracing::field::display),
        scheme,
        database = %app.relay.backend(),
        server_key = %app.key.public_b64u(),
        "ferry listening"
    );
    app.relay.spawn_jobs(&app.tracker, &app.shutdown);
    app.tracker.spawn(crate::net::serve(
        listeners.public,
        crate::api::router(app.clone()),
        app.clone(),
        tls,
        true,
    ));
    if let Some(admin) = listeners.admin {
        info!(
            addr = admin.local_addr().ok().map(tracing::field::display),
            "admin listener (metrics, admin API)"
        );
        app.tracker.spawn(crate::net::serve(
            admin,
            crate::api::admin_router(app.clone()),
            app.clone(),
            None,
            false,
        ));
    }
    shutdown.await;
    info!("shutting down");
    app.shutdown.cancel();
    app.tracker.close();
    if tokio::time::timeout(app.config.server.shutdown_deadline, app.tracker.wait())
        .await
        .is_err()
    {
        warn!(
            remaining = app.tracker.len(),
            "shutdown deadline passed; dropping the rest"
        );
    }
    // Sessions are gone: write the `last_seen` times they recorded.
    app.relay.flush_last_seen().await;
    // The last writer handle drops with `app`, the writer
    // finishes the batch it holds (acked work is always committed first).
    drop(app);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer_task).await;
    Ok(())
}

/// Builds the shared state on an open store and starts the group-commit writer (its
/// task ends once every [`App`] clone is dropped). `run` calls this; benchmarks and
/// in-process tests call it to drive [`crate::api::router`] without listeners.
pub fn build_app(
    config: Config,
    key: ServerKey,
    store: Arc<dyn Store>,
) -> (App, tokio::task::JoinHandle<()>) {
    build_app_with(config, key, store, crate::clock::system())
}

/// [`build_app`] with the decisions reading the time from `clock`.
pub fn build_app_with(
    config: Config,
    key: ServerKey,
    store: Arc<dyn Store>,
    clock: SharedClock,
) -> (App, tokio::task::JoinHandle<()>) {
    build_app_on(config, key, store, clock, Arc::new(Metrics::new()))
}

/// [`build_app_with`] reporting to `metrics` (`run` makes them first, for the
/// database's circuit breaker).
fn build_app_on(
    config: Config,
    key: ServerKey,
    store: Arc<dyn Store>,
    clock: SharedClock,
    metrics: Arc<Metrics>,
) -> (App, tokio::task::JoinHandle<()>) {
    let limits = &config.limits;
    metrics
        .limits_max_connections
        .set(i64::from(limits.max_connections));
    let shared = Shared::default();
    let (relay, writer_task) = Relay::new(
        store.clone(),
        metrics.clone(),
        RelayLimits::from_config(limits),
        config.redis_url.is_some(),
        &shared,
        &config.retention,
        config.database.commit_interval,
        clock.clone(),
    );
    let auth = Auth::new(&key, &config.auth, &config.admin, store, relay.clone());
    let app = App::new(AppState {
        auth: Arc::new(auth),
        rest_limits: Arc::new(RestLimiters::new(
            limits.rest_requests_per_ip_per_sec,
            limits.rest_requests_per_token_per_sec,
            config.admin.failure_burst,
            &shared,
        )),
        conns: ConnLimiter::new(
            limits.max_connections_per_ip as usize,
            limits.max_connections as usize,
        ),
        handshake_rate: Arc::new(Limiter::new(
            "handshake_ip",
            Gcra::new(
                limits.handshakes_per_ip_per_sec,
                limits.handshakes_per_ip_per_sec.saturating_mul(2),
            ),
            shared.clone(),
        )),
        shared_limits: shared,
        relay,
        metrics,
        clock,
        key: Arc::new(key),
        verified_certs: Arc::new(ferry_proto::handshake::VerifiedCerts::new(
            crate::app::VERIFIED_CERTS_PER_GENERATION,
        )),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        config: Arc::new(config),
    });
    (app, writer_task)
}
