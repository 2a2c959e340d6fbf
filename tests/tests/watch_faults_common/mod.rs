//! Helpers the watch fault tests share: a put with a deadline, waiting for the mirror to
//! serve, and the revisions of a run of events.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::PutRequest;
use keygate_proto::mvccpb::Event;
use keygate_tests::process::poll_until;
use keygate_tests::watch_record::metric;
use keygate_tests::{Clients, Keygate};

pub const T: Duration = Duration::from_secs(20);

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub async fn put(c: &mut Clients, key: String, value: Bytes) -> Result<i64> {
    let req = PutRequest {
        key: Bytes::from(key),
        value,
        ..Default::default()
    };
    let resp = tokio::time::timeout(Duration::from_secs(3), c.kv.put(req))
        .await
        .context("put timed out")??;
    Ok(resp.into_inner().header.map_or(0, |h| h.revision))
}

pub async fn wait_serving(keygate: &Keygate) -> Result<()> {
    poll_until(T, "keygate_mirror_serving 1", || async {
        Ok(metric(keygate.addr(), "keygate_mirror_serving").await? == 1.0)
    })
    .await
}

pub fn revs(events: &[Event]) -> Vec<i64> {
    events
        .iter()
        .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
        .collect()
}
