//! keygate_upstream_*: the health of each etcd member and what keygate sent it.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct UpstreamMetrics {
    /// 1 when the member passed its last health check.
    pub member_healthy: IntGaugeVec,
    /// 1 for the member that currently leads the cluster.
    pub member_leader: IntGaugeVec,
    /// Health checks by member and result.
    pub health_checks: IntCounterVec,
    /// Requests sent to each member, by outcome (ok, error, unavailable).
    pub requests: IntCounterVec,
    /// Requests retried on another member after a member failed them.
    pub retries: IntCounterVec,
    /// Members in the pool.
    pub members: IntGauge,
}

impl UpstreamMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let gauge_vec = |name: &str, help: &str| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), &["member"])?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                r.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let members = IntGauge::new(
            "keygate_upstream_members",
            "etcd members in keygate's pool.",
        )?;
        r.register(Box::new(members.clone()))?;
        Ok(Self {
            member_healthy: gauge_vec(
                "keygate_upstream_member_healthy",
                "1 when the member passed its last health check.",
            )?,
            member_leader: gauge_vec(
                "keygate_upstream_member_leader",
                "1 for the member that leads the cluster.",
            )?,
            health_checks: counter_vec(
                "keygate_upstream_health_checks_total",
                "Health checks of etcd members by result.",
                &["member", "result"],
            )?,
            requests: counter_vec(
                "keygate_upstream_requests_total",
                "Requests forwarded to etcd members by outcome.",
                &["member", "outcome"],
            )?,
            retries: counter_vec(
                "keygate_upstream_retries_total",
                "Requests retried on another member after a member failed them.",
                &["grpc_method"],
            )?,
            members,
        })
    }
}
