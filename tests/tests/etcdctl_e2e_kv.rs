//! The real `etcdctl` 3.5 through keygate, compared with the same commands run directly
//! against an identical fresh etcd cluster (see `keygate_tests::diff`): keys, txns and
//! compaction, watches and leases.

use crate::etcdctl_common;

use anyhow::{ensure, Context, Result};
use etcdctl_common::{expect_stdout, lease_id, LINE_TIMEOUT};
use keygate_tests::normalize::normalize_text;
use keygate_tests::{DiffPair, Etcdctl};
use serde_json::Value;

/// The header revision of `etcdctl get <key> -w json`.
async fn current_revision(ctl: &Etcdctl) -> Result<i64> {
    let out = ctl
        .run(&["get", "keygate-rev-probe", "-w", "json"])
        .await?
        .ok()?;
    let v: Value = serde_json::from_str(&out.stdout)?;
    v["header"]["revision"]
        .as_i64()
        .with_context(|| format!("no revision in {}", out.stdout))
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_put_get_del_txn_compaction() -> Result<()> {
    let p = DiffPair::start(3).await?;
    expect_stdout(&p.same(&["put", "foo", "bar"]).await?, "OK\n")?;
    for (k, v) in [
        ("foo1", "v1"),
        ("foo3", "v3"),
        ("foo2", "v2"),
        ("fop", "x"),
        ("zoo", "z"),
    ] {
        p.same(&["put", k, v]).await?.ok()?;
    }
    expect_stdout(&p.same(&["get", "foo"]).await?, "foo\nbar\n")?;
    p.same(&["get", "foo", "-w", "json"]).await?.ok()?;
    expect_stdout(
        &p.same(&["get", "foo", "--prefix"]).await?,
        "foo\nbar\nfoo1\nv1\nfoo2\nv2\nfoo3\nv3\n",
    )?;
    p.same(&["get", "foo", "--prefix", "-w", "json"])
        .await?
        .ok()?;
    expect_stdout(
        &p.same(&["get", "foo", "--prefix", "--limit", "2"]).await?,
        "foo\nbar\nfoo1\nv1\n",
    )?;
    let limited = p
        .same(&["get", "foo", "--prefix", "--limit", "2", "-w", "json"])
        .await?;
    let v: Value = serde_json::from_str(&limited.stdout)?;
    ensure!(v["more"] == true && v["count"] == 4, "limit: {v}");
    expect_stdout(
        &p.same(&[
            "get",
            "foo",
            "--prefix",
            "--sort-by=MODIFY",
            "--order=DESCEND",
        ])
        .await?,
        "foo2\nv2\nfoo3\nv3\nfoo1\nv1\nfoo\nbar\n",
    )?;
    for sort in ["CREATE", "KEY", "VERSION", "VALUE", "MODIFY"] {
        for order in ["ASCEND", "DESCEND"] {
            let sort_by = format!("--sort-by={sort}");
            let order = format!("--order={order}");
            p.same(&["get", "f", "--prefix", &sort_by, &order, "-w", "json"])
                .await?
                .ok()?;
            p.same(&["get", "f", "--prefix", &sort_by, &order, "--limit", "3"])
                .await?
                .ok()?;
        }
    }
    expect_stdout(
        &p.same(&["get", "foo", "--prefix", "--keys-only"]).await?,
        "foo\n\nfoo1\n\nfoo2\n\nfoo3\n\n",
    )?;
    expect_stdout(
        &p.same(&["get", "foo", "--prefix", "--print-value-only"])
            .await?,
        "bar\nv1\nv2\nv3\n",
    )?;
    let count = p
        .same(&["get", "foo", "--prefix", "--count-only", "-w", "fields"])
        .await?;
    ensure!(count.stdout.contains("\"Count\" : 4"), "{count:?}");
    p.same(&["get", "foo", "--prefix", "-w", "fields"])
        .await?
        .ok()?;
    p.same(&["get", "foo", "--prefix", "--keys-only", "-w", "json"])
        .await?
        .ok()?;
    // A range [foo, fop), from a key, everything, serializable, and missing keys.
    expect_stdout(
        &p.same(&["get", "foo1", "fop"]).await?,
        "foo1\nv1\nfoo2\nv2\nfoo3\nv3\n",
    )?;
    p.same(&["get", "--from-key", "foo2"]).await?.ok()?;
    p.same(&["get", "", "--prefix", "-w", "json"]).await?.ok()?;
    p.same(&["get", "fo", "--prefix", "--consistency=s", "-w", "json"])
        .await?
        .ok()?;
    expect_stdout(&p.same(&["get", "missing"]).await?, "")?;
    p.same(&["get", "missing", "-w", "json"]).await?.ok()?;

    // Overwrites, history (--rev) and prev_kv.
    p.same(&["put", "foo", "bar2"]).await?.ok()?;
    expect_stdout(&p.same(&["get", "foo", "--rev", "2"]).await?, "foo\nbar\n")?;
    expect_stdout(
        &p.same(&["get", "foo", "--print-value-only"]).await?,
        "bar2\n",
    )?;
    p.same(&["get", "foo", "--prefix", "--rev", "4", "-w", "json"])
        .await?
        .ok()?;
    p.same(&["put", "foo", "bar3", "--prev-kv", "-w", "json"])
        .await?
        .ok()?;
    expect_stdout(
        &p.same(&["put", "foo", "bar4", "--prev-kv"]).await?,
        "OK\nfoo\nbar3\n",
    )?;

    // Values from stdin, up to and past etcd's 1.5 MiB request limit.
    let mib = "a".repeat(1 << 20);
    expect_stdout(&p.same_with_stdin(&["put", "big"], &mib).await?, "OK\n")?;
    let big = p.same(&["get", "big", "--print-value-only"]).await?;
    ensure!(
        big.stdout.len() == mib.len() + 1,
        "1 MiB value came back with {} bytes",
        big.stdout.len()
    );
    let too_big = p
        .same_with_stdin(&["put", "big"], &"b".repeat(1_600_000))
        .await?;
    ensure!(
        !too_big.success() && too_big.stderr.contains("request is too large"),
        "{too_big:?}"
    );
    expect_stdout(&p.same(&["del", "big"]).await?, "1\n")?;
    let missing = p.same(&["put", "missing", "--ignore-value"]).await?;
    ensure!(
        !missing.success() && missing.stderr.contains("key not found"),
        "{missing:?}"
    );
    expect_stdout(&p.same(&["put", "zoo", "--ignore-value"]).await?, "OK\n")?;

    // Deletes.
    expect_stdout(
        &p.same(&["del", "foo1", "--prev-kv"]).await?,
        "1\nfoo1\nv1\n",
    )?;
    expect_stdout(&p.same(&["del", "missing"]).await?, "0\n")?;
    p.same(&["del", "foo", "--prefix", "-w", "json"])
        .await?
        .ok()?;
    expect_stdout(&p.same(&["get", "foo", "--prefix"]).await?, "")?;

    // Transactions from stdin, interactive and not, both branches.
    let txn = "value(\"zoo\") = \"z\"\nmod(\"fop\") > \"0\"\n\nput zoo z2\nget fop\ndel fop\n\nput zoo nope\n\n";
    let out = p.same_with_stdin(&["txn", "-i"], txn).await?;
    ensure!(out.stdout.contains("SUCCESS"), "txn: {out:?}");
    let out = p.same_with_stdin(&["txn", "-w", "json"], txn).await?;
    ensure!(
        out.stdout.contains("\"succeeded\":false") || !out.stdout.contains("succeeded"),
        "{out:?}"
    );
    p.same_with_stdin(
        &["txn"],
        "version(\"zoo\") = \"3\"\n\nget zoo\n\nget z --prefix\n\n",
    )
    .await?
    .ok()?;
    p.same(&["get", "", "--prefix", "-w", "json"]).await?.ok()?;

    // Compaction, then the errors etcd gives for compacted and future revisions.
    let rev = current_revision(&p.gw).await?;
    ensure!(
        rev == current_revision(&p.direct).await?,
        "the two clusters' revisions diverged"
    );
    let compact_at = (rev - 2).to_string();
    expect_stdout(
        &p.same(&["compaction", &compact_at]).await?,
        &format!("compacted revision {compact_at}\n"),
    )?;
    let old = p.same(&["get", "foo", "--rev", "2"]).await?;
    ensure!(
        !old.success() && old.stderr.contains("required revision has been compacted"),
        "{old:?}"
    );
    let future = p.same(&["get", "zoo", "--rev", "100000"]).await?;
    ensure!(
        !future.success()
            && future
                .stderr
                .contains("required revision is a future revision"),
        "{future:?}"
    );
    let again = p.same(&["compaction", &compact_at]).await?;
    ensure!(!again.success(), "compacting twice: {again:?}");
    p.same(&["compaction", "--physical", &(rev - 1).to_string()])
        .await?
        .ok()?;
    Ok(())
}

/// Reads a watcher's lines until the last two are `key`, `value`.
async fn watch_until(
    w: &mut keygate_tests::Spawned,
    key: &str,
    value: &str,
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    while !(lines.len() >= 2 && lines[lines.len() - 2] == key && lines[lines.len() - 1] == value) {
        let line = w
            .next_line(LINE_TIMEOUT)
            .await
            .with_context(|| format!("watch output so far: {lines:?}"))?;
        lines.push(line);
        ensure!(lines.len() < 1000, "runaway watch output");
    }
    Ok(lines)
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_streams_the_same_events() -> Result<()> {
    let p = DiffPair::start(3).await?;
    p.same(&["put", "w/0", "before"]).await?.ok()?;
    let mut transcripts = Vec::new();
    for ctl in [&p.direct, &p.gw] {
        let start = (current_revision(ctl).await? + 1).to_string();
        let rev_flag = format!("--rev={start}");
        // Watches from an explicit revision, so no event can slip in before creation.
        let mut plain = ctl.spawn(&["watch", "w/", "--prefix", &rev_flag])?;
        let mut prev = ctl.spawn(&["watch", "w/", "--prefix", "--prev-kv", &rev_flag])?;
        let mut single = ctl.spawn(&["watch", "w/1", &rev_flag])?;
        let mut history = ctl.spawn(&["watch", "w/", "--prefix", "--rev=1"])?;
        for args in [
            &["put", "w/1", "a"][..],
            &["put", "w/2", "b"],
            &["put", "w/1", "c"],
            &["put", "other", "x"],
            &["del", "w/2"],
            &["del", "w/", "--prefix"],
            &["put", "w/1", "d"],
            &["put", "w/end", "done"],
        ] {
            ctl.run(args).await?.ok()?;
        }
        let transcript = vec![
            watch_until(&mut plain, "w/end", "done").await?,
            watch_until(&mut prev, "w/end", "done").await?,
            watch_until(&mut history, "w/end", "done").await?,
        ];
        ctl.run(&["put", "w/1", "last"]).await?.ok()?;
        let mut single_lines = Vec::new();
        while single_lines.last().map(String::as_str) != Some("last") {
            single_lines.push(single.next_line(LINE_TIMEOUT).await?);
        }
        for w in [&mut plain, &mut prev, &mut single, &mut history] {
            w.kill().await?;
        }
        transcripts.push((transcript, single_lines));
    }
    let (direct, gw) = (&transcripts[0], &transcripts[1]);
    ensure!(
        direct == gw,
        "watch events differ:\ndirect: {direct:#?}\nfront:  {gw:#?}\n{}",
        p.front_log()
    );
    ensure!(
        direct.0[0].first().map(String::as_str) == Some("PUT"),
        "unexpected watch output {direct:?}"
    );

    // A watch from a compacted revision is canceled with etcd's reason.
    let mut outs = Vec::new();
    for ctl in [&p.direct, &p.gw] {
        let rev = current_revision(ctl).await?;
        ctl.run(&["compaction", &rev.to_string()]).await?.ok()?;
        let mut w = ctl.spawn(&["watch", "w/", "--prefix", "--rev=2"])?;
        outs.push(w.finish(LINE_TIMEOUT).await?);
    }
    keygate_tests::diff::check_same(&["watch", "--rev=2"], &outs[0], &outs[1])?;
    ensure!(
        outs[1]
            .stderr
            .contains("required revision has been compacted")
            && !outs[1].success(),
        "{:?}",
        outs[1]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn leases() -> Result<()> {
    let p = DiffPair::start(3).await?;
    let direct_grant = p.direct.run(&["lease", "grant", "60"]).await?;
    let gw_grant = p.gw.run(&["lease", "grant", "60"]).await?;
    keygate_tests::diff::check_same(&["lease", "grant", "60"], &direct_grant, &gw_grant)?;
    let (d, g) = (lease_id(&direct_grant)?, lease_id(&gw_grant)?);
    let (dl, gl) = (format!("--lease={d}"), format!("--lease={g}"));

    p.same_each(&["put", "lk", "v", &dl], &["put", "lk", "v", &gl])
        .await?
        .ok()?;
    p.same_each(&["put", "lk2", "v", &dl], &["put", "lk2", "v", &gl])
        .await?
        .ok()?;
    let got = p.same(&["get", "lk", "-w", "json"]).await?;
    let v: Value = serde_json::from_str(&got.stdout)?;
    ensure!(
        v["kvs"][0]["lease"].as_i64() == i64::from_str_radix(&g, 16).ok(),
        "key not attached to lease {g}: {v}"
    );
    let ttl = p
        .same_each(&["lease", "timetolive", &d], &["lease", "timetolive", &g])
        .await?;
    ensure!(
        ttl.stdout.contains("granted with TTL(60s), remaining("),
        "{ttl:?}"
    );
    let keys = p
        .same_each(
            &["lease", "timetolive", &d, "--keys"],
            &["lease", "timetolive", &g, "--keys"],
        )
        .await?;
    ensure!(
        normalize_text(&keys.stdout).contains("attached keys([lk lk2])"),
        "{keys:?}"
    );
    let json =
        p.gw.run(&["lease", "timetolive", &g, "--keys", "-w", "json"])
            .await?
            .ok()?;
    let v: Value = serde_json::from_str(&json.stdout)?;
    let remaining = v["ttl"].as_i64().unwrap_or(-1);
    ensure!(
        (50..=60).contains(&remaining) && v["granted-ttl"] == 60,
        "{v}"
    );

    let ka = p
        .same_each(
            &["lease", "keep-alive", "--once", &d],
            &["lease", "keep-alive", "--once", &g],
        )
        .await?;
    ensure!(
        ka.stdout == format!("lease {g} keepalived with TTL(60)\n"),
        "{ka:?}"
    );
    let list = p.same(&["lease", "list"]).await?;
    ensure!(list.stdout == format!("found 1 leases\n{g}\n"), "{list:?}");

    let revoke = p
        .same_each(&["lease", "revoke", &d], &["lease", "revoke", &g])
        .await?;
    ensure!(
        revoke.stdout == format!("lease {g} revoked\n"),
        "{revoke:?}"
    );
    expect_stdout(&p.same(&["get", "lk", "--prefix"]).await?, "")?;
    let expired = p
        .same_each(&["lease", "timetolive", &d], &["lease", "timetolive", &g])
        .await?;
    ensure!(expired.stdout.contains("already expired"), "{expired:?}");
    let again = p
        .same_each(&["lease", "revoke", &d], &["lease", "revoke", &g])
        .await?;
    ensure!(
        !again.success() && again.stderr.contains("requested lease not found"),
        "{again:?}"
    );
    let gone = p
        .same_each(
            &["lease", "keep-alive", "--once", &d],
            &["lease", "keep-alive", "--once", &g],
        )
        .await?;
    ensure!(!gone.success(), "{gone:?}");
    let bad = p.same(&["put", "x", "y", "--lease=1234"]).await?;
    ensure!(
        !bad.success() && bad.stderr.contains("requested lease not found"),
        "{bad:?}"
    );
    expect_stdout(&p.same(&["lease", "list"]).await?, "found 0 leases\n")?;
    Ok(())
}
