//! Txns through keygate compared with etcd directly: compares of every target and result,
//! key ranges in compares, both branches, nested txns, and txn errors.

use anyhow::Result;
use keygate_proto::etcdserverpb::compare::{CompareResult, TargetUnion};
use keygate_proto::etcdserverpb::{
    request_op, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, TxnRequest,
};
use keygate_tests::grpc_diff::{b, cmp, put, range, rop, seed_keys, GrpcDiff, Op};

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
    d.check()
}
