//! Helpers the etcdctl end-to-end tests share: how long to wait for a line of a long-running
//! etcdctl's output, checking a command's exact stdout, reading a granted lease's id.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use keygate_tests::CmdOutput;

pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn expect_stdout(out: &CmdOutput, want: &str) -> Result<()> {
    ensure!(out.stdout == want, "want stdout {want:?}, got {out:?}");
    Ok(())
}

/// The lease id etcdctl printed (`lease 694d... granted with TTL(60s)`).
pub fn lease_id(out: &CmdOutput) -> Result<String> {
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    match words.as_slice() {
        ["lease", id, "granted", ..] => Ok(id.to_string()),
        _ => bail!("no lease id in {out:?}"),
    }
}
