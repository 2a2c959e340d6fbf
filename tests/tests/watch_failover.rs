//! Watches through keygate while etcd members die and come back: the event stream matches
//! etcd's own history exactly — no gap, no duplicate, no reordering; and they leave a member
//! that stops answering within seconds.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use keygate_proto::mvccpb::Event;
use keygate_tests::watch::{prefix_watch, WatchStream};
use keygate_tests::{Clients, EtcdCluster, Keygate};

const WRITES: usize = 300;
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

/// Puts with retries: a retried put may land twice, which the comparison with etcd's own
/// history tolerates (both sides see it). Returns the revision etcd acknowledged it at.
async fn put_retrying(c: &mut Clients, key: String, value: String) -> Result<i64> {
    let mut last = None;
    for _ in 0..150 {
        let req = PutRequest {
            key: Bytes::from(key.clone()),
            value: Bytes::from(value.clone()),
            ..Default::default()
        };
        // Bounded: a request stuck on a paused member must not hang the test.
        match tokio::time::timeout(Duration::from_secs(5), c.kv.put(req)).await {
            Ok(Ok(resp)) => return Ok(resp.into_inner().header.map_or(0, |h| h.revision)),
            Ok(Err(e)) => last = Some(anyhow::Error::from(e)),
            Err(_) => last = Some(anyhow::anyhow!("put timed out after 5s")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(anyhow::anyhow!("put {key} kept failing: {last:?}"))
}

fn summary(events: &[Event]) -> Vec<(i32, Bytes, i64, Bytes)> {
    events
        .iter()
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            (e.r#type, kv.key, kv.mod_revision, kv.value)
        })
        .collect()
}

/// The acknowledged writes (key, revision, value) that `history` lacks.
fn missing(history: &[(i32, Bytes, i64, Bytes)], acked: &[(Bytes, i64, Bytes)]) -> Vec<i64> {
    acked
        .iter()
        .filter(|(key, rev, value)| {
            !history
                .iter()
                .any(|(_, k, r, v)| k == key && r == rev && v == value)
        })
        .map(|(_, rev, _)| *rev)
        .collect()
}

/// etcd's own history of the range, from a member's own watch; it must hold every acknowledged
/// write.
async fn reference_history(
    cluster: &EtcdCluster,
    start: i64,
    acked: &[(Bytes, i64, Bytes)],
) -> Result<Vec<(i32, Bytes, i64, Bytes)>> {
    let direct = cluster.clients(0).await?;
    let mut reference = WatchStream::open(&direct, prefix_watch("f/", start)).await?;
    reference.next(RESPONSE_TIMEOUT).await?;
    let history = summary(&reference.events_until(b"f/end", RESPONSE_TIMEOUT).await?);
    let lost = missing(&history, acked);
    ensure!(
        lost.is_empty(),
        "etcd's own watch lacks acknowledged writes {lost:?}"
    );
    Ok(history)
}

/// What happens to the cluster after a given number of writes.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill(usize),
    Restart(usize),
    Pause(usize),
    Resume(usize),
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_survives_each_member_being_killed_and_restarted() -> Result<()> {
    // Every member dies once, so whichever one keygate watches from is among them.
    watch_under_faults(&[
        (40, Fault::Kill(0)),
        (70, Fault::Restart(0)),
        (100, Fault::Kill(1)),
        (130, Fault::Restart(1)),
        (160, Fault::Kill(2)),
        (190, Fault::Restart(2)),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_survives_each_member_being_paused() -> Result<()> {
    watch_under_faults(&[
        (40, Fault::Pause(0)),
        (80, Fault::Resume(0)),
        (120, Fault::Pause(1)),
        (160, Fault::Resume(1)),
        (200, Fault::Pause(2)),
        (240, Fault::Resume(2)),
    ])
    .await
}

/// Runs the schedule on a fresh cluster; again (up to three times in all) when etcd itself lost
/// a write on a killed member (see `etcd_divergence`), which says nothing about keygate.
async fn watch_under_faults(schedule: &[(usize, Fault)]) -> Result<()> {
    let mut diverged = Vec::new();
    for _ in 0..3 {
        match watch_once_under_faults(schedule).await? {
            None => return Ok(()),
            Some(why) => {
                eprintln!("{why}; running the schedule again on a fresh cluster");
                diverged.push(why);
            }
        }
    }
    anyhow::bail!("etcd diverged on every attempt: {diverged:?}")
}

/// `Some(why)` when etcd's members ended up disagreeing, so keygate could not be judged.
async fn watch_once_under_faults(schedule: &[(usize, Fault)]) -> Result<Option<String>> {
    let mut cluster = EtcdCluster::start(3).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    let mut c = keygate.clients().await?;
    let start =
        c.kv.range(RangeRequest {
            key: Bytes::from_static(b"f/"),
            ..Default::default()
        })
        .await?
        .into_inner()
        .header
        .map(|h| h.revision)
        .unwrap_or_default()
            + 1;

    let mut watch = WatchStream::open(&c, prefix_watch("f/", start)).await?;
    let created = watch.next(RESPONSE_TIMEOUT).await?;
    ensure!(created.created && !created.canceled, "{created:?}");

    let mut acked = Vec::new();
    for i in 0..WRITES {
        let (key, value) = (format!("f/{:04}", i % 50), format!("v{i}"));
        let revision = put_retrying(&mut c, key.clone(), value.clone()).await?;
        acked.push((Bytes::from(key), revision, Bytes::from(value)));
        for (_, fault) in schedule.iter().filter(|(at, _)| *at == i) {
            eprintln!("after {i} writes: {fault:?}");
            match *fault {
                Fault::Kill(m) => cluster.kill(m)?,
                Fault::Restart(m) => cluster.restart(m).await?,
                Fault::Pause(m) => cluster.pause(m)?,
                Fault::Resume(m) => cluster.resume(m)?,
            }
        }
    }
    put_retrying(&mut c, "f/end".into(), "done".into()).await?;

    let through = watch.events_until(b"f/end", RESPONSE_TIMEOUT).await;
    if let Some(why) = keygate_tests::etcd_divergence::divergence(&cluster).await? {
        return Ok(Some(why));
    }
    let through =
        through.with_context(|| format!("keygate log tail:\n{}", keygate.log_tail(30)))?;
    let got = summary(&through);
    let lost = missing(&got, &acked);
    ensure!(
        lost.is_empty(),
        "the watch through keygate lacks acknowledged writes {lost:?}\nkeygate log tail:\n{}",
        keygate.log_tail(30)
    );
    let want = reference_history(&cluster, start, &acked).await?;
    if got != want {
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        anyhow::bail!(
            "watch through keygate differs from etcd's history: {} events vs {}; first \
             difference at {first_diff:?}: got {:?}, want {:?}\nkeygate log tail:\n{}",
            got.len(),
            want.len(),
            first_diff.and_then(|i| got.get(i)),
            first_diff.and_then(|i| want.get(i)),
            keygate.log_tail(30)
        );
    }
    Ok(None)
}

/// The member keygate's watches are on stops answering (paused: a frozen process, a stalled
/// disk). Its connection stays open and HTTP/2 keep-alive would notice only after 5–15 s; the
/// health checker marks the member down within a second or two, and the watches move to another
/// member then: a write made once the member is marked down reaches the watcher within seconds.
#[tokio::test(flavor = "multi_thread")]
async fn watches_leave_a_member_that_stops_answering_within_seconds() -> Result<()> {
    let cluster = EtcdCluster::start(3).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    let mut c = keygate.clients().await?;
    let serving = || async {
        let body = keygate_tests::watch_record::scrape(keygate.addr()).await?;
        Ok(body.contains("keygate_mirror_serving 1"))
    };
    keygate_tests::process::poll_until(RESPONSE_TIMEOUT, "the mirror serving", serving).await?;
    let mut watch = WatchStream::open(&c, prefix_watch("p/", 0)).await?;
    ensure!(watch.next(RESPONSE_TIMEOUT).await?.created, "not created");
    put_retrying(&mut c, "p/0".into(), "before".into()).await?;
    watch.events_until(b"p/0", RESPONSE_TIMEOUT).await?;

    // keygate follows the leader: pause it.
    let mut leader = None;
    for i in 0..cluster.len() {
        let mut member = cluster.clients(i).await?;
        let status = member
            .maintenance
            .status(StatusRequest {})
            .await?
            .into_inner();
        if status.header.is_some_and(|h| h.member_id == status.leader) {
            leader = Some(i);
        }
    }
    let leader = leader.context("no leader")?;
    cluster.pause(leader)?;
    let down = format!(
        "keygate_upstream_member_healthy{{member=\"{}\"}} 0",
        cluster.endpoint(leader)
    );
    let addr = keygate.addr().to_string();
    keygate_tests::process::poll_until(RESPONSE_TIMEOUT, "the paused member marked down", || {
        let (down, addr) = (down.clone(), addr.clone());
        async move {
            let body = keygate_tests::watch_record::scrape(&addr).await?;
            Ok(body.contains(&down))
        }
    })
    .await?;
    put_retrying(&mut c, "p/1".into(), "during".into()).await?;
    let written = std::time::Instant::now();
    let events = watch.events_until(b"p/1", Duration::from_secs(5)).await;
    let waited = written.elapsed();
    cluster.resume(leader)?;
    let events = events.with_context(|| {
        format!(
            "no event within 5 s of the write ({waited:?})\n{}",
            keygate.log_tail(20)
        )
    })?;
    ensure!(events.len() == 1, "events {events:?}");
    Ok(())
}
