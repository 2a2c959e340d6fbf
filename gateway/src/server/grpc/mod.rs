//! The gRPC services of the etcd API. Each handler names its method and hands the request to
//! the pipeline with the upstream call to make; the pipeline does the rest.

pub(super) mod auth;
pub(super) mod cluster;
pub(super) mod concurrency;
pub(super) mod health;
pub(super) mod kv;
pub(super) mod lease;
pub(super) mod maintenance;
pub(super) mod watch;

use crate::pipeline::Gateway;
use std::sync::Arc;
use tonic::service::Routes;

/// Forwards one unary RPC through the pipeline, called on the chosen member's connection.
macro_rules! unary {
    ($gw:expr, $method:expr, $request:expr) => {
        $gw.unary(&$method, $request, |conn, request| {
            $crate::upstream::unary(conn, $method.path, request)
        })
        .await
    };
}
pub(crate) use unary;

/// Every etcd service and gRPC's health service, as one router, with etcd's request size limit.
pub fn routes(gw: &Arc<Gateway>, max_recv: usize) -> Routes {
    Routes::new(kv::server(gw, max_recv))
        .add_service(watch::server(gw, max_recv))
        .add_service(lease::server(gw, max_recv))
        .add_service(cluster::server(gw, max_recv))
        .add_service(maintenance::server(gw, max_recv))
        .add_service(auth::server(gw, max_recv))
        .add_service(concurrency::lock_server(gw, max_recv))
        .add_service(concurrency::election_server(gw, max_recv))
        .add_service(health::server(gw, max_recv))
}
