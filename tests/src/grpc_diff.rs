//! Differential gRPC: the same etcd v3 requests against etcd directly and through keygate (each
//! in front of its own fresh cluster, so revisions line up), the prost responses compared with
//! `==` after masking only the header fields that name the member or cluster.

use anyhow::{bail, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keygate_proto::etcdserverpb::{
    request_op, response_op, CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest,
    DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse,
};

use crate::{Clients, DiffPair};

/// One request to run on both sides.
#[derive(Debug, Clone)]
pub enum Op {
    Put(PutRequest),
    Range(RangeRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    LeaseTtl(LeaseTimeToLiveRequest),
    LeaseLeases,
}

/// What one side answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Put(PutResponse),
    Range(RangeResponse),
    Delete(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseTtl(LeaseTimeToLiveResponse),
    LeaseLeases(LeaseLeasesResponse),
    Error { code: tonic::Code, message: String },
}

impl Reply {
    /// The header revision of a successful reply.
    pub fn revision(&self) -> Option<i64> {
        let h = match self {
            Reply::Put(r) => r.header,
            Reply::Range(r) => r.header,
            Reply::Delete(r) => r.header,
            Reply::Txn(r) => r.header,
            Reply::Compact(r) => r.header,
            Reply::LeaseGrant(r) => r.header,
            Reply::LeaseRevoke(r) => r.header,
            Reply::LeaseTtl(r) => r.header,
            Reply::LeaseLeases(r) => r.header,
            Reply::Error { .. } => None,
        };
        h.map(|h| h.revision)
    }

    /// Whether the reply is an error.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error { .. })
    }
}

/// etcd directly (`direct`) and keygate (`gw`), each in front of its own fresh cluster.
pub struct GrpcDiff {
    pub pair: DiffPair,
    pub direct: Clients,
    pub gw: Clients,
    /// How many ops were compared.
    pub compared: usize,
    /// Every difference seen so far.
    pub mismatches: Vec<String>,
}

impl GrpcDiff {
    /// Starts two `members`-member clusters and keygate in front of the second.
    pub async fn start(members: usize) -> Result<Self> {
        let pair = DiffPair::start(members).await?;
        let direct = pair.reference.clients(0).await?;
        let gw = match pair.keygate() {
            Some(k) => k.clients().await?,
            None => pair.backend.clients(0).await?,
        };
        Ok(Self {
            pair,
            direct,
            gw,
            compared: 0,
            mismatches: Vec::new(),
        })
    }

    /// Runs `op` directly, then through keygate, and records a mismatch unless the normalized
    /// replies are equal (so one run shows every difference). Returns the direct reply.
    pub async fn same(&mut self, op: Op) -> Result<Reply> {
        let direct = normalize(run(&mut self.direct, &op).await);
        let mut gw = normalize(run(&mut self.gw, &op).await);
        // A lease's remaining TTL ticks between the two calls.
        if let (Reply::LeaseTtl(d), Reply::LeaseTtl(g)) = (&direct, &mut gw) {
            if (d.ttl - g.ttl).abs() <= 1 {
                g.ttl = d.ttl;
            }
        }
        self.compared += 1;
        if direct != gw {
            self.mismatches.push(format!(
                "op #{}: {op:?}\n  direct:  {direct:?}\n  keygate: {gw:?}",
                self.compared
            ));
        }
        Ok(direct)
    }

    /// Fails listing every mismatch seen (the first 20 in full).
    pub fn check(&self) -> Result<()> {
        if self.mismatches.is_empty() {
            return Ok(());
        }
        bail!(
            "{} of {} ops differ through keygate:\n{}\n{}",
            self.mismatches.len(),
            self.compared,
            self.mismatches
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            self.pair.front_log()
        )
    }
}

fn err(s: tonic::Status) -> Reply {
    Reply::Error {
        code: s.code(),
        message: s.message().to_string(),
    }
}

/// Runs `op` on one side.
pub async fn run(c: &mut Clients, op: &Op) -> Reply {
    let r = match op.clone() {
        Op::Put(r) => c.kv.put(r).await.map(|r| Reply::Put(r.into_inner())),
        Op::Range(r) => c.kv.range(r).await.map(|r| Reply::Range(r.into_inner())),
        Op::Delete(r) => {
            c.kv.delete_range(r)
                .await
                .map(|r| Reply::Delete(r.into_inner()))
        }
        Op::Txn(r) => c.kv.txn(r).await.map(|r| Reply::Txn(r.into_inner())),
        Op::Compact(r) => {
            c.kv.compact(r)
                .await
                .map(|r| Reply::Compact(r.into_inner()))
        }
        Op::LeaseGrant(r) => c
            .lease
            .lease_grant(r)
            .await
            .map(|r| Reply::LeaseGrant(r.into_inner())),
        Op::LeaseRevoke(r) => c
            .lease
            .lease_revoke(r)
            .await
            .map(|r| Reply::LeaseRevoke(r.into_inner())),
        Op::LeaseTtl(r) => c
            .lease
            .lease_time_to_live(r)
            .await
            .map(|r| Reply::LeaseTtl(r.into_inner())),
        Op::LeaseLeases => c
            .lease
            .lease_leases(LeaseLeasesRequest {})
            .await
            .map(|r| Reply::LeaseLeases(r.into_inner())),
    };
    r.unwrap_or_else(err)
}

fn mask(h: &mut Option<ResponseHeader>) {
    if let Some(h) = h {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
}

fn mask_txn(t: &mut TxnResponse) {
    mask(&mut t.header);
    for r in &mut t.responses {
        match &mut r.response {
            Some(response_op::Response::ResponseRange(r)) => mask(&mut r.header),
            Some(response_op::Response::ResponsePut(r)) => mask(&mut r.header),
            Some(response_op::Response::ResponseDeleteRange(r)) => mask(&mut r.header),
            Some(response_op::Response::ResponseTxn(r)) => mask_txn(r),
            None => {}
        }
    }
}

/// Masks member/cluster/term in every header; orders what etcd lists from a Go map.
pub fn normalize(mut reply: Reply) -> Reply {
    match &mut reply {
        Reply::Put(r) => mask(&mut r.header),
        Reply::Range(r) => mask(&mut r.header),
        Reply::Delete(r) => mask(&mut r.header),
        Reply::Txn(r) => mask_txn(r),
        Reply::Compact(r) => mask(&mut r.header),
        Reply::LeaseGrant(r) => mask(&mut r.header),
        Reply::LeaseRevoke(r) => mask(&mut r.header),
        Reply::LeaseTtl(r) => {
            mask(&mut r.header);
            r.keys.sort();
        }
        Reply::LeaseLeases(r) => {
            mask(&mut r.header);
            r.leases.sort_by_key(|l| l.id);
        }
        Reply::Error { .. } => {}
    }
    reply
}

// Request builders shared by the differential tests.

/// Bytes of a str.
pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A plain put.
pub fn put(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    }
}

/// A range from `k` to `end`.
pub fn range(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: b(k),
        range_end: b(end),
        ..Default::default()
    }
}

/// A compare of `target` (whose variant picks the compare target).
pub fn cmp(key: &str, end: &str, result: CompareResult, target: TargetUnion) -> Compare {
    let t = match target {
        TargetUnion::Version(_) => CompareTarget::Version,
        TargetUnion::CreateRevision(_) => CompareTarget::Create,
        TargetUnion::ModRevision(_) => CompareTarget::Mod,
        TargetUnion::Value(_) => CompareTarget::Value,
        TargetUnion::Lease(_) => CompareTarget::Lease,
    };
    Compare {
        result: result as i32,
        target: t as i32,
        key: b(key),
        range_end: b(end),
        target_union: Some(target),
    }
}

/// A request op.
pub fn rop(r: request_op::Request) -> RequestOp {
    RequestOp { request: Some(r) }
}

/// The keys both differential test files start from: some overwritten, one empty value.
pub async fn seed_keys(d: &mut GrpcDiff) -> anyhow::Result<()> {
    for (k, v) in [
        ("a", "1"),
        ("b", "22"),
        ("c", "3"),
        ("foo/1", "x"),
        ("foo/2", "yy"),
        ("foo/3", "z"),
        ("a", "11"),
        ("foo/2", "y"),
        ("zz", ""),
        ("foo/1", "xxx"),
    ] {
        d.same(Op::Put(put(k, v))).await?;
    }
    d.check()
}
