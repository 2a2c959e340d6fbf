//! One downstream Watch stream served by the hub: its watchers, the requests that create and
//! cancel them, and the delivery of their events from the mirror's event window.

mod rewound;
mod upstream;

use super::dedicated::{Dedicated, Report};
use super::watcher::{responses, Seat, Watcher, DUPLICATE_ID};
use super::Hub;
use crate::describe::Description;
use crate::errors::GatewayError;
use crate::metrics::RpcTimer;
use crate::policy::audit::{Audit, Pending, ServedBy, StreamAudit, Verdict};
use crate::policy::stream::StreamCaller;
use keygate_proto::etcdserverpb::watch_request::RequestUnion;
use keygate_proto::etcdserverpb::{
    ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse,
};
use std::collections::{BTreeMap, HashMap};
use tokio::sync::mpsc;
use tonic::{Code, Status, Streaming};

/// Revisions read from the window per watcher per pass; etcd batches an unsynced watcher's
/// backlog by the same number of revisions.
const MAX_REVISIONS: usize = 1000;

type Out = mpsc::Sender<Result<WatchResponse, Status>>;

pub(super) struct Stream {
    hub: Hub,
    out: Out,
    watchers: BTreeMap<i64, Watcher>,
    /// Watchers with an upstream watch of their own.
    dedicated: HashMap<i64, Dedicated>,
    dedicated_tx: mpsc::Sender<(i64, Report)>,
    next_id: i64,
    /// A WatchProgressRequest waits for every watcher to be synced.
    progress_owed: bool,
    /// The authorizers every creation is put to, when plugins are configured.
    caller: Option<StreamCaller>,
    /// The auditor every creation is reported to, when one is configured.
    audit: Option<StreamAudit>,
    /// The mirror's epoch the watchers were created in (see `rewound`).
    epoch: u64,
}

/// etcd's answer to a watch creation it refuses: created and canceled at once, with a reason.
fn refusal(header: Option<ResponseHeader>, reason: &str) -> WatchResponse {
    WatchResponse {
        header,
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: reason.to_string(),
        ..Default::default()
    }
}

/// Why the stream ended.
enum Ended {
    ClientGone,
    Failed(Status),
}

impl Stream {
    pub(super) async fn run(
        hub: Hub,
        mut inbound: Streaming<WatchRequest>,
        out: Out,
        timer: RpcTimer,
        (caller, audit): (Option<StreamCaller>, Option<StreamAudit>),
        mut leaderless: Option<tokio::sync::watch::Receiver<bool>>,
    ) {
        let (dedicated_tx, mut dedicated_rx) = mpsc::channel(64);
        let mut revision = hub.mirror.subscribe();
        let mut progress = tokio::time::interval(hub.progress_interval);
        progress.reset();
        let mut stream = Stream {
            hub: hub.clone(),
            out,
            watchers: BTreeMap::new(),
            dedicated: HashMap::new(),
            dedicated_tx,
            next_id: 0,
            progress_owed: false,
            caller,
            audit,
            epoch: hub.mirror.epoch(),
        };
        hub.metrics.streams.inc();
        let mut reading = true;
        let ended = loop {
            let step = tokio::select! {
                biased;
                () = hub.shutdown.wait() => Err(Ended::Failed(GatewayError::ShuttingDown.into())),
                () = stream.out.closed() => Err(Ended::ClientGone),
                () = crate::upstream::leader_lost(&mut leaderless) => Err(Ended::Failed(GatewayError::NoLeader.into())),
                message = inbound.message(), if reading => match message {
                    Ok(Some(request)) => {
                        hub.grpc.message_received(&crate::method::WATCH);
                        stream.handle(request).await
                    }
                    // A half-close ends nothing: etcd keeps delivering until the client leaves.
                    Ok(None) => { reading = false; Ok(()) }
                    Err(status) => Err(Ended::Failed(crate::errors::etcd_decode_error(&status).unwrap_or(status))),
                },
                Ok(()) = revision.changed() => stream.deliver().await,
                Some((id, report)) = dedicated_rx.recv() => stream.relay_dedicated(id, report).await,
                _ = progress.tick() => stream.periodic_progress().await,
            };
            if let Err(ended) = step {
                break ended;
            }
        };
        let code = match ended {
            Ended::ClientGone => Code::Cancelled,
            Ended::Failed(status) => {
                let code = status.code();
                let _ = stream.out.send(Err(status)).await;
                code
            }
        };
        timer.finish(code);
        hub.metrics.streams.dec();
        hub.metrics.watchers.sub(stream.watchers.len() as i64);
        hub.metrics
            .upstream_streams
            .sub(stream.dedicated.len() as i64);
    }

    async fn send(&self, resp: WatchResponse) -> Result<(), Ended> {
        self.hub.grpc.message_sent(&crate::method::WATCH);
        self.hub
            .metrics
            .events_sent
            .inc_by(resp.events.len() as u64);
        self.out.send(Ok(resp)).await.map_err(|_| Ended::ClientGone)
    }

    async fn handle(&mut self, request: WatchRequest) -> Result<(), Ended> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_owed = true;
                self.deliver().await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, mut create: WatchCreateRequest) -> Result<(), Ended> {
        // Watchers from before etcd went back go first: the new one belongs to the new history.
        self.cancel_if_rewound().await?;
        // Never start a watcher at a revision older than one some client has already seen.
        self.hub.mirror.catch_up().await;
        let current = self.hub.mirror.revision();
        let header = Some(self.hub.mirror.header(current));
        let refused = |reason: &str| refusal(header, reason);
        // Described once, as the caller named it, for the authorizers and the audit.
        let what = (self.caller.is_some() || self.audit.is_some())
            .then(|| Description::of(&crate::method::WATCH, &create));
        let pending =
            (self.audit.as_ref().zip(what.clone())).map(|(_, d)| Audit::begin_described(d));
        let checked = (self.caller.as_ref().zip(what.as_ref()))
            .map(|(caller, what)| super::admit_create(caller, what, &mut create));
        let tenancy = match checked {
            Some(Err(status)) => {
                self.audited(pending, Verdict::Deny, Err(&status)).await;
                return self.send(refused(status.message())).await;
            }
            Some(Ok(tenancy)) => tenancy,
            None => None,
        };
        let decision = crate::policy::audit::allowed(tenancy.is_some());
        let next = if create.start_revision > 0 {
            create.start_revision
        } else {
            current + 1
        };
        // As etcd: the range is checked before an id is taken.
        let mut watcher = match Watcher::new(0, &create, next, current) {
            Ok(watcher) => watcher,
            Err(reason) => {
                let status = Status::invalid_argument(reason);
                self.audited(pending, decision, Err(&status)).await;
                return self.send(refused(reason)).await;
            }
        };
        let id = if create.watch_id == 0 {
            self.free_id()
        } else {
            create.watch_id
        };
        if self.watchers.contains_key(&id) || self.dedicated.contains_key(&id) {
            let status = Status::invalid_argument(DUPLICATE_ID);
            self.audited(pending, decision, Err(&status)).await;
            return self.send(refused(DUPLICATE_ID)).await;
        }
        self.audited(pending, decision, Ok(Some(current))).await;
        watcher.id = id;
        watcher.seat = Seat {
            tenancy,
            prefix: self.hub.prefixes.watcher(&create.key),
        };
        if !self.hub.mirror.serving() {
            // The mirror's revision is not etcd's now: etcd's own answer says where it starts.
            return self.create_upstream(id, create, watcher.seat).await;
        }
        let in_window = self.servable_from(&mut watcher, next, current).await;
        // Created responses go out in request order, whoever serves the watcher.
        self.send(WatchResponse {
            header,
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await?;
        if !in_window || !self.hub.mirror.serving() {
            // From where the created response said, whatever etcd's revision is by now.
            create.start_revision = next;
            self.create_dedicated(id, create, watcher.seat);
            return Ok(());
        }
        self.watchers.insert(id, watcher);
        self.hub.metrics.watchers.inc();
        self.deliver().await
    }

    /// Whether the hub can serve `watcher` from `next` on, as etcd would. History is served from
    /// the window only where etcd still has it: events the window holds may already be
    /// compacted away upstream, and then etcd's answer is the compaction (and, for a watcher
    /// that wants prev_kv, no previous value where the revision before was compacted).
    async fn servable_from(&self, watcher: &mut Watcher, next: i64, current: i64) -> bool {
        let in_window = next > current
            || self.hub.mirror.events_since(next, 0).is_ok() && self.hub.history_kept(next).await;
        if in_window
            && watcher.wants_prev_kv()
            && next <= current
            && !self.hub.history_kept(next - 1).await
        {
            watcher.no_prev_kv_at = Some(next);
        }
        in_window
    }

    /// Phase 8 for one watch creation: its audit event, when an auditor is configured.
    async fn audited(
        &self,
        pending: Option<Pending>,
        decision: Verdict,
        outcome: Result<Option<i64>, &Status>,
    ) {
        if let (Some(pending), Some(audit)) = (pending, &self.audit) {
            audit
                .finish(pending, decision, outcome, ServedBy::Hub)
                .await;
        }
    }

    fn free_id(&mut self) -> i64 {
        while self.watchers.contains_key(&self.next_id)
            || self.dedicated.contains_key(&self.next_id)
        {
            self.next_id += 1;
        }
        self.next_id += 1;
        self.next_id - 1
    }

    async fn cancel(&mut self, id: i64) -> Result<(), Ended> {
        if self.watchers.remove(&id).is_some() {
            self.hub.metrics.watchers.dec();
        } else if self.dedicated.remove(&id).is_some() {
            self.hub.metrics.upstream_streams.dec();
        } else {
            // etcd answers nothing for an id it doesn't know.
            return Ok(());
        }
        let header = Some(self.hub.mirror.header(self.hub.mirror.revision()));
        self.send(WatchResponse {
            header,
            watch_id: id,
            canceled: true,
            ..Default::default()
        })
        .await
    }

    /// Sends every hub watcher the events it is owed, up to the mirror's revision.
    async fn deliver(&mut self) -> Result<(), Ended> {
        self.cancel_if_rewound().await?;
        if self.hub.mirror.dropped() {
            self.move_upstream();
        }
        self.hand_over_ready().await;
        let current = self.hub.mirror.revision();
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            while let Some(watcher) = self.watchers.get(&id) {
                if watcher.next > current {
                    break;
                }
                match self.hub.mirror.events_since(watcher.next, MAX_REVISIONS) {
                    Ok(revisions) if revisions.is_empty() => {
                        if let Some(w) = self.watchers.get_mut(&id) {
                            w.next = current + 1;
                        }
                        break;
                    }
                    Ok(revisions) => {
                        if !watcher.catching_up && revisions.len() > 1 {
                            self.hub.metrics.caught_up.inc();
                        }
                        let batches: Vec<_> = if watcher.catching_up {
                            vec![(current, &revisions[..])]
                        } else {
                            revisions
                                .iter()
                                .map(|r| (r.revision, std::slice::from_ref(r)))
                                .collect()
                        };
                        let last = revisions.last().map_or(current, |r| r.revision);
                        let (fragment, max) = (watcher.fragment, self.hub.max_response_bytes);
                        let mut out = Vec::new();
                        for (header_revision, revs) in batches {
                            let events = watcher.select(revs).map_err(Ended::Failed)?;
                            if !events.is_empty() {
                                let header = self.hub.mirror.header(header_revision);
                                out.extend(responses(id, header, events, fragment, max));
                            }
                        }
                        if let Some(w) = self.watchers.get_mut(&id) {
                            w.next = last + 1;
                            w.catching_up = false;
                            w.events_since_tick |= !out.is_empty();
                            w.seat.sent(out.iter().map(|r| r.events.len()).sum());
                        }
                        for resp in out {
                            self.send(resp).await?;
                        }
                    }
                    Err(behind) => {
                        // Fell off the window (or the mirror reloaded): the client relists, as
                        // after a compaction.
                        self.watchers.remove(&id);
                        self.hub.metrics.watchers.dec();
                        self.hub.metrics.canceled_lagging.inc();
                        let header = Some(self.hub.mirror.header(current));
                        let resp = WatchResponse {
                            header,
                            watch_id: id,
                            canceled: true,
                            compact_revision: behind.oldest,
                            ..Default::default()
                        };
                        self.send(resp).await?;
                        break;
                    }
                }
            }
        }
        if !self.progress_owed {
            return Ok(());
        }
        let at = self.progress_revision(current);
        let mut synced = self.watchers.values().all(|w| w.next > at);
        // Every dedicated watcher is asked, so none waits on another's answer.
        for watch in self.dedicated.values_mut() {
            synced &= watch.synced_at(at);
        }
        if synced {
            self.progress_owed = false;
            self.hub.metrics.progress_sent.inc();
            let header = Some(self.hub.mirror.header(at));
            self.send(WatchResponse {
                header,
                watch_id: -1,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }

    /// The revision a WatchProgressRequest is answered at: the mirror's, or — while the mirror
    /// does not serve and its revision may be behind etcd's — the latest revision etcd has shown
    /// anyone (every watcher must have been sent everything up to it).
    fn progress_revision(&self, current: i64) -> i64 {
        if self.hub.mirror.serving() {
            return current;
        }
        let known = self.dedicated.values().map(|w| w.known()).max();
        current.max(self.hub.mirror.seen()).max(known.unwrap_or(0))
    }

    /// etcd's periodic progress notification, to synced watchers that asked for it and were
    /// sent no events since the last one.
    async fn periodic_progress(&mut self) -> Result<(), Ended> {
        self.deliver().await?;
        let current = self.hub.mirror.revision();
        let mut due = Vec::new();
        for w in self.watchers.values_mut() {
            if w.progress_notify && w.next > current && !w.events_since_tick {
                due.push(w.id);
            }
            w.events_since_tick = false;
        }
        for id in due {
            self.hub.metrics.progress_sent.inc();
            let header = Some(self.hub.mirror.header(current));
            self.send(WatchResponse {
                header,
                watch_id: id,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }
}
