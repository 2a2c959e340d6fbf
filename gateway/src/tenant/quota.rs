//! The quotas that need to look at etcd's state: stored keys and bytes (counted in the mirror,
//! plus the writes admitted and not yet in it) and live leases (counted in etcd's lease list).

use super::{Tenant, Tenants, NO_SPACE, TOO_MANY_REQUESTS};
use crate::describe::Description;
use crate::errors::GatewayError;
use crate::mirror::{Counted, Usage};
use keygate_proto::etcdserverpb::{lease_client::LeaseClient, LeaseLeasesRequest};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tonic::Status;

/// A tenant's writes admitted under its storage quota that the mirror may not count yet: each
/// holds the keys and bytes it adds until the mirror has applied the revision it was written
/// at, so concurrent writes see one another.
#[derive(Default)]
pub(super) struct InFlight {
    next: u64,
    writes: Vec<Claimed>,
}

struct Claimed {
    id: u64,
    keys: u64,
    bytes: i64,
    /// The revision the write was answered at; `None` while it is in flight.
    written_at: Option<i64>,
}

impl InFlight {
    /// What the writes not counted at `revision` add, forgetting those that are.
    fn pending(&mut self, revision: i64) -> (u64, i64) {
        self.writes
            .retain(|w| w.written_at.is_none_or(|at| at > revision));
        let keys = self.writes.iter().map(|w| w.keys).sum();
        let bytes = self.writes.iter().map(|w| w.bytes.max(0)).sum();
        (keys, bytes)
    }
}

/// A write's claim on its tenant's storage quota, held from admission until it is answered
/// ([`StorageClaim::written`]); dropped unanswered (the write failed), it is given back.
pub struct StorageClaim {
    tenant: Arc<Tenant>,
    id: u64,
    written_at: Option<i64>,
}

impl StorageClaim {
    /// The write was answered at `revision`: counted as pending until the mirror has it.
    pub fn written(mut self, revision: i64) {
        self.written_at = Some(revision);
    }
}

impl Drop for StorageClaim {
    fn drop(&mut self) {
        let Ok(mut in_flight) = self.tenant.in_flight.lock() else {
            return;
        };
        match self.written_at {
            Some(at) => {
                if let Some(w) = in_flight.writes.iter_mut().find(|w| w.id == self.id) {
                    w.written_at = Some(at);
                }
            }
            None => in_flight.writes.retain(|w| w.id != self.id),
        }
    }
}

impl Tenants {
    /// A write the mirror could not count for its tenant's storage quota: counted, logged (once
    /// a minute at most), and let through or refused as configured.
    fn uncounted(&self, tenant: &Tenant) -> Result<Option<StorageClaim>, Status> {
        let metric = self
            .metrics
            .quota_uncounted
            .with_label_values(&[&tenant.label]);
        metric.inc();
        let refuse = self.config.uncounted_writes == "refuse";
        if let Ok(mut last) = self.uncounted_logged.lock() {
            if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                *last = Some(Instant::now());
                tracing::warn!(
                    tenant = %tenant.label,
                    uncounted_so_far = metric.get(),
                    refused = refuse,
                    "storage quota not checked: the mirror cannot count now (tenants.uncounted_writes)"
                );
            }
        }
        if refuse {
            return Err(GatewayError::QuotaUncounted.into());
        }
        Ok(None)
    }

    /// The storage quotas of a write: refused when it would add keys or bytes past them,
    /// counting what the namespace holds and the writes admitted before it that the mirror
    /// does not have yet. Deletes and writes that shrink the namespace always pass. When the
    /// mirror cannot count (not loaded, behind), `tenants.uncounted_writes` says whether the
    /// write goes through. The claim returned must be held until the write is answered.
    pub async fn check_storage(
        &self,
        tenant: &Arc<Tenant>,
        what: &Description,
    ) -> Result<Option<StorageClaim>, Status> {
        let quota = &tenant.quota;
        if !quota.limits_storage() || what.puts.is_empty() {
            return Ok(None);
        }
        let Some(mirror) = &self.mirror else {
            return Ok(None);
        };
        let ns = &tenant.namespace;
        let keys: Vec<_> = what.puts.iter().map(|(k, _)| ns.key(k)).collect();
        let (start, end) = ns.bounds();
        let cap = Usage {
            keys: quota.keys,
            bytes: quota.bytes,
        };
        let Some(Counted {
            used,
            sizes,
            revision,
        }) = mirror
            .usage((&start, &end), ns.prefix().len(), &keys, cap)
            .await
        else {
            return self.uncounted(tenant);
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
        if add_keys == 0 && add_bytes <= 0 {
            return Ok(None);
        }
        let Ok(mut in_flight) = tenant.in_flight.lock() else {
            return Ok(None);
        };
        let (pending_keys, pending_bytes) = in_flight.pending(revision);
        if quota.keys > 0 && add_keys > 0 && used.keys + pending_keys + add_keys > quota.keys {
            return Err(tenant.refuse("keys", NO_SPACE));
        }
        let bytes_after = used.bytes as i64 + pending_bytes + add_bytes;
        if quota.bytes > 0 && add_bytes > 0 && bytes_after > quota.bytes as i64 {
            return Err(tenant.refuse("bytes", NO_SPACE));
        }
        in_flight.next += 1;
        let id = in_flight.next;
        in_flight.writes.push(Claimed {
            id,
            keys: add_keys,
            bytes: add_bytes,
            written_at: None,
        });
        Ok(Some(StorageClaim {
            tenant: tenant.clone(),
            id,
            written_at: None,
        }))
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
            if let Some(Counted { used, .. }) = mirror
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
