//! One authorizer plugin: its compiled component, pre-instantiated; a small pool of idle
//! instances reused across requests; and the guard rails of every call (memory cap, CPU
//! deadline). An instance whose call fails in any way is dropped, never reused.

use super::{convert, deadline, Failure, PolicyError};
use crate::config::PluginConfig;
use crate::describe::Description;
use crate::identity::Identity;
use crate::metrics::PluginMetrics;
use std::sync::Mutex;
use std::time::Instant;
use wasmtime::component::HasSelf;
use wasmtime::{Engine, ResourceLimiter, Store, Trap};

/// Host bindings of the authorizer world.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugins/wit",
        world: "authorizer",
    });
}

use bindings::keygate::plugin::host::Level;
use bindings::keygate::plugin::types as wit;
pub use bindings::keygate::plugin::types::Decision;
use bindings::{Authorizer, AuthorizerPre};

/// What a plugin's store holds: its name, its metrics, its memory budget and its time budget.
pub struct HostState {
    plugin: String,
    metrics: PluginMetrics,
    memory_cap: usize,
    out_of_memory: bool,
    pub(super) budget: deadline::Budget,
}

impl HostState {
    pub(super) fn new(plugin: &str, metrics: &PluginMetrics, memory_cap: usize) -> Self {
        HostState {
            plugin: plugin.to_string(),
            metrics: metrics.clone(),
            memory_cap,
            out_of_memory: false,
            budget: deadline::Budget::default(),
        }
    }
}

impl bindings::keygate::plugin::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let plugin = &self.plugin;
        match level {
            Level::Error => tracing::error!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
        }
    }

    fn count(&mut self, name: String, delta: u64) {
        self.metrics
            .counters
            .with_label_values(&[self.plugin.as_str(), name.as_str()])
            .inc_by(delta);
    }
}

impl wit::Host for HostState {}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.out_of_memory = true;
            return Err(wasmtime::format_err!(
                "plugin memory cap of {} bytes reached",
                self.memory_cap
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

struct Instance {
    store: Store<HostState>,
    bindings: Authorizer,
}

/// A loaded, initialised authorizer.
pub struct Plugin {
    pub name: String,
    engine: Engine,
    pre: AuthorizerPre<HostState>,
    config_json: String,
    memory_cap: usize,
    deadline_ticks: u64,
    /// The time limit of making an instance and its `init`.
    init_ticks: u64,
    pub fail_open: bool,
    idle: Mutex<Vec<Instance>>,
    max_idle: usize,
    metrics: PluginMetrics,
    /// This plugin's series, resolved once: a label lookup per call would cost more than the
    /// call.
    calls: prometheus::IntCounter,
    latency: prometheus::Histogram,
    /// Decisions: allow, deny, allow_in_namespace, failure.
    pub decisions: [prometheus::IntCounter; 4],
}

impl Plugin {
    /// Compiles (or loads from the cache) the component at `config.path`, links it, and makes
    /// one instance whose `init` must succeed.
    pub fn load(
        engine: &Engine,
        config: &PluginConfig,
        metrics: &PluginMetrics,
    ) -> Result<Self, PolicyError> {
        let name = config.display_name();
        let bytes = std::fs::read(&config.path).map_err(|e| PolicyError::Load {
            plugin: name.clone(),
            message: format!("reading {}: {e}", config.path),
        })?;
        Self::from_bytes(engine, config, &bytes, metrics)
    }

    pub fn from_bytes(
        engine: &Engine,
        config: &PluginConfig,
        bytes: &[u8],
        metrics: &PluginMetrics,
    ) -> Result<Self, PolicyError> {
        let name = config.display_name();
        let load_error = |message: String| PolicyError::Load {
            plugin: name.clone(),
            message,
        };
        let instance_pre = super::engine::prepare(engine, bytes, |linker| {
            Authorizer::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
        })
        .map_err(load_error)?;
        let pre = AuthorizerPre::new(instance_pre).map_err(|e| load_error(format!("{e:#}")))?;
        let config_json = serde_json::to_string(&config.config)
            .map_err(|e| load_error(format!("config: {e}")))?;
        let plugin = Plugin {
            name: name.clone(),
            engine: engine.clone(),
            pre,
            config_json,
            memory_cap: super::engine::memory_cap(config.memory_mib),
            deadline_ticks: config.timeout_ms.max(1),
            init_ticks: config.init_timeout_ms.max(1),
            fail_open: config.on_failure == "allow",
            idle: Mutex::new(Vec::new()),
            max_idle: config.instances.max(1),
            metrics: metrics.clone(),
            calls: metrics
                .calls
                .with_label_values(&[name.as_str(), "authorize"]),
            latency: metrics.latency.with_label_values(&[name.as_str()]),
            decisions: ["allow", "deny", "allow_in_namespace", "failure"]
                .map(|d| metrics.decisions.with_label_values(&[name.as_str(), d])),
        };
        let first = plugin
            .instantiate()
            .map_err(|f| load_error(f.to_string()))?;
        plugin.release(first);
        Ok(plugin)
    }

    /// A fresh instance, initialised with the plugin's configuration.
    fn instantiate(&self) -> Result<Instance, Failure> {
        self.metrics
            .instances
            .with_label_values(&[&self.name])
            .inc();
        let state = HostState::new(&self.name, &self.metrics, self.memory_cap);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s);
        deadline::install(&mut store);
        deadline::arm(&mut store, self.init_ticks);
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&store, &e))?;
        match bindings.call_init(&mut store, &self.config_json) {
            Ok(Ok(())) => Ok(Instance { store, bindings }),
            Ok(Err(reason)) => Err(Failure::Init(reason)),
            Err(e) => Err(classify(&store, &e)),
        }
    }

    fn acquire(&self) -> Result<Instance, Failure> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(instance) => Ok(instance),
            None => self.instantiate(),
        }
    }

    fn release(&self, instance: Instance) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(instance);
            }
        }
    }

    /// Asks the plugin. Any failure — trap, deadline, memory cap, init error of a fresh
    /// instance — is returned as such and the instance is discarded.
    pub fn authorize(&self, who: &wit::Identity, what: &wit::Request) -> Result<Decision, Failure> {
        let started = Instant::now();
        self.calls.inc();
        let result = self.acquire().and_then(|mut instance| {
            deadline::arm(&mut instance.store, self.deadline_ticks);
            match instance
                .bindings
                .call_authorize(&mut instance.store, who, what)
            {
                Ok(decision) => {
                    self.release(instance);
                    Ok(decision)
                }
                Err(e) => Err(classify(&instance.store, &e)),
            }
        });
        self.latency.observe(started.elapsed().as_secs_f64());
        if let Err(failure) = &result {
            let kind = failure.kind();
            self.metrics
                .traps
                .with_label_values(&[&self.name, kind])
                .inc();
            if kind == "deadline" {
                self.metrics
                    .deadline_hits
                    .with_label_values(&[&self.name])
                    .inc();
            }
        }
        result
    }

    /// Convenience for tests and `keygate plugin check`: authorize a described request.
    pub fn authorize_description(
        &self,
        who: &Identity,
        what: &Description,
    ) -> Result<Decision, Failure> {
        self.authorize(&convert::identity(who), &convert::request(what))
    }
}

pub(super) fn classify(store: &Store<HostState>, e: &wasmtime::Error) -> Failure {
    if store.data().out_of_memory {
        return Failure::Memory;
    }
    if store.data().budget.hit {
        return Failure::Deadline;
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::Deadline,
        Some(Trap::UnreachableCodeReached) => Failure::Panic,
        Some(trap) => Failure::Trap(trap.to_string()),
        // A WASI function (defined as a trap); a Rust panic asks for the environment first.
        None if format!("{e:#}").contains("unknown import") => Failure::Import(format!("{e:#}")),
        None => Failure::Error(format!("{e:#}")),
    }
}
