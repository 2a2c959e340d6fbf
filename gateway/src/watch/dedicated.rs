//! A watcher whose start revision is older than the event window gets an upstream watch of its
//! own. Its responses are relayed under the downstream watch id; if the member fails, the watch
//! resumes on another member from the revision after the last one delivered.

use crate::upstream::Pool;
use keygate_proto::etcdserverpb::watch_client::WatchClient;
use keygate_proto::etcdserverpb::watch_request::RequestUnion;
use keygate_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Request;

/// Relays one upstream watcher until it is canceled upstream or `out` closes.
pub async fn run(
    pool: Pool,
    id: i64,
    mut create: WatchCreateRequest,
    out: mpsc::Sender<(i64, WatchResponse)>,
) {
    create.watch_id = 0;
    loop {
        let member = match pool.pick() {
            Ok(member) => member,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (tx, rx) = mpsc::channel(1);
        let request = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create.clone())),
        };
        if tx.send(request).await.is_err() {
            return;
        }
        let mut request = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        let mut stream = match WatchClient::new(member.channel())
            .max_decoding_message_size(usize::MAX)
            .watch(request)
            .await
        {
            Ok(resp) => resp.into_inner(),
            Err(status) => {
                pool.note_failure(&member, &status);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            let mut resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => break,
                Err(status) => {
                    pool.note_failure(&member, &status);
                    break;
                }
            };
            let revision = resp.header.as_ref().map_or(0, |h| h.revision);
            if let Some(last) = resp.events.last().and_then(|e| e.kv.as_ref()) {
                create.start_revision = last.mod_revision + 1;
            } else if resp.created && create.start_revision == 0 || is_progress(&resp) {
                // Everything up to the header's revision has been delivered.
                create.start_revision = create.start_revision.max(revision + 1);
            }
            // The stream sent the created response already, in request order.
            if resp.created {
                if !resp.canceled {
                    continue;
                }
                resp.created = false;
            }
            let canceled = resp.canceled;
            resp.watch_id = id;
            if out.send((id, resp)).await.is_err() || canceled {
                return;
            }
        }
        drop(tx);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is_progress(resp: &WatchResponse) -> bool {
    resp.events.is_empty() && !resp.created && !resp.canceled && resp.compact_revision == 0
}
