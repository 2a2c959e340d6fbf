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
    let tls = pool.tls().is_some();
    let urls: Vec<String> = list
        .members
        .iter()
        .filter(|m| !m.is_learner)
        .filter_map(|m| reachable_url(&m.client_ur_ls, tls))
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

/// The client URL keygate reaches a member at: its https one when keygate has TLS settings for
/// the members (`upstream.tls`), else (or when it advertises none) its http one.
fn reachable_url(urls: &[String], tls: bool) -> Option<&String> {
    let https = || urls.iter().find(|u| u.starts_with("https://"));
    let http = || urls.iter().find(|u| u.starts_with("http://"));
    if tls {
        https().or_else(http)
    } else {
        http()
    }
}

#[cfg(test)]
mod tests {
    use super::reachable_url;

    #[test]
    fn members_are_reached_over_tls_when_keygate_has_tls_settings() {
        let both = [
            "http://127.0.0.1:2379".to_string(),
            "https://10.0.0.1:2379".to_string(),
        ];
        let https = ["https://10.0.0.1:2379".to_string()];
        assert_eq!(reachable_url(&both, true), Some(&both[1]));
        assert_eq!(reachable_url(&both, false), Some(&both[0]));
        assert_eq!(reachable_url(&https, true), Some(&https[0]));
        assert_eq!(reachable_url(&https, false), None);
        assert_eq!(reachable_url(&both[..1], true), Some(&both[0]));
    }
}
