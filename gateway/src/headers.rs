//! The header names the request path reads and writes, parsed once: a lookup by `&str` parses
//! and validates the name on every call, and these are looked up on every request.

use http::HeaderName;

/// etcd's auth token, as its gRPC clients send it.
pub const TOKEN: HeaderName = HeaderName::from_static("token");
/// etcd's "require a leader" flag on streams.
pub const HASLEADER: HeaderName = HeaderName::from_static("hasleader");
pub const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
pub const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub const GRPC_MESSAGE_TYPE: HeaderName = HeaderName::from_static("grpc-message-type");
