//! Linearizable barriers: one linearizable upstream round trip tells etcd's current revision.
//! A read cannot use a round trip already in flight (it may have started before the read
//! arrived); it joins the next one, which starts a few scheduler rounds after its first reader
//! so that reads arriving together share it. The next one starts without waiting for the one
//! in flight, up to `IN_FLIGHT` round trips at once: a read waits for one round trip, not one
//! and a half (etcd folds concurrent ones into one ReadIndex anyway).

use crate::metrics::MirrorMetrics;
use crate::upstream::Pool;
use bytes::Bytes;
use keygate_proto::etcdserverpb::{RangeRequest, RangeResponse};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Option<i64>>;

/// Scheduler rounds a barrier waits for more readers before it starts.
const GATHER_ROUNDS: usize = 4;

/// Round trips in flight at once, at most.
const IN_FLIGHT: usize = 2;

pub struct Barrier {
    pool: Pool,
    metrics: MirrorMetrics,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A task is gathering readers for the next round trip.
    gathering: bool,
    /// Round trips under way.
    in_flight: usize,
    waiting: Vec<Waiter>,
}

impl State {
    /// Whether a new gatherer should start now (and marks it started).
    fn start_gathering(&mut self) -> bool {
        let start = !self.gathering && self.in_flight < IN_FLIGHT && !self.waiting.is_empty();
        self.gathering |= start;
        start
    }
}

impl Barrier {
    pub fn new(pool: Pool, metrics: MirrorMetrics) -> Arc<Barrier> {
        Arc::new(Barrier {
            pool,
            metrics,
            state: Mutex::new(State::default()),
        })
    }

    /// etcd's revision as of some moment after this call began; None when etcd can't say.
    pub async fn revision(self: &Arc<Self>) -> Option<i64> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.state.lock().ok()?;
            state.waiting.push(tx);
            state.start_gathering()
        };
        if start {
            tokio::spawn(self.clone().run());
        }
        rx.await.ok().flatten()
    }

    /// Gathers a batch and serves it; then gathers the next one if readers wait and no other
    /// task gathers for them.
    async fn run(self: Arc<Self>) {
        loop {
            // Let the runtime go round a few times first (each round reads what has reached
            // the sockets): reads already on their way join this barrier instead of paying for
            // the next one. Free when keygate is idle; under load it halves etcd's barriers.
            for _ in 0..GATHER_ROUNDS {
                tokio::task::yield_now().await;
            }
            // Readers from now on gather for the next round trip, beside this one.
            // (Not empty: a gatherer starts only for waiting readers, and only it takes them.)
            let batch = match self.state.lock() {
                Ok(mut state) => {
                    state.gathering = false;
                    state.in_flight += 1;
                    std::mem::take(&mut state.waiting)
                }
                Err(_) => return,
            };
            self.metrics.barriers.inc();
            self.metrics.barrier_batch.observe(batch.len() as f64);
            let started = std::time::Instant::now();
            let revision = self.round_trip().await;
            self.metrics
                .barrier_seconds
                .observe(started.elapsed().as_secs_f64());
            for waiter in batch {
                let _ = waiter.send(revision);
            }
            match self.state.lock() {
                Ok(mut state) => {
                    state.in_flight -= 1;
                    if !state.start_gathering() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// One linearizable read, retried on another member when the member fails at the
    /// transport level (so a barrier right after a member dies still succeeds).
    async fn round_trip(&self) -> Option<i64> {
        // The cheapest linearizable read: one key that cannot exist, keys only.
        let probe = RangeRequest {
            key: Bytes::from_static(b"\0"),
            keys_only: true,
            ..Default::default()
        };
        let mut member = self.pool.pick().ok()?;
        let mut tried = Vec::new();
        loop {
            let request = tonic::Request::new(probe.clone());
            let call = crate::upstream::unary::<_, RangeResponse>(
                member.channel(),
                crate::method::RANGE.path,
                request,
            );
            match call.await {
                Ok(resp) => return resp.into_inner().header.map(|h| h.revision),
                Err(status) => {
                    self.pool.note_failure(&member, &status);
                    if !crate::errors::retryable(&status, true) {
                        return None;
                    }
                    tried.push(member);
                    member = self.pool.pick_excluding(&tried)?;
                }
            }
        }
    }
}
