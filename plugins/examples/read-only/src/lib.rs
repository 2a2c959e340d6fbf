//! Read-only roles: the named identities may only call RPCs that change nothing (Range,
//! Watch, Status, ...). Everyone else is left to the next authorizer.
//!
//! Config: {"identities": ["viewer"]}

use keygate_plugin_sdk::authorizer::{
    export_authorizer, permission_denied, Decision, Guest, Identity, Request,
};
use keygate_plugin_sdk::{parse_config, State};

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    identities: Vec<String>,
}

static CONFIG: State<Config> = State::new();

struct ReadOnly;

impl Guest for ReadOnly {
    fn init(config: String) -> Result<(), String> {
        CONFIG.set(parse_config(&config)?)
    }

    fn authorize(who: Identity, what: Request) -> Decision {
        let Some(config) = CONFIG.get() else {
            return permission_denied();
        };
        if what.read_only || !config.identities.contains(&who.name) {
            Decision::Allow
        } else {
            permission_denied()
        }
    }
}

export_authorizer!(ReadOnly);
