//! keygate's test harness: real etcd clusters, etcd's grpc-proxy and the keygate binary,
//! started on loopback ports picked at run time and stopped (by PID) when dropped.

pub mod bins;
pub mod clients;
pub mod diff;
pub mod etcd;
pub mod etcd_divergence;
pub mod etcdctl;
pub mod grpc_diff;
pub mod http;
pub mod json_http;
pub mod keygate;
pub mod linearizability;
pub mod load;
pub mod normalize;
pub mod pki;
pub mod plugins;
pub mod ports;
pub mod process;
pub mod raw_grpc;
pub mod tenants;
pub mod tls_client;
pub mod watch;
pub mod watch_record;

pub use clients::Clients;
pub use diff::DiffPair;
pub use etcd::{EtcdCluster, EtcdTls, GrpcProxy};
pub use etcdctl::{CmdOutput, Etcdctl, Spawned};
pub use keygate::Keygate;
