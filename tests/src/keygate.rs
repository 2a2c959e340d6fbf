//! The keygate binary as a child process: started on a free port in front of some etcd
//! endpoints, found through its ready file, stopped by SIGTERM or killed by PID.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;

use crate::bins::keygate_bin;
use crate::process::{kill_and_reap, log_tail, poll_until, signal, wait_timeout};
use crate::Clients;

/// How long keygate may take to write its ready file.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM drain may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running keygate process the harness started and owns.
pub struct Keygate {
    child: Option<Child>,
    addr: String,
    log_path: PathBuf,
    dir: TempDir,
}

impl Keygate {
    /// Runs `keygate serve --listen 127.0.0.1:0 --ready-file F --endpoints E,.. <extra_args>`
    /// and waits for the ready file, which holds the bound address.
    pub async fn start(endpoints: &[String], extra_args: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("keygate-gw-").tempdir()?;
        Self::launch(dir, endpoints, extra_args).await
    }

    /// `start` with `--config` a file holding `toml`, written in keygate's own directory.
    pub async fn start_with_config(
        endpoints: &[String],
        toml: &str,
        extra_args: &[&str],
    ) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("keygate-gw-").tempdir()?;
        let config = dir.path().join("keygate.toml");
        std::fs::write(&config, toml)?;
        let config = config.to_string_lossy().into_owned();
        let args: Vec<&str> = ["--config", config.as_str()]
            .into_iter()
            .chain(extra_args.iter().copied())
            .collect();
        Self::launch(dir, endpoints, &args).await
    }

    async fn launch(dir: TempDir, endpoints: &[String], extra_args: &[&str]) -> Result<Self> {
        let bin = keygate_bin()?;
        let ready_file = dir.path().join("ready");
        let log_path = dir.path().join("keygate.log");
        let log = File::create(&log_path)?;
        let child = Command::new(&bin)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(&ready_file)
            .arg("--endpoints")
            .arg(endpoints.join(","))
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir(dir.path())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut keygate = Self {
            child: Some(child),
            addr: String::new(),
            log_path,
            dir,
        };
        keygate.addr = keygate.wait_ready(&ready_file).await?;
        Ok(keygate)
    }

    async fn wait_ready(&mut self, ready_file: &Path) -> Result<String> {
        let log_path = self.log_path.clone();
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("keygate is not running"))?;
        let mut exited = None;
        let mut addr = String::new();
        let res = poll_until(READY_TIMEOUT, "keygate's ready file", || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
            }
            let ready = exited.is_some()
                || match std::fs::read_to_string(ready_file) {
                    Ok(text) if !text.trim().is_empty() => {
                        addr = text.trim().to_string();
                        true
                    }
                    _ => false,
                };
            async move { Ok(ready) }
        })
        .await;
        if let Some(status) = exited {
            bail!(
                "keygate exited with {status} before it was ready; log tail:\n{}",
                log_tail(&log_path, 30)
            );
        }
        res.with_context(|| format!("keygate log tail:\n{}", log_tail(&log_path, 30)))?;
        Ok(addr.trim_start_matches("http://").to_string())
    }

    /// The bound address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// keygate's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// gRPC clients connected to keygate.
    pub async fn clients(&self) -> Result<Clients> {
        Clients::connect(&self.endpoint()).await
    }

    /// keygate's stderr/stdout log.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of keygate's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// The temp dir keygate runs in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGTERMs keygate and waits for it to drain and exit.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("keygate is not running"))?;
        if let Err(e) = signal(child.id(), "TERM") {
            kill_and_reap(&mut child);
            return Err(e);
        }
        match wait_timeout(&mut child, STOP_TIMEOUT).await {
            Ok(status) => Ok(status),
            Err(e) => {
                kill_and_reap(&mut child);
                Err(e.context(format!("log tail:\n{}", self.log_tail(30))))
            }
        }
    }

    /// SIGKILLs keygate and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("keygate is not running"))?;
        child.kill().context("SIGKILL keygate")?;
        child.wait().context("reaping keygate")?;
        Ok(())
    }
}

impl Drop for Keygate {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "keygate in {} (test failed), log tail:\n{}",
                self.dir.path().display(),
                self.log_tail(40)
            );
        }
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}
