//! keygate as a process: ready file, HTTP endpoints on the client port and the metrics port,
//! SIGTERM drain, staying available when the etcd member it talks to dies, and /health and
//! writes through an out-of-space alarm.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::alarm_request::AlarmAction;
use keygate_proto::etcdserverpb::{
    AlarmRequest, AlarmType, PutRequest, RangeRequest, StatusRequest,
};
use keygate_tests::{http, ports, Clients, EtcdCluster, Keygate};

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Puts and returns the revision of the write.
async fn put(c: &mut Clients, k: &str, v: &str) -> Result<i64> {
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

async fn get(c: &mut Clients, k: &str) -> Result<Option<Bytes>> {
    let resp =
        c.kv.range(RangeRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(resp.kvs.into_iter().next().map(|kv| kv.value))
}

#[tokio::test(flavor = "multi_thread")]
async fn http_endpoints_metrics_and_sigterm() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let metrics_port = ports::free_port()?;
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut keygate = Keygate::start(
        &cluster.client_urls(),
        &["--metrics-listen", metrics_addr.as_str()],
    )
    .await?;
    let addr = keygate.addr().to_string();

    let health = http::get(&addr, "/health", HTTP_TIMEOUT).await?;
    ensure!(
        health.status == 200 && health.body.contains(r#""health":"true""#),
        "/health: {health:?}"
    );
    for path in ["/livez", "/readyz"] {
        let resp = http::get(&addr, path, HTTP_TIMEOUT).await?;
        ensure!(resp.status == 200, "{path}: {resp:?}");
    }
    let version = http::get(&addr, "/version", HTTP_TIMEOUT).await?;
    let v: serde_json::Value =
        serde_json::from_str(&version.body).with_context(|| format!("/version: {version:?}"))?;
    ensure!(v["etcdserver"] == "3.5.1", "/version: {v}");

    // Some traffic, so the gRPC server families have samples.
    let mut c = keygate.clients().await?;
    put(&mut c, "metrics-probe", "1").await?;
    ensure!(get(&mut c, "metrics-probe").await? == Some(Bytes::from_static(b"1")));
    let status = c.maintenance.status(StatusRequest {}).await?.into_inner();
    ensure!(
        status.version == "3.5.1",
        "Status through keygate: {status:?}"
    );

    for metrics_on in [addr.as_str(), metrics_addr.as_str()] {
        let metrics = http::get(metrics_on, "/metrics", HTTP_TIMEOUT).await?;
        ensure!(
            metrics.status == 200,
            "/metrics on {metrics_on}: {metrics:?}"
        );
        for family in [
            "grpc_server_started_total",
            "grpc_server_handled_total",
            "grpc_server_handling_seconds",
        ] {
            ensure!(
                metrics.body.contains(family),
                "/metrics on {metrics_on} lacks {family}:\n{}",
                metrics.body
            );
        }
    }

    // An open watch must not hold up the drain.
    let ctl = keygate_tests::Etcdctl::new(std::slice::from_ref(&addr))?;
    let rev = put(&mut c, "metrics-probe", "2").await?;
    let mut watcher = ctl.spawn(&["watch", "metrics-probe", &format!("--rev={rev}")])?;
    let lines = watcher.lines(3, HTTP_TIMEOUT).await?;
    ensure!(lines == ["PUT", "metrics-probe", "2"], "{lines:?}");

    let stopping = Instant::now();
    let status = keygate.stop().await?;
    ensure!(
        stopping.elapsed() < Duration::from_secs(10),
        "SIGTERM drain took {:?} with a watch open",
        stopping.elapsed()
    );
    ensure!(
        status.success(),
        "keygate exited with {status} on SIGTERM; log:\n{}",
        keygate.log_tail(30)
    );
    ensure!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "keygate still accepts connections after exiting"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn survives_the_death_of_an_etcd_member() -> Result<()> {
    let mut cluster = EtcdCluster::start(3).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    let mut c = keygate.clients().await?;
    put(&mut c, "k", "before").await?;

    // The first endpoint is the one keygate most likely talks to.
    cluster.kill(0)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last_err = None;
    let mut written = false;
    while Instant::now() < deadline {
        match put(&mut c, "k", "after").await {
            Ok(_) => {
                written = true;
                break;
            }
            Err(e) => last_err = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        written,
        "no write through keygate within 15s of member 0 dying: {last_err:?}\n{}",
        keygate.log_tail(30)
    );
    ensure!(get(&mut c, "k").await? == Some(Bytes::from_static(b"after")));

    // Back again: keygate still serves, and the restarted member has the write.
    cluster.restart(0).await?;
    let mut direct = cluster.clients(0).await?;
    ensure!(get(&mut direct, "k").await? == Some(Bytes::from_static(b"after")));
    put(&mut c, "k", "restarted").await?;
    ensure!(get(&mut c, "k").await? == Some(Bytes::from_static(b"restarted")));
    Ok(())
}

/// An etcd out of space (the NOSPACE alarm, raised here through the Alarm RPC as etcd raises it
/// when its backend outgrows the quota): /health answers as etcd's, with its options (an
/// operator may exclude NOSPACE, or ask without a linearizable read); writes through keygate
/// get etcd's error and reads still work; once the alarm is disarmed through keygate, writes
/// work again.
#[tokio::test(flavor = "multi_thread")]
async fn health_and_writes_follow_etcd_through_a_nospace_alarm() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    let mut c = keygate.clients().await?;
    put(&mut c, "before", "1").await?;
    let nospace = |action: AlarmAction| AlarmRequest {
        action: action as i32,
        member_id: 0,
        alarm: AlarmType::Nospace as i32,
    };
    let mut direct = cluster.clients(0).await?;
    direct
        .maintenance
        .alarm(nospace(AlarmAction::Activate))
        .await?;

    for path in [
        "/health",
        "/health?exclude=NOSPACE",
        "/health?serializable=true",
    ] {
        let etcd = http::get(&cluster.addr(0), path, HTTP_TIMEOUT).await?;
        let through = http::get(keygate.addr(), path, HTTP_TIMEOUT).await?;
        ensure!(
            (through.status, &through.body) == (etcd.status, &etcd.body),
            "{path}: keygate answered {through:?}, etcd {etcd:?}"
        );
        let healthy = path.contains("exclude");
        ensure!(
            etcd.body.contains(&format!(r#""health":"{healthy}""#)),
            "{path}: etcd answered {etcd:?}"
        );
    }

    let refused =
        c.kv.put(PutRequest {
            key: Bytes::from_static(b"during"),
            value: Bytes::from_static(b"1"),
            ..Default::default()
        })
        .await
        .err()
        .context("a put through keygate succeeded with NOSPACE raised")?;
    ensure!(
        refused.code() == tonic::Code::ResourceExhausted
            && refused.message() == "etcdserver: mvcc: database space exceeded",
        "put: {refused:?}"
    );
    ensure!(get(&mut c, "before").await? == Some(Bytes::from_static(b"1")));
    let alarms = c
        .maintenance
        .alarm(nospace(AlarmAction::Get))
        .await?
        .into_inner();
    ensure!(alarms.alarms.len() == 1, "alarm list: {alarms:?}");

    c.maintenance
        .alarm(nospace(AlarmAction::Deactivate))
        .await?;
    put(&mut c, "after", "1").await?;
    let health = http::get(keygate.addr(), "/health", HTTP_TIMEOUT).await?;
    ensure!(
        health.status == 200 && health.body.contains(r#""health":"true""#),
        "/health after the alarm: {health:?}"
    );
    Ok(())
}
