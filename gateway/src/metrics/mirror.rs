//! keygate_mirror_*: the read mirror's state and how reads were served.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::sync::{Arc, OnceLock};

#[derive(Clone)]
pub struct MirrorMetrics {
    pub revision: IntGauge,
    /// Highest revision shown to clients minus the mirror's revision, at the last read.
    pub lag: IntGauge,
    pub keys: IntGauge,
    pub bytes: IntGauge,
    /// 1 while reads may be served from the mirror.
    pub serving: IntGauge,
    /// Range requests by consistency and by who answered (mirror, or upstream with a reason).
    pub reads: IntCounterVec,
    pub barriers: IntCounter,
    pub barrier_batch: Histogram,
    pub barrier_seconds: Histogram,
    pub relists: IntCounter,
    /// Times etcd's keyspace was found rewound or replaced under the mirror.
    pub rewinds: IntCounter,
    pub events: IntCounter,
    /// LIST answers from the cache of encoded answers, and those encoded afresh.
    pub list_cache: IntCounterVec,
    pub list_cache_bytes: IntGauge,
    /// The oldest revision a watch can start from on the hub.
    pub window_oldest: IntGauge,
    /// `reads` for the mirror's own answers (serializable, linearizable), looked up once.
    served: Arc<[OnceLock<IntCounter>; 2]>,
}

impl MirrorMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        fn reg<T: prometheus::core::Collector + Clone + 'static>(
            r: &Registry,
            c: T,
        ) -> prometheus::Result<T> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let gauge = |name: &str, help: &str| reg(r, IntGauge::new(name, help)?);
        let counter = |name: &str, help: &str| reg(r, IntCounter::new(name, help)?);
        Ok(Self {
            revision: gauge("keygate_mirror_revision", "Revision of the read mirror.")?,
            lag: gauge(
                "keygate_mirror_lag_revisions",
                "Highest revision shown to clients minus the mirror's revision, at the last read.",
            )?,
            keys: gauge("keygate_mirror_keys", "Keys held by the read mirror.")?,
            bytes: gauge(
                "keygate_mirror_bytes",
                "Approximate memory held by the read mirror, in bytes.",
            )?,
            serving: gauge(
                "keygate_mirror_serving",
                "1 while reads may be served from the mirror.",
            )?,
            reads: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "keygate_mirror_reads_total",
                        "Range requests by consistency and by who answered.",
                    ),
                    &["consistency", "served_by", "reason"],
                )?,
            )?,
            barriers: counter(
                "keygate_mirror_barriers_total",
                "Linearizable round trips made to learn etcd's current revision.",
            )?,
            barrier_batch: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "keygate_mirror_barrier_batch_size",
                        "Linearizable reads sharing one barrier.",
                    )
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
                )?,
            )?,
            barrier_seconds: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "keygate_mirror_barrier_seconds",
                        "Round trip of each barrier: etcd's linearizable read (its ReadIndex) as \
                         keygate waits for it.",
                    )
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0, 2.5,
                    ]),
                )?,
            )?,
            relists: counter(
                "keygate_mirror_relists_total",
                "Full lists of the keyspace loaded into the mirror.",
            )?,
            rewinds: counter(
                "keygate_mirror_rewinds_total",
                "Times etcd's keyspace was found not to be the history the mirror held (restored \
                 from a snapshot, or another cluster behind the endpoints): the mirror relisted \
                 and the hub canceled its watchers.",
            )?,
            events: counter(
                "keygate_mirror_events_total",
                "Watch events applied to the mirror.",
            )?,
            list_cache: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "keygate_mirror_list_cache_total",
                        "Mirror-served ranges looked up in the cache of encoded LIST answers, by result.",
                    ),
                    &["result"],
                )?,
            )?,
            window_oldest: gauge(
                "keygate_mirror_window_oldest_revision",
                "The oldest revision the event window holds: watches from it on are served by the hub.",
            )?,
            list_cache_bytes: gauge(
                "keygate_mirror_list_cache_bytes",
                "Bytes of encoded LIST answers cached (approximate).",
            )?,
            served: Arc::default(),
        })
    }

    /// Counts a Range the mirror answered itself.
    pub fn served(&self, serializable: bool) {
        let consistency = if serializable {
            "serializable"
        } else {
            "linearizable"
        };
        self.served[usize::from(!serializable)]
            .get_or_init(|| self.reads.with_label_values(&[consistency, "mirror", ""]))
            .inc();
    }
}
