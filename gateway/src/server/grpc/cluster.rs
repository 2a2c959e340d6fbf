//! etcdserverpb.Cluster: membership.

use super::unary;
use crate::method;
use crate::pipeline::Gateway;
use keygate_proto::etcdserverpb::cluster_client::ClusterClient;
use keygate_proto::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use keygate_proto::etcdserverpb::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ClusterService(pub(crate) Arc<Gateway>);

pub fn server(gw: &Arc<Gateway>, max_recv: usize) -> ClusterServer<ClusterService> {
    ClusterServer::new(ClusterService(gw.clone())).max_decoding_message_size(max_recv)
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        r: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        unary!(self.0, method::MEMBER_ADD, r, ClusterClient::member_add)
    }
    async fn member_remove(
        &self,
        r: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        unary!(
            self.0,
            method::MEMBER_REMOVE,
            r,
            ClusterClient::member_remove
        )
    }
    async fn member_update(
        &self,
        r: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        unary!(
            self.0,
            method::MEMBER_UPDATE,
            r,
            ClusterClient::member_update
        )
    }
    async fn member_list(
        &self,
        r: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        unary!(self.0, method::MEMBER_LIST, r, ClusterClient::member_list)
    }
    async fn member_promote(
        &self,
        r: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        unary!(
            self.0,
            method::MEMBER_PROMOTE,
            r,
            ClusterClient::member_promote
        )
    }
}
