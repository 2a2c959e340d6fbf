//! The harness itself against real etcd: clusters start, members die, pause, restart and
//! rejoin, grpc-proxy serves, and nothing outlives its owner.

use std::time::Duration;

use anyhow::{ensure, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use keygate_tests::{http, Clients, EtcdCluster, Etcdctl, GrpcProxy};

/// Puts, retrying while the cluster elects a new leader after a fault.
async fn put(c: &mut Clients, k: &str, v: &str) -> Result<i64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match put_once(c, k, v).await {
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("put {k} failed, retrying: {e:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            res => return res,
        }
    }
}

/// A linearizable get on a member that has just come back, retried while it learns who leads
/// (a member paused while it led answers "leader changed" once it resumes).
async fn get_after_fault(c: &mut Clients, k: &str) -> Result<Option<Bytes>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match get(c, k, false).await {
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("get {k} failed, retrying: {e:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            res => return res,
        }
    }
}

async fn put_once(c: &mut Clients, k: &str, v: &str) -> Result<i64> {
    let resp =
        c.kv.put(PutRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(resp.header.map(|h| h.revision).unwrap_or_default())
}

async fn get(c: &mut Clients, k: &str, serializable: bool) -> Result<Option<Bytes>> {
    let resp =
        c.kv.range(RangeRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            serializable,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(resp.kvs.into_iter().next().map(|kv| kv.value))
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread")]
async fn single_member_serves_grpc_and_health() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let mut c = cluster.clients(0).await?;
    let rev = put(&mut c, "a", "1").await?;
    ensure!(rev >= 2, "revision after first put: {rev}");
    ensure!(get(&mut c, "a", false).await? == Some(Bytes::from_static(b"1")));
    let status = c.maintenance.status(StatusRequest {}).await?.into_inner();
    ensure!(
        status.version.starts_with("3.5"),
        "version {}",
        status.version
    );
    let health = http::get(&cluster.addr(0), "/health", Duration::from_secs(5)).await?;
    ensure!(health.status == 200, "{health:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn three_members_kill_pause_restart_and_drop() -> Result<()> {
    let mut cluster = EtcdCluster::start(3).await?;
    ensure!(cluster.client_urls().len() == 3);
    let mut c0 = cluster.clients(0).await?;
    put(&mut c0, "k", "before").await?;

    // A killed member comes back on the same ports and data and catches up.
    cluster.kill(2)?;
    ensure!(cluster.pid(2).is_none());
    put(&mut c0, "k", "while-down").await?;
    cluster.restart(2).await?;
    let mut c2 = cluster.clients(2).await?;
    ensure!(get_after_fault(&mut c2, "k").await? == Some(Bytes::from_static(b"while-down")));

    // A paused member answers nothing; the others keep a quorum.
    cluster.pause(1)?;
    let mut c1 = cluster.clients(1).await?;
    let stalled = tokio::time::timeout(Duration::from_millis(500), get(&mut c1, "k", true)).await;
    ensure!(
        stalled.is_err(),
        "a SIGSTOPped member answered: {stalled:?}"
    );
    put(&mut c0, "k", "while-paused").await?;
    cluster.resume(1)?;
    ensure!(get_after_fault(&mut c1, "k").await? == Some(Bytes::from_static(b"while-paused")));

    let pids: Vec<u32> = (0..3).filter_map(|i| cluster.pid(i)).collect();
    let dir = cluster.dir().to_path_buf();
    ensure!(pids.len() == 3);
    drop(cluster);
    for pid in pids {
        ensure!(!pid_alive(pid), "etcd {pid} outlived its cluster");
    }
    ensure!(!dir.exists(), "{} outlived its cluster", dir.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_proxy_and_etcdctl() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let proxy = GrpcProxy::start(&cluster.client_urls()).await?;
    let ctl = Etcdctl::new(&[proxy.endpoint()])?;
    ensure!(ctl.run(&["put", "via-proxy", "v"]).await?.ok()?.stdout == "OK\n");
    let direct = Etcdctl::new(&[cluster.endpoint(0)])?;
    let out = direct
        .run(&["get", "via-proxy", "--print-value-only"])
        .await?
        .ok()?;
    ensure!(out.stdout == "v\n", "{out:?}");
    Ok(())
}
