//! Streams that require a leader (`hasleader` metadata: etcd's Go client's WithRequireLeader,
//! which kube-apiserver's watches use) end with etcd's "etcdserver: no leader" once the cluster
//! has lost its quorum, as they do on etcd; streams that do not require one stay open and carry
//! on without a gap once the cluster is back.

use std::time::Duration;

use anyhow::{ensure, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest};
use keygate_tests::process::poll_until;
use keygate_tests::watch::{prefix_watch, WatchStream};
use keygate_tests::watch_record::scrape;
use keygate_tests::{Clients, EtcdCluster, Keygate};
use tokio_stream::wrappers::ReceiverStream;

const WAIT: Duration = Duration::from_secs(20);

/// Opens a hasleader watch and reads its created response; the error text if either fails.
async fn watch_requiring_leader(c: &Clients) -> Result<String, String> {
    let mut watch = WatchStream::open_with(c, prefix_watch("n/", 0), true)
        .await
        .map_err(|e| format!("{e:#}"))?;
    match watch.next(WAIT).await {
        Ok(created) if created.created => Ok("created".into()),
        Ok(other) => Ok(format!("{other:?}")),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The error a stream ended with, within `WAIT`.
async fn ended(watch: &mut WatchStream) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match watch.next(WAIT).await {
            Ok(_) if tokio::time::Instant::now() < deadline => continue,
            Ok(resp) => return format!("still open: {resp:?}"),
            Err(e) => return format!("{e:#}"),
        }
    }
}

/// etcd's answer: UNAVAILABLE, "etcdserver: no leader" (in tonic's or anyhow's wording).
fn is_no_leader(error: &str) -> bool {
    error.contains("etcdserver: no leader") && error.to_lowercase().contains("unavailable")
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_requiring_a_leader_end_when_the_cluster_loses_it() -> Result<()> {
    let mut cluster = EtcdCluster::start(3).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    poll_until(WAIT, "the mirror serving", || async {
        Ok(scrape(keygate.addr())
            .await?
            .contains("keygate_mirror_serving 1"))
    })
    .await?;
    let mut c = keygate.clients().await?;
    let direct = cluster.clients(2).await?;

    let mut required = WatchStream::open_with(&c, prefix_watch("n/", 0), true).await?;
    let mut plain = WatchStream::open(&c, prefix_watch("n/", 0)).await?;
    let mut on_etcd = WatchStream::open_with(&direct, prefix_watch("n/", 0), true).await?;
    for w in [&mut required, &mut plain, &mut on_etcd] {
        ensure!(w.next(WAIT).await?.created, "not created");
    }
    let lease = c
        .lease
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await?;
    let id = lease.into_inner().id;
    let (keep_tx, keep_rx) = tokio::sync::mpsc::channel(4);
    let mut request = tonic::Request::new(ReceiverStream::new(keep_rx));
    let value = tonic::metadata::MetadataValue::from_static("true");
    request.metadata_mut().insert("hasleader", value);
    keep_tx.send(LeaseKeepAliveRequest { id }).await?;
    let mut keep_alive = c.lease.lease_keep_alive(request).await?.into_inner();
    ensure!(keep_alive.message().await?.is_some_and(|r| r.ttl > 0));

    // Quorum lost: the remaining member has no leader.
    cluster.kill(0)?;
    cluster.kill(1)?;
    let etcd_says = ended(&mut on_etcd).await;
    ensure!(is_no_leader(&etcd_says), "etcd itself: {etcd_says}");
    let keygate_says = ended(&mut required).await;
    ensure!(
        is_no_leader(&keygate_says),
        "through keygate: {keygate_says}"
    );
    let lease_says = match tokio::time::timeout(WAIT, keep_alive.message()).await {
        Ok(Err(status)) => format!(
            "status: {:?}, message: {:?}",
            status.code(),
            status.message()
        ),
        other => format!("{other:?}"),
    };
    ensure!(
        is_no_leader(&lease_says),
        "keep-alive through keygate: {lease_says}"
    );
    let opened = watch_requiring_leader(&c).await;
    ensure!(
        opened.as_ref().is_err_and(|e| is_no_leader(e)),
        "a new stream requiring a leader: {opened:?}"
    );
    // A stream that did not ask for a leader stays open, as on etcd.
    let quiet = plain.next(Duration::from_millis(500)).await;
    ensure!(
        quiet
            .as_ref()
            .is_err_and(|e| e.to_string().contains("no watch response within")),
        "the plain stream: {quiet:?}"
    );

    cluster.restart(0).await?;
    cluster.restart(1).await?;
    poll_until(WAIT, "a stream requiring a leader opening again", || {
        let c = c.clone();
        async move { Ok(watch_requiring_leader(&c).await.is_ok()) }
    })
    .await?;
    let put = PutRequest {
        key: Bytes::from_static(b"n/after"),
        value: Bytes::from_static(b"1"),
        ..Default::default()
    };
    c.kv.put(put).await?;
    let events = plain.events_until(b"n/after", WAIT).await?;
    ensure!(events.len() == 1, "{events:?}");
    Ok(())
}
