//! Noisy neighbours: one keygate with tenants, a quiet tenant (alice) sending serializable gets
//! at a steady rate, measured alone, then while a noisy tenant (bob) sends many times its
//! request-rate quota, then alone again. Reports the quiet tenant's latency in each phase (and
//! the ratio to its unloaded value) and what became of the noisy tenant's requests.
//!
//! `cargo run --release -p keygate-tests --bin tenant_load -- --duration 10`

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use keygate_proto::etcdserverpb::kv_client::KvClient;
use keygate_proto::etcdserverpb::{PutRequest, RangeRequest};
use keygate_tests::tenants::{self, as_user};
use keygate_tests::EtcdCluster;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug)]
struct Options {
    /// Measured seconds per phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// The quiet tenant's requests per second.
    #[arg(long, default_value_t = 500)]
    quiet_rate: u64,
    /// The noisy tenant's requests per second (offered).
    #[arg(long, default_value_t = 5000)]
    noisy_rate: u64,
    /// The noisy tenant's quota, requests per second.
    #[arg(long, default_value_t = 500.0)]
    quota: f64,
}

#[derive(Default)]
struct Outcomes {
    ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

fn main() -> Result<()> {
    let opts = Options::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(opts))
}

async fn run(opts: Options) -> Result<()> {
    let etcd = EtcdCluster::start(1).await.context("starting etcd")?;
    let quota = format!(
        "[tenants.namespaces.\"/ab/\"]\nrequests_per_second = {:?}\n",
        opts.quota
    );
    let kg = tenants::start(&etcd, &quota, &[]).await?;
    let quiet = connect(kg.addr()).await?;
    let noisy = connect(kg.addr()).await?;
    let mut kv = KvClient::new(quiet.clone());
    for i in 0..100 {
        let put = PutRequest {
            key: Bytes::from(format!("k{i:03}")),
            value: Bytes::from(vec![b'v'; 256]),
            ..Default::default()
        };
        kv.put(as_user("alice", put.clone())).await?;
        kv.put(as_user("bob", put)).await?;
    }
    let window = Duration::from_secs_f64(opts.duration);
    // Warm up keygate's connections, mirror and plugin instances.
    steady("alice", &quiet, opts.quiet_rate, Duration::from_secs(2)).await;

    let alone = steady("alice", &quiet, opts.quiet_rate, window).await;
    let outcomes = Arc::new(Outcomes::default());
    let noise = tokio::spawn(flood(noisy, opts.noisy_rate, window, outcomes.clone()));
    let loaded = steady("alice", &quiet, opts.quiet_rate, window).await;
    noise.await?;
    let after = steady("alice", &quiet, opts.quiet_rate, window).await;

    println!(
        "quiet tenant: {} serializable gets/s; noisy tenant: {} requests/s offered against a quota of {}/s; {:.0} s per phase\n",
        opts.quiet_rate, opts.noisy_rate, opts.quota, opts.duration
    );
    println!("| quiet tenant's gets | p50 µs | p90 µs | p99 µs | p50 ratio | p99 ratio | errors |");
    println!("|---|---|---|---|---|---|---|");
    for (name, (hist, errors)) in [
        ("alone", &alone),
        ("noisy tenant over quota", &loaded),
        ("alone again", &after),
    ] {
        let q = |p: f64| hist.value_at_quantile(p);
        let r = |p: f64| q(p) as f64 / alone.0.value_at_quantile(p).max(1) as f64;
        println!(
            "| {name} | {} | {} | {} | {:.2}× | {:.2}× | {errors} |",
            q(0.5),
            q(0.9),
            q(0.99),
            r(0.5),
            r(0.99)
        );
    }
    let ok = outcomes.ok.load(Ordering::Relaxed);
    let refused = outcomes.refused.load(Ordering::Relaxed);
    let failed = outcomes.failed.load(Ordering::Relaxed);
    println!(
        "\nnoisy tenant: {ok} served ({:.0}/s), {refused} refused with \"etcdserver: too many requests\", {failed} other errors",
        ok as f64 / opts.duration
    );
    Ok(())
}

async fn connect(addr: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// `rate` serializable gets per second as `user`, each on a task of its own (open loop), for
/// `window`; their latencies and the number of errors.
async fn steady(
    user: &str,
    channel: &Channel,
    rate: u64,
    window: Duration,
) -> (Histogram<u64>, u64) {
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + window;
    let mut tasks = Vec::new();
    let mut i = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        i += 1;
        let mut kv = KvClient::new(channel.clone());
        let (hist, errors) = (hist.clone(), errors.clone());
        let get = RangeRequest {
            key: Bytes::from(format!("k{:03}", i % 100)),
            serializable: true,
            ..Default::default()
        };
        let request = as_user(user, get);
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            match kv.range(request).await {
                Ok(_) => {
                    let us = start.elapsed().as_micros() as u64;
                    if let Ok(mut h) = hist.lock() {
                        let _ = h.record(us.max(1));
                    }
                }
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let hist = hist
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"));
    (hist, errors.load(Ordering::Relaxed))
}

/// The noisy tenant: `rate` gets per second as bob, open loop, for `window`.
async fn flood(channel: Channel, rate: u64, window: Duration, outcomes: Arc<Outcomes>) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + window;
    let mut tasks = Vec::new();
    while Instant::now() < end {
        tick.tick().await;
        let mut kv = KvClient::new(channel.clone());
        let outcomes = outcomes.clone();
        let get = RangeRequest {
            key: Bytes::from_static(b"k001"),
            serializable: true,
            ..Default::default()
        };
        let request = as_user("bob", get);
        tasks.push(tokio::spawn(async move {
            let counter = match kv.range(request).await {
                Ok(_) => &outcomes.ok,
                Err(s) if s.code() == tonic::Code::ResourceExhausted => &outcomes.refused,
                Err(_) => &outcomes.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}
