//! keygate + the shared etcd (A, B and the admin) + the dedicated etcd (A's view alone): the
//! admin's planting, the revision map, and every A operation run on both and compared.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};
use keygate_proto::etcdserverpb::{PutRequest, RangeRequest};
use keygate_proto::mvccpb::KeyValue;
use keygate_tests::grpc_diff::{normalize, Op, Reply};
use keygate_tests::tenants::{self, as_user};
use keygate_tests::{Clients, EtcdCluster, Keygate};

use super::check::{check_reply, each_kv};
use super::{bs, prefixed, run_as, ALICE, A_KEYS, A_PREFIX, BOB, B_RAW, OUTSIDE, ROOT};

/// keygate + the shared etcd (A, B and the admin) + the dedicated etcd (A's view alone).
pub struct World {
    pub _etcd: EtcdCluster,
    pub _dedicated: EtcdCluster,
    pub kg: Keygate,
    /// keygate.
    pub gw: Clients,
    /// The shared etcd directly: the admin's raw view.
    pub raw: Clients,
    /// The dedicated etcd, holding A's keys unprefixed.
    pub ded: Clients,
    /// Shared revision -> dedicated revision, for every write that touched A's view.
    pub revs: BTreeMap<i64, i64>,
    /// The dedicated etcd's latest revision.
    pub ded_max: i64,
    /// How many A operations were checked.
    pub checked: usize,
    pub mismatches: Vec<String>,
}

pub fn header_rev(r: &Reply) -> Option<i64> {
    r.revision()
}

impl World {
    pub async fn start() -> Result<World> {
        let (etcd, dedicated) = tokio::try_join!(EtcdCluster::start(1), EtcdCluster::start(1))?;
        let kg = tenants::start(&etcd, "", &[]).await?;
        let gw = kg.clients().await?;
        let raw = etcd.clients(0).await?;
        let ded = dedicated.clients(0).await?;
        let mut w = World {
            _etcd: etcd,
            _dedicated: dedicated,
            kg,
            gw,
            raw,
            ded,
            revs: BTreeMap::new(),
            ded_max: 1,
            checked: 0,
            mismatches: Vec::new(),
        };
        w.revs.insert(1, 1);
        w.plant().await?;
        Ok(w)
    }

    /// The admin plants keys everywhere, interleaving A's (mirrored on the dedicated etcd) with
    /// B's and nobody's, so that shared and dedicated revisions diverge.
    pub async fn plant(&mut self) -> Result<()> {
        // A's root key itself: "" for A, which A can never name (etcd refuses an empty key).
        self.root_put(b"/a/", b"A-ROOT").await?;
        for round in 0..2 {
            for (i, k) in A_KEYS.iter().enumerate() {
                if round == 1 && i % 3 != 0 {
                    continue;
                }
                self.a_put(k, format!("a-{i}-{round}").as_bytes()).await?;
                let b = B_RAW[i % B_RAW.len()];
                self.root_put(b, format!("SECRET-B-{i}-{round}").as_bytes())
                    .await?;
                let o = OUTSIDE[i % OUTSIDE.len()];
                self.root_put(o, format!("OUTSIDE-{i}-{round}").as_bytes())
                    .await?;
            }
        }
        for (i, b) in B_RAW.iter().enumerate() {
            self.root_put(b, format!("SECRET-B-{i}").as_bytes()).await?;
        }
        for (i, o) in OUTSIDE.iter().enumerate() {
            self.root_put(o, format!("OUTSIDE-{i}").as_bytes()).await?;
        }
        // B writes through keygate too.
        for (i, k) in [&b"k"[..], b"\0", b"\xff", b"x/2", b"z"].iter().enumerate() {
            let r = (self.gw.kv)
                .put(as_user(
                    BOB,
                    PutRequest {
                        key: bs(k),
                        value: bs(format!("SECRET-B-bob-{i}").as_bytes()),
                        ..Default::default()
                    },
                ))
                .await?;
            ensure!(r.get_ref().header.is_some());
        }
        Ok(())
    }

    /// The admin writes a raw key through keygate.
    pub async fn root_put(&mut self, key: &[u8], value: &[u8]) -> Result<i64> {
        let r = (self.gw.kv)
            .put(as_user(
                ROOT,
                PutRequest {
                    key: bs(key),
                    value: bs(value),
                    ..Default::default()
                },
            ))
            .await
            .with_context(|| format!("root put {key:?}"))?;
        Ok(r.into_inner().header.map_or(0, |h| h.revision))
    }

    /// The admin writes A's `key` (as "/a/"+key), mirrored on the dedicated etcd.
    pub async fn a_put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let shared = self.root_put(&prefixed(A_PREFIX, key), value).await?;
        let ded = (self.ded.kv)
            .put(PutRequest {
                key: bs(key),
                value: bs(value),
                ..Default::default()
            })
            .await?
            .into_inner()
            .header
            .map_or(0, |h| h.revision);
        self.record(shared, ded);
        Ok(())
    }

    /// Maps the shared revision of a write to the dedicated one, if the write changed A's view
    /// (the dedicated etcd's revision moved; a no-op leaves the revision of someone else's
    /// write in the header, which must not become a filter value).
    pub fn record(&mut self, shared: i64, ded: i64) {
        if ded > self.ded_max {
            self.ded_max = ded;
            self.revs.insert(shared, ded);
        }
    }

    /// Shared revisions of writes that touched A's view (for filters and past reads).
    pub fn a_revs(&self) -> Vec<i64> {
        self.revs.keys().copied().filter(|r| *r > 1).collect()
    }

    pub fn ded_rev(&self, shared: i64) -> i64 {
        if shared <= 0 {
            return shared;
        }
        self.revs.get(&shared).copied().unwrap_or(-shared)
    }

    /// Everything in the raw keyspace outside "/a/", byte for byte.
    pub async fn outside(&mut self) -> Result<Vec<KeyValue>> {
        let r = (self.raw.kv)
            .range(RangeRequest {
                key: bs(b"\0"),
                range_end: bs(b"\0"),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(r.kvs
            .into_iter()
            .filter(|kv| !kv.key.starts_with(A_PREFIX))
            .collect())
    }

    /// Runs `op` as A through keygate and, translated, on the dedicated etcd; records the
    /// revisions of writes; checks the invariants and the equality of both answers.
    pub async fn same(&mut self, op: Op, ded_op: Op, write: bool) -> Result<Reply> {
        let before = if write {
            Some(self.outside().await?)
        } else {
            None
        };
        let a = run_as(&mut self.gw, Some(ALICE), &op).await;
        let d = run_as(&mut self.ded, None, &ded_op).await;
        self.checked += 1;
        let what = format!("A op #{} {op:?}", self.checked);
        check_reply(&what, &a)?;
        if let Some(before) = before {
            let after = self.outside().await?;
            ensure!(
                before == after,
                "{what}: the keyspace outside /a/ changed:\n before {before:?}\n after {after:?}"
            );
            if let (Some(s), Some(dr)) = (header_rev(&a), header_rev(&d)) {
                self.record(s, dr);
            }
        }
        let mut a_n = normalize(a);
        let mut d_n = normalize(d.clone());
        let revs = self.revs.clone();
        each_kv(&mut a_n, &mut |kv| {
            for r in [&mut kv.create_revision, &mut kv.mod_revision] {
                *r = revs.get(r).copied().unwrap_or(-*r);
            }
        });
        each_kv(&mut d_n, &mut |_| {});
        if a_n != d_n {
            self.mismatches.push(format!(
                "{what}\n  dedicated: {d_n:?}\n  keygate:   {a_n:?}"
            ));
        }
        Ok(d)
    }

    pub fn check(&self) -> Result<()> {
        if self.mismatches.is_empty() {
            return Ok(());
        }
        bail!(
            "{} of {} A ops differ from a dedicated etcd:\n{}\n{}",
            self.mismatches.len(),
            self.checked,
            self.mismatches
                .iter()
                .take(15)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            self.kg.log_tail(30)
        )
    }
}
