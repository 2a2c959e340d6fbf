//! Running the real `etcdctl` (v3 API) against a target: one-shot commands and long-running
//! ones (watch, lock, elect) whose output is read line by line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::bins::etcd_tool;
use crate::pki::CertFiles;
use crate::process::signal;

/// How long one etcdctl command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// The outcome of one etcdctl run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Fails with the whole output unless the command exited 0.
    pub fn ok(self) -> Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            bail!("etcdctl failed: {self:?}")
        }
    }
}

/// etcdctl bound to an `--endpoints` value.
#[derive(Debug, Clone)]
pub struct Etcdctl {
    bin: PathBuf,
    endpoints: String,
    /// Flags before every command (`with_tls`).
    global: Vec<String>,
}

impl Etcdctl {
    /// etcdctl from the etcd bin dir, talking to `endpoints` (URLs or `host:port`).
    pub fn new(endpoints: &[String]) -> Result<Self> {
        Ok(Self {
            bin: etcd_tool("etcdctl")?,
            endpoints: endpoints.join(","),
            global: Vec::new(),
        })
    }

    /// The same etcdctl over TLS: `ca` verifies the server, `client` is presented.
    pub fn with_tls(mut self, ca: &Path, client: &CertFiles) -> Self {
        self.global.extend([
            format!("--cacert={}", ca.display()),
            format!("--cert={}", client.cert.display()),
            format!("--key={}", client.key.display()),
        ]);
        self
    }

    /// The `--endpoints` value.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("ETCDCTL_API", "3")
            .env_remove("ETCDCTL_ENDPOINTS")
            .arg(format!("--endpoints={}", self.endpoints))
            .args(&self.global)
            .args(args)
            .kill_on_drop(true);
        cmd
    }

    /// Runs `etcdctl <args>` to completion.
    pub async fn run(&self, args: &[&str]) -> Result<CmdOutput> {
        self.run_with_stdin(args, "").await
    }

    /// Runs `etcdctl <args>` with `stdin` as its standard input.
    pub async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Result<CmdOutput> {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning etcdctl")?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).await?;
            // Dropping stdin closes it so etcdctl sees EOF.
        }
        let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| anyhow!("etcdctl {args:?} ran longer than {COMMAND_TIMEOUT:?}"))??;
        Ok(CmdOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Starts `etcdctl <args>` in the background, stdout readable line by line.
    pub fn spawn(&self, args: &[&str]) -> Result<Spawned> {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning etcdctl")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("etcdctl has no stdout"))?;
        Ok(Spawned {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }
}

/// A background etcdctl; killed by PID when dropped.
pub struct Spawned {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Spawned {
    /// The next stdout line, or an error if none comes within `timeout` or stdout closed.
    pub async fn next_line(&mut self, timeout: Duration) -> Result<String> {
        match tokio::time::timeout(timeout, self.lines.next_line()).await {
            Err(_) => bail!("no etcdctl output within {timeout:?}"),
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => bail!("etcdctl closed its stdout: {}", self.stderr_now().await),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Reads `n` lines, each within `timeout`.
    pub async fn lines(&mut self, n: usize, timeout: Duration) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(
                self.next_line(timeout)
                    .await
                    .with_context(|| format!("after lines {out:?}"))?,
            );
        }
        Ok(out)
    }

    /// `Ok(())` if no line arrives within `quiet`; used to check that something waits.
    pub async fn expect_silence(&mut self, quiet: Duration) -> Result<()> {
        match tokio::time::timeout(quiet, self.lines.next_line()).await {
            Err(_) => Ok(()),
            Ok(Ok(Some(line))) => bail!("expected no output, got {line:?}"),
            Ok(Ok(None)) => bail!("etcdctl exited: {}", self.stderr_now().await),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends a signal by name (TERM, INT, KILL, ...).
    pub fn signal(&self, sig: &str) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("etcdctl already exited"))?;
        signal(pid, sig)
    }

    /// Waits for exit (bounded) and returns the exit code.
    pub async fn wait(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| anyhow!("etcdctl did not exit within {timeout:?}"))??;
        Ok(status.code())
    }

    /// Waits (bounded) for it to exit on its own and returns what it printed from now on.
    pub async fn finish(&mut self, timeout: Duration) -> Result<CmdOutput> {
        let mut stdout = Vec::new();
        let rest = async {
            while let Some(line) = self.lines.next_line().await? {
                stdout.push(line);
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(timeout, rest)
            .await
            .map_err(|_| anyhow!("etcdctl still writing after {timeout:?}: {stdout:?}"))??;
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let read = tokio::io::AsyncReadExt::read_to_string(&mut err, &mut stderr);
            tokio::time::timeout(timeout, read).await??;
        }
        let code = self.wait(timeout).await?;
        let mut stdout = stdout.join("\n");
        if !stdout.is_empty() {
            stdout.push('\n');
        }
        Ok(CmdOutput {
            code,
            stdout,
            stderr,
        })
    }

    /// SIGKILLs it and reaps it.
    pub async fn kill(&mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    async fn stderr_now(&mut self) -> String {
        let Some(mut stderr) = self.child.stderr.take() else {
            return String::new();
        };
        let mut buf = String::new();
        let read = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut buf);
        let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
        format!("stderr: {buf}")
    }
}
