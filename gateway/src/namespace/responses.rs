//! Phase 7, respond: [`Strip`] for every response message of the etcd API. Every key a tenant
//! gets back loses the namespace's prefix; a key outside the namespace in a response fails the
//! request instead of reaching the tenant.

use super::{leaked, Namespace};
use bytes::Bytes;
use keygate_proto::etcdserverpb::*;
use keygate_proto::mvccpb::{Event, KeyValue};
use keygate_proto::v3electionpb::{
    CampaignResponse, LeaderKey, LeaderResponse, ProclaimResponse, ResignResponse,
};
use keygate_proto::v3lockpb::{LockResponse, UnlockResponse};
use tonic::Status;

/// A response whose keys can be shown to a tenant.
pub trait Strip {
    fn strip(&mut self, _ns: &Namespace) -> Result<(), Status> {
        Ok(())
    }
}

fn key(ns: &Namespace, key: &mut Bytes) -> Result<(), Status> {
    *key = ns.strip(key).ok_or_else(leaked)?;
    Ok(())
}

fn kv(ns: &Namespace, kv: &mut KeyValue) -> Result<(), Status> {
    key(ns, &mut kv.key)
}

fn kvs(ns: &Namespace, kvs: &mut [KeyValue]) -> Result<(), Status> {
    kvs.iter_mut().try_for_each(|one| kv(ns, one))
}

fn some_kv(ns: &Namespace, one: &mut Option<KeyValue>) -> Result<(), Status> {
    one.as_mut().map_or(Ok(()), |one| kv(ns, one))
}

impl Strip for RangeResponse {
    fn strip(&mut self, ns: &Namespace) -> Result<(), Status> {
        kvs(ns, &mut self.kvs)
    }
}

impl Strip for PutResponse {
    fn strip(&mut self, ns: &Namespace) -> Result<(), Status> {
        some_kv(ns, &mut self.prev_kv)
    }
}

impl Strip for DeleteRangeResponse {
    fn strip(&mut self, ns: &Namespace) -> Result<(), Status> {
        kvs(ns, &mut self.prev_kvs)
    }
}

impl Strip for TxnResponse {
    fn strip(&mut self, ns: &Namespace) -> Result<(), Status> {
        for op in &mut self.responses {
            match &mut op.response {
                Some(response_op::Response::ResponseRange(r)) => r.strip(ns)?,
                Some(response_op::Response::ResponsePut(r)) => r.strip(ns)?,
                Some(response_op::Response::ResponseDeleteRange(r)) => r.strip(ns)?,
                Some(response_op::Response::ResponseTxn(r)) => r.strip(ns)?,
                None => {}
            }
        }
        Ok(())
    }
}

impl Strip for Event {
    fn strip(&mut self, ns: &Namespace) -> Result<(), Status> {
        some_kv(ns, &mut self.kv)?;
        some_kv(ns, &mut self.prev_kv)
    }
}

impl Strip for WatchResponse {
    fn strip(&mut self, ns: &Namespace) -> Result<(), Status> {
        self.events.iter_mut().try_for_each(|e| e.strip(ns))
    }
}

impl Strip for LeaseTimeToLiveResponse {
    fn strip(&mut self, ns: &Namespace) -> Result<(), Status> {
        if !ns.owns_lease(self.id) {
            // Another tenant's lease: etcd's answer for one it does not have.
            self.ttl = -1;
            self.granted_ttl = 0;
            self.keys.clear();
            return Ok(());
        }
        // Keys that others attached to the tenant's lease are not the tenant's to see.
        self.keys = self.keys.iter().filter_map(|k| ns.strip(k)).collect();
        Ok(())
    }
}

impl Strip for LeaseKeepAliveResponse {}

impl Strip for LockResponse {
    fn strip(&mut self, ns: &Namespace) -> Result<(), Status> {
        key(ns, &mut self.key)
    }
}

fn leader(ns: &Namespace, leader: &mut Option<LeaderKey>) -> Result<(), Status> {
    if let Some(leader) = leader {
        key(ns, &mut leader.name)?;
        key(ns, &mut leader.key)?;
    }
    Ok(())
}

impl Strip for CampaignResponse {
    fn strip(&mut self, ns: &Namespace) -> Result<(), Status> {
        leader(ns, &mut self.leader)
    }
}

impl Strip for LeaderResponse {
    fn strip(&mut self, ns: &Namespace) -> Result<(), Status> {
        some_kv(ns, &mut self.kv)
    }
}

// Responses with no key in them.
macro_rules! keyless {
    ($($t:ty),* $(,)?) => { $(impl Strip for $t {})* };
}

keyless!(
    UnlockResponse,
    ProclaimResponse,
    ResignResponse,
    CompactionResponse,
    LeaseGrantResponse,
    LeaseRevokeResponse,
    LeaseLeasesResponse,
    MemberAddResponse,
    MemberRemoveResponse,
    MemberUpdateResponse,
    MemberListResponse,
    MemberPromoteResponse,
    AlarmResponse,
    StatusResponse,
    DefragmentResponse,
    HashResponse,
    HashKvResponse,
    SnapshotResponse,
    MoveLeaderResponse,
    DowngradeResponse,
    AuthEnableResponse,
    AuthDisableResponse,
    AuthStatusResponse,
    AuthenticateResponse,
    AuthUserAddResponse,
    AuthUserGetResponse,
    AuthUserListResponse,
    AuthUserDeleteResponse,
    AuthUserChangePasswordResponse,
    AuthUserGrantRoleResponse,
    AuthUserRevokeRoleResponse,
    AuthRoleAddResponse,
    AuthRoleGetResponse,
    AuthRoleListResponse,
    AuthRoleDeleteResponse,
    AuthRoleGrantPermissionResponse,
    AuthRoleRevokePermissionResponse,
);
