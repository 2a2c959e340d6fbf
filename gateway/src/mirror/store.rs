//! The mirror's data: every live key with its metadata, as etcd holds it at one revision.

use super::coverage::Coverage;
use keygate_proto::mvccpb::{event::EventType, Event, KeyValue};
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// Rough heap cost of one entry beyond its key and value bytes (tree node share, KeyValue,
/// allocation headers); used for the memory budget, not for billing.
const ENTRY_OVERHEAD: usize = 96;

/// A live key: its KeyValue, ordered and found by its key. (A set of these rather than a map
/// from key to KeyValue: the key's handle is held once, which with a million keys is 30 MiB.)
struct Entry(KeyValue);

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        &self.0.key
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.key.cmp(&other.0.key)
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for Entry {}

/// The keyspace at `revision`: the state etcd had after applying every revision up to it.
#[derive(Default)]
pub struct Store {
    kvs: BTreeSet<Entry>,
    revision: i64,
    bytes: usize,
}

impl Store {
    /// A store loaded from a list taken at `revision`.
    pub fn from_list(kvs: impl IntoIterator<Item = KeyValue>, revision: i64) -> Store {
        let mut store = Store {
            revision,
            ..Store::default()
        };
        for kv in kvs {
            store.bytes += cost(&kv);
            if let Some(Entry(old)) = store.kvs.replace(Entry(kv)) {
                store.bytes = store.bytes.saturating_sub(cost(&old));
            }
        }
        store
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.kvs.len()
    }

    /// Approximate memory held, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Applies the events of one or more revisions, in order, then moves to `revision`; keys
    /// outside `coverage` are not kept. Returns the previous value of each key changed, in event
    /// order, for watchers that ask for prev_kv (for a key not kept, etcd's own prev_kv).
    pub fn apply(
        &mut self,
        events: &[Event],
        revision: i64,
        coverage: &Coverage,
    ) -> Vec<Option<KeyValue>> {
        let mut prev = Vec::with_capacity(events.len());
        for event in events {
            let Some(kv) = &event.kv else {
                prev.push(None);
                continue;
            };
            if !coverage.holds(&kv.key) {
                prev.push(event.prev_kv.clone());
                continue;
            }
            let old = if event.r#type == EventType::Delete as i32 {
                self.kvs.take(&kv.key[..])
            } else {
                self.bytes += cost(kv);
                self.kvs.replace(Entry(kv.clone()))
            };
            let old = old.map(|Entry(kv)| kv);
            if let Some(old) = &old {
                self.bytes = self.bytes.saturating_sub(cost(old));
            }
            prev.push(old);
        }
        self.revision = self.revision.max(revision);
        prev
    }

    /// The live keys in `[key, end)`, ascending; `end` empty means just `key`, and "\0" means
    /// every key from `key` on — etcd's range conventions.
    pub fn range<'a>(
        &'a self,
        key: &'a [u8],
        end: &'a [u8],
    ) -> Box<dyn Iterator<Item = &'a KeyValue> + 'a> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        if end.is_empty() {
            return Box::new(self.kvs.get(key).map(|Entry(kv)| kv).into_iter());
        }
        if end != b"\0" && end <= key {
            return Box::new(std::iter::empty());
        }
        let upper = if end == b"\0" {
            Unbounded
        } else {
            Excluded(end)
        };
        Box::new(
            self.kvs
                .range::<[u8], _>((Included(key), upper))
                .map(|Entry(kv)| kv),
        )
    }
}

fn cost(kv: &KeyValue) -> usize {
    kv.key.len() + kv.value.len() + ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn kv(key: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    fn keys(store: &Store, key: &str, end: &str) -> Vec<String> {
        store
            .range(key.as_bytes(), end.as_bytes())
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect()
    }

    #[test]
    fn ranges_follow_etcd_conventions() {
        let store = Store::from_list(["a", "ab", "b", "c"].iter().map(|k| kv(k, 1)), 1);
        assert_eq!(keys(&store, "a", ""), ["a"]);
        assert_eq!(keys(&store, "a", "b"), ["a", "ab"]);
        assert_eq!(keys(&store, "ab", "\0"), ["ab", "b", "c"]);
        assert_eq!(keys(&store, "\0", "\0"), ["a", "ab", "b", "c"]);
        assert!(keys(&store, "b", "a").is_empty());
        assert!(keys(&store, "b", "b").is_empty());
        assert!(keys(&store, "zz", "").is_empty());
    }

    #[test]
    fn apply_returns_previous_values_and_tracks_bytes() {
        let mut store = Store::from_list([kv("a", 1)], 1);
        let before = store.bytes();
        let put = Event {
            r#type: EventType::Put as i32,
            kv: Some(kv("a", 2)),
            prev_kv: None,
        };
        let del = Event {
            r#type: EventType::Delete as i32,
            kv: Some(kv("a", 3)),
            prev_kv: None,
        };
        let prev = store.apply(&[put], 2, &Coverage::default());
        assert_eq!(prev[0].as_ref().map(|p| p.mod_revision), Some(1));
        assert_eq!(store.bytes(), before);
        let prev = store.apply(&[del], 3, &Coverage::default());
        assert_eq!(prev[0].as_ref().map(|p| p.mod_revision), Some(2));
        assert_eq!((store.len(), store.bytes(), store.revision()), (0, 0, 3));
    }

    #[test]
    fn keys_outside_the_coverage_are_not_kept() {
        let coverage = Coverage::new(&["m/".to_string()]);
        let mut store = Store::from_list([kv("m/a", 1)], 1);
        let outside = Event {
            r#type: EventType::Put as i32,
            kv: Some(kv("x", 2)),
            prev_kv: Some(kv("x", 1)),
        };
        let inside = Event {
            r#type: EventType::Put as i32,
            kv: Some(kv("m/b", 2)),
            prev_kv: None,
        };
        let prev = store.apply(&[outside, inside], 2, &coverage);
        assert_eq!(store.len(), 2, "m/a and m/b, not x");
        assert_eq!(store.revision(), 2, "every revision counts, kept or not");
        assert_eq!(
            prev[0].as_ref().map(|p| p.mod_revision),
            Some(1),
            "etcd's prev_kv"
        );
        assert!(prev[1].is_none());
    }
}
