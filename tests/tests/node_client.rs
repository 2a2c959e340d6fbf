//! A gRPC client of etcd in another language: Node's `etcd3` (on @grpc/grpc-js, its own HTTP/2
//! and gRPC stack) runs one session — KV with range options, historic reads, prev_kv, txns, a
//! lease with keep-alive and time-to-live, live and replayed watches, a lock, an election, etcd's
//! errors — directly against etcd and through keygate, and prints the same transcript both ways
//! (`tests/node/session.mjs`; revisions relative to the session's first write) — through keygate
//! in plain text, and over TLS with a client certificate.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use keygate_tests::pki::{CertFiles, TestPki};
use keygate_tests::{EtcdCluster, Keygate};
use tokio::process::Command;

/// Installs the client's locked dependencies (`npm ci`) unless they are in place. Both tests
/// of this file may call it at once, each in a process of its own under nextest: `flock`
/// makes the second wait for the first's install instead of racing it in `node_modules`.
async fn install(dir: &Path) -> Result<()> {
    if dir.join("node_modules/etcd3/package.json").exists() {
        return Ok(());
    }
    let out = Command::new("flock")
        .arg(dir.join(".npm-install.lock"))
        .args([
            "sh",
            "-c",
            "test -e node_modules/etcd3/package.json || npm ci --no-audit --no-fund",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), out)
        .await?
        .context("running flock and npm (scripts/test.sh installs Node.js and npm)")?;
    ensure!(
        out.status.success(),
        "npm ci in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// One session against `endpoint`, over TLS with `tls` (CA, client certificate) when given.
async fn session(
    dir: &Path,
    endpoint: &str,
    prefix: &str,
    tls: Option<(&TestPki, &CertFiles)>,
) -> Result<String> {
    let mut node = Command::new("node");
    node.arg(dir.join("session.mjs")).args([endpoint, prefix]);
    if let Some((pki, client)) = tls {
        node.env("ETCD_CA", pki.ca())
            .env("ETCD_CERT", &client.cert)
            .env("ETCD_KEY", &client.key);
    }
    let run = node.stdin(Stdio::null()).output();
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

/// The same transcript from both sessions, step by step.
fn same(direct: &str, through: &str, keygate: &Keygate) -> Result<()> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_etcd3_session_is_the_same_through_keygate() -> Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node");
    install(&dir).await?;
    let etcd = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&etcd.client_urls(), &[]).await?;
    let direct = session(&dir, &etcd.endpoint(0), "direct/", None).await?;
    let through = session(&dir, keygate.addr(), "keygate/", None).await?;
    same(&direct, &through, &keygate)
}

/// Node's TLS (OpenSSL) and HTTP/2 against keygate terminating TLS with client certificates
/// required: the same transcript as etcd's over plain TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_etcd3_session_over_tls_is_the_same_through_keygate() -> Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node");
    install(&dir).await?;
    let pki = TestPki::new("node")?;
    let (server, client) = (
        pki.server("server", "keygate")?,
        pki.client("client", "node")?,
    );
    let etcd = EtcdCluster::start(1).await?;
    let toml = pki.server_tls(&server, "required");
    let keygate = Keygate::start_with_config(&etcd.client_urls(), &toml, &[]).await?;
    let direct = session(&dir, &etcd.endpoint(0), "direct/", None).await?;
    let url = format!("https://{}", keygate.addr());
    let through = session(&dir, &url, "keygate/", Some((&pki, &client))).await?;
    same(&direct, &through, &keygate)
}
