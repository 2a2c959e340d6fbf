//! The scripted checks after the random history: watch ids (client-chosen, next free,
//! duplicates, invalid ranges, cancels, progress requests) and compaction.

use std::time::Duration;

use anyhow::{ensure, Result};
use keygate_proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use keygate_tests::watch::prefix_end;
use keygate_tests::watch_record::{masked, metric, Recorded};
use keygate_tests::{Clients, Keygate};

use super::compare::{compare_exact, show};
use super::watchers::{Spec, Start};
use super::{b, compact, T};

/// Client-chosen ids, 0 = next free, duplicates, invalid ranges, cancel (known and unknown),
/// and a progress request, on one stream each side: compared exactly, and against etcd's
/// known answers.
pub async fn watch_ids(direct: &Clients, via: &Clients) -> Result<Vec<String>> {
    let single = |key: &str, id: i64| WatchCreateRequest {
        key: b(key),
        watch_id: id,
        ..Default::default()
    };
    let ranged = |key: &str, end: &str, id: i64| WatchCreateRequest {
        key: b(key),
        range_end: b(end),
        watch_id: id,
        ..Default::default()
    };
    enum Req {
        Create(WatchCreateRequest),
        Cancel(i64),
        Progress,
    }
    let script = vec![
        Req::Create(single("ids/a", 0)),
        Req::Create(ranged("ids/b", "ids/a", 0)),
        Req::Create(single("ids/c", 0)),
        Req::Create(single("ids/d", 7)),
        Req::Create(single("ids/e", 7)),
        Req::Create(single("ids/f", 2)),
        Req::Create(single("ids/g", 0)),
        Req::Create(ranged("ids/h", "ids/h", 5)),
        Req::Create(ranged("ids/h", "ids/h", 0)),
        Req::Cancel(7),
        Req::Cancel(42),
        Req::Create(single("ids/i", 7)),
        Req::Progress,
        Req::Create(ranged("ids/", "\0", 0)),
        Req::Create(single("ids/j", 1)),
        Req::Cancel(0),
        Req::Create(single("ids/k", 0)),
    ];
    let expected_responses = script.len() - 1; // the unknown cancel gets no answer
    let (etcd, gw) = (
        Recorded::open(direct.channel.clone()),
        Recorded::open(via.channel.clone()),
    );
    for req in &script {
        for rec in [&etcd, &gw] {
            match req {
                Req::Create(c) => rec.create(c.clone())?,
                Req::Cancel(id) => rec.cancel(*id)?,
                Req::Progress => rec.progress()?,
            }
        }
    }
    etcd.next_n(0, expected_responses, T).await?;
    // keygate's answers are compared below, whatever their number.
    let _ = gw.next_n(0, expected_responses, T).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (e, g) = (
        etcd.responses().into_iter().map(masked).collect::<Vec<_>>(),
        gw.responses().into_iter().map(masked).collect::<Vec<_>>(),
    );
    // The script's answers on etcd 3.5 (so this test checks itself).
    let ids: Vec<i64> = e.iter().map(|r| r.watch_id).collect();
    ensure!(
        ids == [0, -1, 1, 7, -1, 2, 3, -1, -1, 7, 7, -1, 4, -1, 0, 5],
        "etcd answered the id script unexpectedly: {:#?}",
        e.iter().map(show).collect::<Vec<_>>()
    );
    let mut out = Vec::new();
    if e != g {
        for (i, (a, b)) in e.iter().zip(&g).enumerate() {
            if a != b {
                out.push(format!(
                    "id script response #{i}:\n    etcd:    {}\n    keygate: {}",
                    show(a),
                    show(b)
                ));
            }
        }
        if e.len() != g.len() {
            out.push(format!(
                "id script: {} responses from etcd, {} from keygate",
                e.len(),
                g.len()
            ));
        }
    }
    Ok(out)
}

/// Both clusters compacted alike inside keygate's window: start revisions before the
/// compaction (before keygate started, or inside the window) get etcd's compaction cancel;
/// the compaction revision itself is still served.
pub async fn compaction(
    direct: &mut Clients,
    via: &mut Clients,
    keygate: &Keygate,
    before_rev: i64,
    window_rev: i64,
) -> Result<Vec<String>> {
    let at = window_rev + 5;
    compact(direct, at).await?;
    compact(via, at).await?;
    let upstream_before = metric(keygate.addr(), "keygate_watch_upstream_streams").await?;
    let spec = |start_rev: i64, prev_kv: bool| Spec {
        name: format!("compaction/start {start_rev}"),
        key: b("k/"),
        end: prefix_end(b"k/"),
        start: Start::Window,
        start_rev,
        filters: vec![],
        prev_kv,
        progress: false,
        fragment: false,
        id: 0,
    };
    let specs = vec![
        spec(1, false),
        spec(before_rev, false),
        spec(at - 1, true),
        spec(at, true),
        spec(at + 1, false),
    ];
    let etcd = Recorded::open(direct.channel.clone());
    let gw = Recorded::open(via.channel.clone());
    for s in &specs {
        etcd.create(s.request())?;
        gw.create(s.request())?;
    }
    let done = |r: &[WatchResponse]| {
        r.iter().filter(|r| r.created).count() >= 5 && r.iter().filter(|r| r.canceled).count() >= 3
    };
    etcd.wait_for("compaction answers (etcd)", T, done).await?;
    if let Err(err) = gw.wait_for("compaction answers (keygate)", T, done).await {
        return Ok(vec![format!("{err:#}")]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (e, g) = (etcd.responses(), gw.responses());
    let canceled: Vec<i64> = e
        .iter()
        .filter(|r| r.canceled)
        .map(|r| r.compact_revision)
        .collect();
    ensure!(
        canceled == [at, at, at],
        "etcd's compaction answers unexpected: {:?}",
        e.iter().map(show).collect::<Vec<_>>()
    );
    let mut out = compare_exact("compaction", &e, &g);
    let upstream_after = metric(keygate.addr(), "keygate_watch_upstream_streams").await?;
    if upstream_after != upstream_before {
        out.push(format!(
            "keygate_watch_upstream_streams {upstream_before} before the compacted watches, \
             {upstream_after} after they were canceled"
        ));
    }
    Ok(out)
}
