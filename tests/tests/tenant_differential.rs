//! A tenant behind keygate behaves as if it had an etcd of its own: a seeded random sequence of
//! a few hundred KV, Txn and Lease requests runs as alice ("/a/") through keygate in front of a
//! fresh etcd, and with the same unprefixed keys on a second, dedicated etcd. Only alice writes
//! to the shared etcd, so revisions line up exactly; header member/cluster/term are masked
//! (grpc_diff::normalize) and lease IDs (chosen by keygate for the tenant, by etcd for the
//! dedicated one) are mapped.

use crate::tenant_world;

use std::collections::HashMap;

use anyhow::{bail, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::compare::{CompareTarget, TargetUnion};
use keygate_proto::etcdserverpb::{
    request_op, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keygate_tests::grpc_diff::{normalize, rop, Op, Reply};
use keygate_tests::tenants;
use keygate_tests::EtcdCluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tenant_world::generate::from_key_delete_with_put;
use tenant_world::{bs, run_as};

const KEYS: &[&[u8]] = &[
    b"k",
    b"\0",
    b"\x01",
    b"\xff",
    b"\xff\xff",
    b"a",
    b"a/1",
    b"a/2",
    b"a/3",
    b"b",
    b"../",
    b"/",
    b"z",
];
const ENDS: &[&[u8]] = &[b"", b"\0", b"a0", b"b", b"\xff", b"k", b"\x01"];

fn translate(op: &Op, leases: &HashMap<i64, i64>) -> Op {
    let l = |id: i64| leases.get(&id).copied().unwrap_or(id);
    fn txn(t: &mut TxnRequest, l: &dyn Fn(i64) -> i64) {
        for c in &mut t.compare {
            if let Some(TargetUnion::Lease(id)) = &mut c.target_union {
                *id = l(*id);
            }
        }
        for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
            match &mut op.request {
                Some(request_op::Request::RequestPut(p)) => p.lease = l(p.lease),
                Some(request_op::Request::RequestTxn(t)) => txn(t, l),
                _ => {}
            }
        }
    }
    let mut op = op.clone();
    match &mut op {
        Op::Put(p) => p.lease = l(p.lease),
        Op::LeaseRevoke(r) => r.id = l(r.id),
        Op::LeaseTtl(r) => r.id = l(r.id),
        Op::Txn(t) => txn(t, &l),
        _ => {}
    }
    op
}

/// Every lease ID in a (keygate) reply, mapped to the dedicated etcd's.
fn map_leases(reply: &mut Reply, leases: &HashMap<i64, i64>) {
    use keygate_proto::etcdserverpb::response_op::Response as R;
    use keygate_proto::etcdserverpb::TxnResponse;
    use keygate_proto::mvccpb::KeyValue;
    let l = |id: &mut i64| {
        if let Some(d) = leases.get(id) {
            *id = *d;
        }
    };
    fn kvs<'a>(kvs: impl Iterator<Item = &'a mut KeyValue>, l: &dyn Fn(&mut i64)) {
        kvs.for_each(|kv| l(&mut kv.lease));
    }
    fn txn(t: &mut TxnResponse, l: &dyn Fn(&mut i64)) {
        for r in &mut t.responses {
            match &mut r.response {
                Some(R::ResponseRange(r)) => kvs(r.kvs.iter_mut(), l),
                Some(R::ResponsePut(r)) => kvs(r.prev_kv.iter_mut(), l),
                Some(R::ResponseDeleteRange(r)) => kvs(r.prev_kvs.iter_mut(), l),
                Some(R::ResponseTxn(t)) => txn(t, l),
                None => {}
            }
        }
    }
    match reply {
        Reply::Range(r) => kvs(r.kvs.iter_mut(), &l),
        Reply::Put(r) => kvs(r.prev_kv.iter_mut(), &l),
        Reply::Delete(r) => kvs(r.prev_kvs.iter_mut(), &l),
        Reply::Txn(t) => txn(t, &l),
        Reply::LeaseGrant(r) => l(&mut r.id),
        Reply::LeaseTtl(r) => l(&mut r.id),
        _ => {}
    }
}

fn key(rng: &mut StdRng) -> Bytes {
    bs(KEYS[rng.random_range(0..KEYS.len())])
}

fn end(rng: &mut StdRng) -> Bytes {
    bs(ENDS[rng.random_range(0..ENDS.len())])
}

fn lease(rng: &mut StdRng, leases: &[i64]) -> i64 {
    if leases.is_empty() || rng.random_bool(0.7) {
        0
    } else {
        leases[rng.random_range(0..leases.len())]
    }
}

fn random_range(rng: &mut StdRng, rev: i64) -> RangeRequest {
    let pick = |rng: &mut StdRng| {
        if rng.random_bool(0.6) {
            0
        } else {
            rng.random_range(1..=rev.max(1))
        }
    };
    RangeRequest {
        key: key(rng),
        range_end: end(rng),
        limit: [0, 0, 1, 3][rng.random_range(0..4)],
        revision: pick(rng),
        sort_order: rng.random_range(0..3),
        sort_target: rng.random_range(0..5),
        serializable: rng.random_bool(0.5),
        keys_only: rng.random_bool(0.3),
        count_only: rng.random_bool(0.2),
        min_mod_revision: pick(rng),
        max_mod_revision: pick(rng),
        min_create_revision: pick(rng),
        max_create_revision: pick(rng),
    }
}

fn random_put(rng: &mut StdRng, leases: &[i64], n: usize) -> PutRequest {
    PutRequest {
        key: key(rng),
        value: bs(format!("v{n}").as_bytes()),
        lease: lease(rng, leases),
        prev_kv: rng.random_bool(0.5),
        ..Default::default()
    }
}

fn random_delete(rng: &mut StdRng) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key(rng),
        range_end: end(rng),
        prev_kv: rng.random_bool(0.7),
    }
}

fn random_txn(rng: &mut StdRng, leases: &[i64], rev: i64, n: usize, depth: usize) -> TxnRequest {
    use request_op::Request as R;
    let mut t = TxnRequest::default();
    for _ in 0..rng.random_range(0..3) {
        let (target, union) = match rng.random_range(0..5) {
            0 => (
                CompareTarget::Version,
                TargetUnion::Version(rng.random_range(0..3)),
            ),
            1 => (
                CompareTarget::Create,
                TargetUnion::CreateRevision(rng.random_range(0..=rev)),
            ),
            2 => (
                CompareTarget::Mod,
                TargetUnion::ModRevision(rng.random_range(0..=rev)),
            ),
            3 => (
                CompareTarget::Value,
                TargetUnion::Value(bs(format!("v{}", rng.random_range(0..n.max(1))).as_bytes())),
            ),
            _ => (CompareTarget::Lease, TargetUnion::Lease(lease(rng, leases))),
        };
        // Not the empty key: tenant_isolation's compare_on_the_empty_key_matches_etcd.
        t.compare.push(Compare {
            result: rng.random_range(0..4),
            target: target as i32,
            key: key(rng),
            range_end: end(rng),
            target_union: Some(union),
        });
    }
    let op = |rng: &mut StdRng| -> RequestOp {
        match rng.random_range(0..if depth < 2 { 4 } else { 3 }) {
            0 => rop(R::RequestRange(random_range(rng, rev))),
            1 => rop(R::RequestPut(random_put(rng, leases, n))),
            2 => rop(R::RequestDeleteRange(random_delete(rng))),
            _ => rop(R::RequestTxn(random_txn(rng, leases, rev, n, depth + 1))),
        }
    };
    for _ in 0..rng.random_range(0..4) {
        t.success.push(op(rng));
    }
    for _ in 0..rng.random_range(0..3) {
        t.failure.push(op(rng));
    }
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_sees_what_a_dedicated_etcd_would_show() -> Result<()> {
    let (shared, dedicated) = tokio::try_join!(EtcdCluster::start(1), EtcdCluster::start(1))?;
    let kg = tenants::start(&shared, "", &[]).await?;
    let mut gw = kg.clients().await?;
    let mut ded = dedicated.clients(0).await?;
    let mut rng = StdRng::seed_from_u64(0x7465_6e61_6e74);
    let mut leases: Vec<i64> = Vec::new();
    let mut lease_map: HashMap<i64, i64> = HashMap::new();
    let mut rev = 1;
    let mut mismatches = Vec::new();
    let (mut n, mut skipped) = (0, 0);
    while n < 400 {
        let op = match rng.random_range(0..20) {
            0..=4 => Op::Put(random_put(&mut rng, &leases, n)),
            5..=9 => Op::Range(random_range(&mut rng, rev)),
            10..=11 => Op::Delete(random_delete(&mut rng)),
            12..=15 => {
                let t = random_txn(&mut rng, &leases, rev, n, 0);
                if from_key_delete_with_put(&t) {
                    skipped += 1;
                    continue;
                }
                Op::Txn(t)
            }
            16 => Op::LeaseGrant(LeaseGrantRequest {
                ttl: rng.random_range(100..1000),
                id: 0,
            }),
            17 | 18 => Op::LeaseTtl(LeaseTimeToLiveRequest {
                id: lease(&mut rng, &leases),
                keys: rng.random_bool(0.7),
            }),
            _ => {
                let id = lease(&mut rng, &leases);
                leases.retain(|l| *l != id || rng.random_bool(0.5));
                Op::LeaseRevoke(LeaseRevokeRequest { id })
            }
        };
        n += 1;
        let a = normalize(run_as(&mut gw, Some("alice"), &op).await);
        let d = normalize(run_as(&mut ded, None, &translate(&op, &lease_map)).await);
        if let (Reply::LeaseGrant(a), Reply::LeaseGrant(d)) = (&a, &d) {
            lease_map.insert(a.id, d.id);
            leases.push(a.id);
        }
        let mut a = a;
        map_leases(&mut a, &lease_map);
        if let (Reply::LeaseTtl(a), Reply::LeaseTtl(d)) = (&mut a, &d) {
            if (a.ttl - d.ttl).abs() <= 1 {
                a.ttl = d.ttl;
            }
        }
        if let Some(r) = d.revision() {
            rev = rev.max(r);
        }
        if a != d {
            mismatches.push(format!(
                "op #{n}: {op:?}\n  dedicated: {d:?}\n  keygate:   {a:?}"
            ));
        }
    }
    // The whole keyspace, as alice sees it and as the dedicated etcd holds it.
    let all = Op::Range(RangeRequest {
        key: bs(b"\0"),
        range_end: bs(b"\0"),
        ..Default::default()
    });
    let mut a = normalize(run_as(&mut gw, Some("alice"), &all).await);
    map_leases(&mut a, &lease_map);
    let d = normalize(run_as(&mut ded, None, &all).await);
    if a != d {
        mismatches.push(format!(
            "final range\n  dedicated: {d:?}\n  keygate:   {a:?}"
        ));
    }
    eprintln!("{n} ops compared ({skipped} txns with a from-key delete and a put skipped)");
    if !mismatches.is_empty() {
        bail!(
            "{} of {n} ops differ from a dedicated etcd:\n{}\n{}",
            mismatches.len(),
            mismatches
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            kg.log_tail(30)
        );
    }
    Ok(())
}
