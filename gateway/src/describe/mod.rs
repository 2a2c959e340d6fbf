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

/// The request options a description names, as a set (etcd's request field names, the WIT's
/// `request-flags`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(u16);

impl Flags {
    pub const SERIALIZABLE: Flags = Flags(1);
    pub const KEYS_ONLY: Flags = Flags(1 << 1);
    pub const COUNT_ONLY: Flags = Flags(1 << 2);
    pub const PREV_KV: Flags = Flags(1 << 3);
    pub const IGNORE_VALUE: Flags = Flags(1 << 4);
    pub const IGNORE_LEASE: Flags = Flags(1 << 5);
    pub const PHYSICAL: Flags = Flags(1 << 6);
    pub const PROGRESS_NOTIFY: Flags = Flags(1 << 7);
    pub const FRAGMENT: Flags = Flags(1 << 8);
    pub const KEYS: Flags = Flags(1 << 9);

    pub fn contains(self, flags: Flags) -> bool {
        self.0 & flags.0 == flags.0
    }
}

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
            flags: Flags::default(),
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
            self.flags.0 |= flag.0;
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
