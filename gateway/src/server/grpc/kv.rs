//! etcdserverpb.KV: Range, Put, DeleteRange, Txn, Compact.

use super::unary;
use crate::method;
use crate::pipeline::Gateway;
use keygate_proto::etcdserverpb::kv_server::{Kv, KvServer};
use keygate_proto::etcdserverpb::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct KvService(pub(crate) Arc<Gateway>);

pub fn server(gw: &Arc<Gateway>, max_recv: usize) -> KvServer<KvService> {
    KvServer::new(KvService(gw.clone())).max_decoding_message_size(max_recv)
}

impl KvService {
    /// Range with its answer left encoded (the mirror's or etcd's), for the direct gRPC path.
    pub async fn range_answer(
        &self,
        r: Request<RangeRequest>,
    ) -> Result<Response<crate::mirror::RangeAnswer>, Status> {
        self.0.range_answer(r, true).await
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, r: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        self.0.range(r).await
    }
    async fn put(&self, r: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        unary!(self.0, method::PUT, r)
    }
    async fn delete_range(
        &self,
        r: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        unary!(self.0, method::DELETE_RANGE, r)
    }
    async fn txn(&self, r: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        unary!(self.0, method::TXN, r)
    }
    async fn compact(
        &self,
        r: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        unary!(self.0, method::COMPACT, r)
    }
}
