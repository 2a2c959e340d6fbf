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

use crate::policy::authorizer::bindings::keygate::plugin::types::AuditEvent;

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
    instance: Option<(Store<HostState>, bindings::Auditor)>,
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

    fn instantiate(&self) -> Result<(Store<HostState>, bindings::Auditor), Failure> {
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
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&store, &e))?;
        match bindings.call_init(&mut store, &self.config_json) {
            Ok(Ok(())) => Ok((store, bindings)),
            Ok(Err(reason)) => Err(Failure::Init(reason)),
            Err(e) => Err(classify(&store, &e)),
        }
    }

    /// The records for `events`; on any failure the instance is discarded.
    pub fn on_batch(&mut self, events: &[AuditEvent]) -> Result<Vec<String>, Failure> {
        self.metrics
            .calls
            .with_label_values(&[self.name.as_str(), "on-batch"])
            .inc();
        let (mut store, bindings) = match self.instance.take() {
            Some(instance) => instance,
            None => self.instantiate()?,
        };
        super::deadline::arm(&mut store, self.deadline_ticks);
        match bindings.call_on_batch(&mut store, events) {
            Ok(records) => {
                self.instance = Some((store, bindings));
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
