//! The wasmtime host on its own, with the example and faulty plugins built from plugins/:
//! decisions, the failure policy of each kind of fault, instance replacement, metrics, and the
//! audit pipeline's batches, rotation and drops (their costs: plugin_cost.rs).

use keygate::config::{AuditConfig, PluginConfig, PluginsConfig};
use keygate::method;
use keygate::policy::audit::{ServedBy, Verdict};
use keygate::policy::authorizer::{Decision, Plugin};
use keygate::policy::engine::PluginEngine;
use keygate_proto::etcdserverpb::PutRequest;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::*;

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
    // Other tests may share the CPUs, so the calibration can undershoot: add busy threads until
    // the call's wall time passes its limit, and check it is allowed every time.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut slowest = Duration::ZERO;
    let mut looping = None;
    for hogs_per_cpu in [4, 8, 16, 32] {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hogs: Vec<_> = (0..cpus * hogs_per_cpu)
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
        if looping.is_none() {
            looping = Some(timed("loop".into()).0);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for hog in hogs {
            hog.join().expect("hog");
        }
        assert!(
            matches!(busy, Ok(Decision::Allow)),
            "{busy:?} after {wall:?}"
        );
        slowest = slowest.max(wall);
        if slowest > Duration::from_millis(30) {
            break;
        }
    }
    assert!(
        slowest > Duration::from_millis(30),
        "the busy threads did not slow the call past its limit ({slowest:?}): nothing was shown"
    );
    let looping = looping.expect("the loop ran");
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
    // A method name that is not etcd's: refused at init rather than never matching.
    let misspelt = PluginConfig {
        config: "cluster_methods = [\"Stats\"]".parse().expect("toml"),
        ..garbage
    };
    match Plugin::load(&engine.engine, &misspelt, &metrics) {
        Err(e) => assert!(
            e.to_string()
                .contains("cluster_methods: \"Stats\" is not one of etcd's methods"),
            "{e}"
        ),
        Ok(_) => panic!("an unknown method name must refuse the plugin"),
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
            .finish(
                pending,
                Some(&anyone),
                Verdict::Allow,
                Ok(Some(7)),
                ServedBy::Upstream,
            )
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
            .finish(
                pending,
                Some(&anyone),
                Verdict::Allow,
                Ok(None),
                ServedBy::Upstream,
            )
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
