//! Watch conformance: keygate's watch hub is indistinguishable from etcd.
//!
//! Two identical single-member clusters receive the same randomized write sequence (fixed seed:
//! puts, deletes, range deletes, multi-key txns, lease revokes, large values), one used
//! directly and one behind keygate, so revisions line up. Watchers with every combination of
//! range kind (single key, prefix, from-key, range), start revision (0, inside keygate's event
//! window, before keygate started → an upstream watch of its own), filter (none, NOPUT,
//! NODELETE) and prev_kv, with client-chosen or auto-assigned ids, with and without
//! progress_notify, plus fragmenting watchers over large values, observe both sides. Their
//! streams are compared response by response (member_id, cluster_id and raft_term masked),
//! periodic progress notifications apart (their timing is the server's), and every stream is
//! checked against etcd's own history: ordered, unique, reliable (no gap), atomic (a
//! revision's events in one response), prev_kv correct, bookmarkable (a progress notification
//! at R means every event up to R came before it, none after).
//!
//! Then: watch ids (client-chosen, 0 = next free, duplicates, invalid ranges, cancel, unknown
//! cancel), WatchProgressRequest, and compaction (both clusters compacted alike: start
//! revisions before it get etcd's compaction cancel), and keygate's metrics: every hub watcher
//! served from the mirror's one upstream watch, one upstream watch per older start.
//! A second test checks the periodic progress notifications themselves on both sides: skipped
//! for a watcher sent events since the last one, sent to a quiet one on the same stream.
//!
//! etcd runs with `--max-request-bytes=65536` and a 200 ms progress interval (flags of its
//! members, not ETCD_* variables: those would reach every cluster of the test process); keygate
//! is configured alike (`[server] max_request_bytes = 65536`, `[watch]
//! progress_notify_interval_ms = 200`).

mod compare;
mod history;
mod scripts;
mod watchers;

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{CompactionRequest, WatchCreateRequest, WatchResponse};
use keygate_proto::mvccpb::Event;
use keygate_tests::process::poll_until;
use keygate_tests::watch_record::{metric, revision, Recorded};
use keygate_tests::{Clients, EtcdCluster, Keygate};

use compare::{assigned_ids, check_properties, compare_exact, show};
use history::{apply_both, Gen, Op};
use scripts::{compaction, watch_ids};
use watchers::{fragment_specs, matrix, Pair, Start};

const SEED: u64 = 0x6b65_7967;
const T: Duration = Duration::from_secs(15);
const MAX_REQUEST_BYTES: usize = 65536;
const BIG: usize = 48 * 1024;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// keygate's configuration file; `backfill` is `mirror.backfill_revisions`.
async fn write_config(dir: &std::path::Path, backfill: usize) -> Result<String> {
    let path = dir.join("keygate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nmax_request_bytes = {MAX_REQUEST_BYTES}\n\n\
             [mirror]\nbackfill_revisions = {backfill}\n\n\
             [watch]\nprogress_notify_interval_ms = 200\n"
        ),
    )?;
    Ok(path.to_string_lossy().into_owned())
}

async fn wait_serving(keygate: &Keygate) -> Result<()> {
    poll_until(T, "keygate_mirror_serving 1", || async {
        Ok(metric(keygate.addr(), "keygate_mirror_serving").await? == 1.0)
    })
    .await
}

async fn compact(c: &mut Clients, revision: i64) -> Result<()> {
    c.kv.compact(CompactionRequest {
        revision,
        physical: true,
    })
    .await?;
    Ok(())
}

fn bail_on(failures: Vec<String>, keygate: &Keygate) -> Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    let n = failures.len();
    let shown: Vec<String> = failures.into_iter().take(40).collect();
    bail!(
        "{n} differences between etcd and keygate:\n{}\nkeygate log tail:\n{}",
        shown.join("\n"),
        keygate.log_tail(15)
    )
}

/// Watches from before keygate started get an upstream watch of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_match_etcd_under_a_random_history() -> Result<()> {
    conformance(0).await
}

/// With the window backfilled at start, watches from before keygate started are served by the
/// hub too, from etcd's events as keygate read them at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_match_etcd_with_a_backfilled_window() -> Result<()> {
    conformance(1000).await
}

/// etcd's periodic progress notifications every 200 ms instead of every 10 minutes.
const PROGRESS_EVERY_200MS: &str = "--experimental-watch-progress-notify-interval=200ms";

async fn conformance(backfill: usize) -> Result<()> {
    let max_request = format!("--max-request-bytes={MAX_REQUEST_BYTES}");
    let flags = [max_request.as_str(), PROGRESS_EVERY_200MS];
    let (reference, backend) = tokio::try_join!(
        EtcdCluster::start_with_flags(1, &flags),
        EtcdCluster::start_with_flags(1, &flags)
    )?;
    let mut direct = reference.clients(0).await?;
    let mut backend_direct = backend.clients(0).await?;

    // etcd's own history: every event from revision 1, prev_kv included.
    let history = Recorded::open(direct.channel.clone());
    history.create(WatchCreateRequest {
        key: Bytes::from_static(&[0]),
        range_end: Bytes::from_static(&[0]),
        start_revision: 1,
        prev_kv: true,
        ..Default::default()
    })?;

    let mut gen = Gen::new(SEED);
    let mut rev = 1;
    let mut before_rev = 0;
    for i in 0..40 {
        rev = apply_both(&mut direct, &mut backend_direct, &gen.op(i)).await?;
        if i == 12 {
            before_rev = rev;
        }
    }

    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), backfill).await?;
    let keygate = Keygate::start(&backend.client_urls(), &["--config", &config]).await?;
    wait_serving(&keygate).await?;
    if backfill > 0 {
        // The history comes in beside the serving mirror.
        poll_until(T, "the event window backfilled", || async {
            let oldest = metric(keygate.addr(), "keygate_mirror_window_oldest_revision").await?;
            Ok(oldest > 0.0 && oldest <= before_rev as f64)
        })
        .await?;
    }
    let mut via = keygate.clients().await?;

    // Inside the window: written after keygate started.
    let mut window_rev = 0;
    for i in 40..80 {
        rev = apply_both(&mut direct, &mut via, &gen.op(i)).await?;
        if i == 45 {
            window_rev = rev;
        }
    }
    // Large values: replayed together they exceed etcd's fragment size (max-request-bytes +
    // 512 KiB of gRPC allowance).
    let mut big_start = 0;
    for i in 0..14 {
        let op = Op::Put {
            key: format!("big/{i:02}"),
            value: Bytes::from(vec![b'a' + i as u8; BIG]),
            lease: 0,
        };
        rev = apply_both(&mut direct, &mut via, &op).await?;
        if i == 0 {
            big_start = rev;
        }
    }
    ensure!(before_rev > 1 && window_rev > before_rev && big_start > window_rev);
    eprintln!("before keygate {before_rev}, window {window_rev}, big {big_start}, now {rev}");

    let auto = Pair::open(
        "auto ids",
        matrix(window_rev, before_rev, false),
        &direct,
        &via,
    )
    .await?;
    let chosen = Pair::open(
        "chosen ids",
        matrix(window_rev, before_rev, true),
        &direct,
        &via,
    )
    .await?;
    let frag = Pair::open("fragments", fragment_specs(big_start), &direct, &via).await?;
    let pairs = [&auto, &chosen, &frag];
    let specs = |p: &Pair| p.specs.clone();
    let dedicated = pairs
        .iter()
        .flat_map(|p| specs(p))
        .filter(|s| s.start == Start::BeforeKeygate && backfill == 0)
        .count();
    let all = pairs.iter().map(|p| p.specs.len()).sum::<usize>();

    // The hub serves every watcher from the mirror's single upstream watch; a watcher from
    // before the window first gets an upstream watch of its own, and moves to the hub once it
    // has been sent every event up to the window (etcd's 200 ms progress notifications tell
    // that for quiet ones).
    // (etcd syncs a watcher from a past revision within 100 ms; the writes below must find
    // every watcher synced on both sides.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut failures = Vec::new();
    let settled = poll_until(T, "every watcher on the hub", || async {
        let body = keygate_tests::watch_record::scrape(keygate.addr()).await?;
        Ok(keygate_tests::watch_record::metric_sum(&body, "keygate_watch_upstream_streams") == 0.0)
    })
    .await;
    if let Err(e) = settled {
        failures.push(format!("{e:#}"));
    }
    let body = keygate_tests::watch_record::scrape(keygate.addr()).await?;
    let etcd_body = keygate_tests::watch_record::scrape(&backend.addr(0)).await?;
    let m = |f: &str| keygate_tests::watch_record::metric_sum(&body, f);
    let e = |f: &str| keygate_tests::watch_record::metric_sum(&etcd_body, f);
    for (what, got, want) in [
        (
            "keygate_watch_handovers_total",
            m("keygate_watch_handovers_total"),
            dedicated,
        ),
        ("keygate_watch_watchers", m("keygate_watch_watchers"), all),
        ("keygate_watch_streams", m("keygate_watch_streams"), 3),
        (
            "etcd's watch streams (the mirror's)",
            e("etcd_debugging_mvcc_watch_stream_total"),
            1,
        ),
        (
            "etcd's watchers (the mirror's)",
            e("etcd_debugging_mvcc_watcher_total"),
            1,
        ),
    ] {
        if got != want as f64 {
            failures.push(format!("metric {what}: {got}, expected {want}"));
        }
    }

    // The random history, observed live, with a multi-key txn of large values (prev_kv makes
    // its response bigger than max_request_bytes, but etcd fragments only past
    // max_request_bytes + 512 KiB).
    for i in 80..240 {
        let op = if i == 160 {
            Op::Txn {
                puts: (0..3)
                    .map(|j| (format!("big/{j:02}"), Bytes::from(vec![b'z'; 20 * 1024])))
                    .collect(),
                deletes: vec![],
            }
        } else {
            gen.op(i)
        };
        rev = apply_both(&mut direct, &mut via, &op).await?;
    }
    let last_rev = rev;
    // Quiet: periodic progress notifications flow.
    tokio::time::sleep(Duration::from_millis(1300)).await;

    // WatchProgressRequest: one reply for the stream, watch_id -1, at the current revision.
    for p in pairs {
        let (ne, ng) = (p.etcd.len(), p.gw.len());
        p.etcd.progress()?;
        p.gw.progress()?;
        for (side, rec, from) in [("etcd", &p.etcd, ne), ("keygate", &p.gw, ng)] {
            let got = rec
                .wait_for(&format!("{} progress reply", p.name), T, |r| {
                    r[from..].iter().any(|r| r.watch_id == -1)
                })
                .await?;
            let replies: Vec<&WatchResponse> =
                got[from..].iter().filter(|r| r.watch_id == -1).collect();
            if replies.len() != 1
                || revision(replies[0]) != last_rev
                || !replies[0].events.is_empty()
            {
                failures.push(format!(
                    "{side} {}: progress request answered {:?}, expected one reply at {last_rev}",
                    p.name,
                    replies.iter().map(|r| show(r)).collect::<Vec<_>>()
                ));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let history_events: Vec<Event> = history
        .responses()
        .into_iter()
        .flat_map(|r| r.events)
        .collect();
    ensure!(
        history_events
            .last()
            .and_then(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision)
            == Some(last_rev),
        "etcd's history watch did not reach revision {last_rev}"
    );

    for p in pairs {
        let (er, gr) = (p.etcd.responses(), p.gw.responses());
        let ids_e = assigned_ids(&p.specs, &er)?;
        let ids_g = assigned_ids(&p.specs, &gr)?;
        // etcd answers creates in request order, and clients (clientv3) pair each created
        // response with the oldest pending create.
        if ids_e != ids_g {
            failures.push(format!(
                "{}: created responses in a different order (ids in arrival order): etcd \
                 {ids_e:?}, keygate {ids_g:?}",
                p.name
            ));
        }
        // Response by response. Created responses match exactly: watchers were created while
        // nothing was written. Events reach synced watchers one revision per response on both
        // sides, unless one side batched a run of revisions for a watcher it caught up
        // (compare_exact allows that and nothing else).
        failures.extend(compare_exact(p.name, &er, &gr));
        // The test's own model must hold for etcd itself.
        // Both sides are checked with the ids etcd assigned (keygate picks the same ids, even
        // where its created responses come in another order).
        let own = check_properties("etcd", &p.specs, &ids_e, &er, &history_events, last_rev)?;
        ensure!(
            own.is_empty(),
            "the test's model disagrees with etcd: {own:#?}"
        );
        failures.extend(check_properties(
            "keygate",
            &p.specs,
            &ids_e,
            &gr,
            &history_events,
            last_rev,
        )?);
    }
    let frag_etcd = frag.etcd.responses();
    ensure!(
        frag_etcd.iter().any(|r| r.fragment),
        "etcd sent no fragment: the large-value replay is too small to exercise fragments"
    );

    failures.extend(watch_ids(&direct, &via).await?);
    failures.extend(compaction(&mut direct, &mut via, &keygate, before_rev, window_rev).await?);
    bail_on(failures, &keygate)
}

/// etcd's periodic progress notifications skip a watcher that was sent events since the last
/// one (the events said as much); a quiet watcher on the same stream still gets them. Both
/// sides watch the same cluster while one key is written every 20 ms (a put slower than 180 ms
/// leaves an interval without events, hence the small allowance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_progress_skips_watchers_sent_events() -> Result<()> {
    let cluster = EtcdCluster::start_with_flags(1, &[PROGRESS_EVERY_200MS]).await?;
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), 0).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &["--config", &config]).await?;
    wait_serving(&keygate).await?;
    let (direct, mut via) = (cluster.clients(0).await?, keygate.clients().await?);
    let watch = |key: &str, watch_id| WatchCreateRequest {
        key: b(key),
        progress_notify: true,
        watch_id,
        ..Default::default()
    };
    let mut streams = Vec::new();
    for clients in [&direct, &via] {
        let stream = keygate_tests::watch::WatchStream::open(clients, watch("busy", 1)).await?;
        stream.create(watch("quiet", 2)).await?;
        streams.push(stream);
    }
    let writes = tokio::spawn(async move {
        for i in 0..90 {
            let put = keygate_proto::etcdserverpb::PutRequest {
                key: b("busy"),
                value: Bytes::from(i.to_string()),
                ..Default::default()
            };
            via.kv.put(put).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(())
    });
    // (events, progress notifications) per watch id, read from both sides at once while the
    // writes go on.
    let until = tokio::time::Instant::now() + Duration::from_millis(1800);
    let tally = |mut stream: keygate_tests::watch::WatchStream| async move {
        let mut seen = std::collections::BTreeMap::<i64, (usize, usize)>::new();
        while let Ok(resp) = stream.next(until - tokio::time::Instant::now()).await {
            let entry = seen.entry(resp.watch_id).or_default();
            match (resp.created, resp.events.len()) {
                (true, _) => {}
                (false, 0) => entry.1 += 1,
                (false, n) => entry.0 += n,
            }
        }
        let count = |id| seen.get(&id).copied().unwrap_or_default();
        (count(1), count(2))
    };
    let via_stream = streams.pop().context("two streams")?;
    let direct_stream = streams.pop().context("two streams")?;
    let (on_etcd, on_keygate) = tokio::join!(tally(direct_stream), tally(via_stream));
    let mut failures = Vec::new();
    for (side, (busy, quiet)) in [("etcd", on_etcd), ("keygate", on_keygate)] {
        if busy.0 < 10 || busy.1 > 3 || quiet.1 < 4 {
            failures.push(format!(
                "{side}: busy watcher {} events, {} progress notifications; quiet watcher {} \
                 notifications (expected few for the busy one, several for the quiet one)",
                busy.0, busy.1, quiet.1
            ));
        }
    }
    writes.await??;
    bail_on(failures, &keygate)
}
