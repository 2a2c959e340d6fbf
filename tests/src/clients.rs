//! Every etcd v3 gRPC client, connected to one address over one channel.

use std::time::Duration;

use anyhow::{Context, Result};
use keygate_proto::etcdserverpb::{
    auth_client::AuthClient, cluster_client::ClusterClient, kv_client::KvClient,
    lease_client::LeaseClient, maintenance_client::MaintenanceClient, watch_client::WatchClient,
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
}
