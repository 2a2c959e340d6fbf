//! keygate: an L7 gateway for etcd v3. It listens where etcd's clients expect etcd, speaks the
//! etcd v3 API, and forwards to a pool of etcd members.
#![forbid(unsafe_code)]

pub mod config;
pub mod errors;
pub mod method;
pub mod metrics;
pub mod pipeline;
pub mod server;
pub mod shutdown;
pub mod upstream;

use anyhow::Context;
use config::Config;
use std::sync::Arc;

/// Runs keygate until SIGTERM or Ctrl-C, then drains and returns.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let metrics =
        metrics::Metrics::new(prometheus::Registry::new()).context("registering metrics")?;
    let pool = upstream::Pool::new(&config.upstream, metrics.upstream.clone())
        .context("upstream.endpoints")?;
    let (trigger, shutdown) = shutdown::channel();
    let gw = Arc::new(pipeline::Gateway {
        pool: pool.clone(),
        metrics,
        shutdown: shutdown.clone(),
    });

    let server = server::Server::bind(&config, gw).await?;
    let addr = server.local_addr()?;
    pool.start().await;
    if !pool.any_healthy() {
        tracing::warn!(endpoints = ?config.upstream.endpoints, "no etcd member is healthy yet; serving anyway");
    }
    if let Some(path) = &config.server.ready_file {
        write_ready_file(path, &addr.to_string())
            .with_context(|| format!("server.ready_file = {path}"))?;
    }
    tracing::info!(%addr, endpoints = ?config.upstream.endpoints, "keygate is serving");

    let serving = tokio::spawn(server.serve(shutdown));
    shutdown::signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    trigger.trigger();
    serving.await.context("server task")?;
    tracing::info!("keygate stopped");
    Ok(())
}

/// Writes atomically, so a reader never sees a half-written address.
fn write_ready_file(path: &str, contents: &str) -> std::io::Result<()> {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}
