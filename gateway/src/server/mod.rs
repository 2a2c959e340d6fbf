//! The listeners: one client port serving gRPC (HTTP/2) and HTTP (/health, /metrics, ...) side
//! by side, over TLS when configured, an optional metrics-only port, and the drain on shutdown.

mod dispatch;
mod grpc;
mod http;
mod json;
mod unary;
mod upstream_http;
mod v2;

use crate::config::Config;
use crate::identity::ConnectionInfo;
use crate::metrics::IdentityMetrics;
use crate::pipeline::Gateway;
use crate::shutdown::Shutdown;
use crate::tls::{peer_certificate, TlsTerminator};
use dispatch::Dispatch;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// A bound client listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    dispatch: Dispatch,
    config: Config,
    tls: Option<Arc<TlsTerminator>>,
    metrics: IdentityMetrics,
}

impl Server {
    /// Binds the configured addresses; fails with the address that could not be bound.
    pub async fn bind(config: &Config, gw: Arc<Gateway>) -> anyhow::Result<Server> {
        let bind = |addr: SocketAddr, option: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {option} = {addr}: {e}"))
        };
        let listener = bind(config.server.listen, "server.listen").await?;
        let metrics_listener = match config.server.metrics_listen {
            Some(addr) => Some(bind(addr, "server.metrics_listen").await?),
            None => None,
        };
        let tls = match config.server.tls.enabled() {
            true => Some(TlsTerminator::load(&config.server.tls)?),
            false => None,
        };
        let routes = grpc::routes(&gw, config.server.max_recv_message_bytes());
        let metrics = gw.identity.metrics().clone();
        Ok(Server {
            listener,
            metrics_listener,
            dispatch: Dispatch::new(gw, routes, &config.server),
            config: config.clone(),
            tls,
            metrics,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires, then drains: stops accepting, lets in-flight requests
    /// finish (streams are ended by the pipeline with etcd's "server stopped"), and returns
    /// once every connection is closed or the drain timeout has passed.
    pub async fn serve(self, shutdown: Shutdown) {
        let graceful = GracefulShutdown::new();
        let accept = Accept {
            builder: self.connection_builder(),
            dispatch: self.dispatch,
            tls: self.tls,
            metrics: self.metrics,
        };
        if let Some(tls) = &accept.tls {
            tokio::spawn(tls.clone().watch(shutdown.clone()));
        }
        if let Some(metrics) = self.metrics_listener {
            // The metrics port stays plain HTTP: it is meant for a local scraper.
            let http_only = Accept {
                dispatch: accept.dispatch.http_only(),
                tls: None,
                ..accept.clone()
            };
            let shutdown = shutdown.clone();
            tokio::spawn(async move { accept_loop(metrics, http_only, None, shutdown).await });
        }
        accept_loop(self.listener, accept, Some(&graceful), shutdown).await;
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections drained"),
            () = tokio::time::sleep(self.config.server.drain_timeout()) => {
                tracing::warn!("drain timeout passed with connections still open; exiting");
            }
        }
    }

    fn connection_builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http2()
            .max_concurrent_streams(self.config.server.max_concurrent_streams)
            .initial_stream_window_size(1024 * 1024)
            .initial_connection_window_size(8 * 1024 * 1024)
            .max_send_buf_size(1024 * 1024);
        builder
    }
}

/// What every connection on one listener shares.
#[derive(Clone)]
struct Accept {
    dispatch: Dispatch,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<Arc<TlsTerminator>>,
    metrics: IdentityMetrics,
}

async fn accept_loop(
    listener: TcpListener,
    accept: Accept,
    graceful: Option<&GracefulShutdown>,
    shutdown: Shutdown,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.wait() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.map(GracefulShutdown::watcher);
        let accept = accept.clone();
        tokio::spawn(async move { accept.connection(stream, peer, watcher).await });
    }
}

impl Accept {
    /// Phase 1, accept: the TLS handshake (when configured), then HTTP/2 or HTTP/1.1. A failed
    /// handshake (plain TCP on a TLS port, an untrusted or expired client certificate) ends
    /// only this connection.
    async fn connection(self, stream: TcpStream, peer: SocketAddr, watcher: Option<Watcher>) {
        let stream = crate::corked::Corked::new(stream);
        let Some(tls) = &self.tls else {
            let info = ConnectionInfo::new(peer, false, None);
            return self.serve(stream, info, watcher).await;
        };
        let handshake = tls.acceptor().accept(stream);
        match tokio::time::timeout(tls.handshake_timeout(), handshake).await {
            Ok(Ok(stream)) => {
                self.metrics.tls_handshakes.with_label_values(&["ok"]).inc();
                let cert = peer_certificate(stream.get_ref().1).map(Arc::new);
                let info = ConnectionInfo::new(peer, true, cert);
                self.serve(stream, info, watcher).await;
            }
            Ok(Err(e)) => {
                self.metrics
                    .tls_handshakes
                    .with_label_values(&["failed"])
                    .inc();
                tracing::debug!(%peer, error = %e, "TLS handshake failed; connection closed");
            }
            Err(_) => {
                self.metrics
                    .tls_handshakes
                    .with_label_values(&["timeout"])
                    .inc();
                tracing::debug!(%peer, "TLS handshake timed out; connection closed");
            }
        }
    }

    async fn serve<I>(&self, io: I, info: ConnectionInfo, watcher: Option<Watcher>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let peer = info.peer;
        let service = self.dispatch.for_connection(info);
        let conn = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let result = match watcher {
            Some(w) => w.watch(conn).await,
            None => conn.await,
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "client connection ended with an error");
        }
    }
}
