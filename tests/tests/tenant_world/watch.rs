//! Watch streams opened as a user, and collecting their events under the invariant.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use keygate_proto::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest, WatchResponse};
use keygate_proto::mvccpb::Event;
use keygate_tests::Clients;
use tokio::sync::mpsc;

use super::check::assert_clean;
use super::req;
use super::world::World;

/// A watch stream opened as `user` (or with no identity).
pub struct WatchStream {
    pub tx: mpsc::Sender<WatchRequest>,
    pub rx: tonic::Streaming<WatchResponse>,
    /// Responses of earlier watches that arrived while waiting for a creation (a watch with a
    /// past start revision sends its first events as soon as it is created), kept for
    /// `collect`.
    early: Vec<WatchResponse>,
}

impl WatchStream {
    /// Opens a stream with its first watch (etcd answers the stream's headers only with its
    /// first message); returns the stream and that watch's ID.
    pub async fn open(
        c: &mut Clients,
        user: Option<&str>,
        first: WatchCreateRequest,
    ) -> Result<(WatchStream, i64)> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(create_request(first)).await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let rx = tokio::time::timeout(Duration::from_secs(10), c.watch.watch(req(user, stream)))
            .await??
            .into_inner();
        let mut s = WatchStream {
            tx,
            rx,
            early: Vec::new(),
        };
        let id = s.created().await?;
        Ok((s, id))
    }

    /// The ID of the next watch created on the stream; events of earlier watches that come
    /// first are kept for `collect`.
    pub async fn created(&mut self) -> Result<i64> {
        loop {
            let r = tokio::time::timeout(Duration::from_secs(10), self.rx.message())
                .await??
                .context("watch stream ended")?;
            if r.created {
                return Ok(r.watch_id);
            }
            ensure!(!r.events.is_empty(), "not a created response: {r:?}");
            self.early.push(r);
        }
    }

    /// Creates one watch; returns its ID.
    pub async fn create(&mut self, create: WatchCreateRequest) -> Result<i64> {
        self.tx.send(create_request(create)).await?;
        self.created().await
    }
}

pub fn create_request(create: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
    }
}

/// Reads events for `ids` until every watch has seen an "END" value and the stream has been
/// quiet for a moment; checks every response against the invariant.
pub async fn collect(s: &mut WatchStream, ids: &[i64], w: &World) -> Result<Vec<Vec<Event>>> {
    let mut events: Vec<Vec<Event>> = vec![Vec::new(); ids.len()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let quiet = Duration::from_millis(500);
    let mut early = std::mem::take(&mut s.early).into_iter();
    loop {
        let next = match early.next() {
            Some(r) => Ok(Ok(Some(r))),
            None => tokio::time::timeout(quiet, s.rx.message()).await,
        };
        let r = match next {
            Ok(r) => r?.context("watch stream ended")?,
            Err(_) => {
                let done = events.iter().all(|e| {
                    e.iter()
                        .any(|e| e.kv.as_ref().is_some_and(|kv| kv.value == "END"))
                });
                if done || tokio::time::Instant::now() > deadline {
                    return Ok(events);
                }
                continue;
            }
        };
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for e in &r.events {
            for kv in e.kv.iter().chain(e.prev_kv.iter()) {
                keys.push(kv.key.clone());
                values.push(kv.value.clone());
            }
        }
        assert_clean("watch response", &format!("{r:?}"), &keys, &values)?;
        ensure!(!r.canceled, "watch canceled: {r:?} ({})", w.kg.log_tail(20));
        let i = ids
            .iter()
            .position(|id| *id == r.watch_id)
            .with_context(|| format!("unknown watch id in {r:?}"))?;
        events[i].extend(r.events);
    }
}
