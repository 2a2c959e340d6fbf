//! Hot reload under load: a plugin file replaced while clients read and write through keygate.
//! No read fails across the swap; writes are refused before it and accepted from it on; a
//! broken new version is refused and the working one stays.

use anyhow::{ensure, Context, Result};
use keygate_proto::etcdserverpb::{PutRequest, RangeRequest};
use keygate_tests::plugins::plugins_dir;
use keygate_tests::{EtcdCluster, Keygate};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Copies `from` over `to` atomically (a rename), as a deployment would.
fn install(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
    std::fs::rename(&tmp, to)?;
    Ok(())
}

/// keygate in front of `etcd` with `plugins` (TOML) as its configuration file, checking plugin
/// files every 100 ms.
async fn keygate_with(etcd: &EtcdCluster, dir: &std::path::Path, plugins: &str) -> Result<Keygate> {
    let config = dir.join("keygate.toml");
    std::fs::write(
        &config,
        format!("[plugins]\nreload_interval_ms = 100\n{plugins}"),
    )?;
    Keygate::start(
        &etcd.client_urls(),
        &["--config", config.to_str().unwrap_or_default()],
    )
    .await
}

/// Installs a broken version of the plugin at `live` and waits until keygate says it refused it.
async fn install_broken(kg: &Keygate, live: &std::path::Path) -> Result<()> {
    let broken = live.with_extension("broken");
    std::fs::write(&broken, b"\0asm but not a component")?;
    install(&broken, live)?;
    let refused = Instant::now();
    while !kg.log_tail(50).contains("new plugin version refused") {
        ensure!(
            refused.elapsed() < Duration::from_secs(10),
            "no refusal logged:\n{}",
            kg.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn put_allowed(
    kv: &mut keygate_proto::etcdserverpb::kv_client::KvClient<tonic::transport::Channel>,
) -> Result<bool> {
    let put = PutRequest {
        key: b"reload/k".as_slice().into(),
        value: b"v".as_slice().into(),
        ..Default::default()
    };
    match kv.put(put).await {
        Ok(_) => Ok(true),
        Err(status) if status.code() == tonic::Code::PermissionDenied => Ok(false),
        Err(status) => anyhow::bail!("put failed unexpectedly: {status:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn swapping_a_plugin_under_load_changes_decisions_without_failures() -> Result<()> {
    let built = plugins_dir()?;
    let etcd = EtcdCluster::start(1).await?;
    let dir = tempfile::tempdir()?;
    let live = dir.path().join("authorizer.wasm");
    install(&built.join("read_only.wasm"), &live)?;
    // Anonymous callers (name "") may only read, under read-only; faulty allows them anything.
    let plugins = format!(
        "[[plugins.authorizers]]\npath = {:?}\nconfig = {{ identities = [\"\"] }}\n",
        live.display().to_string()
    );
    let kg = keygate_with(&etcd, dir.path(), &plugins).await?;
    let clients = kg.clients().await?;
    let mut kv = clients.kv.clone();
    ensure!(
        !put_allowed(&mut kv).await?,
        "read-only must refuse the put"
    );

    // Readers run throughout; any failure is counted.
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (stop, reads, failures) = (stop.clone(), reads.clone(), failures.clone());
        let mut kv = clients.kv.clone();
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let get = RangeRequest {
                    key: b"reload/k".as_slice().into(),
                    serializable: true,
                    ..Default::default()
                };
                match kv.range(get).await {
                    Ok(_) => reads.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    install(&built.join("faulty.wasm"), &live)?;
    let swapped = Instant::now();
    let mut allowed = false;
    while swapped.elapsed() < Duration::from_secs(10) {
        if put_allowed(&mut kv).await? {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(
        allowed,
        "the new version never took over; keygate:\n{}",
        kg.log_tail(20)
    );
    // From the swap on, the decision stays changed.
    for _ in 0..20 {
        ensure!(
            put_allowed(&mut kv).await?,
            "a put was refused after the swap"
        );
    }

    // A broken version is refused; the working one stays.
    install_broken(&kg, &live).await?;
    ensure!(put_allowed(&mut kv).await?, "the working version must stay");

    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await?;
    }
    let (reads, failures) = (
        reads.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    ensure!(
        reads > 0 && failures == 0,
        "reads {reads}, failures {failures}"
    );
    Ok(())
}

/// The audit log as (record's auditor, method, first key) per line: "audit-jsonl" or
/// "audit-marker".
fn audit_records(path: &std::path::Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut records = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("audit line {line:?}"))?;
        let text_of = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let record = if v.get("marker").is_some() {
            (
                "audit-marker".into(),
                text_of(&v["method"]),
                text_of(&v["key"]),
            )
        } else {
            (
                "audit-jsonl".into(),
                text_of(&v["method"]),
                text_of(&v["ranges"][0]["key"]),
            )
        };
        records.push(record);
    }
    Ok(records)
}

type Record = (String, String, String);

/// The audit log once `done` holds of it, within 10 s.
async fn wait_for(
    kg: &Keygate,
    log: &std::path::Path,
    what: &str,
    done: &dyn Fn(&[Record]) -> bool,
) -> Result<Vec<Record>> {
    let started = Instant::now();
    loop {
        let records = audit_records(log)?;
        if done(&records) {
            return Ok(records);
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s ({} records); keygate:\n{}",
            records.len(),
            kg.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn swapping_the_auditor_under_load_loses_no_record() -> Result<()> {
    let built = plugins_dir()?;
    let etcd = EtcdCluster::start(1).await?;
    let dir = tempfile::tempdir()?;
    let live = dir.path().join("auditor.wasm");
    let log = dir.path().join("audit.jsonl");
    install(&built.join("audit_jsonl.wasm"), &live)?;
    let plugins = format!(
        "[plugins.audit]\npath = {:?}\noutput = {:?}\nconfig = {{ methods = [\"Put\"] }}\n",
        live.display().to_string(),
        log.display().to_string()
    );
    let kg = keygate_with(&etcd, dir.path(), &plugins).await?;
    let clients = kg.clients().await?;

    // Writers put distinct keys throughout; every acknowledged put must be recorded once.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let stop = stop.clone();
        let mut kv = clients.kv.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("reload/audit/{w}/{n}");
                n += 1;
                let put = PutRequest {
                    key: key.clone().into_bytes().into(),
                    value: b"v".as_slice().into(),
                    ..Default::default()
                };
                kv.put(put).await.with_context(|| format!("put {key}"))?;
                acked.push(key);
            }
            anyhow::Ok(acked)
        }));
    }
    let is_marker = |r: &Record| r.0 == "audit-marker";
    wait_for(&kg, &log, "records from audit-jsonl", &|r| r.len() >= 50).await?;
    install(&built.join("audit_marker.wasm"), &live)?;
    let swapped = wait_for(&kg, &log, "records from the new auditor", &|r| {
        r.iter().filter(|r| is_marker(r)).count() >= 50
    })
    .await?;

    // A broken version is refused; the working one goes on recording.
    install_broken(&kg, &live).await?;
    let markers_then = swapped.iter().filter(|r| is_marker(r)).count();
    wait_for(&kg, &log, "records after the refusal", &|r| {
        r.iter().filter(|r| is_marker(r)).count() >= markers_then + 50
    })
    .await?;

    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await??);
    }
    let records = wait_for(&kg, &log, "every acknowledged put recorded", &|r| {
        r.len() >= acked.len()
    })
    .await?;
    // Once the new auditor took over, the old one wrote nothing more.
    let first_marker = records.iter().position(is_marker).unwrap_or(records.len());
    ensure!(
        records[first_marker..].iter().all(is_marker),
        "audit-jsonl records after the swap"
    );
    let mut recorded: Vec<&str> = records
        .iter()
        .map(|(_, method, key)| {
            ensure!(method == "Put", "record of {method}");
            Ok(key.as_str())
        })
        .collect::<Result<_>>()?;
    recorded.sort_unstable();
    acked.sort_unstable();
    ensure!(
        recorded == acked.iter().map(String::as_str).collect::<Vec<_>>(),
        "{} puts acknowledged, {} recorded: lost or repeated records across the swap",
        acked.len(),
        recorded.len()
    );
    Ok(())
}
