//! etcdserverpb.Cluster: membership. Member lists go back with the members' client URLs, or
//! with keygate's own where `server.advertise_client_urls` is set.

use super::unary;
use crate::method;
use crate::pipeline::Gateway;
use keygate_proto::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use keygate_proto::etcdserverpb::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ClusterService(pub(crate) Arc<Gateway>);

pub fn server(gw: &Arc<Gateway>, max_recv: usize) -> ClusterServer<ClusterService> {
    ClusterServer::new(ClusterService(gw.clone())).max_decoding_message_size(max_recv)
}

/// A response that lists members.
trait Members {
    fn members_mut(&mut self) -> impl Iterator<Item = &mut Member>;
}

macro_rules! members {
    ($($response:ty),*) => {$(
        impl Members for $response {
            fn members_mut(&mut self) -> impl Iterator<Item = &mut Member> {
                self.members.iter_mut()
            }
        }
    )*};
}
members!(
    MemberRemoveResponse,
    MemberUpdateResponse,
    MemberListResponse,
    MemberPromoteResponse
);

impl Members for MemberAddResponse {
    fn members_mut(&mut self) -> impl Iterator<Item = &mut Member> {
        self.members.iter_mut().chain(self.member.as_mut())
    }
}

impl ClusterService {
    /// Shows keygate's advertised client URLs in place of every started member's (a member not
    /// started yet has none, and keeps none), so that clients syncing their endpoints from the
    /// member list stay on keygate.
    fn advertised<R: Members>(
        &self,
        result: Result<Response<R>, Status>,
    ) -> Result<Response<R>, Status> {
        let urls = &self.0.advertise_client_urls;
        let mut response = result?;
        if !urls.is_empty() {
            for member in response.get_mut().members_mut() {
                if !member.client_ur_ls.is_empty() {
                    member.client_ur_ls.clone_from(urls);
                }
            }
        }
        Ok(response)
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        r: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.advertised(unary!(self.0, method::MEMBER_ADD, r))
    }
    async fn member_remove(
        &self,
        r: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.advertised(unary!(self.0, method::MEMBER_REMOVE, r))
    }
    async fn member_update(
        &self,
        r: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.advertised(unary!(self.0, method::MEMBER_UPDATE, r))
    }
    async fn member_list(
        &self,
        r: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        self.advertised(unary!(self.0, method::MEMBER_LIST, r))
    }
    async fn member_promote(
        &self,
        r: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.advertised(unary!(self.0, method::MEMBER_PROMOTE, r))
    }
}
