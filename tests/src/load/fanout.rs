//! Watch fan-out: many watchers on one key over a few streams; a writer puts every interval
//! with a sequence number and a timestamp in the value; every watcher checks it sees each put
//! once, in order, and records put-to-receipt latency.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use keygate_proto::etcdserverpb::watch_client::WatchClient;
use keygate_proto::etcdserverpb::watch_request::RequestUnion;
use keygate_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::{mpsc, watch as signal};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use super::workload::new_hist;

/// What the watchers of one stream saw.
pub struct StreamResult {
    pub hist: Histogram<u64>,
    pub events: u64,
    pub missed: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub canceled: u64,
    pub error: Option<String>,
}

struct Watcher {
    next_seq: u64,
}

/// Encodes a put's value: sequence number, nanoseconds since `epoch`, padding.
pub fn encode_value(seq: u64, epoch: Instant, size: usize) -> Bytes {
    let mut v = Vec::with_capacity(size.max(16));
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
    v.resize(size.max(16), b'w');
    Bytes::from(v)
}

fn decode_value(v: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(v.get(..8)?.try_into().ok()?);
    let ts = u64::from_le_bytes(v.get(8..16)?.try_into().ok()?);
    Some((seq, ts))
}

/// Opens one stream creating `count` watchers on `key` from `start_revision`, and waits until
/// every one is created.
pub async fn open_stream(
    channel: Channel,
    key: Bytes,
    range_end: Bytes,
    start_revision: i64,
    count: usize,
    timeout: Duration,
) -> Result<(
    mpsc::Sender<WatchRequest>,
    Streaming<WatchResponse>,
    Vec<i64>,
)> {
    let (tx, rx) = mpsc::channel(count + 4);
    for _ in 0..count {
        tx.send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                start_revision,
                ..Default::default()
            })),
        })
        .await
        .map_err(|_| anyhow!("watch request channel closed"))?;
    }
    let mut stream = WatchClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .watch(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut ids = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + timeout;
    while ids.len() < count {
        let resp = match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => bail!(
                "only {} of {count} watchers created in {timeout:?}",
                ids.len()
            ),
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => bail!("watch stream ended while creating watchers"),
            Ok(Err(s)) => bail!("watch stream failed while creating: {s}"),
        };
        if resp.canceled {
            bail!("watch creation canceled: {}", resp.cancel_reason);
        }
        if resp.created {
            ids.push(resp.watch_id);
        }
    }
    Ok((tx, stream, ids))
}

/// Reads one stream's events until every watcher saw the last put (`total` once the writer is
/// done) or `stop` fires.
pub async fn read_stream(
    _keep_open: mpsc::Sender<WatchRequest>,
    mut stream: Streaming<WatchResponse>,
    ids: Vec<i64>,
    epoch: Instant,
    mut total: signal::Receiver<u64>,
    mut stop: signal::Receiver<bool>,
) -> StreamResult {
    let mut watchers: HashMap<i64, Watcher> = ids
        .iter()
        .map(|&id| (id, Watcher { next_seq: 0 }))
        .collect();
    let mut r = StreamResult {
        hist: new_hist(),
        events: 0,
        missed: 0,
        duplicated: 0,
        out_of_order: 0,
        canceled: 0,
        error: None,
    };
    loop {
        let t = *total.borrow();
        if t != u64::MAX && watchers.values().all(|w| w.next_seq >= t) {
            break;
        }
        let msg = tokio::select! {
            m = stream.message() => m,
            // The writer is done: check again whether every watcher has seen its last put.
            r = total.changed() => {
                if r.is_err() {
                    break;
                }
                continue;
            }
            _ = stop.changed() => break,
        };
        let resp = match msg {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                r.error = Some("watch stream ended".into());
                break;
            }
            Err(s) => {
                r.error = Some(format!("{:?}: {}", s.code(), s.message()));
                break;
            }
        };
        if resp.canceled {
            r.canceled += 1;
            continue;
        }
        let Some(w) = watchers.get_mut(&resp.watch_id) else {
            continue;
        };
        let now = epoch.elapsed().as_nanos() as u64;
        for ev in &resp.events {
            let Some((seq, ts)) = ev.kv.as_ref().and_then(|kv| decode_value(&kv.value)) else {
                continue;
            };
            r.events += 1;
            r.hist
                .saturating_record((now.saturating_sub(ts) / 1000).max(1));
            if seq == w.next_seq {
                w.next_seq += 1;
            } else if seq > w.next_seq {
                r.missed += seq - w.next_seq;
                w.next_seq = seq + 1;
            } else if seq + 1 == w.next_seq {
                r.duplicated += 1;
            } else {
                r.out_of_order += 1;
            }
        }
    }
    let t = *total.borrow();
    if t != u64::MAX {
        for w in watchers.values() {
            r.missed += t.saturating_sub(w.next_seq);
        }
    }
    r
}
