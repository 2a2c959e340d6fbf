//! The real `etcdctl` 3.5 through keygate, compared with the same commands run directly
//! against an identical fresh etcd cluster (see `keygate_tests::diff`): members and
//! maintenance, locks and elections, auth.

use crate::etcdctl_common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdctl_common::{expect_stdout, lock_and_elect_transcript};
use keygate_tests::{ports, CmdOutput, DiffPair, EtcdCluster, Etcdctl, Keygate};
use serde_json::Value;

/// `member list -w json` members, with client URLs taken out (checked separately).
fn members(out: &CmdOutput) -> Result<(Vec<Value>, Vec<Value>)> {
    let v: Value = serde_json::from_str(&out.stdout).with_context(|| format!("{out:?}"))?;
    let mut members = v["members"].as_array().cloned().unwrap_or_default();
    members.sort_by_key(|m| m["ID"].as_u64());
    let client_urls = members
        .iter_mut()
        .filter_map(|m| m.as_object_mut().and_then(|m| m.remove("clientURLs")))
        .collect();
    Ok((members, client_urls))
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_and_maintenance() -> Result<()> {
    let p = DiffPair::start(3).await?;
    for i in 0..20 {
        p.same(&["put", &format!("m/{i:02}"), &"x".repeat(i * 10)])
            .await?
            .ok()?;
    }

    // member list: the backend cluster's members, as etcd itself reports them.
    let through = p.gw.run(&["member", "list", "-w", "json"]).await?.ok()?;
    let direct = p
        .backend_direct
        .run(&["member", "list", "-w", "json"])
        .await?
        .ok()?;
    let (through_members, through_urls) = members(&through)?;
    let (direct_members, _) = members(&direct)?;
    ensure!(
        through_members == direct_members && through_members.len() == 3,
        "member list through the front: {through:?}\ndirectly: {direct:?}"
    );
    ensure!(
        through_urls
            .iter()
            .all(|u| u.as_array().is_some_and(|a| !a.is_empty())),
        "members without client URLs: {through:?}"
    );
    let member_ids: Vec<u64> = direct_members
        .iter()
        .filter_map(|m| m["ID"].as_u64())
        .collect();

    // Membership changes through the front reach the backend cluster.
    let peer = format!("http://127.0.0.1:{}", keygate_tests::ports::free_port()?);
    let peer_flag = format!("--peer-urls={peer}");
    // etcd refuses membership changes until every member has been connected for 5s.
    let add = ["member", "add", "m3", peer_flag.as_str(), "--learner"];
    let mut added = p.gw.run(&add).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while added.stderr.contains("unhealthy cluster") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        added = p.gw.run(&add).await?;
    }
    let added = added.ok()?;
    let new_id = added
        .stdout
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("member add: {added:?}"))?
        .to_string();
    let listed = p.backend_direct.run(&["member", "list"]).await?.ok()?;
    ensure!(
        listed.stdout.contains(&new_id) && listed.stdout.contains(&peer),
        "added learner {new_id} not in {listed:?}"
    );
    let removed = p.gw.run(&["member", "remove", &new_id]).await?.ok()?;
    ensure!(
        removed.stdout.contains("removed from cluster"),
        "{removed:?}"
    );
    let listed = p.backend_direct.run(&["member", "list"]).await?.ok()?;
    ensure!(
        !listed.stdout.contains(&new_id),
        "removed member still listed: {listed:?}"
    );

    // endpoint health / status / hashkv.
    let health = p.same(&["endpoint", "health"]).await?;
    ensure!(health.stdout.contains("is healthy"), "{health:?}");
    p.same(&["endpoint", "health", "-w", "json"]).await?.ok()?;
    let status = p.same(&["endpoint", "status", "-w", "json"]).await?;
    let v: Value = serde_json::from_str(&status.stdout)?;
    let s = &v[0]["Status"];
    ensure!(s["version"] == "3.5.1", "endpoint status: {v}");
    ensure!(
        s["leader"]
            .as_u64()
            .is_some_and(|l| member_ids.contains(&l)),
        "leader is not a backend member ({member_ids:?}): {v}"
    );
    ensure!(s["dbSize"].as_i64().is_some_and(|n| n > 0), "{v}");
    p.gw.run(&["endpoint", "status"]).await?.ok()?;
    let hash_front =
        p.gw.run(&["endpoint", "hashkv", "-w", "json"])
            .await?
            .ok()?;
    let hash_backend = p
        .backend_direct
        .run(&["endpoint", "hashkv", "-w", "json"])
        .await?
        .ok()?;
    let (hf, hb): (Value, Value) = (
        serde_json::from_str(&hash_front.stdout)?,
        serde_json::from_str(&hash_backend.stdout)?,
    );
    ensure!(
        hf[0]["HashKV"]["hash"] == hb[0]["HashKV"]["hash"]
            && hf[0]["HashKV"]["header"]["revision"] == hb[0]["HashKV"]["header"]["revision"],
        "hashkv through the front {hf} vs directly {hb}"
    );

    // alarms, defrag.
    expect_stdout(&p.same(&["alarm", "list"]).await?, "")?;
    let defrag = p.same(&["defrag"]).await?;
    ensure!(
        defrag
            .stdout
            .starts_with("Finished defragmenting etcd member["),
        "{defrag:?}"
    );

    // snapshot: a valid bolt db at the same revision with the same keys as the reference.
    let dir = tempfile::tempdir()?;
    let mut statuses = Vec::new();
    for (name, ctl) in [("direct.db", &p.direct), ("front.db", &p.gw)] {
        let file = dir.path().join(name);
        let file = file.to_string_lossy();
        let out = ctl.run(&["snapshot", "save", &file]).await?;
        ensure!(
            out.success() && out.stdout.contains("Snapshot saved at"),
            "{name}: {out:?}"
        );
        let etcdutl = keygate_tests::bins::etcd_tool("etcdutl")?;
        let st = tokio::process::Command::new(etcdutl)
            .args(["snapshot", "status", &file, "-w", "json"])
            .output()
            .await?;
        ensure!(
            st.status.success(),
            "etcdutl snapshot status {name}: {st:?}"
        );
        let v: Value = serde_json::from_slice(&st.stdout)?;
        statuses.push((v["revision"].clone(), v["totalKey"].clone()));
    }
    ensure!(
        // totalKey also counts membership records, which the member add/remove above changed
        // on one cluster only: compare revisions, and that both hold at least the 20 keys.
        statuses[0].0 == statuses[1].0
            && statuses[1].0.as_i64().is_some_and(|r| r >= 21)
            && statuses
                .iter()
                .all(|s| s.1.as_i64().is_some_and(|n| n > 20)),
        "snapshot (revision, totalKey): direct {:?}, front {:?}",
        statuses[0],
        statuses[1]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_and_election() -> Result<()> {
    let p = DiffPair::start(3).await?;
    expect_stdout(
        &p.same(&["lock", "job", "echo", "acquired"]).await?,
        "acquired\n",
    )?;

    let mut transcripts = Vec::new();
    for ctl in [&p.direct, &p.gw] {
        transcripts.push(lock_and_elect_transcript(ctl).await?);
    }
    ensure!(
        transcripts[0] == transcripts[1],
        "lock/elect differ:\ndirect: {:#?}\nfront:  {:#?}\n{}",
        transcripts[0],
        transcripts[1],
        p.front_log()
    );
    ensure!(
        transcripts[1][0] == "mylock/<id>" && transcripts[1].contains(&"p2".to_string()),
        "{:?}",
        transcripts[1]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_users_roles_and_tokens() -> Result<()> {
    let p = DiffPair::start(3).await?;
    let root = "--user=root:rootpw";
    let alice = "--user=alice:alicepw";
    for (args, want) in [
        (
            &["user", "add", "root", "--new-user-password=rootpw"][..],
            "User root created\n",
        ),
        (
            &["user", "add", "alice", "--new-user-password=alicepw"],
            "User alice created\n",
        ),
        (&["role", "add", "reader"], "Role reader created\n"),
        (
            &[
                "role",
                "grant-permission",
                "reader",
                "read",
                "pub/",
                "--prefix",
            ],
            "Role reader updated\n",
        ),
        (
            &["user", "grant-role", "alice", "reader"],
            "Role reader is granted to user alice\n",
        ),
        (&["auth", "enable"], "Authentication Enabled\n"),
    ] {
        expect_stdout(&p.same(args).await?, want)?;
    }
    expect_stdout(&p.same(&[root, "put", "pub/a", "1"]).await?, "OK\n")?;
    expect_stdout(&p.same(&[root, "put", "secret", "s"]).await?, "OK\n")?;
    expect_stdout(
        &p.same(&[alice, "get", "pub/", "--prefix"]).await?,
        "pub/a\n1\n",
    )?;
    for (args, error) in [
        (&[alice, "put", "pub/a", "2"][..], "permission denied"),
        (&[alice, "get", "secret"], "permission denied"),
        (&["get", "pub/a"], "user name is empty"),
        (
            &["--user=alice:wrong", "get", "pub/a"],
            "authentication failed",
        ),
    ] {
        let out = p.same(args).await?;
        ensure!(
            !out.success() && out.stderr.contains(error),
            "{args:?}: {out:?}"
        );
    }
    // The watch stream authenticates too.
    let denied = p.same(&[alice, "watch", "secret", "--rev=1"]).await?;
    ensure!(!denied.success(), "watch without permission: {denied:?}");
    expect_stdout(&p.same(&[root, "user", "list"]).await?, "alice\nroot\n")?;
    p.same(&[root, "role", "get", "reader"]).await?.ok()?;
    p.same(&[root, "user", "get", "alice", "--detail"])
        .await?
        .ok()?;
    expect_stdout(
        &p.same(&[root, "auth", "disable"]).await?,
        "Authentication Disabled\n",
    )?;
    expect_stdout(
        &p.same(&["get", "secret", "--print-value-only"]).await?,
        "s\n",
    )?;
    Ok(())
}

/// `server.advertise_client_urls`: member lists through keygate (etcdctl's, the JSON
/// gateway's, a member add's) show keygate's URLs as every started member's client URLs, so
/// clients that sync their endpoints from them stay on keygate; the rest is etcd's answer.
#[tokio::test(flavor = "multi_thread")]
async fn member_lists_show_the_advertised_client_urls() -> Result<()> {
    const URLS: [&str; 2] = [
        "https://keygate-a.example:2379",
        "https://keygate-b.example:2379",
    ];
    let etcd = EtcdCluster::start(3).await?;
    let keygate = Keygate::start(
        &etcd.client_urls(),
        &["--advertise-client-urls", &URLS.join(",")],
    )
    .await?;
    let through = Etcdctl::new(&[keygate.endpoint()])?;
    let direct = Etcdctl::new(&etcd.client_urls())?;
    let list = ["member", "list", "-w", "json"];
    let (through_members, through_urls) = members(&through.run(&list).await?.ok()?)?;
    let (direct_members, direct_urls) = members(&direct.run(&list).await?.ok()?)?;
    ensure!(
        through_members == direct_members && through_members.len() == 3,
        "member list through keygate: {through_members:?}\ndirectly: {direct_members:?}"
    );
    let advertised = serde_json::json!(URLS);
    ensure!(
        through_urls.iter().all(|u| *u == advertised),
        "client URLs through keygate: {through_urls:?}"
    );
    ensure!(
        direct_urls.iter().all(|u| *u != advertised),
        "client URLs directly: {direct_urls:?}"
    );

    let json =
        keygate_tests::json_http::post(keygate.addr(), "/v3/cluster/member/list", "{}").await?;
    let v: Value = serde_json::from_str(&json.body).with_context(|| json.body.clone())?;
    let json_urls: Vec<&Value> = v["members"]
        .as_array()
        .map(|m| m.iter().map(|m| &m["clientURLs"]).collect())
        .unwrap_or_default();
    ensure!(
        json_urls.len() == 3 && json_urls.iter().all(|u| **u == advertised),
        "JSON member list: {}",
        json.body
    );

    // A member added but not started has no client URL yet, through keygate as in etcd.
    let peer = format!("--peer-urls=http://127.0.0.1:{}", ports::free_port()?);
    let add = [
        "member",
        "add",
        "m3",
        peer.as_str(),
        "--learner",
        "-w",
        "json",
    ];
    let mut added = through.run(&add).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while added.stderr.contains("unhealthy cluster") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        added = through.run(&add).await?;
    }
    let (after, after_urls) = members(&added.ok()?)?;
    let unstarted = after_urls.iter().filter(|u| **u == advertised).count();
    ensure!(
        after.len() == 4 && unstarted == 3,
        "member add's list through keygate: {after:?} {after_urls:?}"
    );
    Ok(())
}
