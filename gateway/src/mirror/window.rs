//! The retained event window: the events of the most recent revisions, each with the value the
//! key had before (prev_kv), as the mirror applied them. Watchers read from it at their own
//! pace; one that falls behind its oldest revision is told so, as after a compaction.

use keygate_proto::mvccpb::{Event, KeyValue};
use std::collections::VecDeque;
use std::sync::Arc;

/// The events of one revision, in the order etcd applied them, prev_kv filled in.
pub struct RevisionEvents {
    pub revision: i64,
    pub events: Vec<Event>,
    bytes: usize,
}

/// Why a read from the window could not be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FellBehind {
    /// The oldest revision the window can still serve.
    pub oldest: i64,
}

pub struct Window {
    revisions: VecDeque<Arc<RevisionEvents>>,
    /// The oldest revision servable: events from here on are all retained.
    oldest: i64,
    bytes: usize,
    max_revisions: usize,
    max_bytes: usize,
}

impl Window {
    pub fn new(max_revisions: usize, max_bytes: usize) -> Window {
        Window {
            revisions: VecDeque::new(),
            oldest: i64::MAX,
            bytes: 0,
            max_revisions,
            max_bytes,
        }
    }

    /// Forgets everything: the mirror was reloaded at `revision`, so only later events follow.
    pub fn reset(&mut self, revision: i64) {
        self.revisions.clear();
        self.bytes = 0;
        self.oldest = revision + 1;
    }

    /// The oldest revision servable.
    pub fn oldest(&self) -> i64 {
        self.oldest
    }

    /// Adds the events of a watch response (one or more revisions), with their previous values.
    pub fn push(&mut self, events: &[Event], prev: Vec<Option<KeyValue>>) {
        for (event, prev_kv) in events.iter().zip(prev) {
            let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            let mut event = event.clone();
            event.prev_kv = prev_kv;
            let size = event_bytes(&event);
            match self.revisions.back_mut().and_then(Arc::get_mut) {
                Some(last) if last.revision == revision => {
                    last.events.push(event);
                    last.bytes += size;
                }
                _ => self.revisions.push_back(Arc::new(RevisionEvents {
                    revision,
                    events: vec![event],
                    bytes: size,
                })),
            }
            self.bytes += size;
        }
        self.trim();
    }

    /// Puts `older` — etcd's events of the revisions up to `through`, read after this window
    /// was reset at `through` — in front of this window's, as far as the bounds allow. False
    /// (nothing changes) when this window no longer starts right after `through`.
    pub fn prepend(&mut self, older: Window, through: i64) -> bool {
        if self.oldest != through + 1 || older.oldest > self.oldest {
            return false;
        }
        let mut revisions = older.revisions;
        revisions.extend(self.revisions.drain(..));
        self.revisions = revisions;
        self.bytes += older.bytes;
        self.oldest = older.oldest;
        self.trim();
        true
    }

    /// Drops the oldest revisions past the bounds.
    fn trim(&mut self) {
        while self.revisions.len() > self.max_revisions
            || self.bytes > self.max_bytes && self.revisions.len() > 1
        {
            if let Some(dropped) = self.revisions.pop_front() {
                self.bytes -= dropped.bytes;
                self.oldest = dropped.revision + 1;
            }
        }
        if let Some(first) = self.revisions.front() {
            self.oldest = self.oldest.min(first.revision);
        }
    }

    /// The retained revisions from `from` on, at most `max` of them.
    pub fn since(&self, from: i64, max: usize) -> Result<Vec<Arc<RevisionEvents>>, FellBehind> {
        if from < self.oldest {
            return Err(FellBehind {
                oldest: self.oldest,
            });
        }
        let start = self.revisions.partition_point(|r| r.revision < from);
        Ok(self.revisions.range(start..).take(max).cloned().collect())
    }
}

fn event_bytes(event: &Event) -> usize {
    let kv = |kv: &Option<KeyValue>| {
        kv.as_ref()
            .map_or(0, |kv| kv.key.len() + kv.value.len() + 64)
    };
    kv(&event.kv) + kv(&event.prev_kv) + 32
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn put(key: &'static str, rev: i64) -> Event {
        let kv = KeyValue {
            key: Bytes::from_static(key.as_bytes()),
            mod_revision: rev,
            ..Default::default()
        };
        Event {
            r#type: 0,
            kv: Some(kv),
            prev_kv: None,
        }
    }

    #[test]
    fn groups_by_revision_and_serves_from_a_revision() {
        let mut w = Window::new(10, usize::MAX);
        w.reset(4);
        w.push(
            &[put("a", 5), put("b", 5), put("c", 6)],
            vec![None, None, None],
        );
        let got = w.since(5, 10).expect("in window");
        assert_eq!(
            got.iter()
                .map(|r| (r.revision, r.events.len()))
                .collect::<Vec<_>>(),
            [(5, 2), (6, 1)]
        );
        assert_eq!(w.since(6, 10).expect("in window").len(), 1);
        assert!(w.since(7, 10).expect("future is empty").is_empty());
        assert_eq!(w.since(4, 10).err(), Some(FellBehind { oldest: 5 }));
    }

    #[test]
    fn drops_the_oldest_revisions_past_the_bound() {
        let mut w = Window::new(2, usize::MAX);
        w.reset(0);
        for rev in 1..=4 {
            w.push(&[put("a", rev)], vec![None]);
        }
        assert_eq!(w.oldest(), 3);
        assert_eq!(w.since(2, 10).err(), Some(FellBehind { oldest: 3 }));
        assert_eq!(w.since(3, 10).expect("kept").len(), 2);
    }

    #[test]
    fn older_events_join_in_front_only_where_they_meet() {
        let mut w = Window::new(3, usize::MAX);
        w.reset(4);
        w.push(&[put("a", 5)], vec![None]);
        let mut older = Window::new(3, usize::MAX);
        older.reset(1);
        for rev in 2..=4 {
            older.push(&[put("b", rev)], vec![None]);
        }
        assert!(w.prepend(older, 4));
        assert_eq!(w.oldest(), 3, "trimmed to 3 revisions, the oldest dropped");
        assert_eq!(
            w.since(3, 10)
                .expect("kept")
                .iter()
                .map(|r| r.revision)
                .collect::<Vec<_>>(),
            [3, 4, 5]
        );
        let mut reset = Window::new(10, usize::MAX);
        reset.reset(9);
        let stale = Window::new(10, usize::MAX);
        assert!(
            !reset.prepend(stale, 4),
            "reset at 9 since: the history would leave a gap"
        );
    }
}
