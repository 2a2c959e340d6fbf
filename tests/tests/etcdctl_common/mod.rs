//! Helpers the etcdctl end-to-end tests share: how long to wait for a line of a long-running
//! etcdctl's output, and checking a command's exact stdout.

use std::time::Duration;

use anyhow::{ensure, Result};
use keygate_tests::CmdOutput;

pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn expect_stdout(out: &CmdOutput, want: &str) -> Result<()> {
    ensure!(out.stdout == want, "want stdout {want:?}, got {out:?}");
    Ok(())
}
