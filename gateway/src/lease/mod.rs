//! Keep-alive coalescing: every downstream LeaseKeepAlive stream shares one upstream keep-alive
//! stream; a keep-alive for a lease already being refreshed rides on that refresh, and one for a
//! lease refreshed upstream moments ago is answered from that refresh. The answer's TTL counts
//! down from the refresh, rounded against the client, so no client is ever told its lease lives
//! longer than etcd will keep it.

mod upstream;

use crate::describe::Description;
use crate::metrics::{GrpcMetrics, RpcTimer};
use crate::namespace::{Confine, Namespace};
use crate::pipeline::RpcStream;
use crate::policy::audit::{Audit, ServedBy, StreamAudit, Verdict};
use crate::shutdown::Shutdown;
use crate::upstream::Pool;
use keygate_proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use prometheus::IntCounterVec;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Code, Status, Streaming};
use upstream::SharedStream;

/// A recent upstream refresh of one lease.
#[derive(Clone)]
struct Refresh {
    at: Instant,
    response: LeaseKeepAliveResponse,
}

#[derive(Clone)]
pub struct LeaseHub {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: SharedStream,
    recent: Mutex<HashMap<i64, Refresh>>,
    window: Duration,
    keepalives: IntCounterVec,
    grpc: GrpcMetrics,
    shutdown: Shutdown,
}

impl LeaseHub {
    pub fn new(
        pool: Pool,
        window: Duration,
        keepalives: IntCounterVec,
        grpc: GrpcMetrics,
        shutdown: Shutdown,
    ) -> LeaseHub {
        let inner = Inner {
            upstream: SharedStream::new(pool),
            recent: Mutex::new(HashMap::new()),
            window,
            keepalives,
            grpc,
            shutdown,
        };
        LeaseHub {
            inner: Arc::new(inner),
        }
    }

    /// A lease was revoked through keygate: never answer for it from a past refresh again.
    pub fn forget(&self, id: i64) {
        if let Ok(mut recent) = self.inner.recent.lock() {
            recent.remove(&id);
        }
    }

    /// Serves one downstream LeaseKeepAlive stream.
    /// A stream opened in a namespace may keep alive only the tenant's own leases; for any
    /// other it gets etcd's answer for a lease that does not exist. With an auditor, every
    /// keep-alive is an event, under the stream's decision.
    pub fn serve(
        &self,
        inbound: Streaming<LeaseKeepAliveRequest>,
        timer: RpcTimer,
        namespace: Option<Namespace>,
        audit: Option<(StreamAudit, Verdict)>,
        leaderless: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> RpcStream<LeaseKeepAliveResponse> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let run = (self.clone()).run(inbound, tx, timer, (namespace, audit), leaderless);
        tokio::spawn(run);
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    async fn run(
        self,
        mut inbound: Streaming<LeaseKeepAliveRequest>,
        out: tokio::sync::mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>,
        timer: RpcTimer,
        (namespace, audit): (Option<Namespace>, Option<(StreamAudit, Verdict)>),
        mut leaderless: Option<tokio::sync::watch::Receiver<bool>>,
    ) {
        let method = &crate::method::LEASE_KEEP_ALIVE;
        let code = loop {
            let request = tokio::select! {
                () = self.inner.shutdown.wait() => {
                    let status = Status::from(crate::errors::GatewayError::ShuttingDown);
                    let code = status.code();
                    let _ = out.send(Err(status)).await;
                    break code;
                }
                () = out.closed() => break Code::Cancelled,
                () = crate::upstream::leader_lost(&mut leaderless) => {
                    let status = Status::from(crate::errors::GatewayError::NoLeader);
                    let code = status.code();
                    let _ = out.send(Err(status)).await;
                    break code;
                }
                request = inbound.message() => request,
            };
            let id = match request {
                Ok(Some(request)) => request.id,
                Ok(None) => break Code::Ok,
                Err(status) => {
                    let status = crate::errors::etcd_decode_error(&status).unwrap_or(status);
                    let code = status.code();
                    let _ = out.send(Err(status)).await;
                    break code;
                }
            };
            self.inner.grpc.message_received(method);
            let pending = (audit.as_ref()).map(|_| {
                Audit::begin_described(Description::of(method, &LeaseKeepAliveRequest { id }))
            });
            // A tenant's keep-alive for a lease not its own: etcd's answer for a missing one.
            let foreign = (namespace.as_ref())
                .is_some_and(|ns| LeaseKeepAliveRequest { id }.confine(ns).is_err());
            let response = if foreign {
                Ok(LeaseKeepAliveResponse {
                    id,
                    ..Default::default()
                })
            } else {
                self.keep_alive(id).await
            };
            if let (Some((audit, decision)), Some(pending)) = (&audit, pending) {
                let outcome = (response.as_ref()).map(|r| r.header.as_ref().map(|h| h.revision));
                audit
                    .finish(pending, *decision, outcome, ServedBy::Hub)
                    .await;
            }
            let failed = response.as_ref().err().map(Status::code);
            if out.send(response).await.is_err() {
                break Code::Cancelled;
            }
            self.inner.grpc.message_sent(method);
            if let Some(code) = failed {
                break code;
            }
        };
        timer.finish(code);
    }

    /// The answer to one keep-alive: from a refresh within the window, else from etcd.
    async fn keep_alive(&self, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
        if let Some(response) = self.recent_refresh(id) {
            self.inner
                .keepalives
                .with_label_values(&["coalesced"])
                .inc();
            return Ok(response);
        }
        let sent_at = Instant::now();
        let (response, joined) = self.inner.upstream.keep_alive(id).await?;
        let served_by = if joined { "coalesced" } else { "upstream" };
        self.inner.keepalives.with_label_values(&[served_by]).inc();
        if response.ttl > 0 {
            if let Ok(mut recent) = self.inner.recent.lock() {
                recent.insert(
                    id,
                    Refresh {
                        at: sent_at,
                        response,
                    },
                );
            }
        }
        Ok(response)
    }

    fn recent_refresh(&self, id: i64) -> Option<LeaseKeepAliveResponse> {
        let mut recent = self.inner.recent.lock().ok()?;
        let refresh = recent.get(&id)?;
        let elapsed = refresh.at.elapsed();
        if elapsed > self.inner.window {
            recent.remove(&id);
            return None;
        }
        // Whole seconds since the refresh was sent, rounded up: the lease's real expiry is
        // never earlier than what the client is told.
        let gone = elapsed.as_secs() as i64 + i64::from(elapsed.subsec_nanos() > 0);
        let ttl = refresh.response.ttl - gone;
        (ttl > 0).then_some(LeaseKeepAliveResponse {
            ttl,
            ..refresh.response
        })
    }
}
