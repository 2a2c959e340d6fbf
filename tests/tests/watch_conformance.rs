//! Watch conformance: keygate's watch hub is indistinguishable from etcd.
//!
//! Two identical single-member clusters receive the same randomized write sequence (fixed seed:
//! puts, deletes, range deletes, multi-key txns, lease revokes, large values), one used
//! directly and one behind keygate, so revisions line up. Watchers with every combination of
//! range kind (single key, prefix, from-key, range), start revision (0, inside keygate's event
//! window, before keygate started → an upstream watch of its own), filter (none, NOPUT,
//! NODELETE) and prev_kv, with client-chosen or auto-assigned ids, with and without
//! progress_notify, plus fragmenting watchers over large values, observe both sides. Their
//! streams are compared response by response (member_id, cluster_id and raft_term masked),
//! periodic progress notifications apart (their timing is the server's), and every stream is
//! checked against etcd's own history: ordered, unique, reliable (no gap), atomic (a
//! revision's events in one response), prev_kv correct, bookmarkable (a progress notification
//! at R means every event up to R came before it, none after).
//!
//! Then: watch ids (client-chosen, 0 = next free, duplicates, invalid ranges, cancel, unknown
//! cancel), WatchProgressRequest, and compaction (both clusters compacted alike: start
//! revisions before it get etcd's compaction cancel), and keygate's metrics: every hub watcher
//! served from the mirror's one upstream watch, one upstream watch per older start.
//!
//! etcd runs with `--max-request-bytes=65536` and a 200 ms progress interval (set through
//! etcd's ETCD_* environment variables, which the harness's etcd processes inherit); keygate is
//! configured alike (`[server] max_request_bytes = 65536`, `[watch]
//! progress_notify_interval_ms = 200`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::watch_create_request::FilterType;
use keygate_proto::etcdserverpb::{
    request_op, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchResponse,
};
use keygate_proto::mvccpb::event::EventType;
use keygate_proto::mvccpb::Event;
use keygate_tests::process::poll_until;
use keygate_tests::watch::prefix_end;
use keygate_tests::watch_record::{is_progress_notify, masked, metric, revision, Recorded};
use keygate_tests::{Clients, EtcdCluster, Keygate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEED: u64 = 0x6b65_7967;
const T: Duration = Duration::from_secs(15);
const MAX_REQUEST_BYTES: usize = 65536;
const BIG: usize = 48 * 1024;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

// ---------------------------------------------------------------- the write sequence

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: String,
        value: Bytes,
        lease: i64,
    },
    Delete {
        key: String,
    },
    DeleteRange {
        key: String,
        end: String,
    },
    Txn {
        puts: Vec<(String, Bytes)>,
        deletes: Vec<String>,
    },
    Grant {
        id: i64,
    },
    Revoke {
        id: i64,
    },
}

struct Gen {
    rng: StdRng,
    leases: Vec<i64>,
    next_lease: i64,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            leases: Vec::new(),
            next_lease: 7000,
        }
    }

    fn key(&mut self) -> String {
        if self.rng.random_bool(0.1) {
            ["j/1", "l/1", "k", "k0", "k/"][self.rng.random_range(0..5)].to_string()
        } else {
            format!("k/{:02}", self.rng.random_range(0..20))
        }
    }

    fn value(&mut self, i: usize) -> Bytes {
        let pad = self.rng.random_range(0..24);
        Bytes::from(format!("v{i}-{}", "x".repeat(pad)))
    }

    fn op(&mut self, i: usize) -> Op {
        match self.rng.random_range(0..100) {
            0..45 => {
                let lease = if !self.leases.is_empty() && self.rng.random_bool(0.3) {
                    self.leases[self.rng.random_range(0..self.leases.len())]
                } else {
                    0
                };
                Op::Put {
                    key: self.key(),
                    value: self.value(i),
                    lease,
                }
            }
            45..58 => Op::Delete { key: self.key() },
            58..66 => {
                let a = self.rng.random_range(0..19);
                let z = self.rng.random_range(a + 1..21);
                Op::DeleteRange {
                    key: format!("k/{a:02}"),
                    end: format!("k/{z:02}"),
                }
            }
            66..88 => {
                let mut keys = HashSet::new();
                let n = self.rng.random_range(2..5);
                while keys.len() < n {
                    keys.insert(self.key());
                }
                let mut keys: Vec<String> = keys.into_iter().collect();
                keys.sort();
                let deletes = if self.rng.random_bool(0.4) {
                    keys.split_off(keys.len() - 1)
                } else {
                    Vec::new()
                };
                let puts = keys.into_iter().map(|k| (k, self.value(i))).collect();
                Op::Txn { puts, deletes }
            }
            88..94 => {
                self.next_lease += 1;
                self.leases.push(self.next_lease);
                Op::Grant {
                    id: self.next_lease,
                }
            }
            _ if !self.leases.is_empty() => {
                let at = self.rng.random_range(0..self.leases.len());
                Op::Revoke {
                    id: self.leases.remove(at),
                }
            }
            _ => Op::Delete { key: self.key() },
        }
    }
}

fn put_op(key: &str, value: Bytes) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: b(key),
            value,
            ..Default::default()
        })),
    }
}

async fn apply(c: &mut Clients, op: &Op) -> Result<i64> {
    let header = match op.clone() {
        Op::Put { key, value, lease } => {
            c.kv.put(PutRequest {
                key: b(&key),
                value,
                lease,
                ..Default::default()
            })
            .await?
            .into_inner()
            .header
        }
        Op::Delete { key } => {
            c.kv.delete_range(DeleteRangeRequest {
                key: b(&key),
                ..Default::default()
            })
            .await?
            .into_inner()
            .header
        }
        Op::DeleteRange { key, end } => {
            c.kv.delete_range(DeleteRangeRequest {
                key: b(&key),
                range_end: b(&end),
                ..Default::default()
            })
            .await?
            .into_inner()
            .header
        }
        Op::Txn { puts, deletes } => {
            let mut success: Vec<RequestOp> =
                puts.into_iter().map(|(k, v)| put_op(&k, v)).collect();
            success.extend(deletes.into_iter().map(|k| RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key: b(&k),
                        ..Default::default()
                    },
                )),
            }));
            c.kv.txn(TxnRequest {
                success,
                ..Default::default()
            })
            .await?
            .into_inner()
            .header
        }
        Op::Grant { id } => {
            c.lease
                .lease_grant(LeaseGrantRequest { ttl: 3600, id })
                .await?
                .into_inner()
                .header
        }
        Op::Revoke { id } => {
            c.lease
                .lease_revoke(LeaseRevokeRequest { id })
                .await?
                .into_inner()
                .header
        }
    };
    Ok(header.map_or(0, |h| h.revision))
}

/// Applies `op` to the reference cluster and through keygate; both must land on the same
/// revision.
async fn apply_both(direct: &mut Clients, via: &mut Clients, op: &Op) -> Result<i64> {
    let d = apply(direct, op)
        .await
        .with_context(|| format!("direct: {op:?}"))?;
    let v = apply(via, op)
        .await
        .with_context(|| format!("keygate side: {op:?}"))?;
    ensure!(
        d == v,
        "{op:?} landed on revision {d} directly but {v} on the keygate side"
    );
    Ok(d)
}

// ---------------------------------------------------------------- watchers

#[derive(Clone, Copy, Debug, PartialEq)]
enum Start {
    Now,
    Window,
    BeforeKeygate,
}

#[derive(Clone, Debug)]
struct Spec {
    name: String,
    key: Bytes,
    end: Bytes,
    start: Start,
    start_rev: i64,
    filters: Vec<i32>,
    prev_kv: bool,
    progress: bool,
    fragment: bool,
    id: i64,
}

impl Spec {
    fn request(&self) -> WatchCreateRequest {
        WatchCreateRequest {
            key: self.key.clone(),
            range_end: self.end.clone(),
            start_revision: self.start_rev,
            filters: self.filters.clone(),
            prev_kv: self.prev_kv,
            progress_notify: self.progress,
            fragment: self.fragment,
            watch_id: self.id,
        }
    }

    fn matches(&self, key: &[u8]) -> bool {
        match self.end.as_ref() {
            [] => key == self.key.as_ref(),
            [0] => key >= self.key.as_ref(),
            end => key >= self.key.as_ref() && key < end,
        }
    }

    fn wants(&self, e: &Event) -> bool {
        let put = e.r#type == EventType::Put as i32;
        let filtered = (put && self.filters.contains(&(FilterType::Noput as i32)))
            || (!put && self.filters.contains(&(FilterType::Nodelete as i32)));
        !filtered && e.kv.as_ref().is_some_and(|kv| self.matches(&kv.key))
    }
}

fn ranges() -> Vec<(&'static str, Bytes, Bytes)> {
    vec![
        ("single", b("k/05"), Bytes::new()),
        ("prefix", b("k/"), prefix_end(b"k/")),
        ("fromkey", b("k/10"), Bytes::from_static(&[0])),
        ("range", b("k/03"), b("k/12")),
    ]
}

/// Every combination of range, start, filter and prev_kv.
fn matrix(window_rev: i64, before_rev: i64, chosen_ids: bool) -> Vec<Spec> {
    let mut out = Vec::new();
    for (rname, key, end) in ranges() {
        for (start, start_rev) in [
            (Start::Now, 0),
            (Start::Window, window_rev),
            (Start::BeforeKeygate, before_rev),
        ] {
            for (fname, filters) in [
                ("all", vec![]),
                ("noput", vec![FilterType::Noput as i32]),
                ("nodelete", vec![FilterType::Nodelete as i32]),
            ] {
                for prev_kv in [false, true] {
                    let id = if chosen_ids {
                        1000 + 3 * out.len() as i64
                    } else {
                        0
                    };
                    out.push(Spec {
                        name: format!("{rname}/{start:?}/{fname}/prev_kv={prev_kv}"),
                        key: key.clone(),
                        end: end.clone(),
                        start,
                        start_rev,
                        filters: filters.clone(),
                        prev_kv,
                        progress: chosen_ids,
                        fragment: false,
                        id,
                    });
                }
            }
        }
    }
    out
}

fn fragment_specs(big_start: i64) -> Vec<Spec> {
    let mut out = Vec::new();
    for (start, start_rev) in [(Start::Window, big_start), (Start::Now, 0)] {
        for fragment in [false, true] {
            for prev_kv in [false, true] {
                out.push(Spec {
                    name: format!("big/{start:?}/fragment={fragment}/prev_kv={prev_kv}"),
                    key: b("big/"),
                    end: prefix_end(b"big/"),
                    start,
                    start_rev,
                    filters: vec![],
                    prev_kv,
                    progress: false,
                    fragment,
                    id: 0,
                });
            }
        }
    }
    out
}

/// The same watchers opened on one stream directly on etcd and one through keygate.
struct Pair {
    name: &'static str,
    specs: Vec<Spec>,
    etcd: Recorded,
    gw: Recorded,
}

impl Pair {
    async fn open(
        name: &'static str,
        specs: Vec<Spec>,
        direct: &Clients,
        via: &Clients,
    ) -> Result<Pair> {
        let pair = Pair {
            name,
            etcd: Recorded::open(direct.channel.clone()),
            gw: Recorded::open(via.channel.clone()),
            specs,
        };
        for spec in &pair.specs {
            pair.etcd.create(spec.request())?;
            pair.gw.create(spec.request())?;
        }
        let n = pair.specs.len();
        let created = |r: &[WatchResponse]| r.iter().filter(|r| r.created).count() >= n;
        pair.etcd
            .wait_for(&format!("{name}: {n} created (etcd)"), T, created)
            .await?;
        pair.gw
            .wait_for(&format!("{name}: {n} created (keygate)"), T, created)
            .await?;
        Ok(pair)
    }
}

fn show(r: &WatchResponse) -> String {
    let evs: Vec<String> = r
        .events
        .iter()
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            format!(
                "{}{}@{}{}",
                if e.r#type == 0 { "PUT " } else { "DEL " },
                String::from_utf8_lossy(&kv.key),
                kv.mod_revision,
                if e.prev_kv.is_some() { "+prev" } else { "" }
            )
        })
        .collect();
    format!(
        "{{id {} rev {}{}{}{}{}{} [{}]}}",
        r.watch_id,
        revision(r),
        if r.created { " created" } else { "" },
        if r.canceled { " canceled" } else { "" },
        if r.compact_revision != 0 {
            format!(" compact {}", r.compact_revision)
        } else {
            String::new()
        },
        if r.cancel_reason.is_empty() {
            String::new()
        } else {
            format!(" reason {:?}", r.cancel_reason)
        },
        if r.fragment { " fragment" } else { "" },
        evs.join(", ")
    )
}

/// Responses by watch id (created responses go under the id they announce), periodic
/// progress notifications left out.
fn by_id(resps: &[WatchResponse]) -> BTreeMap<i64, Vec<WatchResponse>> {
    let mut out: BTreeMap<i64, Vec<WatchResponse>> = BTreeMap::new();
    for r in resps.iter().filter(|r| !is_progress_notify(r)) {
        out.entry(r.watch_id).or_default().push(masked(r.clone()));
    }
    out
}

/// Compares two recorded streams watcher by watcher, response by response; the differences.
fn compare_exact(what: &str, etcd: &[WatchResponse], gw: &[WatchResponse]) -> Vec<String> {
    let (e, g) = (by_id(etcd), by_id(gw));
    let mut out = Vec::new();
    for id in e.keys().chain(g.keys()).collect::<BTreeSet<_>>() {
        let (ev, gv) = (
            e.get(id).cloned().unwrap_or_default(),
            g.get(id).cloned().unwrap_or_default(),
        );
        if ev != gv {
            let at = ev.iter().zip(&gv).position(|(a, b)| a != b);
            let at = at.unwrap_or(ev.len().min(gv.len()));
            out.push(format!(
                "{what} watch id {id}: {} responses from etcd, {} from keygate; first \
                 difference at #{at}:\n    etcd:    {}\n    keygate: {}",
                ev.len(),
                gv.len(),
                ev.get(at).map_or("<none>".into(), show),
                gv.get(at).map_or("<none>".into(), show),
            ));
        }
    }
    out
}

/// The watch id each spec got: the created responses in order (no spec here is refused).
fn assigned_ids(specs: &[Spec], resps: &[WatchResponse]) -> Result<Vec<i64>> {
    let created: Vec<&WatchResponse> = resps.iter().filter(|r| r.created).collect();
    ensure!(created.len() >= specs.len(), "missing created responses");
    Ok(created[..specs.len()].iter().map(|r| r.watch_id).collect())
}

/// Checks one side's stream against etcd's history for every spec; the violations.
fn check_properties(
    side: &str,
    specs: &[Spec],
    ids: &[i64],
    resps: &[WatchResponse],
    history: &[Event],
    last_rev: i64,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (spec, &id) in specs.iter().zip(ids) {
        let mine: Vec<&WatchResponse> = resps.iter().filter(|r| r.watch_id == id).collect();
        let created = mine.first().copied().context("no created response")?;
        let start = if spec.start_rev > 0 {
            spec.start_rev
        } else {
            revision(created) + 1
        };
        let expected: Vec<Event> = history
            .iter()
            .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= start))
            .filter(|e| spec.wants(e))
            .map(|e| {
                let mut e = e.clone();
                if !spec.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect();
        let mut got = Vec::new();
        let mut problems = Vec::new();
        // Atomic: a logical response (fragments merged) holds all of a revision's events.
        let mut logical: Vec<Event> = Vec::new();
        let mut progress = 0;
        for r in &mine[1..] {
            if r.canceled {
                problems.push(format!("canceled: {}", show(r)));
                continue;
            }
            if is_progress_notify(r) {
                progress += 1;
                // Bookmarkable: nothing at or below R after it, everything up to R before it.
                let rv = revision(r);
                let owed = expected
                    .iter()
                    .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision <= rv))
                    .count();
                if got.len() != owed {
                    problems.push(format!(
                        "progress notification at revision {rv} after {} events, but {owed} \
                         events up to {rv} are owed",
                        got.len()
                    ));
                }
                continue;
            }
            logical.extend(r.events.iter().cloned());
            if r.fragment {
                continue;
            }
            let mut revs: Vec<i64> = logical
                .iter()
                .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
                .collect();
            revs.dedup();
            for rv in revs {
                let have = logical
                    .iter()
                    .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision == rv))
                    .count();
                let want = expected
                    .iter()
                    .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision == rv))
                    .count();
                if have != want {
                    problems.push(format!(
                        "not atomic: revision {rv} has {want} events but a response carried \
                         {have}"
                    ));
                }
            }
            got.append(&mut logical);
        }
        // Ordered and unique.
        let keys: Vec<(i64, Bytes)> = got
            .iter()
            .filter_map(|e| e.kv.as_ref().map(|kv| (kv.mod_revision, kv.key.clone())))
            .collect();
        if keys.windows(2).any(|w| w[0].0 > w[1].0) {
            problems.push("events out of revision order".into());
        }
        if keys.iter().collect::<HashSet<_>>().len() != keys.len() {
            problems.push("duplicate events".into());
        }
        if got
            .iter()
            .any(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision > last_rev))
        {
            problems.push("events past the last write".into());
        }
        // Reliable, with the right prev_kv: exactly etcd's history for this watcher.
        if got != expected {
            let at = got
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(expected.len()));
            let brief = |e: Option<&Event>| {
                e.map_or("<none>".to_string(), |e| {
                    show(&WatchResponse {
                        events: vec![e.clone()],
                        ..Default::default()
                    })
                })
            };
            problems.push(format!(
                "{} events, {} owed by etcd's history; first difference at #{at}: got {} \
                 want {}",
                got.len(),
                expected.len(),
                brief(got.get(at)),
                brief(expected.get(at))
            ));
        }
        if spec.progress && progress < 2 {
            problems.push(format!(
                "progress_notify watcher got {progress} progress notifications over a quiet \
                 second at a 200 ms interval"
            ));
        }
        if !spec.progress && progress > 0 {
            problems.push(format!(
                "{progress} progress notifications without progress_notify"
            ));
        }
        for p in problems {
            out.push(format!("{side} {} (id {id}): {p}", spec.name));
        }
    }
    Ok(out)
}

async fn write_config(dir: &std::path::Path) -> Result<String> {
    let path = dir.join("keygate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nmax_request_bytes = {MAX_REQUEST_BYTES}\n\n\
             [watch]\nprogress_notify_interval_ms = 200\n"
        ),
    )?;
    Ok(path.to_string_lossy().into_owned())
}

async fn wait_serving(keygate: &Keygate) -> Result<()> {
    poll_until(T, "keygate_mirror_serving 1", || async {
        Ok(metric(keygate.addr(), "keygate_mirror_serving").await? == 1.0)
    })
    .await
}

async fn compact(c: &mut Clients, revision: i64) -> Result<()> {
    c.kv.compact(CompactionRequest {
        revision,
        physical: true,
    })
    .await?;
    Ok(())
}

fn bail_on(failures: Vec<String>, keygate: &Keygate) -> Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    let n = failures.len();
    let shown: Vec<String> = failures.into_iter().take(40).collect();
    bail!(
        "{n} differences between etcd and keygate:\n{}\nkeygate log tail:\n{}",
        shown.join("\n"),
        keygate.log_tail(15)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_match_etcd_under_a_random_history() -> Result<()> {
    // Inherited by the etcd processes the harness starts (etcd reads ETCD_<FLAG>).
    std::env::set_var("ETCD_MAX_REQUEST_BYTES", MAX_REQUEST_BYTES.to_string());
    std::env::set_var("ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", "200ms");
    let (reference, backend) = tokio::try_join!(EtcdCluster::start(1), EtcdCluster::start(1))?;
    let mut direct = reference.clients(0).await?;
    let mut backend_direct = backend.clients(0).await?;

    // etcd's own history: every event from revision 1, prev_kv included.
    let history = Recorded::open(direct.channel.clone());
    history.create(WatchCreateRequest {
        key: Bytes::from_static(&[0]),
        range_end: Bytes::from_static(&[0]),
        start_revision: 1,
        prev_kv: true,
        ..Default::default()
    })?;

    let mut gen = Gen::new(SEED);
    let mut rev = 1;
    let mut before_rev = 0;
    for i in 0..40 {
        rev = apply_both(&mut direct, &mut backend_direct, &gen.op(i)).await?;
        if i == 12 {
            before_rev = rev;
        }
    }

    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path()).await?;
    let keygate = Keygate::start(&backend.client_urls(), &["--config", &config]).await?;
    wait_serving(&keygate).await?;
    let mut via = keygate.clients().await?;

    // Inside the window: written after keygate started.
    let mut window_rev = 0;
    for i in 40..80 {
        rev = apply_both(&mut direct, &mut via, &gen.op(i)).await?;
        if i == 45 {
            window_rev = rev;
        }
    }
    // Large values: replayed together they exceed etcd's fragment size (max-request-bytes +
    // 512 KiB of gRPC allowance).
    let mut big_start = 0;
    for i in 0..14 {
        let op = Op::Put {
            key: format!("big/{i:02}"),
            value: Bytes::from(vec![b'a' + i as u8; BIG]),
            lease: 0,
        };
        rev = apply_both(&mut direct, &mut via, &op).await?;
        if i == 0 {
            big_start = rev;
        }
    }
    ensure!(before_rev > 1 && window_rev > before_rev && big_start > window_rev);
    eprintln!("before keygate {before_rev}, window {window_rev}, big {big_start}, now {rev}");

    let auto = Pair::open(
        "auto ids",
        matrix(window_rev, before_rev, false),
        &direct,
        &via,
    )
    .await?;
    let chosen = Pair::open(
        "chosen ids",
        matrix(window_rev, before_rev, true),
        &direct,
        &via,
    )
    .await?;
    let frag = Pair::open("fragments", fragment_specs(big_start), &direct, &via).await?;
    let pairs = [&auto, &chosen, &frag];
    let specs = |p: &Pair| p.specs.clone();
    let dedicated = pairs
        .iter()
        .flat_map(|p| specs(p))
        .filter(|s| s.start == Start::BeforeKeygate)
        .count();
    let hub = pairs.iter().map(|p| p.specs.len()).sum::<usize>() - dedicated;

    // The hub serves every other watcher from the mirror's single upstream watch.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = keygate_tests::watch_record::scrape(keygate.addr()).await?;
    let etcd_body = keygate_tests::watch_record::scrape(&backend.addr(0)).await?;
    let m = |f: &str| keygate_tests::watch_record::metric_sum(&body, f);
    let e = |f: &str| keygate_tests::watch_record::metric_sum(&etcd_body, f);
    let mut failures = Vec::new();
    for (what, got, want) in [
        (
            "keygate_watch_upstream_streams",
            m("keygate_watch_upstream_streams"),
            dedicated,
        ),
        ("keygate_watch_watchers", m("keygate_watch_watchers"), hub),
        ("keygate_watch_streams", m("keygate_watch_streams"), 3),
        (
            "etcd's watch streams (the mirror's + dedicated)",
            e("etcd_debugging_mvcc_watch_stream_total"),
            1 + dedicated,
        ),
        (
            "etcd's watchers (the mirror's + dedicated)",
            e("etcd_debugging_mvcc_watcher_total"),
            1 + dedicated,
        ),
    ] {
        if got != want as f64 {
            failures.push(format!("metric {what}: {got}, expected {want}"));
        }
    }

    // The random history, observed live, with a multi-key txn of large values (prev_kv makes
    // its response bigger than max_request_bytes, but etcd fragments only past
    // max_request_bytes + 512 KiB).
    for i in 80..240 {
        let op = if i == 160 {
            Op::Txn {
                puts: (0..3)
                    .map(|j| (format!("big/{j:02}"), Bytes::from(vec![b'z'; 20 * 1024])))
                    .collect(),
                deletes: vec![],
            }
        } else {
            gen.op(i)
        };
        rev = apply_both(&mut direct, &mut via, &op).await?;
    }
    let last_rev = rev;
    // Quiet: periodic progress notifications flow.
    tokio::time::sleep(Duration::from_millis(1300)).await;

    // WatchProgressRequest: one reply for the stream, watch_id -1, at the current revision.
    for p in pairs {
        let (ne, ng) = (p.etcd.len(), p.gw.len());
        p.etcd.progress()?;
        p.gw.progress()?;
        for (side, rec, from) in [("etcd", &p.etcd, ne), ("keygate", &p.gw, ng)] {
            let got = rec
                .wait_for(&format!("{} progress reply", p.name), T, |r| {
                    r[from..].iter().any(|r| r.watch_id == -1)
                })
                .await?;
            let replies: Vec<&WatchResponse> =
                got[from..].iter().filter(|r| r.watch_id == -1).collect();
            if replies.len() != 1
                || revision(replies[0]) != last_rev
                || !replies[0].events.is_empty()
            {
                failures.push(format!(
                    "{side} {}: progress request answered {:?}, expected one reply at {last_rev}",
                    p.name,
                    replies.iter().map(|r| show(r)).collect::<Vec<_>>()
                ));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let history_events: Vec<Event> = history
        .responses()
        .into_iter()
        .flat_map(|r| r.events)
        .collect();
    ensure!(
        history_events
            .last()
            .and_then(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision)
            == Some(last_rev),
        "etcd's history watch did not reach revision {last_rev}"
    );

    for p in pairs {
        let (er, gr) = (p.etcd.responses(), p.gw.responses());
        let ids_e = assigned_ids(&p.specs, &er)?;
        let ids_g = assigned_ids(&p.specs, &gr)?;
        // etcd answers creates in request order, and clients (clientv3) pair each created
        // response with the oldest pending create.
        if ids_e != ids_g {
            failures.push(format!(
                "{}: created responses in a different order (ids in arrival order): etcd \
                 {ids_e:?}, keygate {ids_g:?}",
                p.name
            ));
        }
        // Response by response. The created responses' and events' batching match exactly
        // here: watchers were created while nothing was written, and every later revision
        // reached synced watchers one by one, as etcd sends them.
        failures.extend(compare_exact(p.name, &er, &gr));
        // The test's own model must hold for etcd itself.
        // Both sides are checked with the ids etcd assigned (keygate picks the same ids, even
        // where its created responses come in another order).
        let own = check_properties("etcd", &p.specs, &ids_e, &er, &history_events, last_rev)?;
        ensure!(
            own.is_empty(),
            "the test's model disagrees with etcd: {own:#?}"
        );
        failures.extend(check_properties(
            "keygate",
            &p.specs,
            &ids_e,
            &gr,
            &history_events,
            last_rev,
        )?);
    }
    let frag_etcd = frag.etcd.responses();
    ensure!(
        frag_etcd.iter().any(|r| r.fragment),
        "etcd sent no fragment: the large-value replay is too small to exercise fragments"
    );

    failures.extend(watch_ids(&direct, &via).await?);
    failures.extend(compaction(&mut direct, &mut via, &keygate, before_rev, window_rev).await?);
    bail_on(failures, &keygate)
}

/// Client-chosen ids, 0 = next free, duplicates, invalid ranges, cancel (known and unknown),
/// and a progress request, on one stream each side: compared exactly, and against etcd's
/// known answers.
async fn watch_ids(direct: &Clients, via: &Clients) -> Result<Vec<String>> {
    let single = |key: &str, id: i64| WatchCreateRequest {
        key: b(key),
        watch_id: id,
        ..Default::default()
    };
    let ranged = |key: &str, end: &str, id: i64| WatchCreateRequest {
        key: b(key),
        range_end: b(end),
        watch_id: id,
        ..Default::default()
    };
    enum Req {
        Create(WatchCreateRequest),
        Cancel(i64),
        Progress,
    }
    let script = vec![
        Req::Create(single("ids/a", 0)),
        Req::Create(ranged("ids/b", "ids/a", 0)),
        Req::Create(single("ids/c", 0)),
        Req::Create(single("ids/d", 7)),
        Req::Create(single("ids/e", 7)),
        Req::Create(single("ids/f", 2)),
        Req::Create(single("ids/g", 0)),
        Req::Create(ranged("ids/h", "ids/h", 5)),
        Req::Create(ranged("ids/h", "ids/h", 0)),
        Req::Cancel(7),
        Req::Cancel(42),
        Req::Create(single("ids/i", 7)),
        Req::Progress,
        Req::Create(ranged("ids/", "\0", 0)),
        Req::Create(single("ids/j", 1)),
        Req::Cancel(0),
        Req::Create(single("ids/k", 0)),
    ];
    let expected_responses = script.len() - 1; // the unknown cancel gets no answer
    let (etcd, gw) = (
        Recorded::open(direct.channel.clone()),
        Recorded::open(via.channel.clone()),
    );
    for req in &script {
        for rec in [&etcd, &gw] {
            match req {
                Req::Create(c) => rec.create(c.clone())?,
                Req::Cancel(id) => rec.cancel(*id)?,
                Req::Progress => rec.progress()?,
            }
        }
    }
    etcd.next_n(0, expected_responses, T).await?;
    // keygate's answers are compared below, whatever their number.
    let _ = gw.next_n(0, expected_responses, T).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (e, g) = (
        etcd.responses().into_iter().map(masked).collect::<Vec<_>>(),
        gw.responses().into_iter().map(masked).collect::<Vec<_>>(),
    );
    // The script's answers on etcd 3.5 (so this test checks itself).
    let ids: Vec<i64> = e.iter().map(|r| r.watch_id).collect();
    ensure!(
        ids == [0, -1, 1, 7, -1, 2, 3, -1, -1, 7, 7, -1, 4, -1, 0, 5],
        "etcd answered the id script unexpectedly: {:#?}",
        e.iter().map(show).collect::<Vec<_>>()
    );
    let mut out = Vec::new();
    if e != g {
        for (i, (a, b)) in e.iter().zip(&g).enumerate() {
            if a != b {
                out.push(format!(
                    "id script response #{i}:\n    etcd:    {}\n    keygate: {}",
                    show(a),
                    show(b)
                ));
            }
        }
        if e.len() != g.len() {
            out.push(format!(
                "id script: {} responses from etcd, {} from keygate",
                e.len(),
                g.len()
            ));
        }
    }
    Ok(out)
}

/// Both clusters compacted alike inside keygate's window: start revisions before the
/// compaction (before keygate started, or inside the window) get etcd's compaction cancel;
/// the compaction revision itself is still served.
async fn compaction(
    direct: &mut Clients,
    via: &mut Clients,
    keygate: &Keygate,
    before_rev: i64,
    window_rev: i64,
) -> Result<Vec<String>> {
    let at = window_rev + 5;
    compact(direct, at).await?;
    compact(via, at).await?;
    let upstream_before = metric(keygate.addr(), "keygate_watch_upstream_streams").await?;
    let spec = |start_rev: i64, prev_kv: bool| Spec {
        name: format!("compaction/start {start_rev}"),
        key: b("k/"),
        end: prefix_end(b"k/"),
        start: Start::Window,
        start_rev,
        filters: vec![],
        prev_kv,
        progress: false,
        fragment: false,
        id: 0,
    };
    let specs = vec![
        spec(1, false),
        spec(before_rev, false),
        spec(at - 1, true),
        spec(at, true),
        spec(at + 1, false),
    ];
    let etcd = Recorded::open(direct.channel.clone());
    let gw = Recorded::open(via.channel.clone());
    for s in &specs {
        etcd.create(s.request())?;
        gw.create(s.request())?;
    }
    let done = |r: &[WatchResponse]| {
        r.iter().filter(|r| r.created).count() >= 5 && r.iter().filter(|r| r.canceled).count() >= 3
    };
    etcd.wait_for("compaction answers (etcd)", T, done).await?;
    if let Err(err) = gw.wait_for("compaction answers (keygate)", T, done).await {
        return Ok(vec![format!("{err:#}")]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (e, g) = (etcd.responses(), gw.responses());
    let canceled: Vec<i64> = e
        .iter()
        .filter(|r| r.canceled)
        .map(|r| r.compact_revision)
        .collect();
    ensure!(
        canceled == [at, at, at],
        "etcd's compaction answers unexpected: {:?}",
        e.iter().map(show).collect::<Vec<_>>()
    );
    let mut out = compare_exact("compaction", &e, &g);
    let upstream_after = metric(keygate.addr(), "keygate_watch_upstream_streams").await?;
    if upstream_after != upstream_before {
        out.push(format!(
            "keygate_watch_upstream_streams {upstream_before} before the compacted watches, \
             {upstream_after} after they were canceled"
        ));
    }
    Ok(out)
}
