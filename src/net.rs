//! Accepting connections: connection caps, optional TLS, HTTP/1.1 and HTTP/2 with
//! upgrades, deadlines for connections that send no request, and graceful shutdown
//! of each connection.
//!
//! Every accepted connection must start a request within `limits.handshake_timeout`
//! (a connection that sends nothing, or only an HTTP/2 preface, is closed then), and
//! a connection with no request in progress — an idle keep-alive connection, an
//! HTTP/2 connection with no open stream — is closed after `limits.http_idle_timeout`.
//! So a connection holds its slot in the caps only while it is used: idle sockets
//! from many addresses cannot keep the caps full. An upgraded WebSocket leaves
//! these deadlines behind; the session has its own (handshake and idle timeouts).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::{debug, warn};

use crate::app::App;
use crate::limits::{ConnGuard, ConnRefused};

/// A connection's slot in the caps, shared by the HTTP connection and, after an
/// upgrade, the WebSocket session: it is released when both are gone.
#[derive(Clone)]
pub struct ConnSlot(pub Arc<ConnGuard>);

/// Largest HTTP head accepted (request line + headers).
const MAX_HEAD: usize = 64 * 1024;

/// Serves `router` on `listener` until `app.shutdown` is cancelled. `capped`
/// applies the connection caps (the public listener) or not (the admin listener).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    app: App,
    tls: Option<TlsAcceptor>,
    capped: bool,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.limits.handshake_timeout)
        .max_buf_size(MAX_HEAD);
    builder.http2().timer(TokioTimer::new());
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = app.shutdown.cancelled() => break,
        };
        let slot = if capped {
            match app.conns.acquire(peer.ip()) {
                Ok(g) => Some(ConnSlot(Arc::new(g))),
                Err(why) => {
                    let reason = match why {
                        ConnRefused::PerIp => "per_ip",
                        ConnRefused::Global => "global",
                    };
                    app.metrics
                        .connections_refused
                        .with_label_values(&[reason])
                        .inc();
                    drop(tcp);
                    continue;
                }
            }
        } else {
            None
        };
        let _ = tcp.set_nodelay(true);
        let (router, app2, builder, tls) =
            (router.clone(), app.clone(), builder.clone(), tls.clone());
        app.tracker.spawn(async move {
            app2.metrics.connections_live.inc();
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(
                        app2.config.limits.handshake_timeout,
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => {
                            serve_conn(stream, peer, router, &app2, &builder, slot).await
                        }
                        _ => {
                            app2.metrics
                                .connections_refused
                                .with_label_values(&["tls"])
                                .inc();
                            debug!(%peer, "TLS handshake failed or timed out");
                        }
                    }
                }
                None => serve_conn(tcp, peer, router, &app2, &builder, slot).await,
            }
            app2.metrics.connections_live.dec();
        });
    }
}

async fn serve_conn<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    app: &App,
    builder: &Builder<TokioExecutor>,
    slot: Option<ConnSlot>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let seen = activity.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        if let Some(slot) = &slot {
            req.extensions_mut().insert(slot.clone());
        }
        let request = seen.begin();
        let response = router.clone().oneshot(req);
        async move {
            let _request = request;
            response.await
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let limits = &app.config.limits;
    loop {
        let deadline = activity.deadline(limits.handshake_timeout, limits.http_idle_timeout);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = app.shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(app.config.server.shutdown_deadline, conn).await;
                return;
            }
            // A request started or ended: the deadline moves.
            _ = activity.changed.notified() => continue,
            _ = tokio::time::sleep_until(deadline.into()) => {
                // Only a deadline that still holds ends the connection: a request may
                // have started or ended meanwhile.
                if activity.deadline(limits.handshake_timeout, limits.http_idle_timeout) > Instant::now() {
                    continue;
                }
                let state = if activity.requests() == 0 { "no_request" } else { "idle" };
                app.metrics
                    .connections_idle_closed
                    .with_label_values(&[state])
                    .inc();
                debug!(%peer, state, "closing a connection without requests");
                conn.as_mut().graceful_shutdown();
                // A connection that never sent a request has nothing to finish.
                let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, conn).await;
                return;
            }
        }
    }
}

/// How long a connection closed for idleness may take to finish (an HTTP/2 GOAWAY,
/// a half-written response) before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a connection's requests are doing, for its deadlines: how many started, how
/// many are in progress, and when the last one ended.
struct Activity {
    accepted: Instant,
    started: AtomicU64,
    in_progress: AtomicUsize,
    /// Milliseconds after `accepted` when the last request ended.
    last_end_ms: AtomicU64,
    /// Told when a request starts or ends (a permit is kept until the watchdog
    /// waits, so no change is missed).
    changed: tokio::sync::Notify,
}

/// A request in progress; ending it (dropping this) starts the idle clock.
struct InProgress(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Self {
            accepted: Instant::now(),
            started: AtomicU64::new(0),
            in_progress: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn begin(self: &Arc<Self>) -> InProgress {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        InProgress(self.clone())
    }

    fn requests(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }

    /// When the connection is to be closed if nothing happens: `first` after the
    /// accept while no request started, `idle` after the last request ended while
    /// none is in progress, and never (re-checked every `idle`) while one is.
    fn deadline(&self, first: Duration, idle: Duration) -> Instant {
        if self.in_progress.load(Ordering::Acquire) > 0 {
            return Instant::now() + idle;
        }
        if self.requests() == 0 {
            return self.accepted + first;
        }
        let ended = Duration::from_millis(self.last_end_ms.load(Ordering::Acquire));
        self.accepted + ended + idle
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let ms = self.0.accepted.elapsed().as_millis() as u64;
        self.0.last_end_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}
