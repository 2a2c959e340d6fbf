//! Encoded answers of large LISTs, kept while their revision is current: a hot LIST asked again
//! before the next write is answered with the bytes already encoded, instead of walking and
//! encoding the same keys again. The key holds the mirror's revision and the header's member
//! and term, so an entry can only ever answer a read at exactly the state it was encoded from;
//! older entries simply stop matching and age out of the byte budget. Authorization runs before
//! the mirror is asked, so a cached answer reaches only callers the authorizers admitted.

use bytes::Bytes;
use keygate_proto::etcdserverpb::{RangeRequest, ResponseHeader};
use prost::Message;

/// Answers smaller than this are encoded afresh each time: cheaper than caching them.
const MIN_BYTES: usize = 4096;

/// What an answer depends on: the state read and every option of the request.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    revision: i64,
    member_id: u64,
    raft_term: u64,
    /// The request, encoded, with its consistency cleared: a serializable and a linearizable
    /// read of the same revision get the same answer.
    request: Bytes,
}

pub struct ListCache {
    entries: moka::sync::Cache<Key, Bytes>,
}

/// A cache slot for one read: its key, once the read is known to be cacheable.
pub struct Slot(Option<Key>);

impl Slot {
    /// Whether answers to this read may be cached at all (a range, not a count).
    pub fn cacheable(&self) -> bool {
        self.0.is_some()
    }
}

impl ListCache {
    /// A cache of at most `max_bytes` of answers; `None` when 0.
    pub fn new(max_bytes: u64) -> Option<ListCache> {
        (max_bytes > 0).then(|| ListCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &Key, answer: &Bytes| {
                    u32::try_from(key.request.len() + answer.len()).unwrap_or(u32::MAX)
                })
                .build(),
        })
    }

    /// The slot of `req` read at `header`: only ranges (not single keys) are cached.
    pub fn slot(req: &RangeRequest, header: &ResponseHeader) -> Slot {
        if req.range_end.is_empty() || req.count_only {
            return Slot(None);
        }
        let request = RangeRequest {
            serializable: false,
            ..req.clone()
        };
        Slot(Some(Key {
            revision: header.revision,
            member_id: header.member_id,
            raft_term: header.raft_term,
            request: request.encode_to_vec().into(),
        }))
    }

    /// The encoded answer for `slot`, if one is cached.
    pub fn get(&self, slot: &Slot) -> Option<Bytes> {
        slot.0.as_ref().and_then(|key| self.entries.get(key))
    }

    /// Keeps `answer` for `slot` when it is large enough to be worth it.
    pub fn put(&self, slot: Slot, answer: &Bytes) {
        if let (Some(key), true) = (slot.0, answer.len() >= MIN_BYTES) {
            self.entries.insert(key, answer.clone());
        }
    }

    /// Forgets every answer: etcd's keyspace went back, and a revision may now name another
    /// state.
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// Bytes held (approximate: moka settles its counts lazily).
    pub fn bytes(&self) -> u64 {
        self.entries.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(revision: i64) -> ResponseHeader {
        ResponseHeader {
            revision,
            ..Default::default()
        }
    }

    fn list(serializable: bool) -> RangeRequest {
        RangeRequest {
            key: Bytes::from_static(b"a/"),
            range_end: Bytes::from_static(b"a0"),
            serializable,
            ..Default::default()
        }
    }

    #[test]
    fn an_answer_serves_only_its_revision_and_options() {
        let cache = ListCache::new(1 << 20).expect("enabled");
        let answer = Bytes::from(vec![7u8; MIN_BYTES]);
        cache.put(ListCache::slot(&list(true), &header(5)), &answer);
        assert_eq!(
            cache.get(&ListCache::slot(&list(false), &header(5))),
            Some(answer),
            "either consistency, same revision"
        );
        assert!(cache
            .get(&ListCache::slot(&list(true), &header(6)))
            .is_none());
        let limited = RangeRequest {
            limit: 1,
            ..list(true)
        };
        assert!(cache.get(&ListCache::slot(&limited, &header(5))).is_none());
        let term = ResponseHeader {
            raft_term: 9,
            ..header(5)
        };
        assert!(cache.get(&ListCache::slot(&list(true), &term)).is_none());
    }

    #[test]
    fn small_answers_and_single_keys_are_not_kept() {
        let cache = ListCache::new(1 << 20).expect("enabled");
        let slot = || ListCache::slot(&list(true), &header(5));
        cache.put(slot(), &Bytes::from_static(b"small"));
        assert!(cache.get(&slot()).is_none());
        let single = RangeRequest {
            range_end: Bytes::new(),
            ..list(true)
        };
        let big = Bytes::from(vec![0u8; MIN_BYTES]);
        cache.put(ListCache::slot(&single, &header(5)), &big);
        assert!(cache.get(&ListCache::slot(&single, &header(5))).is_none());
        assert!(ListCache::new(0).is_none());
    }
}
