//! The adversarial tenant-isolation suite: tenant A (alice, "/a/") attacks its namespace's
//! edges while B (bob, "/ab/", whose keys sort right next to A's) and the admin fill the raw
//! keyspace all around it, with keys before, inside, between and after both namespaces
//! (prefixes of one another, 0x00 and 0xff bytes, A's root "/a/" itself).
//!
//! Every request A makes through keygate is also made, with the same (unprefixed) keys, on a
//! dedicated etcd that holds exactly A's view; the two answers must be equal once headers are
//! dropped and revisions are translated (the shared etcd has other tenants' writes in between,
//! so the revision of every write that touches A's view is mapped to the dedicated etcd's). On
//! top of that, after every operation: no byte string of B's or of the admin's keys outside
//! "/a/" (all their values carry a marker) reaches A, no key A sees starts with "/a" (A never
//! sees its own prefix, nor B's), and after every write of A's the raw keyspace outside "/a/"
//! is byte-identical to what it was.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keygate_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keygate_proto::etcdserverpb::{
    request_op, watch_request, AlarmRequest, AuthDisableRequest, AuthEnableRequest,
    AuthRoleAddRequest, AuthRoleDeleteRequest, AuthRoleGetRequest, AuthRoleGrantPermissionRequest,
    AuthRoleListRequest, AuthRoleRevokePermissionRequest, AuthStatusRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGetRequest,
    AuthUserGrantRoleRequest, AuthUserListRequest, AuthUserRevokeRoleRequest, CompactionRequest,
    Compare, DefragmentRequest, DeleteRangeRequest, DowngradeRequest, HashKvRequest, HashRequest,
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, MemberAddRequest, MemberListRequest, MemberPromoteRequest,
    MemberRemoveRequest, MemberUpdateRequest, MoveLeaderRequest, PutRequest, RangeRequest,
    RequestOp, SnapshotRequest, StatusRequest, TxnRequest, WatchCreateRequest, WatchRequest,
    WatchResponse,
};
use keygate_proto::mvccpb::{Event, KeyValue};
use keygate_proto::v3electionpb::{CampaignRequest, LeaderRequest, ProclaimRequest};
use keygate_proto::v3lockpb::{LockRequest, UnlockRequest};
use keygate_tests::grpc_diff::{normalize, rop, Op, Reply};
use keygate_tests::tenants::{self, as_user};
use keygate_tests::{Clients, EtcdCluster, Keygate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tonic::{Code, Request, Status};

const ALICE: &str = "alice";
const BOB: &str = "bob";
const ROOT: &str = "root";
const A_PREFIX: &[u8] = b"/a/";
const B_PREFIX: &[u8] = b"/ab/";

/// Markers in every value outside A's namespace: none may ever reach A.
const SECRETS: &[&str] = &["SECRET-B", "OUTSIDE"];

/// A's keys as A sees them (and as the dedicated etcd stores them). None starts with "/a".
const A_KEYS: &[&[u8]] = &[
    b"k",
    b"\0",
    b"\x01",
    b"\xff",
    b"\xff\xff",
    b"b/k",
    b"../",
    b"/",
    b"x/1",
    b"x/2",
    b"x/3",
    b"z",
];
/// B's keys in the raw keyspace (values "SECRET-B-..").
const B_RAW: &[&[u8]] = &[
    b"/ab/",
    b"/ab/k",
    b"/ab/\0",
    b"/ab/\xff",
    b"/ab/\xff\xff",
    b"/ab/x/1",
    b"/ab/b/k",
];
/// Keys of nobody's namespace (values "OUTSIDE-.."): before, between and after /a/ and /ab/.
const OUTSIDE: &[&[u8]] = &[
    b"\0",
    b"/",
    b"/a",
    b"/a.",
    b"/a0",
    b"/a\xff",
    b"/ab",
    b"/ab0",
    b"/ab\xff",
    b"/b",
    b"/c/k",
    b"a/k",
    b"k",
    b"x/1",
    b"\xff",
    b"\xff\xff",
];
/// Start keys of A's ranges, deletes and compares.
const STARTS: &[&[u8]] = &[
    b"",
    b"\0",
    b"\x01",
    b"\xff",
    b"\xff\xff",
    b"/",
    b"b/k",
    b"/ab/k",
    b"/a/k",
    b"../",
    b"k",
    b"x/",
    b"a",
    b"z",
];
/// Arbitrary range ends (some before, some after the start keys).
const ENDS: &[&[u8]] = &[
    b"\x01",
    b"b",
    b"k",
    b"x/2",
    b"z",
    b"/ab0",
    b"\xff",
    b"\xff\xff\xff",
];

fn bs(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

fn prefixed(prefix: &[u8], key: &[u8]) -> Bytes {
    let mut k = prefix.to_vec();
    k.extend_from_slice(key);
    Bytes::from(k)
}

/// etcd's GetPrefixRangeEnd.
fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Every range_end form for `key`: single key, from-key, prefix end, and the arbitrary ends.
fn range_ends(key: &[u8]) -> Vec<Bytes> {
    let mut ends = vec![Bytes::new(), bs(b"\0"), Bytes::from(prefix_end(key))];
    ends.extend(ENDS.iter().map(|e| bs(e)));
    ends.dedup();
    ends
}

fn req<T>(user: Option<&str>, message: T) -> Request<T> {
    match user {
        Some(user) => as_user(user, message),
        None => Request::new(message),
    }
}

fn err(s: Status) -> Reply {
    Reply::Error {
        code: s.code(),
        message: s.message().to_string(),
    }
}

/// Runs `op` as `user` (or with no identity, straight at etcd).
async fn run_as(c: &mut Clients, user: Option<&str>, op: &Op) -> Reply {
    let r = match op.clone() {
        Op::Put(r) => {
            c.kv.put(req(user, r))
                .await
                .map(|r| Reply::Put(r.into_inner()))
        }
        Op::Range(r) => {
            c.kv.range(req(user, r))
                .await
                .map(|r| Reply::Range(r.into_inner()))
        }
        Op::Delete(r) => {
            (c.kv.delete_range(req(user, r)).await).map(|r| Reply::Delete(r.into_inner()))
        }
        Op::Txn(r) => {
            c.kv.txn(req(user, r))
                .await
                .map(|r| Reply::Txn(r.into_inner()))
        }
        Op::Compact(r) => {
            (c.kv.compact(req(user, r)).await).map(|r| Reply::Compact(r.into_inner()))
        }
        Op::LeaseGrant(r) => {
            (c.lease.lease_grant(req(user, r)).await).map(|r| Reply::LeaseGrant(r.into_inner()))
        }
        Op::LeaseRevoke(r) => {
            (c.lease.lease_revoke(req(user, r)).await).map(|r| Reply::LeaseRevoke(r.into_inner()))
        }
        Op::LeaseTtl(r) => (c.lease.lease_time_to_live(req(user, r)).await)
            .map(|r| Reply::LeaseTtl(r.into_inner())),
        Op::LeaseLeases => (c.lease.lease_leases(req(user, LeaseLeasesRequest {})).await)
            .map(|r| Reply::LeaseLeases(r.into_inner())),
    };
    r.unwrap_or_else(err)
}

/// Every key-value in a reply (prev_kvs and nested txns included).
fn each_kv(reply: &mut Reply, f: &mut dyn FnMut(&mut KeyValue)) {
    fn txn(t: &mut keygate_proto::etcdserverpb::TxnResponse, f: &mut dyn FnMut(&mut KeyValue)) {
        use keygate_proto::etcdserverpb::response_op::Response as R;
        t.header = None;
        for r in &mut t.responses {
            match &mut r.response {
                Some(R::ResponseRange(r)) => {
                    r.header = None;
                    r.kvs.iter_mut().for_each(&mut *f);
                }
                Some(R::ResponsePut(r)) => {
                    r.header = None;
                    r.prev_kv.iter_mut().for_each(&mut *f);
                }
                Some(R::ResponseDeleteRange(r)) => {
                    r.header = None;
                    r.prev_kvs.iter_mut().for_each(&mut *f);
                }
                Some(R::ResponseTxn(t)) => txn(t, f),
                None => {}
            }
        }
    }
    match reply {
        Reply::Range(r) => {
            r.header = None;
            r.kvs.iter_mut().for_each(f);
        }
        Reply::Put(r) => {
            r.header = None;
            r.prev_kv.iter_mut().for_each(f);
        }
        Reply::Delete(r) => {
            r.header = None;
            r.prev_kvs.iter_mut().for_each(f);
        }
        Reply::Txn(t) => txn(t, f),
        _ => {}
    }
}

/// The invariant over anything A received: no marker of a value outside A's namespace in any
/// byte field (nor in the Debug text, as an extra net), and no key starting with "/a".
fn assert_clean(what: &str, debug: &str, keys: &[Bytes], values: &[Bytes]) -> Result<()> {
    for secret in SECRETS {
        ensure!(
            !debug.contains(secret),
            "{what}: A received {secret}: {debug}"
        );
        for v in keys.iter().chain(values) {
            ensure!(
                !v.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{what}: A received a byte string with {secret}: {v:?}"
            );
        }
    }
    for k in keys {
        ensure!(
            !k.starts_with(b"/a"),
            "{what}: A received a key starting with /a: {k:?}"
        );
        ensure!(
            !B_RAW.contains(&k.as_ref()),
            "{what}: A received B's raw key {k:?}"
        );
    }
    Ok(())
}

fn check_reply(what: &str, reply: &Reply) -> Result<()> {
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut r = reply.clone();
    each_kv(&mut r, &mut |kv| {
        keys.push(kv.key.clone());
        values.push(kv.value.clone());
    });
    if let Reply::LeaseTtl(t) = reply {
        keys.extend(t.keys.iter().map(|k| bs(k)));
    }
    assert_clean(what, &format!("{reply:?}"), &keys, &values)
}

/// keygate + the shared etcd (A, B and the admin) + the dedicated etcd (A's view alone).
struct World {
    _etcd: EtcdCluster,
    _dedicated: EtcdCluster,
    kg: Keygate,
    /// keygate.
    gw: Clients,
    /// The shared etcd directly: the admin's raw view.
    raw: Clients,
    /// The dedicated etcd, holding A's keys unprefixed.
    ded: Clients,
    /// Shared revision -> dedicated revision, for every write that touched A's view.
    revs: BTreeMap<i64, i64>,
    /// The dedicated etcd's latest revision.
    ded_max: i64,
    /// How many A operations were checked.
    checked: usize,
    mismatches: Vec<String>,
}

fn header_rev(r: &Reply) -> Option<i64> {
    r.revision()
}

impl World {
    async fn start() -> Result<World> {
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
    async fn plant(&mut self) -> Result<()> {
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
    async fn root_put(&mut self, key: &[u8], value: &[u8]) -> Result<i64> {
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
    async fn a_put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
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
    fn record(&mut self, shared: i64, ded: i64) {
        if ded > self.ded_max {
            self.ded_max = ded;
            self.revs.insert(shared, ded);
        }
    }

    /// Shared revisions of writes that touched A's view (for filters and past reads).
    fn a_revs(&self) -> Vec<i64> {
        self.revs.keys().copied().filter(|r| *r > 1).collect()
    }

    fn ded_rev(&self, shared: i64) -> i64 {
        if shared <= 0 {
            return shared;
        }
        self.revs.get(&shared).copied().unwrap_or(-shared)
    }

    /// Everything in the raw keyspace outside "/a/", byte for byte.
    async fn outside(&mut self) -> Result<Vec<KeyValue>> {
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
    async fn same(&mut self, op: Op, ded_op: Op, write: bool) -> Result<Reply> {
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

    fn check(&self) -> Result<()> {
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

/// A random Range over `key`..`end` with every option, for A and translated for the dedicated.
fn random_range(
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

#[tokio::test(flavor = "multi_thread")]
async fn ranges_deletes_and_txns_stay_in_the_namespace() -> Result<()> {
    let mut w = World::start().await?;
    let mut rng = StdRng::seed_from_u64(0x006b_6579_6761_7465);

    // Ranges: every start key x every range_end form, plain and with random options.
    let mut ranges = 0;
    for key in STARTS {
        let key = bs(key);
        for end in range_ends(&key) {
            let plain = RangeRequest {
                key: key.clone(),
                range_end: end.clone(),
                ..Default::default()
            };
            w.same(Op::Range(plain.clone()), Op::Range(plain), false)
                .await?;
            for _ in 0..5 {
                let (a, d) = random_range(&mut rng, &w, &key, &end);
                w.same(Op::Range(a), Op::Range(d), false).await?;
            }
            // Sort by every target in both orders.
            let (order, target) = (rng.random_range(1..3), rng.random_range(0..5));
            let sorted = RangeRequest {
                key: key.clone(),
                range_end: end.clone(),
                sort_order: order,
                sort_target: target,
                limit: 3,
                ..Default::default()
            };
            w.same(Op::Range(sorted.clone()), Op::Range(sorted), false)
                .await?;
            ranges += 7;
        }
    }
    for order in [SortOrder::None, SortOrder::Ascend, SortOrder::Descend] {
        for target in [
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value,
        ] {
            let r = RangeRequest {
                key: bs(b"\0"),
                range_end: bs(b"\0"),
                sort_order: order as i32,
                sort_target: target as i32,
                ..Default::default()
            };
            w.same(Op::Range(r.clone()), Op::Range(r), false).await?;
            ranges += 1;
        }
    }
    w.check()?;

    // Deletes: every start key x every range_end form, with prev_kv; what went is put back.
    let mut deletes = 0;
    for key in STARTS {
        let key = bs(key);
        for end in range_ends(&key) {
            let del = DeleteRangeRequest {
                key: key.clone(),
                range_end: end.clone(),
                prev_kv: true,
            };
            let d = w
                .same(Op::Delete(del.clone()), Op::Delete(del), true)
                .await?;
            deletes += 1;
            if let Reply::Delete(d) = d {
                for kv in d.prev_kvs {
                    w.a_put(&kv.key, &kv.value).await?;
                }
            }
        }
    }
    w.check()?;

    // Txns: random compares over every form and target, both branches with every op,
    // nested txns.
    let (mut txns, mut skipped) = (0, 0);
    while txns < 300 {
        let (a, d) = random_txn(&mut rng, &w, 0);
        // See `from_key_delete_and_put_in_one_txn_match_etcd`: keygate refuses what etcd
        // accepts, and the two keyspaces would part ways.
        if from_key_delete_with_put(&a) {
            skipped += 1;
            continue;
        }
        w.same(Op::Txn(a), Op::Txn(d), true).await?;
        txns += 1;
    }
    // A compare that would be true for B's key, were A's key not prefixed: false for A.
    for key in [&b"/ab/k"[..], b"k", b"b/k", b"x/1"] {
        let t = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Greater as i32,
                target: CompareTarget::Version as i32,
                key: bs(key),
                range_end: Bytes::new(),
                target_union: Some(TargetUnion::Version(0)),
            }],
            success: vec![rop(request_op::Request::RequestRange(RangeRequest {
                key: bs(b"\0"),
                range_end: bs(b"\0"),
                ..Default::default()
            }))],
            failure: vec![],
        };
        w.same(Op::Txn(t.clone()), Op::Txn(t), true).await?;
    }
    w.check()?;
    eprintln!(
        "checked {} A ops ({ranges} ranges, {deletes} deletes, {txns}+4 txns; {skipped} txns \
         with a from-key delete and a put skipped)",
        w.checked
    );
    Ok(())
}

/// Whether `t` has a DeleteRange with range_end "\0" and a Put anywhere in it.
fn from_key_delete_with_put(t: &TxnRequest) -> bool {
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

fn random_compare(rng: &mut StdRng, w: &World) -> (Compare, Compare) {
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

fn random_op(rng: &mut StdRng, w: &World, depth: usize) -> (RequestOp, RequestOp) {
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

fn random_txn(rng: &mut StdRng, w: &World, depth: usize) -> (TxnRequest, TxnRequest) {
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

/// A watch stream opened as `user` (or with no identity).
struct WatchStream {
    tx: mpsc::Sender<WatchRequest>,
    rx: tonic::Streaming<WatchResponse>,
}

impl WatchStream {
    /// Opens a stream with its first watch (etcd answers the stream's headers only with its
    /// first message); returns the stream and that watch's ID.
    async fn open(
        c: &mut Clients,
        user: Option<&str>,
        first: WatchCreateRequest,
    ) -> Result<(WatchStream, i64)> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(create_request(first)).await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let rx = tokio::time::timeout(Duration::from_secs(10), c.watch.watch(req(user, stream)))
            .await??
            .into_inner();
        let mut s = WatchStream { tx, rx };
        let id = s.created().await?;
        Ok((s, id))
    }

    async fn created(&mut self) -> Result<i64> {
        let r = tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await??
            .context("watch stream ended")?;
        ensure!(r.created, "not a created response: {r:?}");
        Ok(r.watch_id)
    }

    /// Creates one watch; returns its ID.
    async fn create(&mut self, create: WatchCreateRequest) -> Result<i64> {
        self.tx.send(create_request(create)).await?;
        self.created().await
    }
}

fn create_request(create: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watches_see_only_the_namespace() -> Result<()> {
    let mut w = World::start().await?;
    let past = w.a_revs()[3];
    let creates = [
        (bs(b"x/"), bs(b"x0"), 0, false),
        (bs(b"k"), bs(b"\0"), 0, true),
        (Bytes::new(), bs(b"\0"), 0, false),
        (bs(b"\0"), bs(b"\0"), past, true),
        (Bytes::new(), bs(b"\0"), past, false),
        (bs(b"k"), Bytes::new(), 0, true),
        (Bytes::new(), Bytes::new(), 0, false),
        (bs(b"\xff"), bs(b"\xff\xff\xff"), 0, false),
    ];
    let mut a_ids = Vec::new();
    let mut d_ids = Vec::new();
    let mut streams = None;
    for (key, end, start, prev_kv) in &creates {
        let c = WatchCreateRequest {
            key: key.clone(),
            range_end: end.clone(),
            start_revision: *start,
            prev_kv: *prev_kv,
            ..Default::default()
        };
        let d = WatchCreateRequest {
            start_revision: w.ded_rev(*start),
            ..c.clone()
        };
        match &mut streams {
            None => {
                let (a_stream, a_id) = WatchStream::open(&mut w.gw, Some(ALICE), c).await?;
                let (d_stream, d_id) = WatchStream::open(&mut w.ded, None, d).await?;
                a_ids.push(a_id);
                d_ids.push(d_id);
                streams = Some((a_stream, d_stream));
            }
            Some((a_stream, d_stream)) => {
                a_ids.push(a_stream.create(c).await?);
                d_ids.push(d_stream.create(d).await?);
            }
        }
    }
    let (mut a_stream, mut d_stream) = streams.context("no watch")?;
    // Writes all over the raw keyspace: the admin's, B's through keygate, and A's (through
    // keygate, mirrored on the dedicated etcd).
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..60 {
        match rng.random_range(0..4) {
            0 => {
                let k = B_RAW[rng.random_range(0..B_RAW.len())];
                w.root_put(k, format!("SECRET-B-w{i}").as_bytes()).await?;
            }
            1 => {
                let k = OUTSIDE[rng.random_range(0..OUTSIDE.len())];
                w.root_put(k, format!("OUTSIDE-w{i}").as_bytes()).await?;
            }
            2 => {
                let k = A_KEYS[rng.random_range(0..A_KEYS.len())];
                (w.gw.kv)
                    .put(as_user(
                        BOB,
                        PutRequest {
                            key: bs(k),
                            value: bs(format!("SECRET-B-bob-w{i}").as_bytes()),
                            ..Default::default()
                        },
                    ))
                    .await?;
                (w.gw.kv)
                    .delete_range(as_user(
                        BOB,
                        DeleteRangeRequest {
                            key: bs(b"x/"),
                            range_end: bs(b"x0"),
                            ..Default::default()
                        },
                    ))
                    .await?;
            }
            _ => {
                let k = bs(A_KEYS[rng.random_range(0..A_KEYS.len())]);
                let op = if rng.random_bool(0.7) {
                    Op::Put(PutRequest {
                        key: k,
                        value: bs(format!("a-w{i}").as_bytes()),
                        ..Default::default()
                    })
                } else {
                    Op::Delete(DeleteRangeRequest {
                        key: k,
                        ..Default::default()
                    })
                };
                w.same(op.clone(), op, true).await?;
            }
        }
    }
    // The admin writes A's root key "/a/", which no watch of A's covers (A cannot name it).
    w.root_put(b"/a/", b"A-ROOT-2").await?;
    // Sentinels, last: every watch's range holds one of them.
    for k in [&b"x/end"[..], b"k", b"\0", b"\xff\xfe"] {
        let op = Op::Put(PutRequest {
            key: bs(k),
            value: bs(b"END"),
            ..Default::default()
        });
        w.same(op.clone(), op, true).await?;
    }
    let a_events = collect(&mut a_stream, &a_ids, &w).await?;
    let d_events = collect(&mut d_stream, &d_ids, &w).await?;
    let mut total = 0;
    for (i, (mut a, d)) in a_events.into_iter().zip(d_events).enumerate() {
        for e in &mut a {
            for kv in e.kv.iter_mut().chain(e.prev_kv.iter_mut()) {
                for r in [&mut kv.create_revision, &mut kv.mod_revision] {
                    *r = w.ded_rev(*r);
                }
            }
        }
        total += a.len();
        ensure!(
            a == d,
            "watch {:?}: A's events differ from a dedicated etcd's\n  keygate:   {a:?}\n  dedicated: {d:?}",
            creates[i]
        );
    }
    ensure!(total > 20, "too few events: {total}");
    w.check()?;
    eprintln!("{} watches, {total} events compared", creates.len());
    Ok(())
}

/// Reads events for `ids` until every watch has seen an "END" value and the stream has been
/// quiet for a moment; checks every response against the invariant.
async fn collect(s: &mut WatchStream, ids: &[i64], w: &World) -> Result<Vec<Vec<Event>>> {
    let mut events: Vec<Vec<Event>> = vec![Vec::new(); ids.len()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let quiet = Duration::from_millis(500);
    loop {
        let r = match tokio::time::timeout(quiet, s.rx.message()).await {
            Ok(r) => r?.context("watch stream ended")?,
            Err(_) => {
                let done = events.iter().all(|e| {
                    e.iter()
                        .any(|e| e.kv.as_ref().is_some_and(|kv| kv.value == "END"))
                });
                if done || tokio::time::Instant::now() > deadline {
                    return Ok(events);
                }
                continue;
            }
        };
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for e in &r.events {
            for kv in e.kv.iter().chain(e.prev_kv.iter()) {
                keys.push(kv.key.clone());
                values.push(kv.value.clone());
            }
        }
        assert_clean("watch response", &format!("{r:?}"), &keys, &values)?;
        ensure!(!r.canceled, "watch canceled: {r:?} ({})", w.kg.log_tail(20));
        let i = ids
            .iter()
            .position(|id| *id == r.watch_id)
            .with_context(|| format!("unknown watch id in {r:?}"))?;
        events[i].extend(r.events);
    }
}

fn code_of<T>(r: &Result<T, Status>) -> Option<Code> {
    r.as_ref().err().map(Status::code)
}

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

    // Cluster-wide RPCs are refused inside a namespace; Status and MemberList are not.
    let denied = cluster_wide_codes(&mut c, ALICE).await;
    for (rpc, r) in &denied {
        ensure!(
            r.as_ref().err().map(|s| (s.code(), s.message()))
                == Some((Code::PermissionDenied, "etcdserver: permission denied")),
            "{rpc} as alice: {r:?}"
        );
    }
    (c.maintenance)
        .status(as_user(ALICE, StatusRequest {}))
        .await?;
    (c.cluster)
        .member_list(as_user(ALICE, MemberListRequest { linearizable: true }))
        .await?;
    // mallory has a token and no tenant: denied everything.
    let denied = cluster_wide_codes(&mut c, "mallory").await;
    let mut m = Vec::new();
    m.push((
        "Status",
        (c.maintenance)
            .status(as_user("mallory", StatusRequest {}))
            .await
            .map(drop),
    ));
    m.push((
        "MemberList",
        (c.cluster)
            .member_list(as_user("mallory", MemberListRequest::default()))
            .await
            .map(drop),
    ));
    m.push((
        "Range",
        (c.kv)
            .range(as_user(
                "mallory",
                RangeRequest {
                    key: "k".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
    ));
    m.push((
        "Put",
        (c.kv)
            .put(as_user(
                "mallory",
                PutRequest {
                    key: "k".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
    ));
    m.push((
        "LeaseGrant",
        (c.lease)
            .lease_grant(as_user("mallory", LeaseGrantRequest { ttl: 5, id: 0 }))
            .await
            .map(drop),
    ));
    m.push((
        "Lock",
        (c.lock)
            .lock(as_user(
                "mallory",
                LockRequest {
                    name: "n".into(),
                    lease: 0,
                },
            ))
            .await
            .map(drop),
    ));
    let watch = async {
        let first = WatchCreateRequest {
            key: "k".into(),
            ..Default::default()
        };
        WatchStream::open(&mut c.clone(), Some("mallory"), first)
            .await
            .map(|(_, id)| id)
    }
    .await;
    ensure!(
        !matches!(watch, Ok(id) if id >= 0),
        "mallory's watch: {watch:?}"
    );
    for (rpc, r) in denied.iter().chain(&m) {
        ensure!(
            code_of(r) == Some(Code::PermissionDenied),
            "{rpc} as mallory: {r:?}"
        );
    }
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

/// Every cluster-wide RPC, made as `user`; the results with their payload dropped.
async fn cluster_wide_codes(
    c: &mut Clients,
    user: &str,
) -> Vec<(&'static str, Result<(), Status>)> {
    let u = |m| as_user(user, m);
    let mut out: Vec<(&'static str, Result<(), Status>)> = Vec::new();
    out.push((
        "Compact",
        c.kv.compact(u(CompactionRequest {
            revision: 1,
            physical: false,
        }))
        .await
        .map(drop),
    ));
    out.push((
        "LeaseLeases",
        c.lease
            .lease_leases(as_user(user, LeaseLeasesRequest {}))
            .await
            .map(drop),
    ));
    let snap = match c
        .maintenance
        .snapshot(as_user(user, SnapshotRequest {}))
        .await
    {
        Ok(s) => s.into_inner().message().await.map(drop),
        Err(e) => Err(e),
    };
    out.push(("Snapshot", snap));
    out.push((
        "Defragment",
        c.maintenance
            .defragment(as_user(user, DefragmentRequest {}))
            .await
            .map(drop),
    ));
    out.push((
        "Hash",
        c.maintenance
            .hash(as_user(user, HashRequest {}))
            .await
            .map(drop),
    ));
    out.push((
        "HashKV",
        c.maintenance
            .hash_kv(as_user(user, HashKvRequest { revision: 0 }))
            .await
            .map(drop),
    ));
    out.push((
        "MoveLeader",
        c.maintenance
            .move_leader(as_user(user, MoveLeaderRequest { target_id: 1 }))
            .await
            .map(drop),
    ));
    out.push((
        "Alarm",
        c.maintenance
            .alarm(as_user(user, AlarmRequest::default()))
            .await
            .map(drop),
    ));
    out.push((
        "Downgrade",
        c.maintenance
            .downgrade(as_user(user, DowngradeRequest::default()))
            .await
            .map(drop),
    ));
    out.push((
        "MemberAdd",
        c.cluster
            .member_add(as_user(
                user,
                MemberAddRequest {
                    peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                    is_learner: true,
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "MemberRemove",
        c.cluster
            .member_remove(as_user(user, MemberRemoveRequest { id: 1 }))
            .await
            .map(drop),
    ));
    out.push((
        "MemberUpdate",
        c.cluster
            .member_update(as_user(
                user,
                MemberUpdateRequest {
                    id: 1,
                    peer_ur_ls: vec![],
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "MemberPromote",
        c.cluster
            .member_promote(as_user(user, MemberPromoteRequest { id: 1 }))
            .await
            .map(drop),
    ));
    out.push((
        "AuthEnable",
        c.auth
            .auth_enable(as_user(user, AuthEnableRequest {}))
            .await
            .map(drop),
    ));
    out.push((
        "AuthDisable",
        c.auth
            .auth_disable(as_user(user, AuthDisableRequest {}))
            .await
            .map(drop),
    ));
    out.push((
        "AuthStatus",
        c.auth
            .auth_status(as_user(user, AuthStatusRequest {}))
            .await
            .map(drop),
    ));
    out.push((
        "UserAdd",
        c.auth
            .user_add(as_user(
                user,
                AuthUserAddRequest {
                    name: "u".into(),
                    password: "p".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "UserGet",
        c.auth
            .user_get(as_user(
                user,
                AuthUserGetRequest {
                    name: "root".into(),
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "UserList",
        c.auth
            .user_list(as_user(user, AuthUserListRequest {}))
            .await
            .map(drop),
    ));
    out.push((
        "UserDelete",
        c.auth
            .user_delete(as_user(user, AuthUserDeleteRequest { name: "u".into() }))
            .await
            .map(drop),
    ));
    out.push((
        "UserChangePassword",
        c.auth
            .user_change_password(as_user(
                user,
                AuthUserChangePasswordRequest {
                    name: "u".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "UserGrantRole",
        c.auth
            .user_grant_role(as_user(
                user,
                AuthUserGrantRoleRequest {
                    user: "u".into(),
                    role: "r".into(),
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "UserRevokeRole",
        c.auth
            .user_revoke_role(as_user(
                user,
                AuthUserRevokeRoleRequest {
                    name: "u".into(),
                    role: "r".into(),
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "RoleAdd",
        c.auth
            .role_add(as_user(user, AuthRoleAddRequest { name: "r".into() }))
            .await
            .map(drop),
    ));
    out.push((
        "RoleGet",
        c.auth
            .role_get(as_user(user, AuthRoleGetRequest { role: "r".into() }))
            .await
            .map(drop),
    ));
    out.push((
        "RoleList",
        c.auth
            .role_list(as_user(user, AuthRoleListRequest {}))
            .await
            .map(drop),
    ));
    out.push((
        "RoleDelete",
        c.auth
            .role_delete(as_user(user, AuthRoleDeleteRequest { role: "r".into() }))
            .await
            .map(drop),
    ));
    out.push((
        "RoleGrantPermission",
        c.auth
            .role_grant_permission(as_user(
                user,
                AuthRoleGrantPermissionRequest {
                    name: "r".into(),
                    perm: None,
                },
            ))
            .await
            .map(drop),
    ));
    out.push((
        "RoleRevokePermission",
        c.auth
            .role_revoke_permission(as_user(
                user,
                AuthRoleRevokePermissionRequest {
                    role: "r".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
    ));
    out
}

/// A Txn compare on the empty key: etcd refuses it ("key is not provided"), as it refuses the
/// empty key in Range, Put and DeleteRange; keygate rewrites it to the namespace's root key
/// ("/a/") instead, so a tenant's txn succeeds where a dedicated etcd's fails, and compares a
/// key the tenant can name nowhere else. Not an escape from the namespace, but a difference
/// from etcd; ignored until keygate passes the empty compare key through unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn compare_on_the_empty_key_matches_etcd() -> Result<()> {
    let mut w = World::start().await?;
    for end in [Bytes::new(), bs(b"\0"), bs(b"k")] {
        let t = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Version as i32,
                key: Bytes::new(),
                range_end: end,
                target_union: Some(TargetUnion::Version(0)),
            }],
            ..Default::default()
        };
        w.same(Op::Txn(t.clone()), Op::Txn(t), true).await?;
    }
    w.check()
}

/// etcd's duplicate-key check for a Txn sees a from-key DeleteRange (range_end "\0") as the
/// interval [key, "\0"), which holds no key, so it accepts a Put of a later key in the same
/// txn (and the delete then removes every key from `key` on, the Put's included). keygate
/// rewrites the end to the end of the namespace first, so etcd sees a real interval holding
/// the Put's key and refuses the txn: "etcdserver: duplicate key given in txn request", where a
/// dedicated etcd succeeds. Ignored until keygate answers as etcd does.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "keygate bug: a txn with a from-key delete and a put is refused as a duplicate key"]
async fn from_key_delete_and_put_in_one_txn_match_etcd() -> Result<()> {
    use request_op::Request as R;
    let mut w = World::start().await?;
    let t = TxnRequest {
        success: vec![
            rop(R::RequestDeleteRange(DeleteRangeRequest {
                key: bs(b"a"),
                range_end: bs(b"\0"),
                prev_kv: false,
            })),
            rop(R::RequestPut(PutRequest {
                key: bs(b"k"),
                value: bs(b"v"),
                ..Default::default()
            })),
        ],
        ..Default::default()
    };
    w.same(Op::Txn(t.clone()), Op::Txn(t), true).await?;
    w.check()
}
