//! keygate's configuration: one serde struct read from a TOML file, overridden by flags and
//! environment variables, then validated with errors that name the offending option.

mod cli;
mod plugins;
mod tenants;
mod tls;
mod validate;

pub use cli::{Cli, Command, PluginCommand, ServeArgs};
pub use plugins::{AuditConfig, PluginConfig, PluginsConfig};
pub use tenants::{Quota, TenantsConfig};
pub use tls::{BearerToken, IdentityConfig, ServerTlsConfig, UpstreamTlsConfig};

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A configuration error; the message always names the option (or the file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration: {option}: {message}")]
    Invalid {
        option: &'static str,
        message: String,
    },
}

/// The whole configuration. Every field has a default; `config.toml` lists them all.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The client-facing listener.
    pub server: ServerConfig,
    /// The etcd members keygate forwards to.
    pub upstream: UpstreamConfig,
    /// The in-memory read mirror.
    pub mirror: MirrorConfig,
    /// Watches served from the mirror's event stream.
    pub watch: WatchConfig,
    /// Lease keep-alive coalescing.
    pub lease: LeaseConfig,
    /// Logging.
    pub log: LogConfig,
    /// Requests by key prefix.
    pub metrics: MetricsConfig,
    /// Who callers are: bearer tokens, anonymous access.
    pub identity: IdentityConfig,
    /// WebAssembly authorization plugins.
    pub plugins: PluginsConfig,
    /// Quotas and metrics of tenant namespaces.
    pub tenants: TenantsConfig,
}

/// The client port: gRPC and HTTP on one address.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address for etcd clients (gRPC and HTTP on the same port).
    pub listen: SocketAddr,
    /// Optional second address serving only /metrics and the health endpoints.
    pub metrics_listen: Option<SocketAddr>,
    /// Largest request etcd accepts (etcd's --max-request-bytes).
    pub max_request_bytes: usize,
    /// Allowance for gRPC framing on top of max_request_bytes, as etcd adds it.
    pub grpc_overhead_bytes: usize,
    /// Most concurrent HTTP/2 streams per client connection (etcd's --max-concurrent-streams).
    pub max_concurrent_streams: u32,
    /// On SIGTERM, how long in-flight requests may take to finish before keygate exits.
    pub drain_timeout_ms: u64,
    /// Write the bound client address to this file once serving (for supervisors and tests).
    pub ready_file: Option<String>,
    /// Threads serving requests; 0 means one per core.
    pub worker_threads: usize,
    /// Serve /debug/* endpoints (e.g. /debug/identity, which echoes the caller's identity).
    pub debug_endpoints: bool,
    /// Forward etcd's v2 API (/v2/keys, /v2/members, /v2/stats) to the members; off answers 404.
    pub v2_enabled: bool,
    /// Client URLs at which clients reach keygate. When set, the member lists of the Cluster
    /// RPCs show these in place of the members' own, so clients that sync their endpoints from
    /// MemberList keep coming through keygate (as grpc-proxy's --advertise-client-url).
    pub advertise_client_urls: Vec<String>,
    /// TLS on the client port.
    pub tls: ServerTlsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 2379)),
            metrics_listen: None,
            max_request_bytes: 1536 * 1024,
            grpc_overhead_bytes: 512 * 1024,
            max_concurrent_streams: u32::MAX,
            drain_timeout_ms: 10_000,
            ready_file: None,
            worker_threads: 0,
            debug_endpoints: false,
            v2_enabled: true,
            advertise_client_urls: Vec::new(),
            tls: ServerTlsConfig::default(),
        }
    }
}

impl ServerConfig {
    /// The largest gRPC message keygate decodes, as etcd computes it.
    pub fn max_recv_message_bytes(&self) -> usize {
        self.max_request_bytes
            .saturating_add(self.grpc_overhead_bytes)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

/// The etcd member pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Client URLs of the etcd members (http://host:port, https://host:port, or host:port as
    /// etcdctl takes it: https when `tls.ca_file` is set).
    pub endpoints: Vec<String>,
    /// HTTP/2 connections kept open to each member; requests are spread over them.
    pub connections_per_member: usize,
    /// How often each member's health (Status RPC) is checked.
    pub health_interval_ms: u64,
    /// How long a health check or a new connection may take before the member counts as down.
    pub dial_timeout_ms: u64,
    /// Add members found through MemberList to the pool (and drop ones that left).
    pub discover_members: bool,
    /// How often MemberList is consulted when discover_members is on.
    pub discover_interval_ms: u64,
    /// TLS to the members (for https:// endpoints).
    pub tls: UpstreamTlsConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:22379".to_string()],
            connections_per_member: 2,
            health_interval_ms: 1000,
            dial_timeout_ms: 2000,
            discover_members: false,
            discover_interval_ms: 30_000,
            tls: UpstreamTlsConfig::default(),
        }
    }
}

impl UpstreamConfig {
    /// etcd's clients take a bare `host:port` for a member, and so does keygate: it is reached
    /// over TLS when `upstream.tls.ca_file` is set, in plain text otherwise.
    pub fn complete_endpoints(&mut self) {
        let scheme = match self.tls.ca_file {
            Some(_) => "https://",
            None => "http://",
        };
        for endpoint in &mut self.endpoints {
            if !endpoint.contains("://") {
                endpoint.insert_str(0, scheme);
            }
        }
    }
}

/// The read mirror: an in-memory copy of the keyspace that answers Range requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorConfig {
    /// Serve Range requests from the mirror when it can answer exactly as etcd would.
    pub enabled: bool,
    /// Key prefixes the mirror holds; empty: the whole keyspace. Reads elsewhere go to etcd.
    pub prefixes: Vec<String>,
    /// Memory budget; over it the mirror is dropped and reads go to etcd.
    pub max_bytes: usize,
    /// Keys per page when listing the keyspace.
    pub page_size: i64,
    /// How long a read may wait for the mirror to reach the revision it needs, then it is
    /// forwarded to etcd.
    pub wait_timeout_ms: u64,
    /// While the mirror's upstream watch is down, how long serializable reads may still be
    /// served from it.
    pub max_staleness_ms: u64,
    /// Most recent revisions whose events are kept for watchers to replay or catch up from.
    pub window_revisions: usize,
    /// Memory budget of that event window, in bytes.
    pub window_bytes: usize,
    /// Byte budget of encoded answers of large LISTs kept for reads of the same revision; 0: none.
    pub list_cache_bytes: u64,
    /// After each list, how many revisions before it are read from etcd into the event window,
    /// so watches resumed from before keygate started are served from it.
    pub backfill_revisions: usize,
    /// Right after keygate starts, how long a new watch stream or a write held to a storage
    /// quota waits for the mirror's first list before going on without it.
    pub first_list_wait_ms: u64,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            prefixes: Vec::new(),
            max_bytes: 1 << 30,
            page_size: 1000,
            wait_timeout_ms: 1000,
            max_staleness_ms: 5000,
            window_revisions: 100_000,
            window_bytes: 64 << 20,
            list_cache_bytes: 64 << 20,
            backfill_revisions: 10_000,
            first_list_wait_ms: 5000,
        }
    }
}

/// The watch hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    /// Interval of the progress notifications sent to watchers that ask for them (etcd's
    /// --experimental-watch-progress-notify-interval).
    pub progress_notify_interval_ms: u64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            progress_notify_interval_ms: 600_000,
        }
    }
}

/// Lease keep-alive coalescing.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    /// A keep-alive for a lease refreshed upstream less than this long ago is answered from
    /// that refresh (with its TTL counted down); 0 sends every keep-alive stream upstream as is.
    pub coalesce_window_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            coalesce_window_ms: 1000,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter, e.g. "info" or "keygate=debug,info".
    pub level: String,
    /// "text" or "json".
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_string(),
            format: "text".to_string(),
        }
    }
}

/// Metrics beyond the fixed families.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// KV requests and their bytes by key prefix: the first key's first this many
    /// `/`-separated segments (e.g. 2: `/registry/pods/`); 0 turns the families off.
    pub prefix_depth: usize,
    /// Distinct prefixes labeled; requests under later ones count as "other".
    pub max_prefixes: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            prefix_depth: 0,
            max_prefixes: 100,
        }
    }
}

impl Config {
    /// Reads the file (if given), applies the command line on top, and validates the result.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        args.apply(&mut config);
        config.upstream.complete_endpoints();
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: shown,
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }
}
