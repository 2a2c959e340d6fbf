//! A long randomized sequence (fixed seed) of puts, ranges, deletes, nested txns, compactions
//! and lease calls, through keygate and against etcd directly, every reply compared.

use anyhow::{ensure, Result};
use keygate_proto::etcdserverpb::compare::{CompareResult, TargetUnion};
use keygate_proto::etcdserverpb::{
    request_op, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keygate_tests::grpc_diff::{b, cmp, put, range, rop, GrpcDiff, Op};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: &[&str] = &["a", "b", "c", "k/1", "k/2", "k/3", "k/4", "m", "z"];
const RANDOM_OPS: usize = 600;

fn key(rng: &mut StdRng) -> &'static str {
    KEYS[rng.random_range(0..KEYS.len())]
}

fn random_range(rng: &mut StdRng, rev: i64) -> RangeRequest {
    let (k, end) = match rng.random_range(0..4) {
        0 => (key(rng), ""),
        1 => ("k/", "k0"),
        2 => (key(rng), "\0"),
        _ => (key(rng), key(rng)),
    };
    RangeRequest {
        limit: if rng.random_bool(0.3) {
            rng.random_range(0..4)
        } else {
            0
        },
        revision: if rng.random_bool(0.2) {
            rng.random_range(0..rev + 2)
        } else {
            0
        },
        sort_order: rng.random_range(0..3),
        sort_target: rng.random_range(0..5),
        serializable: rng.random_bool(0.3),
        keys_only: rng.random_bool(0.2),
        count_only: rng.random_bool(0.1),
        min_mod_revision: if rng.random_bool(0.1) {
            rng.random_range(0..rev + 1)
        } else {
            0
        },
        max_mod_revision: if rng.random_bool(0.1) {
            rng.random_range(0..rev + 1)
        } else {
            0
        },
        min_create_revision: if rng.random_bool(0.1) {
            rng.random_range(0..rev + 1)
        } else {
            0
        },
        max_create_revision: if rng.random_bool(0.1) {
            rng.random_range(0..rev + 1)
        } else {
            0
        },
        ..range(k, end)
    }
}

fn random_put(rng: &mut StdRng, leases: &[i64]) -> PutRequest {
    let value = format!("v{}", rng.random_range(0..1000));
    PutRequest {
        lease: if rng.random_bool(0.2) && !leases.is_empty() {
            leases[rng.random_range(0..leases.len())]
        } else {
            0
        },
        prev_kv: rng.random_bool(0.5),
        ignore_value: rng.random_bool(0.05),
        ignore_lease: rng.random_bool(0.05),
        ..put(key(rng), &value)
    }
}

fn random_delete(rng: &mut StdRng) -> DeleteRangeRequest {
    let (k, end) = match rng.random_range(0..3) {
        0 => (key(rng), ""),
        1 => ("k/", "k0"),
        _ => (key(rng), key(rng)),
    };
    DeleteRangeRequest {
        key: b(k),
        range_end: b(end),
        prev_kv: rng.random_bool(0.5),
    }
}

fn random_ops(rng: &mut StdRng, rev: i64, leases: &[i64], depth: u32) -> Vec<RequestOp> {
    (0..rng.random_range(0..4))
        .map(
            |_| match rng.random_range(0..if depth < 2 { 4 } else { 3 }) {
                0 => rop(request_op::Request::RequestRange(RangeRequest {
                    revision: 0,
                    ..random_range(rng, rev)
                })),
                1 => rop(request_op::Request::RequestPut(random_put(rng, leases))),
                2 => rop(request_op::Request::RequestDeleteRange(random_delete(rng))),
                _ => rop(request_op::Request::RequestTxn(random_txn(
                    rng,
                    rev,
                    leases,
                    depth + 1,
                ))),
            },
        )
        .collect()
}

fn random_txn(rng: &mut StdRng, rev: i64, leases: &[i64], depth: u32) -> TxnRequest {
    let compare = (0..rng.random_range(0..3))
        .map(|_| {
            let n = rng.random_range(0..rev + 1);
            let target = match rng.random_range(0..5) {
                0 => TargetUnion::Version(rng.random_range(0..4)),
                1 => TargetUnion::CreateRevision(n),
                2 => TargetUnion::ModRevision(n),
                3 => TargetUnion::Value(b(&format!("v{}", rng.random_range(0..1000)))),
                _ => TargetUnion::Lease(leases.first().copied().unwrap_or(0)),
            };
            let end = if rng.random_bool(0.2) { "\0" } else { "" };
            cmp(
                key(rng),
                end,
                CompareResult::try_from(rng.random_range(0..4)).unwrap_or(CompareResult::Equal),
                target,
            )
        })
        .collect();
    TxnRequest {
        compare,
        success: random_ops(rng, rev, leases, depth),
        failure: random_ops(rng, rev, leases, depth),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn randomized_sequence_matches_etcd() -> Result<()> {
    let mut d = GrpcDiff::start(1).await?;
    let mut rng = StdRng::seed_from_u64(0x6b65_7967);
    let mut rev = 1;
    let mut compacted = 0;
    let mut leases: Vec<i64> = Vec::new();
    let mut errors = 0;
    for _ in 0..RANDOM_OPS {
        let op = match rng.random_range(0..100) {
            0..=29 => Op::Put(random_put(&mut rng, &leases)),
            30..=59 => Op::Range(random_range(&mut rng, rev)),
            60..=69 => Op::Delete(random_delete(&mut rng)),
            70..=89 => Op::Txn(random_txn(&mut rng, rev, &leases, 0)),
            90..=92 => {
                let at = rng.random_range(compacted.max(1)..rev + 1);
                Op::Compact(CompactionRequest {
                    revision: at,
                    physical: rng.random_bool(0.5),
                })
            }
            93..=95 => {
                let id = rng.random_range(1..1_000_000);
                leases.push(id);
                Op::LeaseGrant(LeaseGrantRequest { ttl: 600, id })
            }
            96..=97 if !leases.is_empty() => {
                let id = leases.swap_remove(rng.random_range(0..leases.len()));
                Op::LeaseRevoke(LeaseRevokeRequest { id })
            }
            _ => Op::LeaseTtl(LeaseTimeToLiveRequest {
                id: leases.first().copied().unwrap_or(1),
                keys: true,
            }),
        };
        if let Op::Compact(c) = &op {
            compacted = compacted.max(c.revision);
        }
        let reply = d.same(op).await?;
        if reply.is_error() {
            errors += 1;
        }
        rev = rev.max(reply.revision().unwrap_or(0));
    }
    d.same(Op::Range(range("\0", "\0"))).await?;
    d.same(Op::LeaseLeases).await?;
    // The sequence must exercise both outcomes to mean anything.
    ensure!(
        errors > 0 && errors < RANDOM_OPS / 2,
        "{errors} errors in {RANDOM_OPS} ops"
    );
    ensure!(rev > 100, "only reached revision {rev}");
    d.check()
}
