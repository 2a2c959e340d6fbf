//! Random ranges, compares, ops and (nested) txns for A, each with its translation for the
//! dedicated etcd (revisions mapped).

use bytes::Bytes;
use keygate_proto::etcdserverpb::compare::{CompareTarget, TargetUnion};
use keygate_proto::etcdserverpb::{
    request_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keygate_tests::grpc_diff::rop;
use rand::rngs::StdRng;
use rand::Rng;

use super::world::World;
use super::{bs, range_ends, A_KEYS, STARTS};

/// A random Range over `key`..`end` with every option, for A and translated for the dedicated.
pub fn random_range(
    rng: &mut StdRng,
    w: &World,
    key: &Bytes,
    end: &Bytes,
) -> (RangeRequest, RangeRequest) {
    let revs = w.a_revs();
    let pick = |rng: &mut StdRng| {
        if rng.random_bool(0.5) {
            0
        } else {
            revs[rng.random_range(0..revs.len())]
        }
    };
    let mut r = RangeRequest {
        key: key.clone(),
        range_end: end.clone(),
        limit: [0, 0, 1, 2, 5][rng.random_range(0..5)],
        sort_order: rng.random_range(0..3),
        sort_target: rng.random_range(0..5),
        serializable: rng.random_bool(0.5),
        keys_only: rng.random_bool(0.3),
        count_only: rng.random_bool(0.2),
        ..Default::default()
    };
    if rng.random_bool(0.3) {
        r.revision = pick(rng);
    }
    if rng.random_bool(0.3) {
        r.min_mod_revision = pick(rng);
    }
    if rng.random_bool(0.3) {
        r.max_mod_revision = pick(rng);
    }
    if rng.random_bool(0.3) {
        r.min_create_revision = pick(rng);
    }
    if rng.random_bool(0.3) {
        r.max_create_revision = pick(rng);
    }
    let d = RangeRequest {
        revision: w.ded_rev(r.revision),
        min_mod_revision: w.ded_rev(r.min_mod_revision),
        max_mod_revision: w.ded_rev(r.max_mod_revision),
        min_create_revision: w.ded_rev(r.min_create_revision),
        max_create_revision: w.ded_rev(r.max_create_revision),
        ..r.clone()
    };
    (r, d)
}

/// Whether `t` has a DeleteRange with range_end "\0" and a Put anywhere in it.
pub fn from_key_delete_with_put(t: &TxnRequest) -> bool {
    fn walk(t: &TxnRequest, del: &mut bool, put: &mut bool) {
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    *del |= d.range_end.as_ref() == b"\0"
                }
                Some(request_op::Request::RequestPut(_)) => *put = true,
                Some(request_op::Request::RequestTxn(t)) => walk(t, del, put),
                _ => {}
            }
        }
    }
    let (mut del, mut put) = (false, false);
    walk(t, &mut del, &mut put);
    del && put
}

pub fn random_compare(rng: &mut StdRng, w: &World) -> (Compare, Compare) {
    // The empty key is left out: see `compare_on_the_empty_key_matches_etcd`.
    let key = bs(STARTS[rng.random_range(1..STARTS.len())]);
    let ends = range_ends(&key);
    let end = ends[rng.random_range(0..ends.len())].clone();
    let revs = w.a_revs();
    let rev = revs[rng.random_range(0..revs.len())];
    let (target, a, d) = match rng.random_range(0..5) {
        0 => {
            let v = rng.random_range(0..3);
            (
                CompareTarget::Version,
                TargetUnion::Version(v),
                TargetUnion::Version(v),
            )
        }
        1 => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(rev),
            TargetUnion::CreateRevision(w.ded_rev(rev)),
        ),
        2 => (
            CompareTarget::Mod,
            TargetUnion::ModRevision(rev),
            TargetUnion::ModRevision(w.ded_rev(rev)),
        ),
        3 => {
            let v = bs([&b"a-1-0"[..], b"SECRET-B-1", b"", b"a-0-1"][rng.random_range(0..4)]);
            (
                CompareTarget::Value,
                TargetUnion::Value(v.clone()),
                TargetUnion::Value(v),
            )
        }
        _ => (
            CompareTarget::Lease,
            TargetUnion::Lease(0),
            TargetUnion::Lease(0),
        ),
    };
    let result = rng.random_range(0..4);
    let c = Compare {
        result,
        target: target as i32,
        key,
        range_end: end,
        target_union: Some(a),
    };
    let dc = Compare {
        target_union: Some(d),
        ..c.clone()
    };
    (c, dc)
}

pub fn random_op(rng: &mut StdRng, w: &World, depth: usize) -> (RequestOp, RequestOp) {
    use request_op::Request as R;
    let key = bs(STARTS[rng.random_range(0..STARTS.len())]);
    let ends = range_ends(&key);
    let end = ends[rng.random_range(0..ends.len())].clone();
    match rng.random_range(0..if depth < 2 { 4 } else { 3 }) {
        0 => {
            let (a, d) = random_range(rng, w, &key, &end);
            (rop(R::RequestRange(a)), rop(R::RequestRange(d)))
        }
        1 => {
            let k = bs(A_KEYS[rng.random_range(0..A_KEYS.len())]);
            let p = PutRequest {
                key: k,
                value: bs(format!("a-txn-{}", rng.random_range(0..1000)).as_bytes()),
                prev_kv: rng.random_bool(0.5),
                ..Default::default()
            };
            (rop(R::RequestPut(p.clone())), rop(R::RequestPut(p)))
        }
        2 => {
            let del = DeleteRangeRequest {
                key,
                range_end: end,
                prev_kv: rng.random_bool(0.7),
            };
            (
                rop(R::RequestDeleteRange(del.clone())),
                rop(R::RequestDeleteRange(del)),
            )
        }
        _ => {
            let (a, d) = random_txn(rng, w, depth + 1);
            (rop(R::RequestTxn(a)), rop(R::RequestTxn(d)))
        }
    }
}

pub fn random_txn(rng: &mut StdRng, w: &World, depth: usize) -> (TxnRequest, TxnRequest) {
    let mut a = TxnRequest::default();
    let mut d = TxnRequest::default();
    for _ in 0..rng.random_range(0..4) {
        let (x, y) = random_compare(rng, w);
        a.compare.push(x);
        d.compare.push(y);
    }
    for _ in 0..rng.random_range(0..4) {
        let (x, y) = random_op(rng, w, depth);
        a.success.push(x);
        d.success.push(y);
    }
    for _ in 0..rng.random_range(0..4) {
        let (x, y) = random_op(rng, w, depth);
        a.failure.push(x);
        d.failure.push(y);
    }
    (a, d)
}
