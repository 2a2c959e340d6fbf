use super::*;
use keygate_proto::etcdserverpb::{
    compare, request_op, Compare, LeaseTimeToLiveResponse, PutRequest, RangeRequest, RangeResponse,
    RequestOp, TxnRequest,
};
use keygate_proto::mvccpb::KeyValue;

fn ns(prefix: &str) -> Namespace {
    Namespace::new(prefix.as_bytes()).expect("non-empty")
}

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

#[test]
fn every_range_form_stays_inside() {
    let a = ns("/a/");
    assert_eq!(a.range(b"k", b""), (b(b"/a/k"), b(b"")));
    assert_eq!(a.range(b"k", b"\0"), (b(b"/a/k"), b(b"/a0")));
    assert_eq!(a.range(b"k", b"l"), (b(b"/a/k"), b(b"/a/l")));
    assert_eq!(a.range(b"\0", b"\0"), (b(b"/a/\0"), b(b"/a0")));
    assert_eq!(a.range(b"\xff", b"\0"), (b(b"/a/\xff"), b(b"/a0")));
    // A prefix range of a key of 0xff bytes ends with "\0" in etcd's encoding.
    assert_eq!(a.range(b"\xff\xff", b"\0").1, b(b"/a0"));
    let top = Namespace::new(b"\xff").expect("non-empty");
    assert_eq!(top.range(b"k", b"\0"), (b(b"\xffk"), b(b"\0")));
}

#[test]
fn strip_refuses_keys_outside() {
    let a = ns("/a/");
    assert_eq!(a.strip(&b(b"/a/x")), Some(b(b"x")));
    assert_eq!(a.strip(&b(b"/ab")), None);
    let mut resp = RangeResponse {
        kvs: vec![KeyValue {
            key: b(b"/b/x"),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(resp.strip(&a).is_err());
}

#[test]
fn txns_are_confined_recursively() {
    let a = ns("/a/");
    let inner = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: b(b"x"),
                range_end: b(b"\0"),
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    let mut txn = TxnRequest {
        compare: vec![Compare {
            key: b(b"c"),
            range_end: b(b"d"),
            target: compare::CompareTarget::Version as i32,
            ..Default::default()
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestTxn(inner)),
        }],
        ..Default::default()
    };
    txn.confine(&a).expect("confined");
    assert_eq!(
        (&txn.compare[0].key[..], &txn.compare[0].range_end[..]),
        (&b"/a/c"[..], &b"/a/d"[..])
    );
    let Some(request_op::Request::RequestTxn(inner)) = &txn.failure[0].request else {
        panic!("nested txn kept");
    };
    let Some(request_op::Request::RequestRange(r)) = &inner.success[0].request else {
        panic!("nested range kept");
    };
    assert_eq!((&r.key[..], &r.range_end[..]), (&b"/a/x"[..], &b"/a0"[..]));
}

#[test]
fn leases_belong_to_their_namespace() {
    let (a, b_ns) = (ns("/a/"), ns("/b/"));
    let id = a.new_lease_id();
    assert!(id > 0 && a.owns_lease(id) && !b_ns.owns_lease(id));
    let mut put = PutRequest {
        key: b(b"k"),
        lease: id,
        ..Default::default()
    };
    assert_eq!(
        put.confine(&b_ns).map_err(|s| s.code()),
        Err(tonic::Code::NotFound)
    );
    assert!(put.confine(&a).is_ok());
    let mut ttl = LeaseTimeToLiveResponse {
        id,
        ttl: 10,
        granted_ttl: 10,
        keys: vec![b(b"/a/k"), b(b"/b/k")],
        ..Default::default()
    };
    let mut seen_by_b = ttl.clone();
    ttl.strip(&a).expect("stripped");
    assert_eq!(ttl.keys, vec![b(b"k")]);
    seen_by_b.strip(&b_ns).expect("masked");
    assert_eq!((seen_by_b.ttl, seen_by_b.keys.len()), (-1, 0));
}

#[test]
fn nested_namespaces_compose() {
    assert_eq!(ns("/t/").nest(&ns("x/")).prefix(), &b(b"/t/x/"));
    assert!(Namespace::new(b"").is_none());
}
