//! keygate_watch_*: downstream watchers served by the hub, and what they cost upstream.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct WatchMetrics {
    pub streams: IntGauge,
    pub watchers: IntGauge,
    /// Upstream watch streams opened for watchers older than the event window.
    pub upstream_streams: IntGauge,
    /// Watchers moved from an upstream watch of their own to the hub.
    pub handovers: IntCounter,
    pub events_sent: IntCounter,
    pub canceled_lagging: IntCounter,
    /// Backlogs of several revisions sent to one watcher at once, from the event window.
    pub caught_up: IntCounter,
    pub progress_sent: IntCounter,
    /// Lease keep-alives answered, by who answered (upstream, or coalesced from a recent refresh).
    pub lease_keepalives: IntCounterVec,
}

impl WatchMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(Self {
            streams: gauge("keygate_watch_streams", "Downstream watch streams served by the watch hub.")?,
            watchers: gauge("keygate_watch_watchers", "Downstream watchers served by the watch hub.")?,
            upstream_streams: gauge(
                "keygate_watch_upstream_streams",
                "Upstream watch streams opened for watchers that start before the event window.",
            )?,
            handovers: counter(
                "keygate_watch_handovers_total",
                "Watchers moved from an upstream watch of their own to the hub once they reached the event window.",
            )?,
            events_sent: counter("keygate_watch_events_sent_total", "Events sent to downstream watchers.")?,
            canceled_lagging: counter(
                "keygate_watch_canceled_lagging_total",
                "Watchers canceled with compact_revision because they fell behind the event window.",
            )?,
            caught_up: counter(
                "keygate_watch_caught_up_total",
                "Times a watcher was sent several revisions' events at once from the event window: it had fallen behind the mirror (its client read slowly, or writes came in a burst).",
            )?,
            progress_sent: counter("keygate_watch_progress_sent_total", "Progress notifications sent.")?,
            lease_keepalives: {
                let opts = Opts::new("keygate_lease_keepalives_total", "Lease keep-alives answered, by who answered.");
                let c = IntCounterVec::new(opts, &["served_by"])?;
                r.register(Box::new(c.clone()))?;
                c
            },
        })
    }
}
