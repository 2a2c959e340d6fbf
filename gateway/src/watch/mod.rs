//! The watch hub: every downstream watch whose start lies in the mirror's event window is
//! served from the mirror's one upstream watch — no upstream watch per client. Older start
//! revisions get an upstream watch of their own.

mod dedicated;
mod stream;
mod watcher;

use crate::describe::Description;
use crate::metrics::{GrpcMetrics, PrefixMetrics, RpcTimer, WatchMetrics};
use crate::mirror::Mirror;
use crate::namespace::Confine;
use crate::pipeline::RpcStream;
use crate::policy::audit::StreamAudit;
use crate::policy::stream::StreamCaller;
use crate::shutdown::Shutdown;
use crate::upstream::Pool;
use bytes::Bytes;
use keygate_proto::etcdserverpb::{
    kv_client::KvClient, RangeRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use std::time::Duration;
use tonic::{Status, Streaming};
use watcher::Tenancy;

/// Responses queued per downstream stream before keygate stops reading for that stream.
const STREAM_QUEUE: usize = 16;

/// A watch creation on a stream with authorizers: put to them and, on a tenant's stream,
/// confined to its namespace and counted against its watcher quota.
fn admit_create(
    caller: &StreamCaller,
    what: &Description,
    create: &mut WatchCreateRequest,
) -> Result<Option<Tenancy>, Status> {
    match caller.admit(Some(what), |ns| create.confine(ns))? {
        Some(tenant) => Ok(Some((tenant.namespace.clone(), tenant.watcher()?))),
        None => Ok(None),
    }
}

#[derive(Clone)]
pub struct Hub {
    mirror: Mirror,
    pool: Pool,
    metrics: WatchMetrics,
    grpc: GrpcMetrics,
    prefixes: PrefixMetrics,
    shutdown: Shutdown,
    progress_interval: Duration,
    max_response_bytes: usize,
}

impl Hub {
    pub fn new(
        mirror: Mirror,
        pool: Pool,
        metrics: (WatchMetrics, GrpcMetrics, PrefixMetrics),
        shutdown: Shutdown,
        progress_interval: Duration,
        max_response_bytes: usize,
    ) -> Hub {
        let (metrics, grpc, prefixes) = metrics;
        Hub {
            mirror,
            pool,
            metrics,
            grpc,
            prefixes,
            shutdown,
            progress_interval,
            max_response_bytes,
        }
    }

    /// True when the hub takes a new watch stream: the mirror serves, or is expected to (it is
    /// loading, relisting or reconnecting; the stream's watchers then start on upstream watches
    /// of their own and move to the hub once it serves). A stream that arrives while the mirror
    /// loads its first list (keygate just started: kube-apiserver reconnecting, say) waits for it
    /// a little first, rather than open an upstream watch per watcher.
    pub async fn ready(&self) -> bool {
        self.mirror.started().await;
        self.mirror.serving() || self.mirror.expected()
    }

    /// Whether etcd still keeps the history from `revision` on (it has not been compacted).
    async fn history_kept(&self, revision: i64) -> bool {
        let Ok(member) = self.pool.pick() else {
            return false;
        };
        let probe = RangeRequest {
            key: Bytes::from_static(b"\0"),
            revision,
            keys_only: true,
            limit: 1,
            ..Default::default()
        };
        match KvClient::new(member.channel()).range(probe).await {
            Ok(_) => true,
            Err(status) => {
                self.pool.note_failure(&member, &status);
                false
            }
        }
    }

    /// Serves one downstream Watch stream; with `leaderless` (the client sent `hasleader`), ends
    /// it with etcd's "no leader" once the cluster has been without one for a while.
    pub fn serve(
        &self,
        inbound: Streaming<WatchRequest>,
        timer: RpcTimer,
        checks: (Option<StreamCaller>, Option<StreamAudit>),
        leaderless: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> RpcStream<WatchResponse> {
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE);
        tokio::spawn(stream::Stream::run(
            self.clone(),
            inbound,
            tx,
            timer,
            checks,
            leaderless,
        ));
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}
