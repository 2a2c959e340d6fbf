//! etcd's own names for the WIT's enums, for plugin configurations and records that speak
//! etcd's language ("Put", "etcdserverpb.KV").

use crate::authorizer::keygate::plugin::types::{Operation, ServedBy, Verdict};

macro_rules! operations {
    ($($op:ident = $service:literal / $name:literal,)*) => {
        impl Operation {
            /// Every operation, in the WIT's order.
            pub const ALL: &'static [Operation] = &[$(Operation::$op),*];

            /// etcd's method name: "Range", "LeaseGrant", "HashKV"; gRPC health's "Check"
            /// and "Watch".
            pub fn name(self) -> &'static str {
                match self { $(Operation::$op => $name),* }
            }

            /// The gRPC service: "etcdserverpb.KV", "v3lockpb.Lock", ...
            pub fn service(self) -> &'static str {
                match self { $(Operation::$op => $service),* }
            }
        }
    };
}

operations! {
    Range = "etcdserverpb.KV" / "Range",
    Put = "etcdserverpb.KV" / "Put",
    DeleteRange = "etcdserverpb.KV" / "DeleteRange",
    Txn = "etcdserverpb.KV" / "Txn",
    Compact = "etcdserverpb.KV" / "Compact",
    Watch = "etcdserverpb.Watch" / "Watch",
    LeaseGrant = "etcdserverpb.Lease" / "LeaseGrant",
    LeaseRevoke = "etcdserverpb.Lease" / "LeaseRevoke",
    LeaseKeepAlive = "etcdserverpb.Lease" / "LeaseKeepAlive",
    LeaseTimeToLive = "etcdserverpb.Lease" / "LeaseTimeToLive",
    LeaseLeases = "etcdserverpb.Lease" / "LeaseLeases",
    MemberAdd = "etcdserverpb.Cluster" / "MemberAdd",
    MemberRemove = "etcdserverpb.Cluster" / "MemberRemove",
    MemberUpdate = "etcdserverpb.Cluster" / "MemberUpdate",
    MemberList = "etcdserverpb.Cluster" / "MemberList",
    MemberPromote = "etcdserverpb.Cluster" / "MemberPromote",
    Alarm = "etcdserverpb.Maintenance" / "Alarm",
    Status = "etcdserverpb.Maintenance" / "Status",
    Defragment = "etcdserverpb.Maintenance" / "Defragment",
    Hash = "etcdserverpb.Maintenance" / "Hash",
    HashKv = "etcdserverpb.Maintenance" / "HashKV",
    Snapshot = "etcdserverpb.Maintenance" / "Snapshot",
    MoveLeader = "etcdserverpb.Maintenance" / "MoveLeader",
    Downgrade = "etcdserverpb.Maintenance" / "Downgrade",
    AuthEnable = "etcdserverpb.Auth" / "AuthEnable",
    AuthDisable = "etcdserverpb.Auth" / "AuthDisable",
    AuthStatus = "etcdserverpb.Auth" / "AuthStatus",
    Authenticate = "etcdserverpb.Auth" / "Authenticate",
    UserAdd = "etcdserverpb.Auth" / "UserAdd",
    UserGet = "etcdserverpb.Auth" / "UserGet",
    UserList = "etcdserverpb.Auth" / "UserList",
    UserDelete = "etcdserverpb.Auth" / "UserDelete",
    UserChangePassword = "etcdserverpb.Auth" / "UserChangePassword",
    UserGrantRole = "etcdserverpb.Auth" / "UserGrantRole",
    UserRevokeRole = "etcdserverpb.Auth" / "UserRevokeRole",
    RoleAdd = "etcdserverpb.Auth" / "RoleAdd",
    RoleGet = "etcdserverpb.Auth" / "RoleGet",
    RoleList = "etcdserverpb.Auth" / "RoleList",
    RoleDelete = "etcdserverpb.Auth" / "RoleDelete",
    RoleGrantPermission = "etcdserverpb.Auth" / "RoleGrantPermission",
    RoleRevokePermission = "etcdserverpb.Auth" / "RoleRevokePermission",
    Lock = "v3lockpb.Lock" / "Lock",
    Unlock = "v3lockpb.Lock" / "Unlock",
    Campaign = "v3electionpb.Election" / "Campaign",
    Proclaim = "v3electionpb.Election" / "Proclaim",
    Leader = "v3electionpb.Election" / "Leader",
    Observe = "v3electionpb.Election" / "Observe",
    Resign = "v3electionpb.Election" / "Resign",
    HealthCheck = "grpc.health.v1.Health" / "Check",
    HealthWatch = "grpc.health.v1.Health" / "Watch",
}

impl Operation {
    /// The operation etcd calls `name` ("Put", "HashKV"); gRPC health's methods are
    /// "Health.Check" and "Health.Watch" here, since etcd's Watch is "Watch".
    pub fn from_name(name: &str) -> Option<Operation> {
        let health = name.strip_prefix("Health.");
        Operation::ALL.iter().copied().find(|op| match health {
            Some(method) => op.service() == "grpc.health.v1.Health" && op.name() == method,
            None => op.service() != "grpc.health.v1.Health" && op.name() == name,
        })
    }
}

/// The operations a plugin's configuration names by etcd's method names (see
/// [`Operation::from_name`]); an unknown name is an error that names `option`.
pub fn operations(option: &str, names: &[String]) -> Result<Vec<Operation>, String> {
    (names.iter())
        .map(|name| {
            Operation::from_name(name)
                .ok_or_else(|| format!("{option}: {name:?} is not one of etcd's methods"))
        })
        .collect()
}

impl Verdict {
    /// "allow", "deny" or "allow-in-namespace".
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::AllowInNamespace => "allow-in-namespace",
        }
    }
}

impl ServedBy {
    /// "mirror", "upstream", "hub" or "keygate".
    pub fn name(self) -> &'static str {
        match self {
            ServedBy::Mirror => "mirror",
            ServedBy::Upstream => "upstream",
            ServedBy::Hub => "hub",
            ServedBy::Keygate => "keygate",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_go_both_ways() {
        for &op in Operation::ALL {
            let name = match op.service() {
                "grpc.health.v1.Health" => format!("Health.{}", op.name()),
                _ => op.name().to_string(),
            };
            assert_eq!(Operation::from_name(&name), Some(op), "{name}");
        }
        assert_eq!(Operation::from_name("Watch"), Some(Operation::Watch));
        assert_eq!(Operation::from_name("Check"), None);
        assert_eq!(Operation::from_name("put"), None);
    }

    #[test]
    fn configured_names_are_checked() {
        let names = ["Put".to_string(), "Health.Check".to_string()];
        assert_eq!(
            operations("methods", &names),
            Ok(vec![Operation::Put, Operation::HealthCheck])
        );
        let err = operations("methods", &["Get".to_string()]).unwrap_err();
        assert!(err.starts_with("methods: \"Get\""), "{err}");
    }
}
