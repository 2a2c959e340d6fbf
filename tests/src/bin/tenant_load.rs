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
    /// Rounds of (alone, beside the noisy tenant); the report gives each phase's median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Control run: the noisy tenant floods a second keygate (same etcd) instead, so the
    /// machine carries the same load generation but the quiet tenant's keygate does not see
    /// the noisy tenant at all.
    #[arg(long)]
    control: bool,
    /// The niceness of the noisy tenant's thread (0 to 19). At 19 the CPU it spends generating
    /// its flood yields to everything else on the machine, as if it ran on another host;
    /// keygate's handling of the flood keeps its normal priority.
    #[arg(long, default_value_t = 0)]
    noisy_nice: i32,
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
    let other = if opts.control {
        Some(tenants::start(&etcd, &quota, &[]).await?)
    } else {
        None
    };
    let noisy_addr = other.as_ref().unwrap_or(&kg).addr().to_string();
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

    let outcomes = Arc::new(Outcomes::default());
    let (mut alone, mut beside) = (Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        alone.push(steady("alice", &quiet, opts.quiet_rate, window).await);
        // The noisy tenant runs on a thread and runtime of its own, its connection included,
        // so that generating its load does not delay the quiet tenant's requests inside the
        // load generator.
        let (addr, rate, outcomes) = (noisy_addr.clone(), opts.noisy_rate, outcomes.clone());
        let nice = opts.noisy_nice;
        let noise = std::thread::spawn(move || -> Result<()> {
            lower_priority(nice)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let channel = connect(&addr).await?;
                flood(channel, rate, window, outcomes).await;
                Ok(())
            })
        });
        beside.push(steady("alice", &quiet, opts.quiet_rate, window).await);
        noise
            .join()
            .map_err(|_| anyhow::anyhow!("noisy tenant panicked"))??;
        eprintln!("tenant_load: round {} of {} done", round + 1, opts.rounds);
    }

    println!(
        "quiet tenant: {} serializable gets/s; noisy tenant: {} requests/s offered against a quota of {}/s{}{}; {} rounds of {:.0} s per phase, medians\n",
        opts.quiet_rate,
        opts.noisy_rate,
        opts.quota,
        if opts.control { " to a second keygate (control)" } else { "" },
        if opts.noisy_nice != 0 { format!(", generated at nice {}", opts.noisy_nice) } else { String::new() },
        opts.rounds,
        opts.duration
    );
    println!("| quiet tenant's gets | p50 µs | p90 µs | p99 µs | p50 ratio | p99 ratio | errors |");
    println!("|---|---|---|---|---|---|---|");
    let base = |p: f64| median(&alone, p);
    for (name, runs) in [("alone", &alone), ("beside the noisy tenant", &beside)] {
        let errors: u64 = runs.iter().map(|(_, e)| e).sum();
        println!(
            "| {name} | {} | {} | {} | {:.2}× | {:.2}× | {errors} |",
            median(runs, 0.5),
            median(runs, 0.9),
            median(runs, 0.99),
            median(runs, 0.5) as f64 / base(0.5).max(1) as f64,
            median(runs, 0.99) as f64 / base(0.99).max(1) as f64,
        );
    }
    let ok = outcomes.ok.load(Ordering::Relaxed);
    let refused = outcomes.refused.load(Ordering::Relaxed);
    let failed = outcomes.failed.load(Ordering::Relaxed);
    let seconds = opts.duration * opts.rounds as f64;
    println!(
        "\nnoisy tenant: {ok} served ({:.0}/s), {refused} refused with \"etcdserver: too many requests\", {failed} other errors",
        ok as f64 / seconds
    );
    Ok(())
}

/// Lowers the calling thread's CPU priority to `nice`: on Linux a thread has a niceness of its
/// own, which `renice -p` sets given the thread's id (the last part of /proc/thread-self).
fn lower_priority(nice: i32) -> Result<()> {
    if nice == 0 {
        return Ok(());
    }
    let link = std::fs::read_link("/proc/thread-self").context("reading /proc/thread-self")?;
    let tid = link
        .file_name()
        .and_then(|t| t.to_str())
        .context("no thread id in /proc/thread-self")?
        .to_string();
    let status = std::process::Command::new("renice")
        .args(["-n", &nice.to_string(), "-p", &tid])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running renice")?;
    anyhow::ensure!(status.success(), "renice -n {nice} -p {tid}: {status}");
    Ok(())
}

/// The median over rounds of quantile `p`.
fn median(runs: &[(Histogram<u64>, u64)], p: f64) -> u64 {
    let mut values: Vec<u64> = runs.iter().map(|(h, _)| h.value_at_quantile(p)).collect();
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
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
