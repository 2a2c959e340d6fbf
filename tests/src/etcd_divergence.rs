//! Whether an etcd cluster's members still hold the same keyspace.
//!
//! etcd 3.5.0–3.5.2 (CI installs 3.5.1) can lose an applied entry on a member killed under write
//! load: the consistent index was not saved atomically with the data it covers (fixed in 3.5.3,
//! etcd issue 13766). The member restarts one revision behind the others for good. A test that
//! kills members under writes checks this first: keygate cannot be judged against a cluster that
//! disagrees with itself.

use std::time::Duration;

use anyhow::{Context, Result};
use keygate_proto::etcdserverpb::{HashKvRequest, StatusRequest};

use crate::EtcdCluster;

/// How long members get to apply the same revision before they are compared.
const CATCH_UP: Duration = Duration::from_secs(5);

/// `None` when every member holds the same keyspace (the same HashKV at the same revision),
/// otherwise what differs.
pub async fn divergence(cluster: &EtcdCluster) -> Result<Option<String>> {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    let mut revisions = member_revisions(cluster).await?;
    while revisions.iter().any(|r| *r != revisions[0]) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        revisions = member_revisions(cluster).await?;
    }
    let at = revisions.iter().copied().min().context("no members")?;
    let mut hashes = Vec::new();
    for i in 0..cluster.len() {
        let mut c = cluster.clients(i).await?;
        let resp = c
            .maintenance
            .hash_kv(HashKvRequest { revision: at })
            .await
            .with_context(|| format!("HashKV at {at} on member {i}"))?;
        hashes.push(resp.into_inner().hash);
    }
    if hashes.iter().all(|h| *h == hashes[0]) {
        return Ok(None);
    }
    Ok(Some(format!(
        "etcd members disagree: revisions {revisions:?}, HashKV at {at} {hashes:?}"
    )))
}

async fn member_revisions(cluster: &EtcdCluster) -> Result<Vec<i64>> {
    let mut revisions = Vec::new();
    for i in 0..cluster.len() {
        let mut c = cluster.clients(i).await?;
        let status = c.maintenance.status(StatusRequest {}).await?.into_inner();
        revisions.push(status.header.map_or(0, |h| h.revision));
    }
    Ok(revisions)
}
