//! Streams whose client messages the authorizers see one by one: every WatchCreateRequest on
//! a Watch stream is authorized as etcd checks it, and a refused one is answered as etcd
//! answers it (created and canceled, watch_id -1, the reason) while the stream goes on.

use super::Policy;
use crate::describe::{Describe, Description};
use crate::identity::Identity;
use crate::method;
use crate::revision::SeenRevision;
use keygate_proto::etcdserverpb::{
    watch_request::RequestUnion, LeaseKeepAliveRequest, LeaseKeepAliveResponse, ResponseHeader,
    WatchRequest, WatchResponse,
};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;

/// A client message of a bidirectional stream, as the authorizers see it.
pub trait Screened<Resp> {
    /// The description of a message the authorizers must allow first; `None` for the rest.
    fn screen(&self) -> Option<Description>;
    /// The response that takes the place of etcd's when the message is refused.
    fn refusal(status: &Status, revision: i64) -> Resp;
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

    fn refusal(status: &Status, revision: i64) -> WatchResponse {
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

    fn refusal(_status: &Status, _revision: i64) -> LeaseKeepAliveResponse {
        LeaseKeepAliveResponse::default()
    }
}

/// The authorizer chain's view of one stream's client messages.
pub struct Screen<Resp> {
    pub policy: Arc<Policy>,
    pub identity: Identity,
    pub seen: Arc<SeenRevision>,
    pub refused: mpsc::Sender<Resp>,
}

impl<Resp> Screen<Resp> {
    pub fn check<Req: Screened<Resp>>(&self, message: &Req) -> Result<(), Resp> {
        match message.screen() {
            None => Ok(()),
            Some(description) => self
                .policy
                .authorize(&self.identity, &description)
                .map_err(|status| {
                    tracing::debug!(identity = %self.identity.name, "stream message refused: {}", status.message());
                    Req::refusal(&status, self.seen.get())
                }),
        }
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
