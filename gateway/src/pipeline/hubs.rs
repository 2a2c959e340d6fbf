//! The routes of the streams keygate serves itself — Watch through the watch hub,
//! LeaseKeepAlive through the lease hub — and their identity and authorization phases; each
//! falls back to a forwarded stream of its own where the hub cannot serve it.

use super::{carries_credentials, ClientStream, Gateway, RpcStream, Upstream};
use crate::describe::Description;
use crate::errors::GatewayError;
use crate::identity::Identity;
use crate::method::{self, Method};
use crate::policy::audit::{self, ServedBy, StreamAudit};
use crate::policy::stream::StreamCaller;
use crate::tenant::Tenant;
use crate::upstream::Conn;
use keygate_proto::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, WatchRequest, WatchResponse,
};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

impl Gateway {
    /// Watch: from the hub when the mirror follows etcd, else a stream of its own upstream.
    pub async fn watch(
        self: &Arc<Self>,
        mut request: Request<Streaming<WatchRequest>>,
        open_upstream: impl FnOnce(Conn, Request<ClientStream<WatchRequest>>) -> Upstream<WatchResponse>,
    ) -> Result<Response<RpcStream<WatchResponse>>, Status> {
        let hub = (self.hub.as_ref()).filter(|_| !carries_credentials(&request));
        let ready = match hub {
            Some(hub) => hub.ready().await,
            None => false,
        };
        let Some(hub) = hub.filter(|_| ready) else {
            return (self.bidi_stream(&method::WATCH, request, open_upstream)).await;
        };
        let leaderless = self.leaderless(&request)?;
        let timer = self.metrics.grpc.start(&method::WATCH);
        let caller = self.watch_caller(&mut request);
        let admitted = (caller.as_ref()).map(|c| c.as_ref().is_some_and(|c| c.tenant.is_some()));
        self.account_opening(&method::WATCH, &request, admitted, ServedBy::Hub)
            .await;
        match caller {
            Ok(caller) => {
                let audit = self.stream_audit(&request);
                let inbound = request.into_inner();
                let checks = (caller, audit);
                Ok(Response::new(hub.serve(inbound, timer, checks, leaderless)))
            }
            Err(status) => {
                timer.finish(status.code());
                Err(status)
            }
        }
    }

    /// For a stream keygate serves itself that requires a leader (`hasleader` metadata, as
    /// kube-apiserver's watches do): what tells it the cluster has been without one long enough
    /// to end it, as etcd does; refused at once while that is already so.
    fn leaderless<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<tokio::sync::watch::Receiver<bool>>, Status> {
        let required = request
            .metadata()
            .get("hasleader")
            .is_some_and(|v| v.as_bytes() == b"true");
        if !required {
            return Ok(None);
        }
        let leaderless = self.pool.leaderless();
        if *leaderless.borrow() {
            return Err(GatewayError::NoLeader.into());
        }
        Ok(Some(leaderless))
    }

    /// The audit of a stream keygate serves itself, when an auditor is configured.
    fn stream_audit<T>(&self, request: &Request<T>) -> Option<StreamAudit> {
        let audit = self.audit.clone()?;
        let who = request.extensions().get::<Identity>().cloned();
        Some(StreamAudit { audit, who })
    }

    /// Phases 2 and 4 for a watch stream served by the hub: the caller, and — when
    /// authorizers are configured — their verdict on the stream (and its namespace), kept to
    /// ask about each watch it creates.
    fn watch_caller<T>(&self, request: &mut Request<T>) -> Result<Option<StreamCaller>, Status> {
        let tenant = self.admit_stream(&method::WATCH, request)?;
        let Some(policy) = &self.policy else {
            return Ok(None);
        };
        let identity = (request.extensions().get::<Identity>().cloned())
            .ok_or_else(|| Status::permission_denied(crate::policy::PERMISSION_DENIED))?;
        Ok(Some(StreamCaller {
            policy: policy.clone(),
            identity,
            tenant,
        }))
    }

    /// Phases 2 and 4 for a stream that keygate serves itself: identify the caller, and put the
    /// stream's opening to the authorizers; the tenant when they allow it in a namespace.
    fn admit_stream<T>(
        &self,
        method: &'static Method,
        request: &mut Request<T>,
    ) -> Result<Option<Arc<Tenant>>, Status> {
        self.identify(method, request)?;
        let Some(policy) = &self.policy else {
            return Ok(None);
        };
        let namespace = self.authorize(policy, &Description::new(method), request.extensions())?;
        let tenant = namespace.map(|ns| self.tenants.get(&ns));
        if let Some(tenant) = &tenant {
            tenant.admit(method.name, 0)?;
        }
        Ok(tenant)
    }

    /// LeaseKeepAlive: through the shared upstream keep-alive stream, else a stream of its own.
    pub async fn lease_keep_alive(
        self: &Arc<Self>,
        mut request: Request<Streaming<LeaseKeepAliveRequest>>,
        open_upstream: impl FnOnce(
            Conn,
            Request<ClientStream<LeaseKeepAliveRequest>>,
        ) -> Upstream<LeaseKeepAliveResponse>,
    ) -> Result<Response<RpcStream<LeaseKeepAliveResponse>>, Status> {
        let Some(leases) = self
            .leases
            .as_ref()
            .filter(|_| !carries_credentials(&request))
        else {
            return (self.bidi_stream(&method::LEASE_KEEP_ALIVE, request, open_upstream)).await;
        };
        let leaderless = self.leaderless(&request)?;
        let timer = self.metrics.grpc.start(&method::LEASE_KEEP_ALIVE);
        // Single keep-alives are not put to the authorizers (the stream's opening is), but each
        // is audited.
        let admitted = self.admit_stream(&method::LEASE_KEEP_ALIVE, &mut request);
        let opening = admitted.as_ref().map(Option::is_some);
        self.account_opening(&method::LEASE_KEEP_ALIVE, &request, opening, ServedBy::Hub)
            .await;
        match admitted {
            Ok(tenant) => {
                let namespace = tenant.map(|t| t.namespace.clone());
                let decision = audit::allowed(namespace.is_some());
                let audit = self.stream_audit(&request).map(|a| (a, decision));
                let inbound = request.into_inner();
                Ok(Response::new(
                    leases.serve(inbound, timer, namespace, audit, leaderless),
                ))
            }
            Err(status) => {
                timer.finish(status.code());
                Err(status)
            }
        }
    }
}
