//! What the Wasm host's tests share: plugins built from plugins/, engines, configurations,
//! identities and requests.
#![allow(dead_code)] // each test binary uses its own part

use keygate::config::{AuditConfig, PluginConfig, PluginsConfig};
use keygate::describe::Description;
use keygate::identity::{Identity, Source};
use keygate::method;
use keygate::metrics::PluginMetrics;
use keygate::policy::engine::PluginEngine;
use keygate::policy::Policy;
use keygate_proto::etcdserverpb::{PutRequest, RangeRequest};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// A plugin engine as keygate makes one, caching compiled components in `cache_dir`.
pub fn engine(cache_dir: &str) -> Arc<PluginEngine> {
    Arc::new(PluginEngine::new(cache_dir).expect("engine"))
}

/// The authorizer chain of `config` on an engine of its own.
pub fn load_policy(
    config: &PluginsConfig,
    metrics: &PluginMetrics,
) -> Result<Option<Policy>, keygate::policy::PolicyError> {
    Policy::load(config, &engine(&config.cache_dir), metrics)
}

/// Builds the plugins once per test binary; returns the directory of the .wasm files.
pub fn plugins() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = std::process::Command::new("bash")
            .arg(root.join("scripts/build-plugins.sh"))
            .output();
        match out {
            Ok(out) if out.status.success() => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
            }
            Ok(out) => panic!(
                "scripts/build-plugins.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("scripts/build-plugins.sh: {e}"),
        }
    })
    .clone()
}

pub fn plugin_config(file: &str, config: &str) -> PluginConfig {
    PluginConfig {
        path: plugins().join(file).to_string_lossy().into_owned(),
        config: config.parse().unwrap_or_else(|e| panic!("{config}: {e}")),
        timeout_ms: 20,
        memory_mib: 8,
        ..PluginConfig::default()
    }
}

pub fn who(name: &str) -> Identity {
    Identity {
        source: Source::Certificate,
        name: name.into(),
        cert: None,
        peer: None,
    }
}

pub fn get(key: &'static [u8]) -> Description {
    let r = RangeRequest {
        key: key.into(),
        ..Default::default()
    };
    Description::of(&method::RANGE, &r)
}

pub fn put(key: &'static [u8]) -> Description {
    let r = PutRequest {
        key: key.into(),
        value: b"v".as_slice().into(),
        ..Default::default()
    };
    Description::of(&method::PUT, &r)
}

pub fn metrics() -> (prometheus::Registry, PluginMetrics) {
    let registry = prometheus::Registry::new();
    let metrics = PluginMetrics::register(&registry).expect("metrics");
    (registry, metrics)
}

/// audit-jsonl writing every request to `output`, rotated at `rotate_bytes`.
pub fn audit_jsonl_config(output: &std::path::Path, rotate_bytes: u64) -> AuditConfig {
    AuditConfig {
        path: plugins()
            .join("audit_jsonl.wasm")
            .to_string_lossy()
            .into_owned(),
        output: output.to_string_lossy().into_owned(),
        rotate_bytes,
        ..AuditConfig::default()
    }
}

/// A caller from a known address reading one Kubernetes-like key, serializable.
pub fn pod_get() -> (Identity, RangeRequest) {
    let alice = Identity {
        peer: Some("127.0.0.1:40112".into()),
        ..who("alice")
    };
    let request = RangeRequest {
        key: b"/registry/pods/default/web-0".as_slice().into(),
        serializable: true,
        ..Default::default()
    };
    (alice, request)
}
