//! Per-tenant families. The `tenant` label is a namespace prefix, bounded by
//! `tenants.max_labeled` (later tenants share "other").

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct TenantMetrics {
    /// Requests by tenant and method.
    pub requests: IntCounterVec,
    /// Request and response message bytes, by tenant, method and direction (in, out).
    pub bytes: IntCounterVec,
    /// Requests keygate refused inside a namespace (cluster-wide RPCs, others' leases), by
    /// tenant.
    pub denials: IntCounterVec,
    /// Refusals by tenant and quota (rate, watches, leases, keys, bytes).
    pub quota_refusals: IntCounterVec,
    /// Writes held to a storage quota that the mirror could not count, by tenant.
    pub quota_uncounted: IntCounterVec,
    /// Watchers open, by tenant.
    pub watchers: IntGaugeVec,
    /// Keys and bytes stored in the namespace (keys and values as the tenant sees them), by
    /// tenant, as last counted in the mirror.
    pub stored_keys: IntGaugeVec,
    pub stored_bytes: IntGaugeVec,
}

impl TenantMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["tenant"])?;
            r.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        Ok(TenantMetrics {
            requests: counter(
                "keygate_tenant_requests_total",
                "Requests made inside a tenant namespace, by tenant and method.",
                &["tenant", "method"],
            )?,
            bytes: counter(
                "keygate_tenant_message_bytes_total",
                "Message bytes of a tenant's requests (in) and responses (out), by method.",
                &["tenant", "method", "direction"],
            )?,
            denials: counter(
                "keygate_tenant_denials_total",
                "Requests refused inside a namespace: cluster-wide RPCs, other tenants' leases.",
                &["tenant"],
            )?,
            quota_refusals: counter(
                "keygate_tenant_quota_refusals_total",
                "Requests refused by a tenant quota, by tenant and quota.",
                &["tenant", "quota"],
            )?,
            quota_uncounted: counter(
                "keygate_tenant_quota_uncounted_total",
                "Writes held to a storage quota while the mirror could not count the namespace.",
                &["tenant"],
            )?,
            watchers: gauge("keygate_tenant_watchers", "Watchers a tenant has open.")?,
            stored_keys: gauge(
                "keygate_tenant_stored_keys",
                "Keys stored in a tenant's namespace, as last counted.",
            )?,
            stored_bytes: gauge(
                "keygate_tenant_stored_bytes",
                "Bytes (keys and values) stored in a tenant's namespace, as last counted.",
            )?,
        })
    }
}
