//! etcd restored from a snapshot behind a running keygate: its keyspace goes back to the
//! snapshot's revision (same cluster id). keygate must serve the restored keyspace — never the
//! one it mirrored before — see writes made after the restore, and cancel the watches it served
//! from the old history so that their clients relist.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{PutRequest, RangeRequest, RangeResponse};
use keygate_tests::process::{poll_until, signal};
use keygate_tests::watch::{prefix_watch, WatchStream};
use keygate_tests::watch_record::scrape;
use keygate_tests::{Clients, EtcdCluster, Keygate};

const WAIT: Duration = Duration::from_secs(20);

async fn put(c: &mut Clients, key: &str, value: &str) -> Result<i64> {
    let req = PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..Default::default()
    };
    let resp = c.kv.put(req).await?.into_inner();
    Ok(resp.header.map_or(0, |h| h.revision))
}

async fn get(c: &mut Clients, key: &str, serializable: bool) -> Result<RangeResponse> {
    let req = RangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        serializable,
        ..Default::default()
    };
    Ok(c.kv.range(req).await?.into_inner())
}

/// Every key and value, as (key, value, mod_revision).
async fn all(c: &mut Clients, serializable: bool) -> Result<Vec<(Bytes, Bytes, i64)>> {
    let req = RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        serializable,
        ..Default::default()
    };
    let resp = c.kv.range(req).await?.into_inner();
    Ok(resp
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.mod_revision))
        .collect())
}

fn value(resp: &RangeResponse) -> Option<&[u8]> {
    resp.kvs.first().map(|kv| &kv.value[..])
}

async fn serving(keygate: &Keygate) -> Result<()> {
    poll_until(WAIT, "the mirror serving", || async {
        Ok(scrape(keygate.addr())
            .await?
            .contains("keygate_mirror_serving 1"))
    })
    .await
}

async fn rewinds(keygate: &Keygate) -> Result<u64> {
    let body = scrape(keygate.addr()).await?;
    let line = body
        .lines()
        .find(|l| l.starts_with("keygate_mirror_rewinds_total "))
        .context("no keygate_mirror_rewinds_total")?;
    Ok(line.rsplit(' ').next().unwrap_or("").parse()?)
}

/// A one-member cluster with k = v1..v20 in a snapshot and k = v21..v40 written after it,
/// keygate in front serving k = v40 from its mirror.
async fn setup() -> Result<(EtcdCluster, Keygate, Clients, std::path::PathBuf, i64)> {
    let cluster = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    serving(&keygate).await?;
    let mut c = keygate.clients().await?;
    for i in 1..=20 {
        put(&mut c, "k", &format!("v{i}")).await?;
    }
    let snapshot = cluster.dir().join("restore-from.db");
    cluster.save_snapshot(0, &snapshot).await?;
    let mut last = 0;
    for i in 21..=40 {
        last = put(&mut c, "k", &format!("v{i}")).await?;
    }
    let held = get(&mut c, "k", true).await?;
    ensure!(value(&held) == Some(&b"v40"[..]), "{held:?}");
    Ok((cluster, keygate, c, snapshot, last))
}

#[tokio::test(flavor = "multi_thread")]
async fn keygate_serves_a_restored_etcd_and_its_watchers_relist() -> Result<()> {
    let (mut cluster, keygate, mut c, snapshot, _) = setup().await?;
    let mut watch = WatchStream::open(&c, prefix_watch("k", 0)).await?;
    ensure!(watch.next(WAIT).await?.created, "watch not created");

    cluster.restore(&snapshot).await?;
    let mut direct = cluster.clients(0).await?;
    let restored = get(&mut direct, "k", false).await?;
    ensure!(value(&restored) == Some(&b"v20"[..]), "{restored:?}");

    // keygate may refuse while it reconnects; once it answers, it answers with etcd's state.
    let deadline = tokio::time::Instant::now() + WAIT;
    let answer = loop {
        match get(&mut c, "k", false).await {
            Ok(answer) => break answer,
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    ensure!(
        value(&answer) == value(&restored) && answer.header == restored.header,
        "keygate answered {answer:?}\netcd answered {restored:?}\n{}",
        keygate.log_tail(20)
    );

    // Writes after the restore are seen through keygate, by either consistency.
    let at = put(&mut c, "x", "new").await?;
    for serializable in [false, true] {
        let x = get(&mut c, "x", serializable).await?;
        ensure!(
            value(&x) == Some(&b"new"[..]) && x.kvs[0].mod_revision == at,
            "serializable={serializable}: {x:?}\n{}",
            keygate.log_tail(20)
        );
        ensure!(all(&mut c, serializable).await? == all(&mut direct, false).await?);
    }

    // The watch served from the old history is canceled as after a compaction.
    let canceled = watch.next(WAIT).await?;
    ensure!(
        canceled.canceled && canceled.compact_revision > 0 && canceled.events.is_empty(),
        "{canceled:?}"
    );
    ensure!(rewinds(&keygate).await? == 1, "rewinds");

    // A watch created now follows the restored history.
    let mut watch = WatchStream::open(&c, prefix_watch("x", 0)).await?;
    ensure!(watch.next(WAIT).await?.created, "watch not created");
    let at = put(&mut c, "x", "newer").await?;
    let events = watch.events_until(b"x", WAIT).await?;
    ensure!(events
        .iter()
        .any(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision == at)));
    Ok(())
}

/// keygate is away (paused) while etcd is restored and written past the revision keygate's
/// mirror held: resuming from that revision + 1 succeeds, but on another history. keygate must
/// notice and serve the restored keyspace, not the old one with the new writes on top.
#[tokio::test(flavor = "multi_thread")]
async fn keygate_notices_a_restored_etcd_written_past_its_mirror() -> Result<()> {
    let (mut cluster, keygate, mut c, snapshot, last) = setup().await?;
    let pid = keygate.pid().context("keygate not running")?;
    signal(pid, "STOP")?;
    let restored = async {
        cluster.restore(&snapshot).await?;
        let mut direct = cluster.clients(0).await?;
        let mut at = 0;
        for i in 0.. {
            at = put(&mut direct, "y", &format!("w{i}")).await?;
            if at > last + 5 {
                break;
            }
        }
        anyhow::Ok((direct, at))
    }
    .await;
    signal(pid, "CONT")?;
    let (mut direct, at) = restored?;

    // The mirror serves again, and what it serves is the restored keyspace with the writes
    // made after the restore (not the old keyspace with those writes on top).
    let want = all(&mut direct, false).await?;
    let mut through = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(now) = all(&mut c, true).await else {
            continue;
        };
        through = now;
        let serving = scrape(keygate.addr())
            .await?
            .contains("keygate_mirror_serving 1");
        if serving && through == want {
            break;
        }
    }
    ensure!(
        through == want && want.iter().any(|(_, _, rev)| *rev == at),
        "keygate serves {through:?}\netcd holds {want:?}\n{}",
        keygate.log_tail(20)
    );
    ensure!(rewinds(&keygate).await? == 1, "rewinds");
    Ok(())
}
