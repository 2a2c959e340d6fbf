//! The Prometheus registry and each subsystem's metric families. Families are registered into
//! a registry that is passed in, never a global one, so several keygates can live in one test.

mod grpc;
mod identity;
mod mirror;
mod plugins;
mod prefixes;
mod tenants;
mod upstream;
mod watch;

pub use grpc::{GrpcMetrics, RpcTimer};
pub use identity::IdentityMetrics;
pub use mirror::MirrorMetrics;
pub use plugins::PluginMetrics;
pub use prefixes::{Prefix, PrefixMetrics, WatchedPrefix};
pub use tenants::TenantMetrics;
pub use upstream::UpstreamMetrics;
pub use watch::WatchMetrics;

use prometheus::{Encoder, Registry, TextEncoder};

/// All of keygate's metric families.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub grpc: GrpcMetrics,
    pub upstream: UpstreamMetrics,
    pub mirror: MirrorMetrics,
    pub watch: WatchMetrics,
    pub plugins: PluginMetrics,
    pub tenants: TenantMetrics,
    pub prefixes: PrefixMetrics,
}

impl Metrics {
    pub fn new(registry: Registry) -> prometheus::Result<Self> {
        Ok(Self {
            grpc: GrpcMetrics::register(&registry)?,
            upstream: UpstreamMetrics::register(&registry)?,
            mirror: MirrorMetrics::register(&registry)?,
            watch: WatchMetrics::register(&registry)?,
            plugins: PluginMetrics::register(&registry)?,
            tenants: TenantMetrics::register(&registry)?,
            prefixes: PrefixMetrics::register(&registry)?,
            registry,
        })
    }

    /// The registry in the Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
