//! Tenant isolation: each configured identity is a tenant that owns a key prefix; admins see
//! everything; anyone else is refused.
//!
//! Config: {"tenants": {"alice": "/tenants/alice/"}, "admins": ["root"],
//!          "mode": "check" | "namespace", "tenant_methods": ["Status"],
//!          "cluster_methods": []}
//! "check" (the default) allows a tenant the key-value, watch and lease RPCs (and
//! `tenant_methods`) only when every key it names already lies inside its prefix.
//! "namespace" answers allow-in-namespace for every RPC: keygate adds the prefix to every key
//! and refuses the cluster-wide RPCs, except `cluster_methods`, which are allowed as they are.
//! Namespaces must not overlap: no tenant's prefix may be a prefix of another's.

use keygate_plugin_sdk::authorizer::{
    export_authorizer, permission_denied, Decision, Guest, Identity, Operation, Request,
};
use keygate_plugin_sdk::{keys, operations, parse_config, State};
use std::collections::BTreeMap;

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    tenants: BTreeMap<String, String>,
    admins: Vec<String>,
    mode: Mode,
    tenant_methods: Vec<String>,
    cluster_methods: Vec<String>,
}

/// The configuration, checked, with method names resolved.
struct Rules {
    tenants: BTreeMap<String, String>,
    admins: Vec<String>,
    mode: Mode,
    tenant_methods: Vec<Operation>,
    cluster_methods: Vec<Operation>,
}

impl Config {
    fn check(self) -> Result<Rules, String> {
        for (name, prefix) in &self.tenants {
            if prefix.is_empty() {
                return Err(format!("tenants.{name}: empty prefix"));
            }
            let overlap = self
                .tenants
                .iter()
                .find(|(other, p)| *other != name && p.starts_with(prefix.as_str()));
            if let Some((other, p)) = overlap {
                return Err(format!(
                    "tenants.{name} ({prefix:?}) is a prefix of tenants.{other} ({p:?}): namespaces would overlap"
                ));
            }
        }
        Ok(Rules {
            tenant_methods: operations("tenant_methods", &self.tenant_methods)?,
            cluster_methods: operations("cluster_methods", &self.cluster_methods)?,
            tenants: self.tenants,
            admins: self.admins,
            mode: self.mode,
        })
    }
}

#[derive(serde::Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Check,
    Namespace,
}

/// What a tenant may call, besides `tenant_methods`.
const TENANT_METHODS: &[Operation] = &[
    Operation::Range,
    Operation::Put,
    Operation::DeleteRange,
    Operation::Txn,
    Operation::Watch,
    Operation::LeaseGrant,
    Operation::LeaseRevoke,
    Operation::LeaseKeepAlive,
    Operation::LeaseTimeToLive,
];

static CONFIG: State<Rules> = State::new();

struct TenantIsolation;

impl Guest for TenantIsolation {
    fn init(config: String) -> Result<(), String> {
        CONFIG.set(parse_config::<Config>(&config)?.check()?)
    }

    fn authorize(who: Identity, what: Request) -> Decision {
        let Some(config) = CONFIG.get() else {
            return permission_denied();
        };
        if config.admins.contains(&who.name) {
            return Decision::Allow;
        }
        let Some(prefix) = config.tenants.get(&who.name) else {
            return permission_denied();
        };
        if config.mode == Mode::Namespace {
            if config.cluster_methods.contains(&what.operation) {
                return Decision::Allow;
            }
            return Decision::AllowInNamespace(prefix.as_bytes().to_vec());
        }
        let method_ok = TENANT_METHODS.contains(&what.operation)
            || config.tenant_methods.contains(&what.operation);
        if !method_ok {
            return permission_denied();
        }
        let inside = what
            .ranges
            .iter()
            .all(|r| keys::within(&r.key, &r.range_end, prefix.as_bytes()));
        if inside {
            Decision::Allow
        } else {
            permission_denied()
        }
    }
}

export_authorizer!(TenantIsolation);
