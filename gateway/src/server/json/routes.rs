//! The gateway's paths (the `google.api.http` bindings of etcd 3.5's .proto files, below the
//! `/v3/` prefix) and the service method each one calls.

use super::{codec, stream, Call, JsonGateway};
use http::Response;
use keygate_proto::etcdserverpb::auth_server::Auth;
use keygate_proto::etcdserverpb::cluster_server::Cluster;
use keygate_proto::etcdserverpb::kv_server::Kv;
use keygate_proto::etcdserverpb::lease_server::Lease;
use keygate_proto::etcdserverpb::maintenance_server::Maintenance;
use keygate_proto::etcdserverpb::watch_server::Watch;
use keygate_proto::v3electionpb::election_server::Election;
use keygate_proto::v3lockpb::lock_server::Lock;
use tonic::body::Body;

const PATHS: &[&str] = &[
    "kv/range",
    "kv/put",
    "kv/deleterange",
    "kv/txn",
    "kv/compaction",
    "watch",
    "lease/grant",
    "lease/revoke",
    "kv/lease/revoke",
    "lease/keepalive",
    "lease/timetolive",
    "kv/lease/timetolive",
    "lease/leases",
    "kv/lease/leases",
    "cluster/member/add",
    "cluster/member/remove",
    "cluster/member/update",
    "cluster/member/list",
    "cluster/member/promote",
    "maintenance/alarm",
    "maintenance/status",
    "maintenance/defragment",
    "maintenance/hash",
    "maintenance/snapshot",
    "maintenance/transfer-leadership",
    "maintenance/downgrade",
    "auth/enable",
    "auth/disable",
    "auth/status",
    "auth/authenticate",
    "auth/user/add",
    "auth/user/get",
    "auth/user/list",
    "auth/user/delete",
    "auth/user/changepw",
    "auth/user/grant",
    "auth/user/revoke",
    "auth/role/add",
    "auth/role/get",
    "auth/role/list",
    "auth/role/delete",
    "auth/role/grant",
    "auth/role/revoke",
    "lock/lock",
    "lock/unlock",
    "election/campaign",
    "election/proclaim",
    "election/leader",
    "election/observe",
    "election/resign",
];

pub fn exists(rpc: &str) -> bool {
    PATHS.contains(&rpc)
}

/// One request, one response.
macro_rules! unary {
    ($call:ident, $svc:expr, $trait:ident :: $method:ident) => {
        match $call.decode().await {
            Ok(request) => match $trait::$method($svc, request).await {
                Ok(response) => codec::ok_response(response.get_ref()),
                Err(status) => codec::error_response(&status),
            },
            Err(response) => response,
        }
    };
}

/// One request, a stream of responses.
macro_rules! server_stream {
    ($call:ident, $svc:expr, $trait:ident :: $method:ident) => {
        match $call.decode().await {
            Ok(request) => match $trait::$method($svc, request).await {
                Ok(response) => stream::response(response.into_inner()),
                Err(status) => codec::error_response(&status),
            },
            Err(response) => response,
        }
    };
}

/// A stream of requests, a stream of responses.
macro_rules! bidi {
    ($call:ident, $svc:expr, $trait:ident :: $method:ident) => {
        match $call.open_stream().await {
            Ok(request) => match $trait::$method($svc, request).await {
                Ok(response) => stream::response(response.into_inner()),
                Err(status) => codec::error_response(&status),
            },
            Err(response) => response,
        }
    };
}

impl JsonGateway {
    pub(super) async fn route(&self, rpc: &str, call: Call) -> Response<Body> {
        match rpc {
            "kv/range" => unary!(call, &self.kv, Kv::range),
            "kv/put" => unary!(call, &self.kv, Kv::put),
            "kv/deleterange" => unary!(call, &self.kv, Kv::delete_range),
            "kv/txn" => unary!(call, &self.kv, Kv::txn),
            "kv/compaction" => unary!(call, &self.kv, Kv::compact),
            "watch" => bidi!(call, &self.watch, Watch::watch),
            "lease/grant" => unary!(call, &self.lease, Lease::lease_grant),
            "lease/revoke" | "kv/lease/revoke" => unary!(call, &self.lease, Lease::lease_revoke),
            "lease/keepalive" => bidi!(call, &self.lease, Lease::lease_keep_alive),
            "lease/timetolive" | "kv/lease/timetolive" => {
                unary!(call, &self.lease, Lease::lease_time_to_live)
            }
            "lease/leases" | "kv/lease/leases" => unary!(call, &self.lease, Lease::lease_leases),
            _ => self.route_admin(rpc, call).await,
        }
    }

    async fn route_admin(&self, rpc: &str, call: Call) -> Response<Body> {
        let m = &self.maintenance;
        match rpc {
            "cluster/member/add" => unary!(call, &self.cluster, Cluster::member_add),
            "cluster/member/remove" => unary!(call, &self.cluster, Cluster::member_remove),
            "cluster/member/update" => unary!(call, &self.cluster, Cluster::member_update),
            "cluster/member/list" => unary!(call, &self.cluster, Cluster::member_list),
            "cluster/member/promote" => unary!(call, &self.cluster, Cluster::member_promote),
            "maintenance/alarm" => unary!(call, m, Maintenance::alarm),
            "maintenance/status" => unary!(call, m, Maintenance::status),
            "maintenance/defragment" => unary!(call, m, Maintenance::defragment),
            // etcd binds Hash and HashKV to the same path; etcd 3.5 answers it with Hash.
            "maintenance/hash" => unary!(call, m, Maintenance::hash),
            "maintenance/snapshot" => server_stream!(call, m, Maintenance::snapshot),
            "maintenance/transfer-leadership" => unary!(call, m, Maintenance::move_leader),
            "maintenance/downgrade" => unary!(call, m, Maintenance::downgrade),
            "lock/lock" => unary!(call, &self.lock, Lock::lock),
            "lock/unlock" => unary!(call, &self.lock, Lock::unlock),
            "election/campaign" => unary!(call, &self.election, Election::campaign),
            "election/proclaim" => unary!(call, &self.election, Election::proclaim),
            "election/leader" => unary!(call, &self.election, Election::leader),
            "election/observe" => server_stream!(call, &self.election, Election::observe),
            "election/resign" => unary!(call, &self.election, Election::resign),
            _ => self.route_auth(rpc, call).await,
        }
    }

    async fn route_auth(&self, rpc: &str, call: Call) -> Response<Body> {
        let a = &self.auth;
        match rpc {
            "auth/enable" => unary!(call, a, Auth::auth_enable),
            "auth/disable" => unary!(call, a, Auth::auth_disable),
            "auth/status" => unary!(call, a, Auth::auth_status),
            "auth/authenticate" => unary!(call, a, Auth::authenticate),
            "auth/user/add" => unary!(call, a, Auth::user_add),
            "auth/user/get" => unary!(call, a, Auth::user_get),
            "auth/user/list" => unary!(call, a, Auth::user_list),
            "auth/user/delete" => unary!(call, a, Auth::user_delete),
            "auth/user/changepw" => unary!(call, a, Auth::user_change_password),
            "auth/user/grant" => unary!(call, a, Auth::user_grant_role),
            "auth/user/revoke" => unary!(call, a, Auth::user_revoke_role),
            "auth/role/add" => unary!(call, a, Auth::role_add),
            "auth/role/get" => unary!(call, a, Auth::role_get),
            "auth/role/list" => unary!(call, a, Auth::role_list),
            "auth/role/delete" => unary!(call, a, Auth::role_delete),
            "auth/role/grant" => unary!(call, a, Auth::role_grant_permission),
            "auth/role/revoke" => unary!(call, a, Auth::role_revoke_permission),
            _ => codec::plain_error(http::StatusCode::NOT_FOUND),
        }
    }
}
