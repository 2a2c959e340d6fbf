//! Hot reload: each authorizer's file is watched (modification time and size, every
//! `plugins.reload_interval_ms`) and SIGHUP reloads them all. A new version is compiled and
//! its `init` run off the request path, then swapped in atomically; requests already in a call
//! finish on the old version. A version that fails to load is refused with a logged reason and
//! the old one stays.

use super::authorizer::Plugin;
use super::{Policy, PolicyError};
use crate::config::PluginConfig;
use crate::metrics::PluginMetrics;
use crate::shutdown::Shutdown;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use wasmtime::Engine;

/// One position of the chain: its configuration and the version now in use.
pub struct Slot {
    config: PluginConfig,
    current: RwLock<Arc<Plugin>>,
    /// Modification time and size of the file the current version came from.
    stamp: Mutex<Option<(SystemTime, u64)>>,
}

fn stamp(path: &str) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Slot {
    pub fn load(
        engine: &Engine,
        config: &PluginConfig,
        metrics: &PluginMetrics,
    ) -> Result<Self, PolicyError> {
        let stamp_before = stamp(&config.path);
        let plugin = Plugin::load(engine, config, metrics)?;
        Ok(Slot {
            config: config.clone(),
            current: RwLock::new(Arc::new(plugin)),
            stamp: Mutex::new(stamp_before),
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
        let now = stamp(&self.config.path);
        let Ok(mut seen) = self.stamp.lock() else {
            return false;
        };
        if !force && (now.is_none() || now == *seen) {
            return false;
        }
        // Whatever happens, this version of the file is dealt with.
        *seen = now;
        let name = self.config.display_name();
        match Plugin::load(engine, &self.config, metrics) {
            Ok(plugin) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(plugin);
                }
                tracing::info!(plugin = %name, path = %self.config.path, "plugin reloaded");
                true
            }
            Err(e) => {
                tracing::error!(plugin = %name, "new plugin version refused, the old one stays: {e}");
                false
            }
        }
    }
}

impl Policy {
    /// Reloads the plugins whose files changed (all of them when `force`); returns how many
    /// new versions are in use. Compiles and initialises: call it off the request path.
    pub fn reload(&self, force: bool) -> usize {
        self.chain
            .iter()
            .filter(|slot| slot.reload(&self.engine.engine, &self.metrics, force))
            .count()
    }
}

/// Polls the plugin files every `interval` (never when zero) and reloads on SIGHUP, until
/// shutdown.
pub fn spawn(policy: Arc<Policy>, interval: Duration, shutdown: Shutdown) {
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
            let policy = policy.clone();
            let _ = tokio::task::spawn_blocking(move || policy.reload(force)).await;
        }
    });
}
