//! The auditor plugin: one instance, called from the audit worker thread with batches of
//! events; replaced by a fresh one when a call fails.

use super::authorizer::{classify, HostState};
use super::{Failure, PolicyError};
use crate::config::AuditConfig;
use crate::metrics::PluginMetrics;
use wasmtime::component::HasSelf;
use wasmtime::{Engine, Store};

/// Host bindings of the auditor world, sharing the authorizer's types and host imports.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugins/wit",
        world: "auditor",
        with: {
            "keygate:plugin/types": crate::policy::authorizer::bindings::keygate::plugin::types,
            "keygate:plugin/host": crate::policy::authorizer::bindings::keygate::plugin::host,
        },
    });
}

use super::convert::AuditEventView;
use wasmtime::component::Func;

/// `on-batch` called with events borrowed from keygate's records (see `AuditEventView`).
type OnBatch<'a> = (&'a [AuditEventView<'a>],);

pub struct Auditor {
    pub name: String,
    engine: Engine,
    pre: bindings::AuditorPre<HostState>,
    config_json: String,
    memory_cap: usize,
    deadline_ticks: u64,
    /// The time limit of making an instance and its `init`.
    init_ticks: u64,
    metrics: PluginMetrics,
    instance: Option<(Store<HostState>, Func)>,
}

impl Auditor {
    pub fn load(
        engine: &Engine,
        config: &AuditConfig,
        metrics: &PluginMetrics,
    ) -> Result<Self, PolicyError> {
        let name = config.display_name();
        let load_error = |message: String| PolicyError::Load {
            plugin: name.clone(),
            message,
        };
        let bytes = std::fs::read(&config.path)
            .map_err(|e| load_error(format!("reading {}: {e}", config.path)))?;
        let pre = super::engine::prepare(engine, &bytes, |linker| {
            bindings::Auditor::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
        })
        .and_then(|pre| bindings::AuditorPre::new(pre).map_err(|e| format!("{e:#}")))
        .map_err(load_error)?;
        let config_json = serde_json::to_string(&config.config)
            .map_err(|e| load_error(format!("config: {e}")))?;
        let mut auditor = Auditor {
            name: name.clone(),
            engine: engine.clone(),
            pre,
            config_json,
            memory_cap: super::engine::memory_cap(config.memory_mib),
            deadline_ticks: config.timeout_ms.max(1),
            init_ticks: config.init_timeout_ms.max(1),
            metrics: metrics.clone(),
            instance: None,
        };
        auditor.instance = Some(
            auditor
                .instantiate()
                .map_err(|f| load_error(f.to_string()))?,
        );
        Ok(auditor)
    }

    /// A fresh instance, initialised, and its `on-batch`.
    fn instantiate(&self) -> Result<(Store<HostState>, Func), Failure> {
        self.metrics
            .instances
            .with_label_values(&[&self.name])
            .inc();
        let mut store = Store::new(
            &self.engine,
            HostState::new(&self.name, &self.metrics, self.memory_cap),
        );
        store.limiter(|s| s);
        super::deadline::install(&mut store);
        super::deadline::arm(&mut store, self.init_ticks);
        let instance = (self.pre.instance_pre())
            .instantiate(&mut store)
            .map_err(|e| classify(&store, &e))?;
        let bindings =
            bindings::Auditor::new(&mut store, &instance).map_err(|e| classify(&store, &e))?;
        let on_batch = instance
            .get_func(&mut store, "on-batch")
            .ok_or_else(|| Failure::Error("the auditor exports no on-batch".into()))?;
        // The views must match the plugin's audit-event: a plugin whose types differ is
        // refused here, at load, rather than at its first batch (`typed` checks again there,
        // once per batch).
        on_batch
            .typed::<OnBatch, (Vec<String>,)>(&store)
            .map_err(|e| Failure::Error(format!("on-batch: {e:#}")))?;
        match bindings.call_init(&mut store, &self.config_json) {
            Ok(Ok(())) => Ok((store, on_batch)),
            Ok(Err(reason)) => Err(Failure::Init(reason)),
            Err(e) => Err(classify(&store, &e)),
        }
    }

    /// The records for `events`; on any failure the instance is discarded.
    pub fn on_batch(&mut self, events: &[AuditEventView]) -> Result<Vec<String>, Failure> {
        self.metrics
            .calls
            .with_label_values(&[self.name.as_str(), "on-batch"])
            .inc();
        let (mut store, on_batch) = match self.instance.take() {
            Some(instance) => instance,
            None => self.instantiate()?,
        };
        super::deadline::arm(&mut store, self.deadline_ticks);
        let called = on_batch
            .typed::<OnBatch, (Vec<String>,)>(&store)
            .and_then(|f| {
                let (records,) = f.call(&mut store, (events,))?;
                Ok(records)
            });
        match called {
            Ok(records) => {
                self.instance = Some((store, on_batch));
                Ok(records)
            }
            Err(e) => {
                let failure = classify(&store, &e);
                self.metrics
                    .traps
                    .with_label_values(&[self.name.as_str(), failure.kind()])
                    .inc();
                Err(failure)
            }
        }
    }
}
