//! Every error keygate itself returns to a client, mapped to etcd's gRPC codes and messages in
//! one place. Errors that etcd returns pass through untouched; these are the ones keygate makes.

use tonic::{Code, Status};

/// etcd's message when a member is shutting down; clients treat it as retryable.
pub const SERVER_STOPPED: &str = "etcdserver: server stopped";

/// An error produced by keygate (as opposed to one returned by an etcd member).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No etcd member is currently healthy enough to take the request.
    #[error("etcdserver: no healthy etcd member available (keygate)")]
    NoHealthyMember,
    /// A stream that requires a leader (`hasleader` metadata) while no member has known one
    /// for a while: etcd's own answer.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// keygate is draining for shutdown.
    #[error("{SERVER_STOPPED}")]
    ShuttingDown,
    /// A request message larger than the configured limit.
    #[error("grpc: received message larger than max ({size} vs. {limit})")]
    RequestTooLarge { size: usize, limit: usize },
    /// A gRPC method that etcd does not have.
    #[error("unknown method {method} for service {service}")]
    UnknownMethod { service: String, method: String },
    /// A gRPC service that etcd does not have.
    #[error("unknown service {0}")]
    UnknownService(String),
    /// grpc.health.v1.Health asked about a service other than the server as a whole.
    #[error("unknown service")]
    UnknownHealthService,
    /// A write held to a storage quota that cannot be counted now
    /// (`tenants.uncounted_writes = "refuse"`).
    #[error("etcdserver: storage quota cannot be checked now (keygate)")]
    QuotaUncounted,
}

impl GatewayError {
    /// The gRPC code etcd would use for the same condition.
    pub fn code(&self) -> Code {
        match self {
            Self::NoHealthyMember | Self::NoLeader | Self::ShuttingDown | Self::QuotaUncounted => {
                Code::Unavailable
            }
            Self::RequestTooLarge { .. } => Code::ResourceExhausted,
            Self::UnknownMethod { .. } | Self::UnknownService(_) => Code::Unimplemented,
            Self::UnknownHealthService => Code::NotFound,
        }
    }
}

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// tonic reports an over-limit message as OUT_OF_RANGE with its own wording; etcd (grpc-go)
/// answers RESOURCE_EXHAUSTED. Returns the etcd form when `status` is that tonic error.
pub fn etcd_decode_error(status: &Status) -> Option<Status> {
    if status.code() != Code::OutOfRange {
        return None;
    }
    let msg = status.message();
    let rest = msg.strip_prefix("Error, decoded message length too large: found ")?;
    let (size, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes").unwrap_or(rest);
    let size = size.trim().parse().ok()?;
    let limit = limit.trim().parse().ok()?;
    Some(GatewayError::RequestTooLarge { size, limit }.into())
}

/// Whether a failed upstream call may be retried on another member without risk of applying
/// a request twice: reads may after any connection failure or an UNAVAILABLE from etcd (no
/// leader, leader changed); writes only when the request never left keygate.
pub fn retryable(status: &Status, read_only: bool) -> bool {
    if read_only {
        status.code() == Code::Unavailable || is_transport_failure(status)
    } else {
        never_sent(status)
    }
}

/// The error a client gets for a failed upstream call: etcd's own errors as they are; a broken
/// connection to the member as UNAVAILABLE, which etcd's clients retry, rather than the
/// UNKNOWN that tonic reports for it.
pub fn for_client(status: Status) -> Status {
    if status.code() != Code::Unavailable && is_transport_failure(&status) {
        Status::unavailable(status.message())
    } else {
        status
    }
}

/// True when the call failed in keygate's connection to the member rather than with an error
/// that etcd returned. tonic attaches the underlying error only to failures it made itself.
pub fn is_transport_failure(status: &Status) -> bool {
    use std::error::Error;
    status.source().is_some()
        || (status.code() == Code::Unavailable && !status.message().starts_with("etcdserver:"))
}

/// True when the upstream call failed before the request could reach the member (the
/// connection was refused or could not be made), so even a write is safe to send elsewhere.
fn never_sent(status: &Status) -> bool {
    use std::error::Error;
    let mut cause: Option<&(dyn Error + 'static)> = status.source();
    while let Some(e) = cause {
        let refused = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        if refused
            || e.is::<tonic::ConnectError>()
            || e.to_string().starts_with("tcp connect error")
        {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_size_error_becomes_resource_exhausted() {
        let s = Status::out_of_range(
            "Error, decoded message length too large: found 3000000 bytes, the limit is: 2097152 bytes",
        );
        let mapped = etcd_decode_error(&s).expect("mapped");
        assert_eq!(mapped.code(), Code::ResourceExhausted);
        assert_eq!(
            mapped.message(),
            "grpc: received message larger than max (3000000 vs. 2097152)"
        );
        assert!(etcd_decode_error(&Status::out_of_range("other")).is_none());
    }

    #[test]
    fn writes_retry_only_when_never_sent() {
        let io = |kind| Status::from_error(Box::new(std::io::Error::new(kind, "x")));
        let refused = io(std::io::ErrorKind::ConnectionRefused);
        let reset = io(std::io::ErrorKind::ConnectionReset);
        assert!(retryable(&refused, false));
        assert!(!retryable(&reset, false));
        assert!(retryable(&reset, true));
        let leader_changed = Status::unavailable("etcdserver: leader changed");
        assert!(retryable(&leader_changed, true));
        assert!(!retryable(&leader_changed, false));
        assert!(!is_transport_failure(&leader_changed));
        assert!(!retryable(
            &Status::invalid_argument("etcdserver: key is not provided"),
            true
        ));
    }
}
