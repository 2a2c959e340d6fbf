//! The mirror answers without etcd's per-user permission checks, so it must stop answering the
//! moment etcd's authentication is on: anonymous reads through keygate then get etcd's own
//! refusal, reads with a token get etcd's answer, and once authentication is off again the mirror
//! serves again. Run against etcd 3.5 (AuthStatus) and, by scripts/test.sh, 3.4 (which has no
//! AuthStatus: keygate asks with an Authenticate that cannot succeed).

use std::time::Duration;

use anyhow::{ensure, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{AuthenticateRequest, PutRequest, RangeRequest};
use keygate_tests::process::poll_until;
use keygate_tests::watch_record::metric;
use keygate_tests::{Clients, EtcdCluster, Etcdctl, Keygate};
use tonic::Request;

fn get(token: Option<&str>) -> Result<Request<RangeRequest>> {
    let mut request = Request::new(RangeRequest {
        key: Bytes::from_static(b"k"),
        serializable: true,
        ..Default::default()
    });
    if let Some(token) = token {
        request.metadata_mut().insert("token", token.parse()?);
    }
    Ok(request)
}

/// The answer's values, or etcd's error message.
async fn read(c: &mut Clients, token: Option<&str>) -> Result<Result<Vec<Bytes>, String>> {
    Ok(match c.kv.range(get(token)?).await {
        Ok(resp) => Ok(resp
            .into_inner()
            .kvs
            .into_iter()
            .map(|kv| kv.value)
            .collect()),
        Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_stops_serving_while_etcd_authentication_is_on() -> Result<()> {
    let etcd = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&etcd.client_urls(), &[]).await?;
    let (mut direct, mut via) = (etcd.clients(0).await?, keygate.clients().await?);
    let serving = || metric(keygate.addr(), "keygate_mirror_serving");
    // Up to 30 s: against etcd 3.4, keygate asks every 30 s while authentication is on.
    let within = Duration::from_secs(40);
    poll_until(within, "the mirror serving", || async {
        Ok(serving().await? == 1.0)
    })
    .await?;
    let put = PutRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    };
    via.kv.put(put).await?;
    ensure!(read(&mut via, None).await? == Ok(vec![Bytes::from_static(b"v")]));

    let ctl = Etcdctl::new(&etcd.client_urls())?;
    ctl.run(&["user", "add", "root:rootpw"]).await?.ok()?;
    ctl.run(&["auth", "enable"]).await?.ok()?;
    poll_until(within, "the mirror out of service", || async {
        Ok(serving().await? == 0.0)
    })
    .await?;
    let (etcd_says, keygate_says) = (read(&mut direct, None).await?, read(&mut via, None).await?);
    ensure!(
        etcd_says.is_err() && keygate_says == etcd_says,
        "an anonymous read with authentication on: etcd {etcd_says:?}, keygate {keygate_says:?}"
    );
    let login = AuthenticateRequest {
        name: "root".into(),
        password: "rootpw".into(),
    };
    let token = via.auth.authenticate(login).await?.into_inner().token;
    let with_token = read(&mut via, Some(&token)).await?;
    ensure!(
        with_token == Ok(vec![Bytes::from_static(b"v")]),
        "a read with root's token: {with_token:?}"
    );

    ctl.run(&["--user=root:rootpw", "auth", "disable"])
        .await?
        .ok()?;
    poll_until(within, "the mirror serving again", || async {
        Ok(serving().await? == 1.0)
    })
    .await?;
    ensure!(read(&mut via, None).await? == Ok(vec![Bytes::from_static(b"v")]));
    Ok(())
}
