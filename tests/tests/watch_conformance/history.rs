//! The randomized write sequence both clusters receive: puts, deletes, range deletes,
//! multi-key txns, lease revokes and large values from a fixed seed, applied alike.

use std::collections::HashSet;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{
    request_op, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RequestOp,
    TxnRequest,
};
use keygate_tests::Clients;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::b;

#[derive(Clone, Debug)]
pub enum Op {
    Put {
        key: String,
        value: Bytes,
        lease: i64,
    },
    Delete {
        key: String,
    },
    DeleteRange {
        key: String,
        end: String,
    },
    Txn {
        puts: Vec<(String, Bytes)>,
        deletes: Vec<String>,
    },
    Grant {
        id: i64,
    },
    Revoke {
        id: i64,
    },
}

pub struct Gen {
    rng: StdRng,
    leases: Vec<i64>,
    next_lease: i64,
}

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            leases: Vec::new(),
            next_lease: 7000,
        }
    }

    pub fn key(&mut self) -> String {
        if self.rng.random_bool(0.1) {
            ["j/1", "l/1", "k", "k0", "k/"][self.rng.random_range(0..5)].to_string()
        } else {
            format!("k/{:02}", self.rng.random_range(0..20))
        }
    }

    pub fn value(&mut self, i: usize) -> Bytes {
        let pad = self.rng.random_range(0..24);
        Bytes::from(format!("v{i}-{}", "x".repeat(pad)))
    }

    pub fn op(&mut self, i: usize) -> Op {
        match self.rng.random_range(0..100) {
            0..45 => {
                let lease = if !self.leases.is_empty() && self.rng.random_bool(0.3) {
                    self.leases[self.rng.random_range(0..self.leases.len())]
                } else {
                    0
                };
                Op::Put {
                    key: self.key(),
                    value: self.value(i),
                    lease,
                }
            }
            45..58 => Op::Delete { key: self.key() },
            58..66 => {
                let a = self.rng.random_range(0..19);
                let z = self.rng.random_range(a + 1..21);
                Op::DeleteRange {
                    key: format!("k/{a:02}"),
                    end: format!("k/{z:02}"),
                }
            }
            66..88 => {
                let mut keys = HashSet::new();
                let n = self.rng.random_range(2..5);
                while keys.len() < n {
                    keys.insert(self.key());
                }
                let mut keys: Vec<String> = keys.into_iter().collect();
                keys.sort();
                let deletes = if self.rng.random_bool(0.4) {
                    keys.split_off(keys.len() - 1)
                } else {
                    Vec::new()
                };
                let puts = keys.into_iter().map(|k| (k, self.value(i))).collect();
                Op::Txn { puts, deletes }
            }
            88..94 => {
                self.next_lease += 1;
                self.leases.push(self.next_lease);
                Op::Grant {
                    id: self.next_lease,
                }
            }
            _ if !self.leases.is_empty() => {
                let at = self.rng.random_range(0..self.leases.len());
                Op::Revoke {
                    id: self.leases.remove(at),
                }
            }
            _ => Op::Delete { key: self.key() },
        }
    }
}

pub fn put_op(key: &str, value: Bytes) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: b(key),
            value,
            ..Default::default()
        })),
    }
}

pub async fn apply(c: &mut Clients, op: &Op) -> Result<i64> {
    let header = match op.clone() {
        Op::Put { key, value, lease } => {
            c.kv.put(PutRequest {
                key: b(&key),
                value,
                lease,
                ..Default::default()
            })
            .await?
            .into_inner()
            .header
        }
        Op::Delete { key } => {
            c.kv.delete_range(DeleteRangeRequest {
                key: b(&key),
                ..Default::default()
            })
            .await?
            .into_inner()
            .header
        }
        Op::DeleteRange { key, end } => {
            c.kv.delete_range(DeleteRangeRequest {
                key: b(&key),
                range_end: b(&end),
                ..Default::default()
            })
            .await?
            .into_inner()
            .header
        }
        Op::Txn { puts, deletes } => {
            let mut success: Vec<RequestOp> =
                puts.into_iter().map(|(k, v)| put_op(&k, v)).collect();
            success.extend(deletes.into_iter().map(|k| RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key: b(&k),
                        ..Default::default()
                    },
                )),
            }));
            c.kv.txn(TxnRequest {
                success,
                ..Default::default()
            })
            .await?
            .into_inner()
            .header
        }
        Op::Grant { id } => {
            c.lease
                .lease_grant(LeaseGrantRequest { ttl: 3600, id })
                .await?
                .into_inner()
                .header
        }
        Op::Revoke { id } => {
            c.lease
                .lease_revoke(LeaseRevokeRequest { id })
                .await?
                .into_inner()
                .header
        }
    };
    Ok(header.map_or(0, |h| h.revision))
}

/// Applies `op` to the reference cluster and through keygate; both must land on the same
/// revision.
pub async fn apply_both(direct: &mut Clients, via: &mut Clients, op: &Op) -> Result<i64> {
    let d = apply(direct, op)
        .await
        .with_context(|| format!("direct: {op:?}"))?;
    let v = apply(via, op)
        .await
        .with_context(|| format!("keygate side: {op:?}"))?;
    ensure!(
        d == v,
        "{op:?} landed on revision {d} directly but {v} on the keygate side"
    );
    Ok(d)
}
