//! Measures the read mirror's memory against the raw bytes it holds (issue 6: at most 2×).
//! Loads N keys into a fresh etcd, then starts keygate twice in front of it — with the mirror
//! and without — and compares their resident memory once the mirror holds every key.
//!
//!   cargo run --release -p keygate-tests --bin mirror_memory -- [KEYS] [VALUE_BYTES]

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::PutRequest;
use keygate_tests::{http, EtcdCluster, Keygate};

const WRITERS: usize = 64;

fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

async fn metric(addr: &str, name: &str) -> Result<f64> {
    let body = http::get(addr, "/metrics", Duration::from_secs(10))
        .await?
        .body;
    Ok(body
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

fn key(i: usize) -> String {
    format!("/registry/pods/ns-{:04}/pod-{:07}", i % 1000, i)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let keys: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let value_bytes: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(256);
    let cluster = EtcdCluster::start(1).await?;
    let value = Bytes::from(vec![b'v'; value_bytes]);

    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut kv = cluster.clients(0).await?.kv;
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..keys).step_by(WRITERS) {
                let put = PutRequest {
                    key: Bytes::from(key(i)),
                    value: value.clone(),
                    ..Default::default()
                };
                kv.put(put).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let raw: usize = (0..keys).map(|i| key(i).len() + value_bytes).sum();
    println!(
        "loaded {keys} keys ({:.1} MiB of keys and values) in {:.1?}",
        raw as f64 / 1048576.0,
        started.elapsed()
    );

    let plain = Keygate::start(&cluster.client_urls(), &["--no-mirror"]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = rss_bytes(plain.pid().context("no pid")?)?;
    drop(plain);

    let mirrored = Keygate::start(&cluster.client_urls(), &[]).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let held = metric(mirrored.addr(), "keygate_mirror_keys").await?;
        if held as usize >= keys {
            break;
        }
        if Instant::now() > deadline {
            bail!("the mirror holds {held} of {keys} keys after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let loaded_at = Instant::now();
    // Let the list's transient buffers go before reading the resident size.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_bytes(mirrored.pid().context("no pid")?)?;
    let held = rss.saturating_sub(baseline);
    println!(
        "keygate RSS: {:.1} MiB without the mirror, {:.1} MiB with {keys} keys mirrored (loaded {:.1?} before)",
        baseline as f64 / 1048576.0,
        rss as f64 / 1048576.0,
        loaded_at.elapsed()
    );
    println!(
        "mirror memory: {:.1} MiB for {:.1} MiB of raw keys and values = {:.2}x (target <= 2x)",
        held as f64 / 1048576.0,
        raw as f64 / 1048576.0,
        held as f64 / raw as f64
    );
    Ok(())
}
