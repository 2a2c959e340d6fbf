//! Child-process plumbing shared by the harness: signals by PID, bounded waits, log tails.

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Sends `signal` (a name `kill -s` understands: TERM, KILL, STOP, CONT, INT) to `pid`.
///
/// The `kill` utility keeps the crate free of `unsafe`; it only ever targets a PID we started.
pub fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -s {signal} {pid} failed: {status}");
    }
    Ok(())
}

/// Whether every thread of `pid` is stopped: state `T`, after the command name (in parentheses)
/// in /proc/<pid>/task/<tid>/stat.
pub fn all_threads_stopped(pid: u32) -> Result<bool> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("stat"))?;
        let state = stat.rsplit(')').next().map(str::trim_start);
        if !state.is_some_and(|s| s.starts_with('T')) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Waits for `child` to exit, polling so a tokio worker is never blocked for long.
pub async fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for child")? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            bail!("process {} still running after {timeout:?}", child.id());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILLs `child` (by its PID) and reaps it; fine to call on a process that already exited.
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The last `lines` lines of a log file, for failure messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Polls `check` every 25ms until it returns `Ok(true)` or `timeout` passes.
pub async fn poll_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            match last_err {
                Some(e) => bail!("timed out after {timeout:?} waiting for {what}: {e:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
