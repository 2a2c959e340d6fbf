//! etcdserverpb.Maintenance: alarms, status, defragmentation, hashes, snapshots, leadership.

use super::unary;
use crate::method;
use crate::pipeline::{Gateway, RpcStream};
use keygate_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keygate_proto::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use keygate_proto::etcdserverpb::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct MaintenanceService(pub(crate) Arc<Gateway>);

pub fn server(gw: &Arc<Gateway>, max_recv: usize) -> MaintenanceServer<MaintenanceService> {
    MaintenanceServer::new(MaintenanceService(gw.clone())).max_decoding_message_size(max_recv)
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    type SnapshotStream = RpcStream<SnapshotResponse>;

    async fn alarm(&self, r: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        unary!(self.0, method::ALARM, r)
    }
    async fn status(&self, r: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        unary!(self.0, method::STATUS, r)
    }
    async fn defragment(
        &self,
        r: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        unary!(self.0, method::DEFRAGMENT, r)
    }
    async fn hash(&self, r: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        unary!(self.0, method::HASH, r)
    }
    async fn hash_kv(&self, r: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        unary!(self.0, method::HASH_KV, r)
    }
    async fn snapshot(
        &self,
        r: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.0
            .server_stream(&method::SNAPSHOT, r, |channel, request| async move {
                MaintenanceClient::new(channel)
                    .max_decoding_message_size(usize::MAX)
                    .snapshot(request)
                    .await
            })
            .await
    }
    async fn move_leader(
        &self,
        r: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        unary!(self.0, method::MOVE_LEADER, r)
    }
    async fn downgrade(
        &self,
        r: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        unary!(self.0, method::DOWNGRADE, r)
    }
}
