//! The load generator behind `loadgen`: one run starts an etcd cluster, `etcd grpc-proxy` and
//! keygate in front of it, drives the same workloads against each, and reports throughput,
//! latency and whole server-side CPU per operation, with ratios against etcd directly.

pub mod cpu;
pub mod fanout;
pub mod report;
pub mod workload;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use keygate_proto::etcdserverpb::kv_client::KvClient;
use keygate_proto::etcdserverpb::{CompactionRequest, PutRequest, RangeRequest};
use tonic::transport::{Channel, Endpoint};

use crate::watch::prefix_end;
use crate::{EtcdCluster, GrpcProxy, Keygate};
use report::{Measure, ModeReport};
use workload::{Data, Op, KEY_PREFIX, MEASURE, STOP, WATCH_KEY};

/// Every mode, in run order.
pub const ALL_MODES: &[&str] = &[
    "put",
    "get-serializable",
    "get-linearizable",
    "list-serializable",
    "list-linearizable",
    "watch",
    "mixed",
];

/// Every target, in run order.
/// `keygate-no-mirror` is keygate started with `--no-mirror`: pure forwarding.
pub const ALL_TARGETS: &[&str] = &["etcd", "grpc-proxy", "keygate", "keygate-no-mirror"];

/// keygate's load generator: etcd directly vs `etcd grpc-proxy` vs keygate, in one run.
#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen")]
pub struct Options {
    /// Modes to run, comma-separated: put, get-serializable, get-linearizable,
    /// list-serializable, list-linearizable, watch, mixed.
    #[arg(long, value_delimiter = ',', default_values_t = ALL_MODES.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    pub modes: Vec<String>,
    /// Targets to measure, comma-separated: etcd, grpc-proxy, keygate, keygate-no-mirror
    /// (keygate with `--no-mirror`: every request forwarded).
    #[arg(long, value_delimiter = ',', default_values_t = ALL_TARGETS.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    pub targets: Vec<String>,
    /// etcd cluster members.
    #[arg(long, default_value_t = 1)]
    pub members: usize,
    /// Measured seconds per mode and target.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up seconds before each measured window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// HTTP/2 connections (tonic Channels) the clients are spread over.
    #[arg(long, default_value_t = 4)]
    pub conns: usize,
    /// Keys for put and point gets.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Keys under the LIST prefix.
    #[arg(long, default_value_t = 100)]
    pub list_keys: usize,
    /// Watchers on one key in watch mode.
    #[arg(long, default_value_t = 10_000)]
    pub watchers: usize,
    /// Watch streams the watchers are spread over.
    #[arg(long, default_value_t = 100)]
    pub watch_streams: usize,
    /// Milliseconds between puts in watch mode.
    #[arg(long, default_value_t = 200)]
    pub watch_interval_ms: u64,
    /// Prefix watchers kept open (through the target) during mixed mode.
    #[arg(long, default_value_t = 10)]
    pub mixed_watchers: usize,
    /// Client runtime worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Extra arguments for `keygate serve`, space-separated.
    #[arg(long, default_value = "")]
    pub keygate_args: String,
    /// Write the results as a Markdown section to this file (replacing the section between
    /// `<!-- loadgen:begin -->` and `<!-- loadgen:end -->` when the file has one).
    #[arg(long)]
    pub markdown: Option<std::path::PathBuf>,
}

/// One measured target: where the clients connect and which processes do the serving.
struct Target {
    name: &'static str,
    endpoints: Vec<String>,
    /// Every server process: etcd members plus the proxy, if any.
    pids: Vec<u32>,
    /// The proxy's process (grpc-proxy or keygate), counted in `pids` too.
    proxy_pid: Option<u32>,
}

/// The proxy process behind a target, stopped after its measurement.
enum Running {
    Nothing,
    Proxy(GrpcProxy),
    Keygate(Keygate),
}

impl Running {
    async fn stop(self) {
        match self {
            Running::Nothing => {}
            Running::Proxy(p) => drop(p),
            Running::Keygate(mut k) => {
                if let Err(e) = k.stop().await {
                    eprintln!("loadgen: stopping keygate: {e:#}");
                }
            }
        }
    }
}

async fn start_target(
    name: &str,
    urls: &[String],
    etcd_pids: &[u32],
    opts: &Options,
) -> Result<(Target, Running)> {
    let mut pids = etcd_pids.to_vec();
    match name {
        "etcd" => Ok((
            Target {
                name: "etcd",
                endpoints: urls.to_vec(),
                pids,
                proxy_pid: None,
            },
            Running::Nothing,
        )),
        "grpc-proxy" => {
            let p = GrpcProxy::start(urls).await?;
            let listen = format!("--listen-addr={}", p.addr());
            let proxy_pid = cpu::find_pid(&["grpc-proxy", &listen]);
            match proxy_pid {
                Some(pid) => pids.push(pid),
                None => eprintln!("loadgen: grpc-proxy PID not found; its CPU is not counted"),
            }
            Ok((
                Target {
                    name: "grpc-proxy",
                    endpoints: vec![p.endpoint()],
                    pids,
                    proxy_pid,
                },
                Running::Proxy(p),
            ))
        }
        _ => {
            let name: &'static str = if name == "keygate" {
                "keygate"
            } else {
                "keygate-no-mirror"
            };
            let mut extra: Vec<&str> = opts.keygate_args.split_whitespace().collect();
            if name == "keygate-no-mirror" {
                extra.push("--no-mirror");
            }
            let k = Keygate::start(urls, &extra).await?;
            pids.extend(k.pid());
            Ok((
                Target {
                    name,
                    endpoints: vec![k.endpoint()],
                    pids,
                    proxy_pid: k.pid(),
                },
                Running::Keygate(k),
            ))
        }
    }
}

/// Entry point of the `loadgen` binary.
pub fn main() -> Result<()> {
    let opts = Options::parse();
    for m in &opts.modes {
        if !ALL_MODES.contains(&m.as_str()) {
            bail!("unknown mode {m:?}; modes: {}", ALL_MODES.join(","));
        }
    }
    for t in &opts.targets {
        if !ALL_TARGETS.contains(&t.as_str()) {
            bail!("unknown target {t:?}; targets: {}", ALL_TARGETS.join(","));
        }
    }
    if opts.clients == 0 || opts.conns == 0 || opts.keys == 0 {
        bail!("--clients, --conns and --keys must be positive");
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = opts.threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(run(opts))
}

async fn run(opts: Options) -> Result<()> {
    let command = std::env::args()
        .map(|a| {
            if a.contains(' ') || a.is_empty() {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let started = now_utc();
    let ticks = cpu::clock_ticks();
    let machine = cpu::machine_info();
    eprintln!(
        "loadgen: {machine}; starting {} etcd member(s)",
        opts.members
    );

    let cluster = EtcdCluster::start(opts.members)
        .await
        .context("starting etcd")?;
    let urls = cluster.client_urls();
    let etcd_pids: Vec<u32> = (0..cluster.len()).filter_map(|i| cluster.pid(i)).collect();
    let etcd_version = etcd_version();

    let keygate_bin = if opts.targets.iter().any(|t| t.starts_with("keygate")) {
        crate::bins::keygate_bin()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("{e:#}"))
    } else {
        "-".to_string()
    };

    let data = Arc::new(Data::new(opts.keys, opts.list_keys, opts.value_size));
    let direct = connect(&urls[0]).await?;
    let mut direct_kv = KvClient::new(direct.clone());
    preload(&mut direct_kv, &data)
        .await
        .context("preloading keys")?;
    eprintln!(
        "loadgen: preloaded {} keys and {} LIST keys of {} bytes",
        opts.keys, opts.list_keys, opts.value_size
    );

    let epoch = Instant::now();
    let mut reports = Vec::new();
    for mode in &opts.modes {
        let mut report = ModeReport::new(mode, describe(mode, &opts));
        eprintln!("\nloadgen: mode {mode}: {}", report.description);
        for name in &opts.targets {
            // Each proxy runs only while it is measured, so none of them (keygate's mirror
            // watch, say) loads etcd or the CPUs while another target is measured.
            let (target, running) = match start_target(name, &urls, &etcd_pids, &opts).await {
                Ok(t) => t,
                Err(e) => {
                    let m = Measure::failed(name, format!("did not start: {e:#}"));
                    eprintln!("  {}", m.one_line());
                    report.rows.push(m);
                    continue;
                }
            };
            let target = &target;
            let res = match mode.as_str() {
                "watch" => run_watch(target, &opts, &direct_kv, epoch, ticks).await,
                m => {
                    let op = match m {
                        "put" => Op::Put,
                        "get-serializable" => Op::GetSerializable,
                        "get-linearizable" => Op::GetLinearizable,
                        "list-serializable" => Op::ListSerializable,
                        "list-linearizable" => Op::ListLinearizable,
                        _ => Op::Mixed,
                    };
                    run_closed(target, op, &opts, &data, ticks).await
                }
            };
            let m = match res {
                Ok(m) => m,
                Err(e) => Measure::failed(target.name, format!("{e:#}")),
            };
            eprintln!("  {}", m.one_line());
            report.rows.push(m);
            running.stop().await;
            if matches!(mode.as_str(), "put" | "mixed" | "watch") {
                // Keep the history etcd carries the same for every target.
                if let Err(e) = compact(&mut direct_kv).await {
                    eprintln!("loadgen: compaction failed: {e:#}");
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!("{}", report.text_table());
        reports.push(report);
    }

    let header = report::RunInfo {
        date: started,
        command,
        machine,
        etcd_version,
        keygate_bin,
        members: opts.members,
        clients: opts.clients,
        conns: opts.conns,
        duration: opts.duration,
        warmup: opts.warmup,
    };
    let targets_table = report::targets_table(&reports);
    println!("{}", report::targets_text(&targets_table));
    if let Some(path) = &opts.markdown {
        let section = report::markdown(&header, &reports, &targets_table);
        report::write_markdown(path, &section)?;
        eprintln!("loadgen: wrote {}", path.display());
    }
    drop(cluster);
    Ok(())
}

fn describe(mode: &str, o: &Options) -> String {
    let closed = format!("{} clients over {} connections", o.clients, o.conns);
    match mode {
        "put" => format!("Put of a random key among {} ({} B values), {closed}", o.keys, o.value_size),
        "get-serializable" => format!("serializable Range of one random key among {} ({} B values), {closed}", o.keys, o.value_size),
        "get-linearizable" => format!("linearizable Range of one random key among {} ({} B values), {closed}", o.keys, o.value_size),
        "list-serializable" => format!("serializable Range over a prefix of {} keys ({} B values), {closed}", o.list_keys, o.value_size),
        "list-linearizable" => format!("linearizable Range over a prefix of {} keys ({} B values), {closed}", o.list_keys, o.value_size),
        "watch" => format!(
            "{} watchers on one key over {} streams ({} connections), a put (to etcd directly) every {} ms; ops = events delivered, latency = put sent to event received",
            o.watchers, o.watch_streams, o.conns, o.watch_interval_ms
        ),
        _ => format!(
            "90% serializable gets, 5% linearizable gets, 5% compare-and-swap Txns over {} keys, {closed}, {} prefix watchers open through the target",
            o.keys, o.mixed_watchers
        ),
    }
}

async fn connect(url: &str) -> Result<Channel> {
    Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

async fn connect_all(target: &Target, conns: usize) -> Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(conns);
    for i in 0..conns {
        channels.push(connect(&target.endpoints[i % target.endpoints.len()]).await?);
    }
    Ok(channels)
}

fn kv_client(ch: &Channel) -> KvClient<Channel> {
    KvClient::new(ch.clone()).max_decoding_message_size(64 << 20)
}

async fn preload(kv: &mut KvClient<Channel>, data: &Data) -> Result<()> {
    for p in &data.puts {
        kv.put(p.clone()).await?;
    }
    for k in &data.list_keys {
        kv.put(PutRequest {
            key: k.clone(),
            value: data.value.clone(),
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}

async fn compact(kv: &mut KvClient<Channel>) -> Result<()> {
    let rev = kv
        .range(RangeRequest {
            key: Bytes::from_static(b"keygate-bench/"),
            count_only: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .header
        .map(|h| h.revision)
        .ok_or_else(|| anyhow!("no header"))?;
    kv.compact(CompactionRequest {
        revision: rev,
        physical: false,
    })
    .await?;
    Ok(())
}

/// Samples of every CPU counter at the edges of a measured window.
struct CpuSample {
    server: f64,
    proxy: f64,
    client: f64,
    machine: Option<(u64, u64)>,
}

impl CpuSample {
    fn take(t: &Target, ticks: f64) -> Self {
        Self {
            server: cpu::cpu_seconds(&t.pids, ticks),
            proxy: t
                .proxy_pid
                .map(|p| cpu::cpu_seconds(&[p], ticks))
                .unwrap_or(0.0),
            client: cpu::self_cpu_seconds(ticks),
            machine: cpu::machine_jiffies(),
        }
    }

    fn fill(&self, end: &CpuSample, m: &mut Measure) {
        m.server_cpu_s = end.server - self.server;
        m.proxy_cpu_s = end.proxy - self.proxy;
        m.client_cpu_s = end.client - self.client;
        if let (Some((b0, t0)), Some((b1, t1))) = (self.machine, end.machine) {
            if t1 > t0 {
                m.machine_busy_pct = Some(100.0 * (b1 - b0) as f64 / (t1 - t0) as f64);
            }
        }
    }
}

async fn run_closed(
    target: &Target,
    op: Op,
    opts: &Options,
    data: &Arc<Data>,
    ticks: f64,
) -> Result<Measure> {
    let channels = connect_all(target, opts.conns).await?;
    let phase = Arc::new(AtomicU8::new(workload::WARMUP));
    let mut tasks = Vec::with_capacity(opts.clients);
    for i in 0..opts.clients {
        tasks.push(tokio::spawn(workload::client_task(
            kv_client(&channels[i % channels.len()]),
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

async fn run_watch(
    target: &Target,
    opts: &Options,
    direct: &KvClient<Channel>,
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
    });
    m.notes = format!(
        "{} puts; {} watchers created in {:.2} s; server RSS {:+.1} MiB after creating them ({:.0} B/watcher); missed {missed}, duplicated {dup}, out of order {ooo}, canceled {canceled}",
        puts,
        opts.watchers,
        create_secs,
        (rss1 as f64 - rss0 as f64) / 1048576.0,
        (rss1 as f64 - rss0 as f64) / opts.watchers.max(1) as f64,
    );
    Ok(m)
}

fn etcd_version() -> String {
    crate::bins::etcd_tool("etcd")
        .ok()
        .and_then(|etcd| {
            std::process::Command::new(etcd)
                .arg("--version")
                .output()
                .ok()
        })
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim_start_matches("etcd Version: ").to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`, without a date crate.
fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown date".into())
}
