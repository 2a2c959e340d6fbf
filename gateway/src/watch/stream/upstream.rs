//! The stream's watchers on an upstream watch of their own: relaying what etcd sends them, and
//! handing each over to the hub once it has caught up with the event window.

use super::{Ended, Stream};
use crate::errors::GatewayError;
use crate::namespace::Strip;
use crate::watch::dedicated::{Dedicated, Report};
use crate::watch::watcher::{Seat, Watcher};
use keygate_proto::etcdserverpb::WatchCreateRequest;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a watch created while the mirror does not serve waits for etcd's created answer.
const CREATED_WAIT: Duration = Duration::from_secs(5);

impl Stream {
    /// A watcher on an upstream watch of its own, whose created response was sent already.
    pub(super) fn create_dedicated(&mut self, id: i64, create: WatchCreateRequest, seat: Seat) {
        let pool = self.hub.pool.clone();
        let watch = Dedicated::spawn(pool, (id, create), seat, self.dedicated_tx.clone(), None);
        self.keep_dedicated(id, watch);
    }

    fn keep_dedicated(&mut self, id: i64, watch: Dedicated) {
        self.dedicated.insert(id, watch);
        self.hub.metrics.upstream_streams.inc();
    }

    /// A watcher created while the mirror does not serve (it is loading, relisting or
    /// reconnecting): on an upstream watch of its own, whose created response — etcd's, with
    /// etcd's revision — the client gets before anything else the stream sends. The hub takes
    /// it over once the mirror serves and has reached it. If no member answers in time the
    /// creation is refused, the stream's other watchers unaffected.
    pub(super) async fn create_upstream(
        &mut self,
        id: i64,
        create: WatchCreateRequest,
        seat: Seat,
    ) -> Result<(), Ended> {
        let (created_tx, created_rx) = oneshot::channel();
        let pool = self.hub.pool.clone();
        let (out, created) = (self.dedicated_tx.clone(), Some(created_tx));
        let watch = Dedicated::spawn(pool, (id, create), seat, out, created);
        let Ok(Ok(mut resp)) = tokio::time::timeout(CREATED_WAIT, created_rx).await else {
            let header = Some(self.hub.mirror.header(self.hub.mirror.revision()));
            let reason = GatewayError::NoHealthyMember.to_string();
            return self.send(super::refusal(header, &reason)).await;
        };
        resp.watch_id = id;
        self.hub.mirror.observe(&resp);
        if !resp.canceled {
            self.keep_dedicated(id, watch);
        }
        self.send(resp).await
    }

    pub(super) async fn relay_dedicated(&mut self, id: i64, report: Report) -> Result<(), Ended> {
        let Some(watch) = self.dedicated.get_mut(&id) else {
            return Ok(()); // canceled or handed over meanwhile
        };
        if let Some(mut resp) = watch.note(report) {
            if let Some(ns) = watch.seat.namespace() {
                if let Err(status) = resp.strip(ns) {
                    return Err(Ended::Failed(status));
                }
            }
            watch.seat.sent(resp.events.len());
            self.hub.mirror.observe(&resp);
            if resp.canceled {
                self.dedicated.remove(&id);
                self.hub.metrics.upstream_streams.dec();
            }
            self.send(resp).await?;
        }
        let current = self.hub.mirror.revision();
        let movable =
            (self.dedicated.get(&id)).is_some_and(|w| w.handover_point(current).is_some());
        if movable || self.progress_owed {
            self.deliver().await?;
        }
        Ok(())
    }

    /// The mirror has dropped the keyspace (over its memory budget) and stopped following etcd:
    /// every hub watcher carries on from the revision it is owed on an upstream watch of its
    /// own, and the client sees no difference. They come back to the hub once the mirror serves
    /// again.
    pub(super) fn move_upstream(&mut self) {
        for (id, mut watcher) in std::mem::take(&mut self.watchers) {
            let create = watcher.resume_request();
            let seat = std::mem::take(&mut watcher.seat);
            self.hub.metrics.watchers.dec();
            // Its created response was sent when the client created it.
            self.create_dedicated(id, create, seat);
        }
    }

    /// Hands over every dedicated watcher that can move to the hub now.
    pub(super) async fn hand_over_ready(&mut self) {
        if self.dedicated.is_empty() || !self.hub.mirror.serving() {
            return;
        }
        let current = self.hub.mirror.revision();
        let ready: Vec<(i64, i64)> = (self.dedicated.iter())
            .filter_map(|(id, w)| w.handover_point(current).map(|next| (*id, next)))
            .filter(|(_, next)| self.hub.mirror.events_since(*next, 0).is_ok())
            .collect();
        for (id, next) in ready {
            // Sent every event before `next`: one revision per response from here, as etcd
            // sends a synced watcher's events.
            self.hand_over(id, next, |watcher| watcher.catching_up = false);
        }
        // A quiet watcher from an explicit start revision (kube-apiserver resuming at the
        // revision after its list) tells nothing until an event or etcd's progress notification,
        // minutes apart: while it has relayed nothing, the hub takes it on from its start, if
        // etcd still keeps that history.
        let untouched: Vec<(i64, i64)> = (self.dedicated.iter())
            .filter_map(|(id, w)| w.untouched_start().map(|start| (*id, start)))
            .filter(|(_, start)| self.hub.mirror.events_since(*start, 0).is_ok())
            .collect();
        for (id, start) in untouched {
            let Some(dedicated) = self.dedicated.get_mut(&id) else {
                continue;
            };
            dedicated.start_checked = true;
            let Ok(mut probe) = Watcher::new(id, &dedicated.create, start, current) else {
                continue;
            };
            // (The stream takes in no report meanwhile: the watcher stays untouched.)
            if self.servable_from(&mut probe, start, current).await {
                self.hand_over(id, start, |w| w.no_prev_kv_at = probe.no_prev_kv_at);
            }
        }
    }

    /// Moves a dedicated watcher to the hub from revision `next` on (`adjust` sets what else
    /// differs from a new watcher): its upstream watch ends.
    fn hand_over(&mut self, id: i64, next: i64, adjust: impl FnOnce(&mut Watcher)) {
        let current = self.hub.mirror.revision();
        let Some(mut dedicated) = self.dedicated.remove(&id) else {
            return;
        };
        let Ok(mut watcher) = Watcher::new(id, &dedicated.create, next, current) else {
            return; // its range was checked when it was created
        };
        adjust(&mut watcher);
        watcher.seat = std::mem::take(&mut dedicated.seat);
        self.watchers.insert(id, watcher);
        self.hub.metrics.upstream_streams.dec();
        self.hub.metrics.watchers.inc();
        self.hub.metrics.handovers.inc();
    }
}
