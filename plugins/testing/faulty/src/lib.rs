//! A plugin that misbehaves on purpose, for keygate's fault tests. It allows everything,
//! except a request whose first key starts with "loop" (spins forever), "panic" (panics),
//! "oom" (allocates until the memory cap), "deny" (denies) or "spin/N" (counts to N, then
//! allows: a call of known work). Config {"fail_init": "why"}
//! makes init fail, {"loop_init": true} makes it spin forever.

use keygate_plugin_sdk::authorizer::{
    deny, export_authorizer, log, Decision, Guest, Identity, Level, Request,
};
use keygate_plugin_sdk::{parse_config, State};

#[derive(serde::Deserialize, Default)]
// Lenient: the reload test swaps it in for another plugin with that plugin's configuration.
#[serde(default)]
struct Config {
    fail_init: Option<String>,
    loop_init: bool,
}

static CONFIG: State<Config> = State::new();

struct Faulty;

impl Guest for Faulty {
    fn init(config: String) -> Result<(), String> {
        let config: Config = parse_config(&config)?;
        if let Some(why) = &config.fail_init {
            return Err(why.clone());
        }
        if config.loop_init {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        log(Level::Info, "faulty plugin ready");
        CONFIG.set(config)
    }

    fn authorize(_who: Identity, what: Request) -> Decision {
        let key = what
            .ranges
            .first()
            .map(|r| r.key.as_slice())
            .unwrap_or_default();
        if key.starts_with(b"loop") {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if let Some(n) = key.strip_prefix(b"spin/") {
            let n: u64 = std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let mut i: u64 = 0;
            while std::hint::black_box(i) < n {
                i += 1;
            }
            return Decision::Allow;
        }
        if key.starts_with(b"panic") {
            panic!("faulty plugin panics on request");
        }
        if key.starts_with(b"oom") {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        if key.starts_with(b"deny") {
            return deny("faulty: denied");
        }
        Decision::Allow
    }
}

export_authorizer!(Faulty);
