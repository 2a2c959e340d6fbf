//! What plugins cost: authorize on a reused instance (a loose bound, run in CI), and the
//! audit worker's and the auditor call's CPU per event (measurements, run by hand in release).

mod common;
use common::*;
use keygate::config::PluginsConfig;
use keygate::describe::Description;
use keygate::method;
use keygate::policy::audit::{ServedBy, Verdict};
use keygate::policy::engine::PluginEngine;
use std::time::{Duration, Instant};

/// The per-call cost of authorize on a reused instance (tenant-isolation, a Range inside the
/// tenant's prefix), conversion of the request included. Printed; the bound is loose so a
/// busy CI machine does not fail it.
#[test]
fn authorize_call_cost() {
    let (_registry, metrics) = metrics();
    let config = PluginsConfig {
        authorizers: vec![plugin_config(
            "tenant_isolation.wasm",
            "[tenants]\nalice = \"/t/alice/\"",
        )],
        ..PluginsConfig::default()
    };
    let policy = load_policy(&config, &metrics)
        .expect("loads")
        .expect("some");
    let alice = who("alice");
    let request = get(b"/t/alice/key");
    let mut samples = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let started = Instant::now();
        let verdict = policy.authorize(&alice, &request);
        samples.push(started.elapsed());
        assert!(verdict.is_ok());
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    println!("authorize (tenant-isolation, reused instance): median {median:?}, p99 {p99:?}");
    assert!(median < Duration::from_micros(50), "median {median:?}");
}

/// CPU time the thread named `name` of this process has used so far (Linux schedstat).
fn thread_cpu(name: &str) -> Option<Duration> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            let ns = stat.split_whitespace().next()?.parse().ok()?;
            return Some(Duration::from_nanos(ns));
        }
    }
    None
}

/// The audit worker's CPU per event (audit-jsonl, every request recorded, written to a file):
/// the events' lowering into the plugin, its JSON, the records' lifting and the writes.
/// `cargo test --release -p keygate --test plugin_cost audit_event_cost -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement; run it on its own in release"]
async fn audit_event_cost() {
    use keygate::policy::audit::Audit;
    let dir = std::env::temp_dir().join(format!("kg-audit-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (_registry, metrics) = metrics();
    let config = audit_jsonl_config(&dir.join("audit.jsonl"), 100 << 20);
    let audit = Audit::start(&config, &engine(""), &metrics)
        .expect("starts")
        .expect("some");
    let (alice, request) = pod_get();
    let events = 200_000u64;
    for round in 0..2 {
        let before = thread_cpu("audit").expect("the audit thread");
        for _ in 0..events {
            let pending = Audit::begin(&method::RANGE, &request);
            audit
                .finish(
                    pending,
                    Some(&alice),
                    Verdict::Allow,
                    Ok(Some(1234)),
                    ServedBy::Mirror,
                )
                .await;
        }
        audit.flush().await;
        let spent = thread_cpu("audit").expect("the audit thread") - before;
        println!(
            "round {round}: audit worker {:.2} µs of CPU per event",
            spent.as_secs_f64() * 1e6 / events as f64
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The auditor call alone: a batch of 256 events of a serializable get lowered into
/// audit-jsonl, its records and their lifting back, on a reused instance.
/// `cargo test --release -p keygate --test plugin_cost on_batch_cost -- --ignored --nocapture`
#[test]
#[ignore = "a measurement; run it on its own in release"]
fn on_batch_cost() {
    use keygate::policy::auditor::Auditor;
    use keygate::policy::convert::{identity_view, request_view, AuditEventView};
    let (_registry, metrics) = metrics();
    let out = std::env::temp_dir().join(format!("kg-batch-cost-{}", std::process::id()));
    let config = audit_jsonl_config(&out, 0);
    let engine = PluginEngine::new("").expect("engine");
    let mut auditor = Auditor::load(&engine.engine, &config, &metrics).expect("loads");
    let (alice, request) = pod_get();
    let description = Description::of(&method::RANGE, &request);
    let event = || AuditEventView {
        time_us: 1_764_000_000_000_000,
        identity: identity_view(Some(&alice)),
        request: request_view(&description),
        decision: Verdict::Allow,
        status_code: 0,
        status_message: "",
        revision: 1234,
        latency_us: 85,
        served_by: ServedBy::Mirror,
    };
    let batch: Vec<_> = (0..256).map(|_| event()).collect();
    let mut samples = Vec::new();
    for _ in 0..2_000 {
        let started = Instant::now();
        let records = auditor.on_batch(&batch).expect("records");
        samples.push(started.elapsed());
        assert_eq!(records.len(), batch.len());
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    println!(
        "on-batch (audit-jsonl, 256 events): median {:.2} µs per event",
        median.as_secs_f64() * 1e6 / batch.len() as f64
    );
    let _ = std::fs::remove_file(out);
}
