use super::*;
use crate::method;
use keygate_proto::etcdserverpb::*;

fn op(request: request_op::Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

#[test]
fn txn_is_described_recursively() {
    let inner = TxnRequest {
        success: vec![op(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: b"d".to_vec().into(),
                range_end: b"e".to_vec().into(),
                ..Default::default()
            },
        ))],
        ..Default::default()
    };
    let txn = TxnRequest {
        compare: vec![Compare {
            key: b"c".to_vec().into(),
            ..Default::default()
        }],
        success: vec![op(request_op::Request::RequestPut(PutRequest {
            key: b"p".to_vec().into(),
            value: b"12345".to_vec().into(),
            lease: 9,
            ..Default::default()
        }))],
        failure: vec![
            op(request_op::Request::RequestRange(RangeRequest {
                key: b"r".to_vec().into(),
                serializable: true,
                ..Default::default()
            })),
            op(request_op::Request::RequestTxn(inner)),
        ],
    };
    let d = Description::of(&method::TXN, &txn);
    let got: Vec<_> = d
        .ranges
        .iter()
        .map(|r| (r.key.as_slice(), r.range_end.as_slice(), r.access))
        .collect();
    assert_eq!(
        got,
        vec![
            (&b"c"[..], &b""[..], Access::Compare),
            (b"p", b"", Access::Write),
            (b"r", b"", Access::Read),
            (b"d", b"e", Access::Write),
        ]
    );
    assert_eq!(d.value_bytes, 5);
    assert_eq!(d.lease, 9);
    assert_eq!(d.flags, Flags::SERIALIZABLE);
}

#[test]
fn lock_names_its_prefix() {
    let lock = keygate_proto::v3lockpb::LockRequest {
        name: b"l".to_vec().into(),
        lease: 3,
    };
    let d = Description::of(&method::LOCK, &lock);
    assert_eq!(d.ranges[0].range_end, b"m");
    assert_eq!(d.lease, 3);
}
