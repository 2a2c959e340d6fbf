//! Tenant isolation: each configured identity is a tenant that owns a key prefix; admins see
//! everything; anyone else is refused. A tenant may use the key-value, watch and lease RPCs on
//! keys inside its prefix and nothing cluster-wide.
//!
//! Config: {"tenants": {"alice": "/tenants/alice/"}, "admins": ["root"],
//!          "mode": "check" | "namespace", "tenant_methods": ["Status"]}
//! "check" (the default) allows a tenant's request only when every key it names already lies
//! inside its prefix; "namespace" answers allow-in-namespace and lets keygate add the prefix.

use keygate_plugin_sdk::authorizer::{
    export_authorizer, permission_denied, Decision, Guest, Identity, Request,
};
use keygate_plugin_sdk::{keys, parse_config, State};
use std::collections::BTreeMap;

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    tenants: BTreeMap<String, String>,
    admins: Vec<String>,
    mode: Mode,
    tenant_methods: Vec<String>,
}

#[derive(serde::Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Check,
    Namespace,
}

/// What a tenant may call, besides `tenant_methods`.
const TENANT_METHODS: &[&str] = &[
    "Range",
    "Put",
    "DeleteRange",
    "Txn",
    "Watch",
    "LeaseGrant",
    "LeaseRevoke",
    "LeaseKeepAlive",
    "LeaseTimeToLive",
];

static CONFIG: State<Config> = State::new();

struct TenantIsolation;

impl Guest for TenantIsolation {
    fn init(config: String) -> Result<(), String> {
        CONFIG.set(parse_config(&config)?)
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
        let method_ok = TENANT_METHODS.contains(&what.method.as_str())
            || config.tenant_methods.contains(&what.method);
        if !method_ok {
            return permission_denied();
        }
        if config.mode == Mode::Namespace {
            return Decision::AllowInNamespace(prefix.as_bytes().to_vec());
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
