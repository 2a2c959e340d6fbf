//! The quotas that need to look at etcd's state: stored keys and bytes (counted in the mirror)
//! and live leases (counted in etcd's lease list).

use super::{Tenant, Tenants, NO_SPACE, TOO_MANY_REQUESTS};
use crate::describe::Description;
use crate::mirror::Usage;
use keygate_proto::etcdserverpb::{lease_client::LeaseClient, LeaseLeasesRequest};
use std::sync::Weak;
use std::time::Duration;
use tonic::Status;

impl Tenants {
    /// The storage quotas of a write: refused when it would add keys or bytes past them.
    /// Deletes and writes that shrink the namespace always pass. When the mirror cannot count
    /// (not loaded, behind), the write is let through and logged.
    pub async fn check_storage(&self, tenant: &Tenant, what: &Description) -> Result<(), Status> {
        let quota = &tenant.quota;
        if !quota.limits_storage() || what.puts.is_empty() {
            return Ok(());
        }
        let Some(mirror) = &self.mirror else {
            return Ok(());
        };
        let ns = &tenant.namespace;
        let keys: Vec<_> = what.puts.iter().map(|(k, _)| ns.key(k)).collect();
        let (start, end) = ns.bounds();
        let cap = Usage {
            keys: quota.keys,
            bytes: quota.bytes,
        };
        let Some((used, sizes)) = mirror
            .usage((&start, &end), ns.prefix().len(), &keys, cap)
            .await
        else {
            tracing::warn!(tenant = %tenant.label, "storage quota not checked: the mirror cannot count now");
            return Ok(());
        };
        let (mut add_keys, mut add_bytes) = (0u64, 0i64);
        for ((key, value), old) in what.puts.iter().zip(sizes) {
            let new = value.map(|v| (key.len() as u64 + v) as i64);
            match (old, new) {
                (None, new) => {
                    add_keys += 1;
                    add_bytes += new.unwrap_or(key.len() as i64);
                }
                (Some(old), Some(new)) => add_bytes += new - old as i64,
                (Some(_), None) => {}
            }
        }
        if quota.keys > 0 && add_keys > 0 && used.keys + add_keys > quota.keys {
            return Err(tenant.refuse("keys", NO_SPACE));
        }
        if quota.bytes > 0 && add_bytes > 0 && used.bytes as i64 + add_bytes > quota.bytes as i64 {
            return Err(tenant.refuse("bytes", NO_SPACE));
        }
        Ok(())
    }

    /// The lease quota of a LeaseGrant: the tenant's live leases, counted in etcd's list.
    pub async fn check_leases(&self, tenant: &Tenant) -> Result<(), Status> {
        if tenant.quota.leases == 0 {
            return Ok(());
        }
        let member = self.pool.pick()?;
        let leases = match LeaseClient::new(member.channel())
            .lease_leases(LeaseLeasesRequest {})
            .await
        {
            Ok(resp) => resp.into_inner().leases,
            Err(status) => {
                self.pool.note_failure(&member, &status);
                return Err(crate::errors::for_client(status));
            }
        };
        let held = (leases.iter())
            .filter(|l| tenant.namespace.owns_lease(l.id))
            .count() as u64;
        if held >= tenant.quota.leases {
            return Err(tenant.refuse("leases", TOO_MANY_REQUESTS));
        }
        Ok(())
    }
}

/// Counts every labeled tenant's stored keys and bytes into the metrics, every `every`, until
/// keygate drops its tenants.
pub(super) async fn count_usage(tenants: Weak<Tenants>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(tenants) = tenants.upgrade() else {
            return;
        };
        let Some(mirror) = &tenants.mirror else {
            return;
        };
        for tenant in tenants.all() {
            if tenant.label == "other" {
                continue;
            }
            let ns = &tenant.namespace;
            let (start, end) = ns.bounds();
            let all = Usage {
                keys: u64::MAX,
                bytes: u64::MAX,
            };
            if let Some((used, _)) = mirror
                .usage((&start, &end), ns.prefix().len(), &[], all)
                .await
            {
                let m = &tenants.metrics;
                let label = [tenant.label.as_str()];
                m.stored_keys
                    .with_label_values(&label)
                    .set(used.keys as i64);
                m.stored_bytes
                    .with_label_values(&label)
                    .set(used.bytes as i64);
            }
        }
    }
}
