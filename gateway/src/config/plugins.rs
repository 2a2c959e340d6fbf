//! [plugins]: WebAssembly authorizers, in the order they are asked.

use serde::Deserialize;

/// Authorization plugins.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Directory where compiled plugins are kept between runs (keyed by content hash, wasmtime
    /// version and engine settings); empty: compile on every start.
    pub cache_dir: String,
    /// How often plugin files are checked for a new version (SIGHUP reloads them too); 0:
    /// only on SIGHUP.
    pub reload_interval_ms: u64,
    /// Authorizers, asked in this order for every RPC; the first deny wins. Empty: no
    /// authorization beyond etcd's own.
    pub authorizers: Vec<PluginConfig>,
    /// The audit pipeline: every request's record through an auditor plugin.
    pub audit: AuditConfig,
}

/// [plugins.audit]: an auditor plugin turns batches of request events into the records keygate
/// writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The auditor plugin (.wasm); empty: no audit.
    pub path: String,
    /// Passed to the auditor's init as JSON.
    pub config: toml::Table,
    /// Where records go: "stdout" or a file path (JSON lines).
    pub output: String,
    /// Rotate the output file when it reaches this size (the old one becomes FILE.1); 0: never.
    pub rotate_bytes: u64,
    /// Events waiting for the auditor, at most.
    pub queue: usize,
    /// Events handed to the auditor in one call, at most.
    pub batch: usize,
    /// When the queue is full: "block" the request until there is room, or "drop" the event
    /// and count it (keygate_audit_dropped_total).
    pub on_full: String,
    /// Linear memory cap of the auditor, in MiB.
    pub memory_mib: u64,
    /// CPU time limit of one batch call, in milliseconds (policy/deadline.rs).
    pub timeout_ms: u64,
    /// CPU time limit of `init` (and of making the instance), in milliseconds.
    pub init_timeout_ms: u64,
}

/// `init` parses configuration and builds tables once per instance; it is off the request
/// path for a new version (loaded in the background) and rare on it (a fresh instance after a
/// failure, or one more for a new concurrent caller), so it gets far more time than a call.
/// A loop in it is still caught.
const INIT_TIMEOUT_MS: u64 = 1000;

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: String::new(),
            config: toml::Table::new(),
            output: "stdout".into(),
            rotate_bytes: 0,
            queue: 10000,
            batch: 256,
            on_full: "block".into(),
            memory_mib: 64,
            timeout_ms: 100,
            init_timeout_ms: INIT_TIMEOUT_MS,
        }
    }
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            cache_dir: String::new(),
            reload_interval_ms: 1000,
            authorizers: Vec::new(),
            audit: AuditConfig::default(),
        }
    }
}

/// One plugin (a [[plugins.authorizers]] table).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginConfig {
    /// Name in logs and metrics; defaults to the file name without extension.
    pub name: String,
    /// Path of the WebAssembly component (.wasm).
    pub path: String,
    /// Passed to the plugin's init as JSON.
    pub config: toml::Table,
    /// Linear memory cap of one instance, in MiB.
    pub memory_mib: u64,
    /// CPU time limit of one call, in milliseconds (policy/deadline.rs).
    pub timeout_ms: u64,
    /// CPU time limit of `init` (and of making the instance), in milliseconds.
    pub init_timeout_ms: u64,
    /// What a request gets when the plugin traps, loops or runs out of memory: "deny" or
    /// "allow".
    pub on_failure: String,
    /// Most idle instances kept for reuse.
    pub instances: usize,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            name: String::new(),
            path: String::new(),
            config: toml::Table::new(),
            memory_mib: 16,
            timeout_ms: 10,
            init_timeout_ms: INIT_TIMEOUT_MS,
            on_failure: "deny".into(),
            instances: 16,
        }
    }
}

impl PluginConfig {
    /// The configured name, else the file's stem.
    pub fn display_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        file_stem(&self.path)
    }
}

impl AuditConfig {
    /// The auditor's name in logs and metrics: its file's stem.
    pub fn display_name(&self) -> String {
        file_stem(&self.path)
    }
}

fn file_stem(path: &str) -> String {
    std::path::Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}
