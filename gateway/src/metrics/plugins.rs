//! keygate_plugin_*: what each plugin is asked, what it answers, and how it fails.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct PluginMetrics {
    /// Calls into a plugin, by plugin and function.
    pub calls: IntCounterVec,
    /// Authorizer decisions by plugin and outcome (allow, deny, allow_in_namespace, failure).
    pub decisions: IntCounterVec,
    /// Calls that trapped, by plugin and kind (deadline, memory, panic, trap, error).
    pub traps: IntCounterVec,
    /// Calls stopped at their time limit, by plugin.
    pub deadline_hits: IntCounterVec,
    /// Fresh instances made, by plugin (on demand, and after a trap discarded one).
    pub instances: IntCounterVec,
    /// Wall time of one call, by plugin.
    pub latency: HistogramVec,
    /// The plugins' own counters (host import `count`), by plugin and name.
    pub counters: IntCounterVec,
    /// Audit events: by what became of them (written, dropped because the queue was full,
    /// lost because the auditor failed on their batch).
    pub audit_events: IntCounterVec,
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl PluginMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "keygate_plugin_call_seconds",
                "Duration of one plugin call.",
            )
            .buckets(vec![
                1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0,
            ]),
            &["plugin"],
        )?;
        r.register(Box::new(latency.clone()))?;
        Ok(Self {
            calls: counter(
                r,
                "keygate_plugin_calls_total",
                "Calls into a plugin.",
                &["plugin", "function"],
            )?,
            decisions: counter(
                r,
                "keygate_plugin_decisions_total",
                "Authorizer decisions by outcome.",
                &["plugin", "decision"],
            )?,
            traps: counter(
                r,
                "keygate_plugin_traps_total",
                "Plugin calls that trapped, by kind.",
                &["plugin", "kind"],
            )?,
            deadline_hits: counter(
                r,
                "keygate_plugin_deadline_hits_total",
                "Plugin calls stopped at their time limit.",
                &["plugin"],
            )?,
            instances: counter(
                r,
                "keygate_plugin_instances_created_total",
                "Plugin instances created.",
                &["plugin"],
            )?,
            counters: counter(
                r,
                "keygate_plugin_counter_total",
                "Counters a plugin reports through the host's count import.",
                &["plugin", "name"],
            )?,
            audit_events: counter(r, "keygate_audit_events_total", "Audit events by fate: batched (handed to the auditor), dropped (queue full), failed (the auditor failed on their batch).", &["fate"])?,
            latency,
        })
    }
}
