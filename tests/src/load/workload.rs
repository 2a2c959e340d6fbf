//! Closed-loop request modes: each client task sends one request, waits for its answer, and
//! sends the next, for a warm-up and then a measured window.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use keygate_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keygate_proto::etcdserverpb::kv_client::KvClient;
use keygate_proto::etcdserverpb::request_op::Request as OpRequest;
use keygate_proto::etcdserverpb::response_op::Response as OpResponse;
use keygate_proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use super::lean::{self, Lean};
use crate::watch::prefix_end;

/// Phases of a run, shared by every client task.
pub const WARMUP: u8 = 0;
pub const MEASURE: u8 = 1;
pub const STOP: u8 = 2;

/// A closed-loop request mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Put,
    GetSerializable,
    GetLinearizable,
    ListSerializable,
    ListLinearizable,
    Mixed,
}

/// The key space and every request, built once before a run.
pub struct Data {
    pub keys: Vec<Bytes>,
    pub value: Bytes,
    pub puts: Vec<PutRequest>,
    pub gets_serializable: Vec<RangeRequest>,
    pub gets_linearizable: Vec<RangeRequest>,
    pub list_serializable: RangeRequest,
    pub list_linearizable: RangeRequest,
    pub list_keys: Vec<Bytes>,
    /// The same requests framed for the lean client.
    pub framed: Framed,
}

/// Requests encoded once, for the lean client.
pub struct Framed {
    pub puts: Vec<Bytes>,
    pub gets_serializable: Vec<Bytes>,
    pub gets_linearizable: Vec<Bytes>,
    pub list_serializable: Bytes,
    pub list_linearizable: Bytes,
}

/// What a client task sends its requests on.
#[derive(Clone)]
pub enum Conn {
    Tonic(KvClient<Channel>),
    Lean(Lean),
}

const RANGE: &str = "/etcdserverpb.KV/Range";
const PUT: &str = "/etcdserverpb.KV/Put";
const TXN: &str = "/etcdserverpb.KV/Txn";

pub const KEY_PREFIX: &str = "keygate-bench/k/";
pub const LIST_PREFIX: &str = "keygate-bench/list/";
pub const WATCH_KEY: &str = "keygate-bench/watch";

impl Data {
    pub fn new(keys: usize, list_keys: usize, value_size: usize) -> Self {
        let value: Bytes = (0..value_size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>()
            .into();
        let keys: Vec<Bytes> = (0..keys)
            .map(|i| Bytes::from(format!("{KEY_PREFIX}{i:06}")))
            .collect();
        let list_keys: Vec<Bytes> = (0..list_keys)
            .map(|i| Bytes::from(format!("{LIST_PREFIX}{i:04}")))
            .collect();
        let get = |key: &Bytes, serializable| RangeRequest {
            key: key.clone(),
            serializable,
            ..Default::default()
        };
        let list = |serializable| RangeRequest {
            key: Bytes::from_static(LIST_PREFIX.as_bytes()),
            range_end: prefix_end(LIST_PREFIX.as_bytes()),
            serializable,
            ..Default::default()
        };
        let framed = |reqs: &[RangeRequest]| reqs.iter().map(lean::frame).collect();
        let puts: Vec<PutRequest> = keys
            .iter()
            .map(|k| PutRequest {
                key: k.clone(),
                value: value.clone(),
                ..Default::default()
            })
            .collect();
        let gets_serializable: Vec<RangeRequest> = keys.iter().map(|k| get(k, true)).collect();
        let gets_linearizable: Vec<RangeRequest> = keys.iter().map(|k| get(k, false)).collect();
        Self {
            framed: Framed {
                puts: puts.iter().map(lean::frame).collect(),
                gets_serializable: framed(&gets_serializable),
                gets_linearizable: framed(&gets_linearizable),
                list_serializable: lean::frame(&list(true)),
                list_linearizable: lean::frame(&list(false)),
            },
            puts,
            gets_serializable,
            gets_linearizable,
            list_serializable: list(true),
            list_linearizable: list(false),
            keys,
            value,
            list_keys,
        }
    }
}

/// What one client task saw during the measured window.
pub struct TaskResult {
    pub hist: Histogram<u64>,
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

pub fn new_hist() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One client: runs `op` in a loop until the phase says stop.
pub async fn client_task(
    mut conn: Conn,
    op: Op,
    data: Arc<Data>,
    phase: Arc<AtomicU8>,
    seed: u64,
) -> TaskResult {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut result = TaskResult {
        hist: new_hist(),
        ops: 0,
        errors: 0,
        first_error: None,
    };
    let n = data.keys.len();
    // Mixed mode's compare-and-swap needs the last mod_revision it saw per key.
    let mut revs: Vec<i64> = if op == Op::Mixed {
        vec![0; n]
    } else {
        Vec::new()
    };
    loop {
        let p = phase.load(Ordering::Relaxed);
        if p == STOP {
            break;
        }
        let k = rng.random_range(0..n);
        let start = Instant::now();
        let res: Result<(), String> = match &mut conn {
            Conn::Tonic(kv) => tonic_op(kv, op, &data, &mut revs, k, &mut rng)
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
            Conn::Lean(lean) => lean_op(lean, op, &data, &mut revs, k, &mut rng).await,
        };
        let elapsed = start.elapsed();
        if phase.load(Ordering::Relaxed) != MEASURE {
            continue;
        }
        match res {
            Ok(()) => {
                result.ops += 1;
                let us = (elapsed.as_nanos() / 1000).max(1) as u64;
                result.hist.saturating_record(us);
            }
            Err(e) => {
                result.errors += 1;
                if result.first_error.is_none() {
                    result.first_error = Some(e);
                }
                // Do not spin on a target that refuses everything.
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    }
    result
}

async fn tonic_op(
    kv: &mut KvClient<Channel>,
    op: Op,
    data: &Data,
    revs: &mut [i64],
    k: usize,
    rng: &mut SmallRng,
) -> Result<(), tonic::Status> {
    match op {
        Op::Put => kv.put(data.puts[k].clone()).await.map(drop),
        Op::GetSerializable => kv.range(data.gets_serializable[k].clone()).await.map(drop),
        Op::GetLinearizable => kv.range(data.gets_linearizable[k].clone()).await.map(drop),
        Op::ListSerializable => kv.range(data.list_serializable.clone()).await.map(drop),
        Op::ListLinearizable => kv.range(data.list_linearizable.clone()).await.map(drop),
        Op::Mixed => mixed_op(kv, data, revs, k, rng.random_range(0..100)).await,
    }
}

async fn lean_op(
    conn: &Lean,
    op: Op,
    data: &Data,
    revs: &mut [i64],
    k: usize,
    rng: &mut SmallRng,
) -> Result<(), String> {
    let f = &data.framed;
    match op {
        Op::Put => conn.call(PUT, f.puts[k].clone()).await.map(drop),
        Op::GetSerializable => conn
            .call(RANGE, f.gets_serializable[k].clone())
            .await
            .map(drop),
        Op::GetLinearizable => conn
            .call(RANGE, f.gets_linearizable[k].clone())
            .await
            .map(drop),
        Op::ListSerializable => conn
            .call(RANGE, f.list_serializable.clone())
            .await
            .map(drop),
        Op::ListLinearizable => conn
            .call(RANGE, f.list_linearizable.clone())
            .await
            .map(drop),
        Op::Mixed => lean_mixed(conn, data, revs, k, rng.random_range(0..100)).await,
    }
}

/// Mixed mode on the lean client: the same operations as `mixed_op`.
async fn lean_mixed(
    conn: &Lean,
    data: &Data,
    revs: &mut [i64],
    k: usize,
    dice: u32,
) -> Result<(), String> {
    if dice < 95 {
        let req = if dice < 90 {
            &data.framed.gets_serializable[k]
        } else {
            &data.framed.gets_linearizable[k]
        };
        let resp: RangeResponse = lean::unframe(&conn.call(RANGE, req.clone()).await?)?;
        if let Some(kv) = resp.kvs.first() {
            revs[k] = kv.mod_revision;
        }
        return Ok(());
    }
    let txn = lean::frame(&cas(data, revs, k));
    let resp: TxnResponse = lean::unframe(&conn.call(TXN, txn).await?)?;
    note_cas(&resp, revs, k);
    Ok(())
}

/// Compare-and-swap on key `k`: put it if its mod_revision is the last one seen, else read
/// it back.
fn cas(data: &Data, revs: &[i64], k: usize) -> TxnRequest {
    let key = data.keys[k].clone();
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Mod as i32,
            key: key.clone(),
            target_union: Some(TargetUnion::ModRevision(revs[k])),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(OpRequest::RequestPut(data.puts[k].clone())),
        }],
        failure: vec![RequestOp {
            request: Some(OpRequest::RequestRange(RangeRequest {
                key,
                ..Default::default()
            })),
        }],
    }
}

/// The revision a compare-and-swap left key `k` at, as its answer tells.
fn note_cas(resp: &TxnResponse, revs: &mut [i64], k: usize) {
    if resp.succeeded {
        if let Some(h) = &resp.header {
            revs[k] = h.revision;
        }
    } else if let Some(OpResponse::ResponseRange(r)) =
        resp.responses.first().and_then(|r| r.response.as_ref())
    {
        if let Some(kv) = r.kvs.first() {
            revs[k] = kv.mod_revision;
        }
    }
}

/// 90% serializable gets, 5% linearizable gets, 5% compare-and-swap txns (mod_revision equal to
/// the last one this client saw, then put, else read the key back).
async fn mixed_op(
    kv: &mut KvClient<Channel>,
    data: &Data,
    revs: &mut [i64],
    k: usize,
    dice: u32,
) -> Result<(), tonic::Status> {
    if dice < 95 {
        let req = if dice < 90 {
            data.gets_serializable[k].clone()
        } else {
            data.gets_linearizable[k].clone()
        };
        let resp = kv.range(req).await?.into_inner();
        if let Some(kv) = resp.kvs.first() {
            revs[k] = kv.mod_revision;
        }
        return Ok(());
    }
    let resp = kv.txn(cas(data, revs, k)).await?.into_inner();
    note_cas(&resp, revs, k);
    Ok(())
}
