//! Audit to JSON lines: one record per request, for the configured methods (all when empty),
//! with keys cut after `key_segments` "/"-separated segments when set (the rest becomes "…").
//! Values never reach a plugin; only their total size does.
//!
//! Config: {"methods": ["Put", "DeleteRange", "Txn"], "key_segments": 2, "outcomes": "all" | "denied"}

use keygate_plugin_sdk::auditor::{
    export_auditor, Access, AuditEvent, Guest, IdentitySource, KeyRange, Operation,
};
use keygate_plugin_sdk::{operations, parse_config, State};
use std::borrow::Cow;

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    methods: Vec<String>,
    key_segments: Option<usize>,
    outcomes: Outcomes,
}

/// The configuration with its method names resolved.
struct Settings {
    methods: Vec<Operation>,
    key_segments: Option<usize>,
    outcomes: Outcomes,
}

#[derive(serde::Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Outcomes {
    #[default]
    All,
    Denied,
}

static CONFIG: State<Settings> = State::new();

/// Room for a typical record (a request naming one or two keys).
const RECORD_BYTES: usize = 512;

fn key(bytes: &[u8], segments: Option<usize>) -> Cow<'_, str> {
    let text = String::from_utf8_lossy(bytes);
    let Some(keep) = segments else {
        return text;
    };
    let mut cut = String::new();
    for (i, part) in text.split_inclusive('/').enumerate() {
        if i == keep {
            cut.push('…');
            return Cow::Owned(cut);
        }
        cut.push_str(part);
    }
    Cow::Owned(cut)
}

/// One record, serialized straight from borrowed fields (no intermediate JSON tree).
#[derive(serde::Serialize)]
struct Record<'a> {
    time_us: u64,
    identity: Who<'a>,
    method: &'static str,
    service: &'static str,
    ranges: Vec<Range<'a>>,
    value_bytes: u64,
    lease: i64,
    decision: &'static str,
    status_code: u32,
    status_message: &'a str,
    revision: i64,
    latency_us: u64,
    served_by: &'static str,
}

#[derive(serde::Serialize)]
struct Who<'a> {
    source: &'static str,
    name: &'a str,
    peer: &'a str,
}

#[derive(serde::Serialize)]
struct Range<'a> {
    key: Cow<'a, str>,
    range_end: Cow<'a, str>,
    access: &'static str,
}

fn range(r: &KeyRange, segments: Option<usize>) -> Range<'_> {
    let access = match r.access {
        Access::Read => "read",
        Access::Write => "write",
        Access::Watch => "watch",
        Access::Compare => "compare",
    };
    Range {
        key: key(&r.key, segments),
        range_end: key(&r.range_end, segments),
        access,
    }
}

fn record(e: &AuditEvent, config: &Settings) -> String {
    let source = match e.identity.source {
        IdentitySource::Anonymous => "anonymous",
        IdentitySource::Certificate => "certificate",
        IdentitySource::EtcdToken => "etcd_token",
        IdentitySource::Bearer => "bearer",
    };
    let record = Record {
        time_us: e.time_us,
        identity: Who {
            source,
            name: &e.identity.name,
            peer: &e.identity.peer,
        },
        method: e.request.operation.name(),
        service: e.request.operation.service(),
        ranges: (e.request.ranges.iter())
            .map(|r| range(r, config.key_segments))
            .collect(),
        value_bytes: e.request.value_bytes,
        lease: e.request.lease,
        decision: e.decision.name(),
        status_code: e.status_code,
        status_message: &e.status_message,
        revision: e.revision,
        latency_us: e.latency_us,
        served_by: e.served_by.name(),
    };
    // One allocation for most records; serializing plain strings and numbers cannot fail.
    let mut line = Vec::with_capacity(RECORD_BYTES);
    match serde_json::to_writer(&mut line, &record) {
        Ok(()) => String::from_utf8(line).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

struct AuditJsonl;

impl Guest for AuditJsonl {
    fn init(config: String) -> Result<(), String> {
        let config: Config = parse_config(&config)?;
        CONFIG.set(Settings {
            methods: operations("methods", &config.methods)?,
            key_segments: config.key_segments,
            outcomes: config.outcomes,
        })
    }

    fn on_batch(events: Vec<AuditEvent>) -> Vec<String> {
        let Some(config) = CONFIG.get() else {
            return Vec::new();
        };
        events
            .iter()
            .filter(|e| config.methods.is_empty() || config.methods.contains(&e.request.operation))
            .filter(|e| config.outcomes == Outcomes::All || e.status_code != 0)
            .map(|e| record(e, config))
            .collect()
    }
}

export_auditor!(AuditJsonl);
