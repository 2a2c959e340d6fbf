//! Tenant quotas end to end against real etcd: request rate, watchers, leases, stored keys and
//! bytes, each refused with etcd's RESOURCE_EXHAUSTED errors while other tenants go on; and the
//! per-tenant metrics that count them; writes the mirror cannot count, let through or refused.

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::watch_request::RequestUnion;
use keygate_proto::etcdserverpb::*;
use keygate_proto::{v3electionpb, v3lockpb};
use keygate_tests::tenants::{self, as_user};
use keygate_tests::{http, EtcdCluster};
use std::time::Duration;
use tonic::Code;

const QUOTAS: &str = r#"
[tenants]
usage_interval_ms = 100

[tenants.namespaces."/a/"]
keys = 3
watches = 2
leases = 1

[tenants.namespaces."/ab/"]
requests_per_second = 5.0
burst = 5

[tenants.namespaces."/c/"]
bytes = 20
"#;

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value.to_string()),
        ..Default::default()
    }
}

fn exhausted(result: Result<impl std::fmt::Debug, tonic::Status>, message: &str) -> Result<()> {
    match result {
        Err(status) if status.code() == Code::ResourceExhausted && status.message() == message => {
            Ok(())
        }
        other => anyhow::bail!("expected RESOURCE_EXHAUSTED {message:?}, got {other:?}"),
    }
}

const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
const TOO_MANY: &str = "etcdserver: too many requests";

#[tokio::test]
async fn quotas_refuse_past_their_limit_and_only_for_their_tenant() -> Result<()> {
    let etcd = EtcdCluster::start(1).await?;
    let kg = tenants::start(&etcd, QUOTAS, &[]).await?;
    let mut c = kg.clients().await?;

    // Keys: three fit; a fourth new key does not, an overwrite does; a delete makes room.
    for key in ["k1", "k2", "k3"] {
        c.kv.put(as_user("alice", put(key, "v"))).await?;
    }
    exhausted(c.kv.put(as_user("alice", put("k4", "v"))).await, NO_SPACE)?;
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put("k5", "v"))),
        }],
        ..Default::default()
    };
    exhausted(c.kv.txn(as_user("alice", txn)).await, NO_SPACE)?;
    c.kv.put(as_user("alice", put("k1", "overwritten"))).await?;
    let delete = DeleteRangeRequest {
        key: Bytes::from_static(b"k1"),
        ..Default::default()
    };
    c.kv.delete_range(as_user("alice", delete)).await?;
    c.kv.put(as_user("alice", put("k4", "v"))).await?;
    // Nothing refused was written.
    let raw =
        c.kv.range(as_user(
            tenants::ADMIN,
            RangeRequest {
                key: Bytes::from_static(b"/a/"),
                range_end: Bytes::from_static(b"/a0"),
                keys_only: true,
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    let keys: Vec<_> = raw.kvs.iter().map(|kv| kv.key.clone()).collect();
    ensure!(keys == ["/a/k2", "/a/k3", "/a/k4"], "stored: {keys:?}");

    // Bytes: key and value lengths, 20 at most.
    c.kv.put(as_user("carol", put("k", "0123456789"))).await?; // 11
    exhausted(
        c.kv.put(as_user("carol", put("j", "0123456789"))).await,
        NO_SPACE,
    )?;
    c.kv.put(as_user("carol", put("k", "0123456789abcdefgh")))
        .await?; // 19
    exhausted(
        c.kv.put(as_user("carol", put("k", "0123456789abcdefghij")))
            .await,
        NO_SPACE,
    )?;
    c.kv.put(as_user("carol", put("k", "small"))).await?;

    // Leases: one at a time.
    let grant = || LeaseGrantRequest { ttl: 60, id: 0 };
    let first = c
        .lease
        .lease_grant(as_user("alice", grant()))
        .await?
        .into_inner();
    exhausted(
        c.lease.lease_grant(as_user("alice", grant())).await,
        TOO_MANY,
    )?;
    c.lease
        .lease_revoke(as_user("alice", LeaseRevokeRequest { id: first.id }))
        .await?;
    let alices = c
        .lease
        .lease_grant(as_user("alice", grant()))
        .await?
        .into_inner();
    // Another tenant's leases are not alice's.
    let carols = c
        .lease
        .lease_grant(as_user("carol", grant()))
        .await?
        .into_inner();
    c.lease.lease_grant(as_user("carol", grant())).await?;

    // A lock or a campaign puts a key (`<name>/<lease>`): held to the same quotas. Alice has no
    // key left, carol has 14 bytes left (her lease alone takes 16 hex digits).
    let lock = |lease| v3lockpb::LockRequest {
        name: Bytes::from_static(b"l"),
        lease,
    };
    exhausted(
        c.lock.lock(as_user("alice", lock(alices.id))).await,
        NO_SPACE,
    )?;
    let campaign = v3electionpb::CampaignRequest {
        name: Bytes::from_static(b"e"),
        lease: carols.id,
        value: Bytes::from_static(b"v"),
    };
    exhausted(
        c.election.campaign(as_user("carol", campaign)).await,
        NO_SPACE,
    )?;

    // Watchers: two open at once; a canceled one frees its place.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut watch = c
        .watch
        .watch(as_user(
            "alice",
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await?
        .into_inner();
    let create = |key: &str| WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: Bytes::from(key.to_string()),
            ..Default::default()
        })),
    };
    for key in ["w1", "w2"] {
        tx.send(create(key)).await?;
        let resp = next(&mut watch).await?;
        ensure!(resp.created && !resp.canceled, "{resp:?}");
    }
    tx.send(create("w3")).await?;
    let refused = next(&mut watch).await?;
    ensure!(
        refused.canceled && refused.cancel_reason == TOO_MANY,
        "third watcher: {refused:?}"
    );
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: 0,
        })),
    })
    .await?;
    ensure!(next(&mut watch).await?.canceled, "cancel answered");
    tx.send(create("w3")).await?;
    let resp = next(&mut watch).await?;
    ensure!(resp.created && !resp.canceled, "after a cancel: {resp:?}");

    // Rate: bob's burst of 5 passes, the rest of a quick run is refused; alice, unlimited, is not.
    let mut refused = 0;
    for i in 0..20 {
        let range = RangeRequest {
            key: Bytes::from(format!("r{i}")),
            serializable: true,
            ..Default::default()
        };
        match c.kv.range(as_user("bob", range.clone())).await {
            Ok(_) => {}
            Err(status) if status.message() == TOO_MANY => refused += 1,
            Err(status) => anyhow::bail!("bob: {status:?}"),
        }
        c.kv.range(as_user("alice", range)).await?;
    }
    ensure!((10..=15).contains(&refused), "bob refused {refused} of 20");

    // etcd's v2 API has no namespaces: with authorizers it is refused, never forwarded.
    let v2 = http::get(kg.addr(), "/v2/keys/a/k2", Duration::from_secs(5)).await?;
    ensure!(
        v2.status == 401 && v2.body.contains("\"errorCode\":110"),
        "v2: {v2:?}"
    );

    // The metrics count each tenant's requests, refusals and what it stores.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = http::get(kg.addr(), "/metrics", Duration::from_secs(5))
        .await?
        .body;
    for line in [
        r#"keygate_tenant_quota_refusals_total{quota="keys",tenant="/a/"} 3"#,
        r#"keygate_tenant_quota_refusals_total{quota="bytes",tenant="/c/"} 3"#,
        r#"keygate_tenant_quota_refusals_total{quota="leases",tenant="/a/"} 1"#,
        r#"keygate_tenant_quota_refusals_total{quota="watches",tenant="/a/"} 1"#,
        r#"keygate_tenant_watchers{tenant="/a/"} 2"#,
        r#"keygate_tenant_requests_total{method="Range",tenant="/ab/"} 20"#,
        r#"keygate_tenant_stored_keys{tenant="/a/"} 3"#,
        r#"keygate_tenant_stored_keys{tenant="/c/"} 1"#,
        r#"keygate_tenant_stored_bytes{tenant="/c/"} 6"#,
    ] {
        ensure!(
            metrics.contains(line),
            "missing {line} in:\n{}",
            tenant_lines(&metrics)
        );
    }
    ensure!(
        metrics.contains(&format!(
            r#"keygate_tenant_quota_refusals_total{{quota="rate",tenant="/ab/"}} {refused}"#
        )),
        "rate refusals in:\n{}",
        tenant_lines(&metrics)
    );
    Ok(())
}

async fn next(watch: &mut tonic::Streaming<WatchResponse>) -> Result<WatchResponse> {
    tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .context("watch response")?
        .context("watch stream")?
        .context("watch stream ended")
}

fn tenant_lines(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| l.starts_with("keygate_tenant"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A burst of writes in flight at once is held to the key and byte quotas as a sequence would
/// be: no write is counted before it is answered, and none is let through because another had
/// not been. The burst comes right after keygate starts, while its mirror still lists a 20 MB
/// keyspace (other tenants' data): the writes wait for the count, they are not let through.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_do_not_overshoot_storage_quotas() -> Result<()> {
    let etcd = EtcdCluster::start(1).await?;
    let mut direct = etcd.clients(0).await?;
    direct.fill_20mb("/z/").await?;
    let quotas = "[tenants.namespaces.\"/a/\"]\nkeys = 10\n\n\
                  [tenants.namespaces.\"/c/\"]\nbytes = 100\n";
    let kg = tenants::start(&etcd, quotas, &[]).await?;
    let c = kg.clients().await?;
    // 40 new keys for alice (10 fit), 40 puts of 10 bytes for carol (10 fit), all at once.
    let burst = |user: &'static str, prefix: &'static str| {
        let puts = (0..40).map(|i| {
            let mut kv = c.kv.clone();
            async move {
                kv.put(as_user(user, put(&format!("{prefix}{i:03}"), "vvvvvv")))
                    .await
            }
        });
        futures::future::join_all(puts.collect::<Vec<_>>())
    };
    let (alice, carol) = tokio::join!(burst("alice", "k"), burst("carol", "b"));
    for (who, results) in [("alice", alice), ("carol", carol)] {
        let mut ok = 0;
        for result in results {
            match result {
                Ok(_) => ok += 1,
                Err(status) => exhausted(Err::<(), _>(status), NO_SPACE)?,
            }
        }
        ensure!(
            ok == 10,
            "{who}: {ok} of 40 concurrent puts went through, 10 fit\n{}",
            kg.log_tail(20)
        );
    }
    // And etcd holds exactly what the quotas allow.
    for (prefix, want) in [("/a/", 10), ("/c/", 10)] {
        let end = format!("{}0", prefix.trim_end_matches('/'));
        let held = direct
            .kv
            .range(RangeRequest {
                key: Bytes::from(prefix),
                range_end: Bytes::from(end),
                count_only: true,
                ..Default::default()
            })
            .await?
            .into_inner()
            .count;
        ensure!(
            held == want,
            "{prefix} holds {held} keys in etcd, quota allows {want}"
        );
    }
    Ok(())
}

/// While the mirror cannot count a namespace (here: the keyspace is over `mirror.max_bytes`), a
/// write held to a storage quota goes through uncounted, or — with `uncounted_writes =
/// "refuse"` — is answered UNAVAILABLE and writes nothing; both are counted in the metrics.
#[tokio::test]
async fn uncounted_writes_go_through_or_are_refused_as_configured() -> Result<()> {
    let etcd = EtcdCluster::start(1).await?;
    let mut direct = etcd.clients(0).await?;
    direct
        .kv
        .put(put("/z/big", "more than the mirror may hold"))
        .await?;
    let config = |policy: &str| {
        format!(
            "[mirror]\nmax_bytes = 8\n\n[tenants]\nuncounted_writes = {policy:?}\n\n\
             [tenants.namespaces.\"/a/\"]\nkeys = 10\n"
        )
    };
    let uncounted = |kg: &keygate_tests::Keygate| {
        let addr = kg.addr().to_string();
        async move {
            let m = http::get(&addr, "/metrics", Duration::from_secs(5)).await?;
            Ok::<_, anyhow::Error>(
                m.body
                    .contains("keygate_tenant_quota_uncounted_total{tenant=\"/a/\"} 1"),
            )
        }
    };
    let refusing = tenants::start(&etcd, &config("refuse"), &[]).await?;
    let mut c = refusing.clients().await?;
    match c.kv.put(as_user("alice", put("k1", "v"))).await {
        Err(s)
            if s.code() == Code::Unavailable
                && s.message() == "etcdserver: storage quota cannot be checked now (keygate)" => {}
        other => anyhow::bail!("expected UNAVAILABLE, got {other:?}"),
    }
    let written = direct.kv.range(RangeRequest {
        key: Bytes::from_static(b"/a/k1"),
        ..Default::default()
    });
    ensure!(
        written.await?.into_inner().kvs.is_empty(),
        "the refused put was written"
    );
    ensure!(
        uncounted(&refusing).await?,
        "not counted\n{}",
        refusing.log_tail(10)
    );

    let allowing = tenants::start(&etcd, &config("allow"), &[]).await?;
    let mut c = allowing.clients().await?;
    c.kv.put(as_user("alice", put("k1", "v"))).await?;
    ensure!(
        uncounted(&allowing).await?,
        "not counted\n{}",
        allowing.log_tail(10)
    );
    Ok(())
}
