//! etcd's own grpc-proxy, in front of some endpoints, in a temp dir, killed by PID when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use super::START_TIMEOUT;
use crate::bins::etcd_tool;
use crate::process::{kill_and_reap, log_tail, poll_until};
use crate::{ports, Clients};

/// etcd's own `etcd grpc-proxy start`, in front of some endpoints.
pub struct GrpcProxy {
    child: Option<Child>,
    addr: String,
    log_path: PathBuf,
    dir: TempDir,
}

impl GrpcProxy {
    /// Starts a grpc-proxy for `endpoints` (client URLs or `host:port`) on a free port and waits
    /// until a Range through it succeeds.
    pub async fn start(endpoints: &[String]) -> Result<Self> {
        let mut proxy = Self::spawn(endpoints, &[])?;
        let endpoint = proxy.endpoint();
        proxy
            .wait_serving("grpc-proxy to serve", || {
                let endpoint = endpoint.clone();
                async move {
                    let mut c = Clients::connect(&endpoint).await?;
                    c.kv.range(probe()).await?;
                    Ok(true)
                }
            })
            .await?;
        Ok(proxy)
    }

    /// Starts a grpc-proxy for `endpoints` with `extra` flags (TLS files, say), without waiting
    /// for it to serve.
    pub fn spawn(endpoints: &[String], extra: &[String]) -> Result<Self> {
        let etcd = etcd_tool("etcd")?;
        let dir = tempfile::Builder::new()
            .prefix("keygate-grpc-proxy-")
            .tempdir()?;
        let port = ports::free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let log_path = dir.path().join("grpc-proxy.log");
        let log = File::create(&log_path)?;
        let endpoints = endpoints
            .iter()
            .map(|e| {
                e.trim_start_matches("http://")
                    .trim_start_matches("https://")
            })
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new(etcd)
            .args(["grpc-proxy", "start"])
            .arg(format!("--endpoints={endpoints}"))
            .arg(format!("--listen-addr={addr}"))
            .arg(format!("--data-dir={}", dir.path().join("proxy").display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir(dir.path())
            .spawn()
            .context("spawning etcd grpc-proxy")?;
        Ok(Self {
            child: Some(child),
            addr,
            log_path,
            dir,
        })
    }

    /// Polls `check` until it says the proxy serves; fails with the proxy's log tail when it
    /// exits or does not serve in time.
    pub async fn wait_serving<F, Fut>(&mut self, what: &str, check: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let res = poll_until(START_TIMEOUT, what, check).await;
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "grpc-proxy exited with {status}; log tail:\n{}",
                    log_tail(&self.log_path, 20)
                );
            }
        }
        res.with_context(|| format!("log tail:\n{}", log_tail(&self.log_path, 20)))
    }

    /// The proxy's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The proxy's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The temp dir the proxy runs in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The Range a proxy must answer to count as serving.
pub fn probe() -> keygate_proto::etcdserverpb::RangeRequest {
    keygate_proto::etcdserverpb::RangeRequest {
        key: bytes::Bytes::from_static(b"keygate-harness-probe"),
        ..Default::default()
    }
}

impl Drop for GrpcProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}
