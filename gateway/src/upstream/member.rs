//! One etcd member: its URL, the HTTP/2 connections keygate keeps to it, and its last known
//! health and role.

use crate::config::UpstreamConfig;
use crate::tls::UpstreamTls;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

pub struct Member {
    url: String,
    /// Connections for client requests, used in turn.
    channels: Vec<Channel>,
    /// A connection of its own for health checks, so a busy request connection cannot make a
    /// live member look dead.
    health: Channel,
    next: AtomicUsize,
    healthy: AtomicBool,
    leader: AtomicBool,
    id: AtomicU64,
    /// Listed in the configuration (never removed by discovery).
    configured: bool,
}

impl Member {
    pub fn new(
        url: &str,
        config: &UpstreamConfig,
        tls: Option<&UpstreamTls>,
        configured: bool,
    ) -> Result<Member, tonic::transport::Error> {
        let dial = Duration::from_millis(config.dial_timeout_ms);
        let mut endpoint = Endpoint::from_shared(url.to_string())?;
        if let (true, Some(tls)) = (url.starts_with("https://"), tls) {
            endpoint = endpoint.tls_config(tls.grpc.clone())?;
        }
        let endpoint = endpoint
            .connect_timeout(dial)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .initial_connection_window_size(Some(8 * 1024 * 1024))
            .initial_stream_window_size(Some(2 * 1024 * 1024));
        let channels = (0..config.connections_per_member)
            .map(|_| endpoint.connect_with_connector_lazy(corked_connector(dial)))
            .collect();
        let health = endpoint.clone().timeout(dial).connect_lazy();
        Ok(Member {
            url: url.to_string(),
            channels,
            health,
            next: AtomicUsize::new(0),
            healthy: AtomicBool::new(false),
            leader: AtomicBool::new(false),
            id: AtomicU64::new(0),
            configured,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next request connection, in turn.
    pub fn channel(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }

    pub(super) fn health_channel(&self) -> Channel {
        self.health.clone()
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets the health flag; returns whether it changed.
    pub(super) fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    pub(super) fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    /// etcd's member id, once a health check has seen it (0 before).
    pub fn id(&self) -> u64 {
        self.id.load(Ordering::Relaxed)
    }

    pub(super) fn set_id(&self, id: u64) {
        self.id.store(id, Ordering::Relaxed);
    }

    pub(super) fn is_configured(&self) -> bool {
        self.configured
    }
}

/// Dials a member over TCP, with writes coalesced (see `corked`): requests that many clients
/// send at once leave in few writes. TLS, when configured, is layered on top by tonic.
fn corked_connector(
    dial: Duration,
) -> impl tower::Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<crate::corked::Corked<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = impl std::future::Future<
        Output = std::io::Result<
            hyper_util::rt::TokioIo<crate::corked::Corked<tokio::net::TcpStream>>,
        >,
    > + Send,
> + Clone
       + Send {
    tower::service_fn(move |uri: http::Uri| async move {
        let host = uri
            .host()
            .unwrap_or("127.0.0.1")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(2379);
        let connect = tokio::net::TcpStream::connect((host.as_str(), port));
        let stream = tokio::time::timeout(dial, connect).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "tcp connect timed out")
        })??;
        stream.set_nodelay(true)?;
        Ok(hyper_util::rt::TokioIo::new(crate::corked::Corked::new(
            stream,
        )))
    })
}
