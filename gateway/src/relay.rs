//! Moving a bidirectional stream's messages: the client's to the upstream member (through
//! the authorizers' screen, when there are authorizers), and the member's back to the client
//! (with keygate's own answers to refused messages).

use crate::errors::{self, GatewayError};
use crate::method::Method;
use crate::metrics::RpcTimer;
use crate::namespace::{Namespace, Strip};
use crate::pipeline::{ClientStream, Gateway, RpcStream, Upstream};
use crate::policy::stream::{next_refusal, Screen, Screened};
use crate::revision::Revisioned;
use crate::upstream::Member;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status, Streaming};

/// The client's side of a bidirectional stream, as the stream of messages sent upstream. A
/// task moves messages across, one at a time, so a member that stops reading slows only this
/// client. A message the client got wrong (too large, undecodable) ends the stream and is
/// reported through `failed`, so that the RPC ends with that error as etcd would end it.
/// With authorizers, `screen` asks them about each message that needs it (a watch creation);
/// a refused message is answered through `screen.refused` and not sent upstream.
pub(crate) fn client_messages<Req: Screened<Resp> + Send + 'static, Resp: Send + 'static>(
    mut inbound: Streaming<Req>,
    method: &'static Method,
    grpc: crate::metrics::GrpcMetrics,
    failed: oneshot::Sender<Status>,
    mut screen: Option<Screen<Resp>>,
) -> ClientStream<Req> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tx.closed() => return,
                message = inbound.message() => match message {
                    Ok(Some(mut message)) => {
                        grpc.message_received(method);
                        if let Some(screen) = &mut screen {
                            if let Err(refusal) = screen.check(&mut message).await {
                                if screen.refused.send(refusal).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                        }
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
pub(crate) struct Relay<Resp> {
    pub(crate) upstream: Streaming<Resp>,
    pub(crate) client_failed: Option<oneshot::Receiver<Status>>,
    /// Keygate's own answers to refused client messages.
    pub(crate) refused: Option<mpsc::Receiver<Resp>>,
    /// The tenant's namespace, taken off every response.
    pub(crate) namespace: Option<Namespace>,
    pub(crate) gw: Arc<Gateway>,
    pub(crate) method: &'static Method,
    pub(crate) timer: Option<RpcTimer>,
    pub(crate) code: Code,
    pub(crate) done: bool,
}

impl<Resp: Revisioned + Strip> Relay<Resp> {
    pub(crate) async fn next(&mut self) -> Option<Result<Resp, Status>> {
        if self.done {
            return None;
        }
        let failure = tokio::select! {
            biased;
            () = self.gw.shutdown.wait() => Status::from(GatewayError::ShuttingDown),
            status = client_failure(&mut self.client_failed) => status,
            refusal = next_refusal(&mut self.refused) => {
                self.gw.metrics.grpc.message_sent(self.method);
                return Some(Ok(refusal));
            }
            message = self.upstream.message() => match message {
                Ok(Some(mut message)) => {
                    self.gw.seen.observe_response(&message);
                    match self.namespace.as_ref().map_or(Ok(()), |ns| message.strip(ns)) {
                        Ok(()) => {
                            self.gw.metrics.grpc.message_sent(self.method);
                            return Some(Ok(message));
                        }
                        Err(status) => status,
                    }
                }
                Ok(None) => {
                    self.code = Code::Ok;
                    self.done = true;
                    return None;
                }
                // A member that died mid-stream: etcd's clients resume a stream that ends
                // with UNAVAILABLE (on another endpoint, here keygate again), but give up on
                // the UNKNOWN that a broken connection would otherwise surface as.
                Err(status) => errors::for_client(status),
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

/// A screened stream (one with authorizers) answers the client before the member does: etcd
/// sends its stream's headers only with its first response, and a refused watch creation never
/// reaches etcd, so its refusal cannot wait for them. Refusals flow while the upstream stream
/// opens; then the stream is relayed as any other.
pub(crate) fn relay_when_open<Resp: Revisioned + Strip + Send + 'static>(
    opening: Opening<Resp>,
) -> RpcStream<Resp> {
    futures::stream::unfold(State::Opening(Box::new(opening)), |state| async move {
        match state {
            State::Opening(mut o) => {
                let result = tokio::select! {
                    result = &mut o.upstream => result,
                    refusal = next_refusal(&mut o.refused) => {
                        o.gw.metrics.grpc.message_sent(o.method);
                        return Some((Ok(refusal), State::Opening(o)));
                    }
                };
                let o = *o;
                match result {
                    Ok(response) => {
                        o.gw.pool.record(&o.member, "ok");
                        let mut relay = Relay {
                            upstream: response.into_inner(),
                            client_failed: Some(o.client_failed),
                            refused: o.refused,
                            namespace: o.namespace,
                            gw: o.gw,
                            method: o.method,
                            timer: Some(o.timer),
                            code: Code::Cancelled,
                            done: false,
                        };
                        let item = relay.next().await?;
                        Some((item, State::Relaying(Box::new(relay))))
                    }
                    Err(status) => {
                        o.gw.pool.note_failure(&o.member, &status);
                        o.timer.finish(status.code());
                        Some((Err(status), State::Done))
                    }
                }
            }
            State::Relaying(mut relay) => {
                let item = relay.next().await?;
                Some((item, State::Relaying(relay)))
            }
            State::Done => None,
        }
    })
    .boxed()
}

/// An upstream stream being opened for a screened client stream.
pub(crate) struct Opening<Resp> {
    pub(crate) upstream: Upstream<Resp>,
    pub(crate) member: Arc<Member>,
    pub(crate) client_failed: oneshot::Receiver<Status>,
    pub(crate) refused: Option<mpsc::Receiver<Resp>>,
    pub(crate) namespace: Option<Namespace>,
    pub(crate) gw: Arc<Gateway>,
    pub(crate) method: &'static Method,
    pub(crate) timer: RpcTimer,
}

enum State<Resp> {
    Opening(Box<Opening<Resp>>),
    Relaying(Box<Relay<Resp>>),
    Done,
}
