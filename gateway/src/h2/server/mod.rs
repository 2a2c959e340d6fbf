//! keygate's HTTP/2 server connection, built for gRPC: one task per connection reads every
//! frame, answers what it can on the spot and writes all the answers that are ready in one
//! system call. A request is either *collected* — its body gathered by the connection and
//! handed over whole, its answer one message (KV's unary calls: most of what etcd's clients
//! send) — or *bridged* — a task of its own gets an `http::Request` whose body streams in and
//! returns an `http::Response` whose body streams out (watches, keep-alives, snapshots, the
//! JSON gateway, everything else). Flow control, both ways, is the connection's.

mod bridge;
mod conn;
mod control;
mod inline;
mod recv;
mod request;
mod send;
mod shared;
mod stream;

#[cfg(test)]
mod tests;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use http::HeaderMap;
use std::sync::Arc;
use tonic::body::Body;

pub use conn::ConnError;

/// The connection's own limits, sent to the client in its SETTINGS.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_concurrent_streams: u32,
    pub stream_window: u32,
    pub connection_window: u32,
    /// The largest header list accepted (HPACK's count: name + value + 32 per field).
    pub max_header_list: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_concurrent_streams: u32::MAX,
            stream_window: 1 << 20,
            connection_window: 8 << 20,
            max_header_list: 1 << 20,
        }
    }
}

/// A request's head: method, URI and headers, as `http` has them.
#[derive(Debug)]
pub struct RequestHead {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: HeaderMap,
}

/// How a request is served.
pub enum Route {
    /// Its body is collected by the connection, up to `limit` bytes.
    Collect { limit: usize },
    /// A task of its own, with the body streaming.
    Bridge,
}

/// A collected request's body.
pub enum Collected {
    Body(Bytes),
    /// Over the limit: the first bytes received, and how many were received in all.
    TooLarge {
        first: Bytes,
        received: usize,
    },
}

/// The answer to a collected request.
pub enum Reply {
    /// A gRPC answer: the response headers (content-type included), one framed message, then
    /// `grpc-status: 0`.
    Grpc { headers: HeaderMap, framed: Bytes },
    /// A gRPC answer without a message: the status in the headers ("trailers-only").
    Status(tonic::Status),
    /// Any other response, its body streamed as a bridged response's.
    Http(http::Response<Body>),
}

/// A collected request's answer being worked out.
pub struct Call {
    pub reply: BoxFuture<'static, Reply>,
    /// Worked out on the connection's own task (cheap, bounded work); otherwise on a task of
    /// its own, so that it cannot hold up the connection's other streams.
    pub inline: bool,
}

/// What serves the requests of one connection.
pub trait Handler: Send + Sync + 'static {
    fn route(&self, head: &RequestHead) -> Route;
    fn collected(&self, head: RequestHead, body: Collected) -> Call;
    fn bridge(&self, request: http::Request<Body>) -> BoxFuture<'static, http::Response<Body>>;
}

/// Serves one HTTP/2 connection until the client closes it, it fails, or `drain` resolves and
/// its open streams have finished. `preread`: bytes already read from `io` (the preface, or
/// part of it).
pub async fn serve<IO>(
    io: IO,
    preread: BytesMut,
    settings: Settings,
    handler: Arc<dyn Handler>,
    drain: BoxFuture<'static, ()>,
) -> Result<(), ConnError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    conn::Conn::new(io, preread, settings, handler, drain).await
}
