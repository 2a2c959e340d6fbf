//! TLS with rustls: the client port's certificate (reloaded when its files change) and
//! client-certificate policy, and the TLS keygate uses to reach the etcd members.

mod client;
mod files;
mod server;

pub use client::UpstreamTls;
pub use files::TlsFileError;
pub use server::{peer_certificate, TlsTerminator};

/// The one crypto provider keygate uses, so that both sides agree on what is available.
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}
