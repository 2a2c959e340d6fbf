//! The etcd member pool: a set of members with their connections and health, which one takes
//! the next request, and how failures move requests to another member.

mod conn;
mod discovery;
mod health;
mod member;
mod unary;

pub use conn::Conn;
pub use member::{BadUrl, Member};
pub use unary::{range_encoded, unary};

use crate::config::UpstreamConfig;
use crate::errors::GatewayError;
use crate::metrics::UpstreamMetrics;
use crate::tls::UpstreamTls;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How long no member may know a leader before streams that require one are ended: etcd's
/// three election timeouts at its default timing.
const LEADERLESS_AFTER: Duration = Duration::from_secs(3);

/// Returns once the cluster has been without a leader long enough for etcd to end the streams
/// that require one (`Pool::leaderless`); never, for a stream that does not (`None`).
pub async fn leader_lost(leaderless: &mut Option<watch::Receiver<bool>>) {
    if let Some(rx) = leaderless {
        if rx.wait_for(|lost| *lost).await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

/// The members keygate forwards to. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    members: RwLock<Vec<Arc<Member>>>,
    config: UpstreamConfig,
    /// TLS for https:// members.
    tls: Option<UpstreamTls>,
    metrics: UpstreamMetrics,
    /// Wakes the health checker early after a request saw a member fail.
    recheck: Notify,
    /// Since when the members that answer have known no leader.
    leaderless_since: Mutex<Option<Instant>>,
    /// True once that has lasted `LEADERLESS_AFTER`.
    leaderless: watch::Sender<bool>,
}

impl Pool {
    pub fn new(config: &UpstreamConfig, metrics: UpstreamMetrics) -> Result<Pool, BadUrl> {
        Self::with_tls(config, metrics, None)
    }

    /// A pool whose https:// members are reached with `tls`.
    pub fn with_tls(
        config: &UpstreamConfig,
        metrics: UpstreamMetrics,
        tls: Option<UpstreamTls>,
    ) -> Result<Pool, BadUrl> {
        let mut members = Vec::with_capacity(config.endpoints.len());
        for url in &config.endpoints {
            members.push(Arc::new(Member::new(url, config, tls.as_ref(), true)?));
        }
        metrics.members.set(members.len() as i64);
        Ok(Pool {
            inner: Arc::new(Inner {
                members: RwLock::new(members),
                config: config.clone(),
                tls,
                metrics,
                recheck: Notify::new(),
                leaderless_since: Mutex::new(None),
                leaderless: watch::Sender::new(false),
            }),
        })
    }

    /// Checks every member once, then keeps checking (and discovering, if configured) in the
    /// background until the returned tasks are dropped with the runtime.
    pub async fn start(&self) {
        health::check_all(self).await;
        tokio::spawn(health::run(self.clone()));
        if self.inner.config.discover_members {
            tokio::spawn(discovery::run(self.clone()));
        }
    }

    /// The member the next request goes to: the leader when it is healthy (a follower would
    /// only forward writes and read-index requests to it), else the first healthy member in
    /// configuration order, so that one keygate reads from one member at a time. When no member
    /// is marked healthy the marks may be stale (a member just discovered, or just back), so the
    /// first member is tried anyway and the request fails with the member's own error.
    pub fn pick(&self) -> Result<Arc<Member>, GatewayError> {
        let members = self.members();
        let healthy = || members.iter().filter(|m| m.is_healthy());
        healthy()
            .find(|m| m.is_leader())
            .or_else(|| healthy().next())
            .or_else(|| members.first())
            .cloned()
            .ok_or(GatewayError::NoHealthyMember)
    }

    /// Whether a stream on `member` should move: the health checker has marked it down and
    /// another member up (with none up, the marks may be stale and moving helps nothing).
    pub fn should_leave(&self, member: &Arc<Member>) -> bool {
        !member.is_healthy()
            && (self.members().iter()).any(|m| !Arc::ptr_eq(m, member) && m.is_healthy())
    }

    /// Picks a member other than those already tried, for a retry.
    pub fn pick_excluding(&self, tried: &[Arc<Member>]) -> Option<Arc<Member>> {
        let fresh = |m: &&Arc<Member>| !tried.iter().any(|t| Arc::ptr_eq(t, m));
        let members = self.members();
        let found = members.iter().filter(fresh).find(|m| m.is_healthy());
        // When every other member is marked down, still try one: the mark may be stale.
        found.or_else(|| members.iter().find(fresh)).cloned()
    }

    /// A request saw this member fail at the transport level: stop sending it work until the
    /// health checker sees it answer again.
    pub fn report_failure(&self, member: &Member) {
        if member.set_healthy(false) {
            tracing::warn!(member = %member.url(), "etcd member failed a request; marked unhealthy");
            self.inner
                .metrics
                .member_healthy
                .with_label_values(&[member.url()])
                .set(0);
        }
        self.inner.recheck.notify_one();
    }

    /// Counts an upstream error, and takes the member out of rotation when the error came from
    /// the connection rather than from etcd.
    pub fn note_failure(&self, member: &Member, status: &tonic::Status) {
        let transport = crate::errors::is_transport_failure(status);
        let outcome = if transport {
            "unavailable"
        } else {
            "etcd_error"
        };
        self.record(member, outcome);
        if transport {
            self.report_failure(member);
        }
    }

    pub fn record(&self, member: &Member, outcome: &'static str) {
        self.inner
            .metrics
            .requests
            .with_label_values(&[member.url(), outcome])
            .inc();
    }

    pub fn metrics(&self) -> &UpstreamMetrics {
        &self.inner.metrics
    }

    /// True once the members that answer have known no leader for `LEADERLESS_AFTER`, as the
    /// health checker sees it; streams that require a leader end then, as on etcd.
    pub fn leaderless(&self) -> watch::Receiver<bool> {
        self.inner.leaderless.subscribe()
    }

    /// After a round of health checks (`leaderless`: a member answered without a leader, and
    /// none with one): whether that has lasted long enough for etcd to end the streams that
    /// require a leader.
    fn note_leader(&self, leaderless: bool) {
        let Ok(mut since) = self.inner.leaderless_since.lock() else {
            return;
        };
        let lost = if leaderless {
            since.get_or_insert_with(Instant::now).elapsed() >= LEADERLESS_AFTER
        } else {
            *since = None;
            false
        };
        self.inner.leaderless.send_if_modified(|now| {
            let changed = *now != lost;
            *now = lost;
            changed
        });
    }

    /// True when at least one member is healthy.
    pub fn any_healthy(&self) -> bool {
        self.members().iter().any(|m| m.is_healthy())
    }

    pub fn members(&self) -> Vec<Arc<Member>> {
        match self.inner.members.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn config(&self) -> &UpstreamConfig {
        &self.inner.config
    }

    /// The TLS used for https:// members, if configured.
    pub fn tls(&self) -> Option<&UpstreamTls> {
        self.inner.tls.as_ref()
    }

    fn health_interval(&self) -> Duration {
        Duration::from_millis(self.inner.config.health_interval_ms)
    }

    fn replace_members(&self, members: Vec<Arc<Member>>) {
        self.inner.metrics.members.set(members.len() as i64);
        match self.inner.members.write() {
            Ok(mut m) => *m = members,
            Err(poisoned) => *poisoned.into_inner() = members,
        }
    }
}
