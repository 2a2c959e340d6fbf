//! Real clients of the HTTP side of port 2379 through keygate: Python's etcd3gw (from PyPI)
//! over the JSON gateway, and `ETCDCTL_API=2 etcdctl` over /v2 (forwarded to a 3.5 cluster
//! started with --enable-v2); /v2 on a cluster without it, and with server.v2_enabled off.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use keygate_tests::bins::etcd_tool;
use keygate_tests::{http, EtcdCluster, Keygate};
use tokio::process::Command;

/// Installs etcd3gw into a temp dir with pip; None (after saying why) when pip is missing.
async fn install_etcd3gw(dir: &std::path::Path) -> Result<Option<()>> {
    let pip = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .await;
    if !pip.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("SKIPPED: python3 -m pip is not available; cannot install etcd3gw");
        return Ok(None);
    }
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .arg("--target")
        .arg(dir)
        .arg("etcd3gw")
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "pip install etcd3gw: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Some(()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd3gw_scenario_through_keygate() -> Result<()> {
    let libs = tempfile::tempdir()?;
    if install_etcd3gw(libs.path()).await?.is_none() {
        return Ok(());
    }
    let etcd = EtcdCluster::start(1).await?;
    let kg = Keygate::start(&etcd.client_urls(), &[]).await?;
    let (host, port) = kg.addr().split_once(':').context("keygate address")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/etcd3gw_scenario.py");
    let run = Command::new("python3")
        .arg(&script)
        .args([host, port])
        .env("PYTHONPATH", libs.path())
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.contains("OK"),
        "etcd3gw scenario failed:\n{stdout}\n{}\nkeygate log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        kg.log_tail(30)
    );
    Ok(())
}

async fn etcdctl_v2(endpoint: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(etcd_tool("etcdctl")?)
        .env("ETCDCTL_API", "2")
        .args(["--endpoints", endpoint])
        .args(args)
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out).await??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "etcdctl {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_v2_through_keygate() -> Result<()> {
    let etcd = EtcdCluster::start_with_flags(1, &["--enable-v2"]).await?;
    let kg = Keygate::start(&etcd.client_urls(), &[]).await?;
    let ep = kg.endpoint();
    ensure!(etcdctl_v2(&ep, &["set", "/v2k", "hello"]).await?.trim() == "hello");
    ensure!(etcdctl_v2(&ep, &["mk", "/v2new", "x"]).await?.trim() == "x");
    ensure!(
        etcdctl_v2(&ep, &["mk", "/v2new", "y"]).await.is_err(),
        "mk on an existing key"
    );
    etcdctl_v2(&ep, &["mkdir", "/v2dir"]).await?;
    ensure!(etcdctl_v2(&ep, &["get", "/v2k"]).await?.trim() == "hello");
    let ls = etcdctl_v2(&ep, &["ls", "/"]).await?;
    for key in ["/v2k", "/v2new", "/v2dir"] {
        ensure!(ls.lines().any(|l| l == key), "ls / lacks {key}: {ls}");
    }
    etcdctl_v2(&ep, &["rm", "/v2k"]).await?;
    ensure!(
        etcdctl_v2(&ep, &["get", "/v2k"]).await.is_err(),
        "get after rm"
    );
    let health = etcdctl_v2(&ep, &["cluster-health"]).await?;
    ensure!(health.contains("cluster is healthy"), "{health}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_without_enable_v2_or_switched_off_is_etcds_404() -> Result<()> {
    let plain = EtcdCluster::start(1).await?;
    let kg = Keygate::start(&plain.client_urls(), &[]).await?;
    let t = Duration::from_secs(10);
    let want = http::get(&plain.addr(0), "/v2/keys/a", t).await?;
    let got = http::get(kg.addr(), "/v2/keys/a", t).await?;
    ensure!(want.status == 404 && got.status == 404, "{want:?} {got:?}");
    ensure!(want.body == got.body, "{want:?} {got:?}");

    let v2 = EtcdCluster::start_with_flags(1, &["--enable-v2"]).await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("keygate.toml");
    std::fs::write(&config, "[server]\nv2_enabled = false\n")?;
    let config = config.to_string_lossy().into_owned();
    let off = Keygate::start(&v2.client_urls(), &["--config", &config]).await?;
    let answer = http::get(off.addr(), "/v2/keys/", t).await?;
    ensure!(
        answer.status == 404 && answer.body == want.body,
        "{answer:?}"
    );
    let member = http::get(&v2.addr(0), "/v2/keys/", t).await?;
    ensure!(member.status == 200, "the member serves v2: {member:?}");
    Ok(())
}
