//! grpc.health.v1.Health, which etcd serves beside its API (load balancers and Kubernetes' gRPC
//! probes ask it): keygate answers Check and Watch as etcd does for the same questions, reports
//! NOT_SERVING while no etcd member is reachable and SERVING again once one is back, says
//! NOT_SERVING to open watches when it shuts down, and counts the calls as etcd does.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use keygate_proto::health::health_check_response::ServingStatus;
use keygate_proto::health::health_client::HealthClient;
use keygate_proto::health::HealthCheckRequest;
use keygate_tests::{http, EtcdCluster, Keygate};
use tonic::transport::Channel;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(15);

type Health = HealthClient<Channel>;
type Updates = Streaming<keygate_proto::health::HealthCheckResponse>;

async fn client(addr: &str) -> Result<Health> {
    Ok(HealthClient::new(
        keygate_tests::Clients::connect(addr).await?.channel,
    ))
}

fn ask(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

/// Check's answer for `service`: its status, or the error's code and message.
async fn check(health: &mut Health, service: &str) -> String {
    match health.check(ask(service)).await {
        Ok(r) => format!("{:?}", r.into_inner().status()),
        Err(s) => format!("{:?} {}", s.code(), s.message()),
    }
}

/// The next status a Watch stream sends, within `WAIT`.
async fn next(updates: &mut Updates) -> Result<ServingStatus> {
    match tokio::time::timeout(WAIT, updates.message()).await {
        Ok(Ok(Some(r))) => Ok(r.status()),
        Ok(Ok(None)) => bail!("the watch ended"),
        Ok(Err(s)) => bail!("the watch failed: {s:?}"),
        Err(_) => bail!("no status within {WAIT:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_as_etcd_and_follows_the_members() -> Result<()> {
    let mut cluster = EtcdCluster::start(1).await?;
    let mut keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    let mut direct = client(&cluster.addr(0)).await?;
    let mut through = client(keygate.addr()).await?;

    // The same questions, the same answers.
    for service in ["", "etcdserverpb.KV", "grpc.health.v1.Health", "nope"] {
        let (want, got) = (
            check(&mut direct, service).await,
            check(&mut through, service).await,
        );
        ensure!(
            want == got,
            "Check({service:?}): etcd {want}, keygate {got}"
        );
    }
    ensure!(check(&mut through, "").await == "Serving");
    for service in ["", "nope"] {
        let want = next(&mut direct.watch(ask(service)).await?.into_inner()).await?;
        let got = next(&mut through.watch(ask(service)).await?.into_inner()).await?;
        ensure!(
            want == got,
            "Watch({service:?}): etcd {want:?}, keygate {got:?}"
        );
    }

    // The only member dies: keygate can serve nothing, and says so; then it is back.
    let mut updates = through.watch(ask("")).await?.into_inner();
    ensure!(next(&mut updates).await? == ServingStatus::Serving);
    cluster.kill(0)?;
    ensure!(
        next(&mut updates).await? == ServingStatus::NotServing,
        "a watch of the whole server after its only member died"
    );
    ensure!(check(&mut through, "").await == "NotServing");
    cluster.restart(0).await?;
    ensure!(
        next(&mut updates).await? == ServingStatus::Serving,
        "a watch of the whole server after the member came back"
    );
    ensure!(check(&mut through, "").await == "Serving");

    let metrics = http::get(keygate.addr(), "/metrics", WAIT).await?.body;
    let series = r#"grpc_server_handled_total{grpc_code="NotFound",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 3"#;
    ensure!(
        metrics.contains(series),
        "/metrics lacks {series}:\n{metrics}"
    );

    // Shutting down: the open watch hears NOT_SERVING, then ends, and keygate exits.
    let watcher = tokio::spawn(async move {
        let status = next(&mut updates).await?;
        let end = tokio::time::timeout(WAIT, updates.message()).await;
        anyhow::Ok((status, end.context("the watch did not end")?.ok().flatten()))
    });
    let exit = keygate.stop().await?;
    ensure!(exit.success(), "keygate exited with {exit}");
    let (status, after) = watcher.await??;
    ensure!(
        status == ServingStatus::NotServing,
        "on shutdown: {status:?}"
    );
    ensure!(after.is_none(), "a status after NOT_SERVING: {after:?}");
    Ok(())
}
