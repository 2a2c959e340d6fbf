//! One measured window against a target: the closed-loop request modes (with mixed mode's
//! watchers kept open), and watch fan-out with its delivery check.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::kv_client::KvClient;
use keygate_proto::etcdserverpb::{PutRequest, RangeRequest};
use tonic::transport::Channel;

use super::lean::Lean;
use super::report::{self, Measure};
use super::target::{connect_all, kv_client, CpuSample, Target};
use super::workload::{self, Conn, Data, Op, KEY_PREFIX, MEASURE, STOP, WATCH_KEY};
use super::{cpu, fanout, Options};
use crate::watch::prefix_end;

pub(super) async fn run_closed(
    target: &Target,
    op: Op,
    opts: &Options,
    data: &Arc<Data>,
    ticks: f64,
) -> Result<Measure> {
    let channels = connect_all(target, opts.conns).await?;
    let conns: Vec<Conn> = match opts.lean_client() {
        true => {
            let mut lean = Vec::with_capacity(opts.conns);
            for i in 0..opts.conns {
                lean.push(Conn::Lean(
                    Lean::connect(&target.endpoints[i % target.endpoints.len()]).await?,
                ));
            }
            lean
        }
        false => channels.iter().map(|c| Conn::Tonic(kv_client(c))).collect(),
    };
    let phase = Arc::new(AtomicU8::new(workload::WARMUP));
    let mut tasks = Vec::with_capacity(opts.clients);
    for i in 0..opts.clients {
        tasks.push(tokio::spawn(workload::client_task(
            conns[i % conns.len()].clone(),
            op,
            data.clone(),
            phase.clone(),
            0x6b65_7967_6174_6500 ^ i as u64,
        )));
    }
    // Mixed mode: watchers kept open through the target on the whole key prefix.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watch_events = Arc::new(AtomicU64::new(0));
    let mut watch_tasks = Vec::new();
    if op == Op::Mixed && opts.mixed_watchers > 0 {
        let streams = opts.mixed_watchers.min(opts.conns).max(1);
        for s in 0..streams {
            let count =
                opts.mixed_watchers / streams + usize::from(s < opts.mixed_watchers % streams);
            let (tx, mut stream, _) = fanout::open_stream(
                channels[s % channels.len()].clone(),
                Bytes::from_static(KEY_PREFIX.as_bytes()),
                prefix_end(KEY_PREFIX.as_bytes()),
                0,
                count,
                Duration::from_secs(30),
            )
            .await
            .context("opening mixed-mode watchers")?;
            let events = watch_events.clone();
            let mut stop = stop_rx.clone();
            watch_tasks.push(tokio::spawn(async move {
                let _tx = tx;
                loop {
                    tokio::select! {
                        m = stream.message() => match m {
                            Ok(Some(r)) => { events.fetch_add(r.events.len() as u64, Ordering::Relaxed); }
                            _ => break,
                        },
                        _ = stop.changed() => break,
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(opts.warmup)).await;
    let cpu0 = CpuSample::take(target, ticks);
    let events0 = watch_events.load(Ordering::Relaxed);
    let t0 = Instant::now();
    phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(opts.duration)).await;
    phase.store(STOP, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = CpuSample::take(target, ticks);
    let events = watch_events.load(Ordering::Relaxed) - events0;
    let _ = stop_tx.send(true);
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
    for t in watch_tasks {
        let _ = t.await;
    }
    if op == Op::Mixed && opts.mixed_watchers > 0 {
        m.notes = format!(
            "{} watch events delivered to {} watchers",
            events, opts.mixed_watchers
        );
    }
    Ok(m)
}

pub(super) async fn run_watch(
    target: &Target,
    opts: &Options,
    direct: &KvClient<Channel>,
    etcd_metrics: &[String],
    epoch: Instant,
    ticks: f64,
) -> Result<Measure> {
    let channels = connect_all(target, opts.conns).await?;
    let mut direct = direct.clone();
    let key = Bytes::from_static(WATCH_KEY.as_bytes());
    let rev0 = direct
        .range(RangeRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .header
        .map(|h| h.revision)
        .ok_or_else(|| anyhow!("no header"))?;
    let rss0: u64 = target.pids.iter().filter_map(|&p| cpu::rss_bytes(p)).sum();
    let streams = opts.watch_streams.max(1).min(opts.watchers.max(1));
    let created_at = Instant::now();
    let opens = (0..streams).map(|s| {
        let count = opts.watchers / streams + usize::from(s < opts.watchers % streams);
        fanout::open_stream(
            channels[s % channels.len()].clone(),
            key.clone(),
            Bytes::new(),
            rev0 + 1,
            count,
            Duration::from_secs(120),
        )
    });
    let opened = futures::future::join_all(opens).await;
    let create_secs = created_at.elapsed().as_secs_f64();
    let mut open_streams = Vec::new();
    for o in opened {
        open_streams.push(o.context("creating watchers")?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1: u64 = target.pids.iter().filter_map(|&p| cpu::rss_bytes(p)).sum();
    let etcd_streams = etcd_watch_streams(etcd_metrics).await;

    let (total_tx, total_rx) = tokio::sync::watch::channel(u64::MAX);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let readers: Vec<_> = open_streams
        .into_iter()
        .map(|(tx, stream, ids)| {
            tokio::spawn(fanout::read_stream(
                tx,
                stream,
                ids,
                epoch,
                total_rx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    let cpu0 = CpuSample::take(target, ticks);
    let t0 = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(opts.watch_interval_ms.max(1)));
    let mut puts = 0u64;
    let mut put_errors = 0u64;
    let mut first_error = None;
    while t0.elapsed().as_secs_f64() < opts.duration {
        interval.tick().await;
        let value = fanout::encode_value(puts, epoch, opts.value_size);
        match direct
            .put(PutRequest {
                key: key.clone(),
                value,
                ..Default::default()
            })
            .await
        {
            Ok(_) => puts += 1,
            Err(s) => {
                // A failed put may or may not have been applied: watchers would see a gap.
                put_errors += 1;
                first_error.get_or_insert_with(|| format!("put: {s}"));
                break;
            }
        }
    }
    let _ = total_tx.send(puts);
    let all = futures::future::join_all(readers);
    tokio::pin!(all);
    let results = tokio::select! {
        r = &mut all => r,
        _ = tokio::time::sleep(Duration::from_secs(15)) => {
            let _ = stop_tx.send(true);
            all.await
        }
    };
    drop(total_tx);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = CpuSample::take(target, ticks);
    let mut m = Measure::new(target.name);
    m.secs = secs;
    cpu0.fill(&cpu1, &mut m);
    m.errors = put_errors;
    m.first_error = first_error;
    let (mut missed, mut dup, mut ooo, mut canceled) = (0, 0, 0, 0);
    for r in results {
        let r = r?;
        m.hist.add(&r.hist).ok();
        m.ops += r.events;
        missed += r.missed;
        dup += r.duplicated;
        ooo += r.out_of_order;
        canceled += r.canceled;
        if let Some(e) = r.error {
            m.errors += 1;
            m.first_error.get_or_insert(e);
        }
    }
    m.errors += missed + dup + ooo + canceled;
    m.watch = Some(report::WatchCheck {
        puts,
        expected: puts * opts.watchers as u64,
        missed,
        duplicated: dup,
        out_of_order: ooo,
        canceled,
        watchers: opts.watchers as u64,
        streams: streams as u64,
        rss_bytes_per_watcher: (rss1 as f64 - rss0 as f64) / opts.watchers.max(1) as f64,
        etcd_streams,
    });
    let etcd_streams = etcd_streams
        .map(|n| format!("; etcd serving {n} watch stream(s)"))
        .unwrap_or_default();
    m.notes = format!(
        "{} puts; {} watchers created in {:.2} s; server RSS {:+.1} MiB after creating them ({:.0} B/watcher); missed {missed}, duplicated {dup}, out of order {ooo}, canceled {canceled}{etcd_streams}",
        puts,
        opts.watchers,
        create_secs,
        (rss1 as f64 - rss0 as f64) / 1048576.0,
        (rss1 as f64 - rss0 as f64) / opts.watchers.max(1) as f64,
    );
    Ok(m)
}

/// The watch streams etcd's members serve (`etcd_debugging_mvcc_watch_stream_total`), when
/// their /metrics can be read.
async fn etcd_watch_streams(addrs: &[String]) -> Option<u64> {
    if addrs.is_empty() {
        return None;
    }
    let mut streams = 0.0;
    for addr in addrs {
        let body = crate::watch_record::scrape(addr).await.ok()?;
        streams += crate::watch_record::metric_sum(&body, "etcd_debugging_mvcc_watch_stream_total");
    }
    Some(streams as u64)
}
