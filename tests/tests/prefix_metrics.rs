//! `metrics.prefix_depth`: KV requests and their bytes by the prefix of their first key, and the
//! hub's watchers and the events sent them by the prefix of their key, with the number of labels
//! bounded by `metrics.max_prefixes`.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{
    compare, request_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use keygate_tests::process::poll_until;
use keygate_tests::watch::{prefix_watch, WatchStream};
use keygate_tests::watch_record::scrape;
use keygate_tests::{EtcdCluster, Keygate};

fn put(key: &str) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from(vec![b'v'; 100]),
        ..Default::default()
    }
}

/// The value of the sample of `family` whose labels are exactly `labels`.
fn sample(body: &str, family: &str, labels: &str) -> Option<u64> {
    let head = format!("{family}{{{labels}}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&head))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_requests_are_counted_by_key_prefix() -> Result<()> {
    let etcd = EtcdCluster::start(1).await?;
    let toml = "[metrics]\nprefix_depth = 2\nmax_prefixes = 2\n";
    let keygate = Keygate::start_with_config(&etcd.client_urls(), toml, &[]).await?;
    let mut c = keygate.clients().await?;

    for name in ["web-0", "web-1", "web-2"] {
        c.kv.put(put(&format!("/registry/pods/default/{name}")))
            .await?;
    }
    c.kv.put(put("/registry/events/default/e1")).await?;
    for serializable in [false, true] {
        let list = RangeRequest {
            key: Bytes::from_static(b"/registry/pods/"),
            range_end: Bytes::from_static(b"/registry/pods0"),
            serializable,
            ..Default::default()
        };
        c.kv.range(list).await?;
    }
    let txn = TxnRequest {
        compare: vec![Compare {
            key: Bytes::from_static(b"/registry/pods/default/web-0"),
            target: compare::CompareTarget::Mod as i32,
            result: compare::CompareResult::Greater as i32,
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put(
                "/registry/pods/default/web-3",
            ))),
        }],
        ..Default::default()
    };
    c.kv.txn(txn).await?;
    let delete = DeleteRangeRequest {
        key: Bytes::from_static(b"/registry/events/default/e1"),
        ..Default::default()
    };
    c.kv.delete_range(delete).await?;
    // A third prefix: beyond max_prefixes.
    c.kv.put(put("/other/x")).await?;

    let body = scrape(keygate.addr()).await?;
    let requests = |method: &str, prefix: &str| {
        let labels = format!("method=\"{method}\",prefix=\"{prefix}\"");
        sample(&body, "keygate_prefix_requests_total", &labels)
    };
    let expected = [
        ("Put", "/registry/pods/", 3),
        ("Range", "/registry/pods/", 2),
        ("Txn", "/registry/pods/", 1),
        ("Put", "/registry/events/", 1),
        ("DeleteRange", "/registry/events/", 1),
        ("Put", "other", 1),
    ];
    for (method, prefix, want) in expected {
        let got = requests(method, prefix);
        anyhow::ensure!(
            got == Some(want),
            "{method} {prefix}: {got:?}, want {want}\n{}",
            body.lines()
                .filter(|l| l.starts_with("keygate_prefix"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let listed = sample(
        &body,
        "keygate_prefix_message_bytes_total",
        "direction=\"out\",method=\"Range\",prefix=\"/registry/pods/\"",
    )
    .context("no Range bytes out")?;
    // Two LISTs of three 100-byte values each.
    anyhow::ensure!(listed >= 600, "Range bytes out {listed}");
    Ok(())
}

/// The hub's watchers by the prefix of their key, and the events sent them: two watchers under
/// `/registry/pods/` see three puts each, one under `/registry/events/` sees one; a canceled
/// watcher and a closed stream leave the gauge.
#[tokio::test(flavor = "multi_thread")]
async fn watchers_and_their_events_are_counted_by_key_prefix() -> Result<()> {
    const WAIT: Duration = Duration::from_secs(10);
    let etcd = EtcdCluster::start(1).await?;
    let toml = "[metrics]\nprefix_depth = 2\n";
    let keygate = Keygate::start_with_config(&etcd.client_urls(), toml, &[]).await?;
    let addr = keygate.addr().to_string();
    let metric = |family: &'static str, prefix: &'static str| {
        let addr = addr.clone();
        async move {
            let body = scrape(&addr).await?;
            Ok::<_, anyhow::Error>(sample(&body, family, &format!("prefix=\"{prefix}\"")))
        }
    };
    poll_until(WAIT, "the mirror serving", || {
        let addr = addr.clone();
        async move { Ok(scrape(&addr).await?.contains("keygate_mirror_serving 1")) }
    })
    .await?;

    let c = keygate.clients().await?;
    let mut pods = WatchStream::open(&c, prefix_watch("/registry/pods/", 0)).await?;
    pods.create(prefix_watch("/registry/pods/default/", 0))
        .await?;
    let mut events = WatchStream::open(&c, prefix_watch("/registry/events/", 0)).await?;
    for _ in 0..2 {
        ensure!(pods.next(WAIT).await?.created, "pods watch not created");
    }
    ensure!(events.next(WAIT).await?.created, "events watch not created");
    let mut kv = c.kv.clone();
    for name in ["web-0", "web-1", "web-2"] {
        kv.put(put(&format!("/registry/pods/default/{name}")))
            .await?;
    }
    kv.put(put("/registry/events/default/e1")).await?;

    let expected = [
        ("keygate_prefix_watch_events_total", "/registry/pods/", 6),
        ("keygate_prefix_watch_events_total", "/registry/events/", 1),
        ("keygate_prefix_watchers", "/registry/pods/", 2),
        ("keygate_prefix_watchers", "/registry/events/", 1),
    ];
    for (family, prefix, want) in expected {
        let what = format!("{family}{{prefix=\"{prefix}\"}} {want}");
        poll_until(WAIT, &what, || async move {
            Ok(metric(family, prefix).await? == Some(want))
        })
        .await?;
    }
    let body = scrape(keygate.addr()).await?;
    let labels = "method=\"Watch\",prefix=\"/registry/pods/\"";
    let created = sample(&body, "keygate_prefix_requests_total", labels);
    ensure!(
        created == Some(2),
        "watch creations under pods: {created:?}"
    );

    pods.cancel(1).await?;
    drop(events);
    for (prefix, want) in [("/registry/pods/", 1), ("/registry/events/", 0)] {
        let what = format!("keygate_prefix_watchers{{prefix=\"{prefix}\"}} {want}");
        poll_until(WAIT, &what, || async move {
            Ok(metric("keygate_prefix_watchers", prefix).await? == Some(want))
        })
        .await?;
    }
    Ok(())
}
