//! Watch streams recorded in the background: requests are sent whenever a test likes, every
//! response is kept (with the instant it arrived) for comparisons after the fact. Also the
//! small helpers the watch conformance and fault tests share: masking, /metrics sums, RSS.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use keygate_proto::etcdserverpb::watch_client::WatchClient;
use keygate_proto::etcdserverpb::watch_request::RequestUnion;
use keygate_proto::etcdserverpb::{
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;

use crate::http;

type Log = Arc<Mutex<Vec<(Instant, WatchResponse)>>>;

/// One Watch stream whose responses a background task records.
pub struct Recorded {
    requests: mpsc::UnboundedSender<WatchRequest>,
    log: Log,
    ended: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl Recorded {
    /// Opens a Watch stream over `channel`; responses are recorded as they arrive.
    pub fn open(channel: Channel) -> Recorded {
        let (requests, rx) = mpsc::unbounded_channel();
        let log: Log = Arc::default();
        let ended: Arc<Mutex<Option<String>>> = Arc::default();
        let (log2, ended2) = (log.clone(), ended.clone());
        let task = tokio::spawn(async move {
            let mut client = WatchClient::new(channel).max_decoding_message_size(64 << 20);
            let why = match client.watch(UnboundedReceiverStream::new(rx)).await {
                Err(status) => format!("opening: {status}"),
                Ok(resp) => {
                    let mut stream = resp.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(resp)) => {
                                if let Ok(mut log) = log2.lock() {
                                    log.push((Instant::now(), resp));
                                }
                            }
                            Ok(None) => break "stream ended".to_string(),
                            Err(status) => break format!("stream failed: {status}"),
                        }
                    }
                }
            };
            if let Ok(mut e) = ended2.lock() {
                *e = Some(why);
            }
        });
        Recorded {
            requests,
            log,
            ended,
            task,
        }
    }

    fn send(&self, union: RequestUnion) -> Result<()> {
        self.requests
            .send(WatchRequest {
                request_union: Some(union),
            })
            .map_err(|_| anyhow!("watch request stream closed"))
    }

    pub fn create(&self, create: WatchCreateRequest) -> Result<()> {
        self.send(RequestUnion::CreateRequest(create))
    }

    pub fn cancel(&self, watch_id: i64) -> Result<()> {
        self.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id }))
    }

    pub fn progress(&self) -> Result<()> {
        self.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
    }

    /// Every response so far.
    pub fn responses(&self) -> Vec<WatchResponse> {
        self.timed().into_iter().map(|(_, r)| r).collect()
    }

    /// Every response so far with the instant it arrived.
    pub fn timed(&self) -> Vec<(Instant, WatchResponse)> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.log.lock().map(|l| l.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Why the stream ended, if it did.
    pub fn ended(&self) -> Option<String> {
        self.ended.lock().ok().and_then(|e| e.clone())
    }

    /// Waits until `done` holds for the responses recorded so far.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[WatchResponse]) -> bool,
    ) -> Result<Vec<WatchResponse>> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.responses();
            if done(&got) {
                return Ok(got);
            }
            if let Some(why) = self.ended() {
                bail!("waiting for {what}: {why} after {} responses", got.len());
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; {} responses: {:?}",
                    got.len(),
                    got.iter().rev().take(3).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `n` more responses than `from` were recorded; returns those.
    pub async fn next_n(
        &self,
        from: usize,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<WatchResponse>> {
        let got = self
            .wait_for(&format!("{n} responses"), timeout, |r| r.len() >= from + n)
            .await?;
        Ok(got[from..].to_vec())
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response with the fields naming the answering member masked (member_id, cluster_id,
/// raft_term), for comparing etcd's answer with keygate's.
pub fn masked(mut resp: WatchResponse) -> WatchResponse {
    if let Some(h) = resp.header.as_mut() {
        h.member_id = 0;
        h.cluster_id = 0;
        h.raft_term = 0;
    }
    resp
}

/// A periodic progress notification: no events, not created/canceled, for one watcher.
pub fn is_progress_notify(r: &WatchResponse) -> bool {
    r.events.is_empty() && !r.created && !r.canceled && r.compact_revision == 0 && r.watch_id >= 0
}

/// The header revision of a response (0 without a header).
pub fn revision(r: &WatchResponse) -> i64 {
    r.header.as_ref().map_or(0, |h| h.revision)
}

/// `GET /metrics` from `addr` (keygate or an etcd member).
pub async fn scrape(addr: &str) -> Result<String> {
    let resp = http::get(addr, "/metrics", Duration::from_secs(5)).await?;
    anyhow::ensure!(resp.status == 200, "/metrics answered {}", resp.status);
    Ok(resp.body)
}

/// The sum of every sample of `family` (whatever its labels).
pub fn metric_sum(body: &str, family: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One metric family summed, scraped from `addr`.
pub async fn metric(addr: &str, family: &str) -> Result<f64> {
    Ok(metric_sum(&scrape(addr).await?, family))
}

/// A process's resident set size in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}
