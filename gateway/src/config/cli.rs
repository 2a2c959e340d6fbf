//! The command line: `keygate serve` and its flags, each also settable by environment variable.

use super::Config;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "keygate", version, about = "An L7 gateway for etcd v3")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the etcd v3 API in front of etcd members.
    Serve(ServeArgs),
    /// Print the configuration after the file and flags are applied, then exit.
    CheckConfig(ServeArgs),
    /// Work with plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Load an authorizer plugin, run its init, and report what it imports and exports.
    Check {
        /// The plugin (a WebAssembly component).
        file: String,
        /// TOML file whose table is passed to the plugin's init (as its `config` table).
        #[arg(long)]
        config: Option<String>,
    },
}

/// Flags override the configuration file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); see config.toml for every option.
    #[arg(long, env = "KEYGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// server.listen: address for etcd clients.
    #[arg(long, env = "KEYGATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// upstream.endpoints: comma-separated etcd client URLs (or host:port, as etcdctl takes them).
    #[arg(long, env = "KEYGATE_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// server.advertise_client_urls: comma-separated URLs clients reach keygate at, shown in
    /// member lists in place of the members' own.
    #[arg(long, env = "KEYGATE_ADVERTISE_CLIENT_URLS", value_delimiter = ',')]
    pub advertise_client_urls: Vec<String>,
    /// server.metrics_listen: separate address for /metrics and health.
    #[arg(long, env = "KEYGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// server.ready_file: write the bound client address here once serving.
    #[arg(long, env = "KEYGATE_READY_FILE")]
    pub ready_file: Option<String>,
    /// mirror.enabled = false: forward every read to etcd.
    #[arg(long, env = "KEYGATE_NO_MIRROR")]
    pub no_mirror: bool,
    /// server.worker_threads: threads serving requests (0: one per core).
    #[arg(long, env = "KEYGATE_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// log.level: tracing filter.
    #[arg(long, env = "KEYGATE_LOG_LEVEL")]
    pub log_level: Option<String>,
}

impl ServeArgs {
    pub(super) fn apply(&self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if !self.endpoints.is_empty() {
            config.upstream.endpoints = self
                .endpoints
                .iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect();
        }
        if !self.advertise_client_urls.is_empty() {
            config.server.advertise_client_urls = self
                .advertise_client_urls
                .iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect();
        }
        if self.metrics_listen.is_some() {
            config.server.metrics_listen = self.metrics_listen;
        }
        if self.ready_file.is_some() {
            config.server.ready_file.clone_from(&self.ready_file);
        }
        if let Some(threads) = self.worker_threads {
            config.server.worker_threads = threads;
        }
        if self.no_mirror {
            config.mirror.enabled = false;
        }
        if let Some(level) = &self.log_level {
            config.log.level.clone_from(level);
        }
    }
}
