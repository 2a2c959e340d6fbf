//! The listeners: one client port serving gRPC (HTTP/2) and HTTP (/health, /metrics, ...) side
//! by side, over TLS when configured, an optional metrics-only port, and the drain on shutdown.

mod dispatch;
mod grpc;
mod http;
mod json;
mod prefixed;
mod unary;
mod upstream_http;
mod v2;

use crate::config::Config;
use crate::h2;
use crate::identity::ConnectionInfo;
use crate::metrics::IdentityMetrics;
use crate::pipeline::Gateway;
use crate::shutdown::Shutdown;
use crate::tls::{peer_certificate, TlsTerminator};
use bytes::BytesMut;
use dispatch::Dispatch;
use hyper_util::rt::TokioIo;
use prefixed::Prefixed;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

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
        // Every connection of the client port holds a sender; the drain is over when the
        // last one has gone.
        let (open, mut drained) = mpsc::channel::<Infallible>(1);
        let accept = Accept {
            h2: self.h2_settings(),
            dispatch: self.dispatch,
            tls: self.tls,
            metrics: self.metrics,
            shutdown: shutdown.clone(),
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
        accept_loop(self.listener, accept, Some(open), shutdown).await;
        tokio::select! {
            _ = drained.recv() => tracing::info!("all connections drained"),
            () = tokio::time::sleep(self.config.server.drain_timeout()) => {
                tracing::warn!("drain timeout passed with connections still open; exiting");
            }
        }
    }

    fn h2_settings(&self) -> h2::server::Settings {
        h2::server::Settings {
            max_concurrent_streams: self.config.server.max_concurrent_streams,
            stream_window: 1024 * 1024,
            connection_window: 8 * 1024 * 1024,
            max_header_list: 1024 * 1024,
        }
    }
}

/// What every connection on one listener shares.
#[derive(Clone)]
struct Accept {
    dispatch: Dispatch,
    h2: h2::server::Settings,
    tls: Option<Arc<TlsTerminator>>,
    metrics: IdentityMetrics,
    shutdown: Shutdown,
}

async fn accept_loop(
    listener: TcpListener,
    accept: Accept,
    open: Option<mpsc::Sender<Infallible>>,
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
        let open = open.clone();
        let accept = accept.clone();
        tokio::spawn(async move {
            accept.connection(stream, peer).await;
            drop(open);
        });
    }
}

impl Accept {
    /// Phase 1, accept: the TLS handshake (when configured), then HTTP/2 or HTTP/1.1. A failed
    /// handshake (plain TCP on a TLS port, an untrusted or expired client certificate) ends
    /// only this connection.
    async fn connection(self, stream: TcpStream, peer: SocketAddr) {
        let Some(tls) = &self.tls else {
            let info = ConnectionInfo::new(peer, false, None);
            return self.serve(stream, info).await;
        };
        let handshake = tls.acceptor().accept(stream);
        match tokio::time::timeout(tls.handshake_timeout(), handshake).await {
            Ok(Ok(stream)) => {
                self.metrics.tls_handshakes.with_label_values(&["ok"]).inc();
                let cert = peer_certificate(stream.get_ref().1).map(Arc::new);
                let info = ConnectionInfo::new(peer, true, cert);
                self.serve(stream, info).await;
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

    /// HTTP/2 (told by its preface) goes to keygate's own HTTP/2 server, HTTP/1.1 to hyper's.
    async fn serve<I>(&self, mut io: I, info: ConnectionInfo)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = info.peer;
        let preface = h2::frame::PREFACE;
        let mut first = BytesMut::with_capacity(4096);
        while first.len() < preface.len() && preface.starts_with(&first) {
            match io.read_buf(&mut first).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let handler = self.dispatch.for_connection(info);
        if first.starts_with(preface) {
            let drain = self.shutdown.clone();
            let drain = Box::pin(async move { drain.wait().await });
            if let Err(e) = h2::server::serve(io, first, self.h2, handler, drain).await {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
            return;
        }
        let service =
            hyper::service::service_fn(move |req: ::http::Request<hyper::body::Incoming>| {
                let response = handler.handle(req.map(tonic::body::Body::new));
                async move { Ok::<_, Infallible>(response.await) }
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(Prefixed::new(first, io)), service);
        let mut conn = std::pin::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = self.shutdown.wait() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "client connection ended with an error");
        }
    }
}
