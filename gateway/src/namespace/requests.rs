//! Phase 5, rewrite: [`Confine`] for every request message of the etcd API.

use super::{cluster_wide, Namespace, LEASE_NOT_FOUND};
use keygate_proto::etcdserverpb::*;
use keygate_proto::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
};
use keygate_proto::v3lockpb::{LockRequest, UnlockRequest};
use tonic::Status;

/// A request that can be confined to a namespace. The error is the refusal of a request that
/// cannot be: a cluster-wide RPC, or one naming a lease outside the namespace.
pub trait Confine {
    fn confine(&mut self, _ns: &Namespace) -> Result<(), Status> {
        Err(cluster_wide())
    }
}

/// A lease a tenant names must be its own; for anyone else's, etcd's answer for a missing one.
fn own_lease(ns: &Namespace, lease: i64) -> Result<(), Status> {
    if lease == 0 || ns.owns_lease(lease) {
        Ok(())
    } else {
        Err(Status::not_found(LEASE_NOT_FOUND))
    }
}

impl Confine for RangeRequest {
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        // etcd refuses an empty key before anything else; it must see it to say so.
        if !self.key.is_empty() {
            (self.key, self.range_end) = ns.range(&self.key, &self.range_end);
        }
        Ok(())
    }
}

impl Confine for PutRequest {
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        own_lease(ns, self.lease)?;
        if !self.key.is_empty() {
            self.key = ns.key(&self.key);
        }
        Ok(())
    }
}

impl Confine for DeleteRangeRequest {
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        if !self.key.is_empty() {
            (self.key, self.range_end) = ns.range(&self.key, &self.range_end);
        }
        Ok(())
    }
}

impl Confine for TxnRequest {
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        // etcd refuses a compare on the empty key; it must see it to say so.
        for compare in self.compare.iter_mut().filter(|c| !c.key.is_empty()) {
            (compare.key, compare.range_end) = ns.range(&compare.key, &compare.range_end);
        }
        for op in self.success.iter_mut().chain(self.failure.iter_mut()) {
            match &mut op.request {
                Some(request_op::Request::RequestRange(r)) => r.confine(ns)?,
                Some(request_op::Request::RequestPut(r)) => r.confine(ns)?,
                Some(request_op::Request::RequestDeleteRange(r)) => r.confine(ns)?,
                Some(request_op::Request::RequestTxn(r)) => r.confine(ns)?,
                None => {}
            }
        }
        Ok(())
    }
}

impl Confine for WatchCreateRequest {
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        // etcd watches "\0" for an empty key.
        let key = if self.key.is_empty() {
            bytes::Bytes::from_static(b"\0")
        } else {
            self.key.clone()
        };
        (self.key, self.range_end) = ns.range(&key, &self.range_end);
        Ok(())
    }
}

impl Confine for WatchRequest {
    // Creations name keys; cancels and progress requests name none.
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        match &mut self.request_union {
            Some(watch_request::RequestUnion::CreateRequest(create)) => create.confine(ns),
            _ => Ok(()),
        }
    }
}

impl Confine for LeaseGrantRequest {
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        if self.id == 0 {
            self.id = ns.new_lease_id();
            return Ok(());
        }
        // A tenant may choose an ID only inside its own namespace's range of IDs.
        if ns.owns_lease(self.id) {
            Ok(())
        } else {
            Err(Status::permission_denied(crate::policy::PERMISSION_DENIED))
        }
    }
}

impl Confine for LeaseRevokeRequest {
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        own_lease(ns, self.id).and_then(|()| nonzero(self.id))
    }
}

impl Confine for LeaseKeepAliveRequest {
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        own_lease(ns, self.id).and_then(|()| nonzero(self.id))
    }
}

impl Confine for LeaseTimeToLiveRequest {
    // Another tenant's lease gets etcd's answer for a missing one; see `Strip`.
    fn confine(&mut self, _ns: &Namespace) -> Result<(), Status> {
        Ok(())
    }
}

/// Lease 0 is no lease: etcd's answer for it is the missing lease's.
fn nonzero(id: i64) -> Result<(), Status> {
    if id == 0 {
        Err(Status::not_found(LEASE_NOT_FOUND))
    } else {
        Ok(())
    }
}

impl Confine for LockRequest {
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        own_lease(ns, self.lease)?;
        self.name = ns.key(&self.name);
        Ok(())
    }
}

impl Confine for UnlockRequest {
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        self.key = ns.key(&self.key);
        Ok(())
    }
}

impl Confine for CampaignRequest {
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        own_lease(ns, self.lease)?;
        self.name = ns.key(&self.name);
        Ok(())
    }
}

fn confine_leader(leader: &mut Option<LeaderKey>, ns: &Namespace) -> Result<(), Status> {
    if let Some(leader) = leader {
        own_lease(ns, leader.lease)?;
        leader.name = ns.key(&leader.name);
        leader.key = ns.key(&leader.key);
    }
    Ok(())
}

impl Confine for ProclaimRequest {
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        confine_leader(&mut self.leader, ns)
    }
}

impl Confine for ResignRequest {
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        confine_leader(&mut self.leader, ns)
    }
}

impl Confine for LeaderRequest {
    fn confine(&mut self, ns: &Namespace) -> Result<(), Status> {
        self.name = ns.key(&self.name);
        Ok(())
    }
}

/// RPCs that reveal no key: the same answer inside a namespace as outside.
macro_rules! keyless {
    ($($t:ty),* $(,)?) => { $(impl Confine for $t {
        fn confine(&mut self, _ns: &Namespace) -> Result<(), Status> { Ok(()) }
    })* };
}

keyless!(StatusRequest, MemberListRequest, AuthenticateRequest);

// Cluster-wide RPCs: refused inside a namespace (the default).
macro_rules! cluster_wide {
    ($($t:ty),* $(,)?) => { $(impl Confine for $t {})* };
}

cluster_wide!(
    CompactionRequest,
    LeaseLeasesRequest,
    MemberAddRequest,
    MemberRemoveRequest,
    MemberUpdateRequest,
    MemberPromoteRequest,
    AlarmRequest,
    DefragmentRequest,
    HashRequest,
    HashKvRequest,
    SnapshotRequest,
    MoveLeaderRequest,
    DowngradeRequest,
    AuthEnableRequest,
    AuthDisableRequest,
    AuthStatusRequest,
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
