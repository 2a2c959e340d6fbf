//! Real etcd: clusters of 1 or 3 members and etcd's own grpc-proxy, on free loopback ports,
//! in a temp dir, killed by PID when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;

mod grpc_proxy;
mod members;
mod restore;

pub use grpc_proxy::{probe, GrpcProxy};

use crate::bins::etcd_tool;
use crate::process::{all_threads_stopped, kill_and_reap, log_tail, poll_until, signal};
use crate::{http, ports, Clients};

/// How long a member (or the whole cluster) may take to answer /health.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a start is retried when a picked port was taken meanwhile.
const PORT_RETRIES: usize = 3;

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain-HTTP /health and /metrics (used for health checks when client URLs are TLS).
    metrics_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// For a member added to the running cluster: the cluster it joins (etcd's
    /// `--initial-cluster` with `--initial-cluster-state existing`).
    joins: Option<String>,
}

impl Member {
    /// The plain-HTTP URL on the metrics port: /health and /metrics, and with
    /// `EtcdTls::plain_local` a client listener too.
    fn plain_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }
}

/// TLS on a cluster's client URLs, with client certificates required (etcd's
/// --client-cert-auth); each member uses `cert` both to serve and as its client certificate.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Also a plain-text client listener on loopback (on the member's metrics port, which then
    /// serves /health and /metrics as a client URL does): what a gateway on the member's own
    /// host reaches it through while remote clients use TLS (`plain_local_urls`).
    pub plain_local: bool,
}

/// A running etcd cluster whose members the harness started and owns.
pub struct EtcdCluster {
    members: Vec<Member>,
    tls: Option<EtcdTls>,
    initial_cluster: String,
    token: String,
    /// Flags added to every member's command line (`start_with_flags`).
    extra_flags: Vec<String>,
    // Dropped after `Drop::drop` killed the members, so their files are closed first.
    dir: TempDir,
}

impl EtcdCluster {
    /// Starts `members` fresh etcd members (1 or 3 in practice) and waits until each answers
    /// /health.
    pub async fn start(members: usize) -> Result<Self> {
        Self::start_with(members, None).await
    }

    /// Like `start`, with https:// client URLs that require client certificates.
    pub async fn start_tls(members: usize, tls: EtcdTls) -> Result<Self> {
        Self::start_with(members, Some(tls)).await
    }

    /// Like `start`, with extra etcd flags on every member (e.g. `--enable-v2`).
    pub async fn start_with_flags(members: usize, flags: &[&str]) -> Result<Self> {
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        Self::start_inner(members, None, flags).await
    }

    async fn start_with(members: usize, tls: Option<EtcdTls>) -> Result<Self> {
        Self::start_inner(members, tls, Vec::new()).await
    }

    async fn start_inner(
        members: usize,
        tls: Option<EtcdTls>,
        extra_flags: Vec<String>,
    ) -> Result<Self> {
        if members == 0 {
            bail!("an etcd cluster needs at least one member");
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(members, tls.clone(), extra_flags.clone()).await {
                Ok(cluster) => return Ok(cluster),
                Err((e, port_clash)) if port_clash && attempt < PORT_RETRIES => {
                    eprintln!("etcd start attempt {attempt} hit a port clash, retrying: {e:#}");
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    async fn try_start(
        n: usize,
        tls: Option<EtcdTls>,
        extra_flags: Vec<String>,
    ) -> std::result::Result<Self, (anyhow::Error, bool)> {
        let dir = tempfile::Builder::new()
            .prefix("keygate-etcd-")
            .tempdir()
            .map_err(|e| (e.into(), false))?;
        let ports = ports::free_ports(3 * n).map_err(|e| (e.into(), false))?;
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                metrics_port: ports[2 * n + i],
                data_dir: dir.path().join(format!("m{i}.data")),
                log_path: dir.path().join(format!("m{i}.log")),
                child: None,
                joins: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "keygate-test-{}",
            dir.path().file_name().unwrap_or_default().to_string_lossy()
        );
        let mut cluster = Self {
            members,
            tls,
            initial_cluster,
            token,
            extra_flags,
            dir,
        };
        for i in 0..n {
            cluster.spawn(i).map_err(|e| (e, false))?;
        }
        for i in 0..n {
            if let Err(e) = cluster.wait_healthy(i, START_TIMEOUT).await {
                let clash = (0..n).any(|j| {
                    std::fs::read_to_string(cluster.log_path(j))
                        .map(|log| log.contains("address already in use"))
                        .unwrap_or(false)
                });
                return Err((e, clash));
            }
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let etcd = etcd_tool("etcd")?;
        let m = &self.members[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .with_context(|| format!("opening {}", m.log_path.display()))?;
        let client_url = format!("{}://127.0.0.1:{}", self.scheme(), m.client_port);
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let (initial_cluster, state) = match &m.joins {
            Some(cluster) => (cluster, "existing"),
            None => (&self.initial_cluster, "new"),
        };
        let plain_url = m.plain_url();
        let mut listen_client_urls = client_url.clone();
        let mut cmd = Command::new(etcd);
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
            if tls.plain_local {
                listen_client_urls = format!("{client_url},{plain_url}");
            } else {
                cmd.args(["--listen-metrics-urls", &plain_url]);
            }
        }
        let child = cmd
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &listen_client_urls])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            // Loopback is fast: short timings make elections and restarts quick.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .arg("--unsafe-no-fsync")
            .args(&self.extra_flags)
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir(self.dir.path())
            .spawn()
            .context("spawning etcd")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Polls member `i`'s /health until it reports healthy (which needs a leader).
    pub async fn wait_healthy(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let addr = match self.tls {
            Some(_) => format!("127.0.0.1:{}", self.members[i].metrics_port),
            None => self.addr(i),
        };
        let what = format!("etcd member {i} ({addr}) to be healthy");
        let log_path = self.members[i].log_path.clone();
        let child = self.members[i]
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("member {i} is not running"))?;
        let mut exited = None;
        let res = poll_until(timeout, &what, || {
            let addr = addr.clone();
            let status = child.try_wait();
            if let Ok(Some(status)) = status {
                exited = Some(status);
            }
            let gone = exited.is_some();
            async move {
                if gone {
                    return Ok(true);
                }
                let resp = http::get(&addr, "/health", Duration::from_secs(2)).await?;
                Ok(resp.status == 200 && resp.body.contains("\"health\":\"true\""))
            }
        })
        .await;
        if let Some(status) = exited {
            bail!(
                "etcd member {i} exited with {status} while starting; log tail:\n{}",
                log_tail(&log_path, 20)
            );
        }
        res.with_context(|| format!("log tail:\n{}", log_tail(&log_path, 20)))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never true for a started cluster).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client URL (`http://127.0.0.1:PORT`).
    pub fn client_urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Every member's plain-text loopback client URL, for a TLS cluster started with
    /// `plain_local`.
    pub fn plain_local_urls(&self) -> Option<Vec<String>> {
        let local = self.tls.as_ref().is_some_and(|t| t.plain_local);
        local.then(|| self.members.iter().map(Member::plain_url).collect())
    }

    /// Member `i`'s client URL (`http://127.0.0.1:PORT`, https:// for a TLS cluster).
    pub fn endpoint(&self, i: usize) -> String {
        format!("{}://{}", self.scheme(), self.addr(i))
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Member `i`'s client address (`127.0.0.1:PORT`).
    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// Member `i`'s peer URL.
    pub fn peer_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].peer_port)
    }

    /// Member `i`'s name (`m0`, `m1`, ...).
    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// The PID of member `i`, if it is running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Member `i`'s log file.
    pub fn log_path(&self, i: usize) -> &Path {
        &self.members[i].log_path
    }

    /// The temp dir holding every member's data dir and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// gRPC clients connected to member `i`.
    pub async fn clients(&self, i: usize) -> Result<Clients> {
        Clients::connect(&self.endpoint(i)).await
    }

    /// SIGKILLs member `i` and reaps it; its data dir stays for `restart`.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let mut child = self.members[i]
            .child
            .take()
            .ok_or_else(|| anyhow!("member {i} is not running"))?;
        child.kill().context("SIGKILL etcd")?;
        child.wait().context("reaping etcd")?;
        Ok(())
    }

    /// Starts member `i` again on the same ports and data dir (killing it first if it still
    /// runs), and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        if self.members[i].child.is_some() {
            self.kill(i)?;
        }
        self.spawn(i)?;
        self.wait_healthy(i, START_TIMEOUT).await
    }

    /// SIGSTOPs member `i`: it keeps its sockets but answers nothing. Returns once the kernel
    /// shows every thread of it stopped (state `T` in /proc), not merely signalled.
    pub fn pause(&self, i: usize) -> Result<()> {
        let pid = self.running_pid(i)?;
        signal(pid, "STOP")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if all_threads_stopped(pid)? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        bail!("member {i} (pid {pid}) did not stop within 5 s of SIGSTOP")
    }

    /// SIGCONTs member `i`.
    pub fn resume(&self, i: usize) -> Result<()> {
        signal(self.running_pid(i)?, "CONT")
    }

    fn running_pid(&self, i: usize) -> Result<u32> {
        self.pid(i)
            .ok_or_else(|| anyhow!("member {i} is not running"))
    }

    /// The last `lines` lines of every member's log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {} ---\n{}", m.name, log_tail(&m.log_path, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "etcd cluster in {} (test failed), log tails:\n{}",
                self.dir.path().display(),
                self.log_tails(15)
            );
        }
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                // A stopped process still dies on SIGKILL.
                kill_and_reap(&mut child);
            }
        }
    }
}
