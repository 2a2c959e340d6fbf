//! etcdserverpb.Lease: grant, revoke, keep-alive streams, time-to-live, listing.

use super::unary;
use crate::method;
use crate::pipeline::{ClientStream, Gateway, RpcStream, Upstream};
use crate::upstream::Conn;
use keygate_proto::etcdserverpb::lease_client::LeaseClient;
use keygate_proto::etcdserverpb::lease_server::{Lease, LeaseServer};
use keygate_proto::etcdserverpb::*;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

pub struct LeaseService(pub(crate) Arc<Gateway>);

pub fn server(gw: &Arc<Gateway>, max_recv: usize) -> LeaseServer<LeaseService> {
    LeaseServer::new(LeaseService(gw.clone())).max_decoding_message_size(max_recv)
}

#[tonic::async_trait]
impl Lease for LeaseService {
    type LeaseKeepAliveStream = RpcStream<LeaseKeepAliveResponse>;

    async fn lease_grant(
        &self,
        r: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        unary!(self.0, method::LEASE_GRANT, r)
    }
    async fn lease_revoke(
        &self,
        r: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        if let Some(leases) = &self.0.leases {
            leases.forget(r.get_ref().id);
        }
        unary!(self.0, method::LEASE_REVOKE, r)
    }
    async fn lease_keep_alive(
        &self,
        r: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.0.lease_keep_alive(r, open_keep_alive).await
    }
    async fn lease_time_to_live(
        &self,
        r: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        unary!(self.0, method::LEASE_TIME_TO_LIVE, r)
    }
    async fn lease_leases(
        &self,
        r: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        unary!(self.0, method::LEASE_LEASES, r)
    }
}

/// Boxed here, where the types are concrete, so the compiler can see the future is Send.
fn open_keep_alive(
    channel: Conn,
    request: Request<ClientStream<LeaseKeepAliveRequest>>,
) -> Upstream<LeaseKeepAliveResponse> {
    Box::pin(async move { LeaseClient::new(channel).lease_keep_alive(request).await })
}
