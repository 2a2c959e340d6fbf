//! What the plugin tests share: keygate with mTLS and plugins, and etcdctl as the holder of a
//! client certificate.

use anyhow::{ensure, Result};
use keygate_tests::pki::{CertFiles, TestPki};
use keygate_tests::{CmdOutput, EtcdCluster, Etcdctl, Keygate};
use std::time::Duration;

pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Keygate with mTLS (the certificate's CN is the identity) and `plugins` (TOML tables).
pub async fn keygate(pki: &TestPki, etcd: &EtcdCluster, plugins: &str) -> Result<Keygate> {
    let server = pki.server("keygate", "keygate")?;
    let toml = format!("{}{plugins}\n", pki.server_tls(&server, "required"));
    let debug = ["--log-level", "keygate=debug,info"];
    Keygate::start_with_config(&etcd.client_urls(), &toml, &debug).await
}

/// etcd's PERMISSION_DENIED, or a plugin's own reason with that code.
pub fn denial(out: &CmdOutput) -> bool {
    out.stderr.contains("permission denied") || out.stderr.contains("PermissionDenied")
}

/// etcdctl as the holder of one client certificate.
pub struct As {
    pub ctl: Etcdctl,
    tls: Vec<String>,
}

impl As {
    pub fn new(kg: &Keygate, pki: &TestPki, cert: &CertFiles) -> Result<Self> {
        Ok(As {
            ctl: Etcdctl::new(&[format!("https://{}", kg.addr())])?,
            tls: vec![
                "--cacert".into(),
                pki.ca_str().into(),
                "--cert".into(),
                cert.cert_str().into(),
                "--key".into(),
                cert.key_str().into(),
            ],
        })
    }

    pub fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut args: Vec<&str> = self.tls.iter().map(String::as_str).collect();
        args.extend_from_slice(rest);
        args
    }

    pub async fn run(&self, rest: &[&str]) -> Result<CmdOutput> {
        self.ctl.run(&self.args(rest)).await
    }

    pub async fn run_stdin(&self, rest: &[&str], stdin: &str) -> Result<CmdOutput> {
        self.ctl.run_with_stdin(&self.args(rest), stdin).await
    }

    pub async fn ok(&self, rest: &[&str]) -> Result<String> {
        Ok(self.run(rest).await?.ok()?.stdout)
    }

    pub async fn denied(&self, rest: &[&str]) -> Result<()> {
        let out = self.run(rest).await?;
        ensure!(
            !out.success() && denial(&out),
            "{rest:?} should be denied: {out:?}"
        );
        Ok(())
    }
}
