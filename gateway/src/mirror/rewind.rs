//! etcd's keyspace can go back under the mirror: a cluster restored from a snapshot starts again
//! at the snapshot's revision (often with the same cluster id), or the endpoints now lead to
//! another cluster. Resuming the watch from the mirror's revision + 1 would then wait for
//! revisions the new history reaches only later, while the mirror keeps answering with keys
//! etcd no longer has. The mirror notices when it resumes (or when a linearizable read sees an
//! older revision than it holds), drops what it holds, relists, and the watch streams cancel
//! their watchers from before so that their clients relist too.

use super::Shared;
use crate::upstream::Member;
use bytes::Bytes;
use keygate_proto::etcdserverpb::{kv_client::KvClient, RangeRequest, ResponseHeader};
use keygate_proto::mvccpb::event::EventType;
use std::sync::atomic::Ordering;

/// What resuming on a member found.
pub(super) enum Resume {
    /// etcd continues the history the mirror holds.
    Continues,
    /// etcd's keyspace went back (to this revision), or is another one.
    Rewound(i64, String),
    /// The member could not tell.
    Unknown(String),
}

impl Shared {
    /// Stops serving what the mirror holds, at once, and has it relist: etcd is at `revision`
    /// now, on another history than the one the mirror holds (behind it, or past it on other
    /// writes).
    pub(super) fn rewind(&self, revision: i64, why: &str) {
        if !self.loaded.swap(false, Ordering::AcqRel) {
            return;
        }
        tracing::error!(
            mirror_revision = self.revision(),
            etcd_revision = revision,
            why,
            "etcd's keyspace is no longer the history the mirror holds (restored from a \
             snapshot, or another cluster behind the endpoints): relisting; watchers are \
             canceled so that their clients relist"
        );
        self.metrics.rewinds.inc();
        self.metrics.serving.set(0);
        if let Some(lists) = &self.lists {
            lists.clear();
        }
        if let Ok(mut store) = self.store.write() {
            *store = super::Store::default();
        }
        if let Ok(mut window) = self.window.write() {
            window.reset(revision);
        }
        self.raft_term.store(0, Ordering::Relaxed);
        self.seen.reset(revision);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        // Wakes the watch streams (they cancel their watchers) and the mirror's watch.
        self.revision.send_replace(revision);
        self.rewound.notify_waiters();
    }

    /// Whether the mirror has started over since it was at `epoch` (see `Mirror::epoch`).
    pub(super) fn rewound_since(&self, epoch: u64) -> bool {
        self.epoch.load(Ordering::Acquire) != epoch
    }
}

/// Checks a watch just created on `member` from the mirror's revision + 1 (`header` is etcd's
/// created response's): same cluster, not behind the mirror, and the revision the mirror last
/// applied reads the same in etcd (a restored cluster may already have written past it).
pub(super) async fn check_resume(
    shared: &Shared,
    member: &Member,
    header: &ResponseHeader,
) -> Resume {
    let held = shared.revision();
    let known = shared.cluster_id.load(Ordering::Relaxed);
    if known != 0 && header.cluster_id != known {
        let why = format!("cluster id {known:x} became {:x}", header.cluster_id);
        return Resume::Rewound(header.revision, why);
    }
    let mut kv = KvClient::new(member.channel());
    if header.revision < held {
        // A member a little behind the one the mirror followed answers so too; a linearizable
        // read waits until it has caught up with the cluster.
        let probe = RangeRequest {
            key: Bytes::from_static(b"\0"),
            keys_only: true,
            ..Default::default()
        };
        let now = match kv.range(probe).await {
            Ok(resp) => resp.into_inner().header.map_or(0, |h| h.revision),
            Err(status) => return Resume::Unknown(status.to_string()),
        };
        if now < held {
            return Resume::Rewound(
                now,
                format!("etcd is at revision {now}, the mirror at {held}"),
            );
        }
    }
    let Some(event) = last_applied(shared, held) else {
        return Resume::Continues;
    };
    let Some(key) = event.kv.as_ref().map(|kv| kv.key.clone()) else {
        return Resume::Continues;
    };
    let read = RangeRequest {
        key,
        revision: held,
        ..Default::default()
    };
    // Compacted meanwhile, or the member failed: nothing to compare with; the watch carries on.
    let Ok(resp) = kv.range(read).await else {
        return Resume::Continues;
    };
    let found = resp.into_inner().kvs.into_iter().next();
    let same = match (event.r#type(), &event.kv, &found) {
        (EventType::Put, Some(applied), Some(found)) => {
            found.mod_revision == applied.mod_revision && found.value == applied.value
        }
        (EventType::Delete, _, None) => true,
        _ => false,
    };
    if same {
        Resume::Continues
    } else {
        let why = format!("revision {held} reads differently in etcd than the mirror applied it");
        Resume::Rewound(header.revision, why)
    }
}

/// The first event of revision `held`, when the event window still holds it.
fn last_applied(shared: &Shared, held: i64) -> Option<keygate_proto::mvccpb::Event> {
    let window = shared.window.read().ok()?;
    let revisions = window.since(held, 1).ok()?;
    let first = revisions.first().filter(|r| r.revision == held)?;
    first.events.first().cloned()
}
