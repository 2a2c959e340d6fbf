//! The etcd v3 KV and Lease APIs through keygate, compared message for message with etcd
//! directly: hand-picked edge cases of every request option, then a long randomized sequence
//! (fixed seed). Each side runs in front of its own fresh cluster so revisions line up; only
//! header fields naming the member or cluster are masked.

use anyhow::{ensure, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keygate_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keygate_proto::etcdserverpb::{
    request_op, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keygate_tests::grpc_diff::{GrpcDiff, Op, Reply};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    }
}

fn range(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: b(k),
        range_end: b(end),
        ..Default::default()
    }
}

fn cmp(key: &str, end: &str, result: CompareResult, target: TargetUnion) -> Compare {
    let t = match target {
        TargetUnion::Version(_) => CompareTarget::Version,
        TargetUnion::CreateRevision(_) => CompareTarget::Create,
        TargetUnion::ModRevision(_) => CompareTarget::Mod,
        TargetUnion::Value(_) => CompareTarget::Value,
        TargetUnion::Lease(_) => CompareTarget::Lease,
    };
    Compare {
        result: result as i32,
        target: t as i32,
        key: b(key),
        range_end: b(end),
        target_union: Some(target),
    }
}

fn rop(r: request_op::Request) -> RequestOp {
    RequestOp { request: Some(r) }
}

/// The range specs every Range option is combined with: single key, missing key, prefix,
/// from-key, the whole keyspace, and an empty range (end before key).
const RANGES: &[(&str, &str)] = &[
    ("a", ""),
    ("nope", ""),
    ("foo/", "foo0"),
    ("b", "\0"),
    ("\0", "\0"),
    ("c", "foo"),
    ("foo", "a"),
];

async fn seed_keys(d: &mut GrpcDiff) -> Result<()> {
    for (k, v) in [
        ("a", "1"),
        ("b", "22"),
        ("c", "3"),
        ("foo/1", "x"),
        ("foo/2", "yy"),
        ("foo/3", "z"),
        ("a", "11"),
        ("foo/2", "y"),
        ("zz", ""),
        ("foo/1", "xxx"),
    ] {
        d.same(Op::Put(put(k, v))).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn puts_ranges_and_deletes_match_etcd() -> Result<()> {
    let mut d = GrpcDiff::start(1).await?;
    seed_keys(&mut d).await?;

    // Put options.
    let lease = 0x1234_5678;
    d.same(Op::LeaseGrant(LeaseGrantRequest {
        ttl: 600,
        id: lease,
    }))
    .await?;
    d.same(Op::Put(PutRequest {
        prev_kv: true,
        ..put("a", "12")
    }))
    .await?;
    d.same(Op::Put(PutRequest {
        prev_kv: true,
        ..put("new", "n")
    }))
    .await?;
    d.same(Op::Put(PutRequest {
        lease,
        ..put("leased", "l")
    }))
    .await?;
    d.same(Op::Put(PutRequest {
        ignore_value: true,
        prev_kv: true,
        ..put("leased", "")
    }))
    .await?;
    d.same(Op::Put(PutRequest {
        ignore_lease: true,
        ..put("leased", "l2")
    }))
    .await?;
    for bad in [
        PutRequest {
            ignore_value: true,
            ..put("missing", "")
        },
        PutRequest {
            ignore_value: true,
            ..put("a", "value given")
        },
        PutRequest {
            ignore_lease: true,
            ..put("missing", "v")
        },
        PutRequest {
            ignore_lease: true,
            lease,
            ..put("a", "v")
        },
        PutRequest {
            lease: 999,
            ..put("a", "v")
        },
        put("", "empty key"),
    ] {
        let r = d.same(Op::Put(bad)).await?;
        ensure!(r.is_error(), "expected an error, got {r:?}");
    }

    // Range: every option over every range shape, at several revisions.
    let first_rev = 2;
    let mid_rev = 6;
    let Some(cur) = d.same(Op::Range(range("a", ""))).await?.revision() else {
        anyhow::bail!("no revision");
    };
    for (k, end) in RANGES {
        let base = range(k, end);
        for order in [SortOrder::None, SortOrder::Ascend, SortOrder::Descend] {
            for target in [
                SortTarget::Key,
                SortTarget::Version,
                SortTarget::Create,
                SortTarget::Mod,
                SortTarget::Value,
            ] {
                for limit in [0, 2] {
                    d.same(Op::Range(RangeRequest {
                        sort_order: order as i32,
                        sort_target: target as i32,
                        limit,
                        ..base.clone()
                    }))
                    .await?;
                }
            }
        }
        let variants = [
            RangeRequest {
                limit: 1,
                ..base.clone()
            },
            RangeRequest {
                limit: 100,
                ..base.clone()
            },
            RangeRequest {
                revision: first_rev,
                ..base.clone()
            },
            RangeRequest {
                revision: mid_rev,
                ..base.clone()
            },
            RangeRequest {
                revision: cur,
                ..base.clone()
            },
            RangeRequest {
                revision: cur + 5,
                ..base.clone()
            },
            RangeRequest {
                serializable: true,
                ..base.clone()
            },
            RangeRequest {
                keys_only: true,
                ..base.clone()
            },
            RangeRequest {
                count_only: true,
                ..base.clone()
            },
            RangeRequest {
                count_only: true,
                limit: 1,
                ..base.clone()
            },
            RangeRequest {
                keys_only: true,
                limit: 1,
                serializable: true,
                ..base.clone()
            },
            RangeRequest {
                min_mod_revision: mid_rev,
                ..base.clone()
            },
            RangeRequest {
                max_mod_revision: mid_rev,
                ..base.clone()
            },
            RangeRequest {
                min_create_revision: 3,
                ..base.clone()
            },
            RangeRequest {
                max_create_revision: 3,
                ..base.clone()
            },
            RangeRequest {
                min_mod_revision: 3,
                max_mod_revision: 8,
                limit: 1,
                ..base.clone()
            },
            RangeRequest {
                revision: mid_rev,
                min_create_revision: 2,
                sort_order: 2,
                ..base.clone()
            },
        ];
        for v in variants {
            d.same(Op::Range(v)).await?;
        }
    }
    let r = d.same(Op::Range(range("", ""))).await?;
    ensure!(r.is_error(), "empty key: {r:?}");
    d.same(Op::Range(range("", "\0"))).await?;

    // DeleteRange.
    d.same(Op::Delete(DeleteRangeRequest {
        key: b("missing"),
        ..Default::default()
    }))
    .await?;
    d.same(Op::Delete(DeleteRangeRequest {
        key: b("c"),
        prev_kv: true,
        ..Default::default()
    }))
    .await?;
    d.same(Op::Delete(DeleteRangeRequest {
        key: b("foo/"),
        range_end: b("foo0"),
        prev_kv: true,
    }))
    .await?;
    d.same(Op::Delete(DeleteRangeRequest {
        key: b("z"),
        range_end: b("\0"),
        prev_kv: false,
    }))
    .await?;
    d.same(Op::Delete(DeleteRangeRequest {
        key: b("b"),
        range_end: b("a"),
        prev_kv: true,
    }))
    .await?;
    let r = d.same(Op::Delete(DeleteRangeRequest::default())).await?;
    ensure!(r.is_error(), "empty delete key: {r:?}");
    d.same(Op::Range(range("\0", "\0"))).await?;
    // A deleted key's history is still there at an old revision.
    d.same(Op::Range(RangeRequest {
        revision: mid_rev,
        ..range("foo/", "foo0")
    }))
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn txns_match_etcd() -> Result<()> {
    let mut d = GrpcDiff::start(1).await?;
    seed_keys(&mut d).await?;
    let lease = 77;
    d.same(Op::LeaseGrant(LeaseGrantRequest {
        ttl: 600,
        id: lease,
    }))
    .await?;
    d.same(Op::Put(PutRequest {
        lease,
        ..put("leased", "l")
    }))
    .await?;

    let targets = |n: i64| {
        [
            TargetUnion::Version(n),
            TargetUnion::CreateRevision(n + 1),
            TargetUnion::ModRevision(n + 5),
            TargetUnion::Value(b("y")),
            TargetUnion::Lease(if n == 1 { lease } else { 0 }),
        ]
    };
    let results = [
        CompareResult::Equal,
        CompareResult::Greater,
        CompareResult::Less,
        CompareResult::NotEqual,
    ];
    let mut i = 0;
    for (key, end) in [
        ("foo/2", ""),
        ("missing", ""),
        ("foo/", "foo0"),
        ("leased", ""),
        ("a", "\0"),
    ] {
        for n in [1, 2] {
            for target in targets(n) {
                for result in results {
                    i += 1;
                    let tag = format!("{i}");
                    d.same(Op::Txn(TxnRequest {
                        compare: vec![cmp(key, end, result, target.clone())],
                        success: vec![
                            rop(request_op::Request::RequestPut(PutRequest {
                                prev_kv: true,
                                ..put("t/ok", &tag)
                            })),
                            rop(request_op::Request::RequestRange(range("foo/", "foo0"))),
                        ],
                        failure: vec![
                            rop(request_op::Request::RequestDeleteRange(
                                DeleteRangeRequest {
                                    key: b("t/"),
                                    range_end: b("t0"),
                                    prev_kv: true,
                                },
                            )),
                            rop(request_op::Request::RequestRange(RangeRequest {
                                count_only: true,
                                ..range("\0", "\0")
                            })),
                        ],
                    }))
                    .await?;
                }
            }
        }
    }

    // Several compares, nested txns in both branches, an empty txn.
    let nested = |tag: &str| TxnRequest {
        compare: vec![cmp(
            "a",
            "",
            CompareResult::Equal,
            TargetUnion::Value(b("11")),
        )],
        success: vec![
            rop(request_op::Request::RequestPut(put("n/ok", tag))),
            rop(request_op::Request::RequestTxn(TxnRequest {
                compare: vec![cmp(
                    "n/ok",
                    "",
                    CompareResult::Greater,
                    TargetUnion::Version(0),
                )],
                success: vec![rop(request_op::Request::RequestRange(range("n/", "n0")))],
                failure: vec![],
            })),
        ],
        failure: vec![rop(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: b("n/"),
                range_end: b("n0"),
                prev_kv: true,
            },
        ))],
    };
    for first in ["11", "nope"] {
        d.same(Op::Txn(TxnRequest {
            compare: vec![
                cmp("a", "", CompareResult::Equal, TargetUnion::Value(b(first))),
                cmp("b", "", CompareResult::Greater, TargetUnion::ModRevision(0)),
            ],
            success: vec![rop(request_op::Request::RequestTxn(nested("s")))],
            failure: vec![
                rop(request_op::Request::RequestTxn(nested("f"))),
                rop(request_op::Request::RequestPut(PutRequest {
                    prev_kv: true,
                    ..put("n/x", first)
                })),
            ],
        }))
        .await?;
    }
    d.same(Op::Txn(TxnRequest::default())).await?;

    // Errors: the same key written twice, an empty key, a bad lease, inside a txn.
    for bad in [
        TxnRequest {
            success: vec![
                rop(request_op::Request::RequestPut(put("dup", "1"))),
                rop(request_op::Request::RequestPut(put("dup", "2"))),
            ],
            ..Default::default()
        },
        TxnRequest {
            failure: vec![
                rop(request_op::Request::RequestPut(put("dup", "1"))),
                rop(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key: b("d"),
                        range_end: b("e"),
                        prev_kv: false,
                    },
                )),
            ],
            compare: vec![cmp(
                "a",
                "",
                CompareResult::Equal,
                TargetUnion::Value(b("x")),
            )],
            ..Default::default()
        },
        TxnRequest {
            success: vec![rop(request_op::Request::RequestPut(put("", "1")))],
            ..Default::default()
        },
        TxnRequest {
            success: vec![rop(request_op::Request::RequestPut(PutRequest {
                lease: 4242,
                ..put("x", "1")
            }))],
            ..Default::default()
        },
    ] {
        d.same(Op::Txn(bad)).await?;
    }
    d.same(Op::Range(range("\0", "\0"))).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_and_leases_match_etcd() -> Result<()> {
    let mut d = GrpcDiff::start(1).await?;
    seed_keys(&mut d).await?;
    let r = d.same(Op::Range(range("a", ""))).await?;
    let cur = r.revision().unwrap_or_default();

    d.same(Op::Compact(CompactionRequest {
        revision: 5,
        physical: true,
    }))
    .await?;
    for rev in [1, 4, 5, 6, cur, cur + 1] {
        d.same(Op::Range(RangeRequest {
            revision: rev,
            ..range("\0", "\0")
        }))
        .await?;
    }
    for rev in [3, 5, cur + 10] {
        let r = d
            .same(Op::Compact(CompactionRequest {
                revision: rev,
                physical: false,
            }))
            .await?;
        ensure!(r.is_error(), "compact at {rev}: {r:?}");
    }
    d.same(Op::Compact(CompactionRequest {
        revision: cur,
        physical: false,
    }))
    .await?;
    let r = d
        .same(Op::Range(RangeRequest {
            revision: cur - 1,
            ..range("a", "")
        }))
        .await?;
    ensure!(
        matches!(&r, Reply::Error { message, .. } if message.contains("compacted")),
        "range at a compacted revision: {r:?}"
    );

    // Leases with explicit ids, so both sides agree on them.
    for (id, ttl) in [(100, 600), (200, 900), (300, 1200)] {
        d.same(Op::LeaseGrant(LeaseGrantRequest { ttl, id }))
            .await?;
    }
    let r = d
        .same(Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 100 }))
        .await?;
    ensure!(r.is_error(), "duplicate lease id: {r:?}");
    for k in ["l/1", "l/2", "l/3"] {
        d.same(Op::Put(PutRequest {
            lease: 100,
            ..put(k, "v")
        }))
        .await?;
    }
    d.same(Op::Put(PutRequest {
        lease: 200,
        ..put("l/4", "v")
    }))
    .await?;
    d.same(Op::LeaseLeases).await?;
    for id in [100, 200, 300, 999] {
        for keys in [false, true] {
            d.same(Op::LeaseTtl(LeaseTimeToLiveRequest { id, keys }))
                .await?;
        }
    }
    d.same(Op::LeaseRevoke(LeaseRevokeRequest { id: 100 }))
        .await?;
    d.same(Op::Range(range("l/", "l0"))).await?;
    let r = d
        .same(Op::LeaseRevoke(LeaseRevokeRequest { id: 100 }))
        .await?;
    ensure!(r.is_error(), "revoking a revoked lease: {r:?}");
    let r = d
        .same(Op::Put(PutRequest {
            lease: 100,
            ..put("l/5", "v")
        }))
        .await?;
    ensure!(r.is_error(), "put with a revoked lease: {r:?}");
    d.same(Op::LeaseTtl(LeaseTimeToLiveRequest {
        id: 100,
        keys: true,
    }))
    .await?;
    d.same(Op::LeaseLeases).await?;
    d.same(Op::Range(range("\0", "\0"))).await?;
    Ok(())
}

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
    Ok(())
}
