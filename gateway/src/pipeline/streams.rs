//! The request path of streaming RPCs forwarded to etcd: one request and a stream of
//! responses (Snapshot, Observe), and bidirectional streams (Watch and LeaseKeepAlive when no
//! hub serves them), with the same phases as unary RPCs — identify, authorize, confine to the
//! caller's namespace — applied to the stream and to each client message that needs them.

use super::{Admitted, ClientStream, Gateway, RpcStream, Upstream};
use crate::describe::{Describe, Description};
use crate::identity::Identity;
use crate::method::Method;
use crate::metrics::RpcTimer;
use crate::namespace::{Confine, Namespace, Strip};
use crate::policy::audit::ServedBy;
use crate::policy::stream::{Screen, Screened, StreamCaller};
use crate::relay::{client_messages, relay_when_open, Opening, Relay};
use crate::revision::Revisioned;
use crate::upstream::Conn;
use futures::StreamExt;
use prost::Message;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Extensions, Request, Response, Status, Streaming};

impl Gateway {
    /// One request, a stream of responses (Snapshot, Observe).
    pub async fn server_stream<Req, Resp, F, Fut>(
        self: &Arc<Self>,
        method: &'static Method,
        mut request: Request<Req>,
        call: F,
    ) -> Result<Response<RpcStream<Resp>>, Status>
    where
        Req: Clone + Describe + Confine + Message,
        Resp: Revisioned + Strip + Send + 'static,
        F: Fn(Conn, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Streaming<Resp>>, Status>>,
    {
        let admitted = self.begin(method, &mut request).await?;
        let (decision, namespace) = (admitted.decision(), admitted.namespace().cloned());
        let Admitted {
            timer, audit, who, ..
        } = admitted;
        // The stream's event says how it opened.
        match self.forward(method, request, call).await {
            Ok(response) => {
                self.account(audit, who.as_ref(), decision, Ok(None), ServedBy::Upstream)
                    .await;
                Ok(response
                    .map(|upstream| self.relay(method, upstream, (None, None, namespace), timer)))
            }
            Err(status) => {
                timer.finish(status.code());
                self.account(
                    audit,
                    who.as_ref(),
                    decision,
                    Err(&status),
                    ServedBy::Upstream,
                )
                .await;
                Err(status)
            }
        }
    }

    /// A stream of requests and a stream of responses (Watch, LeaseKeepAlive). The client's
    /// messages flow to one member as they arrive; a half-close is passed on as etcd sees it.
    pub async fn bidi_stream<Req, Resp, F>(
        self: &Arc<Self>,
        method: &'static Method,
        mut request: Request<Streaming<Req>>,
        call: F,
    ) -> Result<Response<RpcStream<Resp>>, Status>
    where
        Req: Screened<Resp> + Send + 'static,
        Resp: Revisioned + Strip + Send + 'static,
        F: FnOnce(Conn, Request<ClientStream<Req>>) -> Upstream<Resp>,
    {
        let timer = self.metrics.grpc.start(method);
        if let Err(status) = self.identify(method, &mut request) {
            timer.finish(status.code());
            self.account_opening(method, &request, Err(&status), ServedBy::Keygate)
                .await;
            return Err(status);
        }
        // The stream as a whole, then (in `client_messages`) each message that needs it.
        let mut screen = None;
        let mut namespace = None;
        if let Some(policy) = &self.policy {
            let opened = Description::new(method);
            namespace = match self.authorize(policy, &opened, request.extensions()) {
                Ok(namespace) => namespace,
                Err(status) => {
                    timer.finish(status.code());
                    self.account_opening(method, &request, Err(&status), ServedBy::Keygate)
                        .await;
                    return Err(status);
                }
            };
            if let Some(identity) = request.extensions().get::<Identity>() {
                let (tx, rx) = tokio::sync::mpsc::channel(16);
                let tenant = namespace.as_ref().map(|ns| self.tenants.get(ns));
                screen = Some((
                    Screen {
                        caller: StreamCaller {
                            policy: policy.clone(),
                            identity: identity.clone(),
                            tenant,
                        },
                        seen: self.seen.clone(),
                        refused: tx,
                        audit: self.audit.clone(),
                        watchers: Vec::new(),
                    },
                    rx,
                ));
            }
        }
        let (screen, refused) = screen.unzip();
        let opening = Ok(namespace.is_some());
        self.account_opening(method, &request, opening, ServedBy::Upstream)
            .await;
        let member = match self.pool.pick() {
            Ok(member) => member,
            Err(e) => {
                timer.finish(e.code());
                return Err(e.into());
            }
        };
        let (metadata, _, inbound) = request.into_parts();
        let (failed_tx, failed_rx) = oneshot::channel();
        let inbound = client_messages(
            inbound,
            method,
            self.metrics.grpc.clone(),
            failed_tx,
            screen,
        );
        let upstream_request = Request::from_parts(metadata, Extensions::default(), inbound);
        let upstream = call(member.channel(), upstream_request);
        if refused.is_some() {
            let opening = Opening {
                upstream,
                member,
                client_failed: failed_rx,
                refused,
                namespace,
                gw: self.clone(),
                method,
                timer,
            };
            return Ok(Response::new(relay_when_open(opening)));
        }
        match upstream.await {
            Ok(response) => {
                self.pool.record(&member, "ok");
                let ends = (Some(failed_rx), refused, namespace);
                Ok(response.map(|upstream| self.relay(method, upstream, ends, timer)))
            }
            Err(status) => {
                self.pool.note_failure(&member, &status);
                timer.finish(status.code());
                Err(status)
            }
        }
    }

    /// Relays an upstream stream of responses: `ends` are the client's failure, keygate's
    /// answers to refused client messages, and the namespace to strip from every response.
    fn relay<Resp: Revisioned + Strip + Send + 'static>(
        self: &Arc<Self>,
        method: &'static Method,
        upstream: Streaming<Resp>,
        ends: RelayEnds<Resp>,
        timer: RpcTimer,
    ) -> RpcStream<Resp> {
        let (client_failed, refused, namespace) = ends;
        let relay = Relay {
            upstream,
            client_failed,
            refused,
            namespace,
            gw: self.clone(),
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
}

type RelayEnds<Resp> = (
    Option<oneshot::Receiver<Status>>,
    Option<mpsc::Receiver<Resp>>,
    Option<Namespace>,
);
