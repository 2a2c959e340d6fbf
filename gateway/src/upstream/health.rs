//! The health checker: asks every member for its Status on an interval (and at once after a
//! request saw a member fail). A member is healthy when it answers, knows a leader and is no
//! learner (a learner refuses every stream and all but serializable reads).

use super::{Member, Pool};
use keygate_proto::etcdserverpb::{maintenance_client::MaintenanceClient, StatusRequest};
use std::sync::Arc;

pub(super) async fn run(pool: Pool) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(pool.health_interval()) => {}
            _ = pool.inner.recheck.notified() => {
                // Let a burst of failures settle into one round.
                tokio::time::sleep(pool.health_interval() / 10).await;
            }
        }
        check_all(&pool).await;
    }
}

pub(super) async fn check_all(pool: &Pool) {
    let members = pool.members();
    let checks = members.iter().map(|m| check(pool, m));
    let results = futures::future::join_all(checks).await;
    // Leaderless only on the members' own word: one that does not answer (dead, unreachable,
    // slow under load) says nothing about the cluster's leader.
    let leaderless = results.contains(&"no_leader") && !results.contains(&"ok");
    pool.note_leader(leaderless);
}

/// Checks one member; "ok", "no_leader" (it answered, knowing no leader), "learner" or "error".
async fn check(pool: &Pool, member: &Arc<Member>) -> &'static str {
    let metrics = pool.metrics();
    let url = member.url();
    let mut client = MaintenanceClient::new(member.health_channel());
    let (healthy, result) = match client.status(StatusRequest {}).await {
        Ok(resp) => {
            let status = resp.into_inner();
            let id = status.header.map(|h| h.member_id).unwrap_or(0);
            member.set_id(id);
            member.set_leader(status.leader != 0 && status.leader == id);
            if status.leader == 0 {
                (false, "no_leader")
            } else if status.is_learner {
                (false, "learner")
            } else {
                (true, "ok")
            }
        }
        Err(_) => {
            member.set_leader(false);
            (false, "error")
        }
    };
    metrics
        .health_checks
        .with_label_values(&[url, result])
        .inc();
    metrics
        .member_healthy
        .with_label_values(&[url])
        .set(i64::from(healthy));
    metrics
        .member_leader
        .with_label_values(&[url])
        .set(i64::from(member.is_leader()));
    if member.set_healthy(healthy) {
        if healthy {
            tracing::info!(member = %url, "etcd member is healthy");
        } else {
            tracing::warn!(member = %url, result, "etcd member is unhealthy");
        }
    }
    result
}
