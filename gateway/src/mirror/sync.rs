//! Keeps the mirror current: a paginated list at revision R (of the whole keyspace or of each
//! configured prefix), then one upstream watch of the whole keyspace from R+1.
//! A failed watch resumes from the mirror's revision + 1 on whichever member is healthy; a
//! compacted resume point, or a memory budget overrun, starts over with a fresh list.

use super::rewind::Resume;
use super::store::Store;
use super::Shared;
use crate::upstream::Pool;
use bytes::Bytes;
use keygate_proto::etcdserverpb::watch_request::RequestUnion;
use keygate_proto::etcdserverpb::{
    auth_client::AuthClient, kv_client::KvClient, watch_client::WatchClient, AuthStatusRequest,
    AuthenticateRequest, RangeRequest, WatchCreateRequest, WatchRequest,
};
use std::sync::Arc;
use std::time::Duration;
use tonic::Request;

const RETRY: Duration = Duration::from_millis(200);
/// After a memory budget overrun, how long before trying again (the keyspace may shrink).
const OVER_BUDGET_RETRY: Duration = Duration::from_secs(30);

/// Why a watch ended.
enum End {
    /// The resume revision was compacted away: only a fresh list can catch up.
    Compacted,
    /// The keyspace no longer fits in the memory budget.
    OverBudget,
    /// The stream or the member failed; resume from the mirror's revision.
    Failed(String),
    /// etcd's keyspace went back under the mirror (see `rewind`): only a fresh list holds it.
    Rewound,
}

pub(super) async fn run(shared: Arc<Shared>, pool: Pool) {
    loop {
        let store = match list(&shared, &pool).await {
            Ok(store) => store,
            Err(End::OverBudget) => {
                over_budget(&shared).await;
                continue;
            }
            Err(End::Compacted | End::Rewound) => continue,
            Err(End::Failed(e)) => {
                tracing::debug!(error = %e, "mirror list failed; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        tracing::info!(
            revision = store.revision(),
            keys = store.len(),
            "mirror loaded"
        );
        let revision = store.revision();
        shared.replace(store);
        tokio::spawn(super::backfill::run(shared.clone(), pool.clone(), revision));
        loop {
            match watch(&shared, &pool).await {
                End::Compacted => {
                    tracing::warn!(
                        revision = shared.revision(),
                        "mirror resume point was compacted; relisting"
                    );
                    break;
                }
                End::OverBudget => {
                    over_budget(&shared).await;
                    break;
                }
                End::Rewound => break,
                End::Failed(e) => {
                    shared.set_connected(false);
                    tracing::warn!(error = %e, revision = shared.revision(), "mirror watch ended; resuming");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
        shared.set_connected(false);
    }
}

async fn over_budget(shared: &Shared) {
    tracing::error!(
        max_bytes = shared.config.max_bytes,
        "the keyspace exceeds mirror.max_bytes; reads are forwarded to etcd until it fits"
    );
    shared.clear();
    tokio::time::sleep(OVER_BUDGET_RETRY).await;
}

/// Lists what the mirror holds (the whole keyspace, or each configured prefix) at one revision,
/// page by page.
async fn list(shared: &Shared, pool: &Pool) -> Result<Store, End> {
    let member = pool.pick().map_err(|e| End::Failed(e.to_string()))?;
    let mut client = KvClient::new(member.channel()).max_decoding_message_size(usize::MAX);
    check_auth(shared, &member).await;
    let mut kvs = Vec::new();
    let mut bytes = 0usize;
    // The first page fixes the revision; every later page is read at it.
    let mut revision = 0;
    for (start, end) in shared.coverage.ranges() {
        let mut key = start;
        loop {
            let page = RangeRequest {
                key: key.clone(),
                range_end: end.clone(),
                limit: shared.config.page_size,
                revision,
                ..Default::default()
            };
            let resp = client
                .range(page)
                .await
                .map_err(|s| End::Failed(s.to_string()))?
                .into_inner();
            if revision == 0 {
                let header = resp.header.unwrap_or_default();
                revision = header.revision;
                shared.set_header(&header);
            }
            if let Some(last) = resp.kvs.last() {
                let mut next = last.key.to_vec();
                next.push(0);
                key = Bytes::from(next);
            }
            bytes += resp
                .kvs
                .iter()
                .map(|kv| kv.key.len() + kv.value.len())
                .sum::<usize>();
            if bytes > shared.config.max_bytes {
                return Err(End::OverBudget);
            }
            kvs.extend(resp.kvs);
            if !resp.more {
                break;
            }
        }
    }
    shared.metrics.relists.inc();
    Ok(Store::from_list(kvs, revision))
}

/// The mirror serves reads without etcd's per-user permission checks, so it only serves while
/// etcd's authentication is off. etcd 3.4 has no AuthStatus: there an Authenticate with a user
/// that does not exist tells ("authentication is not enabled" while it is off). etcd logs that
/// failed attempt while authentication is on, so the caller asks less often then: returns true
/// when the answer came that way and authentication is on.
async fn check_auth(shared: &Shared, member: &crate::upstream::Member) -> bool {
    let mut auth = AuthClient::new(member.channel());
    let (enabled, probed) = match auth.auth_status(AuthStatusRequest {}).await {
        Ok(status) => (status.into_inner().enabled, false),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            let probe = AuthenticateRequest {
                name: "keygate-auth-probe".into(),
                password: String::new(),
            };
            let off = matches!(auth.authenticate(probe).await,
                Err(s) if s.code() == tonic::Code::FailedPrecondition
                    && s.message().contains("authentication is not enabled"));
            (!off, true)
        }
        Err(_) => (true, false),
    };
    shared.set_auth_enabled(enabled);
    probed && enabled
}

/// How long the periodic auth check waits for the member's answer.
const AUTH_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// While authentication is on and can only be asked about with a failed Authenticate (etcd
/// 3.4), the mirror asks every this many auth checks instead of every one.
const AUTH_PROBE_EVERY: u32 = 30;

/// Follows the keyspace from the mirror's revision + 1 until the stream ends.
async fn watch(shared: &Shared, pool: &Pool) -> End {
    let member = match pool.pick() {
        Ok(member) => member,
        Err(e) => return End::Failed(e.to_string()),
    };
    let epoch = shared.epoch.load(std::sync::atomic::Ordering::Acquire);
    let create = WatchCreateRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        start_revision: shared.revision() + 1,
        progress_notify: true,
        // Every revision still comes through (the mirror's revision is etcd's), but values
        // outside `mirror.prefixes` are not kept: etcd supplies their previous values.
        prev_kv: !shared.coverage.is_everything(),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    };
    if tx.send(create).await.is_err() {
        return End::Failed("watch request channel closed".into());
    }
    // Held open for as long as the watch runs; dropping it would half-close the stream.
    let _requests = tx;
    let mut request = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    // A member cut off from its leader must end the watch rather than go quiet.
    request.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut client = WatchClient::new(member.channel()).max_decoding_message_size(usize::MAX);
    let mut stream = match client.watch(request).await {
        Ok(resp) => resp.into_inner(),
        Err(status) => {
            pool.note_failure(&member, &status);
            return End::Failed(status.to_string());
        }
    };
    let mut auth_check = tokio::time::interval(Duration::from_secs(1));
    let (mut ticks, mut probed_on) = (0u32, false);
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            // A linearizable read found etcd behind the mirror.
            () = shared.rewound.notified() => return End::Rewound,
            _ = auth_check.tick() => {
                // A member that stopped answering (paused, its disk stalled) holds the watch
                // silently until HTTP/2 keep-alive gives up; the health checker knows sooner.
                if pool.should_leave(&member) {
                    return End::Failed("the member is unhealthy".into());
                }
                if shared.rewound_since(epoch) {
                    return End::Rewound;
                }
                ticks = ticks.wrapping_add(1);
                if !probed_on || ticks % AUTH_PROBE_EVERY == 0 {
                    // Bounded: a member that stops answering must not hold this loop.
                    let check = check_auth(shared, &member);
                    if let Ok(on) = tokio::time::timeout(AUTH_CHECK_TIMEOUT, check).await {
                        probed_on = on;
                    }
                }
                continue;
            }
        };
        let resp = match message {
            Ok(Some(resp)) => resp,
            Ok(None) => return End::Failed("watch stream closed".into()),
            Err(status) => {
                pool.note_failure(&member, &status);
                return End::Failed(status.to_string());
            }
        };
        if resp.compact_revision != 0 {
            return End::Compacted;
        }
        if resp.canceled {
            return End::Failed(format!("watch canceled: {}", resp.cancel_reason));
        }
        if resp.created {
            let header = resp.header.unwrap_or_default();
            match super::rewind::check_resume(shared, &member, &header).await {
                Resume::Continues => {}
                Resume::Rewound(revision, why) => {
                    shared.rewind(revision, &why);
                    return End::Rewound;
                }
                Resume::Unknown(e) => return End::Failed(e),
            }
            shared.set_header(&header);
            shared.set_connected(true);
            continue;
        }
        if let Some(header) = &resp.header {
            shared.set_header(header);
        }
        if let Some(revision) = resp
            .events
            .last()
            .and_then(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision)
        {
            if !shared.apply(&resp.events, revision) {
                return End::OverBudget;
            }
        }
        // A progress notification adds nothing for a whole-keyspace mirror: every revision
        // etcd creates carries at least one event, and events are the mirror's revision.
    }
}
