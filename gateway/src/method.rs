//! The table of etcd's gRPC methods: their service, streaming kind, and whether they only read
//! (and so may be retried on another member when one fails), and the operation plugins are
//! told it is.

use crate::policy::authorizer::bindings::keygate::plugin::types::Operation;

/// Streaming shape of an RPC, labelled as go-grpc-prometheus labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unary,
    ServerStream,
    BidiStream,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Unary => "unary",
            Kind::ServerStream => "server_stream",
            Kind::BidiStream => "bidi_stream",
        }
    }
}

/// One gRPC method of the etcd API.
#[derive(Debug)]
pub struct Method {
    pub service: &'static str,
    pub name: &'static str,
    /// The HTTP/2 path of its calls: `/service/Method`.
    pub path: &'static str,
    pub kind: Kind,
    /// Changes nothing in etcd: safe to send again to another member.
    pub read_only: bool,
    /// Its place in `ALL`.
    pub index: usize,
    /// What plugins are told it is.
    pub operation: Operation,
}

macro_rules! methods {
    ($($ident:ident = $service:literal / $name:literal, $kind:ident, $ro:literal, $op:ident;)*) => {
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        enum Index { $($ident),* }
        $(pub static $ident: Method = Method { service: $service, name: $name, path: concat!("/", $service, "/", $name), kind: Kind::$kind, read_only: $ro, index: Index::$ident as usize, operation: Operation::$op };)*
        /// Every method keygate serves.
        pub static ALL: &[&Method] = &[$(&$ident),*];
    };
}

methods! {
    RANGE = "etcdserverpb.KV" / "Range", Unary, true, Range;
    PUT = "etcdserverpb.KV" / "Put", Unary, false, Put;
    DELETE_RANGE = "etcdserverpb.KV" / "DeleteRange", Unary, false, DeleteRange;
    TXN = "etcdserverpb.KV" / "Txn", Unary, false, Txn;
    COMPACT = "etcdserverpb.KV" / "Compact", Unary, false, Compact;
    WATCH = "etcdserverpb.Watch" / "Watch", BidiStream, true, Watch;
    LEASE_GRANT = "etcdserverpb.Lease" / "LeaseGrant", Unary, false, LeaseGrant;
    LEASE_REVOKE = "etcdserverpb.Lease" / "LeaseRevoke", Unary, false, LeaseRevoke;
    LEASE_KEEP_ALIVE = "etcdserverpb.Lease" / "LeaseKeepAlive", BidiStream, false, LeaseKeepAlive;
    LEASE_TIME_TO_LIVE = "etcdserverpb.Lease" / "LeaseTimeToLive", Unary, true, LeaseTimeToLive;
    LEASE_LEASES = "etcdserverpb.Lease" / "LeaseLeases", Unary, true, LeaseLeases;
    MEMBER_ADD = "etcdserverpb.Cluster" / "MemberAdd", Unary, false, MemberAdd;
    MEMBER_REMOVE = "etcdserverpb.Cluster" / "MemberRemove", Unary, false, MemberRemove;
    MEMBER_UPDATE = "etcdserverpb.Cluster" / "MemberUpdate", Unary, false, MemberUpdate;
    MEMBER_LIST = "etcdserverpb.Cluster" / "MemberList", Unary, true, MemberList;
    MEMBER_PROMOTE = "etcdserverpb.Cluster" / "MemberPromote", Unary, false, MemberPromote;
    ALARM = "etcdserverpb.Maintenance" / "Alarm", Unary, false, Alarm;
    STATUS = "etcdserverpb.Maintenance" / "Status", Unary, true, Status;
    DEFRAGMENT = "etcdserverpb.Maintenance" / "Defragment", Unary, false, Defragment;
    HASH = "etcdserverpb.Maintenance" / "Hash", Unary, true, Hash;
    HASH_KV = "etcdserverpb.Maintenance" / "HashKV", Unary, true, HashKv;
    SNAPSHOT = "etcdserverpb.Maintenance" / "Snapshot", ServerStream, true, Snapshot;
    MOVE_LEADER = "etcdserverpb.Maintenance" / "MoveLeader", Unary, false, MoveLeader;
    DOWNGRADE = "etcdserverpb.Maintenance" / "Downgrade", Unary, false, Downgrade;
    AUTH_ENABLE = "etcdserverpb.Auth" / "AuthEnable", Unary, false, AuthEnable;
    AUTH_DISABLE = "etcdserverpb.Auth" / "AuthDisable", Unary, false, AuthDisable;
    AUTH_STATUS = "etcdserverpb.Auth" / "AuthStatus", Unary, true, AuthStatus;
    AUTHENTICATE = "etcdserverpb.Auth" / "Authenticate", Unary, true, Authenticate;
    USER_ADD = "etcdserverpb.Auth" / "UserAdd", Unary, false, UserAdd;
    USER_GET = "etcdserverpb.Auth" / "UserGet", Unary, true, UserGet;
    USER_LIST = "etcdserverpb.Auth" / "UserList", Unary, true, UserList;
    USER_DELETE = "etcdserverpb.Auth" / "UserDelete", Unary, false, UserDelete;
    USER_CHANGE_PASSWORD = "etcdserverpb.Auth" / "UserChangePassword", Unary, false, UserChangePassword;
    USER_GRANT_ROLE = "etcdserverpb.Auth" / "UserGrantRole", Unary, false, UserGrantRole;
    USER_REVOKE_ROLE = "etcdserverpb.Auth" / "UserRevokeRole", Unary, false, UserRevokeRole;
    ROLE_ADD = "etcdserverpb.Auth" / "RoleAdd", Unary, false, RoleAdd;
    ROLE_GET = "etcdserverpb.Auth" / "RoleGet", Unary, true, RoleGet;
    ROLE_LIST = "etcdserverpb.Auth" / "RoleList", Unary, true, RoleList;
    ROLE_DELETE = "etcdserverpb.Auth" / "RoleDelete", Unary, false, RoleDelete;
    ROLE_GRANT_PERMISSION = "etcdserverpb.Auth" / "RoleGrantPermission", Unary, false, RoleGrantPermission;
    ROLE_REVOKE_PERMISSION = "etcdserverpb.Auth" / "RoleRevokePermission", Unary, false, RoleRevokePermission;
    LOCK = "v3lockpb.Lock" / "Lock", Unary, false, Lock;
    UNLOCK = "v3lockpb.Lock" / "Unlock", Unary, false, Unlock;
    CAMPAIGN = "v3electionpb.Election" / "Campaign", Unary, false, Campaign;
    PROCLAIM = "v3electionpb.Election" / "Proclaim", Unary, false, Proclaim;
    LEADER = "v3electionpb.Election" / "Leader", Unary, true, Leader;
    OBSERVE = "v3electionpb.Election" / "Observe", ServerStream, true, Observe;
    RESIGN = "v3electionpb.Election" / "Resign", Unary, false, Resign;
    HEALTH_CHECK = "grpc.health.v1.Health" / "Check", Unary, true, HealthCheck;
    HEALTH_WATCH = "grpc.health.v1.Health" / "Watch", ServerStream, true, HealthWatch;
}

/// Why a gRPC path is not one of etcd's methods, in grpc-go's words.
pub fn unknown(path: &str) -> Option<crate::errors::GatewayError> {
    use crate::errors::GatewayError;
    let (service, name) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", path));
    if ALL.iter().any(|m| m.service == service && m.name == name) {
        return None;
    }
    if ALL.iter().any(|m| m.service == service) {
        Some(GatewayError::UnknownMethod {
            service: service.to_string(),
            method: name.to_string(),
        })
    } else {
        Some(GatewayError::UnknownService(service.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each method's operation is the method's name in the WIT's kebab case.
    #[test]
    fn operations_follow_the_method_table() {
        for m in ALL {
            let op = format!("{:?}", m.operation).to_lowercase();
            let name = match m.service {
                "grpc.health.v1.Health" => format!("Health{}", m.name),
                _ => m.name.to_string(),
            };
            assert_eq!(
                op,
                format!("operation::{}", name.to_lowercase()),
                "{}",
                m.path
            );
        }
    }

    #[test]
    fn every_method_knows_its_place() {
        for (i, m) in ALL.iter().enumerate() {
            assert_eq!(m.index, i, "{}", m.path);
        }
    }

    #[test]
    fn unknown_paths_are_named_like_grpc_go() {
        assert!(unknown("/etcdserverpb.KV/Range").is_none());
        assert_eq!(
            unknown("/etcdserverpb.KV/Nope")
                .map(|e| e.to_string())
                .as_deref(),
            Some("unknown method Nope for service etcdserverpb.KV")
        );
        assert_eq!(
            unknown("/foo.Bar/Baz").map(|e| e.to_string()).as_deref(),
            Some("unknown service foo.Bar")
        );
    }
}
