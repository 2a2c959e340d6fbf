//! Hot reload: every plugin file — each authorizer's and the auditor's — is watched
//! (modification time and size, every `plugins.reload_interval_ms`) and SIGHUP reloads them all.
//! A new version is compiled and its `init` run off the request path, then swapped in
//! atomically: requests already in an authorizer call finish on the old version, and the audit
//! worker takes the new auditor up between two batches. A version that fails to load is refused
//! with a logged reason and the old one stays.

use super::auditor::Auditor;
use super::authorizer::Plugin;
use super::engine::PluginEngine;
use super::{Policy, PolicyError};
use crate::config::{AuditConfig, PluginConfig};
use crate::metrics::PluginMetrics;
use crate::shutdown::Shutdown;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use wasmtime::Engine;

/// Something whose plugins can be reloaded.
pub trait Reload: Send + Sync {
    /// Reloads the plugins whose files changed (all of them when `force`); returns how many new
    /// versions are in use. Compiles and initialises: call it off the request path.
    fn reload(&self, force: bool) -> usize;
}

/// The version of a plugin file last dealt with: its modification time and size.
struct Watched {
    path: String,
    seen: Mutex<Option<(SystemTime, u64)>>,
}

fn stamp(path: &str) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Watched {
    /// Stamps the file as it is now: call before loading it.
    fn new(path: &str) -> Self {
        Watched {
            path: path.to_string(),
            seen: Mutex::new(stamp(path)),
        }
    }

    /// Whether the file changed since it was last dealt with (always, when `force`); either
    /// way, this version of it counts as dealt with from now on.
    fn changed(&self, force: bool) -> bool {
        let now = stamp(&self.path);
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if !force && (now.is_none() || now == *seen) {
            return false;
        }
        *seen = now;
        true
    }
}

/// One position of the authorizer chain: its configuration and the version now in use.
pub struct Slot {
    config: PluginConfig,
    current: RwLock<Arc<Plugin>>,
    file: Watched,
}

impl Slot {
    pub fn load(
        engine: &Engine,
        config: &PluginConfig,
        metrics: &PluginMetrics,
    ) -> Result<Self, PolicyError> {
        let file = Watched::new(&config.path);
        let plugin = Plugin::load(engine, config, metrics)?;
        Ok(Slot {
            config: config.clone(),
            current: RwLock::new(Arc::new(plugin)),
            file,
        })
    }

    /// The version to ask now.
    pub fn current(&self) -> Arc<Plugin> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads when the file changed (or always, when `force`). Returns whether a new
    /// version is in use.
    fn reload(&self, engine: &Engine, metrics: &PluginMetrics, force: bool) -> bool {
        if !self.file.changed(force) {
            return false;
        }
        let loaded = Plugin::load(engine, &self.config, metrics).map(|plugin| {
            if let Ok(mut current) = self.current.write() {
                *current = Arc::new(plugin);
            }
        });
        logged(&self.config.display_name(), &self.config.path, loaded)
    }
}

impl Reload for Policy {
    fn reload(&self, force: bool) -> usize {
        self.chain
            .iter()
            .filter(|slot| slot.reload(&self.engine.engine, &self.metrics, force))
            .count()
    }
}

/// The auditor's next version: loaded here, taken up by the audit worker before its next batch.
pub struct AuditorSlot {
    config: AuditConfig,
    engine: Arc<PluginEngine>,
    metrics: PluginMetrics,
    file: Watched,
    next: Mutex<Option<Auditor>>,
}

impl AuditorSlot {
    /// Loads the first version, which the caller hands to the worker.
    pub fn load(
        config: &AuditConfig,
        engine: &Arc<PluginEngine>,
        metrics: &PluginMetrics,
    ) -> Result<(Self, Auditor), PolicyError> {
        let file = Watched::new(&config.path);
        let first = Auditor::load(&engine.engine, config, metrics)?;
        let slot = AuditorSlot {
            config: config.clone(),
            engine: engine.clone(),
            metrics: metrics.clone(),
            file,
            next: Mutex::new(None),
        };
        Ok((slot, first))
    }

    /// A new version loaded since the last call, if any.
    pub fn take(&self) -> Option<Auditor> {
        self.next.lock().ok()?.take()
    }
}

impl Reload for AuditorSlot {
    fn reload(&self, force: bool) -> usize {
        if !self.file.changed(force) {
            return 0;
        }
        let loaded = Auditor::load(&self.engine.engine, &self.config, &self.metrics).map(|new| {
            if let Ok(mut next) = self.next.lock() {
                *next = Some(new);
            }
        });
        usize::from(logged(
            &self.config.display_name(),
            &self.config.path,
            loaded,
        ))
    }
}

/// Logs the outcome of loading a new version; whether it is in use.
fn logged(name: &str, path: &str, loaded: Result<(), PolicyError>) -> bool {
    match loaded {
        Ok(()) => {
            tracing::info!(plugin = %name, %path, "plugin reloaded");
            true
        }
        Err(e) => {
            tracing::error!(plugin = %name, "new plugin version refused, the old one stays: {e}");
            false
        }
    }
}

/// Polls the plugin files every `interval` (never when zero) and reloads on SIGHUP, until
/// shutdown.
pub fn spawn(targets: Vec<Arc<dyn Reload>>, interval: Duration, shutdown: Shutdown) {
    if targets.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!("no SIGHUP plugin reload: {e}");
                None
            }
        };
        let poll = !interval.is_zero();
        let mut ticker = tokio::time::interval(if poll {
            interval
        } else {
            Duration::from_secs(3600)
        });
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let force = tokio::select! {
                () = shutdown.wait() => return,
                _ = ticker.tick(), if poll => false,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let targets = targets.clone();
            let _ = tokio::task::spawn_blocking(move || {
                targets.iter().map(|t| t.reload(force)).sum::<usize>()
            })
            .await;
        }
    });
}
