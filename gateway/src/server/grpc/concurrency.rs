//! v3lockpb.Lock and v3electionpb.Election: the concurrency services behind `etcdctl lock` and
//! `etcdctl elect`. Lock and Campaign block upstream until acquired; keygate just waits with them.

use super::unary;
use crate::method;
use crate::pipeline::{Gateway, RpcStream};
use keygate_proto::v3electionpb::election_client::ElectionClient;
use keygate_proto::v3electionpb::election_server::{Election, ElectionServer};
use keygate_proto::v3electionpb::*;
use keygate_proto::v3lockpb::lock_server::{Lock, LockServer};
use keygate_proto::v3lockpb::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct LockService(pub(crate) Arc<Gateway>);
pub struct ElectionService(pub(crate) Arc<Gateway>);

pub fn lock_server(gw: &Arc<Gateway>, max_recv: usize) -> LockServer<LockService> {
    LockServer::new(LockService(gw.clone())).max_decoding_message_size(max_recv)
}

pub fn election_server(gw: &Arc<Gateway>, max_recv: usize) -> ElectionServer<ElectionService> {
    ElectionServer::new(ElectionService(gw.clone())).max_decoding_message_size(max_recv)
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, r: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        unary!(self.0, method::LOCK, r)
    }
    async fn unlock(&self, r: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        unary!(self.0, method::UNLOCK, r)
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    type ObserveStream = RpcStream<LeaderResponse>;

    async fn campaign(
        &self,
        r: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        unary!(self.0, method::CAMPAIGN, r)
    }
    async fn proclaim(
        &self,
        r: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        unary!(self.0, method::PROCLAIM, r)
    }
    async fn leader(&self, r: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        unary!(self.0, method::LEADER, r)
    }
    async fn observe(
        &self,
        r: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        self.0
            .server_stream(&method::OBSERVE, r, |channel, request| async move {
                ElectionClient::new(channel)
                    .max_decoding_message_size(usize::MAX)
                    .observe(request)
                    .await
            })
            .await
    }
    async fn resign(&self, r: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        unary!(self.0, method::RESIGN, r)
    }
}
