//! One etcd member: its URL, the HTTP/2 connections keygate keeps to it, and its last known
//! health and role.

use super::conn::{Conn, Settings};
use crate::config::UpstreamConfig;
use crate::tls::UpstreamTls;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A member URL keygate cannot connect to.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct BadUrl {
    url: String,
    reason: String,
}

pub struct Member {
    url: String,
    /// Connections for client requests, used in turn.
    channels: Vec<Conn>,
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
    ) -> Result<Member, BadUrl> {
        let bad = |reason: String| BadUrl {
            url: url.to_string(),
            reason,
        };
        let dial = Duration::from_millis(config.dial_timeout_ms);
        let settings = Settings {
            dial_timeout: dial,
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            connection_window: 8 * 1024 * 1024,
            stream_window: 2 * 1024 * 1024,
        };
        let channels = (0..config.connections_per_member)
            .map(|_| Conn::new(url, settings, tls))
            .collect::<Result<_, _>>()
            .map_err(bad)?;
        // Health checks go through tonic's own channel, with a timeout per call.
        let mut endpoint =
            Endpoint::from_shared(url.to_string()).map_err(|e| bad(e.to_string()))?;
        if let (true, Some(tls)) = (url.starts_with("https://"), tls) {
            endpoint = (endpoint.tls_config(tls.grpc.clone())).map_err(|e| bad(e.to_string()))?;
        }
        let health = endpoint
            .connect_timeout(dial)
            .tcp_nodelay(true)
            .timeout(dial)
            .connect_lazy();
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
    pub fn channel(&self) -> Conn {
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
