//! Tenants: the namespaces authorizers confine callers to, each with its quotas (request rate,
//! watchers, leases, stored keys and bytes) and its metrics. A tenant is known by its namespace
//! prefix; every identity confined to the same prefix shares one tenant.

mod quota;

pub use quota::StorageClaim;

use crate::config::{Quota, TenantsConfig};
use crate::metrics::TenantMetrics;
use crate::mirror::Mirror;
use crate::namespace::Namespace;
use crate::upstream::Pool;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Status;

/// etcd's answer when a client sends more than the server will take.
pub const TOO_MANY_REQUESTS: &str = "etcdserver: too many requests";
/// etcd's answer to a write past its storage quota.
pub const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

/// Every tenant seen so far.
pub struct Tenants {
    config: TenantsConfig,
    metrics: TenantMetrics,
    mirror: Option<Mirror>,
    pool: Pool,
    known: Mutex<HashMap<Bytes, Arc<Tenant>>>,
    /// When a write that could not be counted was last logged.
    uncounted_logged: Mutex<Option<std::time::Instant>>,
}

/// One tenant.
pub struct Tenant {
    pub namespace: Namespace,
    label: String,
    quota: Quota,
    bucket: Mutex<Bucket>,
    watchers: AtomicI64,
    /// Writes admitted under the storage quotas that the mirror may not count yet.
    in_flight: Mutex<quota::InFlight>,
    metrics: TenantMetrics,
}

impl Tenants {
    pub fn new(
        config: &TenantsConfig,
        metrics: &TenantMetrics,
        mirror: Option<Mirror>,
        pool: Pool,
    ) -> Arc<Tenants> {
        let tenants = Arc::new(Tenants {
            config: config.clone(),
            metrics: metrics.clone(),
            mirror,
            pool,
            known: Mutex::new(HashMap::new()),
            uncounted_logged: Mutex::new(None),
        });
        if config.usage_interval_ms > 0 && tenants.mirror.is_some() {
            let every = Duration::from_millis(config.usage_interval_ms);
            tokio::spawn(quota::count_usage(Arc::downgrade(&tenants), every));
        }
        tenants
    }

    /// The tenant of namespace `ns`.
    pub fn get(&self, ns: &Namespace) -> Arc<Tenant> {
        let Ok(mut known) = self.known.lock() else {
            return Arc::new(self.tenant(ns, "other".into()));
        };
        if let Some(tenant) = known.get(ns.prefix()) {
            return tenant.clone();
        }
        let label = if known.len() < self.config.max_labeled {
            ns.label()
        } else {
            "other".into()
        };
        let tenant = Arc::new(self.tenant(ns, label));
        known.insert(ns.prefix().clone(), tenant.clone());
        tenant
    }

    fn tenant(&self, ns: &Namespace, label: String) -> Tenant {
        let quota = (self.config.namespaces.get(&ns.label()))
            .unwrap_or(&self.config.quota)
            .clone();
        Tenant {
            namespace: ns.clone(),
            label,
            bucket: Mutex::new(Bucket::new(&quota)),
            quota,
            watchers: AtomicI64::new(0),
            in_flight: Mutex::new(quota::InFlight::default()),
            metrics: self.metrics.clone(),
        }
    }

    fn all(&self) -> Vec<Arc<Tenant>> {
        self.known
            .lock()
            .map(|known| known.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl Tenant {
    /// The request rate quota, and the request in the tenant's metrics.
    pub fn admit(&self, method: &str, request_bytes: usize) -> Result<(), Status> {
        self.metrics
            .requests
            .with_label_values(&[&self.label, method])
            .inc();
        self.bytes(method, "in", request_bytes);
        let allowed = self.bucket.lock().map(|mut b| b.take()).unwrap_or(true);
        if allowed {
            Ok(())
        } else {
            Err(self.refuse("rate", TOO_MANY_REQUESTS))
        }
    }

    pub fn bytes(&self, method: &str, direction: &str, bytes: usize) {
        self.metrics
            .bytes
            .with_label_values(&[&self.label, method, direction])
            .inc_by(bytes as u64);
    }

    /// A request keygate refused inside the namespace.
    pub fn denied(&self) {
        self.metrics.denials.with_label_values(&[&self.label]).inc();
    }

    fn refuse(&self, quota: &str, message: &str) -> Status {
        self.metrics
            .quota_refusals
            .with_label_values(&[&self.label, quota])
            .inc();
        Status::resource_exhausted(message)
    }

    /// A place for one more watcher, held until the watcher ends.
    pub fn watcher(self: &Arc<Self>) -> Result<WatcherSlot, Status> {
        let open = self.watchers.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = WatcherSlot(self.clone());
        if self.quota.watches > 0 && open > self.quota.watches as i64 {
            drop(slot);
            return Err(self.refuse("watches", TOO_MANY_REQUESTS));
        }
        self.metrics
            .watchers
            .with_label_values(&[&self.label])
            .set(open);
        Ok(slot)
    }
}

/// One open watcher of a tenant; dropping it frees the place.
pub struct WatcherSlot(Arc<Tenant>);

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        let open = self.0.watchers.fetch_sub(1, Ordering::AcqRel) - 1;
        (self.0.metrics.watchers)
            .with_label_values(&[&self.0.label])
            .set(open);
    }
}

/// The request-rate token bucket.
struct Bucket {
    rate: f64,
    size: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(quota: &Quota) -> Bucket {
        let rate = quota.requests_per_second;
        let size = if quota.burst > 0 {
            f64::from(quota.burst)
        } else {
            rate.ceil().max(1.0)
        };
        Bucket {
            rate,
            size,
            tokens: size,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.size);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_its_burst_then_its_rate() {
        let quota = Quota {
            requests_per_second: 10.0,
            burst: 3,
            ..Quota::default()
        };
        let mut bucket = Bucket::new(&quota);
        assert!((0..3).all(|_| bucket.take()));
        assert!(!bucket.take());
        bucket.at -= Duration::from_millis(250);
        assert!(bucket.take() && bucket.take());
        assert!(!bucket.take());
        assert!(Bucket::new(&Quota::default()).take());
    }
}
