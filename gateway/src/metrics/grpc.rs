//! gRPC server metrics named and labelled as etcd's go-grpc-prometheus exposes them, so
//! existing etcd dashboards work unchanged against keygate.

use crate::method::{Method, ALL};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

#[derive(Clone)]
pub struct GrpcMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    started: IntCounterVec,
    handled: IntCounterVec,
    seconds: HistogramVec,
    msg_received: IntCounterVec,
    msg_sent: IntCounterVec,
    /// Each method's series, looked up by label once rather than on every request.
    by_method: Vec<MethodSeries>,
}

#[derive(Default)]
struct MethodSeries {
    started: OnceLock<IntCounter>,
    seconds: OnceLock<Histogram>,
    handled: [OnceLock<IntCounter>; CODES],
}

/// gRPC's status codes, 0 to 16.
const CODES: usize = 17;

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
        let inner = Inner {
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
            by_method: ALL.iter().map(|_| MethodSeries::default()).collect(),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    fn series(&self, m: &'static Method) -> Option<&MethodSeries> {
        self.inner.by_method.get(m.index)
    }

    /// Counts the start of an RPC and returns the timer that records its end.
    pub fn start(&self, m: &'static Method) -> RpcTimer {
        let labels = [m.kind.label(), m.service, m.name];
        match self.series(m) {
            Some(series) => series
                .started
                .get_or_init(|| self.inner.started.with_label_values(&labels))
                .inc(),
            None => self.inner.started.with_label_values(&labels).inc(),
        }
        RpcTimer {
            metrics: self.clone(),
            method: m,
            start: Instant::now(),
        }
    }

    pub fn message_received(&self, m: &'static Method) {
        self.inner
            .msg_received
            .with_label_values(&[m.kind.label(), m.service, m.name])
            .inc();
    }

    pub fn message_sent(&self, m: &'static Method) {
        self.inner
            .msg_sent
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
        let inner = &self.metrics.inner;
        let labels = [m.kind.label(), m.service, m.name];
        let handled = |c: tonic::Code| {
            inner
                .handled
                .with_label_values(&[labels[0], labels[1], labels[2], code_name(c)])
        };
        let seconds = self.start.elapsed().as_secs_f64();
        match self.metrics.series(m) {
            Some(series) => {
                let slot = series.handled.get(code as usize);
                match slot {
                    Some(slot) => slot.get_or_init(|| handled(code)).inc(),
                    None => handled(code).inc(),
                }
                series
                    .seconds
                    .get_or_init(|| inner.seconds.with_label_values(&labels))
                    .observe(seconds);
            }
            None => {
                handled(code).inc();
                inner.seconds.with_label_values(&labels).observe(seconds);
            }
        }
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
