//! Every etcd v3 gRPC client, connected to one address over one channel.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{
    auth_client::AuthClient, cluster_client::ClusterClient, kv_client::KvClient,
    lease_client::LeaseClient, maintenance_client::MaintenanceClient, request_op,
    watch_client::WatchClient, PutRequest, RequestOp, TxnRequest,
};
use keygate_proto::v3electionpb::election_client::ElectionClient;
use keygate_proto::v3lockpb::lock_client::LockClient;
use tonic::transport::{Channel, Endpoint};

/// The etcd v3 clients for one target (etcd member, grpc-proxy or keygate).
#[derive(Clone)]
pub struct Clients {
    pub channel: Channel,
    pub kv: KvClient<Channel>,
    pub watch: WatchClient<Channel>,
    pub lease: LeaseClient<Channel>,
    pub cluster: ClusterClient<Channel>,
    pub maintenance: MaintenanceClient<Channel>,
    pub auth: AuthClient<Channel>,
    pub lock: LockClient<Channel>,
    pub election: ElectionClient<Channel>,
}

impl Clients {
    /// Connects to `addr` (`127.0.0.1:2379` or `http://127.0.0.1:2379`).
    pub async fn connect(addr: &str) -> Result<Self> {
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let channel = Endpoint::from_shared(url.clone())
            .with_context(|| format!("bad endpoint {url}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(Self::from_channel(channel))
    }

    /// Builds every client over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            kv: KvClient::new(channel.clone()),
            watch: WatchClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            cluster: ClusterClient::new(channel.clone()),
            maintenance: MaintenanceClient::new(channel.clone()),
            auth: AuthClient::new(channel.clone()),
            lock: LockClient::new(channel.clone()),
            election: ElectionClient::new(channel.clone()),
            channel,
        }
    }

    /// Writes a 20 MB keyspace under `prefix` (20,000 keys of 1 KiB, `PREFIXnnn/nnn`, 100 per
    /// Txn): enough that keygate's first list of it takes a noticeable while.
    pub async fn fill_20mb(&mut self, prefix: &str) -> Result<()> {
        for batch in 0..200 {
            let success = (0..100)
                .map(|i| RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: Bytes::from(format!("{prefix}{batch:03}/{i:03}")),
                        value: Bytes::from(vec![b'v'; 1024]),
                        ..Default::default()
                    })),
                })
                .collect();
            let txn = TxnRequest {
                success,
                ..Default::default()
            };
            self.kv.txn(txn).await?;
        }
        Ok(())
    }
}
