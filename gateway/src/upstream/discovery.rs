//! Member discovery: adds the members that MemberList reports and drops discovered members
//! that left the cluster. Members from the configuration always stay.

use super::{Member, Pool};
use keygate_proto::etcdserverpb::{cluster_client::ClusterClient, MemberListRequest};
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn run(pool: Pool) {
    let interval = Duration::from_millis(pool.config().discover_interval_ms);
    loop {
        if let Err(e) = discover(&pool).await {
            tracing::debug!(error = %e, "member discovery failed; will try again");
        }
        tokio::time::sleep(interval).await;
    }
}

async fn discover(pool: &Pool) -> Result<(), tonic::Status> {
    let member = pool.pick()?;
    let list = ClusterClient::new(member.channel())
        .member_list(MemberListRequest {
            linearizable: false,
        })
        .await?
        .into_inner();
    let urls: Vec<String> = list
        .members
        .iter()
        .filter(|m| !m.is_learner)
        .filter_map(|m| {
            m.client_ur_ls
                .iter()
                .find(|u| u.starts_with("http://"))
                .cloned()
        })
        .map(|u| u.trim_end_matches('/').to_string())
        .collect();
    let current = pool.members();
    let mut next: Vec<Arc<Member>> = current
        .iter()
        .filter(|m| m.is_configured() || urls.iter().any(|u| u == m.url()))
        .cloned()
        .collect();
    for url in &urls {
        if !next.iter().any(|m| m.url() == url) {
            match Member::new(url, pool.config(), pool.tls(), false) {
                Ok(m) => {
                    tracing::info!(member = %url, "discovered etcd member");
                    next.push(Arc::new(m));
                }
                Err(e) => tracing::warn!(member = %url, error = %e, "ignoring discovered member"),
            }
        }
    }
    if next.len() != current.len() || next.iter().zip(&current).any(|(a, b)| !Arc::ptr_eq(a, b)) {
        pool.replace_members(next);
        // New members take requests only once checked.
        super::health::check_all(pool).await;
    }
    Ok(())
}
