//! The adversarial tenant-isolation suite, beyond the keyspace: tenant A (alice, "/a/") against
//! B's (bob, "/ab/") leases, the same lock and election names in both namespaces, and the
//! cluster-wide RPCs, refused inside a namespace. See `tenant_isolation.rs` for the keyspace.

use crate::tenant_world;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{
    request_op, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, TxnRequest,
};
use keygate_proto::v3electionpb::{CampaignRequest, LeaderRequest, ProclaimRequest};
use keygate_proto::v3lockpb::{LockRequest, UnlockRequest};
use keygate_tests::grpc_diff::{rop, Reply};
use keygate_tests::tenants::{self, as_user};
use keygate_tests::EtcdCluster;
use tenant_world::check::{assert_clean, check_reply};
use tenant_world::{code_of, prefixed, ALICE, A_PREFIX, BOB, B_PREFIX};
use tonic::{Code, Status};

#[tokio::test(flavor = "multi_thread")]
async fn leases_locks_elections_and_cluster_rpcs() -> Result<()> {
    let (etcd, _) = (EtcdCluster::start(1).await?, ());
    let kg = tenants::start(&etcd, "", &[]).await?;
    let mut c = kg.clients().await?;
    let mut raw = etcd.clients(0).await?;

    // B's lease with keys attached.
    let b_lease = (c.lease)
        .lease_grant(as_user(BOB, LeaseGrantRequest { ttl: 300, id: 0 }))
        .await?
        .into_inner()
        .id;
    for k in ["l1", "l2"] {
        (c.kv)
            .put(as_user(
                BOB,
                PutRequest {
                    key: k.into(),
                    value: "SECRET-B-leased".into(),
                    lease: b_lease,
                    ..Default::default()
                },
            ))
            .await?;
    }
    let b_ttl_before = raw
        .lease
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: b_lease,
            keys: true,
        })
        .await?
        .into_inner();
    ensure!(b_ttl_before.ttl > 0);
    // A's lease, with keys A attached, and keys the admin attached inside and outside /a/.
    let a_lease = (c.lease)
        .lease_grant(as_user(ALICE, LeaseGrantRequest { ttl: 300, id: 0 }))
        .await?
        .into_inner()
        .id;
    ensure!(
        a_lease >> 32 != b_lease >> 32,
        "A's and B's leases share a tag"
    );
    (c.kv)
        .put(as_user(
            ALICE,
            PutRequest {
                key: "mine".into(),
                value: "v".into(),
                lease: a_lease,
                ..Default::default()
            },
        ))
        .await?;
    for k in ["/a/adm", "/ab/SECRET-B-key", "/zz"] {
        raw.kv
            .put(PutRequest {
                key: k.into(),
                value: "OUTSIDE-or-admin".into(),
                lease: a_lease,
                ..Default::default()
            })
            .await?;
    }

    // A against B's lease (and a lease that exists nowhere, and lease 0): "does not exist".
    for id in [b_lease, b_lease ^ 1, 0x1234] {
        let revoke = (c.lease)
            .lease_revoke(as_user(ALICE, LeaseRevokeRequest { id }))
            .await;
        ensure!(
            code_of(&revoke) == Some(Code::NotFound),
            "revoke {id:x}: {revoke:?}"
        );
        ensure!(
            revoke.as_ref().err().map(Status::message)
                == Some("etcdserver: requested lease not found")
        );
        let ttl = (c.lease)
            .lease_time_to_live(as_user(ALICE, LeaseTimeToLiveRequest { id, keys: true }))
            .await?
            .into_inner();
        check_reply("ttl", &Reply::LeaseTtl(ttl.clone()))?;
        ensure!(
            ttl.ttl == -1 && ttl.granted_ttl == 0 && ttl.keys.is_empty() && ttl.id == id,
            "A's TTL of lease {id:x}: {ttl:?}"
        );
        let put = (c.kv)
            .put(as_user(
                ALICE,
                PutRequest {
                    key: "stolen".into(),
                    value: "x".into(),
                    lease: id,
                    ..Default::default()
                },
            ))
            .await;
        ensure!(
            code_of(&put) == Some(Code::NotFound),
            "put with {id:x}: {put:?}"
        );
        let txn_put = (c.kv)
            .txn(as_user(
                ALICE,
                TxnRequest {
                    success: vec![rop(request_op::Request::RequestPut(PutRequest {
                        key: "stolen".into(),
                        lease: id,
                        ..Default::default()
                    }))],
                    ..Default::default()
                },
            ))
            .await;
        ensure!(
            code_of(&txn_put) == Some(Code::NotFound),
            "txn put with {id:x}: {txn_put:?}"
        );
        let lock = (c.lock)
            .lock(as_user(
                ALICE,
                LockRequest {
                    name: "n".into(),
                    lease: id,
                },
            ))
            .await;
        ensure!(
            code_of(&lock) == Some(Code::NotFound),
            "lock with {id:x}: {lock:?}"
        );
        let ka = (c.lease)
            .lease_keep_alive(as_user(
                ALICE,
                futures::stream::iter(vec![LeaseKeepAliveRequest { id }]),
            ))
            .await?
            .into_inner()
            .message()
            .await?
            .context("no keep-alive answer")?;
        ensure!(
            ka.ttl == 0 && ka.id == id,
            "A's keep-alive of {id:x}: {ka:?}"
        );
    }
    // Granting with B's ID (or any ID without A's tag) is refused.
    for id in [b_lease, b_lease + 1, 42] {
        let g = (c.lease)
            .lease_grant(as_user(ALICE, LeaseGrantRequest { ttl: 60, id }))
            .await;
        ensure!(
            code_of(&g) == Some(Code::PermissionDenied),
            "grant {id:x}: {g:?}"
        );
    }
    ensure!(
        (c.kv)
            .range(as_user(
                ALICE,
                RangeRequest {
                    key: "stolen".into(),
                    ..Default::default()
                }
            ))
            .await?
            .into_inner()
            .count
            == 0
    );
    // B's lease and keys are untouched.
    let b_ttl = raw
        .lease
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: b_lease,
            keys: true,
        })
        .await?
        .into_inner();
    let mut keys = b_ttl.keys.clone();
    keys.sort();
    ensure!(
        b_ttl.ttl > 0
            && b_ttl.granted_ttl == 300
            && keys == vec![b"/ab/l1".to_vec(), b"/ab/l2".to_vec()],
        "B's lease changed: {b_ttl:?}"
    );
    let b_own = (c.lease)
        .lease_time_to_live(as_user(
            BOB,
            LeaseTimeToLiveRequest {
                id: b_lease,
                keys: true,
            },
        ))
        .await?
        .into_inner();
    ensure!(
        b_own.ttl > 0 && b_own.keys.len() == 2,
        "B's own view: {b_own:?}"
    );
    // A's own lease: only its keys, stripped.
    let a_ttl = (c.lease)
        .lease_time_to_live(as_user(
            ALICE,
            LeaseTimeToLiveRequest {
                id: a_lease,
                keys: true,
            },
        ))
        .await?
        .into_inner();
    check_reply("A's ttl", &Reply::LeaseTtl(a_ttl.clone()))?;
    let mut keys = a_ttl.keys.clone();
    keys.sort();
    ensure!(
        a_ttl.ttl > 0 && keys == vec![b"adm".to_vec(), b"mine".to_vec()],
        "A's lease keys: {a_ttl:?}"
    );
    let ka = (c.lease)
        .lease_keep_alive(as_user(
            ALICE,
            futures::stream::iter(vec![LeaseKeepAliveRequest { id: a_lease }]),
        ))
        .await?
        .into_inner()
        .message()
        .await?
        .context("no keep-alive answer")?;
    ensure!(ka.ttl > 0 && ka.id == a_lease, "A's own keep-alive: {ka:?}");

    // Locks: A and B lock the same name at once; both hold it, in their namespaces.
    let (a_lock, b_lock) = {
        let (mut ca, mut cb) = (c.lock.clone(), c.lock.clone());
        let wait = Duration::from_secs(10);
        tokio::try_join!(
            async {
                tokio::time::timeout(
                    wait,
                    ca.lock(as_user(
                        ALICE,
                        LockRequest {
                            name: "mylock".into(),
                            lease: a_lease,
                        },
                    )),
                )
                .await
                .context("A's lock")?
                .context("A's lock")
            },
            async {
                tokio::time::timeout(
                    wait,
                    cb.lock(as_user(
                        BOB,
                        LockRequest {
                            name: "mylock".into(),
                            lease: b_lease,
                        },
                    )),
                )
                .await
                .context("B's lock")?
                .context("B's lock")
            }
        )?
    };
    let (a_key, b_key) = (a_lock.into_inner().key, b_lock.into_inner().key);
    ensure!(
        a_key.starts_with(b"mylock/") && b_key.starts_with(b"mylock/"),
        "{a_key:?} {b_key:?}"
    );
    for (prefix, key) in [(A_PREFIX, &a_key), (B_PREFIX, &b_key)] {
        let stored = raw
            .kv
            .range(RangeRequest {
                key: prefixed(prefix, key),
                ..Default::default()
            })
            .await?
            .into_inner();
        ensure!(
            stored.count == 1,
            "lock key {key:?} not stored under {prefix:?}"
        );
    }
    // A unlocking B's key (as A names it) removes only A's own.
    (c.lock)
        .unlock(as_user(ALICE, UnlockRequest { key: b_key.clone() }))
        .await?;
    let b_still = raw
        .kv
        .range(RangeRequest {
            key: prefixed(B_PREFIX, &b_key),
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(b_still.count == 1, "A's unlock removed B's lock key");

    // Elections: both campaign on the same name and both lead, each in its namespace.
    let (a_camp, b_camp) = {
        let (mut ea, mut eb) = (c.election.clone(), c.election.clone());
        tokio::try_join!(
            ea.campaign(as_user(
                ALICE,
                CampaignRequest {
                    name: "elec".into(),
                    lease: a_lease,
                    value: "A-val".into()
                }
            )),
            eb.campaign(as_user(
                BOB,
                CampaignRequest {
                    name: "elec".into(),
                    lease: b_lease,
                    value: "SECRET-B-camp".into()
                }
            ))
        )?
    };
    let a_leader = a_camp.into_inner().leader.context("A's leader key")?;
    let b_leader = b_camp.into_inner().leader.context("B's leader key")?;
    ensure!(
        a_leader.name == "elec" && a_leader.key.starts_with(b"elec/"),
        "{a_leader:?}"
    );
    ensure!(
        b_leader.name == "elec" && b_leader.key.starts_with(b"elec/"),
        "{b_leader:?}"
    );
    let stored = raw
        .kv
        .range(RangeRequest {
            key: prefixed(A_PREFIX, &a_leader.key),
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(stored.kvs.first().is_some_and(|kv| kv.value == "A-val"));
    let mut observe = (c.election)
        .observe(as_user(
            ALICE,
            LeaderRequest {
                name: "elec".into(),
            },
        ))
        .await?
        .into_inner();
    (c.election)
        .proclaim(as_user(
            BOB,
            ProclaimRequest {
                leader: Some(b_leader.clone()),
                value: "SECRET-B-proclaimed".into(),
            },
        ))
        .await?;
    (c.election)
        .proclaim(as_user(
            ALICE,
            ProclaimRequest {
                leader: Some(a_leader.clone()),
                value: "A-val2".into(),
            },
        ))
        .await?;
    let mut seen = Vec::new();
    while !seen.iter().any(|v: &Bytes| v == "A-val2") {
        let m = tokio::time::timeout(Duration::from_secs(10), observe.message())
            .await
            .context("A's observe never showed A-val2")??
            .context("observe ended")?;
        let kv = m.kv.clone().context("observe without kv")?;
        assert_clean(
            "observe",
            &format!("{m:?}"),
            std::slice::from_ref(&kv.key),
            std::slice::from_ref(&kv.value),
        )?;
        ensure!(
            kv.key == a_leader.key,
            "observe shows another leader: {m:?}"
        );
        seen.push(kv.value);
    }
    let leader = (c.election)
        .leader(as_user(
            ALICE,
            LeaderRequest {
                name: "elec".into(),
            },
        ))
        .await?
        .into_inner();
    let kv = leader.kv.clone().context("no leader")?;
    assert_clean(
        "leader",
        &format!("{leader:?}"),
        std::slice::from_ref(&kv.key),
        std::slice::from_ref(&kv.value),
    )?;
    ensure!(
        kv.value == "A-val2" && kv.key == a_leader.key,
        "A's leader: {leader:?}"
    );
    // A proclaiming with B's leader key (lease not A's) is refused; B still leads with its value.
    let p = (c.election)
        .proclaim(as_user(
            ALICE,
            ProclaimRequest {
                leader: Some(b_leader.clone()),
                value: "hijack".into(),
            },
        ))
        .await;
    ensure!(
        code_of(&p) == Some(Code::NotFound),
        "A proclaims as B: {p:?}"
    );
    let b_view = (c.election)
        .leader(as_user(
            BOB,
            LeaderRequest {
                name: "elec".into(),
            },
        ))
        .await?
        .into_inner();
    ensure!(b_view
        .kv
        .is_some_and(|kv| kv.value == "SECRET-B-proclaimed"));

    tenant_world::cluster::check_refused(&mut c).await?;
    // Nothing of the above touched B's lease or A's keys.
    let b_ttl = raw
        .lease
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: b_lease,
            keys: true,
        })
        .await?
        .into_inner();
    ensure!(
        b_ttl.ttl > 0 && b_ttl.keys.len() >= 2,
        "B's lease after all: {b_ttl:?}"
    );
    drop(kg);
    Ok(())
}
