//! The read mirror: a revision-consistent in-memory copy of the keyspace that answers Range
//! requests the way etcd would, without a round trip for serializable reads and with one
//! shared round trip for linearizable ones. Whatever it cannot answer exactly is forwarded.

mod answer;
mod backfill;
mod barrier;
mod cache;
mod coverage;
mod range;
mod rewind;
mod store;
mod sync;
mod usage;
mod window;

pub use answer::RangeAnswer;
pub use coverage::Coverage;
pub use usage::{Counted, Usage};
pub use window::{FellBehind, RevisionEvents};

use crate::config::MirrorConfig;
use crate::metrics::MirrorMetrics;
use crate::revision::SeenRevision;
use crate::upstream::Pool;
use barrier::Barrier;
use bytes::Bytes;
use cache::ListCache;
use keygate_proto::etcdserverpb::{RangeRequest, ResponseHeader};
use keygate_proto::mvccpb::Event;
use prost::Message;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use store::Store;
use tokio::sync::watch;
use window::Window;

/// Why a Range went upstream instead (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declined {
    /// Not loaded, over budget, disconnected too long, or etcd auth is on.
    NotServing,
    /// An explicit revision, or an option the mirror can't answer exactly.
    Options,
    /// The mirror didn't reach the needed revision in time, or the barrier failed.
    CatchUp,
    /// The request carries etcd credentials, whose permissions only etcd can check.
    Credentials,
    /// The range reaches keys outside `mirror.prefixes`.
    Outside,
}

impl Declined {
    pub fn label(self) -> &'static str {
        match self {
            Declined::NotServing => "not_serving",
            Declined::Options => "options",
            Declined::CatchUp => "catch_up",
            Declined::Credentials => "credentials",
            Declined::Outside => "outside_prefixes",
        }
    }
}

/// The mirror's handle; cheap to clone.
#[derive(Clone)]
pub struct Mirror {
    shared: Arc<Shared>,
    barrier: Arc<Barrier>,
    seen: Arc<SeenRevision>,
}

struct Shared {
    config: MirrorConfig,
    /// The keys the mirror holds.
    coverage: Coverage,
    /// Encoded answers of large LISTs, when configured.
    lists: Option<ListCache>,
    metrics: MirrorMetrics,
    store: RwLock<Store>,
    /// Recent events, for watchers.
    window: RwLock<Window>,
    /// The store's revision, for readers waiting on it.
    revision: watch::Sender<i64>,
    loaded: AtomicBool,
    /// Set once the mirror first follows etcd (listed, and its watch created), or has given up
    /// (over budget).
    started: watch::Sender<bool>,
    auth_enabled: AtomicBool,
    /// etcd has answered whether its authentication is on (until then `auth_enabled` is).
    auth_checked: AtomicBool,
    /// Dropped for outgrowing `mirror.max_bytes`, until a list fits again.
    over_budget: AtomicBool,
    /// When the upstream watch was lost (None while connected).
    disconnected_since: Mutex<Option<Instant>>,
    cluster_id: AtomicU64,
    member_id: AtomicU64,
    raft_term: AtomicU64,
    /// The highest revision keygate has returned (shared with `Mirror`).
    seen: Arc<SeenRevision>,
    /// Counts the times etcd's keyspace went back under the mirror; watch streams cancel the
    /// watchers they hold from before.
    epoch: AtomicU64,
    /// Wakes the mirror's watch when a read finds etcd's keyspace went back.
    rewound: tokio::sync::Notify,
}

impl Mirror {
    pub fn new(
        config: &MirrorConfig,
        metrics: MirrorMetrics,
        pool: &Pool,
        seen: Arc<SeenRevision>,
    ) -> Mirror {
        let shared = Arc::new(Shared {
            config: config.clone(),
            coverage: Coverage::new(&config.prefixes),
            lists: ListCache::new(config.list_cache_bytes),
            metrics: metrics.clone(),
            store: RwLock::new(Store::default()),
            window: RwLock::new(Window::new(config.window_revisions, config.window_bytes)),
            revision: watch::channel(0).0,
            loaded: AtomicBool::new(false),
            started: watch::Sender::new(false),
            auth_enabled: AtomicBool::new(true),
            auth_checked: AtomicBool::new(false),
            over_budget: AtomicBool::new(false),
            disconnected_since: Mutex::new(Some(Instant::now())),
            cluster_id: AtomicU64::new(0),
            member_id: AtomicU64::new(0),
            raft_term: AtomicU64::new(0),
            seen: seen.clone(),
            epoch: AtomicU64::new(0),
            rewound: tokio::sync::Notify::new(),
        });
        Mirror {
            shared,
            barrier: Barrier::new(pool.clone(), metrics),
            seen,
        }
    }

    /// Starts loading and following the keyspace in the background.
    pub fn start(&self, pool: Pool) {
        tokio::spawn(sync::run(self.shared.clone(), pool));
    }

    /// etcd's answer to `req`, from the mirror, or why the mirror declined; with `encoded`, a
    /// LIST's answer comes as bytes, from the LIST cache when it holds them.
    pub async fn range(&self, req: &RangeRequest, encoded: bool) -> Result<RangeAnswer, Declined> {
        if !self.shared.serving() {
            return Err(Declined::NotServing);
        }
        if !self.shared.coverage.covers(&req.key, &req.range_end) {
            return Err(Declined::Outside);
        }
        if !range::servable(req) {
            return Err(Declined::Options);
        }
        let needed = if req.serializable {
            self.seen.get()
        } else {
            let (held, epoch) = (self.shared.revision(), self.epoch());
            let now = self.barrier.revision().await.ok_or(Declined::CatchUp)?;
            if now < held {
                // The round trip began after `held` was read: etcd has gone back (unless the
                // mirror has noticed meanwhile and started over).
                if self.epoch() == epoch {
                    self.shared
                        .rewind(now, "a linearizable read saw an older revision");
                }
                return Err(Declined::NotServing);
            }
            now
        };
        self.shared
            .wait_for(needed)
            .await
            .ok_or(Declined::CatchUp)?;
        let store = self.shared.store.read().map_err(|_| Declined::NotServing)?;
        self.shared
            .metrics
            .lag
            .set(self.seen.get() - store.revision());
        let header = self.shared.header(store.revision());
        let revision = header.revision;
        let lists = self.shared.lists.as_ref().filter(|_| encoded);
        let slot = lists.map(|_| ListCache::slot(req, &header));
        let answer = match (lists, slot) {
            (Some(lists), Some(slot)) if slot.cacheable() => {
                let cached = lists.get(&slot);
                self.shared.note_list(lists, cached.is_some());
                let bytes = match cached {
                    Some(bytes) => bytes,
                    None => {
                        let resp = range::evaluate(&store, req, header).ok_or(Declined::Options)?;
                        drop(store);
                        let bytes: Bytes = resp.encode_to_vec().into();
                        lists.put(slot, &bytes);
                        bytes
                    }
                };
                RangeAnswer::Encoded { bytes, revision }
            }
            // Single keys and counts: encoded once, where they are sent.
            _ => {
                RangeAnswer::Decoded(range::evaluate(&store, req, header).ok_or(Declined::Options)?)
            }
        };
        self.seen.observe(revision);
        Ok(answer)
    }
}

/// What the watch hub reads.
impl Mirror {
    /// True while the mirror follows etcd closely enough to serve reads and watches.
    pub fn serving(&self) -> bool {
        self.shared.serving()
    }

    /// Waits, up to `mirror.first_list_wait_ms`, while the mirror is still loading its first
    /// list and starting to follow etcd from it: what needs the mirror right after keygate
    /// starts (a new watch stream, a write held to a storage quota) uses it rather than do
    /// without.
    pub async fn started(&self) {
        let bound = Duration::from_millis(self.shared.config.first_list_wait_ms);
        let mut started = self.shared.started.subscribe();
        let _ = tokio::time::timeout(bound, started.wait_for(|s| *s)).await;
    }

    /// True unless the mirror stays out of service until something changes: etcd's
    /// authentication is on, or the keyspace is over `mirror.max_bytes`. While it loads, relists
    /// or reconnects it is expected back.
    pub fn expected(&self) -> bool {
        let auth_on = self.shared.auth_checked.load(Ordering::Acquire)
            && self.shared.auth_enabled.load(Ordering::Acquire);
        !auth_on && !self.shared.over_budget.load(Ordering::Acquire)
    }

    /// True while the mirror has dropped the keyspace for outgrowing `mirror.max_bytes`: it
    /// follows etcd no more, and the hub's watchers need upstream watches of their own.
    pub fn dropped(&self) -> bool {
        self.shared.over_budget.load(Ordering::Acquire)
    }

    /// Changes each time etcd's keyspace goes back under the mirror (restored from a snapshot,
    /// or another cluster behind the endpoints): watchers from before have been sent events
    /// that etcd no longer has.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::Acquire)
    }

    /// The highest revision keygate has returned to any client.
    pub fn seen(&self) -> i64 {
        self.seen.get()
    }

    /// Notes the revision of a response from etcd (not from the mirror) returned to a client.
    pub fn observe(&self, response: &impl crate::revision::Revisioned) {
        self.seen.observe_response(response);
    }

    /// The mirror's revision, as it changes.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.shared.revision.subscribe()
    }

    pub fn revision(&self) -> i64 {
        self.shared.revision()
    }

    /// Waits (bounded) until the mirror reaches `revision`; false if it did not.
    pub async fn wait_for(&self, revision: i64) -> bool {
        self.shared.wait_for(revision).await.is_some()
    }

    /// Waits (bounded) until the mirror shows every revision any client has seen.
    pub async fn catch_up(&self) -> bool {
        self.wait_for(self.seen.get()).await
    }

    /// Events of up to `max` revisions from `from` on.
    pub fn events_since(
        &self,
        from: i64,
        max: usize,
    ) -> Result<Vec<std::sync::Arc<RevisionEvents>>, FellBehind> {
        match self.shared.window.read() {
            Ok(window) => window.since(from, max),
            Err(_) => Err(FellBehind { oldest: i64::MAX }),
        }
    }

    /// A response header at `revision`, as the member the mirror follows would write it.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        self.shared.header(revision)
    }
}

impl Shared {
    fn serving(&self) -> bool {
        if !self.loaded.load(Ordering::Acquire) || self.auth_enabled.load(Ordering::Acquire) {
            return false;
        }
        let max_stale = Duration::from_millis(self.config.max_staleness_ms);
        match self.disconnected_since.lock() {
            Ok(since) => since.is_none_or(|t| t.elapsed() <= max_stale),
            Err(_) => false,
        }
    }

    fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    fn connected(&self) -> bool {
        self.disconnected_since
            .lock()
            .is_ok_and(|since| since.is_none())
    }

    /// Waits, up to the configured bound, until the store has reached `revision`.
    async fn wait_for(&self, revision: i64) -> Option<()> {
        if self.revision() >= revision {
            return Some(());
        }
        if !self.connected() {
            return None;
        }
        let mut rx = self.revision.subscribe();
        let bound = Duration::from_millis(self.config.wait_timeout_ms);
        let reached = tokio::time::timeout(bound, rx.wait_for(|r| *r >= revision)).await;
        matches!(reached, Ok(Ok(_))).then_some(())
    }

    fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id.load(Ordering::Relaxed),
            member_id: self.member_id.load(Ordering::Relaxed),
            revision,
            raft_term: self.raft_term.load(Ordering::Relaxed),
        }
    }

    fn set_header(&self, header: &ResponseHeader) {
        self.cluster_id.store(header.cluster_id, Ordering::Relaxed);
        self.member_id.store(header.member_id, Ordering::Relaxed);
        self.raft_term
            .fetch_max(header.raft_term, Ordering::Relaxed);
    }

    fn replace(&self, store: Store) {
        let revision = store.revision();
        self.publish_size(&store);
        if let Ok(mut current) = self.store.write() {
            *current = store;
            if let Ok(mut window) = self.window.write() {
                window.reset(revision);
                self.metrics.window_oldest.set(window.oldest());
            }
        }
        self.loaded.store(true, Ordering::Release);
        self.over_budget.store(false, Ordering::Release);
        self.revision.send_replace(revision);
        self.metrics.revision.set(revision);
    }

    fn clear(&self) {
        self.loaded.store(false, Ordering::Release);
        self.over_budget.store(true, Ordering::Release);
        self.started.send_replace(true);
        self.metrics.serving.set(0);
        if let Ok(mut current) = self.store.write() {
            *current = Store::default();
        }
        // Wakes the watch streams: their watchers move to upstream watches of their own.
        self.revision.send_modify(|_| {});
    }

    /// Applies the events of a watch response; false when the store outgrew its budget.
    fn apply(&self, events: &[Event], revision: i64) -> bool {
        let Ok(mut store) = self.store.write() else {
            return false;
        };
        let prev = store.apply(events, revision, &self.coverage);
        if let Ok(mut window) = self.window.write() {
            window.push(events, prev);
            self.metrics.window_oldest.set(window.oldest());
        }
        let fits = store.bytes() <= self.config.max_bytes;
        self.publish_size(&store);
        drop(store);
        self.metrics.events.inc_by(events.len() as u64);
        self.metrics.revision.set(revision);
        self.revision.send_replace(revision);
        fits
    }

    /// Counts a lookup in the LIST cache.
    fn note_list(&self, lists: &ListCache, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.metrics.list_cache.with_label_values(&[result]).inc();
        self.metrics.list_cache_bytes.set(lists.bytes() as i64);
    }

    fn publish_size(&self, store: &Store) {
        self.metrics.keys.set(store.len() as i64);
        self.metrics.bytes.set(store.bytes() as i64);
    }

    fn set_connected(&self, connected: bool) {
        if let Ok(mut since) = self.disconnected_since.lock() {
            match (connected, since.is_some()) {
                (true, _) => *since = None,
                (false, false) => *since = Some(Instant::now()),
                (false, true) => {}
            }
        }
        self.metrics.serving.set(i64::from(self.serving()));
        if connected {
            // Listed and following etcd: whoever waited for that can use the mirror now.
            self.started.send_replace(true);
        }
    }

    fn set_auth_enabled(&self, enabled: bool) {
        self.auth_checked.store(true, Ordering::Release);
        if self.auth_enabled.swap(enabled, Ordering::AcqRel) != enabled {
            if enabled {
                tracing::info!("etcd authentication is on: reads go to etcd, not the mirror");
            }
            self.metrics.serving.set(i64::from(self.serving()));
        }
    }
}
