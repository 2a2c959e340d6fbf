//! Phases 5 and 7, rewrite and strip: a tenant namespace is a key prefix that keygate adds to
//! every key and range end on the way in and removes from every key on the way out, so that a
//! tenant sees its own keyspace rooted at "/" and can never reach a key outside it.
//!
//! Ranges keep their meaning inside the namespace: a single key stays one key, the from-key
//! form ("\0") ends at the end of the namespace, and any other end is prefixed like the key.
//! Leases are not keys, so a tenant's leases carry the namespace's tag in their ID's high bits
//! (keygate chooses the ID when the tenant grants one); a lease without the tenant's tag is,
//! for that tenant, a lease that does not exist.

mod requests;
mod responses;
#[cfg(test)]
mod tests;

pub use requests::Confine;
pub use responses::Strip;

use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use tonic::Status;

/// etcd's answer for a lease it does not have.
pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

/// One tenant's key prefix, shared by every request in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace(Arc<Inner>);

#[derive(Debug, PartialEq, Eq)]
struct Inner {
    prefix: Bytes,
    /// The first key after every key of the namespace ("\0": no such key).
    end: Bytes,
    /// Bits 32..62 of every lease ID granted in the namespace.
    tag: i64,
}

impl Namespace {
    /// The namespace of `prefix`; `None` for the empty prefix, which confines nothing.
    pub fn new(prefix: &[u8]) -> Option<Namespace> {
        if prefix.is_empty() {
            return None;
        }
        Some(Namespace(Arc::new(Inner {
            prefix: Bytes::copy_from_slice(prefix),
            end: Bytes::from(prefix_end(prefix)),
            tag: lease_tag(prefix),
        })))
    }

    /// A namespace inside this one (plugins later in the chain nest theirs in earlier ones').
    pub fn nest(&self, inner: &Namespace) -> Namespace {
        let mut prefix = self.prefix().to_vec();
        prefix.extend_from_slice(inner.prefix());
        // Both prefixes are non-empty, so their concatenation is too.
        Namespace::new(&prefix).unwrap_or_else(|| self.clone())
    }

    pub fn prefix(&self) -> &Bytes {
        &self.0.prefix
    }

    /// The namespace as one metrics label or log field.
    pub fn label(&self) -> String {
        String::from_utf8_lossy(self.prefix()).into_owned()
    }

    /// A tenant's key as etcd stores it.
    pub fn key(&self, key: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(self.0.prefix.len() + key.len());
        out.put_slice(&self.0.prefix);
        out.put_slice(key);
        out.freeze()
    }

    /// A tenant's range `[key, range_end)` as etcd stores it, in etcd's encoding: an empty end
    /// stays empty (one key); "\0" (every key from `key` on) ends where the namespace ends.
    pub fn range(&self, key: &[u8], range_end: &[u8]) -> (Bytes, Bytes) {
        let end = match range_end {
            [] => Bytes::new(),
            [0] => self.0.end.clone(),
            end => self.key(end),
        };
        (self.key(key), end)
    }

    /// The range covering the whole namespace, as etcd stores it.
    pub fn bounds(&self) -> (Bytes, Bytes) {
        (self.0.prefix.clone(), self.0.end.clone())
    }

    /// A stored key as the tenant sees it; `None` for a key outside the namespace, which the
    /// tenant must never see.
    pub fn strip(&self, key: &Bytes) -> Option<Bytes> {
        key.starts_with(&self.0.prefix)
            .then(|| key.slice(self.0.prefix.len()..))
    }

    /// Whether lease `id` was granted in this namespace.
    pub fn owns_lease(&self, id: i64) -> bool {
        id > 0 && id & TAG_MASK == self.0.tag
    }

    /// A fresh lease ID in this namespace.
    pub fn new_lease_id(&self) -> i64 {
        self.0.tag | i64::from(rand::random::<u32>())
    }
}

const TAG_MASK: i64 = 0x7fff_ffff << 32;

/// A stable 31-bit tag of the prefix (FNV-1a), never zero, in bits 32..62.
fn lease_tag(prefix: &[u8]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in prefix {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let tag = ((hash >> 33) as i64) | (1 << 30);
    tag << 32
}

/// etcd's GetPrefixRangeEnd: the first key after every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The refusal of an RPC that reaches beyond any namespace (cluster-wide maintenance, member
/// changes, auth management, compaction, the list of every lease).
pub fn cluster_wide() -> Status {
    Status::permission_denied(crate::policy::PERMISSION_DENIED)
}

/// keygate found a key outside the namespace in a response: it fails the request rather than
/// show the tenant something it must not see.
fn leaked() -> Status {
    tracing::error!("a response held a key outside the caller's namespace; refused");
    Status::internal("keygate: response outside the caller's namespace withheld")
}
