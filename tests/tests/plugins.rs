//! Authorization plugins end to end: etcdctl through keygate to real etcd, with the example
//! plugins (tenant isolation, read-only roles, protected prefixes) and a faulty one.

use crate::plugins_common;

use anyhow::{ensure, Context, Result};
use keygate_tests::pki::TestPki;
use keygate_tests::plugins::plugin_path;
use keygate_tests::EtcdCluster;
use plugins_common::{denial, keygate, As, LINE_TIMEOUT};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn tenants_and_read_only_identities_through_etcdctl() -> Result<()> {
    let pki = TestPki::new("plugins")?;
    let etcd = EtcdCluster::start(1).await?;
    let plugins = format!(
        "[[plugins.authorizers]]\npath = {}\nconfig = {{ identities = [\"viewer\"] }}\n\
         [[plugins.authorizers]]\npath = {}\n\
         config = {{ admins = [\"root\", \"viewer\"], tenants = {{ alice = \"/tenants/alice/\" }} }}\n\
         [[plugins.authorizers]]\npath = {}\nconfig = {{ prefixes = [\"/protected/\"], except = [\"root\"] }}\n",
        plugin_path("read_only")?,
        plugin_path("tenant_isolation")?,
        plugin_path("deny_prefix")?,
    );
    let kg = keygate(&pki, &etcd, &plugins).await?;
    let alice = As::new(&kg, &pki, &pki.client("alice", "alice")?)?;
    let root = As::new(&kg, &pki, &pki.client("root", "root")?)?;
    let viewer = As::new(&kg, &pki, &pki.client("viewer", "viewer")?)?;
    let mallory = As::new(&kg, &pki, &pki.client("mallory", "mallory")?)?;

    // A tenant works inside its prefix...
    ensure!(alice.ok(&["put", "/tenants/alice/a", "1"]).await? == "OK\n");
    ensure!(alice.ok(&["get", "/tenants/alice/a"]).await? == "/tenants/alice/a\n1\n");
    ensure!(alice
        .ok(&["get", "--prefix", "/tenants/alice/"])
        .await?
        .contains("1"));
    alice.ok(&["del", "/tenants/alice/a"]).await?;
    // ...and nowhere else, through any RPC.
    root.ok(&["put", "/tenants/bob/secret", "s"]).await?;
    alice.denied(&["get", "/tenants/bob/secret"]).await?;
    alice.denied(&["get", "--prefix", "/tenants/"]).await?;
    alice.denied(&["put", "/elsewhere", "x"]).await?;
    alice.denied(&["del", "--prefix", "/tenants/bob/"]).await?;
    alice.denied(&["member", "list"]).await?;
    alice.denied(&["compaction", "1"]).await?;
    let txn = "\nput /tenants/bob/secret stolen\n\n\n";
    let out = alice.run_stdin(&["txn"], txn).await?;
    ensure!(denial(&out), "txn: {out:?}");
    ensure!(
        root.ok(&["get", "/tenants/bob/secret", "--print-value-only"])
            .await?
            == "s\n"
    );
    // An unknown identity gets nothing.
    mallory.denied(&["get", "/tenants/alice/a"]).await?;
    // A large LIST root has just read twice (the second from the mirror's LIST cache) is still
    // put to the authorizers for everyone else.
    let big = "x".repeat(5000);
    root.ok(&["put", "/tenants/bob/big", &big]).await?;
    for _ in 0..2 {
        ensure!(root
            .ok(&["get", "--prefix", "/tenants/"])
            .await?
            .contains(&big));
    }
    mallory.denied(&["get", "--prefix", "/tenants/"]).await?;
    alice.denied(&["get", "--prefix", "/tenants/"]).await?;

    // A watch outside the prefix is refused as etcd refuses it; inside, it works.
    let mut denied = alice
        .ctl
        .spawn(&alice.args(&["watch", "/tenants/bob/secret"]))?;
    let out = denied
        .finish(LINE_TIMEOUT)
        .await
        .with_context(|| format!("denied watch did not end; keygate:\n{}", kg.log_tail(20)))?;
    ensure!(
        !out.success() && out.stderr.contains("permission denied"),
        "watch outside: {out:?}"
    );
    let mut watch = alice
        .ctl
        .spawn(&alice.args(&["watch", "/tenants/alice/w"]))?;
    let mut seen = String::new();
    for i in 0..20 {
        alice
            .ok(&["put", "/tenants/alice/w", &format!("v{i}")])
            .await?;
        if let Ok(line) = watch.next_line(Duration::from_millis(500)).await {
            seen = line;
            break;
        }
    }
    ensure!(seen == "PUT", "watch inside saw {seen:?}");
    watch.kill().await?;

    // A read-only identity reads everything and changes nothing.
    ensure!(
        viewer
            .ok(&["get", "/tenants/bob/secret", "--print-value-only"])
            .await?
            == "s\n"
    );
    viewer.denied(&["put", "k", "v"]).await?;
    viewer.denied(&["del", "/tenants/bob/secret"]).await?;
    viewer.denied(&["compaction", "1"]).await?;
    viewer.denied(&["lease", "grant", "60"]).await?;
    let out = viewer.run_stdin(&["txn"], "\nput k v\n\n\n").await?;
    ensure!(denial(&out), "viewer txn: {out:?}");
    ensure!(viewer
        .ok(&["endpoint", "status"])
        .await?
        .contains(kg.addr()));

    // Protected prefixes: no write, even inside a txn branch, except by root.
    viewer.denied(&["put", "/protected/x", "v"]).await?;
    let out = alice
        .run_stdin(&["txn"], "\n\nput /protected/x v\n\n")
        .await?;
    ensure!(denial(&out), "protected txn: {out:?}");
    root.ok(&["put", "/protected/x", "v"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_in_namespaces_through_etcdctl() -> Result<()> {
    let pki = TestPki::new("namespaces")?;
    let etcd = EtcdCluster::start(1).await?;
    let plugins = format!(
        "[[plugins.authorizers]]\npath = {}\n\
         config = {{ mode = \"namespace\", admins = [\"root\"], \
         tenants = {{ alice = \"/tenants/alice/\", bob = \"/tenants/bob/\" }} }}\n",
        plugin_path("tenant_isolation")?,
    );
    let kg = keygate(&pki, &etcd, &plugins).await?;
    let alice = As::new(&kg, &pki, &pki.client("alice", "alice")?)?;
    let bob = As::new(&kg, &pki, &pki.client("bob", "bob")?)?;
    let root = As::new(&kg, &pki, &pki.client("root", "root")?)?;

    // Each tenant has a keyspace of its own, rooted at "/"...
    alice.ok(&["put", "/config", "alice's"]).await?;
    bob.ok(&["put", "/config", "bob's"]).await?;
    ensure!(alice.ok(&["get", "/config"]).await? == "/config\nalice's\n");
    ensure!(bob.ok(&["get", "--prefix", ""]).await? == "/config\nbob's\n");
    ensure!(alice.ok(&["get", "--from-key", ""]).await? == "/config\nalice's\n");
    // ...which the admin sees where it is stored.
    let all = root
        .ok(&["get", "--prefix", "/tenants/", "--keys-only"])
        .await?;
    ensure!(
        all.split_whitespace().collect::<Vec<_>>()
            == ["/tenants/alice//config", "/tenants/bob//config"],
        "stored: {all:?}"
    );
    // A txn stays inside too: bob's compare sees his own key, not alice's.
    let out = bob
        .run_stdin(
            &["txn"],
            "value(\"/config\") = \"alice's\"\n\nput /hit yes\n\nput /miss yes\n\n",
        )
        .await?
        .ok()?;
    ensure!(out.stdout.starts_with("FAILURE"), "txn: {out:?}");
    ensure!(
        root.ok(&["get", "/tenants/bob//miss", "--print-value-only"])
            .await?
            == "yes\n"
    );

    // Watches see only the tenant's own events, without the prefix.
    let mut watch = alice
        .ctl
        .spawn(&alice.args(&["watch", "--prefix", "/", "--prev-kv"]))?;
    let mut lines = Vec::new();
    for i in 0..20 {
        bob.ok(&["put", "/config", &format!("b{i}")]).await?;
        alice.ok(&["put", "/config", &format!("a{i}")]).await?;
        if let Ok(got) = watch.lines(5, Duration::from_millis(500)).await {
            lines = got;
            break;
        }
    }
    ensure!(
        lines.len() == 5 && lines[0] == "PUT" && lines[1] == "/config" && lines[3] == "/config",
        "alice's watch: {lines:?}"
    );
    ensure!(
        !lines
            .iter()
            .any(|l| l.contains("tenants") || l.starts_with('b')),
        "{lines:?}"
    );
    watch.kill().await?;

    // Leases: a tenant's own, with its own keys; another's does not exist for it.
    let granted = alice.ok(&["lease", "grant", "60"]).await?;
    let id = granted
        .split_whitespace()
        .nth(1)
        .context("lease id")?
        .to_string();
    alice.ok(&["put", "/leased", "v", "--lease", &id]).await?;
    let ttl = alice.ok(&["lease", "timetolive", &id, "--keys"]).await?;
    ensure!(
        ttl.contains("attached keys([/leased])"),
        "alice's lease: {ttl}"
    );
    let ttl = bob.ok(&["lease", "timetolive", &id, "--keys"]).await?;
    ensure!(
        ttl.contains("already expired"),
        "bob looking at alice's lease: {ttl}"
    );
    let out = bob.run(&["lease", "revoke", &id]).await?;
    ensure!(
        out.stderr.contains("requested lease not found"),
        "bob's revoke: {out:?}"
    );
    let out = bob.run(&["put", "/stolen", "v", "--lease", &id]).await?;
    ensure!(
        out.stderr.contains("requested lease not found"),
        "bob's attach: {out:?}"
    );
    ensure!(alice.ok(&["get", "/leased", "--print-value-only"]).await? == "v\n");

    // Locks and elections are named inside the namespace.
    let mut lock = alice.ctl.spawn(&alice.args(&["lock", "/jobs"]))?;
    let held = lock.next_line(LINE_TIMEOUT).await?;
    ensure!(held.starts_with("/jobs/"), "alice's lock key: {held:?}");
    let mut other = bob.ctl.spawn(&bob.args(&["lock", "/jobs"]))?;
    let held = other
        .next_line(LINE_TIMEOUT)
        .await
        .context("bob's lock is his own")?;
    ensure!(held.starts_with("/jobs/"), "bob's lock key: {held:?}");
    lock.kill().await?;
    other.kill().await?;
    let mut elect = alice
        .ctl
        .spawn(&alice.args(&["elect", "/leader", "alice-1"]))?;
    let leader = elect.lines(2, LINE_TIMEOUT).await?;
    ensure!(
        leader[0].starts_with("/leader/") && leader[1] == "alice-1",
        "{leader:?}"
    );
    // Observers see their own namespace's leader only: alice's, not bob's (he has none).
    let mut listen = alice
        .ctl
        .spawn(&alice.args(&["elect", "--listen", "/leader"]))?;
    let seen = listen.lines(2, LINE_TIMEOUT).await?;
    ensure!(
        seen[0].starts_with("/leader/") && seen[1] == "alice-1",
        "{seen:?}"
    );
    let mut silent = bob
        .ctl
        .spawn(&bob.args(&["elect", "--listen", "/leader"]))?;
    silent.expect_silence(Duration::from_secs(1)).await?;
    for spawned in [&mut listen, &mut silent, &mut elect] {
        spawned.kill().await?;
    }

    // Cluster-wide RPCs are not a tenant's; Status and MemberList reveal no key and are.
    alice.denied(&["compaction", "1"]).await?;
    alice.denied(&["defrag"]).await?;
    alice.denied(&["lease", "list"]).await?;
    alice
        .denied(&[
            "snapshot",
            "save",
            &pki.dir().join("snap.db").to_string_lossy(),
        ])
        .await?;
    alice.denied(&["user", "list"]).await?;
    alice.ok(&["member", "list"]).await?;
    ensure!(alice.ok(&["endpoint", "status"]).await?.contains(kg.addr()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn faulty_plugins_fail_closed_within_their_time_limit() -> Result<()> {
    let pki = TestPki::new("faulty")?;
    let etcd = EtcdCluster::start(1).await?;
    let plugins = format!(
        "[[plugins.authorizers]]\npath = {}\ntimeout_ms = 50\nmemory_mib = 8\n",
        plugin_path("faulty")?,
    );
    let kg = keygate(&pki, &etcd, &plugins).await?;
    let anyone = As::new(&kg, &pki, &pki.client("anyone", "anyone")?)?;
    for key in ["loop1", "panic1", "oom1", "deny1"] {
        let started = Instant::now();
        anyone.denied(&["put", key, "v"]).await?;
        ensure!(
            started.elapsed() < Duration::from_secs(5),
            "{key} took {:?}",
            started.elapsed()
        );
        // Other requests are unaffected: a fresh instance answers them.
        ensure!(anyone.ok(&["put", "fine", key]).await? == "OK\n");
    }
    ensure!(anyone.ok(&["get", "fine", "--print-value-only"]).await? == "deny1\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_whose_init_fails_stops_keygate_with_its_reason() -> Result<()> {
    let pki = TestPki::new("init")?;
    let etcd = EtcdCluster::start(1).await?;
    let plugins = format!(
        "[[plugins.authorizers]]\nname = \"broken\"\npath = {}\nconfig = {{ fail_init = \"no tenants\" }}\n",
        plugin_path("faulty")?,
    );
    match keygate(&pki, &etcd, &plugins).await {
        Ok(_) => anyhow::bail!("keygate started with a plugin whose init fails"),
        Err(e) => {
            let message = format!("{e:#}");
            ensure!(
                message.contains("plugin broken: init failed: no tenants"),
                "{message}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_jsonl_writes_one_record_per_request() -> Result<()> {
    let pki = TestPki::new("audit")?;
    let etcd = EtcdCluster::start(1).await?;
    let log = pki.dir().join("audit.jsonl");
    let plugins = format!(
        "[[plugins.authorizers]]\npath = {}\nconfig = {{ identities = [\"viewer\"] }}\n\
         [plugins.audit]\npath = {}\noutput = {:?}\nconfig = {{ key_segments = 2 }}\n",
        plugin_path("read_only")?,
        plugin_path("audit_jsonl")?,
        log.display().to_string(),
    );
    let mut kg = keygate(&pki, &etcd, &plugins).await?;
    let alice = As::new(&kg, &pki, &pki.client("alice", "alice")?)?;
    let viewer = As::new(&kg, &pki, &pki.client("viewer", "viewer")?)?;
    alice.ok(&["put", "/app/config/x", "12345"]).await?;
    alice.ok(&["get", "/app/config/x"]).await?;
    viewer.denied(&["put", "/app/config/y", "v"]).await?;
    viewer
        .ok(&["get", "/app/config/x", "--consistency=s"])
        .await?;
    // A watch stream: one record when it opens, one for each watch it creates.
    let mut watch = alice.ctl.spawn(&alice.args(&["watch", "/app/config/x"]))?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    watch.kill().await?;
    // A keep-alive stream: one record when it opens, one for each keep-alive.
    let granted = alice.ok(&["lease", "grant", "60"]).await?;
    let lease = granted
        .split_whitespace()
        .nth(1)
        .and_then(|hex| i64::from_str_radix(hex, 16).ok())
        .with_context(|| format!("lease grant said {granted:?}"))?;
    alice
        .ok(&["lease", "keep-alive", "--once", &format!("{lease:x}")])
        .await?;
    // SIGTERM: keygate drains, then flushes the audit queue before it exits.
    kg.stop().await?;
    let text = std::fs::read_to_string(&log).context("audit log")?;
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("audit records are JSON lines")?;
    let summary: Vec<(String, String, String, u64)> = records
        .iter()
        .map(|r| {
            (
                r["identity"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r["method"].as_str().unwrap_or_default().to_string(),
                r["decision"].as_str().unwrap_or_default().to_string(),
                r["status_code"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    let expected: Vec<(String, String, String, u64)> = [
        ("alice", "Put", "allow", 0),
        ("alice", "Range", "allow", 0),
        ("viewer", "Put", "deny", 7),
        ("viewer", "Range", "allow", 0),
        ("alice", "Watch", "allow", 0),
        ("alice", "Watch", "allow", 0),
        ("alice", "LeaseGrant", "allow", 0),
        ("alice", "LeaseKeepAlive", "allow", 0),
        ("alice", "LeaseKeepAlive", "allow", 0),
    ]
    .iter()
    .map(|(w, m, d, c)| (w.to_string(), m.to_string(), d.to_string(), *c))
    .collect();
    ensure!(summary == expected, "audit records: {text}");
    let put = &records[0];
    ensure!(
        put["ranges"][0]["key"] == "/app/…" && put["value_bytes"] == 5,
        "{put}"
    );
    ensure!(put["revision"].as_i64().unwrap_or(0) > 0, "{put}");
    ensure!(records[3]["served_by"] == "mirror", "{}", records[3]);
    // The stream's opening, then its watch creation with the key it watches.
    ensure!(records[4]["served_by"] == "hub", "{}", records[4]);
    ensure!(
        records[5]["ranges"][0]["key"] == "/app/…" && records[5]["served_by"] == "hub",
        "{}",
        records[5]
    );
    // The keep-alive stream's opening, then its one keep-alive, of the lease granted.
    let keep_alive = &records[8];
    ensure!(records[7]["served_by"] == "hub", "{}", records[7]);
    ensure!(
        keep_alive["lease"] == lease && keep_alive["served_by"] == "hub",
        "{keep_alive}"
    );
    ensure!(
        keep_alive["revision"].as_i64().unwrap_or(0) > 0,
        "{keep_alive}"
    );
    Ok(())
}
