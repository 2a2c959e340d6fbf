//! The mirror's consistency under concurrency, against real etcd:
//! - a history of concurrent puts and linearizable gets on a few keys (gets through keygate,
//!   puts through keygate and, for some clients, straight to etcd, which keygate never sees)
//!   is linearizable, checked with `keygate_tests::linearizability`;
//! - serializable reads through keygate give read-your-writes, and monotonic reads for one
//!   client and across clients of the same keygate (a revision one client saw and passed on
//!   is never newer than what the other then reads), while other writers keep the mirror busy;
//! - both again on three members while the member the mirror watches keeps falling behind
//!   (`Lagging`), so that the mirror trails writes etcd has acknowledged.
//!
//! Both check through /metrics that the mirror served the reads being judged.

use crate::mirror_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use keygate_proto::etcdserverpb::{MoveLeaderRequest, RangeRequest, RangeResponse, StatusRequest};
use keygate_tests::linearizability::{self, Action, Operation};
use keygate_tests::{Clients, EtcdCluster, Keygate};
use mirror_common::{mirror_member, wait_leader, wait_serving, Reads};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

use mirror_common::{b, put};

async fn get(c: &mut Clients, key: &str, serializable: bool) -> Result<RangeResponse> {
    let req = RangeRequest {
        key: b(key),
        serializable,
        ..Default::default()
    };
    Ok(tokio::time::timeout(CALL_TIMEOUT, c.kv.range(req))
        .await
        .context("get timed out")??
        .into_inner())
}

fn value_of(resp: &RangeResponse) -> Option<String> {
    resp.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

const CLIENTS: usize = 8;
/// Clients whose puts go straight to etcd (their gets still go through keygate), one per
/// member of a three-member cluster.
const DIRECT_WRITERS: usize = 3;
const OPS: usize = 600;
const LIN_KEYS: &[&str] = &["lin/0", "lin/1", "lin/2"];

async fn client_history(
    id: usize,
    mut via: Clients,
    mut direct: Clients,
) -> (Vec<Operation>, usize) {
    let mut rng = StdRng::seed_from_u64(0x11ea_0000 + id as u64);
    let mut history = Vec::with_capacity(OPS);
    let mut failed_gets = 0;
    for n in 0..OPS {
        let key = LIN_KEYS[rng.random_range(0..LIN_KEYS.len())];
        let invoked = Instant::now();
        if rng.random_bool(0.4) {
            let value = format!("c{id}-{n}");
            let target = if id < DIRECT_WRITERS {
                &mut direct
            } else {
                &mut via
            };
            let ok = put(target, key, &value).await.is_ok();
            history.push(Operation {
                client: id,
                key: key.to_string(),
                action: Action::Put(value),
                invoked,
                // A failed write may still have been applied, at any later time.
                returned: ok.then(Instant::now),
            });
        } else {
            match get(&mut via, key, false).await {
                Ok(resp) => history.push(Operation {
                    client: id,
                    key: key.to_string(),
                    action: Action::Get(value_of(&resp)),
                    invoked,
                    returned: Some(Instant::now()),
                }),
                Err(_) => failed_gets += 1,
            }
        }
    }
    (history, failed_gets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_through_the_mirror_are_linearizable() -> Result<()> {
    on_one_member(linearizable_history).await
}

/// The same history on three members, while the mirror's member keeps lagging (`Lagging`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_stay_linearizable_while_the_mirrors_member_lags() -> Result<()> {
    Lagging::around(linearizable_history).await
}

/// Runs a check against keygate in front of a one-member cluster.
async fn on_one_member(
    check: impl AsyncFnOnce(&EtcdCluster, &Keygate) -> Result<()>,
) -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    check(&cluster, &keygate).await
}

/// Three members, the mirror watching a follower that keeps falling behind: stopped (SIGSTOP)
/// for 150 ms in every 300 while the other two carry on. Writes are then acknowledged (by the
/// leader for keygate's, by every member for the direct writers') that the mirror's member has
/// not applied; only a barrier (a linearizable read, answered through the leader) or a revision
/// keygate returned knows of them, and a read that trusted the mirror's own member, or did not
/// wait for the mirror to catch up, would be stale.
struct Lagging {
    cluster: Arc<EtcdCluster>,
    keygate: Keygate,
    member: usize,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<usize>>,
}

impl Lagging {
    /// Runs a check against keygate while the mirror's member lags; the check's verdict, once
    /// the lagging is known to have happened.
    async fn around(check: impl AsyncFnOnce(&EtcdCluster, &Keygate) -> Result<()>) -> Result<()> {
        let lagging = Lagging::start().await?;
        let verdict = check(&lagging.cluster, &lagging.keygate).await;
        lagging.finish().await?;
        verdict
    }

    async fn start() -> Result<Lagging> {
        let cluster = Arc::new(EtcdCluster::start(3).await?);
        let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
        wait_serving(&keygate, Duration::from_secs(15)).await?;
        let member = mirror_member(&cluster, &[]).await?;
        make_follower(&cluster, member).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(keep_lagging(cluster.clone(), member, stop.clone()));
        Ok(Lagging {
            cluster,
            keygate,
            member,
            stop,
            task,
        })
    }

    /// Stops the lagging; fails if the member was hardly ever stopped.
    async fn finish(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let pauses = self.task.await??;
        eprintln!(
            "member {} (the mirror's) stopped {pauses} times",
            self.member
        );
        ensure!(
            pauses >= 3,
            "the mirror's member was stopped only {pauses} times"
        );
        Ok(())
    }
}

/// Moves etcd's leadership away from member `i`, if it leads.
async fn make_follower(cluster: &EtcdCluster, i: usize) -> Result<()> {
    let leader = wait_leader(cluster, &[], Duration::from_secs(10)).await?;
    if leader != i {
        return Ok(());
    }
    let target = (i + 1) % cluster.len();
    let target_id = member_id(cluster, target).await?;
    let mut c = cluster.clients(i).await?;
    c.maintenance
        .move_leader(MoveLeaderRequest { target_id })
        .await
        .context("MoveLeader")?;
    let now = wait_leader(cluster, &[], Duration::from_secs(10)).await?;
    ensure!(now != i, "member {i} still leads after MoveLeader");
    Ok(())
}

async fn member_id(cluster: &EtcdCluster, i: usize) -> Result<u64> {
    let mut c = cluster.clients(i).await?;
    let status = c.maintenance.status(StatusRequest {}).await?.into_inner();
    status
        .header
        .map(|h| h.member_id)
        .context("Status without a header")
}

/// Stops member `i` for 150 ms in every 300 until told to stop; how many times it did.
async fn keep_lagging(cluster: Arc<EtcdCluster>, i: usize, stop: Arc<AtomicBool>) -> Result<usize> {
    let mut pauses = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        cluster.pause(i)?;
        pauses += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
        cluster.resume(i)?;
    }
    Ok(pauses)
}

/// Runs the clients' histories through `keygate` (the direct writers' puts spread over the
/// members) and checks them.
async fn linearizable_history(cluster: &EtcdCluster, keygate: &Keygate) -> Result<()> {
    wait_serving(keygate, Duration::from_secs(15)).await?;
    let before = Reads::now(keygate).await?;
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        // Each client on its own connection, as separate processes would be.
        let via = keygate.clients().await?;
        let direct = cluster.clients(id % cluster.len()).await?;
        tasks.push(tokio::spawn(client_history(id, via, direct)));
    }
    let mut history = Vec::new();
    let mut failed_gets = 0;
    for t in tasks {
        let (h, f) = t.await?;
        history.extend(h);
        failed_gets += f;
    }
    let served = Reads::now(keygate).await?.since(&before);
    let gets = history
        .iter()
        .filter(|o| matches!(o.action, Action::Get(_)))
        .count();
    let unknown = history.iter().filter(|o| o.returned.is_none()).count();
    eprintln!(
        "{} operations ({gets} linearizable gets, {failed_gets} failed gets, {unknown} puts \
         of unknown outcome); mirror served {} linearizable reads, {} forwarded",
        history.len(),
        served.mirror_linearizable,
        served.upstream
    );
    let started = std::time::Instant::now();
    let verdict = linearizability::check(&history);
    eprintln!("checked in {:?}", started.elapsed());
    if let Err(v) = verdict {
        anyhow::bail!("{v}");
    }
    ensure!(failed_gets == 0, "{failed_gets} linearizable gets failed");
    ensure!(
        served.mirror_linearizable >= 0.8 * gets as f64,
        "the mirror served only {served:?} of {gets} gets: the history says little about it\n{}",
        mirror_common::forwarded_reasons(keygate).await?
    );
    Ok(())
}

/// Keeps writing, through keygate or straight to etcd, until told to stop.
async fn noise(mut c: Clients, prefix: &'static str, stop: Arc<AtomicBool>) -> usize {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let _ = put(&mut c, &format!("{prefix}{}", n % 50), &n.to_string()).await;
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_reads_give_read_your_writes_and_monotonic_reads() -> Result<()> {
    on_one_member(serializable_reads).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_reads_keep_their_guarantees_while_the_mirrors_member_lags() -> Result<()> {
    Lagging::around(serializable_reads).await
}

/// A writes and reads its own key through keygate, B and C read what A and B tell them of,
/// while other writers (one through keygate, one straight to etcd) keep the mirror busy.
async fn serializable_reads(cluster: &EtcdCluster, keygate: &Keygate) -> Result<()> {
    const ROUNDS: usize = 300;
    wait_serving(keygate, Duration::from_secs(15)).await?;
    let before = Reads::now(keygate).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let noisy = [
        tokio::spawn(noise(
            cluster.clients(0).await?,
            "noise/direct/",
            stop.clone(),
        )),
        tokio::spawn(noise(keygate.clients().await?, "noise/via/", stop.clone())),
    ];

    // A writes and reads its own key; it hands (revision, value) of each write to B; B hands
    // the revision of each of its reads to C. Each on its own connection.
    let (to_b, mut from_a) = tokio::sync::mpsc::channel::<(i64, String)>(8);
    let (to_c, mut from_b) = tokio::sync::mpsc::channel::<i64>(8);
    let mut a = keygate.clients().await?;
    let mut b_client = keygate.clients().await?;
    let mut c_client = keygate.clients().await?;

    let task_a = tokio::spawn(async move {
        let mut bad = Vec::new();
        let mut last_seen = 0i64;
        for i in 0..ROUNDS {
            let value = format!("a{i}");
            let rev = match put(&mut a, "ryw/a", &value).await {
                Ok(rev) => rev,
                Err(e) => {
                    bad.push(format!("A's put {i} failed: {e:#}"));
                    continue;
                }
            };
            match get(&mut a, "ryw/a", true).await {
                Ok(resp) => {
                    let seen = resp.header.as_ref().map_or(0, |h| h.revision);
                    let kv = resp.kvs.first();
                    if value_of(&resp).as_deref() != Some(value.as_str())
                        || kv.map_or(0, |kv| kv.mod_revision) != rev
                        || seen < rev
                    {
                        bad.push(format!(
                            "read-your-writes: A put {value:?} at revision {rev}, then read \
                             {:?} (mod revision {}) at header revision {seen}",
                            value_of(&resp),
                            kv.map_or(0, |kv| kv.mod_revision)
                        ));
                    }
                    if seen < last_seen {
                        bad.push(format!(
                            "monotonic: A read at revision {seen} after {last_seen}"
                        ));
                    }
                    last_seen = last_seen.max(seen);
                }
                Err(e) => bad.push(format!("A's serializable get failed: {e:#}")),
            }
            if to_b.send((rev, value)).await.is_err() {
                break;
            }
        }
        bad
    });

    let task_b = tokio::spawn(async move {
        let mut bad = Vec::new();
        let mut last_seen = 0i64;
        while let Some((rev, value)) = from_a.recv().await {
            match get(&mut b_client, "ryw/a", true).await {
                Ok(resp) => {
                    let seen = resp.header.as_ref().map_or(0, |h| h.revision);
                    let modrev = resp.kvs.first().map_or(0, |kv| kv.mod_revision);
                    if seen < rev || modrev < rev {
                        bad.push(format!(
                            "across clients: A wrote {value:?} at revision {rev} and told B; \
                             B then read {:?} (mod revision {modrev}) at header revision {seen}",
                            value_of(&resp)
                        ));
                    }
                    if seen < last_seen {
                        bad.push(format!(
                            "monotonic: B read at revision {seen} after {last_seen}"
                        ));
                    }
                    last_seen = last_seen.max(seen);
                    if to_c.send(seen).await.is_err() {
                        break;
                    }
                }
                Err(e) => bad.push(format!("B's serializable get failed: {e:#}")),
            }
        }
        bad
    });

    let task_c = tokio::spawn(async move {
        let mut bad = Vec::new();
        let mut reads = 0usize;
        while let Some(rev) = from_b.recv().await {
            // A key nobody writes: only the header's revision tells how fresh the state was.
            match get(&mut c_client, "ryw/none", true).await {
                Ok(resp) => {
                    reads += 1;
                    let seen = resp.header.as_ref().map_or(0, |h| h.revision);
                    if seen < rev {
                        bad.push(format!(
                            "across clients: B read at revision {rev} and told C; C then read \
                             at revision {seen}"
                        ));
                    }
                }
                Err(e) => bad.push(format!("C's serializable get failed: {e:#}")),
            }
        }
        (bad, reads)
    });

    let mut bad = task_a.await?;
    bad.extend(task_b.await?);
    let (c_bad, c_reads) = task_c.await?;
    bad.extend(c_bad);
    stop.store(true, Ordering::Relaxed);
    let mut noise_writes = 0;
    for t in noisy {
        noise_writes += t.await?;
    }
    let served = Reads::now(keygate).await?.since(&before);
    eprintln!(
        "{ROUNDS} rounds, C read {c_reads} times, {noise_writes} other writes; mirror served \
         {} serializable reads, {} reads forwarded; {} violations",
        served.mirror_serializable,
        served.upstream,
        bad.len()
    );
    ensure!(
        bad.is_empty(),
        "{} violations, the first ones:\n{}",
        bad.len(),
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    ensure!(c_reads == ROUNDS, "C read {c_reads} times, not {ROUNDS}");
    ensure!(
        served.mirror_serializable >= 0.8 * (3 * ROUNDS) as f64,
        "the mirror served only {served:?} of {} serializable reads\n{}",
        3 * ROUNDS,
        mirror_common::forwarded_reasons(keygate).await?
    );
    Ok(())
}

/// Linearizable reads share barriers, and a barrier does not wait for the one in flight: with
/// etcd paused, the first barrier's round trip hangs, the reads after it gather into a second
/// one that starts beside it, and the rest wait for a free slot (two round trips at most). Once
/// etcd answers, every read is served by the mirror, after a handful of barriers in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_share_barriers_with_two_in_flight_at_most() -> Result<()> {
    const READS: usize = 40;
    let cluster = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    wait_serving(&keygate, Duration::from_secs(15)).await?;
    let mut c = keygate.clients().await?;
    put(&mut c, "shared", "v").await?;
    let barriers =
        || keygate_tests::watch_record::metric(keygate.addr(), "keygate_mirror_barriers_total");
    let (b0, before) = (barriers().await?, Reads::now(&keygate).await?);

    cluster.pause(0)?;
    let mut reads = Vec::new();
    for i in 0..READS {
        let mut c = c.clone();
        reads.push(tokio::spawn(async move {
            // Spread over time, so that later reads find round trips already in flight.
            tokio::time::sleep(Duration::from_millis(5 * i as u64)).await;
            get(&mut c, "shared", false).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let during = barriers().await? - b0;
    cluster.resume(0)?;
    for r in reads {
        let resp = r.await??;
        ensure!(value_of(&resp).as_deref() == Some("v"), "read {resp:?}");
    }
    let total = barriers().await? - b0;
    let served = Reads::now(&keygate).await?.since(&before);
    eprintln!("{READS} reads: {during} barriers started while etcd was paused, {total} in all");
    ensure!(
        during == 2.0,
        "{during} barriers started while etcd was paused: expected two round trips in flight"
    );
    ensure!(
        (3.0..=6.0).contains(&total),
        "{total} barriers for {READS} reads spread over 200 ms, two of them hanging"
    );
    ensure!(
        served.mirror_linearizable == READS as f64,
        "the mirror served {served:?}"
    );
    // The two round trips that hung while etcd was stopped are timed as such.
    let body = keygate_tests::watch_record::scrape(keygate.addr()).await?;
    let timed = |family| keygate_tests::watch_record::metric_sum(&body, family);
    let count = timed("keygate_mirror_barrier_seconds_count");
    let seconds = timed("keygate_mirror_barrier_seconds_sum");
    ensure!(
        count == total + b0 && seconds >= 0.7,
        "{count} barriers timed ({} counted) for {seconds} s in all; two hung for ~0.4 s each",
        total + b0
    );
    Ok(())
}
