//! Handshakes mode: loops that each open a new connection (TCP, TLS with `--tls`, HTTP/2), send
//! one serializable Range on it and drop it, for a warm-up and then a measured window; ops are
//! connections, latency is connect plus first answer.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use keygate_proto::etcdserverpb::RangeRequest;
use tonic::transport::ClientTlsConfig;

use super::report::Measure;
use super::target::{connect, kv_client, CpuSample, Target};
use super::workload::{new_hist, TaskResult, MEASURE, STOP, WARMUP};
use super::Options;

pub(super) async fn run_handshakes(
    target: &Target,
    opts: &Options,
    request: &RangeRequest,
    ticks: f64,
) -> Result<Measure> {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let tasks: Vec<_> = (0..opts.handshake_loops.max(1))
        .map(|i| {
            tokio::spawn(handshake_loop(
                target.endpoints[i % target.endpoints.len()].clone(),
                target.tls.clone(),
                request.clone(),
                phase.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(opts.warmup)).await;
    let cpu0 = CpuSample::take(target, ticks);
    let t0 = Instant::now();
    phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(opts.duration)).await;
    phase.store(STOP, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = CpuSample::take(target, ticks);
    let mut m = Measure::new(target.name);
    m.secs = secs;
    cpu0.fill(&cpu1, &mut m);
    for t in tasks {
        let r = t.await?;
        m.hist.add(&r.hist).ok();
        m.ops += r.ops;
        m.errors += r.errors;
        if m.first_error.is_none() {
            m.first_error = r.first_error;
        }
    }
    m.notes = format!(
        "{} new connections in {:.1} s over {} loops ({:.0}/s); CPU per connection {:.0} µs (proxy {:.0} µs)",
        m.ops,
        secs,
        opts.handshake_loops.max(1),
        m.ops_per_sec(),
        m.cpu_per_op(),
        m.proxy_cpu_per_op()
    );
    Ok(m)
}

async fn handshake_loop(
    url: String,
    tls: Option<ClientTlsConfig>,
    request: RangeRequest,
    phase: Arc<AtomicU8>,
) -> TaskResult {
    let mut result = TaskResult {
        hist: new_hist(),
        ops: 0,
        errors: 0,
        first_error: None,
    };
    loop {
        let p = phase.load(Ordering::Relaxed);
        if p == STOP {
            break;
        }
        let start = Instant::now();
        let res = async {
            let channel = connect(&url, tls.as_ref()).await?;
            kv_client(&channel).range(request.clone()).await?;
            anyhow::Ok(())
        }
        .await;
        let elapsed = start.elapsed();
        // Only connections opened and answered inside the measured window count.
        if p != MEASURE || phase.load(Ordering::Relaxed) != MEASURE {
            continue;
        }
        match res {
            Ok(()) => {
                result.ops += 1;
                result
                    .hist
                    .saturating_record((elapsed.as_nanos() / 1000).max(1) as u64);
            }
            Err(e) => {
                result.errors += 1;
                if result.first_error.is_none() {
                    result.first_error = Some(format!("{e:#}"));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    result
}
