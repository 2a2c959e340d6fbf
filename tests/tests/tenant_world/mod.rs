//! What the tenant-isolation suites share: A's, B's and nobody's keys, the range forms, running an
//! operation as a user, the invariant checks, the `World` of keygate + shared etcd + dedicated
//! etcd, the random generators, watch streams and the cluster-wide RPCs.

#![allow(dead_code)]

pub mod check;
pub mod cluster;
pub mod generate;
pub mod watch;
pub mod world;

use bytes::Bytes;
use keygate_proto::etcdserverpb::LeaseLeasesRequest;
use keygate_tests::grpc_diff::{Op, Reply};
use keygate_tests::tenants::as_user;
use keygate_tests::Clients;
use tonic::{Code, Request, Status};

pub const ALICE: &str = "alice";
pub const BOB: &str = "bob";
pub const ROOT: &str = "root";
pub const A_PREFIX: &[u8] = b"/a/";
pub const B_PREFIX: &[u8] = b"/ab/";

/// Markers in every value outside A's namespace: none may ever reach A.
pub const SECRETS: &[&str] = &["SECRET-B", "OUTSIDE"];

/// A's keys as A sees them (and as the dedicated etcd stores them). None starts with "/a".
pub const A_KEYS: &[&[u8]] = &[
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
pub const B_RAW: &[&[u8]] = &[
    b"/ab/",
    b"/ab/k",
    b"/ab/\0",
    b"/ab/\xff",
    b"/ab/\xff\xff",
    b"/ab/x/1",
    b"/ab/b/k",
];
/// Keys of nobody's namespace (values "OUTSIDE-.."): before, between and after /a/ and /ab/.
pub const OUTSIDE: &[&[u8]] = &[
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
pub const STARTS: &[&[u8]] = &[
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
pub const ENDS: &[&[u8]] = &[
    b"\x01",
    b"b",
    b"k",
    b"x/2",
    b"z",
    b"/ab0",
    b"\xff",
    b"\xff\xff\xff",
];

pub fn bs(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

pub fn prefixed(prefix: &[u8], key: &[u8]) -> Bytes {
    let mut k = prefix.to_vec();
    k.extend_from_slice(key);
    Bytes::from(k)
}

/// etcd's GetPrefixRangeEnd.
pub fn prefix_end(key: &[u8]) -> Vec<u8> {
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
pub fn range_ends(key: &[u8]) -> Vec<Bytes> {
    let mut ends = vec![Bytes::new(), bs(b"\0"), Bytes::from(prefix_end(key))];
    ends.extend(ENDS.iter().map(|e| bs(e)));
    ends.dedup();
    ends
}

pub fn req<T>(user: Option<&str>, message: T) -> Request<T> {
    match user {
        Some(user) => as_user(user, message),
        None => Request::new(message),
    }
}

pub fn err(s: Status) -> Reply {
    Reply::Error {
        code: s.code(),
        message: s.message().to_string(),
    }
}

/// Runs `op` as `user` (or with no identity, straight at etcd).
pub async fn run_as(c: &mut Clients, user: Option<&str>, op: &Op) -> Reply {
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

pub fn code_of<T>(r: &Result<T, Status>) -> Option<Code> {
    r.as_ref().err().map(Status::code)
}
