//! grpc.health.v1.Health, which etcd serves beside its API and load balancers and Kubernetes'
//! gRPC probes ask. keygate answers it itself: the server as a whole (service "") is SERVING
//! while keygate can reach a healthy etcd member (what `/readyz` reports) and is not shutting
//! down, NOT_SERVING otherwise. Any other service name is unknown, as on etcd.
//! No key is involved, so neither the authorizers nor the audit see these calls.

use crate::errors::GatewayError;
use crate::method;
use crate::metrics::RpcTimer;
use crate::pipeline::{Gateway, RpcStream};
use futures::StreamExt;
use keygate_proto::health::health_check_response::ServingStatus;
use keygate_proto::health::health_server::{Health, HealthServer};
use keygate_proto::health::{HealthCheckRequest, HealthCheckResponse};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

/// How often a Watch looks again at the status it reports.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

pub struct HealthService(pub(crate) Arc<Gateway>);

pub fn server(gw: &Arc<Gateway>, max_recv: usize) -> HealthServer<HealthService> {
    HealthServer::new(HealthService(gw.clone())).max_decoding_message_size(max_recv)
}

/// The status of `service`; `None` for a service etcd does not report on.
fn status(gw: &Gateway, service: &str) -> Option<ServingStatus> {
    if !service.is_empty() {
        return None;
    }
    let serving = gw.pool.any_healthy() && !gw.shutdown.is_triggered();
    Some(match serving {
        true => ServingStatus::Serving,
        false => ServingStatus::NotServing,
    })
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    type WatchStream = RpcStream<HealthCheckResponse>;

    async fn check(
        &self,
        r: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let timer = self.0.metrics.grpc.start(&method::HEALTH_CHECK);
        let result = match status(&self.0, &r.get_ref().service) {
            Some(status) => Ok(Response::new(answer(status))),
            None => Err(GatewayError::UnknownHealthService.into()),
        };
        timer.finish(result.as_ref().map_or_else(Status::code, |_| Code::Ok));
        result
    }

    /// The status now, then every change of it. An unknown service is SERVICE_UNKNOWN, and the
    /// stream stays open as on etcd. On shutdown the stream says NOT_SERVING and ends.
    async fn watch(
        &self,
        r: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let watch = Watch {
            gw: self.0.clone(),
            name: r.into_inner().service,
            sent: None,
            timer: Some(self.0.metrics.grpc.start(&method::HEALTH_WATCH)),
        };
        let stream = futures::stream::unfold(watch, |mut watch| async move {
            let status = watch.next_change().await?;
            Some((Ok(answer(status)), watch))
        });
        Ok(Response::new(stream.boxed()))
    }
}

/// One Watch stream: what it last sent, and its timer, which records the stream's end.
struct Watch {
    gw: Arc<Gateway>,
    name: String,
    sent: Option<ServingStatus>,
    timer: Option<RpcTimer>,
}

impl Watch {
    /// Waits for a status other than the one last sent; `None` once the stream is over.
    async fn next_change(&mut self) -> Option<ServingStatus> {
        loop {
            let stopping = self.gw.shutdown.is_triggered();
            let status = status(&self.gw, &self.name).unwrap_or(ServingStatus::ServiceUnknown);
            if self.sent != Some(status) {
                self.sent = Some(status);
                return Some(status);
            }
            if stopping {
                if let Some(timer) = self.timer.take() {
                    timer.finish(Code::Ok);
                }
                return None;
            }
            tokio::select! {
                () = tokio::time::sleep(WATCH_INTERVAL) => {}
                () = self.gw.shutdown.wait() => {}
            }
        }
    }
}

impl Drop for Watch {
    /// A stream dropped before its end was canceled by the client.
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.finish(Code::Cancelled);
        }
    }
}
