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
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            cache_dir: String::new(),
            reload_interval_ms: 1000,
            authorizers: Vec::new(),
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
    /// Time limit of one call, in milliseconds.
    pub timeout_ms: u64,
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
        std::path::Path::new(&self.path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.clone())
    }
}
