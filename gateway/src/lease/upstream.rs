//! The one upstream LeaseKeepAlive stream that every downstream stream shares. Responses are
//! matched to waiting requests by lease id; a broken stream fails its waiters with UNAVAILABLE
//! (clients retry) and is reopened on the next keep-alive.

use crate::upstream::Pool;
use keygate_proto::etcdserverpb::lease_client::LeaseClient;
use keygate_proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

type Waiters = Arc<Mutex<HashMap<i64, Vec<oneshot::Sender<LeaseKeepAliveResponse>>>>>;

pub struct SharedStream {
    pool: Pool,
    /// The open stream's request side; None until first use or after it broke.
    sender: tokio::sync::Mutex<Option<mpsc::Sender<LeaseKeepAliveRequest>>>,
    waiters: Waiters,
}

impl SharedStream {
    pub fn new(pool: Pool) -> SharedStream {
        SharedStream {
            pool,
            sender: tokio::sync::Mutex::new(None),
            waiters: Arc::default(),
        }
    }

    /// The response to a keep-alive of lease `id`, and whether it rode on one already in
    /// flight for the same lease (so that no request of its own went upstream).
    pub async fn keep_alive(&self, id: i64) -> Result<(LeaseKeepAliveResponse, bool), Status> {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut waiters = self.waiters.lock().map_err(|_| unavailable())?;
            let list = waiters.entry(id).or_default();
            list.push(tx);
            list.len() == 1
        };
        // Keep-alives for a lease already in flight ride on that one.
        if first {
            let sender = self.sender().await?;
            if sender.send(LeaseKeepAliveRequest { id }).await.is_err() {
                self.reset().await;
                return Err(unavailable());
            }
        }
        let response = rx.await.map_err(|_| unavailable())?;
        Ok((response, !first))
    }

    /// The open stream's request side, opening the stream first if needed. The stream is
    /// opened in its own task: etcd sends its response headers only with the first response,
    /// so waiting for them here would wait for a request not yet sent.
    async fn sender(&self) -> Result<mpsc::Sender<LeaseKeepAliveRequest>, Status> {
        let mut guard = self.sender.lock().await;
        if let Some(sender) = guard.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let member = self.pool.pick()?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(relay(self.pool.clone(), member, rx, self.waiters.clone()));
        *guard = Some(tx.clone());
        Ok(tx)
    }

    async fn reset(&self) {
        *self.sender.lock().await = None;
    }
}

/// Runs one upstream keep-alive stream, handing each response to the keep-alives waiting for
/// that lease. When it ends, every waiter is failed (their senders dropped) and the request
/// side closes, so the next keep-alive opens a fresh stream.
async fn relay(
    pool: Pool,
    member: std::sync::Arc<crate::upstream::Member>,
    requests: mpsc::Receiver<LeaseKeepAliveRequest>,
    waiters: Waiters,
) {
    let requests = tokio_stream::wrappers::ReceiverStream::new(requests);
    match LeaseClient::new(member.channel())
        .lease_keep_alive(requests)
        .await
    {
        Ok(resp) => {
            let mut responses = resp.into_inner();
            loop {
                match responses.message().await {
                    Ok(Some(resp)) => {
                        let woken = waiters.lock().ok().and_then(|mut w| w.remove(&resp.id));
                        for waiter in woken.into_iter().flatten() {
                            let _ = waiter.send(resp);
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        pool.note_failure(&member, &status);
                        break;
                    }
                }
            }
        }
        Err(status) => pool.note_failure(&member, &status),
    }
    if let Ok(mut w) = waiters.lock() {
        w.clear();
    }
}

fn unavailable() -> Status {
    Status::unavailable("etcdserver: keep-alive stream to etcd was lost")
}
