//! TLS on keygate's client port and to the etcd members: etcdctl with client certificates
//! through keygate to an etcd that itself requires TLS and client certificates; refused
//! handshakes that leave keygate serving; certificate rotation under load.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use keygate_proto::etcdserverpb::{PutRequest, RangeRequest};
use keygate_tests::pki::{CertFiles, TestPki};
use keygate_tests::tls_client::{https_get, rustls_config, tls_clients};
use keygate_tests::{EtcdCluster, EtcdTls, Etcdctl, Keygate};

const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// keygate terminating TLS with `server`, verifying client certificates against `pki`'s CA
/// (`client_auth`), reaching `etcd` (TLS when `upstream` is given) with that client certificate.
async fn tls_keygate(
    pki: &TestPki,
    server: &CertFiles,
    client_auth: &str,
    etcd: &EtcdCluster,
    upstream: Option<&CertFiles>,
    extra: &str,
) -> Result<Keygate> {
    let mut toml = format!(
        "[server]\ndebug_endpoints = true\n{}reload_interval_ms = 200\n{extra}\n",
        pki.server_tls(server, client_auth)
    );
    if let Some(up) = upstream {
        toml.push_str(&pki.upstream_tls(up));
    }
    let debug = ["--log-level", "keygate=debug,info"];
    Keygate::start_with_config(&etcd.client_urls(), &toml, &debug).await
}

fn write_config(dir: &Path, toml: &str) -> Result<PathBuf> {
    let path = dir.join(format!("keygate-{}.toml", rand::random::<u32>()));
    std::fs::write(&path, toml)?;
    Ok(path)
}

fn ctl_args<'a>(pki: &'a TestPki, client: &'a CertFiles, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--cacert",
        pki.ca_str(),
        "--cert",
        client.cert_str(),
        "--key",
        client.key_str(),
    ];
    args.extend_from_slice(rest);
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_through_tls_keygate_to_tls_etcd() -> Result<()> {
    let pki = TestPki::new("main")?;
    let member = pki.server("etcd", "etcd-member")?;
    let etcd = EtcdCluster::start_tls(
        1,
        EtcdTls {
            ca: pki.ca().to_path_buf(),
            cert: member.cert.clone(),
            key: member.key.clone(),
            plain_local: false,
        },
    )
    .await?;
    let server = pki.server("keygate", "keygate")?;
    let upstream = pki.client("keygate-upstream", "keygate")?;
    let kg = tls_keygate(&pki, &server, "required", &etcd, Some(&upstream), "").await?;
    let alice = pki.client("alice", "alice")?;
    let ctl = Etcdctl::new(&[format!("https://{}", kg.addr())])?;
    let run = |rest: &'static [&'static str]| {
        let ctl = ctl.clone();
        let args: Vec<String> = ctl_args(&pki, &alice, rest)
            .into_iter()
            .map(str::to_string)
            .collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ctl.run(&args).await?.ok()
        }
    };
    ensure!(run(&["put", "foo", "bar"]).await?.stdout == "OK\n");
    ensure!(run(&["get", "foo"]).await?.stdout == "foo\nbar\n");

    let mut watch = ctl.spawn(&ctl_args(&pki, &alice, &["watch", "w"]))?;
    // Puts until the watcher (which may still be connecting) reports one.
    let mut seen = String::new();
    for i in 0..20 {
        let v = format!("v{i}");
        ctl.run(&ctl_args(&pki, &alice, &["put", "w", &v]))
            .await?
            .ok()?;
        if let Ok(line) = watch.next_line(Duration::from_millis(500)).await {
            seen = line;
            break;
        }
    }
    ensure!(seen == "PUT", "watch through TLS saw {seen:?}");
    ensure!(watch.next_line(LINE_TIMEOUT).await? == "w");
    watch.kill().await?;

    let grant = run(&["lease", "grant", "60"]).await?.stdout;
    let id = grant
        .split_whitespace()
        .nth(1)
        .context("lease id")?
        .to_string();
    let out = ctl
        .run(&ctl_args(
            &pki,
            &alice,
            &["put", "leased", "x", "--lease", &id],
        ))
        .await?
        .ok()?;
    ensure!(out.stdout == "OK\n");
    let ttl = ctl
        .run(&ctl_args(
            &pki,
            &alice,
            &["lease", "timetolive", &id, "--keys"],
        ))
        .await?
        .ok()?;
    ensure!(ttl.stdout.contains("leased"), "{ttl:?}");
    ctl.run(&ctl_args(&pki, &alice, &["lease", "revoke", &id]))
        .await?
        .ok()?;
    let members = run(&["member", "list"]).await?.stdout;
    ensure!(
        members.contains("m0") && members.contains("https://"),
        "{members}"
    );
    run(&["endpoint", "health"]).await?;

    // keygate's /health asks the member over TLS with its client certificate.
    let health = https_get(
        kg.addr(),
        "/health",
        rustls_config(pki.ca(), Some(&alice))?,
        &[],
    )
    .await?;
    ensure!(
        health.status == 200 && health.body.contains("true"),
        "{health:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_clients_are_refused_and_keygate_keeps_serving() -> Result<()> {
    let pki = TestPki::new("main")?;
    let other = TestPki::new("other")?;
    let etcd = EtcdCluster::start(1).await?;
    let server = pki.server("keygate", "keygate")?;
    let kg = tls_keygate(&pki, &server, "required", &etcd, None, "").await?;
    let good = pki.client("good", "good")?;
    let expired = pki.expired_client("expired", "old")?;
    let foreign = other.client("foreign", "mallory")?;

    let range = RangeRequest {
        key: b"k".to_vec().into(),
        ..Default::default()
    };
    let serves = || async {
        let mut c = tls_clients(kg.addr(), pki.ca(), Some(&good)).await?;
        c.kv.range(range.clone()).await?;
        anyhow::Ok(())
    };
    serves().await?;

    for (what, client) in [
        ("no client certificate", None),
        ("expired certificate", Some(&expired)),
        ("certificate from another CA", Some(&foreign)),
    ] {
        let refused = async {
            let mut c = tls_clients(kg.addr(), pki.ca(), client).await?;
            c.kv.range(range.clone()).await?;
            anyhow::Ok(())
        }
        .await;
        ensure!(refused.is_err(), "{what}: served");
        let https = https_get(kg.addr(), "/livez", rustls_config(pki.ca(), client)?, &[]).await;
        ensure!(https.is_err(), "{what}: HTTPS served: {https:?}");
        serves().await.with_context(|| format!("after {what}"))?;
    }

    // Plain TCP to the TLS port: gRPC without TLS, and raw HTTP/1.1.
    let plain = async {
        let mut c = keygate_tests::Clients::connect(kg.addr()).await?;
        c.kv.range(range.clone()).await?;
        anyhow::Ok(())
    }
    .await;
    ensure!(plain.is_err(), "plain gRPC served on the TLS port");
    let raw = keygate_tests::http::get(kg.addr(), "/livez", Duration::from_secs(5)).await;
    ensure!(raw.is_err(), "plain HTTP served on the TLS port: {raw:?}");
    serves().await.context("after plain TCP")?;

    // etcdctl too, and its error says why.
    let ctl = Etcdctl::new(&[format!("https://{}", kg.addr())])?;
    let out = ctl
        .run(&[
            "--cacert",
            pki.ca_str(),
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "get",
            "k",
        ])
        .await?;
    ensure!(!out.success(), "etcdctl without a certificate: {out:?}");

    let log = std::fs::read_to_string(kg.log_path())?;
    ensure!(log.contains("TLS handshake failed"), "log: {log}");
    let metrics = https_get(
        kg.addr(),
        "/metrics",
        rustls_config(pki.ca(), Some(&good))?,
        &[],
    )
    .await?;
    ensure!(
        metrics
            .body
            .contains("keygate_tls_handshakes_total{result=\"failed\"}"),
        "{}",
        metrics.body
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_certificate_reaches_new_connections_and_no_request_fails() -> Result<()> {
    let pki = TestPki::new("main")?;
    let etcd = EtcdCluster::start(1).await?;
    let live = pki.server("live", "keygate-old")?;
    let kg = tls_keygate(&pki, &live, "off", &etcd, None, "").await?;
    let client_cfg = rustls_config(pki.ca(), None)?;
    let first = https_get(kg.addr(), "/livez", client_cfg.clone(), &[]).await?;

    // Load: one long-lived connection and a stream of fresh connections, all putting.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    let long_lived = tls_clients(kg.addr(), pki.ca(), None).await?;
    for worker in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let addr = kg.addr().to_string();
        let ca = pki.ca().to_path_buf();
        let mut shared = long_lived.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let put = PutRequest {
                    key: format!("rot/{worker}").into_bytes().into(),
                    value: i.to_string().into_bytes().into(),
                    ..Default::default()
                };
                let result = if worker % 2 == 0 {
                    shared
                        .kv
                        .put(put)
                        .await
                        .map(|_| ())
                        .map_err(anyhow::Error::from)
                } else {
                    match tls_clients(&addr, &ca, None).await {
                        Ok(mut fresh) => fresh.kv.put(put).await.map(|_| ()).map_err(Into::into),
                        Err(e) => Err(e),
                    }
                };
                match result {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.push(format!("{e:#}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Rotate: a new certificate and key, each renamed into place.
    let next = pki.server("next", "keygate-new")?;
    let new_der = first_cert_der(&next.cert)?;
    for (from, to) in [(&next.key, &live.key), (&next.cert, &live.cert)] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp)?;
        std::fs::rename(&tmp, to)?;
    }
    let rotated_at = Instant::now();
    loop {
        let resp = https_get(kg.addr(), "/livez", client_cfg.clone(), &[]).await?;
        if resp.server_cert == new_der {
            break;
        }
        ensure!(
            resp.server_cert == first.server_cert,
            "an unknown certificate"
        );
        ensure!(
            rotated_at.elapsed() < Duration::from_secs(10),
            "not rotated in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = rotated_at.elapsed();
    let before = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await?);
    }
    let done = ok.load(Ordering::Relaxed);
    eprintln!(
        "rotation seen by new connections after {took:?}; {done} puts, {} failed",
        failed.load(Ordering::Relaxed)
    );
    ensure!(
        errors.is_empty(),
        "requests failed during rotation: {errors:?}"
    );
    ensure!(done > before, "no request completed after the rotation");
    // The long-lived connection is still the one from before the rotation, and still works.
    let mut c = long_lived;
    c.kv.range(RangeRequest {
        key: b"rot/0".to_vec().into(),
        ..Default::default()
    })
    .await?;
    Ok(())
}

fn first_cert_der(path: &Path) -> Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    let cert = rustls_pki_types::CertificateDer::pem_file_iter(path)?
        .next()
        .context("no certificate")??;
    Ok(cert.to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_tls_files_stop_startup_naming_option_and_file() -> Result<()> {
    let pki = TestPki::new("main")?;
    let a = pki.server("a", "a")?;
    let b = pki.server("b", "b")?;
    let garbage = pki.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate")?;
    let missing = pki.dir().join("missing.pem");
    let cases = [
        (
            format!("[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n", missing, a.key),
            "server.tls.cert_file",
            missing.clone(),
        ),
        (
            format!("[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n", a.cert, b.key),
            "server.tls.key_file",
            b.key.clone(),
        ),
        (
            format!(
                "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\nclient_auth = \"required\"\n",
                a.cert, a.key, garbage
            ),
            "server.tls.client_ca_file",
            garbage.clone(),
        ),
        (
            format!("[upstream.tls]\nca_file = {:?}\n", garbage),
            "upstream.tls.ca_file",
            garbage.clone(),
        ),
    ];
    for (toml, option, file) in cases {
        let path = write_config(pki.dir(), &toml)?;
        let started = Keygate::start(
            &["http://127.0.0.1:1".to_string()],
            &["--config", path.to_str().unwrap_or_default()],
        )
        .await;
        let err = match started {
            Ok(_) => anyhow::bail!("keygate started with {toml}"),
            Err(e) => format!("{e:#}"),
        };
        let file = file.display().to_string();
        ensure!(
            err.contains(option) && err.contains(&file),
            "error for {option} should name it and {file}: {err}"
        );
    }
    Ok(())
}
