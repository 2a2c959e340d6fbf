//! keygate's own HTTP/2 server (gateway/src/h2), held to RFC 9113 by an independent client (the
//! h2 crate) and by hand-made frames: messages far larger than the client's flow-control
//! windows in both directions, header blocks split into CONTINUATIONs, pings, hundreds of
//! concurrent streams on one connection, a stream reset by the client, and broken frames —
//! each of which ends only its own connection, with the GOAWAY code the RFC asks for.

use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use keygate::h2::frame::{self, Head};
use keygate_proto::etcdserverpb::{PutRequest, RangeRequest, RangeResponse};
use keygate_tests::watch_record::metric;
use keygate_tests::{EtcdCluster, Keygate};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);

/// An h2 connection to `addr` with the client's windows as given.
async fn connect(addr: &str, stream_window: u32, conn_window: u32) -> Result<SendRequest<Bytes>> {
    let tcp = TcpStream::connect(addr).await?;
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(stream_window)
        .initial_connection_window_size(conn_window)
        .handshake::<_, Bytes>(tcp)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn grpc_request(path: &str, extra: &[(&str, String)]) -> Result<http::Request<()>> {
    let mut req = http::Request::post(format!("http://keygate{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in extra {
        req = req.header(*name, value.as_str());
    }
    Ok(req.body(())?)
}

fn framed<M: Message>(message: &M) -> Bytes {
    let body = message.encode_to_vec();
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.put_u8(0);
    out.put_u32(body.len() as u32);
    out.put_slice(&body);
    out.freeze()
}

/// One unary call; the answer's message bytes (unframed) after checking grpc-status 0. The
/// answer is read as slowly as the client's window makes it come: capacity is released only
/// after each chunk has arrived.
async fn call(
    client: &mut SendRequest<Bytes>,
    path: &str,
    body: Bytes,
    extra: &[(&str, String)],
) -> Result<Bytes> {
    let mut ready = client.clone().ready().await?;
    let (response, mut send) = ready.send_request(grpc_request(path, extra)?, false)?;
    send.send_data(body, true)?;
    let response = tokio::time::timeout(WAIT, response).await??;
    let (head, mut recv) = response.into_parts();
    ensure!(head.status == 200, "HTTP {}", head.status);
    let mut got = BytesMut::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, recv.data()).await? {
        let chunk = chunk?;
        recv.flow_control().release_capacity(chunk.len())?;
        got.extend_from_slice(&chunk);
    }
    let trailers = tokio::time::timeout(WAIT, recv.trailers()).await??;
    let status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| head.headers.get("grpc-status"));
    ensure!(
        status.map(|s| s.as_bytes()) == Some(b"0"),
        "grpc-status {status:?}, trailers {trailers:?}"
    );
    ensure!(got.len() >= 5, "no message in the answer");
    Ok(got.freeze().slice(5..))
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_larger_than_every_window_arrive_whole() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    // The client allows 1,000 bytes per stream and the minimum per connection: a 1.4 MB answer
    // must come in hundreds of window-sized pieces.
    let mut client = connect(keygate.addr(), 1_000, 65_535).await?;
    let value: Bytes = (0..1_400_000u32).map(|i| (i % 251) as u8).collect();
    // A request larger than keygate's own stream window (1 MiB): keygate must grant more.
    let put = PutRequest {
        key: Bytes::from_static(b"/big"),
        value: value.clone(),
        ..Default::default()
    };
    call(&mut client, "/etcdserverpb.KV/Put", framed(&put), &[]).await?;
    for serializable in [false, true] {
        let get = RangeRequest {
            key: Bytes::from_static(b"/big"),
            serializable,
            ..Default::default()
        };
        let answer = call(&mut client, "/etcdserverpb.KV/Range", framed(&get), &[]).await?;
        let answer = RangeResponse::decode(answer)?;
        let got = answer.kvs.first().map(|kv| kv.value.clone());
        ensure!(
            got.as_ref() == Some(&value),
            "serializable={serializable}: got {} bytes",
            got.map_or(0, |v| v.len())
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn large_header_blocks_pings_and_many_streams() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    let tcp = TcpStream::connect(keygate.addr()).await?;
    // Windows as hyper's clients open them: h2 counts answers' small DATA frames against a
    // budget of half the connection window, and 800 answers wait here at once.
    let (mut client, mut connection) = h2::client::Builder::new()
        .initial_window_size(2 << 20)
        .initial_connection_window_size(5 << 20)
        .handshake::<_, Bytes>(tcp)
        .await?;
    let mut pings = connection
        .ping_pong()
        .context("the connection's ping handle")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    tokio::time::timeout(WAIT, pings.ping(h2::Ping::opaque()))
        .await?
        .context("a PING answered")?;

    // 60 KB of metadata: HEADERS and CONTINUATIONs (frames are at most 16 KiB).
    let padding = vec![("x-padding", "p".repeat(60_000))];
    let get = RangeRequest {
        key: Bytes::from_static(b"/nothing"),
        ..Default::default()
    };
    let answer = call(
        &mut client,
        "/etcdserverpb.KV/Range",
        framed(&get),
        &padding,
    )
    .await?;
    ensure!(RangeResponse::decode(answer)?.count == 0);

    // 400 calls at once on one connection, writes and reads.
    let calls = (0..400u32).map(|i| {
        let mut client = client.clone();
        async move {
            let put = PutRequest {
                key: Bytes::from(format!("/many/{i:03}")),
                value: Bytes::from(format!("v{i}")),
                ..Default::default()
            };
            call(&mut client, "/etcdserverpb.KV/Put", framed(&put), &[]).await?;
            let get = RangeRequest {
                key: Bytes::from(format!("/many/{i:03}")),
                ..Default::default()
            };
            let answer = call(&mut client, "/etcdserverpb.KV/Range", framed(&get), &[]).await?;
            let value = RangeResponse::decode(answer)?
                .kvs
                .first()
                .map(|kv| kv.value.clone());
            ensure!(
                value == Some(Bytes::from(format!("v{i}"))),
                "{i}: {value:?}"
            );
            Ok::<_, anyhow::Error>(())
        }
    });
    for result in futures::future::join_all(calls).await {
        result?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_stream_ends_its_work_and_nothing_else() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    let mut client = connect(keygate.addr(), 65_535, 1 << 20).await?;
    // A watch: a stream with a task of its own in keygate, and a watcher in the hub.
    let create = keygate_proto::etcdserverpb::WatchRequest {
        request_union: Some(
            keygate_proto::etcdserverpb::watch_request::RequestUnion::CreateRequest(
                keygate_proto::etcdserverpb::WatchCreateRequest {
                    key: Bytes::from_static(b"/w"),
                    ..Default::default()
                },
            ),
        ),
    };
    let mut ready = client.clone().ready().await?;
    let (response, mut send) =
        ready.send_request(grpc_request("/etcdserverpb.Watch/Watch", &[])?, false)?;
    send.send_data(framed(&create), false)?;
    let response = tokio::time::timeout(WAIT, response).await??;
    let mut recv = response.into_body();
    let created = tokio::time::timeout(WAIT, recv.data())
        .await?
        .ok_or_else(|| anyhow!("no created response"))??;
    ensure!(created.len() > 5, "a created response");
    wait_for(keygate.addr(), "keygate_watch_watchers", 1.0).await?;
    // The client resets the stream (h2 sends RST_STREAM when both halves are dropped).
    send.send_reset(h2::Reason::CANCEL);
    drop(recv);
    wait_for(keygate.addr(), "keygate_watch_watchers", 0.0).await?;
    // The connection carries on.
    let get = RangeRequest {
        key: Bytes::from_static(b"/w"),
        ..Default::default()
    };
    call(&mut client, "/etcdserverpb.KV/Range", framed(&get), &[]).await?;
    Ok(())
}

/// Waits until `family` sums to `want` on keygate's /metrics.
async fn wait_for(addr: &str, family: &str, want: f64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = metric(addr, family).await?;
        if got == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{family} is {got}, not {want}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request head for stream `id`: POST /etcdserverpb.KV/Range over http, gRPC content type;
/// HPACK by hand (static-table indexes and literals without indexing).
fn request_block() -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    let path = b"/etcdserverpb.KV/Range";
    block.push(0x04); // :path, literal without indexing
    block.push(path.len() as u8);
    block.extend_from_slice(path);
    let ct = b"application/grpc";
    block.extend_from_slice(&[0x0f, 0x10]); // content-type (index 31)
    block.push(ct.len() as u8);
    block.extend_from_slice(ct);
    block
}

fn raw_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::put_head(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

/// Opens a connection, sends the preface, an empty SETTINGS and `bad`, and returns the error
/// code of the GOAWAY keygate answers with before it closes the connection.
async fn goaway_for(addr: &str, bad: &[u8], preface: bool) -> Result<u32> {
    let mut tcp = TcpStream::connect(addr).await?;
    let mut out = Vec::new();
    if preface {
        out.extend_from_slice(frame::PREFACE);
        out.extend(raw_frame(frame::SETTINGS, 0, 0, &[]));
    }
    out.extend_from_slice(bad);
    tcp.write_all(&out).await?;
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut got))
        .await
        .context("keygate kept the connection open")??;
    let mut at = 0;
    while let Some(head) = got.get(at..).and_then(Head::parse) {
        let payload = got
            .get(at + frame::HEAD_LEN..at + frame::HEAD_LEN + head.len)
            .ok_or_else(|| anyhow!("a truncated frame"))?;
        if head.kind == frame::GOAWAY {
            let code = payload
                .get(4..8)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| anyhow!("a short GOAWAY"))?;
            return Ok(code);
        }
        at += frame::HEAD_LEN + head.len;
    }
    bail!("no GOAWAY in {} bytes", got.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_frames_end_only_their_own_connection() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    let mut client = connect(keygate.addr(), 65_535, 1 << 20).await?;
    let headers = |stream| raw_frame(frame::HEADERS, frame::END_HEADERS, stream, &request_block());
    let max_window = (0x7fff_ffffu32).to_be_bytes();
    let cases: Vec<(&str, Vec<u8>, frame::Reason)> = vec![
        (
            "HEADERS on an even stream",
            headers(2),
            frame::Reason::PROTOCOL_ERROR,
        ),
        (
            "DATA on an idle stream",
            raw_frame(frame::DATA, 0, 5, b"hello"),
            frame::Reason::PROTOCOL_ERROR,
        ),
        (
            "a frame larger than SETTINGS_MAX_FRAME_SIZE",
            raw_frame(frame::DATA, 0, 1, &vec![0u8; 20_000]),
            frame::Reason::FRAME_SIZE_ERROR,
        ),
        (
            "a connection window past 2^31-1",
            raw_frame(frame::WINDOW_UPDATE, 0, 0, &max_window),
            frame::Reason::FLOW_CONTROL_ERROR,
        ),
        (
            "a header block HPACK cannot decode",
            raw_frame(frame::HEADERS, frame::END_HEADERS, 1, &[0x80]),
            frame::Reason::COMPRESSION_ERROR,
        ),
        (
            "a PING of 4 bytes",
            raw_frame(frame::PING, 0, 0, &[0; 4]),
            frame::Reason::FRAME_SIZE_ERROR,
        ),
        (
            "CONTINUATION without HEADERS",
            raw_frame(frame::CONTINUATION, frame::END_HEADERS, 1, &request_block()),
            frame::Reason::PROTOCOL_ERROR,
        ),
        (
            "a HEADERS interrupted by another frame",
            [
                raw_frame(frame::HEADERS, 0, 1, &request_block()),
                raw_frame(frame::PING, 0, 0, &[0; 8]),
            ]
            .concat(),
            frame::Reason::PROTOCOL_ERROR,
        ),
        (
            "a client PUSH_PROMISE",
            raw_frame(frame::PUSH_PROMISE, frame::END_HEADERS, 1, &[0, 0, 0, 2]),
            frame::Reason::PROTOCOL_ERROR,
        ),
    ];
    for (what, bad, want) in cases {
        let code = goaway_for(keygate.addr(), &bad, true)
            .await
            .with_context(|| what.to_string())?;
        ensure!(
            code == want.0,
            "{what}: GOAWAY {}, not {want}",
            frame::Reason(code)
        );
    }
    // A first frame that is not SETTINGS.
    let mut not_settings = frame::PREFACE.to_vec();
    not_settings.extend(raw_frame(frame::PING, 0, 0, &[0; 8]));
    let code = goaway_for(keygate.addr(), &not_settings, false).await?;
    ensure!(
        code == frame::Reason::PROTOCOL_ERROR.0,
        "first frame: {code}"
    );
    // Through all of that, the other connection was served.
    let get = RangeRequest {
        key: Bytes::from_static(b"/x"),
        ..Default::default()
    };
    call(&mut client, "/etcdserverpb.KV/Range", framed(&get), &[]).await?;
    Ok(())
}
