//! Tenants' streams when keygate forwards them to etcd rather than serving them itself (no
//! mirror, so no watch hub; no lease coalescing): watches, keep-alives and election observers
//! stay inside the namespace all the same.

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::watch_request::RequestUnion;
use keygate_proto::etcdserverpb::*;
use keygate_proto::v3electionpb::{CampaignRequest, LeaderRequest};
use keygate_tests::tenants::{self, as_user};
use keygate_tests::EtcdCluster;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value.to_string()),
        ..Default::default()
    }
}

async fn next<T>(stream: &mut tonic::Streaming<T>) -> Result<T> {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .context("no response in time")??
        .context("stream ended")
}

#[tokio::test]
async fn forwarded_streams_stay_inside_the_namespace() -> Result<()> {
    let etcd = EtcdCluster::start(1).await?;
    let audit_log =
        std::env::temp_dir().join(format!("tenant-streams-{}.jsonl", rand::random::<u32>()));
    let extra = format!(
        "[lease]\ncoalesce_window_ms = 0\n\n[plugins.audit]\npath = {}\noutput = {:?}\n",
        keygate_tests::plugins::plugin_path("audit_jsonl")?,
        audit_log.display().to_string(),
    );
    let mut kg = tenants::start(&etcd, &extra, &["--no-mirror"]).await?;
    let mut c = kg.clients().await?;

    // A watch on every key alice can see: only her events, without her prefix.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut watch = c
        .watch
        .watch(as_user("alice", ReceiverStream::new(rx)))
        .await?
        .into_inner();
    let create = WatchCreateRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        prev_kv: true,
        ..Default::default()
    };
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    })
    .await?;
    ensure!(next(&mut watch).await?.created, "created");
    for (who, key) in [
        ("bob", "x"),
        (tenants::ADMIN, "/a0"),
        (tenants::ADMIN, "/a"),
        ("alice", "x"),
        ("alice", "x"),
    ] {
        c.kv.put(as_user(who, put(key, who))).await?;
    }
    let mut events = Vec::new();
    while events.len() < 2 {
        events.extend(next(&mut watch).await?.events);
    }
    let keys: Vec<_> = events
        .iter()
        .filter_map(|e| e.kv.as_ref())
        .map(|kv| kv.key.clone())
        .collect();
    ensure!(keys == ["x", "x"], "alice's events: {events:?}");
    let prev = events[1].prev_kv.as_ref().context("prev_kv")?;
    ensure!(
        prev.key == "x" && prev.value == "alice",
        "prev_kv: {prev:?}"
    );
    // A second watch on the same stream is confined as well.
    let create = WatchCreateRequest {
        key: Bytes::from_static(b"y"),
        ..Default::default()
    };
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    })
    .await?;
    ensure!(next(&mut watch).await?.created, "second created");
    c.kv.put(as_user("bob", put("y", "bob"))).await?;
    c.kv.put(as_user("alice", put("y", "alice"))).await?;
    let resp = next(&mut watch).await?;
    let kv = resp
        .events
        .first()
        .and_then(|e| e.kv.as_ref())
        .context("event")?;
    ensure!(kv.key == "y" && kv.value == "alice", "{resp:?}");

    // Keep-alives: her own lease is refreshed; bob's does not exist for her.
    let hers = c
        .lease
        .lease_grant(as_user("alice", LeaseGrantRequest { ttl: 30, id: 0 }))
        .await?
        .into_inner()
        .id;
    let his = c
        .lease
        .lease_grant(as_user("bob", LeaseGrantRequest { ttl: 30, id: 0 }))
        .await?
        .into_inner()
        .id;
    let (ktx, krx) = tokio::sync::mpsc::channel(4);
    let mut keepalive = c
        .lease
        .lease_keep_alive(as_user("alice", ReceiverStream::new(krx)))
        .await?
        .into_inner();
    ktx.send(LeaseKeepAliveRequest { id: his }).await?;
    let refused = next(&mut keepalive).await?;
    ensure!(
        refused.id == his && refused.ttl == 0,
        "bob's lease: {refused:?}"
    );
    ktx.send(LeaseKeepAliveRequest { id: hers }).await?;
    let kept = next(&mut keepalive).await?;
    ensure!(kept.id == hers && kept.ttl > 0, "her lease: {kept:?}");

    // An election observer sees its own namespace's leader, stripped.
    c.election
        .campaign(as_user(
            "alice",
            CampaignRequest {
                name: Bytes::from_static(b"/leader"),
                lease: hers,
                value: Bytes::from_static(b"alice-1"),
            },
        ))
        .await?;
    let mut observe = c
        .election
        .observe(as_user(
            "alice",
            LeaderRequest {
                name: Bytes::from_static(b"/leader"),
            },
        ))
        .await?
        .into_inner();
    let leader = next(&mut observe).await?;
    let kv = leader.kv.context("leader kv")?;
    ensure!(
        kv.key.starts_with(b"/leader/") && kv.value == "alice-1",
        "{kv:?}"
    );

    // The audit saw the forwarded watch stream open and each watch it created, as the tenant
    // named them, in her namespace.
    drop((tx, watch, ktx, keepalive, observe, c));
    kg.stop().await?;
    let text = std::fs::read_to_string(&audit_log)?;
    let watches: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["method"] == "Watch" && r["identity"]["name"] == "alice")
        .collect();
    let keys: Vec<&str> = watches
        .iter()
        .map(|r| r["ranges"][0]["key"].as_str().unwrap_or("(none)"))
        .collect();
    ensure!(
        keys == ["(none)", "\u{0}", "y"],
        "audited watches: {keys:?}\n{text}"
    );
    ensure!(
        watches
            .iter()
            .all(|r| r["decision"] == "allow-in-namespace" && r["served_by"] == "upstream"),
        "{text}"
    );
    // And each keep-alive: bob's lease refused, hers allowed in her namespace.
    let keep_alives: Vec<(String, i64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["method"] == "LeaseKeepAlive" && r["identity"]["name"] == "alice")
        .map(|r| {
            let decision = r["decision"].as_str().unwrap_or_default().to_string();
            (decision, r["lease"].as_i64().unwrap_or(-1))
        })
        .collect();
    let namespaced = "allow-in-namespace".to_string();
    ensure!(
        keep_alives
            == [
                (namespaced.clone(), 0),
                ("deny".into(), his),
                (namespaced, hers)
            ],
        "audited keep-alives: {keep_alives:?}\n{text}"
    );
    let _ = std::fs::remove_file(&audit_log);
    Ok(())
}
