//! The read mirror against etcd's own answers: a randomized sequence (fixed seed) of writes
//! through keygate — puts, range deletes, txns, lease-attached puts, lease revokes — each
//! followed by reads with every Range option, sent to keygate (mirror on) and then to the same
//! etcd member directly, with no write in between, so both answer at the same revision. Then a
//! systematic sweep of option combinations. Responses must be identical (keys, values,
//! revisions, versions, leases, `more`, `count`, header revision and cluster); only the
//! member id and raft term are masked. keygate's metrics must show that the mirror answered
//! most of the reads, or the comparison would prove nothing.

use crate::mirror_common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keygate_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keygate_proto::etcdserverpb::{
    request_op, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
};
use keygate_tests::watch::WatchStream;
use keygate_tests::{Clients, EtcdCluster, Keygate};
use mirror_common::{b, differs, wait_serving, Reads};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEED: u64 = 0x6b65_7967_6174_6506;
const WRITES: usize = 250;
const READS_PER_WRITE: usize = 3;

const KEYS: &[&str] = &[
    "a",
    "b",
    "c",
    "dir/1",
    "dir/2",
    "dir/3",
    "dir/sub/x",
    "e",
    "f",
    "zz",
];
/// Few distinct values, so sorts by value meet ties (which keygate must forward) and don't.
const VALUES: &[&str] = &["", "v", "w", "xx", "yyy", "z"];

/// (key, range_end): single keys, a missing key, prefixes, from-key ranges, the whole
/// keyspace, a plain interval and an empty one (end before key).
const RANGES: &[(&str, &str)] = &[
    ("a", ""),
    ("dir/2", ""),
    ("nope", ""),
    ("dir/", "dir0"),
    ("lim/", "lim0"),
    ("c", "\0"),
    ("\0", "\0"),
    ("b", "dir/3"),
    ("f", "a"),
];

const ORDERS: &[SortOrder] = &[SortOrder::None, SortOrder::Ascend, SortOrder::Descend];
const TARGETS: &[SortTarget] = &[
    SortTarget::Key,
    SortTarget::Version,
    SortTarget::Create,
    SortTarget::Mod,
    SortTarget::Value,
];

fn put(k: &str, v: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: b(k),
        value: b(v),
        lease,
        ..Default::default()
    }
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

struct World {
    keygate: Clients,
    etcd: Clients,
    leases: Vec<i64>,
    revision: i64,
    reads: usize,
    mismatches: Vec<String>,
}

impl World {
    fn saw(&mut self, header: Option<&keygate_proto::etcdserverpb::ResponseHeader>) {
        if let Some(h) = header {
            self.revision = self.revision.max(h.revision);
        }
    }

    async fn put(&mut self, req: PutRequest) -> Result<()> {
        let resp = self.keygate.kv.put(req).await?.into_inner();
        self.saw(resp.header.as_ref());
        Ok(())
    }

    /// One random write through keygate.
    async fn write(&mut self, rng: &mut StdRng) -> Result<()> {
        match rng.random_range(0..100) {
            0..=44 => {
                let lease = if !self.leases.is_empty() && rng.random_bool(0.25) {
                    pick(rng, &self.leases)
                } else {
                    0
                };
                let req = put(pick(rng, KEYS), pick(rng, VALUES), lease);
                self.put(req).await?;
            }
            45..=59 => {
                let (key, end) = match rng.random_range(0..3) {
                    0 => (pick(rng, KEYS).to_string(), String::new()),
                    1 => ("dir/".to_string(), "dir0".to_string()),
                    _ => {
                        let (x, y) = (pick(rng, KEYS), pick(rng, KEYS));
                        (x.min(y).to_string(), x.max(y).to_string())
                    }
                };
                let resp = self
                    .keygate
                    .kv
                    .delete_range(DeleteRangeRequest {
                        key: b(&key),
                        range_end: b(&end),
                        prev_kv: rng.random_bool(0.5),
                    })
                    .await?
                    .into_inner();
                self.saw(resp.header.as_ref());
            }
            60..=79 => {
                let op = |r| RequestOp { request: Some(r) };
                let puts = |rng: &mut StdRng| {
                    vec![
                        op(request_op::Request::RequestPut(put(
                            pick(rng, KEYS),
                            pick(rng, VALUES),
                            0,
                        ))),
                        op(request_op::Request::RequestPut(put(
                            pick(rng, KEYS),
                            pick(rng, VALUES),
                            0,
                        ))),
                    ]
                };
                let success = puts(rng);
                let failure = vec![op(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key: b(pick(rng, KEYS)),
                        ..Default::default()
                    },
                ))];
                let req = TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Value as i32,
                        key: b(pick(rng, KEYS)),
                        range_end: Bytes::new(),
                        target_union: Some(TargetUnion::Value(b(pick(rng, VALUES)))),
                    }],
                    success,
                    failure,
                };
                // Two puts of one key in one txn is an etcd error; that is fine too.
                if let Ok(resp) = self.keygate.kv.txn(req).await {
                    self.saw(resp.into_inner().header.as_ref());
                }
            }
            80..=89 => {
                let resp = self
                    .keygate
                    .lease
                    .lease_grant(LeaseGrantRequest { ttl: 600, id: 0 })
                    .await?
                    .into_inner();
                self.leases.push(resp.id);
                self.saw(resp.header.as_ref());
            }
            _ => {
                if self.leases.is_empty() {
                    return Ok(());
                }
                let i = rng.random_range(0..self.leases.len());
                let id = self.leases.swap_remove(i);
                let resp = self
                    .keygate
                    .lease
                    .lease_revoke(LeaseRevokeRequest { id })
                    .await?
                    .into_inner();
                self.saw(resp.header.as_ref());
            }
        }
        Ok(())
    }

    fn random_read(&self, rng: &mut StdRng) -> RangeRequest {
        let (key, end) = pick(rng, RANGES);
        let rev = |rng: &mut StdRng| {
            if rng.random_bool(0.15) {
                rng.random_range(1..=self.revision.max(1))
            } else {
                0
            }
        };
        RangeRequest {
            key: b(key),
            range_end: b(end),
            limit: if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(1..5)
            },
            keys_only: rng.random_bool(0.2),
            count_only: rng.random_bool(0.15),
            sort_order: if rng.random_bool(0.5) {
                SortOrder::None as i32
            } else {
                pick(rng, ORDERS) as i32
            },
            sort_target: if rng.random_bool(0.5) {
                SortTarget::Key as i32
            } else {
                pick(rng, TARGETS) as i32
            },
            min_mod_revision: rev(rng),
            max_mod_revision: rev(rng),
            min_create_revision: rev(rng),
            max_create_revision: rev(rng),
            serializable: rng.random_bool(0.5),
            ..Default::default()
        }
    }

    async fn compare(&mut self, req: &RangeRequest) {
        self.reads += 1;
        if let Some(d) = differs(&mut self.keygate, &mut self.etcd, req).await {
            self.mismatches.push(d);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_answers_every_range_option_as_etcd_does() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    let (w, served) = compare_everything(&cluster, &keygate).await?;
    ensure!(
        served.mirror >= 0.6 * w.reads as f64
            && served.mirror_serializable > 0.0
            && served.mirror_linearizable > 0.0,
        "the mirror served only {served:?} of {} reads: the comparison proves little",
        w.reads
    );
    Ok(())
}

/// With `mirror.prefixes`, the mirror holds only those keys and answers only reads inside them
/// (the rest go to etcd); every answer is still etcd's, and watches anywhere are still served
/// from the one upstream watch, prev_kv included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_of_some_prefixes_answers_as_etcd_does() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("keygate.toml");
    std::fs::write(&config, "[mirror]\nprefixes = [\"dir/\", \"lim/\"]\n")?;
    let config = config.to_string_lossy().into_owned();
    let keygate = Keygate::start(&cluster.client_urls(), &["--config", &config]).await?;
    let (mut w, served) = compare_everything(&cluster, &keygate).await?;
    let body = mirror_common::scrape(&keygate).await?;
    let outside = mirror_common::sum(
        &body,
        "keygate_mirror_reads_total",
        &[("reason", "outside_prefixes")],
    );
    ensure!(
        served.mirror_serializable > 0.0 && served.mirror_linearizable > 0.0 && outside > 0.0,
        "reads inside the prefixes come from the mirror, the others go upstream: {served:?}, \
         {outside} outside"
    );
    // The mirror holds exactly the keys under its prefixes.
    let mut held = 0;
    for (key, end) in [("dir/", "dir0"), ("lim/", "lim0")] {
        let req = RangeRequest {
            key: b(key),
            range_end: b(end),
            count_only: true,
            ..Default::default()
        };
        held += w.etcd.kv.range(req).await?.into_inner().count;
    }
    let keys = mirror_common::sum(&body, "keygate_mirror_keys", &[]);
    ensure!(
        keys == held as f64,
        "keygate_mirror_keys is {keys}; etcd holds {held} keys under the prefixes"
    );

    // A watch outside the prefixes, with prev_kv, from the hub: the same events as etcd's
    // own (prev_kv from etcd, as the mirror does not hold these keys), no upstream watch of
    // its own.
    let create = WatchCreateRequest {
        key: b("a"),
        range_end: b("b"),
        start_revision: w.revision + 1,
        prev_kv: true,
        ..Default::default()
    };
    let mut via = WatchStream::open(&w.keygate, create.clone()).await?;
    let mut direct = WatchStream::open(&w.etcd, create).await?;
    for value in ["first", "second"] {
        w.put(put("a", value, 0)).await?;
    }
    w.put(put("a-end", "", 0)).await?;
    let wait = Duration::from_secs(10);
    let seen = via.events_until(b"a-end", wait).await?;
    let expected = direct.events_until(b"a-end", wait).await?;
    ensure!(
        seen == expected && seen.iter().any(|e| e.prev_kv.is_some()),
        "events through keygate {seen:?}\netcd's own {expected:?}"
    );
    let dedicated = mirror_common::metric(&keygate, "keygate_watch_upstream_streams", &[]).await?;
    ensure!(
        dedicated == 0.0,
        "{dedicated} upstream watches of their own"
    );
    Ok(())
}

/// The randomized writes and reads, then the systematic sweep, each read compared with etcd's
/// answer; returns the world and how keygate served the reads.
async fn compare_everything(cluster: &EtcdCluster, keygate: &Keygate) -> Result<(World, Reads)> {
    wait_serving(keygate, Duration::from_secs(15)).await?;
    let before = Reads::now(keygate).await?;
    let mut w = World {
        keygate: keygate.clients().await?,
        etcd: cluster.clients(0).await?,
        leases: Vec::new(),
        revision: 1,
        reads: 0,
        mismatches: Vec::new(),
    };
    let mut rng = StdRng::seed_from_u64(SEED);

    for _ in 0..WRITES {
        w.write(&mut rng).await.context("a write through keygate")?;
        for _ in 0..READS_PER_WRITE {
            let req = w.random_read(&mut rng);
            w.compare(&req).await;
        }
    }
    let random_reads = w.reads;

    // Keys whose versions run against key order: a sort by version that only looks at the
    // first limit+1 keys (as etcd does) and one that sorts everything disagree.
    for (k, times) in [("lim/a", 2), ("lim/b", 3), ("lim/c", 1), ("lim/d", 4)] {
        for n in 0..times {
            w.put(put(k, &format!("{k}{n}"), 0)).await?;
        }
    }

    // Every order × target × limit on every range, keys_only and consistency alternating.
    let mut n = 0usize;
    for &(key, end) in RANGES {
        for &order in ORDERS {
            for &target in TARGETS {
                for limit in [0, 1, 2] {
                    n += 1;
                    let req = RangeRequest {
                        key: b(key),
                        range_end: b(end),
                        limit,
                        keys_only: n.is_multiple_of(3),
                        sort_order: order as i32,
                        sort_target: target as i32,
                        serializable: n.is_multiple_of(2),
                        ..Default::default()
                    };
                    w.compare(&req).await;
                }
            }
        }
    }
    // Each revision filter at its edges, with and without a limit, and count_only.
    let top = w.revision;
    for &(key, end) in RANGES {
        for at in [1, top / 3, top / 2, top, top + 1] {
            for f in 0..4 {
                for limit in [0, 1] {
                    let mut req = RangeRequest {
                        key: b(key),
                        range_end: b(end),
                        limit,
                        count_only: f == 3 && limit == 1,
                        serializable: f % 2 == 1,
                        ..Default::default()
                    };
                    match f {
                        0 => req.min_mod_revision = at,
                        1 => req.max_mod_revision = at,
                        2 => req.min_create_revision = at,
                        _ => req.max_create_revision = at,
                    }
                    w.compare(&req).await;
                }
            }
        }
    }

    let served = Reads::now(keygate).await?.since(&before);
    eprintln!(
        "{} reads compared ({random_reads} random), final revision {}; mirror served {} \
         ({} serializable, {} linearizable), forwarded {}; {} mismatches",
        w.reads,
        w.revision,
        served.mirror,
        served.mirror_serializable,
        served.mirror_linearizable,
        served.upstream,
        w.mismatches.len()
    );
    eprintln!("{}", mirror_common::forwarded_reasons(keygate).await?);
    ensure!(
        w.mismatches.is_empty(),
        "{} of {} reads differ from etcd's answer; the first ones:\n{}",
        w.mismatches.len(),
        w.reads,
        w.mismatches
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    ensure!(
        served.total() >= w.reads as f64,
        "keygate counted {} reads, the test sent {}",
        served.total(),
        w.reads
    );
    Ok((w, served))
}
