//! Failover under load: a 3-member cluster behind keygate, several clients writing increasing
//! values and reading linearizably through keygate, and the member keygate uses (the leader)
//! SIGKILLed in the middle. Reads never fail, writes resume within seconds, every acknowledged
//! write survives, no value goes backwards; the restarted member is used again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{MoveLeaderRequest, PutRequest, RangeRequest, StatusRequest};
use keygate_tests::process::poll_until;
use keygate_tests::{http, Clients, EtcdCluster, Keygate};

const WORKERS: usize = 4;
/// Bound on any one read, so a read stuck on the dead member shows up as a failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on any one write. A write that reaches a follower before it notices the leader died is
/// forwarded into the void and waits out etcd's request timeout (6 s in the harness), as it would
/// for a client of etcd directly; the workers give up sooner, as clients with deadlines do.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Until a new leader is elected (election timeout 500 ms in the harness), a write can be
/// proposed to a member that has no leader and wait out etcd's request timeout.
const ELECTION_WINDOW: Duration = Duration::from_secs(1);
/// Every worker writes successfully again within this long after the kill: one such write's
/// wait, bounded by the write timeout, then its reads and the next write on a loaded machine.
const WRITE_RECOVERY: Duration = Duration::from_secs(6);
/// How long the load goes on after the kill.
const AFTER_KILL: Duration = Duration::from_secs(7);

fn key(w: usize) -> Bytes {
    Bytes::from(format!("failover/w{w}"))
}

#[derive(Default, Debug)]
struct Report {
    acked: i64,
    writes_ok: usize,
    /// Writes that failed: when they were sent, and why.
    write_failures: Vec<(Instant, Instant, String)>,
    reads_ok: usize,
    read_failures: Vec<String>,
    backwards: Vec<String>,
    first_ok_write_after_kill: Option<Instant>,
}

struct Shared {
    stop: AtomicBool,
    ops: AtomicUsize,
    kill_at: std::sync::Mutex<Option<Instant>>,
}

impl Shared {
    fn kill_at(&self) -> Option<Instant> {
        self.kill_at.lock().map(|g| *g).unwrap_or(None)
    }
}

async fn get(c: &mut Clients, k: Bytes) -> Result<i64> {
    let resp = tokio::time::timeout(
        CALL_TIMEOUT,
        c.kv.range(RangeRequest {
            key: k,
            ..Default::default()
        }),
    )
    .await
    .context("get timed out")??
    .into_inner();
    match resp.kvs.first() {
        None => Ok(0),
        Some(kv) => Ok(std::str::from_utf8(&kv.value)?.parse()?),
    }
}

async fn worker(w: usize, mut c: Clients, shared: Arc<Shared>) -> Report {
    let mut r = Report::default();
    let mut seen = [0i64; WORKERS];
    let mut n = 0i64;
    while !shared.stop.load(Ordering::Relaxed) {
        n += 1;
        let req = PutRequest {
            key: key(w),
            value: Bytes::from(n.to_string()),
            ..Default::default()
        };
        let started = Instant::now();
        match tokio::time::timeout(WRITE_TIMEOUT, c.kv.put(req)).await {
            Ok(Ok(_)) => {
                r.acked = n;
                r.writes_ok += 1;
                if r.first_ok_write_after_kill.is_none() && shared.kill_at().is_some() {
                    r.first_ok_write_after_kill = Some(Instant::now());
                }
            }
            Ok(Err(s)) => r.write_failures.push((
                started,
                Instant::now(),
                format!(
                    "{:?}: {} (after {:?})",
                    s.code(),
                    s.message(),
                    started.elapsed()
                ),
            )),
            Err(_) => r.write_failures.push((
                started,
                Instant::now(),
                format!("timed out after {WRITE_TIMEOUT:?}"),
            )),
        }
        // Our own key (read-your-writes), then a neighbour's.
        for other in [w, (w + 1) % WORKERS] {
            match get(&mut c, key(other)).await {
                Ok(v) => {
                    r.reads_ok += 1;
                    if v < seen[other] {
                        r.backwards
                            .push(format!("w{w} read w{other}={v} after {}", seen[other]));
                    }
                    if other == w && v < r.acked {
                        r.backwards.push(format!(
                            "w{w} read its own key as {v} after ack of {}",
                            r.acked
                        ));
                    }
                    seen[other] = seen[other].max(v);
                }
                Err(e) => r.read_failures.push(format!("w{w} get w{other}: {e:#}")),
            }
        }
        shared.ops.fetch_add(1, Ordering::Relaxed);
    }
    r
}

/// The index of the member that leads, asked of each member directly.
async fn leader_index(cluster: &EtcdCluster, skip: Option<usize>) -> Result<usize> {
    let mut ids = Vec::new();
    let mut leader = 0;
    for i in 0..cluster.len() {
        if Some(i) == skip {
            ids.push(0);
            continue;
        }
        let mut c = cluster.clients(i).await?;
        let s = c.maintenance.status(StatusRequest {}).await?.into_inner();
        ids.push(s.header.map(|h| h.member_id).unwrap_or(0));
        leader = s.leader.max(leader);
    }
    ids.iter()
        .position(|&id| id != 0 && id == leader)
        .with_context(|| format!("no leader among {ids:?} (leader {leader})"))
}

/// The value of `family` for the member whose URL ends in `:port`, from keygate's /metrics.
async fn member_metric(keygate: &Keygate, family: &str, port: &str, extra: &str) -> Result<f64> {
    let resp = http::get(keygate.addr(), "/metrics", Duration::from_secs(5)).await?;
    let needle = format!(":{port}\"");
    let line = resp
        .body
        .lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(&needle) && l.contains(extra))
        .with_context(|| format!("no {family} for port {port} in /metrics"))?;
    let value = line.rsplit(' ').next().unwrap_or_default();
    Ok(value.parse()?)
}

fn port_of(cluster: &EtcdCluster, i: usize) -> String {
    cluster
        .addr(i)
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn load_carries_on_when_the_leader_dies() -> Result<()> {
    let mut cluster = EtcdCluster::start(3).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    let leader = leader_index(&cluster, None).await?;
    let leader_port = port_of(&cluster, leader);
    // keygate prefers the leader: wait until it knows which member that is.
    poll_until(
        Duration::from_secs(10),
        "keygate to know the leader",
        || {
            let keygate = &keygate;
            let port = leader_port.clone();
            async move {
                Ok(
                    member_metric(keygate, "keygate_upstream_member_leader", &port, "").await?
                        == 1.0,
                )
            }
        },
    )
    .await?;

    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        ops: AtomicUsize::new(0),
        kill_at: std::sync::Mutex::new(None),
    });
    let mut handles = Vec::new();
    for w in 0..WORKERS {
        let c = keygate.clients().await?;
        handles.push(tokio::spawn(worker(w, c, shared.clone())));
    }
    poll_until(Duration::from_secs(20), "load before the kill", || {
        let ops = shared.ops.load(Ordering::Relaxed);
        async move { Ok(ops >= 200) }
    })
    .await?;
    let before_kill = shared.ops.load(Ordering::Relaxed);
    let kill_at = Instant::now();
    if let Ok(mut g) = shared.kill_at.lock() {
        *g = Some(kill_at);
    }
    cluster.kill(leader)?;
    tokio::time::sleep(AFTER_KILL).await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut reports = Vec::new();
    for h in handles {
        reports.push(h.await?);
    }
    let after_kill = shared.ops.load(Ordering::Relaxed) - before_kill;

    let log = || keygate.log_tail(40);
    let read_failures: Vec<&String> = reports.iter().flat_map(|r| &r.read_failures).collect();
    let backwards: Vec<&String> = reports.iter().flat_map(|r| &r.backwards).collect();
    // (sent after the kill, ended after the kill, why); a write sent before the kill counts as
    // sent at the kill.
    let write_failures: Vec<(Duration, Duration, &String)> = reports
        .iter()
        .flat_map(|r| &r.write_failures)
        .map(|(sent, ended, why)| {
            (
                sent.saturating_duration_since(kill_at),
                ended.saturating_duration_since(kill_at),
                why,
            )
        })
        .collect();
    eprintln!(
        "failover: {before_kill} rounds before the kill, {after_kill} after; writes ok {}, \
         reads ok {}, write failures {write_failures:?}, read failures {}",
        reports.iter().map(|r| r.writes_ok).sum::<usize>(),
        reports.iter().map(|r| r.reads_ok).sum::<usize>(),
        read_failures.len()
    );
    ensure!(
        read_failures.is_empty(),
        "{} reads failed through keygate after the leader died: {read_failures:#?}\n{}",
        read_failures.len(),
        log()
    );
    ensure!(
        backwards.is_empty(),
        "values went backwards: {backwards:#?}"
    );
    let early = reports
        .iter()
        .flat_map(|r| &r.write_failures)
        .any(|(_, ended, _)| *ended < kill_at);
    ensure!(!early, "writes failed before the kill: {write_failures:?}");
    // A write proposed while the cluster has no leader can wait out etcd's own request timeout
    // (as it would for a client of etcd directly); what must hold is that writes sent once a
    // new leader can exist go through.
    let late: Vec<_> = write_failures
        .iter()
        .filter(|(sent, _, _)| *sent > ELECTION_WINDOW)
        .collect();
    ensure!(
        late.is_empty(),
        "writes sent more than {ELECTION_WINDOW:?} after the kill failed: {late:?}\n{}",
        log()
    );
    // Checked last, so the checks below still run and report when only the code is wrong.
    let wrong_code: Vec<_> = write_failures
        .iter()
        .filter(|(sent, _, why)| {
            let waited_out_election = *sent <= ELECTION_WINDOW && why.starts_with("timed out");
            !(why.starts_with("Unavailable") || waited_out_election)
        })
        .map(|(_, _, why)| why.to_string())
        .collect();
    ensure!(
        write_failures.len() <= 2 * WORKERS,
        "{} writes failed around the kill (at most {} expected): {write_failures:?}",
        write_failures.len(),
        2 * WORKERS
    );
    for r in &reports {
        let Some(t) = r.first_ok_write_after_kill else {
            bail!(
                "a worker never wrote successfully after the kill: {r:?}\n{}",
                log()
            );
        };
        ensure!(
            t.duration_since(kill_at) < WRITE_RECOVERY,
            "writes resumed only {:?} after the kill",
            t.duration_since(kill_at)
        );
    }
    ensure!(after_kill >= 50, "only {after_kill} rounds after the kill");

    // Every acknowledged write is there, through keygate and on a surviving member.
    let survivor = (leader + 1) % cluster.len();
    let mut gw = keygate.clients().await?;
    let mut direct = cluster.clients(survivor).await?;
    for (w, r) in reports.iter().enumerate() {
        let via_gw = get(&mut gw, key(w)).await?;
        let via_member = get(&mut direct, key(w)).await?;
        ensure!(
            via_gw >= r.acked && via_member == via_gw,
            "w{w}: acknowledged {} but keygate reads {via_gw}, member {survivor} reads {via_member}",
            r.acked
        );
    }

    // The member comes back: keygate sees it healthy, and uses it once it leads again.
    cluster.restart(leader).await?;
    poll_until(
        Duration::from_secs(15),
        "keygate to see the member healthy",
        || {
            let keygate = &keygate;
            let port = leader_port.clone();
            async move {
                Ok(
                    member_metric(keygate, "keygate_upstream_member_healthy", &port, "").await?
                        == 1.0,
                )
            }
        },
    )
    .await
    .with_context(log)?;
    let restarted_id = cluster
        .clients(leader)
        .await?
        .maintenance
        .status(StatusRequest {})
        .await?
        .into_inner()
        .header
        .map(|h| h.member_id)
        .unwrap_or(0);
    let current = leader_index(&cluster, None).await?;
    if current != leader {
        cluster
            .clients(current)
            .await?
            .maintenance
            .move_leader(MoveLeaderRequest {
                target_id: restarted_id,
            })
            .await?;
    }
    poll_until(
        Duration::from_secs(15),
        "keygate to see the member lead",
        || {
            let keygate = &keygate;
            let port = leader_port.clone();
            async move {
                Ok(
                    member_metric(keygate, "keygate_upstream_member_leader", &port, "").await?
                        == 1.0,
                )
            }
        },
    )
    .await
    .with_context(log)?;
    let ok_before = member_metric(
        &keygate,
        "keygate_upstream_requests_total",
        &leader_port,
        "ok",
    )
    .await
    .unwrap_or(0.0);
    for i in 0..20 {
        gw.kv
            .put(PutRequest {
                key: Bytes::from_static(b"failover/back"),
                value: Bytes::from(i.to_string()),
                ..Default::default()
            })
            .await?;
    }
    let ok_after = member_metric(
        &keygate,
        "keygate_upstream_requests_total",
        &leader_port,
        "ok",
    )
    .await?;
    ensure!(
        ok_after >= ok_before + 20.0,
        "keygate sent {} of 20 puts to the restarted leader\n{}",
        ok_after - ok_before,
        log()
    );
    ensure!(
        wrong_code.is_empty(),
        "writes in flight at the kill failed with something else than UNAVAILABLE \
         (as grpc-go reports a broken connection to etcd): {wrong_code:?}"
    );
    Ok(())
}
