//! The highest revision keygate has shown any client. Reads served by keygate itself never
//! show an older state than this, which gives every client read-your-writes and monotonic
//! reads across all of keygate's clients.

use keygate_proto::etcdserverpb::*;
use keygate_proto::{v3electionpb, v3lockpb};
use std::sync::atomic::{AtomicI64, Ordering};

/// A response that carries etcd's header.
pub trait Revisioned {
    /// The header's revision, when there is a header.
    fn revision(&self) -> Option<i64>;
}

macro_rules! revisioned {
    ($($t:ty),* $(,)?) => {
        $(impl Revisioned for $t {
            fn revision(&self) -> Option<i64> {
                self.header.as_ref().map(|h| h.revision)
            }
        })*
    };
}

revisioned!(
    RangeResponse,
    PutResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse,
    WatchResponse,
    LeaseGrantResponse,
    LeaseRevokeResponse,
    LeaseKeepAliveResponse,
    LeaseTimeToLiveResponse,
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
    v3lockpb::LockResponse,
    v3lockpb::UnlockResponse,
    v3electionpb::CampaignResponse,
    v3electionpb::ProclaimResponse,
    v3electionpb::LeaderResponse,
    v3electionpb::ResignResponse,
);

/// A response stream: its messages are observed one by one as they are relayed.
impl<T> Revisioned for tonic::Streaming<T> {
    fn revision(&self) -> Option<i64> {
        None
    }
}

/// The highest header revision seen in any response keygate passed on or produced.
#[derive(Default)]
pub struct SeenRevision(AtomicI64);

impl SeenRevision {
    pub fn observe(&self, revision: i64) {
        self.0.fetch_max(revision, Ordering::AcqRel);
    }

    pub fn observe_response(&self, response: &impl Revisioned) {
        if let Some(revision) = response.revision() {
            self.observe(revision);
        }
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }

    /// Starts over at `revision`: etcd's own revision went back (it was restored from a
    /// snapshot), and a floor above it would hold every read back until etcd caught up.
    pub fn reset(&self, revision: i64) {
        self.0.store(revision, Ordering::Release);
    }
}
