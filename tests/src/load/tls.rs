//! `--tls`: one test CA per run; etcd serving TLS with client certificates required (and plain
//! text on loopback listeners of its own); keygate and `etcd grpc-proxy` terminating TLS the same
//! way (client certificates required) and reaching etcd over TLS, or keygate reaching the
//! loopback listeners (`keygate-plain-upstream`); the load generator's TLS settings; the TLS
//! summary of a run.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::report::ModeReport;
use super::target::{connect, kv_client};
use crate::etcd::{probe, GrpcProxy};
use crate::pki::{CertFiles, TestPki};
use crate::EtcdTls;

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
            plain_local: true,
        }
    }

    /// The load generator's TLS settings (CA and client certificate).
    pub(super) fn client(&self) -> ClientTlsConfig {
        self.client.clone()
    }

    /// Writes keygate's configuration: TLS on its client port with client certificates
    /// required (as etcd's --client-cert-auth); with `upstream_tls`, TLS with a client
    /// certificate to etcd, else plain text to the members' loopback listeners (keygate on the
    /// members' host, terminating TLS for them).
    pub(super) fn keygate_config(&self, upstream_tls: bool) -> Result<PathBuf> {
        let mut toml = self.pki.server_tls(&self.proxy_server, "required");
        if upstream_tls {
            toml += &self.pki.upstream_tls(&self.proxy_client);
        }
        let name = if upstream_tls {
            "keygate-loadgen.toml"
        } else {
            "keygate-loadgen-plain.toml"
        };
        let path = self.pki.dir().join(name);
        std::fs::write(&path, toml)?;
        Ok(path)
    }

    /// Starts `etcd grpc-proxy` serving TLS (its --trusted-ca-file makes it require client
    /// certificates) in front of the TLS members.
    pub(super) async fn start_grpc_proxy(&self, urls: &[String]) -> Result<GrpcProxy> {
        let files: [(&str, &std::path::Path); 6] = [
            ("--cacert", self.pki.ca()),
            ("--cert", &self.grpc_proxy_client.cert),
            ("--key", &self.grpc_proxy_client.key),
            ("--cert-file", &self.proxy_server.cert),
            ("--key-file", &self.proxy_server.key),
            ("--trusted-ca-file", self.pki.ca()),
        ];
        let extra: Vec<String> = (files.iter())
            .map(|(flag, file)| format!("{flag}={}", file.display()))
            .collect();
        let mut proxy = GrpcProxy::spawn(urls, &extra)?;
        let endpoint = format!("https://{}", proxy.addr());
        let tls = self.client();
        proxy
            .wait_serving("grpc-proxy to serve TLS", || {
                let endpoint = endpoint.clone();
                let tls = tls.clone();
                async move {
                    let ch = connect(&endpoint, Some(&tls)).await?;
                    kv_client(&ch).range(probe()).await?;
                    Ok(true)
                }
            })
            .await?;
        Ok(proxy)
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
        for t in [
            "keygate",
            "keygate-plain-upstream",
            "keygate-no-mirror",
            "grpc-proxy",
        ] {
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
