//! `keygate plugin check FILE [--config FILE]`: loads a plugin as keygate would, runs its
//! init, asks it about two sample requests, and reports what it imports and exports.

use super::authorizer::Plugin;
use super::engine::PluginEngine;
use crate::config::PluginConfig;
use crate::describe::Description;
use crate::identity::{Identity, Source};
use crate::method;
use crate::metrics::PluginMetrics;
use keygate_proto::etcdserverpb::{PutRequest, RangeRequest};
use std::fmt::Write;
use wasmtime::component::Component;

/// The report, or why the plugin would not load.
pub fn check(file: &str, config_file: Option<&str>) -> Result<String, String> {
    let config = match config_file {
        None => toml::Table::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            text.parse::<toml::Table>()
                .map_err(|e| format!("{path}: {e}"))?
        }
    };
    let plugin_config = PluginConfig {
        path: file.to_string(),
        config,
        ..PluginConfig::default()
    };
    let engine = PluginEngine::new("").map_err(|e| e.to_string())?;
    let bytes = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
    let component = Component::new(&engine.engine, &bytes).map_err(|e| format!("{file}: {e:#}"))?;
    let mut out = String::new();
    let ty = component.component_type();
    for (name, _) in ty.imports(&engine.engine) {
        let _ = writeln!(out, "imports {name}");
    }
    for (name, _) in ty.exports(&engine.engine) {
        let _ = writeln!(out, "exports {name}");
    }
    let registry = prometheus::Registry::new();
    let metrics = PluginMetrics::register(&registry).map_err(|e| e.to_string())?;
    let plugin = Plugin::from_bytes(&engine.engine, &plugin_config, &bytes, &metrics)
        .map_err(|e| e.to_string())?;
    let _ = writeln!(out, "init: ok (world keygate:plugin/authorizer@0.2.0)");
    let who = Identity {
        source: Source::Anonymous,
        name: String::new(),
        cert: None,
        peer: None,
    };
    let get = RangeRequest {
        key: b"foo".to_vec().into(),
        ..Default::default()
    };
    let put = PutRequest {
        key: b"foo".to_vec().into(),
        value: b"bar".to_vec().into(),
        ..Default::default()
    };
    for (label, description) in [
        ("anonymous get foo", Description::of(&method::RANGE, &get)),
        ("anonymous put foo", Description::of(&method::PUT, &put)),
    ] {
        match plugin.authorize_description(&who, &description) {
            Ok(decision) => {
                let _ = writeln!(out, "{label}: {decision:?}");
            }
            Err(failure) => return Err(format!("{label}: plugin failed: {failure}")),
        }
    }
    Ok(out)
}
