//! A gRPC client of etcd in another language: Node's `etcd3` (on @grpc/grpc-js, its own HTTP/2
//! and gRPC stack) runs one session — KV with range options, historic reads, prev_kv, txns, a
//! lease with keep-alive and time-to-live, live and replayed watches, a lock, an election, etcd's
//! errors — directly against etcd and through keygate, and prints the same transcript both ways
//! (`tests/node/session.mjs`; revisions relative to the session's first write).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use keygate_tests::{EtcdCluster, Keygate};
use tokio::process::Command;

/// Installs the client's locked dependencies (`npm ci`) unless they are in place.
async fn install(dir: &Path) -> Result<()> {
    if dir.join("node_modules/etcd3/package.json").exists() {
        return Ok(());
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), out)
        .await?
        .context("running npm (scripts/install-deps.sh installs Node.js and npm)")?;
    ensure!(
        out.status.success(),
        "npm ci in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

async fn session(dir: &Path, endpoint: &str, prefix: &str) -> Result<String> {
    let run = Command::new("node")
        .arg(dir.join("session.mjs"))
        .args([endpoint, prefix])
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .context("the Node session timed out")??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "the Node session against {endpoint} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_etcd3_session_is_the_same_through_keygate() -> Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node");
    install(&dir).await?;
    let etcd = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&etcd.client_urls(), &[]).await?;
    let direct = session(&dir, &etcd.endpoint(0), "direct/").await?;
    let through = session(&dir, keygate.addr(), "keygate/").await?;
    let steps = direct.lines().count();
    ensure!(
        steps == 30,
        "the direct session printed {steps} steps:\n{direct}"
    );
    for (i, (want, got)) in direct.lines().zip(through.lines()).enumerate() {
        ensure!(
            want == got,
            "step {i} differs\n  etcd:    {want}\n  keygate: {got}\nkeygate log:\n{}",
            keygate.log_tail(20)
        );
    }
    ensure!(
        through.lines().count() == steps,
        "through keygate:\n{through}"
    );
    Ok(())
}
