//! The listeners: one client port serving gRPC (HTTP/2) and HTTP (/health, /metrics, ...) side
//! by side, an optional metrics-only port, and the drain on shutdown.

mod dispatch;
mod grpc;
mod http;

use crate::config::Config;
use crate::pipeline::Gateway;
use crate::shutdown::Shutdown;
use dispatch::Dispatch;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// A bound client listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    dispatch: Dispatch,
    config: Config,
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
        let routes = grpc::routes(&gw, config.server.max_recv_message_bytes());
        Ok(Server {
            listener,
            metrics_listener,
            dispatch: Dispatch::new(gw, routes),
            config: config.clone(),
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
        let builder = self.connection_builder();
        if let Some(metrics) = self.metrics_listener {
            let http_only = self.dispatch.http_only();
            let (builder, shutdown) = (builder.clone(), shutdown.clone());
            tokio::spawn(
                async move { accept_loop(metrics, http_only, builder, None, shutdown).await },
            );
        }
        accept_loop(
            self.listener,
            self.dispatch,
            builder,
            Some(&graceful),
            shutdown,
        )
        .await;
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

async fn accept_loop(
    listener: TcpListener,
    dispatch: Dispatch,
    builder: auto::Builder<TokioExecutor>,
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
        serve_connection(stream, peer, &dispatch, &builder, graceful);
    }
}

fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    dispatch: &Dispatch,
    builder: &auto::Builder<TokioExecutor>,
    graceful: Option<&GracefulShutdown>,
) {
    let _ = stream.set_nodelay(true);
    let service = dispatch.for_peer(peer);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    let conn: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> = match graceful {
        Some(g) => Box::pin(g.watch(conn)),
        None => Box::pin(conn),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "client connection ended with an error");
        }
    });
}
