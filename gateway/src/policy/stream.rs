//! Streams whose client messages the authorizers see one by one: every WatchCreateRequest on
//! a Watch stream is authorized as etcd checks it, and a refused one is answered as etcd
//! answers it (created and canceled, watch_id -1, the reason) while the stream goes on. On a
//! stream opened in a namespace, every message is confined to it: watch creations must be
//! allowed in the same namespace and are rewritten into it, keep-alives must name the tenant's
//! own leases.

use super::audit::{Audit, ServedBy, Verdict};
use super::Policy;
use crate::describe::{Describe, Description};
use crate::identity::Identity;
use crate::method;
use crate::namespace::{Confine, Namespace};
use crate::revision::SeenRevision;
use crate::tenant::{Tenant, WatcherSlot};
use keygate_proto::etcdserverpb::{
    watch_request::RequestUnion, LeaseKeepAliveRequest, LeaseKeepAliveResponse, ResponseHeader,
    WatchRequest, WatchResponse,
};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;

/// A client message of a bidirectional stream, as the authorizers see it; on a tenant's
/// stream it is confined to the namespace ([`Confine`]) before it goes upstream.
pub trait Screened<Resp>: Confine {
    /// The description of a message the authorizers must allow first; `None` for the rest.
    fn screen(&self) -> Option<Description>;
    /// The description of a message the audit records though the authorizers are not asked
    /// about it.
    fn audited(&self) -> Option<Description> {
        None
    }
    /// Whether the message opens a watcher (which counts against the tenant's quota), or
    /// closes one.
    fn watchers(&self) -> i32 {
        0
    }
    /// The response that takes the place of etcd's when the message is refused.
    fn refusal(&self, status: &Status, revision: i64) -> Resp;
}

impl Screened<WatchResponse> for WatchRequest {
    fn screen(&self) -> Option<Description> {
        match &self.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                let mut d = Description::new(&method::WATCH);
                create.describe(&mut d);
                Some(d)
            }
            _ => None,
        }
    }

    fn watchers(&self) -> i32 {
        match &self.request_union {
            Some(RequestUnion::CreateRequest(_)) => 1,
            Some(RequestUnion::CancelRequest(_)) => -1,
            _ => 0,
        }
    }

    fn refusal(&self, status: &Status, revision: i64) -> WatchResponse {
        WatchResponse {
            header: Some(ResponseHeader {
                revision,
                ..Default::default()
            }),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: status.message().to_string(),
            ..Default::default()
        }
    }
}

impl Screened<LeaseKeepAliveResponse> for LeaseKeepAliveRequest {
    // The stream itself is authorized when it opens; single keep-alives are not asked about.
    fn screen(&self) -> Option<Description> {
        None
    }

    fn audited(&self) -> Option<Description> {
        Some(Description::of(&method::LEASE_KEEP_ALIVE, self))
    }

    /// etcd's answer to a keep-alive for a lease it does not have.
    fn refusal(&self, _status: &Status, revision: i64) -> LeaseKeepAliveResponse {
        LeaseKeepAliveResponse {
            header: Some(ResponseHeader {
                revision,
                ..Default::default()
            }),
            id: self.id,
            ttl: 0,
        }
    }
}

/// Who opened a stream, the authorizers they answer to, and the tenant in whose namespace the
/// stream was opened: what every message on it is held to.
pub struct StreamCaller {
    pub policy: Arc<Policy>,
    pub identity: Identity,
    pub tenant: Option<Arc<Tenant>>,
}

impl StreamCaller {
    /// One message of the stream: put to the authorizers when it has a `description` (a watch
    /// creation), which must allow it in the stream's own namespace; then, on a tenant's
    /// stream, moved into the namespace by `confine`. Returns the tenant, for its quotas.
    pub fn admit(
        &self,
        description: Option<&Description>,
        confine: impl FnOnce(&Namespace) -> Result<(), Status>,
    ) -> Result<Option<&Arc<Tenant>>, Status> {
        if let Some(description) = description {
            let namespace = self.policy.authorize(&self.identity, description)?;
            // A stream lives in one namespace: the one it was opened in.
            if namespace.as_ref() != self.tenant.as_ref().map(|t| &t.namespace) {
                return Err(Status::permission_denied(super::PERMISSION_DENIED));
            }
        }
        let Some(tenant) = &self.tenant else {
            return Ok(None);
        };
        if let Err(status) = confine(&tenant.namespace) {
            tenant.denied();
            return Err(status);
        }
        Ok(Some(tenant))
    }
}

/// The authorizer chain's view of one stream's client messages.
pub struct Screen<Resp> {
    pub caller: StreamCaller,
    pub seen: Arc<SeenRevision>,
    pub refused: mpsc::Sender<Resp>,
    /// The auditor each screened message (a watch creation) and each keep-alive is reported to.
    pub audit: Option<Arc<Audit>>,
    /// The tenant's watchers created on this stream (freed as they are canceled, or when the
    /// client stops sending).
    pub watchers: Vec<WatcherSlot>,
}

impl<Resp> Screen<Resp> {
    pub async fn check<Req: Screened<Resp>>(&mut self, message: &mut Req) -> Result<(), Resp> {
        let description = message.screen();
        let pending = (self.audit.as_ref())
            .and_then(|_| description.clone().or_else(|| message.audited()))
            .map(Audit::begin_described);
        let result = self.admit(message, description);
        let caller = &self.caller;
        if let (Some(audit), Some(pending)) = (&self.audit, pending) {
            let decision = match &result {
                Err(_) => Verdict::Deny,
                Ok(()) => super::audit::allowed(caller.tenant.is_some()),
            };
            let outcome = result.as_ref().map(|()| None);
            (audit.finish(
                pending,
                Some(&caller.identity),
                decision,
                outcome,
                ServedBy::Upstream,
            ))
            .await;
        }
        result.map_err(|status| {
            tracing::debug!(identity = %caller.identity.name, "stream message refused: {}", status.message());
            message.refusal(&status, self.seen.get())
        })
    }

    fn admit<Req: Screened<Resp>>(
        &mut self,
        message: &mut Req,
        description: Option<Description>,
    ) -> Result<(), Status> {
        let watchers = message.watchers();
        let Some(tenant) = (self.caller).admit(description.as_ref(), |ns| message.confine(ns))?
        else {
            return Ok(());
        };
        match watchers {
            1 => self.watchers.push(tenant.watcher()?),
            -1 => drop(self.watchers.pop()),
            _ => {}
        }
        Ok(())
    }
}

/// The next refusal to send; never resolves when there is none to come.
pub async fn next_refusal<Resp>(slot: &mut Option<mpsc::Receiver<Resp>>) -> Resp {
    if let Some(rx) = slot.as_mut() {
        if let Some(refusal) = rx.recv().await {
            return refusal;
        }
        *slot = None;
    }
    std::future::pending().await
}
