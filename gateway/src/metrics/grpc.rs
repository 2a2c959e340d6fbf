//! gRPC server metrics named and labelled as etcd's go-grpc-prometheus exposes them, so
//! existing etcd dashboards work unchanged against keygate.

use crate::method::Method;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::time::Instant;

#[derive(Clone)]
pub struct GrpcMetrics {
    started: IntCounterVec,
    handled: IntCounterVec,
    seconds: HistogramVec,
    msg_received: IntCounterVec,
    msg_sent: IntCounterVec,
}

const LABELS: [&str; 3] = ["grpc_type", "grpc_service", "grpc_method"];

impl GrpcMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                r.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let handled_labels = ["grpc_type", "grpc_service", "grpc_method", "grpc_code"];
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            ),
            &LABELS,
        )?;
        r.register(Box::new(seconds.clone()))?;
        Ok(Self {
            started: counter(
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
                &LABELS,
            )?,
            handled: counter(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                &handled_labels,
            )?,
            seconds,
            msg_received: counter(
                "grpc_server_msg_received_total",
                "Total number of RPC stream messages received on the server.",
                &LABELS,
            )?,
            msg_sent: counter(
                "grpc_server_msg_sent_total",
                "Total number of gRPC stream messages sent by the server.",
                &LABELS,
            )?,
        })
    }

    /// Counts the start of an RPC and returns the timer that records its end.
    pub fn start(&self, m: &'static Method) -> RpcTimer {
        let labels = [m.kind.label(), m.service, m.name];
        self.started.with_label_values(&labels).inc();
        RpcTimer {
            metrics: self.clone(),
            method: m,
            start: Instant::now(),
        }
    }

    pub fn message_received(&self, m: &'static Method) {
        self.msg_received
            .with_label_values(&[m.kind.label(), m.service, m.name])
            .inc();
    }

    pub fn message_sent(&self, m: &'static Method) {
        self.msg_sent
            .with_label_values(&[m.kind.label(), m.service, m.name])
            .inc();
    }
}

/// Records how one RPC ended.
pub struct RpcTimer {
    metrics: GrpcMetrics,
    method: &'static Method,
    start: Instant,
}

impl RpcTimer {
    pub fn finish(self, code: tonic::Code) {
        let m = self.method;
        let code = code_name(code);
        self.metrics
            .handled
            .with_label_values(&[m.kind.label(), m.service, m.name, code])
            .inc();
        self.metrics
            .seconds
            .with_label_values(&[m.kind.label(), m.service, m.name])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// The code names grpc-go prints (codes.Code.String()).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}
