//! The request path. Every RPC, unary or streaming, passes through these functions, which a
//! reader can follow top to bottom: the RPC is accounted as started; its caller identified, the
//! request described and authorized; a request allowed in a namespace is checked against its
//! tenant's quotas and confined to the namespace; it is routed — a Range to the read mirror when
//! the mirror can answer exactly, everything else to an etcd member (retried on another member
//! where that cannot apply a write twice); the response is stripped of the namespace and relayed
//! back, its revision noted; and the RPC is accounted as finished.

mod hubs;
mod streams;

use crate::describe::{Describe, Description};
use crate::errors;
use crate::identity::{ConnectionInfo, Identifier, Identity};
use crate::lease::LeaseHub;
use crate::method::{self, Method};
use crate::metrics::{Metrics, Prefix, RpcTimer};
use crate::mirror::{Declined, Mirror, RangeAnswer};
use crate::namespace::{Confine, Namespace, Strip};
use crate::policy::audit::{self, Audit, Pending, ServedBy, Verdict};
use crate::policy::Policy;
use crate::revision::{Revisioned, SeenRevision};
use crate::shutdown::Shutdown;
use crate::tenant::{StorageClaim, Tenant, Tenants};
use crate::upstream::{self, Conn};
use crate::upstream::{Member, Pool};
use crate::watch::Hub;
use futures::stream::BoxStream;
use keygate_proto::etcdserverpb::{RangeRequest, RangeResponse};
use prost::Message;
use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use tonic::{Code, Extensions, Request, Response, Status, Streaming};

/// A stream of responses as the generated services return it.
pub type RpcStream<T> = BoxStream<'static, Result<T, Status>>;

/// The client's messages of a bidirectional stream, on their way upstream.
pub type ClientStream<T> = tokio_stream::wrappers::ReceiverStream<T>;

/// An upstream stream being opened.
pub type Upstream<T> = futures::future::BoxFuture<'static, Result<Response<Streaming<T>>, Status>>;

/// An RPC past phases 1 to 5: its timer running, its audit event (if any) begun, its caller
/// known to the audit, and its tenant when it was allowed in a namespace.
struct Admitted {
    timer: RpcTimer,
    audit: Option<Pending>,
    who: Option<Identity>,
    tenant: Option<Arc<Tenant>>,
    /// A write's claim on its tenant's storage quota, until it is answered.
    claim: Option<StorageClaim>,
    /// A KV request's key prefix, when the key-prefix metrics are on.
    prefix: Option<Prefix>,
}

impl Admitted {
    fn namespace(&self) -> Option<&Namespace> {
        self.tenant.as_ref().map(|t| &t.namespace)
    }

    fn decision(&self) -> Verdict {
        audit::allowed(self.tenant.is_some())
    }
}

/// What every RPC handler shares.
pub struct Gateway {
    pub pool: Pool,
    pub metrics: Metrics,
    /// Namespaces' quotas and metrics.
    pub tenants: Arc<Tenants>,
    pub shutdown: Shutdown,
    /// The highest revision shown to any client.
    pub seen: Arc<SeenRevision>,
    pub mirror: Option<Mirror>,
    /// Serves watches from the mirror's event stream.
    pub hub: Option<Hub>,
    /// Shares upstream lease keep-alives.
    pub leases: Option<LeaseHub>,
    /// Works out who each caller is.
    pub identity: Identifier,
    /// The authorizer chain; `None` (no plugin configured) skips the phase.
    pub policy: Option<Arc<Policy>>,
    /// The audit pipeline; `None` (no auditor configured) skips it.
    pub audit: Option<Arc<Audit>>,
    /// `server.advertise_client_urls`: shown as the members' client URLs when not empty.
    pub advertise_client_urls: Vec<String>,
}

impl Gateway {
    /// A unary RPC: one request, one response.
    pub async fn unary<Req, Resp, F, Fut>(
        &self,
        method: &'static Method,
        mut request: Request<Req>,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone + Describe + Confine + Message,
        Resp: Revisioned + Strip + Message,
        F: Fn(Conn, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let mut admitted = self.begin(method, &mut request).await?;
        let result = self.forward(method, request, call).await;
        let result = respond(&admitted, method, result);
        let revision = result.as_ref().ok().and_then(|r| r.get_ref().revision());
        if let (Some(claim), Some(revision)) = (admitted.claim.take(), revision) {
            claim.written(revision);
        }
        self.finish(admitted, &result, ServedBy::Upstream).await;
        result
    }

    /// Phases 1 to 5 for a request of one message: the RPC's timer and audit event start, the
    /// caller is identified, the request described, authorized, and — in a namespace — held to
    /// its tenant's quotas and confined. A refusal is accounted here and returned.
    async fn begin<T: Describe + Confine + Message>(
        &self,
        method: &'static Method,
        request: &mut Request<T>,
    ) -> Result<Admitted, Status> {
        let timer = self.metrics.grpc.start(method);
        let audit = (self.audit.as_ref()).map(|_| Audit::begin(method, request.get_ref()));
        let described = audit.as_ref().map(Pending::description);
        let (tenant, claim) = match self.admit(method, request, described).await {
            Ok(Some((tenant, claim))) => (Some(tenant), claim),
            Ok(None) => (None, None),
            Err(status) => {
                timer.finish(status.code());
                let who = request.extensions().get::<Identity>();
                self.account(audit, who, Verdict::Deny, Err(&status), ServedBy::Keygate)
                    .await;
                return Err(status);
            }
        };
        let who = audit
            .as_ref()
            .and_then(|_| request.extensions().get::<Identity>().cloned());
        // Counted as etcd will see it: inside the caller's namespace.
        let prefix = self
            .metrics
            .prefixes
            .request(method.name, request.get_ref());
        Ok(Admitted {
            timer,
            audit,
            who,
            tenant,
            claim,
            prefix,
        })
    }

    /// Phase 8 for a unary RPC: its timer and its audit event get the outcome.
    async fn finish<R: Revisioned>(
        &self,
        admitted: Admitted,
        result: &Result<Response<R>, Status>,
        served_by: ServedBy,
    ) {
        let decision = admitted.decision();
        let Admitted {
            timer, audit, who, ..
        } = admitted;
        timer.finish(result.as_ref().map_or_else(Status::code, |_| Code::Ok));
        if audit.is_none() {
            return;
        }
        // Boxed, so that requests without an auditor do not carry its state.
        let outcome = result.as_ref().map(|r| r.get_ref().revision());
        Box::pin(self.account(audit, who.as_ref(), decision, outcome, served_by)).await;
    }

    /// Phases 2 to 5: identify the caller, describe the request, ask the authorizers; a
    /// request they allow in a namespace is held to its tenant's quotas and confined to it.
    /// Returns the tenant, with the request's claim on its storage quota.
    /// `described`: the request's description when the audit has made it already.
    async fn admit<T: Describe + Confine + Message>(
        &self,
        method: &'static Method,
        request: &mut Request<T>,
        described: Option<&Description>,
    ) -> Result<Option<(Arc<Tenant>, Option<StorageClaim>)>, Status> {
        self.identify(method, request)?;
        let Some(policy) = &self.policy else {
            return Ok(None);
        };
        // Authenticate is how an anonymous caller becomes someone; etcd checks it.
        if std::ptr::eq(method, &method::AUTHENTICATE) {
            return Ok(None);
        }
        let what = match described {
            Some(what) => Cow::Borrowed(what),
            None => Cow::Owned(Description::of(method, request.get_ref())),
        };
        let Some(namespace) = self.authorize(policy, &what, request.extensions())? else {
            return Ok(None);
        };
        let tenant = self.tenants.get(&namespace);
        // Boxed, so that requests outside any namespace do not carry its state.
        let claim = Box::pin(self.confine(&tenant, method, &what, request.get_mut())).await?;
        Ok(Some((tenant, claim)))
    }

    /// Phase 5, rewrite: a request allowed in a namespace, within its tenant's quotas, with
    /// every key moved into the namespace. RPCs that reach beyond any namespace are refused.
    async fn confine<T: Confine + Message>(
        &self,
        tenant: &Arc<Tenant>,
        method: &'static Method,
        what: &Description,
        message: &mut T,
    ) -> Result<Option<StorageClaim>, Status> {
        tenant.admit(method.name, message.encoded_len())?;
        if let Err(status) = message.confine(&tenant.namespace) {
            tenant.denied();
            return Err(status);
        }
        let mut claim = self.tenants.check_storage(tenant, what).await?;
        // A lock or campaign stores its key at once and then waits, for as long as it takes:
        // the mirror counts the key while it waits, so no claim is held for it.
        if std::ptr::eq(method, &method::LOCK) || std::ptr::eq(method, &method::CAMPAIGN) {
            claim = None;
        }
        if std::ptr::eq(method, &method::LEASE_GRANT) {
            self.tenants.check_leases(tenant).await?;
        }
        Ok(claim)
    }

    /// Phase 4, authorize: the plugin chain's verdict on the described request, with the
    /// namespace it confines the request to.
    fn authorize(
        &self,
        policy: &Policy,
        description: &Description,
        extensions: &Extensions,
    ) -> Result<Option<Namespace>, Status> {
        match extensions.get::<Identity>() {
            Some(identity) => policy.authorize(identity, description),
            None => Err(Status::permission_denied(crate::policy::PERMISSION_DENIED)),
        }
    }

    /// Phase 2, identify: the caller's identity from the connection (set by the server) and
    /// the request's credentials, carried in the request's extensions to later phases.
    fn identify<T>(&self, method: &'static Method, request: &mut Request<T>) -> Result<(), Status> {
        let conn = request.extensions().get::<ConnectionInfo>().cloned();
        // Authenticate is how a caller without identity gets one.
        let anonymous_ok = std::ptr::eq(method, &method::AUTHENTICATE);
        let identity =
            self.identity
                .identify(request.metadata_mut().as_mut(), conn.as_ref(), anonymous_ok)?;
        self.identity.account(&identity);
        request.extensions_mut().insert(identity);
        Ok(())
    }

    /// Range: from the mirror when it can give etcd's exact answer at a revision the contract
    /// allows, else from etcd.
    pub async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let (metadata, answer, extensions) = self.range_answer(request, false).await?.into_parts();
        Ok(Response::from_parts(
            metadata,
            answer.decoded()?,
            extensions,
        ))
    }

    /// Range, with the answer (the mirror's, or etcd's when forwarded) as encoded bytes when
    /// `encoded` and the caller is in no namespace (whose answers are rewritten): the direct
    /// gRPC path sends them as they are.
    pub async fn range_answer(
        &self,
        mut request: Request<RangeRequest>,
        encoded: bool,
    ) -> Result<Response<RangeAnswer>, Status> {
        let admitted = self.begin(&method::RANGE, &mut request).await?;
        let encoded = encoded && admitted.tenant.is_none();
        let mut served_by = ServedBy::Upstream;
        let consistency = if request.get_ref().serializable {
            "serializable"
        } else {
            "linearizable"
        };
        let result = match self.read_from_mirror(&request, encoded).await {
            Ok(response) => {
                self.metrics.mirror.served(request.get_ref().serializable);
                served_by = ServedBy::Mirror;
                Ok(Response::new(response))
            }
            Err(declined) => {
                let reason = declined.label();
                self.metrics
                    .mirror
                    .reads
                    .with_label_values(&[consistency, "upstream", reason])
                    .inc();
                if encoded {
                    self.forward(&method::RANGE, request, upstream::range_encoded)
                        .await
                } else {
                    self.forward(&method::RANGE, request, |conn, request| {
                        upstream::unary(conn, method::RANGE.path, request)
                    })
                    .await
                    .map(|response| response.map(RangeAnswer::Decoded))
                }
            }
        };
        let result = respond(&admitted, &method::RANGE, result);
        self.finish(admitted, &result, served_by).await;
        result
    }

    /// Phase 8, account (its audit half; metrics are kept by the timers): the request's event
    /// to the audit pipeline, when an auditor is configured.
    async fn account(
        &self,
        pending: Option<Pending>,
        who: Option<&Identity>,
        decision: Verdict,
        outcome: Result<Option<i64>, &Status>,
        served_by: ServedBy,
    ) {
        if let (Some(audit), Some(pending)) = (&self.audit, pending) {
            // Boxed, so that requests without an auditor do not carry its state.
            Box::pin(audit.finish(pending, who, decision, outcome, served_by)).await;
        }
    }

    /// Phase 8 for a stream's opening: its audit event, when an auditor is configured —
    /// refused (`Err`) or admitted, in a namespace or not.
    async fn account_opening<T>(
        &self,
        method: &'static Method,
        request: &Request<T>,
        admitted: Result<bool, &Status>,
        served_by: ServedBy,
    ) {
        if self.audit.is_none() {
            return;
        }
        let pending = Audit::begin_stream(method);
        let who = request.extensions().get::<Identity>();
        let (decision, outcome) = match admitted {
            Ok(namespaced) => (audit::allowed(namespaced), Ok(None)),
            Err(status) => (Verdict::Deny, Err(status)),
        };
        self.account(Some(pending), who, decision, outcome, served_by)
            .await;
    }

    async fn read_from_mirror(
        &self,
        request: &Request<RangeRequest>,
        encoded: bool,
    ) -> Result<RangeAnswer, Declined> {
        let mirror = self.mirror.as_ref().ok_or(Declined::NotServing)?;
        if carries_credentials(request) {
            return Err(Declined::Credentials);
        }
        mirror.range(request.get_ref(), encoded).await
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
        Resp: Revisioned,
        F: Fn(Conn, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let (metadata, _, message) = request.into_parts();
        let mut member = self.pool.pick()?;
        let mut tried: Vec<Arc<Member>> = Vec::new();
        loop {
            let attempt =
                Request::from_parts(metadata.clone(), Extensions::default(), message.clone());
            // Boxed: an upstream call's state is large, and every request's future would
            // carry (and move) it, including those the mirror answers.
            let status = match Box::pin(call(member.channel(), attempt)).await {
                Ok(response) => {
                    self.pool.record(&member, "ok");
                    self.seen.observe_response(response.get_ref());
                    return Ok(response);
                }
                Err(status) => status,
            };
            self.pool.note_failure(&member, &status);
            if !errors::retryable(&status, method.read_only) {
                return Err(errors::for_client(status));
            }
            tried.push(member);
            member = match self.pool.pick_excluding(&tried) {
                Some(next) => next,
                None => return Err(errors::for_client(status)),
            };
            self.pool
                .metrics()
                .retries
                .with_label_values(&[method.name])
                .inc();
        }
    }
}

/// Phase 7, respond: a tenant's response with the namespace taken off every key, and its
/// size in the tenant's and the key-prefix metrics.
fn respond<Resp: Strip + Message>(
    admitted: &Admitted,
    method: &'static Method,
    result: Result<Response<Resp>, Status>,
) -> Result<Response<Resp>, Status> {
    if admitted.tenant.is_none() && admitted.prefix.is_none() {
        return result;
    }
    let mut response = result?;
    if let Some(tenant) = &admitted.tenant {
        response.get_mut().strip(&tenant.namespace)?;
        tenant.bytes(method.name, "out", response.get_ref().encoded_len());
    }
    if let Some(prefix) = &admitted.prefix {
        prefix.response(method.name, response.get_ref().encoded_len());
    }
    Ok(response)
}

/// etcd checks a token's permissions on every read and watch; keygate's mirror cannot, so
/// requests made with etcd credentials go to etcd.
fn carries_credentials<T>(request: &Request<T>) -> bool {
    let md = request.metadata();
    let headers = md.as_ref();
    headers.contains_key(crate::headers::TOKEN) || headers.contains_key(http::header::AUTHORIZATION)
}
