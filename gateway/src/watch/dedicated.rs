//! A watcher whose start revision is older than the event window gets an upstream watch of its
//! own. Its responses are relayed under the downstream watch id; if the member fails, the watch
//! resumes on another member from the revision after the last one delivered. The stream learns
//! how far the watcher has been sent every event, to hand it over to the hub once it reaches
//! the window, and can ask etcd for a progress answer on the watcher's upstream stream.

use super::watcher::Seat;
use crate::upstream::Pool;
use keygate_proto::etcdserverpb::watch_client::WatchClient;
use keygate_proto::etcdserverpb::watch_request::RequestUnion;
use keygate_proto::etcdserverpb::{
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::Request;

/// Where etcd's created response goes when the stream waits for it.
pub type Created = oneshot::Sender<WatchResponse>;

/// The stream's side of a watcher with an upstream watch of its own; dropping it ends the
/// upstream watch.
pub struct Dedicated {
    task: JoinHandle<()>,
    asks: watch::Sender<u64>,
    /// The client's create request (confined to the tenant's namespace), for the hand-over.
    pub create: WatchCreateRequest,
    pub seat: Seat,
    /// Every event up to this revision has been relayed.
    through: i64,
    /// The highest revision of an event relayed.
    last_event: i64,
    /// Relayed part of a revision's events: not a point to hand over at.
    mid_fragment: bool,
    /// etcd's latest answer to a progress request on the upstream stream (0: none).
    answered: i64,
    asking: bool,
    /// The hub has asked etcd whether it still keeps the history from the start revision.
    pub start_checked: bool,
}

impl Dedicated {
    /// Starts the upstream watch. With `created`, etcd's own created response is sent there
    /// (its header says where the watch starts) instead of being left out.
    pub fn spawn(
        pool: Pool,
        (id, create): (i64, WatchCreateRequest),
        seat: Seat,
        out: mpsc::Sender<(i64, Report)>,
        created: Option<Created>,
    ) -> Dedicated {
        let (asks, asks_rx) = watch::channel(0);
        let task = tokio::spawn(run(pool, id, create.clone(), (out, created), asks_rx));
        Dedicated {
            task,
            asks,
            create,
            seat,
            through: 0,
            last_event: 0,
            mid_fragment: false,
            answered: 0,
            asking: false,
            start_checked: false,
        }
    }

    /// Takes in what the task reported; the response to relay, if any.
    pub fn note(&mut self, report: Report) -> Option<WatchResponse> {
        match report {
            Report::Progress(revision) => {
                self.answered = self.answered.max(revision);
                self.asking = false;
                None
            }
            Report::Relay(resp, through) => {
                self.through = self.through.max(through);
                if let Some(resp) = &resp {
                    let last = resp.events.last().and_then(|e| e.kv.as_ref());
                    if let Some(kv) = last {
                        self.last_event = self.last_event.max(kv.mod_revision);
                    }
                    self.mid_fragment = resp.fragment;
                }
                resp
            }
        }
    }

    /// Whether a stream progress reply at `current` holds for this watcher: every event up to
    /// `current` relayed (as far as the relayed events show, or as etcd answered), and none
    /// beyond it. Otherwise etcd is asked, once at a time.
    pub fn synced_at(&mut self, current: i64) -> bool {
        let through = self.known();
        if through < current && !self.asking {
            self.asking = true;
            self.asks.send_modify(|n| *n += 1);
        }
        through >= current && self.last_event <= current
    }

    /// The latest revision etcd has shown this watcher at.
    pub fn known(&self) -> i64 {
        self.through.max(self.answered)
    }

    /// The explicit start revision of a watcher that has relayed nothing and learned nothing
    /// from etcd yet, until the hub has checked it.
    pub fn untouched_start(&self) -> Option<i64> {
        let start = self.create.start_revision;
        let untouched = self.through == 0 && self.last_event == 0 && !self.mid_fragment;
        (start > 0 && untouched && !self.start_checked).then_some(start)
    }

    /// The revision the hub can take this watcher on from, once every event before it has been
    /// relayed and the mirror has reached them.
    pub fn handover_point(&self, current: i64) -> Option<i64> {
        (self.through > 0 && self.through <= current && !self.mid_fragment)
            .then_some(self.through + 1)
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a dedicated watcher's task tells its stream.
pub enum Report {
    /// A response for the client (`None`: nothing to relay), and the revision through which the
    /// watcher has now been sent every event (0: not known yet).
    Relay(Option<WatchResponse>, i64),
    /// etcd's answer to a progress request on the watcher's upstream stream, at this revision.
    Progress(i64),
}

/// Relays one upstream watcher until it is canceled upstream or `out` closes. Each change of
/// `asks` sends etcd a WatchProgressRequest (again after a reconnect, until answered).
async fn run(
    pool: Pool,
    id: i64,
    mut create: WatchCreateRequest,
    (out, mut created): (mpsc::Sender<(i64, Report)>, Option<Created>),
    mut asks: watch::Receiver<u64>,
) {
    create.watch_id = 0;
    // etcd's own periodic notifications tell how far a quiet watcher is synced; the client's
    // are relayed only if it asked for them.
    let client_wants_progress = create.progress_notify;
    create.progress_notify = true;
    // Known only from what etcd sent: an event, or a revision it said the watcher is synced
    // at. (Never from the start revision: etcd may yet answer that it was compacted.)
    let mut through = 0;
    let mut asked = false;
    loop {
        let member = match pool.pick() {
            Ok(member) => member,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (tx, rx) = mpsc::channel(2);
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
        if asked && ask(&tx).await.is_err() {
            return;
        }
        let every = Duration::from_secs(1);
        let mut health = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                // A member that stopped answering holds the watch until HTTP/2 keep-alive
                // gives up; the health checker knows sooner: resume elsewhere.
                _ = health.tick() => {
                    if !pool.should_leave(&member) {
                        continue;
                    }
                    break;
                }
                changed = asks.changed() => {
                    if changed.is_err() {
                        return; // the stream is gone
                    }
                    asked = true;
                    if ask(&tx).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let mut resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => break,
                Err(status) => {
                    pool.note_failure(&member, &status);
                    break;
                }
            };
            let revision = resp.header.as_ref().map_or(0, |h| h.revision);
            if resp.watch_id == -1 && is_progress(&resp) {
                // An answer for the whole upstream stream, which etcd (before 3.5.8) may send
                // before the watcher is synced: reported, never taken as the resume point.
                asked = false;
                if out.send((id, Report::Progress(revision))).await.is_err() {
                    return;
                }
                continue;
            }
            if let Some(last) = resp.events.last().and_then(|e| e.kv.as_ref()) {
                create.start_revision = last.mod_revision + 1;
                if !resp.fragment {
                    through = last.mod_revision;
                }
            } else if resp.created && create.start_revision == 0 || is_progress(&resp) {
                // Everything up to the header's revision has been delivered.
                create.start_revision = create.start_revision.max(revision + 1);
                through = through.max(revision);
            }
            if let Some(tx) = created.take_if(|_| resp.created) {
                let canceled = resp.canceled;
                if tx.send(resp).is_err() || canceled {
                    return;
                }
                if out.send((id, Report::Relay(None, through))).await.is_err() {
                    return;
                }
                continue;
            }
            // The stream sent the created response already, in request order.
            let relay =
                if resp.created && !resp.canceled || is_progress(&resp) && !client_wants_progress {
                    None
                } else {
                    resp.created = false;
                    resp.watch_id = id;
                    Some(resp)
                };
            let canceled = relay.as_ref().is_some_and(|r| r.canceled);
            if out.send((id, Report::Relay(relay, through))).await.is_err() || canceled {
                return;
            }
        }
        drop(tx);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ask(tx: &mpsc::Sender<WatchRequest>) -> Result<(), ()> {
    let request = WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    };
    tx.send(request).await.map_err(|_| ())
}

fn is_progress(resp: &WatchResponse) -> bool {
    resp.events.is_empty() && !resp.created && !resp.canceled && resp.compact_revision == 0
}
