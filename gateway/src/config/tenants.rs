//! `[tenants]`: quotas and metrics of the namespaces authorizers confine callers to.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Tenants are the namespaces of allow-in-namespace decisions.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantsConfig {
    /// Tenants that get metrics labels of their own, first come; the rest share "other".
    pub max_labeled: usize,
    /// How often each tenant's stored keys and bytes are counted for the metrics; 0: never.
    pub usage_interval_ms: u64,
    /// Quotas of every tenant without an entry in `namespaces`.
    pub quota: Quota,
    /// Quotas by namespace prefix (as the authorizer answers it, e.g. "/tenants/alice/").
    pub namespaces: BTreeMap<String, Quota>,
    /// A write held to a storage quota while the mirror cannot count the namespace (loading,
    /// over its memory budget, behind etcd): "allow" lets it through uncounted, "refuse"
    /// answers UNAVAILABLE so that the client tries again.
    pub uncounted_writes: String,
}

impl Default for TenantsConfig {
    fn default() -> Self {
        TenantsConfig {
            max_labeled: 100,
            usage_interval_ms: 10000,
            quota: Quota::default(),
            namespaces: BTreeMap::new(),
            uncounted_writes: "allow".into(),
        }
    }
}

/// One tenant's limits; 0 is no limit.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Quota {
    /// Requests per second (token bucket refill rate).
    pub requests_per_second: f64,
    /// Requests allowed in a burst (bucket size); 0: one second's worth.
    pub burst: u32,
    /// Watchers open at once.
    pub watches: u64,
    /// Leases alive at once.
    pub leases: u64,
    /// Keys stored in the namespace.
    pub keys: u64,
    /// Bytes stored in the namespace: the tenant's key and value lengths.
    pub bytes: u64,
}

impl Quota {
    /// Whether the quota counts what the namespace stores (which needs the mirror).
    pub fn limits_storage(&self) -> bool {
        self.keys > 0 || self.bytes > 0
    }
}
