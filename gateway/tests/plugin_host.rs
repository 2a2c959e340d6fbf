//! The wasmtime host on its own, with the example and faulty plugins built from plugins/:
//! decisions, the failure policy of each kind of fault, instance replacement, metrics, and the
//! per-call cost of authorize on a reused instance.

use keygate::config::{AuditConfig, PluginConfig, PluginsConfig};
use keygate::describe::Description;
use keygate::identity::{Identity, Source};
use keygate::method;
use keygate::metrics::PluginMetrics;
use keygate::policy::authorizer::{Decision, Plugin};
use keygate::policy::engine::PluginEngine;
use keygate::policy::{Failure, Policy};
use keygate_proto::etcdserverpb::{PutRequest, RangeRequest};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A plugin engine as keygate makes one, caching compiled components in `cache_dir`.
fn engine(cache_dir: &str) -> Arc<PluginEngine> {
    Arc::new(PluginEngine::new(cache_dir).expect("engine"))
}

/// The authorizer chain of `config` on an engine of its own.
fn load_policy(
    config: &PluginsConfig,
    metrics: &PluginMetrics,
) -> Result<Option<Policy>, keygate::policy::PolicyError> {
    Policy::load(config, &engine(&config.cache_dir), metrics)
}

/// Builds the plugins once per test binary; returns the directory of the .wasm files.
fn plugins() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = std::process::Command::new("bash")
            .arg(root.join("scripts/build-plugins.sh"))
            .output();
        match out {
            Ok(out) if out.status.success() => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
            }
            Ok(out) => panic!(
                "scripts/build-plugins.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("scripts/build-plugins.sh: {e}"),
        }
    })
    .clone()
}

fn plugin_config(file: &str, config: &str) -> PluginConfig {
    PluginConfig {
        path: plugins().join(file).to_string_lossy().into_owned(),
        config: config.parse().unwrap_or_else(|e| panic!("{config}: {e}")),
        timeout_ms: 20,
        memory_mib: 8,
        ..PluginConfig::default()
    }
}

fn who(name: &str) -> Identity {
    Identity {
        source: Source::Certificate,
        name: name.into(),
        cert: None,
        peer: None,
    }
}

fn get(key: &'static [u8]) -> Description {
    let r = RangeRequest {
        key: key.into(),
        ..Default::default()
    };
    Description::of(&method::RANGE, &r)
}

fn put(key: &'static [u8]) -> Description {
    let r = PutRequest {
        key: key.into(),
        value: b"v".as_slice().into(),
        ..Default::default()
    };
    Description::of(&method::PUT, &r)
}

fn metrics() -> (prometheus::Registry, PluginMetrics) {
    let registry = prometheus::Registry::new();
    let metrics = PluginMetrics::register(&registry).expect("metrics");
    (registry, metrics)
}

#[test]
fn faults_get_the_failure_policy_and_a_fresh_instance() {
    let engine = PluginEngine::new("").expect("engine");
    let (_registry, metrics) = metrics();
    let plugin = Plugin::load(&engine.engine, &plugin_config("faulty.wasm", ""), &metrics)
        .expect("faulty loads");
    let anyone = who("anyone");
    for (key, expected) in [
        (&b"loop"[..], "deadline"),
        // A Rust panic first reads RUST_BACKTRACE, a WASI import the plugin is not given.
        (b"panic", "import"),
        (b"oom", "memory"),
    ] {
        let started = Instant::now();
        let failure = match plugin.authorize_description(&anyone, &get(Box::leak(key.into()))) {
            Err(failure) => failure,
            Ok(decision) => panic!("{key:?}: expected a failure, got {decision:?}"),
        };
        assert_eq!(failure.kind(), expected, "{key:?}: {failure}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{key:?} took {:?}",
            started.elapsed()
        );
        // The next request gets a working instance.
        let next = plugin.authorize_description(&anyone, &get(b"fine"));
        assert!(matches!(next, Ok(Decision::Allow)), "{next:?}");
    }
    let deadline = metrics.deadline_hits.with_label_values(&["faulty"]).get();
    assert_eq!(deadline, 1);
    for kind in ["deadline", "import", "memory"] {
        assert_eq!(metrics.traps.with_label_values(&["faulty", kind]).get(), 1);
    }
    // One instance at load, one after each of the three faults.
    assert_eq!(metrics.instances.with_label_values(&["faulty"]).get(), 4);
}

/// The time limit counts the call's CPU time, not the wall time it spent waiting for a CPU: a
/// call that needs a third of its limit is not stopped when busy threads make it take longer
/// than its limit, and a call that loops still is.
#[test]
fn a_call_that_waits_for_a_cpu_is_not_stopped_at_its_time_limit() {
    let engine = PluginEngine::new("").expect("engine");
    let (_registry, metrics) = metrics();
    let faulty = PluginConfig {
        timeout_ms: 30,
        ..plugin_config("faulty.wasm", "")
    };
    let plugin = Plugin::load(&engine.engine, &faulty, &metrics).expect("faulty loads");
    let anyone = who("anyone");
    let timed = |key: String| {
        let started = Instant::now();
        let result =
            plugin.authorize_description(&anyone, &get(Box::leak(key.into_bytes().into())));
        (result, started.elapsed())
    };
    // Work that takes about 10 ms on this machine when it has a CPU to itself.
    let mut n: u64 = 1 << 16;
    while timed(format!("spin/{n}")).1 < Duration::from_millis(10) {
        n *= 2;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs: Vec<_> = (0..cpus * 4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::black_box(0u64);
                }
            })
        })
        .collect();
    let (busy, wall) = timed(format!("spin/{n}"));
    let (looping, _) = timed("loop".into());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for hog in hogs {
        hog.join().expect("hog");
    }
    assert!(
        wall > Duration::from_millis(30),
        "the busy threads did not slow the call past its limit ({wall:?}): nothing was shown"
    );
    assert!(
        matches!(busy, Ok(Decision::Allow)),
        "{busy:?} after {wall:?}"
    );
    match looping {
        Err(failure) => assert_eq!(failure.kind(), "deadline", "{failure}"),
        Ok(decision) => panic!("a loop must be stopped, got {decision:?}"),
    }
}

#[test]
fn an_init_that_never_returns_is_refused_at_its_time_limit() {
    let engine = PluginEngine::new("").expect("engine");
    let (_registry, metrics) = metrics();
    let looping = PluginConfig {
        init_timeout_ms: 200,
        ..plugin_config("faulty.wasm", "loop_init = true")
    };
    let started = Instant::now();
    match Plugin::load(&engine.engine, &looping, &metrics) {
        Err(e) => assert!(e.to_string().contains("time limit reached"), "{e}"),
        Ok(_) => panic!("an init that loops must refuse the plugin"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_secs(5),
        "refused after {took:?}: init_timeout_ms is 200"
    );
}

#[test]
fn init_errors_refuse_the_plugin() {
    let engine = PluginEngine::new("").expect("engine");
    let (_registry, metrics) = metrics();
    let bad = plugin_config("faulty.wasm", "fail_init = \"no tenants configured\"");
    match Plugin::load(&engine.engine, &bad, &metrics) {
        Err(e) => assert!(e.to_string().contains("no tenants configured"), "{e}"),
        Ok(_) => panic!("a failing init must refuse the plugin"),
    }
    let garbage = plugin_config("tenant-isolation.wasm", "tenants = 3");
    let garbage = PluginConfig {
        path: plugins()
            .join("tenant_isolation.wasm")
            .to_string_lossy()
            .into_owned(),
        ..garbage
    };
    match Plugin::load(&engine.engine, &garbage, &metrics) {
        Err(e) => assert!(e.to_string().contains("invalid configuration"), "{e}"),
        Ok(_) => panic!("bad configuration must refuse the plugin"),
    }
    let not_wasm = std::env::temp_dir().join(format!("kg-not-wasm-{}", std::process::id()));
    std::fs::write(&not_wasm, b"not a component").expect("write");
    let missing = PluginConfig {
        path: not_wasm.to_string_lossy().into_owned(),
        ..PluginConfig::default()
    };
    assert!(Plugin::load(&engine.engine, &missing, &metrics).is_err());
    let _ = std::fs::remove_file(not_wasm);
}

#[test]
fn chain_first_deny_wins_and_failures_deny() {
    let (_registry, metrics) = metrics();
    let config = PluginsConfig {
        authorizers: vec![
            plugin_config(
                "tenant_isolation.wasm",
                "admins = [\"root\"]\n[tenants]\nalice = \"/t/alice/\"",
            ),
            plugin_config("deny_prefix.wasm", "prefixes = [\"/t/alice/locked/\"]"),
            plugin_config("faulty.wasm", ""),
        ],
        ..PluginsConfig::default()
    };
    let policy = load_policy(&config, &metrics)
        .expect("chain loads")
        .expect("some plugins");
    let alice = who("alice");
    assert!(policy.authorize(&alice, &put(b"/t/alice/x")).is_ok());
    let outside = policy
        .authorize(&alice, &get(b"/t/bob/x"))
        .expect_err("outside");
    assert_eq!(outside.code(), tonic::Code::PermissionDenied);
    assert_eq!(outside.message(), "etcdserver: permission denied");
    let locked = policy
        .authorize(&alice, &put(b"/t/alice/locked/k"))
        .expect_err("locked");
    assert!(locked.message().contains("is protected"), "{locked:?}");
    assert!(policy
        .authorize(&who("root"), &put(b"/t/alice/locked/k"))
        .is_err());
    assert!(policy.authorize(&who("root"), &put(b"/anything")).is_ok());
    // The third plugin fails on "panic…" keys: deny, the failure policy.
    let failed = policy
        .authorize(&who("root"), &put(b"panic"))
        .expect_err("fails closed");
    assert_eq!(failed.code(), tonic::Code::PermissionDenied);
    assert!(policy
        .authorize(&who("mallory"), &get(b"/t/alice/x"))
        .is_err());
    assert_eq!(
        metrics
            .decisions
            .with_label_values(&["faulty", "failure"])
            .get(),
        1
    );
}

#[test]
fn fail_open_plugins_allow_on_failure() {
    let (_registry, metrics) = metrics();
    let mut faulty = plugin_config("faulty.wasm", "");
    faulty.on_failure = "allow".into();
    let config = PluginsConfig {
        authorizers: vec![faulty],
        ..PluginsConfig::default()
    };
    let policy = load_policy(&config, &metrics)
        .expect("loads")
        .expect("some");
    assert!(policy.authorize(&who("x"), &get(b"loop")).is_ok());
    assert!(policy.authorize(&who("x"), &get(b"deny")).is_err());
}

#[test]
fn namespaces_of_a_chain_nest_in_order() {
    let (_registry, metrics) = metrics();
    let config = PluginsConfig {
        authorizers: vec![
            plugin_config(
                "tenant_isolation.wasm",
                "mode = \"namespace\"\n[tenants]\nalice = \"/t/alice/\"",
            ),
            plugin_config(
                "tenant_isolation.wasm",
                "mode = \"namespace\"\n[tenants]\nalice = \"app/\"",
            ),
        ],
        ..PluginsConfig::default()
    };
    let policy = load_policy(&config, &metrics)
        .expect("loads")
        .expect("some");
    let namespace = policy
        .authorize(&who("alice"), &get(b"x"))
        .expect("allowed")
        .expect("in a namespace");
    assert_eq!(namespace.prefix().as_ref(), b"/t/alice/app/");
    assert!(policy.authorize(&who("bob"), &get(b"x")).is_err());
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let dir = tempfile_dir();
    let (_registry, metrics) = metrics();
    let config = PluginsConfig {
        cache_dir: dir.to_string_lossy().into_owned(),
        authorizers: vec![plugin_config("read_only.wasm", "identities = [\"viewer\"]")],
        ..PluginsConfig::default()
    };
    let first = Instant::now();
    drop(load_policy(&config, &metrics).expect("loads"));
    let cold = first.elapsed();
    let second = Instant::now();
    let policy = load_policy(&config, &metrics)
        .expect("loads")
        .expect("some");
    let warm = second.elapsed();
    println!("read-only load: cold {cold:?}, from the disk cache {warm:?}");
    let files = count_files(&dir);
    assert!(files > 0, "nothing cached in {}", dir.display());
    assert!(policy.authorize(&who("viewer"), &put(b"k")).is_err());
    assert!(policy.authorize(&who("viewer"), &get(b"k")).is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kg-plugin-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("cache dir");
    dir
}

fn count_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                count_files(&path)
            } else {
                1
            }
        })
        .sum()
}

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
    let _ = Failure::Deadline;
}

/// audit-jsonl writing every request to `output`, rotated at `rotate_bytes`.
fn audit_jsonl_config(output: &std::path::Path, rotate_bytes: u64) -> AuditConfig {
    AuditConfig {
        path: plugins()
            .join("audit_jsonl.wasm")
            .to_string_lossy()
            .into_owned(),
        output: output.to_string_lossy().into_owned(),
        rotate_bytes,
        ..AuditConfig::default()
    }
}

/// The audit pipeline on its own: every event reaches the auditor, records are written and the
/// file rotates; with on_full = "drop", a flood past the queue is counted, never silent.
#[tokio::test(flavor = "multi_thread")]
async fn audit_batches_write_rotate_and_count_drops() {
    use keygate::policy::audit::Audit;
    let dir = std::env::temp_dir().join(format!("kg-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let out = dir.join("audit.jsonl");
    let (_registry, metrics) = metrics();
    let config = audit_jsonl_config(&out, 2000);
    let audit = Audit::start(&config, &engine(""), &metrics)
        .expect("starts")
        .expect("some");
    let anyone = who("anyone");
    let put = PutRequest {
        key: b"/k".as_slice().into(),
        ..Default::default()
    };
    for _ in 0..50 {
        let pending = Audit::begin(&method::PUT, &put);
        audit
            .finish(pending, Some(&anyone), "allow", Ok(Some(7)), "upstream")
            .await;
    }
    audit.flush().await;
    assert_eq!(
        metrics.audit_events.with_label_values(&["batched"]).get(),
        50
    );
    let current = std::fs::read_to_string(&out).expect("audit file");
    let rotated = std::fs::read_to_string(dir.join("audit.jsonl.1")).expect("rotated file");
    assert!(current.len() <= 2000 + 400 && !rotated.is_empty());
    assert!(current.lines().all(|l| l.contains("\"name\":\"anyone\"")));

    let dropping = AuditConfig {
        output: dir.join("dropping.jsonl").to_string_lossy().into_owned(),
        queue: 1,
        on_full: "drop".into(),
        ..config
    };
    let (_registry, metrics) = self::metrics();
    let audit = Audit::start(&dropping, &engine(""), &metrics)
        .expect("starts")
        .expect("some");
    for _ in 0..2000 {
        let pending = Audit::begin(&method::PUT, &put);
        audit
            .finish(pending, Some(&anyone), "allow", Ok(None), "upstream")
            .await;
    }
    audit.flush().await;
    let batched = metrics.audit_events.with_label_values(&["batched"]).get();
    let dropped = metrics.audit_events.with_label_values(&["dropped"]).get();
    assert_eq!(
        batched + dropped,
        2000,
        "batched {batched}, dropped {dropped}"
    );
    let _ = std::fs::remove_dir_all(dir);
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
/// `cargo test --release -p keygate --test plugin_host audit_event_cost -- --ignored --nocapture`
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
    let alice = Identity {
        peer: Some("127.0.0.1:40112".into()),
        ..who("alice")
    };
    let request = RangeRequest {
        key: b"/registry/pods/default/web-0".as_slice().into(),
        serializable: true,
        ..Default::default()
    };
    let events = 200_000u64;
    for round in 0..2 {
        let before = thread_cpu("audit").expect("the audit thread");
        for _ in 0..events {
            let pending = Audit::begin(&method::RANGE, &request);
            audit
                .finish(pending, Some(&alice), "allow", Ok(Some(1234)), "mirror")
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
/// `cargo test --release -p keygate --test plugin_host on_batch_cost -- --ignored --nocapture`
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
    let alice = Identity {
        peer: Some("127.0.0.1:40112".into()),
        ..who("alice")
    };
    let request = RangeRequest {
        key: b"/registry/pods/default/web-0".as_slice().into(),
        serializable: true,
        ..Default::default()
    };
    let description = Description::of(&method::RANGE, &request);
    let event = || AuditEventView {
        time_us: 1_764_000_000_000_000,
        identity: identity_view(Some(&alice)),
        request: request_view(&description),
        decision: "allow",
        status_code: 0,
        status_message: "",
        revision: 1234,
        latency_us: 85,
        served_by: "mirror",
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
