//! Answers a RangeRequest from the store exactly as etcd's apply layer would at the store's
//! revision: the same keys, order, `more`, `count` and fields. When etcd's answer is not fully
//! determined (a sort on a target with ties, where etcd's unstable sort picks the order), it
//! declines, and the request is forwarded.

use super::store::Store;
use keygate_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keygate_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use keygate_proto::mvccpb::KeyValue;
use std::cmp::Ordering;

/// Whether the mirror can answer this request at all (before looking at the data).
pub fn servable(req: &RangeRequest) -> bool {
    // An explicit revision reads history, which the mirror does not keep; an empty key is an
    // error that etcd words itself; unknown enum values are etcd's to reject.
    req.revision == 0
        && !req.key.is_empty()
        && SortOrder::try_from(req.sort_order).is_ok()
        && SortTarget::try_from(req.sort_target).is_ok()
}

/// etcd's answer, or None when the mirror cannot give exactly that answer.
pub fn evaluate(
    store: &Store,
    req: &RangeRequest,
    header: ResponseHeader,
) -> Option<RangeResponse> {
    let mut kvs: Vec<&KeyValue> = Vec::new();
    let mut count = 0i64;
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let target = SortTarget::try_from(req.sort_target).ok()?;
    let requested = SortOrder::try_from(req.sort_order).ok()?;
    // etcd reads all matching keys only when an order is requested or a filter is set;
    // otherwise it reads limit+1 keys in key order (the +1 tells `more`) and sorts just those.
    let keep = if req.limit > 0 && requested == SortOrder::None && !filtered {
        usize::try_from(req.limit).ok()?.saturating_add(1)
    } else {
        usize::MAX
    };
    let order = match (requested, target) {
        // etcd sorts ascending by a non-key target when no order is given.
        (SortOrder::None, t) if t != SortTarget::Key => SortOrder::Ascend,
        (order, _) => order,
    };
    for kv in store.range(&req.key, &req.range_end) {
        count += 1;
        if !req.count_only && kvs.len() < keep && passes_filters(req, kv) {
            kvs.push(kv);
        }
    }
    if order != SortOrder::None {
        sort(&mut kvs, target, order)?;
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() as i64 > req.limit {
        kvs.truncate(usize::try_from(req.limit).ok()?);
        more = true;
    }
    let kvs = kvs
        .into_iter()
        .map(|kv| {
            let mut kv = kv.clone();
            if req.keys_only {
                kv.value = bytes::Bytes::new();
            }
            kv
        })
        .collect();
    Some(RangeResponse {
        header: Some(header),
        kvs,
        more,
        count,
    })
}

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    !(req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision
        || req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision
        || req.max_create_revision != 0 && kv.create_revision > req.max_create_revision
        || req.min_create_revision != 0 && kv.create_revision < req.min_create_revision)
}

/// Sorts as etcd does; None when two keys tie on the target (etcd's order is then unspecified).
fn sort(kvs: &mut [&KeyValue], target: SortTarget, order: SortOrder) -> Option<()> {
    let cmp = |a: &&KeyValue, b: &&KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    kvs.sort_by(cmp);
    if target != SortTarget::Key && kvs.windows(2).any(|w| cmp(&w[0], &w[1]) == Ordering::Equal) {
        return None;
    }
    if order == SortOrder::Descend {
        kvs.reverse();
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn store() -> Store {
        let kv = |k: &str, create: i64, m: i64, version: i64, v: &str| KeyValue {
            key: Bytes::copy_from_slice(k.as_bytes()),
            create_revision: create,
            mod_revision: m,
            version,
            value: Bytes::copy_from_slice(v.as_bytes()),
            lease: 0,
        };
        Store::from_list(
            [
                kv("a", 2, 5, 2, "z"),
                kv("b", 3, 3, 1, "y"),
                kv("c", 4, 6, 3, "x"),
                kv("d", 7, 7, 4, "w"),
            ],
            7,
        )
    }

    fn keys(resp: &RangeResponse) -> Vec<&[u8]> {
        resp.kvs.iter().map(|kv| kv.key.as_ref()).collect()
    }

    fn req(f: impl FnOnce(&mut RangeRequest)) -> RangeRequest {
        let mut r = RangeRequest {
            key: Bytes::from_static(b"a"),
            range_end: Bytes::from_static(b"\0"),
            ..Default::default()
        };
        f(&mut r);
        r
    }

    #[test]
    fn limit_sets_more_and_count_is_the_whole_range() {
        let r =
            evaluate(&store(), &req(|r| r.limit = 2), ResponseHeader::default()).expect("served");
        assert_eq!(keys(&r), [b"a", b"b"]);
        assert!(r.more);
        assert_eq!(r.count, 4);
    }

    #[test]
    fn filters_prune_keys_but_not_count() {
        let r = evaluate(
            &store(),
            &req(|r| r.min_mod_revision = 5),
            ResponseHeader::default(),
        )
        .expect("served");
        assert_eq!(keys(&r), [b"a", b"c", b"d"]);
        assert_eq!(r.count, 4);
        let r = evaluate(
            &store(),
            &req(|r| {
                r.max_create_revision = 3;
                r.limit = 1
            }),
            ResponseHeader::default(),
        )
        .expect("served");
        assert_eq!(keys(&r), [b"a"]);
        assert!(r.more);
    }

    #[test]
    fn sort_targets_default_to_ascending_and_descend_reverses() {
        let r = evaluate(
            &store(),
            &req(|r| r.sort_target = SortTarget::Value as i32),
            ResponseHeader::default(),
        )
        .expect("served");
        assert_eq!(keys(&r), [b"d", b"c", b"b", b"a"]);
        let r = evaluate(
            &store(),
            &req(|r| {
                r.sort_target = SortTarget::Mod as i32;
                r.sort_order = SortOrder::Descend as i32;
                r.limit = 2
            }),
            ResponseHeader::default(),
        )
        .expect("served");
        assert_eq!(keys(&r), [b"d", b"c"]);
        assert!(r.more);
    }

    #[test]
    fn ties_on_a_non_key_target_are_forwarded() {
        let mut s = store();
        let dup = KeyValue {
            key: Bytes::from_static(b"e"),
            version: 4,
            ..Default::default()
        };
        s.apply(
            &[keygate_proto::mvccpb::Event {
                r#type: 0,
                kv: Some(dup),
                prev_kv: None,
            }],
            8,
            &super::super::coverage::Coverage::default(),
        );
        assert!(evaluate(
            &s,
            &req(|r| r.sort_target = SortTarget::Version as i32),
            ResponseHeader::default()
        )
        .is_none());
    }

    #[test]
    fn without_an_order_the_limit_applies_before_the_sort() {
        // etcd takes the first limit+1 keys, sorts them by value, then cuts to the limit.
        let r = evaluate(
            &store(),
            &req(|r| {
                r.sort_target = SortTarget::Value as i32;
                r.limit = 2
            }),
            ResponseHeader::default(),
        )
        .expect("served");
        assert_eq!(keys(&r), [b"c", b"b"]);
        assert!(r.more);
    }

    #[test]
    fn count_only_and_keys_only() {
        let r = evaluate(
            &store(),
            &req(|r| {
                r.count_only = true;
                r.limit = 1
            }),
            ResponseHeader::default(),
        )
        .expect("served");
        assert!(r.kvs.is_empty() && !r.more && r.count == 4);
        let r = evaluate(
            &store(),
            &req(|r| r.keys_only = true),
            ResponseHeader::default(),
        )
        .expect("served");
        assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    }
}

#[cfg(test)]
mod cost {
    use super::*;
    use bytes::Bytes;
    use prost::Message;

    /// What a 100-key LIST costs the mirror: evaluation, and encoding the answer.
    #[test]
    #[ignore]
    fn list_cost() {
        let kvs = (0..1000).map(|i| KeyValue {
            key: Bytes::from(format!("bench/{:02}/{i:06}", i / 100)),
            value: Bytes::from(vec![b'v'; 256]),
            create_revision: i + 2,
            mod_revision: i + 2,
            version: 1,
            lease: 0,
        });
        let store = Store::from_list(kvs, 1002);
        let req = RangeRequest {
            key: Bytes::from_static(b"bench/05/"),
            range_end: Bytes::from_static(b"bench/050"),
            serializable: true,
            ..Default::default()
        };
        let n = 20_000;
        let t = std::time::Instant::now();
        let mut total = 0;
        for _ in 0..n {
            let resp = evaluate(&store, &req, ResponseHeader::default()).expect("servable");
            total += resp.kvs.len();
        }
        let eval = t.elapsed() / n;
        let resp = evaluate(&store, &req, ResponseHeader::default()).expect("servable");
        let t = std::time::Instant::now();
        for _ in 0..n {
            total += resp.encode_to_vec().len();
        }
        let encode = t.elapsed() / n;
        let t = std::time::Instant::now();
        for _ in 0..n {
            total += resp.clone().kvs.len();
        }
        let clone = t.elapsed() / n;
        eprintln!("evaluate {eval:?}, encode {encode:?}, clone {clone:?} ({total})");
    }
}
