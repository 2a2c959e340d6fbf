//! The one wasmtime Engine every plugin runs on: component model without async, epoch
//! interruption for time limits (a thread advances the epoch every millisecond), and an
//! on-disk cache of compiled components.

use super::authorizer::HostState;
use super::PolicyError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Cache, CacheConfig, Config, Engine};

/// How often the epoch advances: the granularity of plugin time limits.
pub const TICK: Duration = Duration::from_millis(1);

/// The shared engine and its epoch ticker, which stops when this is dropped.
pub struct PluginEngine {
    pub engine: Engine,
    stop: Arc<AtomicBool>,
}

impl PluginEngine {
    pub fn new(cache_dir: &str) -> Result<Self, PolicyError> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .concurrency_support(false)
            .epoch_interruption(true)
            .max_wasm_stack(512 * 1024);
        // For profiling plugins with `perf`: wasmtime writes /tmp/perf-<pid>.map naming the
        // compiled plugin functions (docs/plugins.md, "Profiling a plugin").
        if std::env::var_os("KEYGATE_PLUGIN_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if !cache_dir.is_empty() {
            let mut cache = CacheConfig::new();
            cache.with_directory(cache_dir);
            let cache = Cache::new(cache).map_err(|e| PolicyError::Engine(e.to_string()))?;
            config.cache(Some(cache));
        }
        let engine = Engine::new(&config).map_err(|e| PolicyError::Engine(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ticking, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| PolicyError::Engine(e.to_string()))?;
        Ok(PluginEngine { engine, stop })
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Compiles a plugin component and links it for `HostState`: the world's host imports (added by
/// `add`), and a trap for every other import — the Rust standard library of wasm32-wasip2
/// imports WASI, and a plugin gets none of it. The error is the loader's message.
pub fn prepare(
    engine: &Engine,
    bytes: &[u8],
    add: impl FnOnce(&mut Linker<HostState>) -> wasmtime::Result<()>,
) -> Result<InstancePre<HostState>, String> {
    let component = Component::new(engine, bytes).map_err(|e| format!("{e:#}"))?;
    let mut linker = Linker::<HostState>::new(engine);
    add(&mut linker).map_err(|e| format!("{e:#}"))?;
    linker
        .define_unknown_imports_as_traps(&component)
        .map_err(|e| format!("{e:#}"))?;
    linker
        .instantiate_pre(&component)
        .map_err(|e| format!("{e:#}"))
}

/// A plugin's memory cap in bytes.
pub fn memory_cap(memory_mib: u64) -> usize {
    usize::try_from(memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
}
