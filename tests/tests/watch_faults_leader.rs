//! The watch hub under faults: the member the mirror watches (the leader) is SIGKILLed under a
//! write load: watchers through keygate see exactly etcd's history — every acknowledged write,
//! no gap, no duplicate. (The stream that stops reading is in watch_faults.rs.)

use crate::watch_faults_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{StatusRequest, WatchCreateRequest};
use keygate_proto::mvccpb::Event;
use keygate_tests::watch::prefix_watch;
use keygate_tests::watch_record::{metric_sum, scrape, Recorded};
use keygate_tests::{EtcdCluster, Keygate};
use watch_faults_common::{b, put, revs, wait_serving, T};

/// Which member leads, asked of each running member directly.
async fn leader(cluster: &EtcdCluster) -> Result<usize> {
    let mut ids = Vec::new();
    let mut leader = 0;
    for i in 0..cluster.len() {
        let mut c = cluster.clients(i).await?;
        let s = tokio::time::timeout(
            Duration::from_secs(2),
            c.maintenance.status(StatusRequest {}),
        )
        .await
        .context("status timed out")??
        .into_inner();
        ids.push(s.header.map_or(0, |h| h.member_id));
        leader = leader.max(s.leader);
    }
    ids.iter()
        .position(|&id| id != 0 && id == leader)
        .with_context(|| format!("no leader among {ids:?}"))
}

/// Members with a watcher open, from each member's own /metrics.
async fn watched(cluster: &EtcdCluster) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for i in 0..cluster.len() {
        let body = scrape(&cluster.addr(i)).await?;
        if metric_sum(&body, "etcd_debugging_mvcc_watcher_total") > 0.0 {
            out.push(i);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_watched_leader_under_writes_loses_and_repeats_nothing() -> Result<()> {
    let mut cluster = EtcdCluster::start(3).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    wait_serving(&keygate).await?;
    let mut via = keygate.clients().await?;
    let first = put(&mut via, "w/first".into(), b("0")).await?;

    let mut lead = leader(&cluster).await?;
    let mut members = Vec::new();
    for _ in 0..100 {
        lead = leader(&cluster).await?;
        members = watched(&cluster).await?;
        if members.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        members == [lead],
        "the mirror should watch the leader m{lead}; members with watchers: {members:?}"
    );

    // Watchers through keygate: from now, with prev_kv, and from a revision in the window.
    let stream = Recorded::open(via.channel.clone());
    let creates = [
        prefix_watch("w/", 0),
        WatchCreateRequest {
            prev_kv: true,
            ..prefix_watch("w/", 0)
        },
        prefix_watch("w/", first),
        WatchCreateRequest {
            prev_kv: true,
            ..prefix_watch("w/", first)
        },
    ];
    for c in &creates {
        stream.create(c.clone())?;
    }
    let created = stream
        .wait_for("created", T, |r| {
            r.iter().filter(|r| r.created).count() == creates.len()
        })
        .await?;
    let start_now = created
        .first()
        .map_or(0, |r| r.header.map_or(0, |h| h.revision) + 1);

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..2 {
        let mut c = keygate.clients().await?;
        let (stop, acked) = (stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            let mut failed = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match put(
                    &mut c,
                    format!("w/{w}/{:03}", n % 200),
                    Bytes::from(n.to_string()),
                )
                .await
                {
                    Ok(rev) => {
                        if let Ok(mut a) = acked.lock() {
                            a.push(rev);
                        }
                    }
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            failed
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    eprintln!("killing m{lead}, the leader the mirror watches");
    cluster.kill(lead)?;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failed = 0;
    for w in writers {
        failed += w.await?;
    }
    let mut end = None;
    for _ in 0..50 {
        if let Ok(rev) = put(&mut via, "w/end".into(), b("end")).await {
            end = Some(rev);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = end.context("the final put never succeeded")?;
    let mut acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    acked.sort();
    eprintln!(
        "{} writes acknowledged, {failed} failed, end at {end}",
        acked.len()
    );
    ensure!(
        acked.len() > 50,
        "too few writes to prove anything: {}",
        acked.len()
    );

    let resps = stream
        .wait_for("every watcher to reach w/end", T, |r| {
            r.iter()
                .filter(|r| {
                    r.events
                        .iter()
                        .any(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision == end))
                })
                .count()
                >= creates.len()
                || r.iter().any(|r| r.canceled)
        })
        .await
        .with_context(|| format!("keygate log:\n{}", keygate.log_tail(30)))?;
    if let Some(c) = resps.iter().find(|r| r.canceled) {
        bail!("a watcher was canceled: {c:?}");
    }

    // etcd's own history, from a survivor.
    let survivor = (0..3).find(|&i| i != lead).unwrap_or(0);
    let direct = cluster.clients(survivor).await?;
    let reference = Recorded::open(direct.channel.clone());
    reference.create(WatchCreateRequest {
        prev_kv: true,
        ..prefix_watch("w/", first)
    })?;
    let history: Vec<Event> = reference
        .wait_for("etcd's history", T, |r| {
            r.iter().any(|r| {
                r.events
                    .iter()
                    .any(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision == end))
            })
        })
        .await?
        .into_iter()
        .flat_map(|r| r.events)
        .collect();

    let ids: Vec<i64> = resps
        .iter()
        .filter(|r| r.created)
        .map(|r| r.watch_id)
        .collect();
    let mut problems = Vec::new();
    for (create, id) in creates.iter().zip(ids) {
        let got: Vec<Event> = resps
            .iter()
            .filter(|r| r.watch_id == id)
            .flat_map(|r| r.events.clone())
            .collect();
        let start = if create.start_revision > 0 {
            create.start_revision
        } else {
            start_now
        };
        let want: Vec<Event> = history
            .iter()
            .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= start))
            .map(|e| {
                let mut e = e.clone();
                if !create.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect();
        let got_revs = revs(&got);
        let missing: Vec<i64> = acked
            .iter()
            .copied()
            .filter(|r| *r >= start && !got_revs.contains(r))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let dups = got
            .iter()
            .filter_map(|e| e.kv.as_ref())
            .filter(|kv| !seen.insert((kv.mod_revision, kv.key.clone())))
            .count();
        if !missing.is_empty() || dups > 0 || got != want {
            problems.push(format!(
                "watcher {id} (start {start}, prev_kv {}): {} events, etcd's history has {}; \
                 {dups} duplicates; acknowledged revisions missing: {:?}; first difference at \
                 {:?}",
                create.prev_kv,
                got.len(),
                want.len(),
                &missing[..missing.len().min(10)],
                got.iter().zip(&want).position(|(a, b)| a != b)
            ));
        }
    }
    ensure!(
        problems.is_empty(),
        "{problems:#?}\nkeygate log:\n{}",
        keygate.log_tail(30)
    );
    Ok(())
}
