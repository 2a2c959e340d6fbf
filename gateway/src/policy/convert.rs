//! keygate's identity and request description as the WIT records plugins receive.

use super::authorizer::bindings::keygate::plugin::types as wit;
use crate::describe::{Access, Description};
use crate::identity::{Identity, Source};
use wasmtime::component::{ComponentType, Lower};

fn source(source: Source) -> wit::IdentitySource {
    match source {
        Source::Anonymous => wit::IdentitySource::Anonymous,
        Source::Certificate => wit::IdentitySource::Certificate,
        Source::EtcdToken => wit::IdentitySource::EtcdToken,
        Source::Bearer => wit::IdentitySource::Bearer,
    }
}

fn access(access: Access) -> wit::Access {
    match access {
        Access::Read => wit::Access::Read,
        Access::Write => wit::Access::Write,
        Access::Watch => wit::Access::Watch,
        Access::Compare => wit::Access::Compare,
    }
}

pub fn identity(who: &Identity) -> wit::Identity {
    wit::Identity {
        source: source(who.source),
        name: who.name.clone(),
        sans: who
            .cert
            .as_ref()
            .map(|c| c.sans.clone())
            .unwrap_or_default(),
        peer: who.peer.as_deref().unwrap_or_default().to_string(),
    }
}

pub fn request(what: &Description) -> wit::Request {
    wit::Request {
        operation: what.method.operation,
        read_only: what.method.read_only,
        ranges: what
            .ranges
            .iter()
            .map(|r| wit::KeyRange {
                key: r.key.clone(),
                range_end: r.range_end.clone(),
                access: access(r.access),
            })
            .collect(),
        value_bytes: what.value_bytes,
        lease: what.lease,
        flags: what.flags,
    }
}

/// An audit event as the auditor receives it, borrowed from keygate's own records: lowering
/// a batch into the plugin copies each field once, straight into the plugin's memory.
/// Field names and types are those of `audit-event` in plugins/wit (checked when the auditor
/// is instantiated).
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct AuditEventView<'a> {
    #[component(name = "time-us")]
    pub time_us: u64,
    pub identity: IdentityView<'a>,
    pub request: RequestView<'a>,
    pub decision: wit::Verdict,
    #[component(name = "status-code")]
    pub status_code: u32,
    #[component(name = "status-message")]
    pub status_message: &'a str,
    pub revision: i64,
    #[component(name = "latency-us")]
    pub latency_us: u64,
    #[component(name = "served-by")]
    pub served_by: wit::ServedBy,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct IdentityView<'a> {
    pub source: wit::IdentitySource,
    pub name: &'a str,
    pub sans: &'a [String],
    pub peer: &'a str,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct RequestView<'a> {
    pub operation: wit::Operation,
    #[component(name = "read-only")]
    pub read_only: bool,
    pub ranges: Vec<KeyRangeView<'a>>,
    #[component(name = "value-bytes")]
    pub value_bytes: u64,
    pub lease: i64,
    pub flags: wit::RequestFlags,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct KeyRangeView<'a> {
    pub key: &'a [u8],
    #[component(name = "range-end")]
    pub range_end: &'a [u8],
    pub access: wit::Access,
}

pub fn identity_view(who: Option<&Identity>) -> IdentityView<'_> {
    let Some(who) = who else {
        return IdentityView {
            source: wit::IdentitySource::Anonymous,
            name: "",
            sans: &[],
            peer: "",
        };
    };
    IdentityView {
        source: source(who.source),
        name: &who.name,
        sans: who.cert.as_ref().map_or(&[], |c| c.sans.as_slice()),
        peer: who.peer.as_deref().unwrap_or_default(),
    }
}

pub fn request_view(what: &Description) -> RequestView<'_> {
    RequestView {
        operation: what.method.operation,
        read_only: what.method.read_only,
        ranges: (what.ranges.iter())
            .map(|r| KeyRangeView {
                key: &r.key,
                range_end: &r.range_end,
                access: access(r.access),
            })
            .collect(),
        value_bytes: what.value_bytes,
        lease: what.lease,
        flags: what.flags,
    }
}
