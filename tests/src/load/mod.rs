//! The load generator behind `loadgen`: one run starts an etcd cluster, `etcd grpc-proxy` and
//! keygate in front of it, drives the same workloads against each, and reports throughput,
//! latency and whole server-side CPU per operation, with ratios against etcd directly.

pub mod cpu;
pub mod fanout;
mod handshake;
pub mod issue_targets;
pub mod lean;
pub mod markdown;
pub mod report;
mod target;
mod tls;
mod window;
pub mod workload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use keygate_proto::etcdserverpb::kv_client::KvClient;
use keygate_proto::etcdserverpb::{CompactionRequest, PutRequest, RangeRequest};
use tonic::transport::Channel;

use crate::EtcdCluster;
use report::{Measure, ModeReport};
use target::{connect, start_target};
use window::{run_closed, run_watch};
use workload::{Data, Op};

impl Options {
    /// The request modes use the lean client (it speaks plain text only).
    pub fn lean_client(&self) -> bool {
        self.client == "lean" && !self.tls
    }
}

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

/// Modes run only when asked for by name (`--modes`).
pub const EXTRA_MODES: &[&str] = &["handshakes"];

/// Every target, in run order.
/// `keygate-no-mirror` is keygate started with `--no-mirror`: pure forwarding.
pub const ALL_TARGETS: &[&str] = &["etcd", "grpc-proxy", "keygate", "keygate-no-mirror"];

/// Targets run only when asked for by name (`--targets`), with `--tls`: keygate terminating
/// TLS and reaching etcd over its plain-text loopback listeners, as on the members' own host.
pub const TLS_TARGETS: &[&str] = &["keygate-plain-upstream"];

/// keygate's load generator: etcd directly vs `etcd grpc-proxy` vs keygate, in one run.
#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen")]
pub struct Options {
    /// Modes to run, comma-separated: put, get-serializable, get-linearizable,
    /// list-serializable, list-linearizable, watch, mixed; and handshakes (a new connection,
    /// one serializable Range, closed, in a loop), run only when named.
    #[arg(long, value_delimiter = ',', default_values_t = ALL_MODES.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    pub modes: Vec<String>,
    /// Targets to measure, comma-separated: etcd, grpc-proxy, keygate, keygate-no-mirror
    /// (keygate with `--no-mirror`: every request forwarded); with `--tls` also
    /// keygate-plain-upstream (terminating TLS, to etcd's plain-text loopback listeners).
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
    /// Extra arguments for `keygate serve`, space-separated (e.g. `--keygate-args
    /// "--worker-threads 1"`).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub keygate_args: String,
    /// TLS everywhere: etcd serves TLS on its client port with client certificates required,
    /// keygate and grpc-proxy terminate TLS the same way and reach etcd over TLS (but
    /// keygate-plain-upstream: over etcd's plain-text loopback listeners), and the load
    /// generator connects over TLS presenting a client certificate.
    #[arg(long)]
    pub tls: bool,
    /// The request modes' client: `lean` (keygate's own HTTP/2 client, requests encoded once:
    /// the default in plain text) or `tonic` (tonic's generated client; always with --tls).
    #[arg(long, default_value = "lean")]
    pub client: String,
    /// Concurrent connect-request-close loops in handshakes mode.
    #[arg(long, default_value_t = 8)]
    pub handshake_loops: usize,
    /// Write the results as a Markdown section to this file (replacing the section between
    /// `<!-- loadgen:begin -->` and `<!-- loadgen:end -->` when the file has one).
    #[arg(long)]
    pub markdown: Option<std::path::PathBuf>,
}

/// Entry point of the `loadgen` binary.
pub fn main() -> Result<()> {
    let opts = Options::parse();
    for m in &opts.modes {
        if !ALL_MODES.contains(&m.as_str()) && !EXTRA_MODES.contains(&m.as_str()) {
            bail!(
                "unknown mode {m:?}; modes: {},{}",
                ALL_MODES.join(","),
                EXTRA_MODES.join(",")
            );
        }
    }
    for t in &opts.targets {
        if TLS_TARGETS.contains(&t.as_str()) && !opts.tls {
            bail!("target {t:?} needs --tls");
        }
        if !ALL_TARGETS.contains(&t.as_str()) && !TLS_TARGETS.contains(&t.as_str()) {
            bail!(
                "unknown target {t:?}; targets: {},{}",
                ALL_TARGETS.join(","),
                TLS_TARGETS.join(",")
            );
        }
    }
    if opts.clients == 0 || opts.conns == 0 || opts.keys == 0 {
        bail!("--clients, --conns and --keys must be positive");
    }
    if !matches!(opts.client.as_str(), "lean" | "tonic") {
        bail!("--client must be lean or tonic, not {}", opts.client);
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
        "loadgen: {machine}; starting {} etcd member(s){}",
        opts.members,
        if opts.tls { " serving TLS" } else { "" }
    );

    let tls = if opts.tls {
        Some(tls::LoadTls::new().context("making TLS certificates")?)
    } else {
        None
    };
    let cluster = match &tls {
        Some(t) => EtcdCluster::start_tls(opts.members, t.etcd()).await,
        None => EtcdCluster::start(opts.members).await,
    }
    .context("starting etcd")?;
    let urls = cluster.client_urls();
    let local_urls = cluster.plain_local_urls().unwrap_or_default();
    let etcd_pids: Vec<u32> = (0..cluster.len()).filter_map(|i| cluster.pid(i)).collect();
    // etcd's plain-text /metrics, to count the watch streams it serves (not with --tls).
    let etcd_metrics: Vec<String> = match &tls {
        Some(_) => Vec::new(),
        None => (0..cluster.len()).map(|i| cluster.addr(i)).collect(),
    };
    let etcd_version = etcd_version();

    let keygate_bin = if opts.targets.iter().any(|t| t.starts_with("keygate")) {
        crate::bins::keygate_bin()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("{e:#}"))
    } else {
        "-".to_string()
    };

    let data = Arc::new(Data::new(opts.keys, opts.list_keys, opts.value_size));
    let client_tls = tls.as_ref().map(tls::LoadTls::client);
    let direct = connect(&urls[0], client_tls.as_ref()).await?;
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
            let (target, running) =
                match start_target(name, &urls, &local_urls, &etcd_pids, &opts, tls.as_ref()).await
                {
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
                "watch" => run_watch(target, &opts, &direct_kv, &etcd_metrics, epoch, ticks).await,
                "handshakes" => {
                    let request = data.gets_serializable[0].clone();
                    handshake::run_handshakes(target, &opts, &request, ticks).await
                }
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

    let header = markdown::RunInfo {
        date: started,
        command,
        machine,
        etcd_version,
        keygate_bin,
        members: opts.members,
        clients: opts.clients,
        conns: opts.conns,
        client: match opts.lean_client() {
            true => "lean client: keygate's HTTP/2 client, requests encoded once",
            false => "tonic's client",
        },
        duration: opts.duration,
        warmup: opts.warmup,
    };
    let targets_table = issue_targets::targets_table(&reports);
    if opts.tls {
        println!("{}", tls::summary(&reports));
    } else {
        println!("{}", issue_targets::targets_text(&targets_table));
    }
    if let Some(path) = &opts.markdown {
        let section = markdown::markdown(&header, &reports, &targets_table);
        markdown::write_markdown(path, &section)?;
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
        "handshakes" => format!(
            "{} loops each opening a new {} connection, sending one serializable Range on it and closing it; ops = connections, latency = connect{} + first answer",
            o.handshake_loops,
            if o.tls { "TLS" } else { "plain TCP" },
            if o.tls { " + TLS handshake" } else { "" }
        ),
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
