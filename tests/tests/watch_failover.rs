//! Watches through keygate while etcd members die and come back: the event stream matches
//! etcd's own history exactly — no gap, no duplicate, no reordering.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{PutRequest, RangeRequest};
use keygate_proto::mvccpb::Event;
use keygate_tests::watch::{prefix_watch, WatchStream};
use keygate_tests::{Clients, EtcdCluster, Keygate};

const WRITES: usize = 300;
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

/// Puts with retries: a retried put may land twice, which the comparison with etcd's own
/// history tolerates (both sides see it).
async fn put_retrying(c: &mut Clients, key: String, value: String) -> Result<()> {
    let mut last = None;
    for _ in 0..150 {
        let req = PutRequest {
            key: Bytes::from(key.clone()),
            value: Bytes::from(value.clone()),
            ..Default::default()
        };
        // Bounded: a request stuck on a paused member must not hang the test.
        match tokio::time::timeout(Duration::from_secs(5), c.kv.put(req)).await {
            Ok(Ok(_)) => return Ok(()),
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

async fn watch_under_faults(schedule: &[(usize, Fault)]) -> Result<()> {
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

    for i in 0..WRITES {
        put_retrying(&mut c, format!("f/{:04}", i % 50), format!("v{i}")).await?;
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

    let through = watch
        .events_until(b"f/end", RESPONSE_TIMEOUT)
        .await
        .with_context(|| format!("keygate log tail:\n{}", keygate.log_tail(30)))?;

    // etcd's own history of the same range, from a member that never went away.
    let direct = cluster.clients(2).await?;
    let mut reference = WatchStream::open(&direct, prefix_watch("f/", start)).await?;
    reference.next(RESPONSE_TIMEOUT).await?;
    let expected = reference.events_until(b"f/end", RESPONSE_TIMEOUT).await?;

    let (got, want) = (summary(&through), summary(&expected));
    ensure!(
        want.len() > WRITES,
        "reference history too short: {}",
        want.len()
    );
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
    Ok(())
}
