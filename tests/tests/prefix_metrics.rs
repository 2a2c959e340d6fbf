//! `metrics.prefix_depth`: KV requests and their bytes by the prefix of their first key, with the
//! number of labels bounded by `metrics.max_prefixes`.

use anyhow::{Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{
    compare, request_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
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
