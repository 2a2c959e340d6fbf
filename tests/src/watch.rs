//! A gRPC watch stream driven by a test: send create/cancel/progress requests, read responses
//! with a bound, collect events.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::watch_request::RequestUnion;
use keygate_proto::etcdserverpb::{
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use keygate_proto::mvccpb::Event;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::Clients;

/// One bidirectional Watch stream.
pub struct WatchStream {
    requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl WatchStream {
    /// Opens a Watch stream on `clients` whose first request creates `first`.
    ///
    /// etcd sends the response headers with the first response, so the opening call only
    /// returns once a request is already on its way.
    pub async fn open(clients: &Clients, first: WatchCreateRequest) -> Result<Self> {
        Self::open_with(clients, first, false).await
    }

    /// `open`, with `require_leader` sending etcd's `hasleader` metadata as etcd's Go client's
    /// `WithRequireLeader` (and kube-apiserver) do.
    pub async fn open_with(
        clients: &Clients,
        first: WatchCreateRequest,
        require_leader: bool,
    ) -> Result<Self> {
        let (requests, rx) = mpsc::channel(16);
        requests
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(first)),
            })
            .await
            .map_err(|_| anyhow!("watch request channel closed"))?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if require_leader {
            let value = tonic::metadata::MetadataValue::from_static("true");
            request.metadata_mut().insert("hasleader", value);
        }
        let responses = clients.watch.clone().watch(request).await?.into_inner();
        Ok(Self {
            requests,
            responses,
        })
    }

    /// Sends a create request.
    pub async fn create(&self, create: WatchCreateRequest) -> Result<()> {
        self.send(RequestUnion::CreateRequest(create)).await
    }

    /// Sends a cancel request.
    pub async fn cancel(&self, watch_id: i64) -> Result<()> {
        self.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id }))
            .await
    }

    /// Sends a progress request.
    pub async fn progress(&self) -> Result<()> {
        self.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
            .await
    }

    async fn send(&self, union: RequestUnion) -> Result<()> {
        self.requests
            .send(WatchRequest {
                request_union: Some(union),
            })
            .await
            .map_err(|_| anyhow!("watch request stream closed"))
    }

    /// The next response within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<WatchResponse> {
        match tokio::time::timeout(timeout, self.responses.message()).await {
            Err(_) => bail!("no watch response within {timeout:?}"),
            Ok(Ok(Some(resp))) => Ok(resp),
            Ok(Ok(None)) => bail!("watch stream ended"),
            Ok(Err(status)) => Err(status.into()),
        }
    }

    /// Reads responses, collecting events, until an event for `last_key` arrives. Fails on a
    /// cancel or when no response comes within `timeout`.
    pub async fn events_until(&mut self, last_key: &[u8], timeout: Duration) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        loop {
            let resp = self.next(timeout).await.with_context(|| {
                let last = events
                    .last()
                    .and_then(|e: &Event| e.kv.as_ref())
                    .map(|kv| kv.mod_revision);
                format!("after {} events (last revision {last:?})", events.len())
            })?;
            if resp.canceled {
                bail!(
                    "watch {} canceled after {} events: {:?} (compact_revision {})",
                    resp.watch_id,
                    events.len(),
                    resp.cancel_reason,
                    resp.compact_revision
                );
            }
            let done = resp
                .events
                .iter()
                .any(|e| e.kv.as_ref().is_some_and(|kv| kv.key == last_key));
            events.extend(resp.events);
            if done {
                return Ok(events);
            }
        }
    }
}

/// A create request for every key with `prefix`, from `start_revision`.
pub fn prefix_watch(prefix: &str, start_revision: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: Bytes::copy_from_slice(prefix.as_bytes()),
        range_end: prefix_end(prefix.as_bytes()),
        start_revision,
        ..Default::default()
    }
}

/// The range end covering every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(&[0])
}
