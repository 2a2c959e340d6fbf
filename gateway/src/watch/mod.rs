//! The watch hub: every downstream watch whose start lies in the mirror's event window is
//! served from the mirror's one upstream watch — no upstream watch per client. Older start
//! revisions get an upstream watch of their own.

mod dedicated;
mod stream;
mod watcher;

use crate::describe::{Describe, Description};
use crate::metrics::{GrpcMetrics, RpcTimer, WatchMetrics};
use crate::mirror::Mirror;
use crate::namespace::Confine;
use crate::pipeline::RpcStream;
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

/// The authorizers and the caller of one stream: every watch it creates is asked about. A
/// stream opened in a tenant's namespace creates its watches in it.
pub struct Guard {
    pub policy: std::sync::Arc<crate::policy::Policy>,
    pub identity: crate::identity::Identity,
    pub tenant: Option<std::sync::Arc<crate::tenant::Tenant>>,
}

/// The auditor a stream's watch creations are reported to, and who is creating them.
pub struct StreamAudit {
    pub audit: std::sync::Arc<crate::policy::audit::Audit>,
    pub who: Option<crate::identity::Identity>,
}

impl Guard {
    /// A watch creation put to the authorizers and, on a tenant's stream, confined to its
    /// namespace and counted against its watcher quota.
    fn admit(&self, create: &mut WatchCreateRequest) -> Result<Option<Tenancy>, Status> {
        let mut what = Description::new(&crate::method::WATCH);
        create.describe(&mut what);
        let namespace = self.policy.authorize(&self.identity, &what)?;
        // A stream lives in one namespace: the one it was opened in.
        if namespace.as_ref() != self.tenant.as_ref().map(|t| &t.namespace) {
            return Err(Status::permission_denied(crate::policy::PERMISSION_DENIED));
        }
        let Some(tenant) = &self.tenant else {
            return Ok(None);
        };
        if let Err(status) = create.confine(&tenant.namespace) {
            tenant.denied();
            return Err(status);
        }
        Ok(Some((tenant.namespace.clone(), tenant.watcher()?)))
    }
}

#[derive(Clone)]
pub struct Hub {
    mirror: Mirror,
    pool: Pool,
    metrics: WatchMetrics,
    grpc: GrpcMetrics,
    shutdown: Shutdown,
    progress_interval: Duration,
    max_response_bytes: usize,
}

impl Hub {
    pub fn new(
        mirror: Mirror,
        pool: Pool,
        metrics: (WatchMetrics, GrpcMetrics),
        shutdown: Shutdown,
        progress_interval: Duration,
        max_response_bytes: usize,
    ) -> Hub {
        let (metrics, grpc) = metrics;
        Hub {
            mirror,
            pool,
            metrics,
            grpc,
            shutdown,
            progress_interval,
            max_response_bytes,
        }
    }

    /// True when new watch streams can be served from the mirror.
    pub fn ready(&self) -> bool {
        self.mirror.serving()
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

    /// Serves one downstream Watch stream.
    pub fn serve(
        &self,
        inbound: Streaming<WatchRequest>,
        timer: RpcTimer,
        checks: (Option<Guard>, Option<StreamAudit>),
    ) -> RpcStream<WatchResponse> {
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE);
        tokio::spawn(stream::Stream::run(
            self.clone(),
            inbound,
            tx,
            timer,
            checks,
        ));
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}
