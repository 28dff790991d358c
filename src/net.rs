//! Accepting connections: connection caps, optional TLS, HTTP/1.1 and HTTP/2 with
//! upgrades, and graceful shutdown of each connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        if let Some(slot) = &slot {
            req.extensions_mut().insert(slot.clone());
        }
        router.clone().oneshot(req)
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = app.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(app.config.server.shutdown_deadline, conn).await;
        }
    }
}
