//! Lease keep-alive coalescing: many keep-alive streams for one lease share upstream
//! keep-alives, and no answer tells a client its lease lives longer than etcd keeps it.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use keygate_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest,
};
use keygate_tests::{http, EtcdCluster, Keygate};

async fn counter(addr: &str, series: &str) -> Result<f64> {
    let body = http::get(addr, "/metrics", Duration::from_secs(5))
        .await?
        .body;
    Ok(body
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alives_for_one_lease_share_upstream_refreshes() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    let mut c = keygate.clients().await?;
    let granted = c
        .lease
        .lease_grant(LeaseGrantRequest { ttl: 30, id: 0 })
        .await?
        .into_inner();

    // Ten clients keep the same lease alive at the same moment.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut lease = keygate.clients().await?.lease;
        let id = granted.id;
        tasks.push(tokio::spawn(async move {
            let requests = tokio_stream::iter([LeaseKeepAliveRequest { id }]);
            let mut responses = lease.lease_keep_alive(requests).await?.into_inner();
            let asked = Instant::now();
            let resp = responses
                .message()
                .await?
                .context("no keep-alive response")?;
            anyhow::Ok((asked, resp.ttl, resp.id))
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await??);
    }
    for (_, ttl, id) in &answers {
        ensure!(*id == granted.id, "answer for another lease: {id}");
        ensure!(*ttl > 0 && *ttl <= 30, "TTL {ttl} outside (0, 30]");
    }
    let upstream = counter(
        keygate.addr(),
        "keygate_lease_keepalives_total{served_by=\"upstream\"}",
    )
    .await?;
    let coalesced = counter(
        keygate.addr(),
        "keygate_lease_keepalives_total{served_by=\"coalesced\"}",
    )
    .await?;
    ensure!(
        upstream + coalesced == 10.0,
        "10 keep-alives counted, got {upstream} + {coalesced}"
    );
    ensure!(
        upstream < 10.0,
        "no keep-alive was coalesced ({upstream} went upstream)"
    );

    // Whatever a client was told, etcd keeps the lease at least that long.
    let ttl = c
        .lease
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: granted.id,
            keys: false,
        })
        .await?
        .into_inner()
        .ttl;
    for (asked, told, _) in &answers {
        let promised_left = *told - asked.elapsed().as_secs() as i64;
        ensure!(
            ttl + 1 >= promised_left,
            "etcd says {ttl}s left, a client was promised {promised_left}s"
        );
    }

    // After the window, keep-alives go upstream again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let requests = tokio_stream::iter([LeaseKeepAliveRequest { id: granted.id }]);
    let mut responses = c.lease.lease_keep_alive(requests).await?.into_inner();
    let resp = responses
        .message()
        .await?
        .context("no keep-alive response")?;
    ensure!(
        resp.ttl == 30,
        "a fresh upstream refresh answers the granted TTL, got {}",
        resp.ttl
    );
    let after = counter(
        keygate.addr(),
        "keygate_lease_keepalives_total{served_by=\"upstream\"}",
    )
    .await?;
    ensure!(
        after == upstream + 1.0,
        "expected one more upstream keep-alive, {upstream} -> {after}"
    );
    Ok(())
}
