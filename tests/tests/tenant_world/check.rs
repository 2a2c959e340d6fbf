//! The invariant over anything A receives: nothing of B's or the admin's, no key starting "/a".

use anyhow::{ensure, Result};
use bytes::Bytes;
use keygate_proto::mvccpb::KeyValue;
use keygate_tests::grpc_diff::Reply;

use super::{bs, B_RAW, SECRETS};

/// Every key-value in a reply (prev_kvs and nested txns included).
pub fn each_kv(reply: &mut Reply, f: &mut dyn FnMut(&mut KeyValue)) {
    fn txn(t: &mut keygate_proto::etcdserverpb::TxnResponse, f: &mut dyn FnMut(&mut KeyValue)) {
        use keygate_proto::etcdserverpb::response_op::Response as R;
        t.header = None;
        for r in &mut t.responses {
            match &mut r.response {
                Some(R::ResponseRange(r)) => {
                    r.header = None;
                    r.kvs.iter_mut().for_each(&mut *f);
                }
                Some(R::ResponsePut(r)) => {
                    r.header = None;
                    r.prev_kv.iter_mut().for_each(&mut *f);
                }
                Some(R::ResponseDeleteRange(r)) => {
                    r.header = None;
                    r.prev_kvs.iter_mut().for_each(&mut *f);
                }
                Some(R::ResponseTxn(t)) => txn(t, f),
                None => {}
            }
        }
    }
    match reply {
        Reply::Range(r) => {
            r.header = None;
            r.kvs.iter_mut().for_each(f);
        }
        Reply::Put(r) => {
            r.header = None;
            r.prev_kv.iter_mut().for_each(f);
        }
        Reply::Delete(r) => {
            r.header = None;
            r.prev_kvs.iter_mut().for_each(f);
        }
        Reply::Txn(t) => txn(t, f),
        _ => {}
    }
}

/// The invariant over anything A received: no marker of a value outside A's namespace in any
/// byte field (nor in the Debug text, as an extra net), and no key starting with "/a".
pub fn assert_clean(what: &str, debug: &str, keys: &[Bytes], values: &[Bytes]) -> Result<()> {
    for secret in SECRETS {
        ensure!(
            !debug.contains(secret),
            "{what}: A received {secret}: {debug}"
        );
        for v in keys.iter().chain(values) {
            ensure!(
                !v.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{what}: A received a byte string with {secret}: {v:?}"
            );
        }
    }
    for k in keys {
        ensure!(
            !k.starts_with(b"/a"),
            "{what}: A received a key starting with /a: {k:?}"
        );
        ensure!(
            !B_RAW.contains(&k.as_ref()),
            "{what}: A received B's raw key {k:?}"
        );
    }
    Ok(())
}

pub fn check_reply(what: &str, reply: &Reply) -> Result<()> {
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut r = reply.clone();
    each_kv(&mut r, &mut |kv| {
        keys.push(kv.key.clone());
        values.push(kv.value.clone());
    });
    if let Reply::LeaseTtl(t) = reply {
        keys.extend(t.keys.iter().map(|k| bs(k)));
    }
    assert_clean(what, &format!("{reply:?}"), &keys, &values)
}
