//! Phase 3, describe: every etcd request decoded into one normalized [`Description`] — the
//! key ranges it reads, writes, watches and compares (a Txn's compares and both branches,
//! recursively), the size of the values it writes, the lease it names, its flags. Authorizers
//! and auditors see this, never protobuf.

mod requests;

use crate::method::Method;

/// What a key range is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Watch,
    Compare,
}

/// `[key, range_end)` as etcd means it: an empty end is the single key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub access: Access,
}

/// The request options a description names, as a set: the WIT's `request-flags`, named as
/// etcd's request fields.
pub use crate::policy::authorizer::bindings::keygate::plugin::types::RequestFlags as Flags;

/// The normalized description of one RPC.
#[derive(Clone, Debug)]
pub struct Description {
    pub method: &'static Method,
    pub ranges: Vec<KeyRange>,
    pub value_bytes: u64,
    pub lease: i64,
    pub flags: Flags,
    /// Every key it puts, with the size of the value (`None`: the value is kept), for the
    /// tenants' storage quotas.
    pub puts: Vec<(Vec<u8>, Option<u64>)>,
}

impl Description {
    pub fn new(method: &'static Method) -> Self {
        Description {
            method,
            ranges: Vec::new(),
            value_bytes: 0,
            lease: 0,
            flags: Flags::empty(),
            puts: Vec::new(),
        }
    }

    /// Describes `request` as a call of `method`.
    pub fn of<R: Describe + ?Sized>(method: &'static Method, request: &R) -> Self {
        let mut description = Description::new(method);
        request.describe(&mut description);
        description
    }

    pub(crate) fn range(&mut self, key: &[u8], range_end: &[u8], access: Access) {
        self.ranges.push(KeyRange {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            access,
        });
    }

    pub(crate) fn flag(&mut self, on: bool, flag: Flags) {
        if on {
            self.flags |= flag;
        }
    }
}

/// A request message keygate can describe. Messages that name no key, value or lease keep the
/// default, which adds nothing.
pub trait Describe {
    fn describe(&self, _d: &mut Description) {}

    /// The first key a KV request names, as etcd will see it (for the key-prefix metrics);
    /// `None` for requests that name no key.
    fn first_key(&self) -> Option<&[u8]> {
        None
    }
}

#[cfg(test)]
mod tests;
