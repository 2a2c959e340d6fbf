//! The request path. Every RPC, unary or streaming, passes through these functions, which a
//! reader can follow top to bottom: the RPC is accounted as started, routed to an etcd member
//! (retried on another member where that cannot apply a write twice), relayed back, and
//! accounted as finished.

use crate::errors::{self, GatewayError};
use crate::method::Method;
use crate::metrics::{Metrics, RpcTimer};
use crate::shutdown::Shutdown;
use crate::upstream::{Member, Pool};
use futures::stream::{BoxStream, StreamExt};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Extensions, Request, Response, Status, Streaming};

/// A stream of responses as the generated services return it.
pub type RpcStream<T> = BoxStream<'static, Result<T, Status>>;

/// The client's messages of a bidirectional stream, on their way upstream.
pub type ClientStream<T> = tokio_stream::wrappers::ReceiverStream<T>;

/// An upstream stream being opened.
pub type Upstream<T> = futures::future::BoxFuture<'static, Result<Response<Streaming<T>>, Status>>;

/// What every RPC handler shares.
pub struct Gateway {
    pub pool: Pool,
    pub metrics: Metrics,
    pub shutdown: Shutdown,
}

impl Gateway {
    /// A unary RPC: one request, one response.
    pub async fn unary<Req, Resp, F, Fut>(
        &self,
        method: &'static Method,
        request: Request<Req>,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        F: Fn(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let timer = self.metrics.grpc.start(method);
        let result = self.forward(method, request, call).await;
        timer.finish(result.as_ref().map_or_else(Status::code, |_| Code::Ok));
        result
    }

    /// One request, a stream of responses (Snapshot, Observe).
    pub async fn server_stream<Req, Resp, F, Fut>(
        &self,
        method: &'static Method,
        request: Request<Req>,
        call: F,
    ) -> Result<Response<RpcStream<Resp>>, Status>
    where
        Req: Clone,
        Resp: Send + 'static,
        F: Fn(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Streaming<Resp>>, Status>>,
    {
        let timer = self.metrics.grpc.start(method);
        match self.forward(method, request, call).await {
            Ok(response) => Ok(response.map(|upstream| {
                relay(
                    method,
                    upstream,
                    None,
                    timer,
                    self.metrics.clone(),
                    self.shutdown.clone(),
                )
            })),
            Err(status) => {
                timer.finish(status.code());
                Err(status)
            }
        }
    }

    /// A stream of requests and a stream of responses (Watch, LeaseKeepAlive). The client's
    /// messages flow to one member as they arrive; a half-close is passed on as etcd sees it.
    pub fn bidi_stream<Req, Resp, F, Fut>(
        &self,
        method: &'static Method,
        request: Request<Streaming<Req>>,
        call: F,
    ) -> impl Future<Output = Result<Response<RpcStream<Resp>>, Status>> + Send + 'static
    where
        Req: Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(Channel, Request<ClientStream<Req>>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Response<Streaming<Resp>>, Status>> + Send,
    {
        let (pool, metrics, shutdown) = (
            self.pool.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        );
        async move {
            let timer = metrics.grpc.start(method);
            let member = match pool.pick() {
                Ok(member) => member,
                Err(e) => {
                    timer.finish(e.code());
                    return Err(e.into());
                }
            };
            let (metadata, _, inbound) = request.into_parts();
            let (failed_tx, failed_rx) = oneshot::channel();
            let inbound = client_messages(inbound, method, metrics.grpc.clone(), failed_tx);
            let upstream_request = Request::from_parts(metadata, Extensions::default(), inbound);
            match call(member.channel(), upstream_request).await {
                Ok(response) => {
                    pool.record(&member, "ok");
                    Ok(response.map(|upstream| {
                        relay(method, upstream, Some(failed_rx), timer, metrics, shutdown)
                    }))
                }
                Err(status) => {
                    pool.note_failure(&member, &status);
                    timer.finish(status.code());
                    Err(status)
                }
            }
        }
    }

    /// Sends the request to a member; when the member fails in a way that makes a retry safe,
    /// sends it to the next one, until every member has been tried once.
    async fn forward<Req, Resp, F, Fut>(
        &self,
        method: &'static Method,
        request: Request<Req>,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        F: Fn(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let (metadata, _, message) = request.into_parts();
        let mut member = self.pool.pick()?;
        let mut tried: Vec<Arc<Member>> = Vec::new();
        loop {
            let attempt =
                Request::from_parts(metadata.clone(), Extensions::default(), message.clone());
            let status = match call(member.channel(), attempt).await {
                Ok(response) => {
                    self.pool.record(&member, "ok");
                    return Ok(response);
                }
                Err(status) => status,
            };
            self.pool.note_failure(&member, &status);
            if !errors::retryable(&status, method.read_only) {
                return Err(status);
            }
            tried.push(member);
            member = match self.pool.pick_excluding(&tried) {
                Some(next) => next,
                None => return Err(status),
            };
            self.pool
                .metrics()
                .retries
                .with_label_values(&[method.name])
                .inc();
        }
    }
}

fn relay<Resp: Send + 'static>(
    method: &'static Method,
    upstream: Streaming<Resp>,
    client_failed: Option<oneshot::Receiver<Status>>,
    timer: RpcTimer,
    metrics: Metrics,
    shutdown: Shutdown,
) -> RpcStream<Resp> {
    let relay = Relay {
        upstream,
        client_failed,
        shutdown,
        metrics,
        method,
        timer: Some(timer),
        code: Code::Cancelled,
        done: false,
    };
    futures::stream::unfold(relay, |mut relay| async move {
        relay.next().await.map(|item| (item, relay))
    })
    .boxed()
}

/// The client's side of a bidirectional stream, as the stream of messages sent upstream. A
/// task moves messages across, one at a time, so a member that stops reading slows only this
/// client. A message the client got wrong (too large, undecodable) ends the stream and is
/// reported through `failed`, so that the RPC ends with that error as etcd would end it.
fn client_messages<Req: Send + 'static>(
    mut inbound: Streaming<Req>,
    method: &'static Method,
    grpc: crate::metrics::GrpcMetrics,
    failed: oneshot::Sender<Status>,
) -> ClientStream<Req> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tx.closed() => return,
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        grpc.message_received(method);
                        if tx.send(message).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        let _ = failed.send(errors::etcd_decode_error(&status).unwrap_or(status));
                        return;
                    }
                },
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Relays an upstream response stream to the client until it ends, the client's side fails,
/// or keygate shuts down; records how the RPC ended when dropped.
struct Relay<Resp> {
    upstream: Streaming<Resp>,
    client_failed: Option<oneshot::Receiver<Status>>,
    shutdown: Shutdown,
    metrics: Metrics,
    method: &'static Method,
    timer: Option<RpcTimer>,
    code: Code,
    done: bool,
}

impl<Resp> Relay<Resp> {
    async fn next(&mut self) -> Option<Result<Resp, Status>> {
        if self.done {
            return None;
        }
        let failure = tokio::select! {
            biased;
            () = self.shutdown.wait() => Status::from(GatewayError::ShuttingDown),
            status = client_failure(&mut self.client_failed) => status,
            message = self.upstream.message() => match message {
                Ok(Some(message)) => {
                    self.metrics.grpc.message_sent(self.method);
                    return Some(Ok(message));
                }
                Ok(None) => {
                    self.code = Code::Ok;
                    self.done = true;
                    return None;
                }
                Err(status) => status,
            },
        };
        self.code = failure.code();
        self.done = true;
        Some(Err(failure))
    }
}

impl<Resp> Drop for Relay<Resp> {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.finish(self.code);
        }
    }
}

/// Resolves with the client's error, if its side of the stream fails; never otherwise.
async fn client_failure(slot: &mut Option<oneshot::Receiver<Status>>) -> Status {
    if let Some(rx) = slot.as_mut() {
        let received = rx.await;
        *slot = None;
        if let Ok(status) = received {
            return status;
        }
    }
    std::future::pending().await
}
