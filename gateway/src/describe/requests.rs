//! [`Describe`] for every request message of the etcd API.

use super::{Access, Describe, Description, Flags};
use crate::namespace::prefix_end;
use keygate_proto::etcdserverpb::*;
use keygate_proto::v3electionpb::{CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest};
use keygate_proto::v3lockpb::{LockRequest, UnlockRequest};

impl Describe for RangeRequest {
    fn describe(&self, d: &mut Description) {
        d.range(&self.key, &self.range_end, Access::Read);
        d.flag(self.serializable, Flags::SERIALIZABLE);
        d.flag(self.keys_only, Flags::KEYS_ONLY);
        d.flag(self.count_only, Flags::COUNT_ONLY);
    }

    fn first_key(&self) -> Option<&[u8]> {
        Some(&self.key)
    }
}

impl Describe for PutRequest {
    fn describe(&self, d: &mut Description) {
        d.range(&self.key, &[], Access::Write);
        d.value_bytes += self.value.len() as u64;
        let value = (!self.ignore_value).then_some(self.value.len() as u64);
        d.puts.push((self.key.to_vec(), value));
        if self.lease != 0 {
            d.lease = self.lease;
        }
        d.flag(self.prev_kv, Flags::PREV_KV);
        d.flag(self.ignore_value, Flags::IGNORE_VALUE);
        d.flag(self.ignore_lease, Flags::IGNORE_LEASE);
    }

    fn first_key(&self) -> Option<&[u8]> {
        Some(&self.key)
    }
}

impl Describe for DeleteRangeRequest {
    fn describe(&self, d: &mut Description) {
        d.range(&self.key, &self.range_end, Access::Write);
        d.flag(self.prev_kv, Flags::PREV_KV);
    }

    fn first_key(&self) -> Option<&[u8]> {
        Some(&self.key)
    }
}

impl Describe for TxnRequest {
    fn describe(&self, d: &mut Description) {
        for compare in &self.compare {
            d.range(&compare.key, &compare.range_end, Access::Compare);
        }
        for op in self.success.iter().chain(&self.failure) {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => r.describe(d),
                Some(request_op::Request::RequestPut(r)) => r.describe(d),
                Some(request_op::Request::RequestDeleteRange(r)) => r.describe(d),
                Some(request_op::Request::RequestTxn(r)) => r.describe(d),
                None => {}
            }
        }
    }

    fn first_key(&self) -> Option<&[u8]> {
        if let Some(compare) = self.compare.first() {
            return Some(&compare.key);
        }
        self.success
            .iter()
            .chain(&self.failure)
            .find_map(|op| match &op.request {
                Some(request_op::Request::RequestRange(r)) => r.first_key(),
                Some(request_op::Request::RequestPut(r)) => r.first_key(),
                Some(request_op::Request::RequestDeleteRange(r)) => r.first_key(),
                Some(request_op::Request::RequestTxn(r)) => r.first_key(),
                None => None,
            })
    }
}

impl Describe for CompactionRequest {
    fn describe(&self, d: &mut Description) {
        d.flag(self.physical, Flags::PHYSICAL);
    }
}

impl Describe for WatchCreateRequest {
    fn describe(&self, d: &mut Description) {
        d.range(&self.key, &self.range_end, Access::Watch);
        d.flag(self.prev_kv, Flags::PREV_KV);
        d.flag(self.progress_notify, Flags::PROGRESS_NOTIFY);
        d.flag(self.fragment, Flags::FRAGMENT);
    }
}

impl Describe for LeaseGrantRequest {
    fn describe(&self, d: &mut Description) {
        d.lease = self.id;
    }
}

impl Describe for LeaseRevokeRequest {
    fn describe(&self, d: &mut Description) {
        d.lease = self.id;
    }
}

impl Describe for LeaseTimeToLiveRequest {
    fn describe(&self, d: &mut Description) {
        d.lease = self.id;
        d.flag(self.keys, Flags::KEYS);
    }
}

impl Describe for LeaseKeepAliveRequest {
    fn describe(&self, d: &mut Description) {
        d.lease = self.id;
    }
}

// Locks and elections write keys under their name (name/lease-id) and read the name's range.
/// A lock's or election's keys, and the one it puts: etcd's `<name>/<lease in hex>`, holding
/// `value`.
fn named_prefix(d: &mut Description, name: &[u8], lease: i64, value: &[u8]) {
    let end = prefix_end(name);
    d.range(name, &end, Access::Write);
    if lease != 0 {
        d.lease = lease;
        let mut key = name.to_vec();
        key.extend_from_slice(format!("/{lease:x}").as_bytes());
        d.puts.push((key, Some(value.len() as u64)));
    }
}

impl Describe for LockRequest {
    fn describe(&self, d: &mut Description) {
        named_prefix(d, &self.name, self.lease, &[]);
    }
}

impl Describe for UnlockRequest {
    fn describe(&self, d: &mut Description) {
        d.range(&self.key, &[], Access::Write);
    }
}

impl Describe for CampaignRequest {
    fn describe(&self, d: &mut Description) {
        named_prefix(d, &self.name, self.lease, &self.value);
        d.value_bytes += self.value.len() as u64;
    }
}

impl Describe for ProclaimRequest {
    fn describe(&self, d: &mut Description) {
        if let Some(leader) = &self.leader {
            d.range(&leader.key, &[], Access::Write);
            d.lease = leader.lease;
            d.puts
                .push((leader.key.to_vec(), Some(self.value.len() as u64)));
        }
        d.value_bytes += self.value.len() as u64;
    }
}

impl Describe for ResignRequest {
    fn describe(&self, d: &mut Description) {
        if let Some(leader) = &self.leader {
            d.range(&leader.key, &[], Access::Write);
        }
    }
}

impl Describe for LeaderRequest {
    fn describe(&self, d: &mut Description) {
        let end = prefix_end(&self.name);
        d.range(&self.name, &end, Access::Read);
    }
}

// Cluster-wide RPCs name no key.
macro_rules! no_keys {
    ($($t:ty),* $(,)?) => { $(impl Describe for $t {})* };
}

no_keys!(
    LeaseLeasesRequest,
    MemberAddRequest,
    MemberRemoveRequest,
    MemberUpdateRequest,
    MemberListRequest,
    MemberPromoteRequest,
    AlarmRequest,
    StatusRequest,
    DefragmentRequest,
    HashRequest,
    HashKvRequest,
    SnapshotRequest,
    MoveLeaderRequest,
    DowngradeRequest,
    AuthEnableRequest,
    AuthDisableRequest,
    AuthStatusRequest,
    AuthenticateRequest,
    AuthUserAddRequest,
    AuthUserGetRequest,
    AuthUserListRequest,
    AuthUserDeleteRequest,
    AuthUserChangePasswordRequest,
    AuthUserGrantRoleRequest,
    AuthUserRevokeRoleRequest,
    AuthRoleAddRequest,
    AuthRoleGetRequest,
    AuthRoleListRequest,
    AuthRoleDeleteRequest,
    AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest,
);
