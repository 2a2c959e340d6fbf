//! The foundation's etcdctl session over TLS everywhere: `etcdctl --cacert --cert --key`
//! through keygate (terminating TLS, client certificates required) to an etcd cluster that
//! itself requires TLS and client certificates, compared command by command with the same
//! commands against an identical etcd directly (`DiffPair::start_tls`): keys, txn, watch,
//! leases with keep-alive, member list, endpoint health and status, snapshot, compaction,
//! defrag, alarms, lock and election.

use crate::etcdctl_common::{
    expect_stdout as expect, lease_id, lock_and_elect_transcript, LINE_TIMEOUT,
};
use anyhow::{ensure, Context, Result};
use keygate_tests::pki::TestPki;
use keygate_tests::DiffPair;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn the_etcdctl_session_over_tls_matches_etcd() -> Result<()> {
    let pki = TestPki::new("tls-etcdctl")?;
    let p = DiffPair::start_tls(1, &pki, "alice").await?;

    // Keys and a txn.
    expect(&p.same(&["put", "foo", "bar"]).await?, "OK\n")?;
    p.same(&["put", "foo2", "v2"]).await?.ok()?;
    expect(
        &p.same(&["get", "foo", "--prefix"]).await?,
        "foo\nbar\nfoo2\nv2\n",
    )?;
    p.same(&["get", "foo", "--prefix", "-w", "json"])
        .await?
        .ok()?;
    expect(&p.same(&["del", "foo2"]).await?, "1\n")?;
    let txn = "value(\"foo\") = \"bar\"\n\nput foo baz\nput t1 x\n\nput foo nope\n\n";
    let out = p.same_with_stdin(&["txn"], txn).await?;
    expect(&out, "SUCCESS\n\nOK\n\nOK\n")?;
    expect(
        &p.same(&["get", "foo", "--print-value-only"]).await?,
        "baz\n",
    )?;

    // A watch from an explicit revision on each side sees the same events.
    let mut seen = Vec::new();
    for ctl in [&p.direct, &p.gw] {
        let mut w = ctl.spawn(&["watch", "foo", "--prefix", "--prev-kv", "--rev=1"])?;
        seen.push(w.lines(8, LINE_TIMEOUT).await?);
        w.kill().await?;
    }
    ensure!(
        seen[0] == seen[1],
        "watch: direct {:?}, through keygate {:?}",
        seen[0],
        seen[1]
    );

    // A lease: grant, attach, keep-alive, time-to-live with keys, revoke.
    let (dg, gg) = (
        p.direct.run(&["lease", "grant", "60"]).await?,
        p.gw.run(&["lease", "grant", "60"]).await?,
    );
    keygate_tests::diff::check_same(&["lease", "grant", "60"], &dg, &gg)?;
    let (d, g) = (lease_id(&dg)?, lease_id(&gg)?);
    let (dl, gl) = (format!("--lease={d}"), format!("--lease={g}"));
    p.same_each(&["put", "lk", "v", &dl], &["put", "lk", "v", &gl])
        .await?
        .ok()?;
    let ka = p
        .same_each(
            &["lease", "keep-alive", "--once", &d],
            &["lease", "keep-alive", "--once", &g],
        )
        .await?;
    expect(&ka, &format!("lease {g} keepalived with TTL(60)\n"))?;
    let ttl = p
        .same_each(
            &["lease", "timetolive", &d, "--keys"],
            &["lease", "timetolive", &g, "--keys"],
        )
        .await?;
    ensure!(ttl.stdout.contains("attached keys([lk])"), "{ttl:?}");
    let revoke = p
        .same_each(&["lease", "revoke", &d], &["lease", "revoke", &g])
        .await?;
    expect(&revoke, &format!("lease {g} revoked\n"))?;

    // Cluster and maintenance.
    let members = p.gw.run(&["member", "list"]).await?.ok()?;
    ensure!(members.stdout.contains("https://127.0.0.1:"), "{members:?}");
    let health = p.same(&["endpoint", "health"]).await?;
    ensure!(health.stdout.contains("is healthy"), "{health:?}");
    let status = p.same(&["endpoint", "status", "-w", "json"]).await?;
    let v: Value = serde_json::from_str(&status.stdout)?;
    ensure!(
        v[0]["Status"]["dbSize"].as_i64().is_some_and(|n| n > 0),
        "{v}"
    );
    expect(&p.same(&["alarm", "list"]).await?, "")?;
    let defrag = p.same(&["defrag"]).await?;
    ensure!(
        defrag.stdout.starts_with("Finished defragmenting"),
        "{defrag:?}"
    );
    let rev = v[0]["Status"]["header"]["revision"]
        .as_i64()
        .context("no revision in endpoint status")?;
    let compacted = p.same(&["compaction", &rev.to_string()]).await?;
    ensure!(
        compacted.stdout.contains("compacted revision"),
        "{compacted:?}"
    );
    let dir = tempfile::tempdir()?;
    for (name, ctl) in [("direct.db", &p.direct), ("front.db", &p.gw)] {
        let file = dir.path().join(name);
        let out = ctl
            .run(&["snapshot", "save", &file.to_string_lossy()])
            .await?;
        ensure!(out.stdout.contains("Snapshot saved at"), "{name}: {out:?}");
        ensure!(std::fs::metadata(&file)?.len() > 0, "{name} is empty");
    }

    // Lock and election.
    expect(
        &p.same(&["lock", "job", "echo", "acquired"]).await?,
        "acquired\n",
    )?;
    let direct = lock_and_elect_transcript(&p.direct).await?;
    let through = lock_and_elect_transcript(&p.gw).await?;
    ensure!(
        direct == through,
        "lock/elect differ:\ndirect: {direct:#?}\nfront:  {through:#?}\n{}",
        p.front_log()
    );
    Ok(())
}
