//! Phase 4, authorize: the chain of WebAssembly authorizers (see docs/plugins.md). Each is
//! asked in configured order; the first deny wins. A plugin that fails (trap, time limit,
//! memory cap) gives the request its failure policy: deny unless configured to allow.
//! An allow-in-namespace decision confines the request to the plugin's key prefix; prefixes of
//! plugins later in the chain nest inside earlier ones'.

pub mod audit;
pub mod auditor;
pub mod authorizer;
pub mod check;
pub mod convert;
mod deadline;
pub mod engine;
pub mod reload;
pub mod stream;

use crate::config::PluginsConfig;
use crate::describe::Description;
use crate::identity::Identity;
use crate::metrics::PluginMetrics;
use crate::namespace::Namespace;
use authorizer::Decision;
use engine::PluginEngine;
use std::sync::Arc;
use tonic::{Code, Status};

/// etcd's answer to a request its permissions refuse.
pub const PERMISSION_DENIED: &str = "etcdserver: permission denied";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("plugin engine: {0}")]
    Engine(String),
    #[error("plugin {plugin}: {message}")]
    Load { plugin: String, message: String },
}

/// How a plugin call failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("time limit reached")]
    Deadline,
    #[error("memory cap reached")]
    Memory,
    #[error("plugin panicked (unreachable executed)")]
    Panic,
    #[error("trap: {0}")]
    Trap(String),
    #[error("called a function keygate does not provide: {0}")]
    Import(String),
    #[error("init failed: {0}")]
    Init(String),
    #[error("{0}")]
    Error(String),
}

impl Failure {
    /// The metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Deadline => "deadline",
            Failure::Memory => "memory",
            Failure::Panic => "panic",
            Failure::Trap(_) => "trap",
            Failure::Import(_) => "import",
            Failure::Init(_) => "init",
            Failure::Error(_) => "error",
        }
    }
}

/// The authorizer chain.
pub struct Policy {
    chain: Vec<reload::Slot>,
    metrics: PluginMetrics,
    engine: Arc<PluginEngine>,
}

impl Policy {
    /// Loads every configured authorizer; `None` when there are none, so the request path
    /// skips the phase entirely.
    pub fn load(
        config: &PluginsConfig,
        engine: &Arc<PluginEngine>,
        metrics: &PluginMetrics,
    ) -> Result<Option<Policy>, PolicyError> {
        if config.authorizers.is_empty() {
            return Ok(None);
        }
        let chain = config
            .authorizers
            .iter()
            .map(|p| reload::Slot::load(&engine.engine, p, metrics))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Policy {
            chain,
            metrics: metrics.clone(),
            engine: engine.clone(),
        }))
    }

    /// Asks the chain whether `who` may make the request `what`, and in which namespace
    /// (`None`: the whole keyspace).
    pub fn authorize(
        &self,
        who: &Identity,
        what: &Description,
    ) -> Result<Option<Namespace>, Status> {
        let who_wit = convert::identity(who);
        let what_wit = convert::request(what);
        let mut namespace: Option<Namespace> = None;
        for slot in &self.chain {
            // In-flight requests finish on the version they started with.
            let plugin = slot.current();
            let (label, outcome) = match plugin.authorize(&who_wit, &what_wit) {
                Ok(Decision::Allow) => (0, Ok(())),
                Ok(Decision::AllowInNamespace(prefix)) => match Namespace::new(&prefix) {
                    Some(inner) => {
                        namespace = Some(match namespace {
                            Some(outer) => outer.nest(&inner),
                            None => inner,
                        });
                        (2, Ok(()))
                    }
                    None => {
                        tracing::warn!(plugin = %plugin.name, "allow-in-namespace with an empty prefix; denied");
                        (3, Err(Status::permission_denied(PERMISSION_DENIED)))
                    }
                },
                Ok(Decision::Deny(denial)) => (1, Err(denied(denial.code, denial.reason))),
                Err(failure) => {
                    tracing::warn!(
                        plugin = %plugin.name,
                        method = what.method.name,
                        identity = %who.name,
                        fail_open = plugin.fail_open,
                        "authorizer failed: {failure}"
                    );
                    let outcome = if plugin.fail_open {
                        Ok(())
                    } else {
                        Err(Status::permission_denied(PERMISSION_DENIED))
                    };
                    (3, outcome)
                }
            };
            plugin.decisions[label].inc();
            outcome?;
        }
        Ok(namespace)
    }
}

/// A plugin's denial as a status; a code that is not an error code is PERMISSION_DENIED.
fn denied(code: u32, reason: String) -> Status {
    let code = i32::try_from(code)
        .map(Code::from_i32)
        .unwrap_or(Code::PermissionDenied);
    let code = match code {
        Code::Ok | Code::Unknown => Code::PermissionDenied,
        code => code,
    };
    let reason = if reason.is_empty() {
        PERMISSION_DENIED.to_string()
    } else {
        reason
    };
    Status::new(code, reason)
}
