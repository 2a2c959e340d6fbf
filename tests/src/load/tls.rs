//! `--tls`: one test CA per run; etcd serving TLS with client certificates required, keygate and
//! `etcd grpc-proxy` terminating TLS the same way (client certificates required) and reaching
//! etcd over TLS; the load generator's TLS settings; the TLS summary of a run.

use std::fmt::Write as _;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use keygate_proto::etcdserverpb::RangeRequest;
use tempfile::TempDir;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::report::ModeReport;
use super::target::{connect, kv_client};
use crate::bins::etcd_tool;
use crate::pki::{CertFiles, TestPki};
use crate::process::{kill_and_reap, log_tail, poll_until};
use crate::{ports, EtcdTls};

/// The certificates of one `--tls` run.
pub(super) struct LoadTls {
    pki: TestPki,
    member: CertFiles,
    /// The certificate keygate and grpc-proxy serve.
    proxy_server: CertFiles,
    /// The certificate keygate presents to etcd.
    proxy_client: CertFiles,
    /// The certificate grpc-proxy presents to etcd: without a CN, which grpc-proxy refuses
    /// ("cert has non empty Common Name").
    grpc_proxy_client: CertFiles,
    client: ClientTlsConfig,
}

impl LoadTls {
    pub(super) fn new() -> Result<Self> {
        let pki = TestPki::new("loadgen")?;
        let member = pki.server("etcd", "etcd-member")?;
        let proxy_server = pki.server("proxy", "proxy")?;
        let proxy_client = pki.client("proxy-upstream", "proxy")?;
        let grpc_proxy_client = pki.client("grpc-proxy-upstream", "")?;
        let loadgen = pki.client("loadgen", "loadgen")?;
        let client = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(pki.ca())?))
            .identity(Identity::from_pem(
                std::fs::read(&loadgen.cert)?,
                std::fs::read(&loadgen.key)?,
            ))
            .domain_name("localhost");
        Ok(Self {
            pki,
            member,
            proxy_server,
            proxy_client,
            grpc_proxy_client,
            client,
        })
    }

    pub(super) fn etcd(&self) -> EtcdTls {
        EtcdTls {
            ca: self.pki.ca().to_path_buf(),
            cert: self.member.cert.clone(),
            key: self.member.key.clone(),
        }
    }

    /// The load generator's TLS settings (CA and client certificate).
    pub(super) fn client(&self) -> ClientTlsConfig {
        self.client.clone()
    }

    /// Writes keygate's configuration: TLS on its client port with client certificates
    /// required (as etcd's --client-cert-auth), TLS with a client certificate to etcd.
    pub(super) fn keygate_config(&self) -> Result<PathBuf> {
        let toml = format!(
            "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n\
             client_auth = \"required\"\n\
             [upstream.tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            self.proxy_server.cert,
            self.proxy_server.key,
            self.pki.ca(),
            self.pki.ca(),
            self.proxy_client.cert,
            self.proxy_client.key,
        );
        let path = self.pki.dir().join("keygate-loadgen.toml");
        std::fs::write(&path, toml)?;
        Ok(path)
    }

    /// Starts `etcd grpc-proxy` serving TLS (its --trusted-ca-file makes it require client
    /// certificates) in front of the TLS members.
    pub(super) async fn start_grpc_proxy(&self, urls: &[String]) -> Result<TlsGrpcProxy> {
        let etcd = etcd_tool("etcd")?;
        let dir = tempfile::Builder::new()
            .prefix("keygate-grpc-proxy-tls-")
            .tempdir()?;
        let addr = format!("127.0.0.1:{}", ports::free_port()?);
        let log_path = dir.path().join("grpc-proxy.log");
        let log = File::create(&log_path)?;
        let endpoints = urls
            .iter()
            .map(|e| e.trim_start_matches("https://"))
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new(etcd)
            .args(["grpc-proxy", "start"])
            .arg(format!("--endpoints={endpoints}"))
            .arg(format!("--listen-addr={addr}"))
            .arg(format!("--data-dir={}", dir.path().join("proxy").display()))
            .arg(format!("--cacert={}", self.pki.ca().display()))
            .arg(format!("--cert={}", self.grpc_proxy_client.cert.display()))
            .arg(format!("--key={}", self.grpc_proxy_client.key.display()))
            .arg(format!("--cert-file={}", self.proxy_server.cert.display()))
            .arg(format!("--key-file={}", self.proxy_server.key.display()))
            .arg(format!("--trusted-ca-file={}", self.pki.ca().display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir(dir.path())
            .spawn()
            .context("spawning etcd grpc-proxy")?;
        let mut proxy = TlsGrpcProxy {
            child: Some(child),
            addr,
            _dir: dir,
        };
        let endpoint = proxy.endpoint();
        let tls = self.client();
        let res = poll_until(Duration::from_secs(30), "grpc-proxy to serve TLS", || {
            let endpoint = endpoint.clone();
            let tls = tls.clone();
            async move {
                let ch = connect(&endpoint, Some(&tls)).await?;
                kv_client(&ch)
                    .range(RangeRequest {
                        key: bytes::Bytes::from_static(b"keygate-harness-probe"),
                        ..Default::default()
                    })
                    .await?;
                Ok(true)
            }
        })
        .await;
        if let Some(child) = proxy.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "grpc-proxy exited with {status}; log tail:\n{}",
                    log_tail(&log_path, 20)
                );
            }
        }
        res.with_context(|| format!("log tail:\n{}", log_tail(&log_path, 20)))?;
        Ok(proxy)
    }
}

/// `etcd grpc-proxy` serving TLS, killed by PID when dropped.
pub(super) struct TlsGrpcProxy {
    child: Option<Child>,
    addr: String,
    _dir: TempDir,
}

impl TlsGrpcProxy {
    pub(super) fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for TlsGrpcProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}

/// issue #3's criterion next to a `--tls` run: keygate at least as fast as etcd's own TLS.
pub(super) fn summary(reports: &[ModeReport]) -> String {
    let mut out = String::from(
        "\n== TLS (issue #3): keygate terminating TLS vs etcd serving TLS itself (goal: ≥ 1.00× etcd ops/s)\n",
    );
    for r in reports {
        let Some(base) = r.get("etcd") else {
            let _ = writeln!(out, "  {:<18} etcd not measured", r.mode);
            continue;
        };
        for t in ["keygate", "keygate-no-mirror", "grpc-proxy"] {
            let Some(m) = r.get(t) else { continue };
            let ratio = m.ops_per_sec() / base.ops_per_sec();
            let _ = writeln!(
                out,
                "  {:<18} {:<17} {:>5.2}× etcd ops/s  p50 {:+.0} µs  p99 {:.2}×  CPU/op {:.2}×  {}",
                r.mode,
                t,
                ratio,
                m.p50() - base.p50(),
                m.p99() / base.p99(),
                m.cpu_per_op() / base.cpu_per_op(),
                if t.starts_with("keygate") {
                    if ratio >= 1.0 {
                        "met"
                    } else {
                        "MISSED"
                    }
                } else {
                    ""
                }
            );
        }
    }
    out
}
