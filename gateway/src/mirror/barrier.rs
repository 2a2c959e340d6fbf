//! Linearizable barriers: one linearizable upstream round trip tells etcd's current revision.
//! Reads that arrive while a round trip is in flight wait for the next one (the one in flight
//! may have started before they arrived), so concurrent reads share a single round trip; a
//! barrier starts a few scheduler rounds after its first reader, so reads arriving together
//! share it too.

use crate::metrics::MirrorMetrics;
use crate::upstream::Pool;
use bytes::Bytes;
use keygate_proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Option<i64>>;

/// Scheduler rounds a barrier waits for more readers before it starts.
const GATHER_ROUNDS: usize = 4;

pub struct Barrier {
    pool: Pool,
    metrics: MirrorMetrics,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: bool,
    waiting: Vec<Waiter>,
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
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            tokio::spawn(self.clone().run());
        }
        rx.await.ok().flatten()
    }

    /// Serves batches until no reader is waiting.
    async fn run(self: Arc<Self>) {
        loop {
            // Let the runtime go round a few times first (each round reads what has reached
            // the sockets): reads already on their way join this barrier instead of paying for
            // the next one. Free when keygate is idle; under load it halves etcd's barriers.
            for _ in 0..GATHER_ROUNDS {
                tokio::task::yield_now().await;
            }
            let batch = match self.state.lock() {
                Ok(mut state) if state.waiting.is_empty() => {
                    state.running = false;
                    return;
                }
                Ok(mut state) => std::mem::take(&mut state.waiting),
                Err(_) => return,
            };
            self.metrics.barriers.inc();
            self.metrics.barrier_batch.observe(batch.len() as f64);
            let revision = self.round_trip().await;
            for waiter in batch {
                let _ = waiter.send(revision);
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
            match KvClient::new(member.channel()).range(probe.clone()).await {
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
