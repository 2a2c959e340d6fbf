//! keygate: an L7 gateway for etcd v3. It listens where etcd's clients expect etcd, speaks the
//! etcd v3 API, and forwards to a pool of etcd members.
#![forbid(unsafe_code)]

pub mod config;
pub mod corked;
pub mod describe;
pub mod errors;
pub mod grpc_frame;
pub mod h2;
pub mod headers;
pub mod identity;
pub mod lease;
pub mod method;
pub mod metrics;
pub mod mirror;
pub mod namespace;
pub mod pipeline;
pub mod policy;
pub mod relay;
pub mod revision;
pub mod server;
pub mod shutdown;
pub mod tenant;
pub mod tls;
pub mod upstream;
pub mod watch;

use anyhow::Context;
use config::Config;
use std::sync::Arc;

/// Runs keygate until SIGTERM or Ctrl-C, then drains and returns.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut metrics =
        metrics::Metrics::new(prometheus::Registry::new()).context("registering metrics")?;
    metrics.prefixes.configure(&config.metrics);
    let upstream_tls = tls::UpstreamTls::load(&config.upstream.tls)?;
    let pool = upstream::Pool::with_tls(&config.upstream, metrics.upstream.clone(), upstream_tls)
        .context("upstream.endpoints")?;
    let identity_metrics = metrics::IdentityMetrics::register(
        &metrics.registry,
        config.identity.max_metric_identities,
    )
    .context("registering metrics")?;
    let (trigger, shutdown) = shutdown::channel();
    let seen = Arc::new(revision::SeenRevision::default());
    let mirror = config
        .mirror
        .enabled
        .then(|| mirror::Mirror::new(&config.mirror, metrics.mirror.clone(), &pool, seen.clone()));
    let hub = mirror.clone().map(|mirror| {
        let metrics = (
            metrics.watch.clone(),
            metrics.grpc.clone(),
            metrics.prefixes.clone(),
        );
        let progress = std::time::Duration::from_millis(config.watch.progress_notify_interval_ms);
        watch::Hub::new(
            mirror,
            pool.clone(),
            metrics,
            shutdown.clone(),
            progress,
            config.server.max_recv_message_bytes(),
        )
    });
    let leases = (config.lease.coalesce_window_ms > 0).then(|| {
        let window = std::time::Duration::from_millis(config.lease.coalesce_window_ms);
        let counter = metrics.watch.lease_keepalives.clone();
        lease::LeaseHub::new(
            pool.clone(),
            window,
            counter,
            metrics.grpc.clone(),
            shutdown.clone(),
        )
    });
    // One engine (and epoch ticker) for every plugin, made only when there are plugins.
    let plugins = &config.plugins;
    let engine = if plugins.authorizers.is_empty() && plugins.audit.path.is_empty() {
        None
    } else {
        Some(Arc::new(
            policy::engine::PluginEngine::new(&plugins.cache_dir).context("plugins.cache_dir")?,
        ))
    };
    let (policy, audit) = match &engine {
        Some(engine) => (
            policy::Policy::load(plugins, engine, &metrics.plugins)
                .context("plugins.authorizers")?
                .map(Arc::new),
            policy::audit::Audit::start(&plugins.audit, engine, &metrics.plugins)
                .context("plugins.audit")?
                .map(Arc::new),
        ),
        None => (None, None),
    };
    let tenants = tenant::Tenants::new(
        &config.tenants,
        &metrics.tenants,
        mirror.clone(),
        pool.clone(),
    );
    let gw = Arc::new(pipeline::Gateway {
        pool: pool.clone(),
        metrics,
        tenants,
        shutdown: shutdown.clone(),
        seen,
        mirror: mirror.clone(),
        hub,
        leases,
        identity: identity::Identifier::new(&config.identity, identity_metrics),
        policy: policy.clone(),
        audit: audit.clone(),
        advertise_client_urls: config.server.advertise_client_urls.clone(),
    });

    let mut reloadable: Vec<Arc<dyn policy::reload::Reload>> = Vec::new();
    if let Some(policy) = &policy {
        reloadable.push(policy.clone());
    }
    if let Some(audit) = &audit {
        reloadable.push(audit.reloader());
    }
    let interval = std::time::Duration::from_millis(config.plugins.reload_interval_ms);
    policy::reload::spawn(reloadable, interval, shutdown.clone());
    let server = server::Server::bind(&config, gw).await?;
    let addr = server.local_addr()?;
    pool.start().await;
    if let Some(mirror) = &mirror {
        mirror.start(pool.clone());
    }
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
    if let Some(audit) = &audit {
        audit.flush().await;
    }
    tracing::info!("keygate stopped");
    Ok(())
}

/// Writes atomically, so a reader never sees a half-written address.
fn write_ready_file(path: &str, contents: &str) -> std::io::Result<()> {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}
