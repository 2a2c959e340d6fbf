//! Who keygate says is calling, for each identity source: the client certificate's CN, the
//! etcd user behind an auth token (learned from Authenticate), a configured bearer token; and
//! anonymous callers refused when the configuration says so.

use std::time::Duration;

use anyhow::{ensure, Result};
use keygate_proto::etcdserverpb::RangeRequest;
use keygate_tests::pki::TestPki;
use keygate_tests::tls_client::{https_get, rustls_config, tls_clients};
use keygate_tests::{EtcdCluster, Etcdctl, Keygate};
use serde_json::Value;

async fn keygate(etcd: &EtcdCluster, dir: &std::path::Path, toml: &str) -> Result<Keygate> {
    let path = dir.join(format!("kg-{}.toml", rand::random::<u32>()));
    std::fs::write(&path, toml)?;
    Keygate::start(
        &etcd.client_urls(),
        &["--config", path.to_str().unwrap_or_default()],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn each_source_is_attributed() -> Result<()> {
    let pki = TestPki::new("id")?;
    let etcd = EtcdCluster::start(1).await?;
    let server = pki.server("kg", "keygate")?;
    let toml = format!(
        "[server]\ndebug_endpoints = true\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n\
         client_ca_file = {:?}\nclient_auth = \"optional\"\n\
         [identity]\nbearer_tokens = [{{ name = \"scraper\", token = \"s3cret\" }}]\n",
        server.cert,
        server.key,
        pki.ca()
    );
    let kg = keygate(&etcd, pki.dir(), &toml).await?;
    let alice = pki.client("alice", "alice")?;
    let with_cert = rustls_config(pki.ca(), Some(&alice))?;
    let without = rustls_config(pki.ca(), None)?;
    let who = |resp: keygate_tests::tls_client::HttpsResponse| -> Result<Value> {
        ensure!(resp.status == 200, "{resp:?}");
        Ok(serde_json::from_str(&resp.body)?)
    };

    // The certificate's CN and SANs.
    let id = who(https_get(kg.addr(), "/debug/identity", with_cert.clone(), &[]).await?)?;
    ensure!(
        id["source"] == "certificate" && id["name"] == "alice",
        "{id}"
    );
    // A bearer token wins over the certificate; an unknown one is refused.
    let bearer = [("authorization", "Bearer s3cret")];
    let id = who(https_get(kg.addr(), "/debug/identity", with_cert.clone(), &bearer).await?)?;
    ensure!(
        id["source"] == "bearer" && id["name"] == "scraper" && id["cn"] == "alice",
        "{id}"
    );
    let wrong = https_get(
        kg.addr(),
        "/debug/identity",
        without.clone(),
        &[("authorization", "Bearer nope")],
    )
    .await?;
    ensure!(
        wrong.status == 401 && wrong.body.contains("invalid auth token"),
        "{wrong:?}"
    );
    // Nothing at all: anonymous (allowed by default).
    let id = who(https_get(kg.addr(), "/debug/identity", without.clone(), &[]).await?)?;
    ensure!(id["source"] == "anonymous", "{id}");

    // etcd auth through keygate: the token etcd issues is attributed to its user.
    let ctl = Etcdctl::new(&[format!("https://{}", kg.addr())])?;
    let tls = ["--cacert", pki.ca_str()];
    let run = |args: Vec<&str>| {
        let ctl = ctl.clone();
        let args: Vec<String> = tls.iter().copied().chain(args).map(String::from).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ctl.run(&args).await
        }
    };
    run(vec!["user", "add", "root:rootpw"]).await?.ok()?;
    run(vec!["auth", "enable"]).await?.ok()?;
    run(vec!["--user=root:rootpw", "put", "k", "v"])
        .await?
        .ok()?;
    run(vec!["--user=root:rootpw", "get", "k"]).await?.ok()?;
    let denied = run(vec!["--user=root:wrong", "get", "k"]).await?;
    ensure!(
        !denied.success() && denied.stderr.contains("authentication failed"),
        "{denied:?}"
    );

    // gRPC with the certificate.
    let mut c = tls_clients(kg.addr(), pki.ca(), Some(&alice)).await?;
    let _ =
        c.kv.range(RangeRequest {
            key: b"k".to_vec().into(),
            ..Default::default()
        })
        .await;

    let metrics = https_get(kg.addr(), "/metrics", without, &[]).await?.body;
    for want in [
        "keygate_requests_by_identity_total{identity=\"root\",identity_source=\"etcd_token\"}",
        "keygate_requests_by_identity_total{identity=\"alice\",identity_source=\"certificate\"}",
        "keygate_requests_by_identity_total{identity=\"anonymous\",identity_source=\"anonymous\"}",
    ] {
        ensure!(metrics.contains(want), "no {want} in\n{metrics}");
    }
    run(vec!["--user=root:rootpw", "auth", "disable"])
        .await?
        .ok()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_callers_refused_when_configured() -> Result<()> {
    let etcd = EtcdCluster::start(1).await?;
    let dir = tempfile::tempdir()?;
    let toml = "[identity]\nallow_anonymous = false\n\
                bearer_tokens = [{ name = \"automation\", token = \"t0k\" }]\n";
    let kg = keygate(&etcd, dir.path(), toml).await?;
    let mut c = kg.clients().await?;
    let range = || RangeRequest {
        key: b"k".to_vec().into(),
        ..Default::default()
    };
    let err = match c.kv.range(range()).await {
        Ok(r) => anyhow::bail!("anonymous range served: {r:?}"),
        Err(e) => e,
    };
    ensure!(
        err.code() == tonic::Code::InvalidArgument
            && err.message() == "etcdserver: user name is empty",
        "{err:?}"
    );
    // Streams too, and in particular those keygate serves itself once its mirror is up.
    keygate_tests::process::poll_until(Duration::from_secs(10), "the mirror serving", || {
        let addr = kg.addr().to_string();
        async move {
            let m = keygate_tests::http::get(&addr, "/metrics", Duration::from_secs(5)).await?;
            Ok(m.body.contains("keygate_mirror_serving 1"))
        }
    })
    .await?;
    let create = keygate_proto::etcdserverpb::WatchRequest {
        request_union: Some(
            keygate_proto::etcdserverpb::watch_request::RequestUnion::CreateRequest(
                keygate_proto::etcdserverpb::WatchCreateRequest {
                    key: b"k".to_vec().into(),
                    ..Default::default()
                },
            ),
        ),
    };
    let watch = c.watch.watch(tokio_stream::iter(vec![create])).await;
    ensure!(
        matches!(&watch, Err(e) if e.code() == tonic::Code::InvalidArgument),
        "anonymous watch: {watch:?}"
    );
    let keep_alive = keygate_proto::etcdserverpb::LeaseKeepAliveRequest { id: 1 };
    let kept = c
        .lease
        .lease_keep_alive(tokio_stream::iter(vec![keep_alive]))
        .await;
    ensure!(
        matches!(&kept, Err(e) if e.code() == tonic::Code::InvalidArgument),
        "anonymous keep-alive: {kept:?}"
    );
    let mut req = tonic::Request::new(range());
    req.metadata_mut()
        .insert("authorization", "Bearer t0k".parse()?);
    c.kv.range(req).await?;
    let metrics = keygate_tests::http::get(kg.addr(), "/metrics", Duration::from_secs(5)).await?;
    ensure!(metrics.body.contains(
        "keygate_requests_by_identity_total{identity=\"automation\",identity_source=\"bearer\"} 1"
    ), "{}", metrics.body);
    Ok(())
}
