//! The mirror under faults, against a real 3-member cluster:
//! - the member the mirror watches (keygate prefers the leader) is SIGKILLed under a load of
//!   writes and linearizable reads through keygate: no read goes back in time, and the mirror
//!   resumes on a survivor and answers as etcd does;
//! - the member it watches is SIGKILLed while keygate itself is paused (SIGSTOP, so the mirror
//!   cannot resume meanwhile), the survivors take many writes and deletes straight to etcd and
//!   are compacted past the mirror's revision: once keygate runs again, nothing stale is served
//!   (each read compared with etcd's answer), keygate_mirror_relists_total shows the relist,
//!   and the mirror serves again;
//! - over its memory budget (`[mirror] max_bytes`), the mirror stops serving
//!   (keygate_mirror_serving 0) and keygate keeps answering every read correctly from etcd,
//!   whether the budget is crossed while following the keyspace or already at the first list.

use crate::mirror_common;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use keygate_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, RangeRequest};
use keygate_tests::process::{poll_until, signal};
use keygate_tests::{Clients, EtcdCluster, Keygate};
use mirror_common::{differs, metric, mirror_member, wait_leader, wait_serving, Reads};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

use mirror_common::{b, put};

fn ranged(key: &str, end: &str, serializable: bool) -> RangeRequest {
    RangeRequest {
        key: b(key),
        range_end: b(end),
        serializable,
        ..Default::default()
    }
}

/// Reads that would show a stale mirror: whole prefixes, counts, single keys.
fn battery() -> Vec<RangeRequest> {
    let mut out = Vec::new();
    for serializable in [false, true] {
        out.push(ranged("seed/", "seed0", serializable));
        out.push(ranged("seed/5", "", serializable));
        out.push(RangeRequest {
            count_only: true,
            ..ranged("direct/", "direct0", serializable)
        });
        out.push(RangeRequest {
            limit: 3,
            ..ranged("direct/", "direct0", serializable)
        });
        out.push(ranged("load/", "load0", serializable));
        out.push(RangeRequest {
            count_only: true,
            ..ranged("\0", "\0", serializable)
        });
    }
    out
}

/// Every battery read, through keygate and then directly; the differences.
async fn compare_battery(via: &mut Clients, direct: &mut Clients) -> Vec<String> {
    let mut out = Vec::new();
    for req in battery() {
        if let Some(d) = differs(via, direct, &req).await {
            out.push(d);
        }
    }
    out
}

struct Load {
    stop: AtomicBool,
    /// The highest counter value whose put was acknowledged.
    acked: AtomicI64,
    reads: AtomicUsize,
    failed_reads: AtomicUsize,
    failed_writes: AtomicUsize,
    backwards: std::sync::Mutex<Vec<String>>,
}

async fn writer(mut c: Clients, load: Arc<Load>) {
    let mut n = 0i64;
    while !load.stop.load(Ordering::Relaxed) {
        n += 1;
        match put(&mut c, "load/counter", &n.to_string()).await {
            Ok(_) => {
                load.acked.fetch_max(n, Ordering::SeqCst);
            }
            Err(_) => {
                load.failed_writes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Linearizable reads: never older than a write acknowledged before the read began.
async fn reader(mut c: Clients, load: Arc<Load>) {
    while !load.stop.load(Ordering::Relaxed) {
        let floor = load.acked.load(Ordering::SeqCst);
        let resp =
            tokio::time::timeout(CALL_TIMEOUT, c.kv.range(ranged("load/counter", "", false))).await;
        match resp {
            Ok(Ok(resp)) => {
                load.reads.fetch_add(1, Ordering::Relaxed);
                let v: i64 = resp
                    .into_inner()
                    .kvs
                    .first()
                    .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse().ok())
                    .unwrap_or(0);
                if v < floor {
                    if let Ok(mut b) = load.backwards.lock() {
                        b.push(format!(
                            "read {v} after the put of {floor} was acknowledged"
                        ));
                    }
                }
            }
            _ => {
                load.failed_reads.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_survives_its_member_dying_and_relists_after_compaction() -> Result<()> {
    let mut cluster = EtcdCluster::start(3).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    wait_serving(&keygate, Duration::from_secs(15)).await?;
    let mut via = keygate.clients().await?;
    for i in 0..20 {
        put(&mut via, &format!("seed/{i}"), &format!("s{i}")).await?;
    }

    // Phase 1: kill the mirror's member under load.
    let leader = wait_leader(&cluster, &[], Duration::from_secs(10)).await?;
    let watched = mirror_member(&cluster, &[]).await?;
    eprintln!("leader m{leader}, the mirror watches m{watched}");
    ensure!(
        watched == leader,
        "keygate should prefer the leader (m{leader}) for the mirror's watch, but it watches \
         m{watched}"
    );
    let load = Arc::new(Load {
        stop: AtomicBool::new(false),
        acked: AtomicI64::new(0),
        reads: AtomicUsize::new(0),
        failed_reads: AtomicUsize::new(0),
        failed_writes: AtomicUsize::new(0),
        backwards: std::sync::Mutex::new(Vec::new()),
    });
    let tasks = [
        tokio::spawn(writer(keygate.clients().await?, load.clone())),
        tokio::spawn(reader(keygate.clients().await?, load.clone())),
        tokio::spawn(reader(keygate.clients().await?, load.clone())),
    ];
    tokio::time::sleep(Duration::from_millis(800)).await;
    let relists_start = metric(&keygate, "keygate_mirror_relists_total", &[]).await?;
    cluster.kill(watched)?;
    let survivor = (0..3).find(|&i| i != watched).unwrap_or(0);
    wait_leader(&cluster, &[watched], Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let backwards = load.backwards.lock().map(|b| b.clone()).unwrap_or_default();
    eprintln!(
        "phase 1: {} writes acked, {} failed; {} reads, {} failed, {} went back in time",
        load.acked.load(Ordering::SeqCst),
        load.failed_writes.load(Ordering::Relaxed),
        load.reads.load(Ordering::Relaxed),
        load.failed_reads.load(Ordering::Relaxed),
        backwards.len()
    );
    ensure!(
        backwards.is_empty(),
        "stale linearizable reads through keygate: {backwards:?}"
    );
    wait_serving(&keygate, Duration::from_secs(10)).await?;
    let mut direct = cluster.clients(survivor).await?;
    // Every answer must match etcd's at once; reads may still be forwarded for a moment while
    // the mirror resumes on the survivor, but within a few batteries it serves them all again.
    let mut served = Reads::default();
    for _ in 0..10 {
        let before = Reads::now(&keygate).await?;
        let diffs = compare_battery(&mut via, &mut direct).await;
        ensure!(
            diffs.is_empty(),
            "after the member died:\n{}",
            diffs.join("\n")
        );
        served = Reads::now(&keygate).await?.since(&before);
        if served.mirror == battery().len() as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        served.mirror == battery().len() as f64,
        "the mirror should serve every read again after resuming on a survivor: {served:?}\n{}",
        mirror_common::forwarded_reasons(&keygate).await?
    );
    eprintln!(
        "relists during phase 1: {}",
        metric(&keygate, "keygate_mirror_relists_total", &[]).await? - relists_start
    );
    cluster.restart(watched).await?;

    // Phase 2: the mirror's member dies and the survivors compact while keygate is paused.
    let watched = mirror_member(&cluster, &[]).await?;
    let relists_before = metric(&keygate, "keygate_mirror_relists_total", &[]).await?;
    let mirror_rev = metric(&keygate, "keygate_mirror_revision", &[]).await?;
    let pid = keygate.pid().context("keygate is not running")?;
    signal(pid, "STOP")?;
    let paused = async {
        cluster.kill(watched)?;
        let leader = wait_leader(&cluster, &[watched], Duration::from_secs(10)).await?;
        let mut direct = cluster.clients(leader).await?;
        for i in 0..200 {
            put(&mut direct, &format!("direct/{i:03}"), &format!("d{i}")).await?;
        }
        direct
            .kv
            .delete_range(DeleteRangeRequest {
                key: b("seed/"),
                range_end: b("seed0"),
                prev_kv: false,
            })
            .await?;
        let rev = put(&mut direct, "seed/5", "reborn").await?;
        direct
            .kv
            .compact(CompactionRequest {
                revision: rev,
                physical: true,
            })
            .await?;
        anyhow::Ok((leader, rev))
    }
    .await;
    signal(pid, "CONT")?;
    let (leader, compacted) = paused?;
    eprintln!(
        "phase 2: killed m{watched}; compacted at {compacted}, the mirror was at {mirror_rev}"
    );
    let mut direct = cluster.clients(leader).await?;

    // From the moment keygate runs again, every read must match etcd's.
    let mut stale = Vec::new();
    let mut rounds = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let relisted = loop {
        rounds += 1;
        stale.extend(compare_battery(&mut via, &mut direct).await);
        if metric(&keygate, "keygate_mirror_relists_total", &[]).await? > relists_before {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    ensure!(
        stale.is_empty(),
        "keygate answered differently from etcd while recovering ({} differences in {rounds} \
         rounds); the first ones:\n{}",
        stale.len(),
        stale.iter().take(6).cloned().collect::<Vec<_>>().join("\n")
    );
    ensure!(
        relisted,
        "keygate_mirror_relists_total did not grow within 15s; keygate log:\n{}",
        keygate.log_tail(20)
    );
    wait_serving(&keygate, Duration::from_secs(10)).await?;
    let before = Reads::now(&keygate).await?;
    let diffs = compare_battery(&mut via, &mut direct).await;
    ensure!(diffs.is_empty(), "after the relist:\n{}", diffs.join("\n"));
    let served = Reads::now(&keygate).await?.since(&before);
    ensure!(
        served.mirror == battery().len() as f64,
        "the mirror should serve every read after the relist: {served:?}\n{}",
        mirror_common::forwarded_reasons(&keygate).await?
    );
    let revision = metric(&keygate, "keygate_mirror_revision", &[]).await?;
    ensure!(
        revision >= compacted as f64,
        "keygate_mirror_revision {revision} is behind the compaction at {compacted}"
    );
    Ok(())
}

/// Reads through `keygate`, each compared with etcd; all must have been forwarded.
async fn reads_are_forwarded_and_right(keygate: &Keygate, direct: &mut Clients) -> Result<()> {
    let mut via = keygate.clients().await?;
    let before = Reads::now(keygate).await?;
    let diffs = compare_battery(&mut via, direct).await;
    ensure!(diffs.is_empty(), "over budget:\n{}", diffs.join("\n"));
    let served = Reads::now(keygate).await?.since(&before);
    ensure!(
        served.mirror == 0.0 && served.upstream == battery().len() as f64,
        "over budget, every read must go to etcd: {served:?}"
    );
    let not_serving = metric(
        keygate,
        "keygate_mirror_reads_total",
        &[("reason", "not_serving")],
    )
    .await?;
    ensure!(
        not_serving >= battery().len() as f64,
        "reads not counted as not_serving"
    );
    ensure!(
        metric(keygate, "keygate_mirror_serving", &[]).await? == 0.0,
        "keygate_mirror_serving must be 0 over budget"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_memory_budget_the_mirror_stops_serving_and_reads_stay_right() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("keygate.toml");
    std::fs::write(&config, "[mirror]\nmax_bytes = 20000\n")?;
    let config = config.to_string_lossy().into_owned();
    let keygate = Keygate::start(&cluster.client_urls(), &["--config", &config]).await?;
    // The empty keyspace fits.
    wait_serving(&keygate, Duration::from_secs(15)).await?;
    let mut via = keygate.clients().await?;
    let mut direct = cluster.clients(0).await?;
    let value = "x".repeat(500);
    for i in 0..60 {
        put(&mut via, &format!("seed/{i:02}"), &value).await?;
    }
    for i in 0..5 {
        put(&mut via, &format!("direct/{i}"), "small").await?;
    }
    poll_until(
        Duration::from_secs(10),
        "keygate_mirror_serving 0",
        || async { Ok(metric(&keygate, "keygate_mirror_serving", &[]).await? == 0.0) },
    )
    .await
    .with_context(|| format!("keygate log:\n{}", keygate.log_tail(20)))?;
    reads_are_forwarded_and_right(&keygate, &mut direct).await?;
    // Writes keep going through, and reads keep matching.
    put(&mut via, "seed/5", "changed").await?;
    reads_are_forwarded_and_right(&keygate, &mut direct).await?;

    // A keygate that meets a keyspace over its budget at its first list.
    let late = Keygate::start(&cluster.client_urls(), &["--config", &config]).await?;
    let log = late.log_path().to_path_buf();
    poll_until(Duration::from_secs(10), "the over-budget message", || {
        let log = log.clone();
        async move {
            Ok(std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("max_bytes"))
        }
    })
    .await
    .with_context(|| format!("keygate log:\n{}", late.log_tail(20)))?;
    reads_are_forwarded_and_right(&late, &mut direct).await?;
    ensure!(
        keygate.pid().is_some() && late.pid().is_some(),
        "both keygates still run"
    );
    Ok(())
}
