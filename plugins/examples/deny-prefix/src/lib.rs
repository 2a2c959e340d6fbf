//! Protected prefixes: no write (Put, DeleteRange, a Txn branch) may touch a key under one of
//! the configured prefixes, except by the listed identities.
//!
//! Config: {"prefixes": ["/registry/secrets/"], "except": ["root"]}

use keygate_plugin_sdk::authorizer::{
    count, deny, export_authorizer, Decision, Guest, Identity, Request,
};
use keygate_plugin_sdk::{keys, parse_config, State};

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    prefixes: Vec<String>,
    except: Vec<String>,
}

static CONFIG: State<Config> = State::new();

struct DenyPrefix;

impl Guest for DenyPrefix {
    fn init(config: String) -> Result<(), String> {
        let config: Config = parse_config(&config)?;
        if config.prefixes.iter().any(String::is_empty) {
            return Err("prefixes: an empty prefix would protect every key".into());
        }
        CONFIG.set(config)
    }

    fn authorize(who: Identity, what: Request) -> Decision {
        let Some(config) = CONFIG.get() else {
            return deny("deny-prefix: not initialised");
        };
        if config.except.contains(&who.name) {
            return Decision::Allow;
        }
        for range in what.writes() {
            for prefix in &config.prefixes {
                if keys::overlaps(&range.key, &range.range_end, prefix.as_bytes()) {
                    count("denied", 1);
                    return deny(format!(
                        "etcdserver: permission denied: {prefix} is protected"
                    ));
                }
            }
        }
        Decision::Allow
    }
}

export_authorizer!(DenyPrefix);
