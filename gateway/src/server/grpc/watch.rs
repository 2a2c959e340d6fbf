//! etcdserverpb.Watch: one bidirectional stream carrying many watchers.

use crate::pipeline::{ClientStream, Gateway, RpcStream, Upstream};
use crate::upstream::Conn;
use keygate_proto::etcdserverpb::watch_client::WatchClient;
use keygate_proto::etcdserverpb::watch_server::{Watch, WatchServer};
use keygate_proto::etcdserverpb::{WatchRequest, WatchResponse};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

pub struct WatchService(pub(crate) Arc<Gateway>);

pub fn server(gw: &Arc<Gateway>, max_recv: usize) -> WatchServer<WatchService> {
    WatchServer::new(WatchService(gw.clone())).max_decoding_message_size(max_recv)
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = RpcStream<WatchResponse>;

    async fn watch(
        &self,
        r: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.0.watch(r, open_upstream).await
    }
}

/// Boxed here, where the types are concrete, so the compiler can see the future is Send.
fn open_upstream(
    channel: Conn,
    request: Request<ClientStream<WatchRequest>>,
) -> Upstream<WatchResponse> {
    Box::pin(async move {
        WatchClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .watch(request)
            .await
    })
}
