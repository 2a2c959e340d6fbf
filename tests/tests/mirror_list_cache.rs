//! The mirror's cache of encoded LIST answers against etcd's own answers: large LISTs asked
//! twice at one revision (the second from the cache) and again after writes.

use crate::mirror_common;

use std::time::Duration;

use anyhow::{ensure, Result};
use keygate_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keygate_proto::etcdserverpb::{DeleteRangeRequest, RangeRequest};
use keygate_tests::{EtcdCluster, Keygate};
use mirror_common::{b, differs, metric, put, wait_serving};

/// Large LISTs come from the mirror's cache of encoded answers when they are asked again at the
/// same revision; after a write they are read afresh. Every answer is compared with etcd's,
/// before and after writes, and keygate must have answered some from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_lists_match_etcd_across_writes() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    wait_serving(&keygate, Duration::from_secs(15)).await?;
    let (mut via, mut direct) = (keygate.clients().await?, cluster.clients(0).await?);
    let value =
        |i: usize, round: usize| format!("{}{i:02}", char::from(b'a' + round as u8)).repeat(200);
    for i in 0..30 {
        put(&mut via, &format!("big/{i:02}"), &value(i, 0)).await?;
    }
    let list = |f: &dyn Fn(&mut RangeRequest)| {
        let mut req = RangeRequest {
            key: b("big/"),
            range_end: b("big0"),
            ..Default::default()
        };
        f(&mut req);
        req
    };
    let requests = [
        list(&|_| {}),
        list(&|r| r.serializable = true),
        list(&|r| r.limit = 12),
        list(&|r| {
            r.sort_order = SortOrder::Descend as i32;
            r.sort_target = SortTarget::Mod as i32;
        }),
        list(&|r| r.min_mod_revision = 10),
        list(&|r| r.key = b("big/05")),
    ];
    let mut mismatches = Vec::new();
    for round in 1..=3 {
        // Each request twice at the same revision (the second from the cache), then a write.
        for _ in 0..2 {
            for req in &requests {
                if let Some(d) = differs(&mut via, &mut direct, req).await {
                    mismatches.push(format!("round {round}: {d}"));
                }
            }
        }
        put(
            &mut via,
            &format!("big/{:02}", round * 7),
            &value(round, round),
        )
        .await?;
        via.kv
            .delete_range(DeleteRangeRequest {
                key: b(&format!("big/{:02}", round * 3)),
                ..Default::default()
            })
            .await?;
    }
    let hits = metric(
        &keygate,
        "keygate_mirror_list_cache_total",
        &[("result", "hit")],
    )
    .await?;
    ensure!(
        mismatches.is_empty(),
        "{} LISTs differ from etcd's answer:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    ensure!(hits >= 15.0, "only {hits} LISTs came from the cache");
    Ok(())
}
