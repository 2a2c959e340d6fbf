//! The member pool's membership: keygate configured with one member of a 3-member cluster
//! learns the other two from MemberList (at their https URLs when the members serve TLS) and
//! keeps serving from them when the configured member dies; a learner among the configured
//! members takes no requests.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use keygate_proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use keygate_tests::pki::TestPki;
use keygate_tests::process::poll_until;
use keygate_tests::watch::{prefix_watch, WatchStream};
use keygate_tests::{http, EtcdCluster, EtcdTls, Keygate};

async fn metric(addr: &str, line_prefix: &str) -> Result<Option<f64>> {
    let body = http::get(addr, "/metrics", Duration::from_secs(5))
        .await?
        .body;
    Ok(body
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok()))
}

#[tokio::test(flavor = "multi_thread")]
async fn members_are_discovered_and_used_after_the_configured_one_dies() -> Result<()> {
    let mut cluster = EtcdCluster::start(3).await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        "[upstream]\ndiscover_members = true\ndiscover_interval_ms = 200\nhealth_interval_ms = 100\n",
    )?;
    let config = config.to_string_lossy().to_string();
    let keygate = Keygate::start(&[cluster.endpoint(0)], &["--config", &config]).await?;

    poll_until(Duration::from_secs(15), "three members in the pool", || {
        let addr = keygate.addr().to_string();
        async move { Ok(metric(&addr, "keygate_upstream_members ").await? == Some(3.0)) }
    })
    .await
    .with_context(|| keygate.log_tail(20))?;

    let mut c = keygate.clients().await?;
    c.kv.put(PutRequest {
        key: "k".into(),
        value: "before".into(),
        ..Default::default()
    })
    .await?;

    cluster.kill(0)?;
    // Reads are retried on a discovered member; none may fail.
    for _ in 0..20 {
        let got =
            c.kv.range(RangeRequest {
                key: "k".into(),
                ..Default::default()
            })
            .await
            .with_context(|| keygate.log_tail(20))?
            .into_inner();
        assert_eq!(
            got.kvs.first().map(|kv| kv.value.clone()),
            Some("before".into())
        );
    }
    // Writes reach the surviving members once the dead one is out of rotation.
    poll_until(
        Duration::from_secs(10),
        "a put after the member died",
        || {
            let mut kv = c.kv.clone();
            async move {
                let put = PutRequest {
                    key: "k".into(),
                    value: "after".into(),
                    ..Default::default()
                };
                Ok(kv.put(put).await.is_ok())
            }
        },
    )
    .await?;
    let direct = cluster.clients(1).await?;
    let got = direct
        .kv
        .clone()
        .range(RangeRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        got.kvs.first().map(|kv| kv.value.clone()),
        Some("after".into())
    );
    // The configured member stays in the pool, marked unhealthy.
    let dead = format!(
        "keygate_upstream_member_healthy{{member=\"{}\"}}",
        cluster.endpoint(0)
    );
    // A write may succeed on a surviving member before the health check has marked the dead
    // one: wait (bounded) for the mark.
    poll_until(
        Duration::from_secs(10),
        "the dead member marked unhealthy",
        || {
            let (addr, dead) = (keygate.addr().to_string(), dead.clone());
            async move { Ok(metric(&addr, &dead).await? == Some(0.0)) }
        },
    )
    .await?;
    Ok(())
}

/// Members that serve clients over TLS are discovered at their https URLs and reached with
/// keygate's upstream certificates.
#[tokio::test(flavor = "multi_thread")]
async fn tls_members_are_discovered_at_their_https_urls() -> Result<()> {
    let pki = TestPki::new("discovery")?;
    let member = pki.server("etcd", "etcd-member")?;
    let tls = EtcdTls {
        ca: pki.ca().to_path_buf(),
        cert: member.cert.clone(),
        key: member.key.clone(),
        plain_local: false,
    };
    let cluster = EtcdCluster::start_tls(3, tls).await?;
    let upstream = pki.client("keygate-upstream", "keygate")?;
    let toml = "[upstream]\ndiscover_members = true\ndiscover_interval_ms = 200\nhealth_interval_ms = 100\n"
        .to_string()
        + &pki.upstream_tls(&upstream);
    let keygate = Keygate::start_with_config(&[cluster.endpoint(0)], &toml, &[]).await?;
    for i in 0..3 {
        let healthy = format!(
            "keygate_upstream_member_healthy{{member=\"{}\"}}",
            cluster.endpoint(i)
        );
        poll_until(Duration::from_secs(15), &healthy, || {
            let (addr, healthy) = (keygate.addr().to_string(), healthy.clone());
            async move { Ok(metric(&addr, &healthy).await? == Some(1.0)) }
        })
        .await
        .with_context(|| keygate.log_tail(20))?;
    }
    Ok(())
}

/// A learner among the configured endpoints (an operator listing the members while one is
/// being added) takes no requests. Listed first, beside the two followers (keygate cannot reach
/// the leader, as behind a partition), the learner would be the first healthy member; reads,
/// writes and watches through keygate go to the followers instead of a member that refuses
/// them.
#[tokio::test(flavor = "multi_thread")]
async fn a_learner_among_the_endpoints_takes_no_requests() -> Result<()> {
    let mut cluster = EtcdCluster::start(3).await?;
    let learner = cluster.add_learner().await?;
    let mut endpoints = vec![cluster.endpoint(learner)];
    for i in 0..3 {
        let status = cluster
            .clients(i)
            .await?
            .maintenance
            .status(StatusRequest {})
            .await?;
        let status = status.into_inner();
        if status.header.is_some_and(|h| h.member_id != status.leader) {
            endpoints.push(cluster.endpoint(i));
        }
    }
    ensure!(endpoints.len() == 3, "followers: {endpoints:?}");
    let toml = "[upstream]\nhealth_interval_ms = 100\n";
    let keygate = Keygate::start_with_config(&endpoints, toml, &[]).await?;
    let checked = format!(
        "keygate_upstream_health_checks_total{{member=\"{}\",result=\"learner\"}}",
        cluster.endpoint(learner)
    );
    poll_until(Duration::from_secs(10), "the learner checked", || {
        let (addr, checked) = (keygate.addr().to_string(), checked.clone());
        async move { Ok(metric(&addr, &checked).await?.is_some_and(|n| n >= 1.0)) }
    })
    .await
    .with_context(|| keygate.log_tail(20))?;

    let mut c = keygate.clients().await?;
    let mut watch = WatchStream::open(&c, prefix_watch("k", 0)).await?;
    ensure!(
        watch.next(Duration::from_secs(5)).await?.created,
        "watch not created"
    );
    for i in 1..=20 {
        let put = PutRequest {
            key: "k".into(),
            value: i.to_string().into(),
            ..Default::default()
        };
        c.kv.put(put).await.with_context(|| format!("put {i}"))?;
        let got =
            c.kv.range(RangeRequest {
                key: "k".into(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("linearizable get {i}"))?
            .into_inner();
        let value = got.kvs.first().map(|kv| kv.value.clone());
        ensure!(value == Some(i.to_string().into()), "get {i}: {value:?}");
    }
    let events = watch.events_until(b"k", Duration::from_secs(5)).await?;
    ensure!(!events.is_empty(), "no event on the watch");
    Ok(())
}
