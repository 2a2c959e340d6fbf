//! The watch hub under faults: a stream that stops reading while thousands of puts happen
//! (keygate's event window cut to 100 revisions): the 100 watchers of another stream get every
//! event promptly, keygate's memory stays bounded, and once the slow stream reads again each
//! of its watchers got an unbroken prefix of its events, then (having fallen off the window) a
//! cancel with compact_revision — never a gap; a stream that pauses within the window is caught
//! up from it, every event in order and counted. And a watch resumed across a keygate restart
//! (from a revision seen through the previous keygate) is served by the hub from the
//! backfilled window; and the hub's watchers carry on upstream when the mirror goes over its
//! memory budget. (The leader kill is in watch_faults_leader.rs.)

use crate::watch_faults_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::WatchResponse;
use keygate_tests::watch::{prefix_watch, WatchStream};
use keygate_tests::watch_record::{metric, rss_kib, Recorded};
use keygate_tests::{Clients, EtcdCluster, Keygate};
use tonic::transport::Endpoint;
use watch_faults_common::{b, put, revs, wait_serving, T};

const FAST_WATCHERS: usize = 100;
const SLOW_BIG_WATCHERS: usize = 30;
const ROUNDS: usize = 2000;
const WRITERS: usize = 4;
const BIG_VALUE: usize = 8 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stops_reading_delays_no_one_and_is_canceled_not_gapped() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let keygate = Keygate::start_with_config(
        &cluster.client_urls(),
        "[mirror]\nwindow_revisions = 100\n",
        &[],
    )
    .await?;
    wait_serving(&keygate).await?;
    let pid = keygate.pid().context("keygate not running")?;
    let via = keygate.clients().await?;

    // 100 watchers of every load/ key on one stream.
    let fast = Recorded::open(via.channel.clone());
    for _ in 0..FAST_WATCHERS {
        fast.create(prefix_watch("load/", 0))?;
    }
    fast.wait_for("100 created", T, |r| {
        r.iter().filter(|r| r.created).count() == FAST_WATCHERS
    })
    .await?;

    // The slow stream: its own connection with small HTTP/2 windows, so not reading stalls
    // keygate's sends quickly. 30 watchers of big values and one of load/.
    let slow_channel = Endpoint::from_shared(keygate.endpoint())?
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await?;
    let slow_clients = Clients::from_channel(slow_channel);
    let mut slow = WatchStream::open(&slow_clients, prefix_watch("load/", 0)).await?;
    for _ in 0..SLOW_BIG_WATCHERS {
        slow.create(prefix_watch("big/", 0)).await?;
    }
    let mut slow_start = Vec::new();
    for _ in 0..=SLOW_BIG_WATCHERS {
        let r = slow.next(T).await?;
        ensure!(r.created && !r.canceled, "slow stream create: {r:?}");
        slow_start.push((r.watch_id, r.header.map_or(0, |h| h.revision) + 1));
    }
    let rss_before = rss_kib(pid)?;

    // Writers: small puts to load/ (whose acknowledgement instants give the latency), large
    // ones to big/.
    let acks: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let big_revs: Arc<Mutex<Vec<i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let rss_max = Arc::new(Mutex::new(rss_before));
    let sampler = {
        let (stop, rss_max) = (stop.clone(), rss_max.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let (Ok(rss), Ok(mut max)) = (rss_kib(pid), rss_max.lock()) {
                    *max = (*max).max(rss);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut c = keygate.clients().await?;
        let (acks, big_revs) = (acks.clone(), big_revs.clone());
        writers.push(tokio::spawn(async move {
            for i in (w..ROUNDS).step_by(WRITERS) {
                let rev = put(&mut c, format!("load/{:02}", i % 50), b("small")).await?;
                if let Ok(mut a) = acks.lock() {
                    a.push((rev, Instant::now()));
                }
                let rev = put(
                    &mut c,
                    format!("big/{:02}", i % 20),
                    Bytes::from(vec![b'x'; BIG_VALUE]),
                )
                .await?;
                if let Ok(mut r) = big_revs.lock() {
                    r.push(rev);
                }
            }
            anyhow::Ok(())
        }));
    }
    for w in writers {
        w.await??;
    }
    let write_time = started.elapsed();
    let mut acks = acks.lock().map(|a| a.clone()).unwrap_or_default();
    acks.sort();
    let mut big_revs = big_revs.lock().map(|r| r.clone()).unwrap_or_default();
    big_revs.sort();
    let load_revs: Vec<i64> = acks.iter().map(|(r, _)| *r).collect();
    let ack_at: std::collections::HashMap<i64, Instant> = acks.iter().copied().collect();

    // Every fast watcher gets every load/ event, in order, promptly.
    let want_events = FAST_WATCHERS * ROUNDS;
    let fast_resps = fast
        .wait_for("every event on the fast stream", T, |r| {
            r.iter().map(|r| r.events.len()).sum::<usize>() >= want_events
        })
        .await
        .with_context(|| format!("keygate log:\n{}", keygate.log_tail(20)))?;
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    let timed = fast.timed();
    let mut per_watcher: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    let mut latencies = Vec::new();
    for (at, r) in &timed {
        for e in &r.events {
            let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            per_watcher.entry(r.watch_id).or_default().push(rev);
            if let Some(acked) = ack_at.get(&rev) {
                latencies.push(at.saturating_duration_since(*acked));
            }
        }
    }
    ensure!(
        fast_resps.iter().all(|r| !r.canceled),
        "a fast watcher was canceled"
    );
    ensure!(per_watcher.len() == FAST_WATCHERS);
    for (id, got) in &per_watcher {
        ensure!(
            *got == load_revs,
            "fast watcher {id}: {} events, {} written; first difference at {:?}",
            got.len(),
            load_revs.len(),
            got.iter().zip(&load_revs).position(|(a, b)| a != b)
        );
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    let max = latencies.last().copied().unwrap_or_default();
    eprintln!(
        "{} puts in {write_time:?}; fast stream latency after the put's ack: p99 {p99:?}, max \
         {max:?}",
        2 * ROUNDS
    );
    ensure!(
        p99 < Duration::from_secs(1) && max < Duration::from_secs(3),
        "fast watchers delayed: p99 {p99:?}, max {max:?} after the put was acknowledged"
    );

    // Memory: the slow stream was owed far more than keygate may hold.
    let rss_max = *rss_max.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let owed_kib = (SLOW_BIG_WATCHERS * ROUNDS * BIG_VALUE / 1024) as u64;
    let grew = rss_max.saturating_sub(rss_before);
    eprintln!("keygate RSS {rss_before} KiB before, max {rss_max} KiB; the slow stream was owed {owed_kib} KiB");
    ensure!(
        grew < 128 * 1024 && grew < owed_kib / 4,
        "keygate's RSS grew by {grew} KiB while a stream that was owed {owed_kib} KiB did not \
         read"
    );

    // The slow stream reads again: per watcher an unbroken prefix of its events, then, having
    // fallen off the 100-revision window, a cancel with compact_revision.
    let mut got: std::collections::HashMap<i64, Vec<i64>> = Default::default();
    let mut canceled: std::collections::HashMap<i64, i64> = Default::default();
    let last_of = |id: i64| {
        if id == slow_start[0].0 {
            *load_revs.last().unwrap_or(&0)
        } else {
            *big_revs.last().unwrap_or(&0)
        }
    };
    let mut problems = Vec::new();
    while canceled.len()
        + slow_start
            .iter()
            .filter(|(id, _)| {
                !canceled.contains_key(id)
                    && got.get(id).and_then(|g| g.last()).copied() == Some(last_of(*id))
            })
            .count()
        < slow_start.len()
    {
        let r: WatchResponse = slow
            .next(Duration::from_secs(10))
            .await
            .with_context(|| format!("reading the slow stream again; canceled {canceled:?}"))?;
        if canceled.contains_key(&r.watch_id) {
            problems.push(format!(
                "watcher {} got a response after its cancel",
                r.watch_id
            ));
        }
        if r.canceled {
            if r.compact_revision == 0 {
                problems.push(format!(
                    "watcher {} canceled without compact_revision: {:?}",
                    r.watch_id, r.cancel_reason
                ));
            }
            canceled.insert(r.watch_id, r.compact_revision);
        }
        got.entry(r.watch_id).or_default().extend(revs(&r.events));
    }
    for (id, start) in &slow_start {
        let all = if *id == slow_start[0].0 {
            &load_revs
        } else {
            &big_revs
        };
        let owed: Vec<i64> = all.iter().copied().filter(|r| r >= start).collect();
        let mine = got.get(id).cloned().unwrap_or_default();
        if !owed.starts_with(&mine) {
            problems.push(format!(
                "slow watcher {id}: its {} events are not an unbroken prefix of the {} owed \
                 (first difference at {:?})",
                mine.len(),
                owed.len(),
                mine.iter().zip(&owed).position(|(a, b)| a != b)
            ));
        }
        if let Some(compact) = canceled.get(id) {
            // Past what it delivered (else it could have gone on), at most the next revision.
            let newest = load_revs.last().max(big_revs.last()).copied().unwrap_or(0);
            if *compact <= mine.last().copied().unwrap_or(0) || *compact > newest + 1 {
                problems.push(format!(
                    "slow watcher {id}: canceled with compact_revision {compact} after event \
                     {:?}",
                    mine.last()
                ));
            }
        }
    }
    ensure!(problems.is_empty(), "{problems:#?}");
    ensure!(
        !canceled.is_empty(),
        "no slow watcher was canceled though each fell {} revisions behind a 100-revision window",
        2 * ROUNDS
    );
    let lagging = metric(keygate.addr(), "keygate_watch_canceled_lagging_total").await?;
    ensure!(
        lagging >= canceled.len() as f64,
        "keygate_watch_canceled_lagging_total {lagging}, {} canceled",
        canceled.len()
    );
    eprintln!(
        "slow stream: {} of {} watchers canceled for lag",
        canceled.len(),
        slow_start.len()
    );
    Ok(())
}

/// A client that pauses reading while writes go on, but not past the event window: once it
/// reads again its watcher is caught up from the window — every event, in order, none twice —
/// and keygate counts the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_pauses_is_caught_up_from_the_window() -> Result<()> {
    const PUTS: usize = 60;
    let cluster = EtcdCluster::start(1).await?;
    let keygate = Keygate::start_with_config(
        &cluster.client_urls(),
        "[mirror]\nwindow_revisions = 1000\n",
        &[],
    )
    .await?;
    wait_serving(&keygate).await?;
    // Small HTTP/2 windows: not reading stalls keygate's sends after a few responses.
    let channel = Endpoint::from_shared(keygate.endpoint())?
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await?;
    let mut paused =
        WatchStream::open(&Clients::from_channel(channel), prefix_watch("p/", 0)).await?;
    let created = paused.next(T).await?;
    ensure!(created.created, "create: {created:?}");
    let before = metric(keygate.addr(), "keygate_watch_caught_up_total").await?;

    // 60 puts of 64 KiB (3.8 MB) while the stream is not read.
    let mut c = keygate.clients().await?;
    let mut written = Vec::new();
    for i in 0..PUTS {
        let value = Bytes::from(vec![b'v'; 64 * 1024]);
        written.push(put(&mut c, format!("p/{:02}", i % 10), value).await?);
    }
    let mut got = Vec::new();
    while got.len() < PUTS {
        let r = paused.next(T).await.context("reading the paused stream")?;
        ensure!(!r.canceled, "canceled: {r:?}");
        got.extend(revs(&r.events));
    }
    ensure!(got == written, "events {got:?}, written {written:?}");
    let after = metric(keygate.addr(), "keygate_watch_caught_up_total").await?;
    ensure!(
        after > before,
        "keygate_watch_caught_up_total stayed at {before} though the stream was caught up"
    );
    Ok(())
}

/// kube-apiserver keeps its watches across a keygate restart by resuming each from the last
/// revision it saw. The restarted keygate backfilled its event window at start, so the resumed
/// watch — including the writes made while keygate was down — is served by the hub, exactly as
/// etcd would serve it, and etcd still sees only the mirror's one watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_across_a_keygate_restart_is_served_by_the_hub() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let mut direct = cluster.clients(0).await?;
    let mut first = Keygate::start(&cluster.client_urls(), &[]).await?;
    wait_serving(&first).await?;
    let mut via = first.clients().await?;
    let mut watch = WatchStream::open(&via, prefix_watch("r/", 0)).await?;
    let mut seen = 0;
    for i in 0..5 {
        seen = put(&mut via, format!("r/{i}"), b("before")).await?;
    }
    watch.events_until(b"r/4", T).await?;
    first.stop().await?;
    drop((watch, via));

    // Written while no keygate runs: overwrites (prev_kv), a delete, a new key.
    put(&mut direct, "r/1".into(), b("while down")).await?;
    direct
        .kv
        .delete_range(keygate_proto::etcdserverpb::DeleteRangeRequest {
            key: b("r/2"),
            ..Default::default()
        })
        .await?;
    put(&mut direct, "r/9".into(), b("while down")).await?;

    let second = Keygate::start(&cluster.client_urls(), &[]).await?;
    wait_serving(&second).await?;
    // The history comes in beside the serving mirror.
    keygate_tests::process::poll_until(T, "the event window backfilled", || async {
        let oldest = metric(second.addr(), "keygate_mirror_window_oldest_revision").await?;
        Ok(oldest > 0.0 && oldest <= (seen + 1) as f64)
    })
    .await?;
    let resume = keygate_proto::etcdserverpb::WatchCreateRequest {
        prev_kv: true,
        ..prefix_watch("r/", seen + 1)
    };
    let mut resumed = WatchStream::open(&second.clients().await?, resume.clone()).await?;
    let mut reference = WatchStream::open(&direct, resume).await?;
    let got = resumed.events_until(b"r/9", T).await?;
    let want = reference.events_until(b"r/9", T).await?;
    ensure!(
        got == want && revs(&got).len() == 3,
        "resumed through keygate: {got:?}\netcd: {want:?}"
    );
    let own = metric(second.addr(), "keygate_watch_upstream_streams").await?;
    let etcd_watchers = metric(&cluster.addr(0), "etcd_debugging_mvcc_watcher_total").await?;
    ensure!(
        own == 0.0 && etcd_watchers == 2.0,
        "the resumed watch went upstream: {own} upstream watches of keygate's own, {etcd_watchers} \
         watchers on etcd (the mirror's and the test's reference expected)"
    );
    Ok(())
}

/// A watch from before the event window starts on an upstream watch of its own. A
/// WatchProgressRequest on its stream is answered once etcd says that watcher is synced too
/// (keygate asks etcd on the watcher's upstream stream); once the watcher has been sent an event
/// inside the window, it moves to the hub and its upstream watch ends, with nothing lost or
/// repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_before_the_window_moves_to_the_hub() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let mut direct = cluster.clients(0).await?;
    for i in 0..10 {
        put(&mut direct, format!("q/{i}"), b("old")).await?;
    }
    // Later writes elsewhere: the watcher's last event lies before the window.
    for i in 0..5 {
        put(&mut direct, format!("z/{i}"), b("old")).await?;
    }
    let keygate = Keygate::start_with_config(
        &cluster.client_urls(),
        "[mirror]\nbackfill_revisions = 0\n",
        &[],
    )
    .await?;
    wait_serving(&keygate).await?;
    let mut via = keygate.clients().await?;
    let upstream = || metric(keygate.addr(), "keygate_watch_upstream_streams");

    // From revision 2, before the window: q/0 … q/9, on an upstream watch of its own.
    let mut stream = WatchStream::open(&via, prefix_watch("q/", 2)).await?;
    let history = stream.events_until(b"q/9", T).await?;
    ensure!(
        revs(&history) == (2..12).collect::<Vec<_>>(),
        "history {:?}",
        revs(&history)
    );
    ensure!(
        upstream().await? == 1.0,
        "not on an upstream watch of its own"
    );

    stream.progress().await?;
    let reply = loop {
        let resp = stream.next(T).await.context("no progress reply")?;
        if resp.watch_id == -1 {
            break resp;
        }
    };
    let current = put(&mut via, "elsewhere".into(), b("x")).await? - 1;
    ensure!(
        reply.header.as_ref().map(|h| h.revision) == Some(current) && reply.events.is_empty(),
        "progress reply {reply:?}, expected one at revision {current}"
    );

    // An event inside the window: relayed, then the hub takes over from the next revision.
    let moved = put(&mut via, "q/new".into(), b("1")).await?;
    let events = stream.events_until(b"q/new", T).await?;
    ensure!(revs(&events) == [moved], "events {:?}", revs(&events));
    keygate_tests::process::poll_until(T, "the watcher on the hub", || async {
        Ok(upstream().await? == 0.0)
    })
    .await?;
    let handovers = metric(keygate.addr(), "keygate_watch_handovers_total").await?;
    let last = put(&mut via, "q/last".into(), b("2")).await?;
    let events = stream.events_until(b"q/last", T).await?;
    ensure!(
        revs(&events) == [last] && handovers == 1.0,
        "after the hand-over: events {:?}, {handovers} hand-overs",
        revs(&events)
    );
    Ok(())
}

/// When the keyspace outgrows `mirror.max_bytes` the mirror drops it and stops following etcd;
/// the hub's watchers carry on, each on an upstream watch of its own from the revision it is
/// owed, with nothing lost or repeated (they used to hear nothing more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_carry_on_when_the_mirror_goes_over_its_budget() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let mut direct = cluster.clients(0).await?;
    let keygate = Keygate::start_with_config(
        &cluster.client_urls(),
        "[mirror]\nmax_bytes = 100000\n",
        &[],
    )
    .await?;
    wait_serving(&keygate).await?;
    let via = keygate.clients().await?;
    let mut stream = WatchStream::open(&via, prefix_watch("w/", 0)).await?;
    ensure!(stream.next(T).await?.created, "no created response");
    let first = put(&mut direct, "w/1".into(), b("1")).await?;
    let events = stream.events_until(b"w/1", T).await?;
    ensure!(revs(&events) == [first], "events {:?}", revs(&events));

    let big = Bytes::from(vec![b'x'; 200_000]);
    let over = put(&mut direct, "big".into(), big).await?;
    keygate_tests::process::poll_until(T, "the mirror out of service", || async {
        Ok(metric(keygate.addr(), "keygate_mirror_serving").await? == 0.0)
    })
    .await?;
    let second = put(&mut direct, "w/2".into(), b("2")).await?;
    let third = put(&mut direct, "w/3".into(), b("3")).await?;
    let events = stream.events_until(b"w/3", T).await?;
    let upstream = metric(keygate.addr(), "keygate_watch_upstream_streams").await?;
    ensure!(
        revs(&events) == [second, third] && upstream == 1.0 && over < second,
        "after the mirror dropped the keyspace: events {:?}, {upstream} upstream watches",
        revs(&events)
    );
    Ok(())
}
