//! keygate's own HTTP/2 (RFC 9113) for the client port: framing, HPACK and a server
//! connection built for gRPC's many small requests per connection.

pub mod client;
pub mod frame;
pub mod hpack;
pub mod server;
pub mod writer;

#[cfg(test)]
mod testing;
