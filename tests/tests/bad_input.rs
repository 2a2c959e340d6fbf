//! Bad input through keygate: garbage and truncated protobuf, oversize requests, unknown
//! methods, invalid ranges and clients that never read. Each gets the error etcd itself gives,
//! and keygate stays up and keeps serving everyone else.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest, WatchCreateRequest,
};
use keygate_tests::grpc_diff::{normalize, run, Op, Reply};
use keygate_tests::raw_grpc;
use keygate_tests::watch::{prefix_watch, WatchStream};
use keygate_tests::{Clients, EtcdCluster, Keygate};
use prost::Message;
use tonic::Code;

/// One cluster, reached both directly and through keygate.
struct Setup {
    /// Kept so the cluster lives as long as the test.
    _cluster: EtcdCluster,
    keygate: Keygate,
    direct: Clients,
    gw: Clients,
}

async fn setup() -> Result<Setup> {
    let cluster = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    let direct = cluster.clients(0).await?;
    let gw = keygate.clients().await?;
    Ok(Setup {
        _cluster: cluster,
        keygate,
        direct,
        gw,
    })
}

impl Setup {
    /// keygate is still running and answers a normal Range.
    async fn still_serves(&mut self) -> Result<()> {
        let resp = self
            .gw
            .kv
            .range(RangeRequest {
                key: Bytes::from_static(b"probe"),
                ..Default::default()
            })
            .await
            .with_context(|| format!("keygate log:\n{}", self.keygate.log_tail(30)))?;
        ensure!(resp.into_inner().header.is_some(), "no header");
        Ok(())
    }

    /// Sends `body` to `path` on both sides; the outcomes must agree (both OK, or the same
    /// code). Returns keygate's status, if any.
    async fn same_code(&self, path: &str, body: &[u8]) -> Result<Option<tonic::Status>> {
        let direct =
            raw_grpc::unary(&self.direct.channel, path, Bytes::copy_from_slice(body)).await;
        let gw = raw_grpc::unary(&self.gw.channel, path, Bytes::copy_from_slice(body)).await;
        let code = |r: &Result<Bytes, tonic::Status>| r.as_ref().err().map(tonic::Status::code);
        ensure!(
            code(&direct) == code(&gw),
            "{path} with body {body:02x?}: etcd answered {direct:?}, keygate {gw:?}\n{}",
            self.keygate.log_tail(20)
        );
        Ok(gw.err())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_and_truncated_protobuf() -> Result<()> {
    let mut s = setup().await?;
    let range = RangeRequest {
        key: Bytes::from_static(b"some/key"),
        range_end: Bytes::from_static(b"some/kez"),
        limit: 5,
        ..Default::default()
    }
    .encode_to_vec();
    let put = PutRequest {
        key: Bytes::from_static(b"bad/put"),
        value: Bytes::from(vec![b'v'; 300]),
        ..Default::default()
    }
    .encode_to_vec();
    let mut bodies: Vec<(&str, Vec<u8>)> = vec![
        ("/etcdserverpb.KV/Range", range[..3].to_vec()),
        ("/etcdserverpb.KV/Range", range[..range.len() - 1].to_vec()),
        ("/etcdserverpb.KV/Put", put[..put.len() / 2].to_vec()),
        ("/etcdserverpb.KV/Put", put[..1].to_vec()),
        // A length prefix far past the end; an overlong varint; wire type 7; field 0.
        (
            "/etcdserverpb.KV/Range",
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
        (
            "/etcdserverpb.KV/Range",
            vec![0x18; 1].into_iter().chain([0xff; 11]).collect(),
        ),
        ("/etcdserverpb.KV/Range", vec![0x0f, 0x01]),
        ("/etcdserverpb.KV/Range", vec![0x00, 0x01]),
        ("/etcdserverpb.KV/Txn", vec![0x0a, 0x05, 0x0a, 0x10, 0x01]),
        ("/etcdserverpb.KV/Txn", vec![0xff; 64]),
        ("/etcdserverpb.Lease/LeaseGrant", vec![0x08]),
        (
            "/etcdserverpb.Cluster/MemberList",
            vec![0xde, 0xad, 0xbe, 0xef],
        ),
        ("/etcdserverpb.Maintenance/Status", vec![0x12, 0x7f]),
    ];
    // Random garbage with a fixed seed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for n in [1usize, 7, 64, 1000] {
        let garbage: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        bodies.push(("/etcdserverpb.KV/Range", garbage.clone()));
        bodies.push(("/etcdserverpb.KV/Put", garbage));
    }
    let mut errors = 0;
    for (path, body) in &bodies {
        if let Some(status) = s.same_code(path, body).await? {
            eprintln!(
                "{path} {body:02x?}: {:?} {:?}",
                status.code(),
                status.message()
            );
            errors += 1;
        }
    }
    ensure!(
        errors >= 8,
        "only {errors} of {} bad bodies were rejected",
        bodies.len()
    );
    ensure!(s.keygate.pid().is_some(), "keygate is gone");
    s.still_serves().await?;
    // Nothing was written by the bad puts.
    let left =
        s.gw.kv
            .range(RangeRequest {
                key: Bytes::from_static(b"bad/"),
                range_end: Bytes::from_static(b"bad0"),
                count_only: true,
                ..Default::default()
            })
            .await?
            .into_inner();
    let direct_left = s
        .direct
        .kv
        .range(RangeRequest {
            key: Bytes::from_static(b"bad/"),
            range_end: Bytes::from_static(b"bad0"),
            count_only: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(
        left.count == direct_left.count,
        "{left:?} vs {direct_left:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_requests_and_unknown_methods_get_etcds_errors() -> Result<()> {
    let mut s = setup().await?;
    for (size, want) in [
        (3 * 1024 * 1024, Code::ResourceExhausted),
        (1024 * 1024 * 8 / 5, Code::InvalidArgument),
    ] {
        let op = Op::Put(PutRequest {
            key: Bytes::from_static(b"big"),
            value: Bytes::from(vec![b'x'; size]),
            ..Default::default()
        });
        let direct = normalize(run(&mut s.direct, &op).await);
        let gw = normalize(run(&mut s.gw, &op).await);
        ensure!(
            matches!(&direct, Reply::Error { code, .. } if *code == want),
            "etcd answered a {size}-byte put with {direct:?}"
        );
        ensure!(
            direct == gw,
            "a {size}-byte put: etcd answered {direct:?}, keygate {gw:?}"
        );
        s.still_serves().await?;
    }

    for path in [
        "/etcdserverpb.KV/Nope",
        "/etcdserverpb.Nope/Range",
        "/nope.Service/Method",
        "/etcdserverpb.Watch/Range",
    ] {
        let direct = raw_grpc::unary(&s.direct.channel, path, Bytes::new()).await;
        let gw = raw_grpc::unary(&s.gw.channel, path, Bytes::new()).await;
        let (Err(d), Err(g)) = (&direct, &gw) else {
            anyhow::bail!("{path}: etcd answered {direct:?}, keygate {gw:?}");
        };
        ensure!(d.code() == Code::Unimplemented, "etcd: {d:?}");
        ensure!(
            (g.code(), g.message()) == (d.code(), d.message()),
            "{path}: etcd answered {d:?}, keygate {g:?}"
        );
    }
    s.still_serves().await
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_ranges_get_etcds_answers() -> Result<()> {
    let mut s = setup().await?;
    let b = Bytes::from_static;
    let ops = [
        Op::Range(RangeRequest::default()),
        Op::Range(RangeRequest {
            key: b(b"b"),
            range_end: b(b"a"),
            ..Default::default()
        }),
        Op::Range(RangeRequest {
            key: b(b""),
            range_end: b(b"a"),
            ..Default::default()
        }),
        Op::Range(RangeRequest {
            key: b(b"a"),
            revision: -1,
            ..Default::default()
        }),
        Op::Range(RangeRequest {
            key: b(b"a"),
            sort_order: 7,
            sort_target: 9,
            ..Default::default()
        }),
        Op::Range(RangeRequest {
            key: b(b"a"),
            limit: -5,
            ..Default::default()
        }),
        Op::Delete(DeleteRangeRequest {
            key: b(b""),
            range_end: b(b"z"),
            prev_kv: true,
        }),
        Op::Delete(DeleteRangeRequest {
            key: b(b"z"),
            range_end: b(b"a"),
            prev_kv: true,
        }),
        Op::Txn(TxnRequest {
            compare: vec![keygate_proto::etcdserverpb::Compare {
                key: b(b""),
                result: 9,
                target: 9,
                ..Default::default()
            }],
            ..Default::default()
        }),
    ];
    for op in ops {
        let direct = normalize(run(&mut s.direct, &op).await);
        let gw = normalize(run(&mut s.gw, &op).await);
        ensure!(
            direct == gw,
            "{op:?}: etcd answered {direct:?}, keygate {gw:?}"
        );
    }
    s.still_serves().await
}

/// keygate's resident set size in bytes, from /proc.
fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("bad VmRSS line")?
        .parse()?;
    Ok(kb * 1024)
}

const STUCK_WATCHERS: usize = 4;
const BULK_PUTS: usize = 400;
const BULK_VALUE: usize = 16 * 1024;
const MAX_LATENCY: Duration = Duration::from_secs(1);
const MAX_RSS: u64 = 200 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_does_not_hurt_others() -> Result<()> {
    let mut s = setup().await?;
    let pid = s.keygate.pid().context("keygate not running")?;
    let rss_before = rss_bytes(pid)?;

    // Watchers, each on its own connection, that never read a single response.
    let mut stuck = Vec::new();
    for _ in 0..STUCK_WATCHERS {
        let c = s.keygate.clients().await?;
        let w = WatchStream::open(
            &c,
            WatchCreateRequest {
                prev_kv: true,
                ..prefix_watch("busy/", 0)
            },
        )
        .await?;
        stuck.push((c, w));
    }

    // A busy prefix: a few MB of events (twice that with prev_kv), written straight to etcd.
    let writer = {
        let mut c = s.direct.clone();
        tokio::spawn(async move {
            for i in 0..BULK_PUTS {
                c.kv.put(PutRequest {
                    key: Bytes::from(format!("busy/{}", i % 50)),
                    value: Bytes::from(vec![b'a' + (i % 26) as u8; BULK_VALUE]),
                    ..Default::default()
                })
                .await?;
            }
            anyhow::Ok(())
        })
    };

    // Meanwhile another client of the same keygate keeps working at normal speed.
    let mut other = s.keygate.clients().await?;
    let mut worst = Duration::ZERO;
    let mut ops = 0usize;
    let mut writer_done_at = None;
    let mut peak_rss = rss_before;
    loop {
        if writer.is_finished() && writer_done_at.is_none() {
            writer_done_at = Some(Instant::now());
        }
        if writer_done_at.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
            break;
        }
        let value = Bytes::from(ops.to_string());
        let t = Instant::now();
        tokio::time::timeout(
            MAX_LATENCY,
            other.kv.put(PutRequest {
                key: Bytes::from_static(b"other"),
                value: value.clone(),
                ..Default::default()
            }),
        )
        .await
        .with_context(|| format!("put #{ops} took over {MAX_LATENCY:?}"))??;
        let got = tokio::time::timeout(
            MAX_LATENCY,
            other.kv.range(RangeRequest {
                key: Bytes::from_static(b"other"),
                ..Default::default()
            }),
        )
        .await
        .with_context(|| format!("get #{ops} took over {MAX_LATENCY:?}"))??
        .into_inner();
        ensure!(got.kvs.first().map(|kv| &kv.value) == Some(&value));
        worst = worst.max(t.elapsed());
        ops += 1;
        peak_rss = peak_rss.max(rss_bytes(pid)?);
    }
    writer.await??;
    let rss_after = rss_bytes(pid)?;
    eprintln!(
        "never-reading watchers: {ops} put+get rounds by another client, worst {worst:?}; \
         keygate RSS {} MiB before, {} MiB peak, {} MiB after",
        rss_before >> 20,
        peak_rss >> 20,
        rss_after >> 20
    );
    ensure!(ops >= 20, "only {ops} rounds");
    ensure!(
        peak_rss < MAX_RSS,
        "keygate's RSS reached {} MiB with {STUCK_WATCHERS} never-reading watchers",
        peak_rss >> 20
    );

    // A fresh watcher through the same keygate still gets events.
    let mut fresh = WatchStream::open(&other, prefix_watch("fresh/", 0)).await?;
    let created = fresh.next(Duration::from_secs(5)).await?;
    ensure!(created.created, "{created:?}");
    other
        .kv
        .put(PutRequest {
            key: Bytes::from_static(b"fresh/1"),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        })
        .await?;
    fresh
        .events_until(b"fresh/1", Duration::from_secs(5))
        .await?;
    drop(stuck);
    s.still_serves().await
}
