//! keygate's identity and request description as the WIT records plugins receive.

use super::authorizer::bindings::keygate::plugin::types as wit;
use crate::describe::{Access, Description};
use crate::identity::{Identity, Source};

pub fn identity(who: &Identity) -> wit::Identity {
    wit::Identity {
        source: match who.source {
            Source::Anonymous => wit::IdentitySource::Anonymous,
            Source::Certificate => wit::IdentitySource::Certificate,
            Source::EtcdToken => wit::IdentitySource::EtcdToken,
            Source::Bearer => wit::IdentitySource::Bearer,
        },
        name: who.name.clone(),
        sans: who
            .cert
            .as_ref()
            .map(|c| c.sans.clone())
            .unwrap_or_default(),
        peer: who.peer.map(|p| p.to_string()).unwrap_or_default(),
    }
}

pub fn request(what: &Description) -> wit::Request {
    wit::Request {
        service: what.method.service.to_string(),
        method: what.method.name.to_string(),
        read_only: what.method.read_only,
        ranges: what
            .ranges
            .iter()
            .map(|r| wit::KeyRange {
                key: r.key.clone(),
                range_end: r.range_end.clone(),
                access: match r.access {
                    Access::Read => wit::Access::Read,
                    Access::Write => wit::Access::Write,
                    Access::Watch => wit::Access::Watch,
                    Access::Compare => wit::Access::Compare,
                },
            })
            .collect(),
        value_bytes: what.value_bytes,
        lease: what.lease,
        flags: what.flags.iter().map(|f| f.to_string()).collect(),
    }
}
