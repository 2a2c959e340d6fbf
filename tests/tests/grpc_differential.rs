//! The etcd v3 KV and Lease APIs through keygate, compared message for message with etcd
//! directly: every Put, Range and DeleteRange option, compaction and leases. Each side runs in
//! front of its own fresh cluster so revisions line up; only header fields naming the member or
//! cluster are masked. Txns are in grpc_differential_txn.rs, a long randomized sequence in
//! grpc_differential_random.rs.

use anyhow::{ensure, Result};
use keygate_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keygate_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest,
};
use keygate_tests::grpc_diff::{b, put, range, seed_keys, GrpcDiff, Op, Reply};

/// The range shapes every Range option is combined with: single key, missing key, prefix,
/// from-key, the whole keyspace, and empty ranges (end before key).
const RANGES: &[(&str, &str)] = &[
    ("a", ""),
    ("nope", ""),
    ("foo/", "foo0"),
    ("b", "\0"),
    ("\0", "\0"),
    ("c", "foo"),
    ("foo", "a"),
];

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
    d.check()
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
    d.check()
}
