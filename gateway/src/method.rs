//! The table of etcd's gRPC methods: their service, streaming kind, and whether they only read
//! (and so may be retried on another member when one fails).

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
}

macro_rules! methods {
    ($($ident:ident = $service:literal / $name:literal, $kind:ident, $ro:literal;)*) => {
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        enum Index { $($ident),* }
        $(pub static $ident: Method = Method { service: $service, name: $name, path: concat!("/", $service, "/", $name), kind: Kind::$kind, read_only: $ro, index: Index::$ident as usize };)*
        /// Every method keygate serves.
        pub static ALL: &[&Method] = &[$(&$ident),*];
    };
}

methods! {
    RANGE = "etcdserverpb.KV" / "Range", Unary, true;
    PUT = "etcdserverpb.KV" / "Put", Unary, false;
    DELETE_RANGE = "etcdserverpb.KV" / "DeleteRange", Unary, false;
    TXN = "etcdserverpb.KV" / "Txn", Unary, false;
    COMPACT = "etcdserverpb.KV" / "Compact", Unary, false;
    WATCH = "etcdserverpb.Watch" / "Watch", BidiStream, true;
    LEASE_GRANT = "etcdserverpb.Lease" / "LeaseGrant", Unary, false;
    LEASE_REVOKE = "etcdserverpb.Lease" / "LeaseRevoke", Unary, false;
    LEASE_KEEP_ALIVE = "etcdserverpb.Lease" / "LeaseKeepAlive", BidiStream, false;
    LEASE_TIME_TO_LIVE = "etcdserverpb.Lease" / "LeaseTimeToLive", Unary, true;
    LEASE_LEASES = "etcdserverpb.Lease" / "LeaseLeases", Unary, true;
    MEMBER_ADD = "etcdserverpb.Cluster" / "MemberAdd", Unary, false;
    MEMBER_REMOVE = "etcdserverpb.Cluster" / "MemberRemove", Unary, false;
    MEMBER_UPDATE = "etcdserverpb.Cluster" / "MemberUpdate", Unary, false;
    MEMBER_LIST = "etcdserverpb.Cluster" / "MemberList", Unary, true;
    MEMBER_PROMOTE = "etcdserverpb.Cluster" / "MemberPromote", Unary, false;
    ALARM = "etcdserverpb.Maintenance" / "Alarm", Unary, false;
    STATUS = "etcdserverpb.Maintenance" / "Status", Unary, true;
    DEFRAGMENT = "etcdserverpb.Maintenance" / "Defragment", Unary, false;
    HASH = "etcdserverpb.Maintenance" / "Hash", Unary, true;
    HASH_KV = "etcdserverpb.Maintenance" / "HashKV", Unary, true;
    SNAPSHOT = "etcdserverpb.Maintenance" / "Snapshot", ServerStream, true;
    MOVE_LEADER = "etcdserverpb.Maintenance" / "MoveLeader", Unary, false;
    DOWNGRADE = "etcdserverpb.Maintenance" / "Downgrade", Unary, false;
    AUTH_ENABLE = "etcdserverpb.Auth" / "AuthEnable", Unary, false;
    AUTH_DISABLE = "etcdserverpb.Auth" / "AuthDisable", Unary, false;
    AUTH_STATUS = "etcdserverpb.Auth" / "AuthStatus", Unary, true;
    AUTHENTICATE = "etcdserverpb.Auth" / "Authenticate", Unary, true;
    USER_ADD = "etcdserverpb.Auth" / "UserAdd", Unary, false;
    USER_GET = "etcdserverpb.Auth" / "UserGet", Unary, true;
    USER_LIST = "etcdserverpb.Auth" / "UserList", Unary, true;
    USER_DELETE = "etcdserverpb.Auth" / "UserDelete", Unary, false;
    USER_CHANGE_PASSWORD = "etcdserverpb.Auth" / "UserChangePassword", Unary, false;
    USER_GRANT_ROLE = "etcdserverpb.Auth" / "UserGrantRole", Unary, false;
    USER_REVOKE_ROLE = "etcdserverpb.Auth" / "UserRevokeRole", Unary, false;
    ROLE_ADD = "etcdserverpb.Auth" / "RoleAdd", Unary, false;
    ROLE_GET = "etcdserverpb.Auth" / "RoleGet", Unary, true;
    ROLE_LIST = "etcdserverpb.Auth" / "RoleList", Unary, true;
    ROLE_DELETE = "etcdserverpb.Auth" / "RoleDelete", Unary, false;
    ROLE_GRANT_PERMISSION = "etcdserverpb.Auth" / "RoleGrantPermission", Unary, false;
    ROLE_REVOKE_PERMISSION = "etcdserverpb.Auth" / "RoleRevokePermission", Unary, false;
    LOCK = "v3lockpb.Lock" / "Lock", Unary, false;
    UNLOCK = "v3lockpb.Lock" / "Unlock", Unary, false;
    CAMPAIGN = "v3electionpb.Election" / "Campaign", Unary, false;
    PROCLAIM = "v3electionpb.Election" / "Proclaim", Unary, false;
    LEADER = "v3electionpb.Election" / "Leader", Unary, true;
    OBSERVE = "v3electionpb.Election" / "Observe", ServerStream, true;
    RESIGN = "v3electionpb.Election" / "Resign", Unary, false;
    HEALTH_CHECK = "grpc.health.v1.Health" / "Check", Unary, true;
    HEALTH_WATCH = "grpc.health.v1.Health" / "Watch", ServerStream, true;
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
