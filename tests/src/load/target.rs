//! One measured target: starting the proxy in front of etcd (none, `etcd grpc-proxy`, keygate
//! with or without its mirror), connecting clients to it, and sampling its processes' CPU at
//! the edges of a measured window.

use std::time::Duration;

use anyhow::{Context, Result};
use keygate_proto::etcdserverpb::kv_client::KvClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::report::Measure;
use super::tls::LoadTls;
use super::{cpu, Options};
use crate::{GrpcProxy, Keygate};

/// One measured target: where the clients connect and which processes do the serving.
pub(super) struct Target {
    pub(super) name: &'static str,
    pub(super) endpoints: Vec<String>,
    /// Every server process: etcd members plus the proxy, if any.
    pub(super) pids: Vec<u32>,
    /// The proxy's process (grpc-proxy or keygate), counted in `pids` too.
    pub(super) proxy_pid: Option<u32>,
    /// TLS settings for the target's endpoints (`--tls`).
    pub(super) tls: Option<ClientTlsConfig>,
}

/// The proxy process behind a target, stopped after its measurement.
pub(super) enum Running {
    Nothing,
    Proxy(GrpcProxy),
    Keygate(Keygate),
}

impl Running {
    pub(super) async fn stop(self) {
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

/// `local_urls`: the members' plain-text loopback URLs of a `--tls` run, which
/// `keygate-plain-upstream` forwards to.
pub(super) async fn start_target(
    name: &str,
    urls: &[String],
    local_urls: &[String],
    etcd_pids: &[u32],
    opts: &Options,
    tls: Option<&LoadTls>,
) -> Result<(Target, Running)> {
    let mut pids = etcd_pids.to_vec();
    let client_tls = tls.map(LoadTls::client);
    match name {
        "etcd" => Ok((
            Target {
                name: "etcd",
                endpoints: urls.to_vec(),
                pids,
                proxy_pid: None,
                tls: client_tls,
            },
            Running::Nothing,
        )),
        "grpc-proxy" if tls.is_some() => {
            let p = tls.context("no TLS")?.start_grpc_proxy(urls).await?;
            pids.extend(p.pid());
            Ok((
                Target {
                    name: "grpc-proxy",
                    endpoints: vec![format!("https://{}", p.addr())],
                    pids,
                    proxy_pid: p.pid(),
                    tls: client_tls,
                },
                Running::Proxy(p),
            ))
        }
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
                    tls: None,
                },
                Running::Proxy(p),
            ))
        }
        _ => {
            let name: &'static str = match name {
                "keygate" => "keygate",
                "keygate-plain-upstream" => "keygate-plain-upstream",
                _ => "keygate-no-mirror",
            };
            let mut extra: Vec<&str> = opts.keygate_args.split_whitespace().collect();
            if name == "keygate-no-mirror" {
                extra.push("--no-mirror");
            }
            let (config, urls) = match (tls, name) {
                (Some(t), "keygate-plain-upstream") => (Some(t.keygate_config(false)?), local_urls),
                (Some(t), _) => (Some(t.keygate_config(true)?), urls),
                (None, _) => (None, urls),
            };
            let config = config.map(|c| c.display().to_string());
            if let Some(c) = &config {
                extra.extend(["--config", c.as_str()]);
            }
            let k = Keygate::start(urls, &extra).await?;
            pids.extend(k.pid());
            let endpoint = match tls {
                Some(_) => format!("https://{}", k.addr()),
                None => k.endpoint(),
            };
            Ok((
                Target {
                    name,
                    endpoints: vec![endpoint],
                    pids,
                    proxy_pid: k.pid(),
                    tls: client_tls,
                },
                Running::Keygate(k),
            ))
        }
    }
}

pub(super) async fn connect(url: &str, tls: Option<&ClientTlsConfig>) -> Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_string())?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.clone())?;
    }
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

pub(super) async fn connect_all(target: &Target, conns: usize) -> Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(conns);
    for i in 0..conns {
        channels.push(
            connect(
                &target.endpoints[i % target.endpoints.len()],
                target.tls.as_ref(),
            )
            .await?,
        );
    }
    Ok(channels)
}

pub(super) fn kv_client(ch: &Channel) -> KvClient<Channel> {
    KvClient::new(ch.clone()).max_decoding_message_size(64 << 20)
}

/// Samples of every CPU counter at the edges of a measured window.
pub(super) struct CpuSample {
    server: f64,
    proxy: f64,
    client: f64,
    machine: Option<(u64, u64)>,
}

impl CpuSample {
    pub(super) fn take(t: &Target, ticks: f64) -> Self {
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

    pub(super) fn fill(&self, end: &CpuSample, m: &mut Measure) {
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
