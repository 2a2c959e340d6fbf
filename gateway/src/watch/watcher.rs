//! One downstream watcher: the keys it watches, its options, and how its events are filtered
//! and shaped into responses, following etcd's rules.

use crate::metrics::WatchedPrefix;
use crate::mirror::RevisionEvents;
use crate::namespace::{Namespace, Strip};
use crate::tenant::WatcherSlot;
use bytes::Bytes;
use keygate_proto::etcdserverpb::watch_create_request::FilterType;
use keygate_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use keygate_proto::mvccpb::{event::EventType, Event};
use prost::Message;
use std::sync::Arc;

/// etcd's reason for a create request whose range holds no key.
pub const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
/// etcd's reason for a client-chosen id already in use on the stream.
pub const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

enum End {
    /// Just the key.
    Single,
    /// Every key from the key on.
    FromKey,
    /// Keys before this one.
    Before(Bytes),
}

pub struct Watcher {
    pub id: i64,
    key: Bytes,
    end: End,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    pub fragment: bool,
    pub progress_notify: bool,
    /// Sent events since the last periodic progress tick: as etcd, it skips the next periodic
    /// notification (the events told it as much).
    pub events_since_tick: bool,
    /// The next revision this watcher is owed.
    pub next: i64,
    /// Created at a past revision and not yet caught up: its first events come in one response,
    /// as etcd sends an unsynced watcher's backlog.
    pub catching_up: bool,
    /// Events of this revision go out without prev_kv: it is the compaction revision, and etcd
    /// reads prev_kv at the revision before, which is gone.
    pub no_prev_kv_at: Option<i64>,
    /// What it is counted in, and its tenant's namespace.
    pub seat: Seat,
}

/// A tenant's watcher: its namespace and its place in the tenant's quota.
pub type Tenancy = (Namespace, WatcherSlot);

/// What a watcher is counted in while it lives, wherever the stream serves it (the hub or an
/// upstream watch of its own): its tenant — whose namespace is taken off its events — and the
/// key-prefix metrics.
#[derive(Default)]
pub struct Seat {
    pub tenancy: Option<Tenancy>,
    pub prefix: Option<WatchedPrefix>,
}

impl Seat {
    pub fn namespace(&self) -> Option<&Namespace> {
        self.tenancy.as_ref().map(|(ns, _)| ns)
    }

    /// Counts `events` sent to the watcher.
    pub fn sent(&self, events: usize) {
        if let Some(prefix) = &self.prefix {
            prefix.sent(events);
        }
    }
}

impl Watcher {
    /// A watcher as etcd would set it up; the error is etcd's cancel reason.
    pub fn new(
        id: i64,
        req: &WatchCreateRequest,
        next: i64,
        current: i64,
    ) -> Result<Watcher, &'static str> {
        let key = if req.key.is_empty() {
            Bytes::from_static(b"\0")
        } else {
            req.key.clone()
        };
        let end = match req.range_end.as_ref() {
            [] => End::Single,
            [0] => End::FromKey,
            end if key.as_ref() >= end => return Err(EMPTY_RANGE),
            _ => End::Before(req.range_end.clone()),
        };
        let has = |f: FilterType| req.filters.contains(&(f as i32));
        Ok(Watcher {
            id,
            key,
            end,
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
            prev_kv: req.prev_kv,
            fragment: req.fragment,
            progress_notify: req.progress_notify,
            events_since_tick: false,
            next,
            catching_up: next <= current,
            no_prev_kv_at: None,
            seat: Seat::default(),
        })
    }

    fn matches(&self, key: &[u8]) -> bool {
        match &self.end {
            End::Single => key == self.key.as_ref(),
            End::FromKey => key >= self.key.as_ref(),
            End::Before(end) => key >= self.key.as_ref() && key < end.as_ref(),
        }
    }

    pub fn wants_prev_kv(&self) -> bool {
        self.prev_kv
    }

    /// The create request that watches what this watcher does from the revision it is owed:
    /// for an upstream watch of its own that carries on where the hub stopped.
    pub fn resume_request(&self) -> WatchCreateRequest {
        let range_end = match &self.end {
            End::Single => Bytes::new(),
            End::FromKey => Bytes::from_static(b"\0"),
            End::Before(end) => end.clone(),
        };
        let filters = [
            (self.no_put, FilterType::Noput),
            (self.no_delete, FilterType::Nodelete),
        ];
        WatchCreateRequest {
            key: self.key.clone(),
            range_end,
            start_revision: self.next,
            progress_notify: self.progress_notify,
            filters: (filters.iter())
                .filter(|(on, _)| *on)
                .map(|(_, f)| *f as i32)
                .collect(),
            prev_kv: self.prev_kv,
            watch_id: self.id,
            fragment: self.fragment,
        }
    }

    /// This watcher's events among those of `revisions`, filtered and with prev_kv only when
    /// asked for. A tenant's watcher gets its events without the namespace; an event outside it fails
    /// the stream rather than reach the tenant.
    pub fn select(&self, revisions: &[Arc<RevisionEvents>]) -> Result<Vec<Event>, tonic::Status> {
        let mut out = Vec::new();
        for rev in revisions {
            for event in &rev.events {
                let Some(kv) = &event.kv else { continue };
                let is_put = event.r#type == EventType::Put as i32;
                if (is_put && self.no_put) || (!is_put && self.no_delete) || !self.matches(&kv.key)
                {
                    continue;
                }
                let mut event = event.clone();
                if !self.prev_kv || self.no_prev_kv_at == Some(rev.revision) {
                    event.prev_kv = None;
                }
                if let Some(ns) = self.seat.namespace() {
                    event.strip(ns)?;
                }
                out.push(event);
            }
        }
        Ok(out)
    }
}

/// The responses that carry `events` to watcher `id`: one, or — when the watcher allows
/// fragments and the response would reach `max_bytes` — several, as etcd splits them.
pub fn responses(
    id: i64,
    header: ResponseHeader,
    events: Vec<Event>,
    fragment: bool,
    max_bytes: usize,
) -> Vec<WatchResponse> {
    let whole = WatchResponse {
        header: Some(header),
        watch_id: id,
        events,
        ..Default::default()
    };
    if !fragment || whole.events.len() < 2 || whole.encoded_len() < max_bytes {
        return vec![whole];
    }
    let mut out = Vec::new();
    let mut events = whole.events.into_iter().peekable();
    while events.peek().is_some() {
        let mut cur = WatchResponse {
            header: Some(header),
            watch_id: id,
            fragment: true,
            ..Default::default()
        };
        while let Some(event) = events.peek() {
            cur.events.push(event.clone());
            if cur.events.len() > 1 && cur.encoded_len() >= max_bytes {
                cur.events.pop();
                break;
            }
            events.next();
        }
        cur.fragment = events.peek().is_some();
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_proto::mvccpb::KeyValue;

    fn create(key: &str, end: &str) -> WatchCreateRequest {
        WatchCreateRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
            ..Default::default()
        }
    }

    #[test]
    fn ranges_follow_etcd() {
        let w = Watcher::new(0, &create("a", ""), 1, 0).expect("valid");
        assert!(w.matches(b"a") && !w.matches(b"ab"));
        let w = Watcher::new(0, &create("a", "\0"), 1, 0).expect("valid");
        assert!(w.matches(b"zz") && !w.matches(b"0"));
        let w = Watcher::new(0, &create("", "\0"), 1, 0).expect("valid");
        assert!(w.matches(b"\0") && w.matches(b"a"));
        let w = Watcher::new(0, &create("a", "b"), 1, 0).expect("valid");
        assert!(w.matches(b"ab") && !w.matches(b"b"));
        assert_eq!(
            Watcher::new(0, &create("b", "a"), 1, 0).err(),
            Some(EMPTY_RANGE)
        );
        assert_eq!(
            Watcher::new(0, &create("a", "a"), 1, 0).err(),
            Some(EMPTY_RANGE)
        );
    }

    #[test]
    fn fragments_split_large_responses_only_when_asked() {
        let event = |i: u8| Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: Bytes::from(vec![i]),
                value: Bytes::from(vec![0; 100]),
                ..Default::default()
            }),
            prev_kv: None,
        };
        let events: Vec<Event> = (0..10).map(event).collect();
        assert_eq!(
            responses(1, ResponseHeader::default(), events.clone(), false, 300).len(),
            1
        );
        let parts = responses(1, ResponseHeader::default(), events, true, 300);
        assert!(parts.len() > 1);
        assert!(parts[..parts.len() - 1].iter().all(|r| r.fragment));
        assert!(parts.last().is_some_and(|r| !r.fragment));
        assert_eq!(parts.iter().map(|r| r.events.len()).sum::<usize>(), 10);
    }
}
