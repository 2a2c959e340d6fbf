//! Backfill: after listing at revision R, the event window is filled with etcd's events of the
//! revisions just before R (`mirror.backfill_revisions`), so that a watch resumed from a
//! revision a client saw before keygate started — kube-apiserver's watches after a keygate
//! restart — is served by the hub instead of an upstream watch of its own. It runs beside the
//! mirror, which serves as soon as the list is in; a watch that arrives before the history does
//! starts on an upstream watch of its own and moves to the hub once it has caught up.

use super::window::Window;
use super::Shared;
use crate::upstream::Pool;
use bytes::Bytes;
use keygate_proto::etcdserverpb::watch_request::RequestUnion;
use keygate_proto::etcdserverpb::{watch_client::WatchClient, WatchCreateRequest, WatchRequest};
use std::sync::Arc;
use std::time::Duration;
use tonic::Request;

/// How long a backfill may take before keygate gives up on it and starts without history.
const DEADLINE: Duration = Duration::from_secs(30);

/// Reads etcd's events of the revisions up to `revision` (as many as configured, and as etcd
/// has not compacted), with etcd's prev_kv, and puts them in front of the event window — which
/// the mirror has served from since it was reset at `revision` — if it still starts there.
pub(super) async fn run(shared: Arc<Shared>, pool: Pool, revision: i64) {
    let Some(older) = window(&shared, &pool, revision).await else {
        return;
    };
    let from = older.oldest();
    let joined = match shared.window.write() {
        Ok(mut window) => {
            let joined = window.prepend(older, revision);
            shared.metrics.window_oldest.set(window.oldest());
            joined
        }
        Err(_) => false,
    };
    if joined {
        tracing::info!(from, to = revision, "mirror event window backfilled");
    } else {
        tracing::info!(
            revision,
            "mirror backfill dropped: the mirror was reloaded meanwhile"
        );
    }
}

/// A window of etcd's events up to `revision`; `None` when none are configured or etcd could
/// not send them in time.
async fn window(shared: &Shared, pool: &Pool, revision: i64) -> Option<Window> {
    // The window holds no more than window_revisions.
    let wanted = shared
        .config
        .backfill_revisions
        .min(shared.config.window_revisions);
    let wanted = i64::try_from(wanted).unwrap_or(i64::MAX);
    if wanted == 0 || revision < 2 {
        return None;
    }
    let start = (revision - wanted + 1).max(2);
    match tokio::time::timeout(DEADLINE, fill(shared, pool, start, revision)).await {
        Ok(Ok(window)) => Some(window),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "mirror backfill failed; the event window starts empty");
            None
        }
        Err(_) => {
            tracing::warn!("mirror backfill timed out; the event window starts empty");
            None
        }
    }
}

/// Watches the whole keyspace from `start` until the event at `revision` arrives. A start that
/// etcd has compacted moves up to the compaction revision.
async fn fill(
    shared: &Shared,
    pool: &Pool,
    mut start: i64,
    revision: i64,
) -> Result<Window, String> {
    let config = &shared.config;
    'attempt: loop {
        let mut window = Window::new(config.window_revisions, config.window_bytes);
        window.reset(start - 1);
        let member = pool.pick().map_err(|e| e.to_string())?;
        let create = WatchCreateRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            start_revision: start,
            prev_kv: true,
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        };
        tx.send(create).await.map_err(|e| e.to_string())?;
        let request = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut stream = WatchClient::new(member.channel())
            .max_decoding_message_size(usize::MAX)
            .watch(request)
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        while let Some(resp) = stream.message().await.map_err(|s| s.to_string())? {
            if resp.compact_revision > 0 {
                if resp.compact_revision > revision {
                    return Err(format!("compacted past revision {revision}"));
                }
                start = resp.compact_revision.max(2);
                continue 'attempt;
            }
            if resp.canceled {
                return Err(format!("watch canceled: {}", resp.cancel_reason));
            }
            let events: Vec<_> = resp
                .events
                .into_iter()
                .take_while(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision <= revision))
                .collect();
            let last = events
                .last()
                .and_then(|e| e.kv.as_ref())
                .map(|kv| kv.mod_revision);
            let prev = events.iter().map(|e| e.prev_kv.clone()).collect();
            window.push(&events, prev);
            // Every revision of the whole keyspace has an event, so this is the end.
            if last == Some(revision) {
                drop(tx);
                return Ok(window);
            }
        }
        return Err("watch stream ended".into());
    }
}
