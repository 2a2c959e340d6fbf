//! Members added to a running cluster, as an operator grows or replaces one: a learner is
//! added with MemberAdd, then started to join the existing cluster.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use keygate_proto::etcdserverpb::{MemberAddRequest, StatusRequest};

use super::{EtcdCluster, Member, START_TIMEOUT};
use crate::process::poll_until;
use crate::{ports, Clients};

impl EtcdCluster {
    /// Adds a learner (etcd's `member add --learner`), starts it, and returns its index once it
    /// answers Status as a learner that knows the leader.
    pub async fn add_learner(&mut self) -> Result<usize> {
        let i = self.members.len();
        let ports = ports::free_ports(3)?;
        let name = format!("m{i}");
        let peer_url = format!("http://127.0.0.1:{}", ports[1]);
        let mut c = self.clients(0).await?;
        let request = MemberAddRequest {
            peer_ur_ls: vec![peer_url.clone()],
            is_learner: true,
        };
        // etcd refuses to change a cluster whose members have not all been connected for a
        // while ("unhealthy cluster"), as a freshly started one is not.
        let deadline = Instant::now() + START_TIMEOUT;
        let added = loop {
            match c.cluster.member_add(request.clone()).await {
                Ok(resp) => break resp.into_inner(),
                Err(status)
                    if status.message().contains("unhealthy cluster")
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(status) => return Err(status).context("member add"),
            }
        };
        let joins = added
            .members
            .iter()
            .map(|m| {
                let member_name = if m.name.is_empty() { &name } else { &m.name };
                let peer = m.peer_ur_ls.first().map(String::as_str).unwrap_or_default();
                format!("{member_name}={peer}")
            })
            .collect::<Vec<_>>()
            .join(",");
        self.members.push(Member {
            name: name.clone(),
            client_port: ports[0],
            peer_port: ports[1],
            metrics_port: ports[2],
            data_dir: self.dir.path().join(format!("{name}.data")),
            log_path: self.dir.path().join(format!("{name}.log")),
            child: None,
            joins: Some(joins),
        });
        self.spawn(i)?;
        let endpoint = self.endpoint(i);
        poll_until(START_TIMEOUT, &format!("learner {name} to join"), || {
            let endpoint = endpoint.clone();
            async move {
                let Ok(mut c) = Clients::connect(&endpoint).await else {
                    return Ok(false);
                };
                let status = tokio::time::timeout(
                    Duration::from_secs(2),
                    c.maintenance.status(StatusRequest {}),
                )
                .await;
                Ok(matches!(status, Ok(Ok(s)) if s.get_ref().is_learner && s.get_ref().leader != 0))
            }
        })
        .await
        .with_context(|| self.log_tails(10))?;
        Ok(i)
    }
}
