//! Helpers the mirror tests share: keygate's mirror metrics, waiting for the mirror to serve,
//! and one Range sent to keygate and to etcd directly, compared.

#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, Result};
use keygate_proto::etcdserverpb::{RangeRequest, RangeResponse, StatusRequest};
use keygate_tests::process::poll_until;
use keygate_tests::{http, Clients, EtcdCluster, Keygate};

/// keygate's /metrics text.
pub async fn scrape(keygate: &Keygate) -> Result<String> {
    let resp = http::get(keygate.addr(), "/metrics", Duration::from_secs(5)).await?;
    anyhow::ensure!(resp.status == 200, "/metrics answered {}", resp.status);
    Ok(resp.body)
}

/// The sum of every sample of `family` whose labels include each `name="value"` pair.
pub fn sum(body: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(n, v)| l.contains(&format!("{n}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One family's value (summed over its samples) from keygate.
pub async fn metric(keygate: &Keygate, family: &str, labels: &[(&str, &str)]) -> Result<f64> {
    Ok(sum(&scrape(keygate).await?, family, labels))
}

/// How keygate served Range requests so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reads {
    pub mirror: f64,
    pub upstream: f64,
    pub mirror_serializable: f64,
    pub mirror_linearizable: f64,
}

impl Reads {
    pub async fn now(keygate: &Keygate) -> Result<Reads> {
        let body = scrape(keygate).await?;
        let f = "keygate_mirror_reads_total";
        Ok(Reads {
            mirror: sum(&body, f, &[("served_by", "mirror")]),
            upstream: sum(&body, f, &[("served_by", "upstream")]),
            mirror_serializable: sum(
                &body,
                f,
                &[("served_by", "mirror"), ("consistency", "serializable")],
            ),
            mirror_linearizable: sum(
                &body,
                f,
                &[("served_by", "mirror"), ("consistency", "linearizable")],
            ),
        })
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Reads) -> Reads {
        Reads {
            mirror: self.mirror - before.mirror,
            upstream: self.upstream - before.upstream,
            mirror_serializable: self.mirror_serializable - before.mirror_serializable,
            mirror_linearizable: self.mirror_linearizable - before.mirror_linearizable,
        }
    }

    pub fn total(&self) -> f64 {
        self.mirror + self.upstream
    }
}

/// The upstream reasons of every forwarded read, for messages.
pub async fn forwarded_reasons(keygate: &Keygate) -> Result<String> {
    Ok(scrape(keygate)
        .await?
        .lines()
        .filter(|l| l.starts_with("keygate_mirror_reads_total{"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Waits until keygate says its mirror serves.
pub async fn wait_serving(keygate: &Keygate, timeout: Duration) -> Result<()> {
    poll_until(timeout, "keygate_mirror_serving to be 1", || async {
        Ok(metric(keygate, "keygate_mirror_serving", &[]).await? == 1.0)
    })
    .await
    .with_context(|| format!("keygate log:\n{}", keygate.log_tail(30)))
}

/// A Range response with the fields that name the answering member masked.
pub fn masked(mut resp: RangeResponse) -> RangeResponse {
    if let Some(h) = resp.header.as_mut() {
        h.member_id = 0;
        h.raft_term = 0;
    }
    resp
}

/// A response or etcd's error, comparable.
pub type Answer = std::result::Result<RangeResponse, (tonic::Code, String)>;

pub async fn range(c: &mut Clients, req: &RangeRequest) -> Answer {
    tokio::time::timeout(Duration::from_secs(10), c.kv.range(req.clone()))
        .await
        .map_err(|_| (tonic::Code::DeadlineExceeded, "test timeout".to_string()))?
        .map(|r| masked(r.into_inner()))
        .map_err(|s| (s.code(), s.message().to_string()))
}

/// Sends `req` to keygate, then to etcd directly; a description of the difference, if any.
pub async fn differs(
    keygate: &mut Clients,
    etcd: &mut Clients,
    req: &RangeRequest,
) -> Option<String> {
    let via = range(keygate, req).await;
    let direct = range(etcd, req).await;
    (via != direct).then(|| {
        format!(
            "request {}\n  keygate: {}\n  etcd:    {}",
            show_request(req),
            show(&via),
            show(&direct)
        )
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn show_request(r: &RangeRequest) -> String {
    format!(
        "key={:?} end={:?} limit={} keys_only={} count_only={} sort={}/{} \
         mod=[{},{}] create=[{},{}] serializable={} revision={}",
        text(&r.key),
        text(&r.range_end),
        r.limit,
        r.keys_only,
        r.count_only,
        r.sort_order,
        r.sort_target,
        r.min_mod_revision,
        r.max_mod_revision,
        r.min_create_revision,
        r.max_create_revision,
        r.serializable,
        r.revision,
    )
}

pub fn show(a: &Answer) -> String {
    match a {
        Err((code, msg)) => format!("error {code:?}: {msg}"),
        Ok(r) => {
            let kvs: Vec<String> = r
                .kvs
                .iter()
                .map(|kv| {
                    format!(
                        "{}={}(c{} m{} v{} l{})",
                        text(&kv.key),
                        text(&kv.value),
                        kv.create_revision,
                        kv.mod_revision,
                        kv.version,
                        kv.lease
                    )
                })
                .collect();
            let h = r.header.unwrap_or_default();
            format!(
                "rev={} cluster={:x} count={} more={} kvs=[{}]",
                h.revision,
                h.cluster_id,
                r.count,
                r.more,
                kvs.join(", ")
            )
        }
    }
}

/// Which member leads, asked of each running member directly (skipping `dead`).
pub async fn leader(cluster: &EtcdCluster, dead: &[usize]) -> Result<usize> {
    let mut ids = Vec::new();
    let mut leader = 0;
    for i in 0..cluster.len() {
        if dead.contains(&i) {
            ids.push(0);
            continue;
        }
        let mut c = cluster.clients(i).await?;
        let s = tokio::time::timeout(
            Duration::from_secs(2),
            c.maintenance.status(StatusRequest {}),
        )
        .await
        .context("status timed out")??
        .into_inner();
        ids.push(s.header.map(|h| h.member_id).unwrap_or(0));
        leader = leader.max(s.leader);
    }
    ids.iter()
        .position(|&id| id != 0 && id == leader)
        .with_context(|| format!("no leader among {ids:?} (leader {leader})"))
}

/// Waits for a leader among the members not in `dead`.
pub async fn wait_leader(
    cluster: &EtcdCluster,
    dead: &[usize],
    timeout: Duration,
) -> Result<usize> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match leader(cluster, dead).await {
            Ok(i) => return Ok(i),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context(format!("no leader after {timeout:?}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Which members have at least one watcher open, from each member's own /metrics (only the
/// mirror watches in these tests).
pub async fn watched_members(cluster: &EtcdCluster, dead: &[usize]) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for i in (0..cluster.len()).filter(|i| !dead.contains(i)) {
        let resp = http::get(&cluster.addr(i), "/metrics", Duration::from_secs(5)).await?;
        if sum(&resp.body, "etcd_debugging_mvcc_watcher_total", &[]) > 0.0 {
            out.push(i);
        }
    }
    Ok(out)
}

/// The one member with a watcher open (the mirror's), waited for.
pub async fn mirror_member(cluster: &EtcdCluster, dead: &[usize]) -> Result<usize> {
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        found = watched_members(cluster, dead).await?;
        if found.len() == 1 {
            return Ok(found[0]);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("expected one member with a watcher, found {found:?}")
}

pub fn b(s: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(s.as_bytes())
}

/// A put with a 5 s bound; the header's revision.
pub async fn put(c: &mut keygate_tests::Clients, key: &str, value: &str) -> anyhow::Result<i64> {
    use anyhow::Context;
    let req = keygate_proto::etcdserverpb::PutRequest {
        key: b(key),
        value: b(value),
        ..Default::default()
    };
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), c.kv.put(req))
        .await
        .context("put timed out")??
        .into_inner();
    Ok(resp.header.map_or(0, |h| h.revision))
}
