//! The server connection driven by scripted clients over an in-memory pipe, with an echo
//! handler. Well-formed traffic framed every way RFC 9113 allows — header blocks split into
//! CONTINUATIONs, padding, priority data, streams interleaved, PINGs, PRIORITY, WINDOW_UPDATE
//! and unknown frames in between, written in pieces of any size — gets every request's body
//! back on its own stream. The same traffic broken at random (frames inserted, dropped,
//! repeated, altered, cut short) never panics the connection, and the connection ends once the
//! client has closed.

use super::{serve, Call, Collected, Handler, Reply, RequestHead, Route, Settings};
use crate::h2::frame;
use crate::h2::hpack::{Decoder, Encoder};
use crate::h2::testing::{
    self, break_at_random, data_frames, header_block, put_frame, read_frame, write_in_pieces,
};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tonic::body::Body;

/// Answers every request with its own body: collected (on the connection's task for
/// `/inline`, on a task of its own otherwise) or bridged (`/bridge`).
struct Echo;

impl Handler for Echo {
    fn route(&self, head: &RequestHead) -> Route {
        match head.uri.path() {
            "/bridge" => Route::Bridge,
            _ => Route::Collect { limit: 1 << 20 },
        }
    }

    fn collected(&self, head: RequestHead, body: Collected) -> Call {
        let reply = match body {
            Collected::Body(framed) => {
                let mut headers = HeaderMap::new();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                Reply::Grpc { headers, framed }
            }
            Collected::TooLarge { .. } => Reply::Status(tonic::Status::resource_exhausted("")),
        };
        Call {
            reply: Box::pin(async move {
                tokio::task::yield_now().await;
                reply
            }),
            inline: head.uri.path() == "/inline",
        }
    }

    fn bridge(&self, request: http::Request<Body>) -> BoxFuture<'static, http::Response<Body>> {
        Box::pin(async move {
            let body = match request.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => Bytes::new(),
            };
            http::Response::new(Body::new(http_body_util::Full::new(body)))
        })
    }
}

/// A client's traffic: the connection's opening, then units that must stay together (a header
/// block's frames), and what each stream must get back.
struct Script {
    units: Vec<Vec<u8>>,
    bodies: HashMap<u32, Vec<u8>>,
    pings: usize,
}

fn script(rng: &mut StdRng) -> Script {
    let mut opening = frame::PREFACE.to_vec();
    // Windows large enough that answers never wait for the client; the connection's leaves
    // room for the small WINDOW_UPDATEs sent later.
    let settings = [(frame::SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24)];
    frame::put_settings(&mut opening, &settings);
    frame::put_settings_ack(&mut opening);
    frame::put_window_update(&mut opening, 0, 1 << 30);
    // Header blocks are encoded in stream order, and streams open in that order: the
    // server's HPACK table sees them as the encoder made them.
    let mut enc = Encoder::default();
    let mut streams = Vec::new();
    let mut bodies = HashMap::new();
    for n in 0..rng.random_range(1..12u32) {
        let id = 2 * n + 1;
        let (frames, body) = request(rng, &mut enc, id);
        bodies.insert(id, body);
        streams.push((id, frames));
    }
    let (mut units, pings) = interleave(rng, &streams);
    units.insert(0, opening);
    Script {
        units,
        bodies,
        pings,
    }
}

/// One request's frames (its header block first) and its body, a gRPC message of random bytes.
fn request(rng: &mut StdRng, enc: &mut Encoder, id: u32) -> (Vec<Vec<u8>>, Vec<u8>) {
    let path = ["/inline", "/task", "/bridge"][rng.random_range(0..3)];
    let filler = "f".repeat(rng.random_range(0..3000));
    let mut block = Vec::new();
    enc.begin(&mut block);
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "keygate.test"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("x-filler", &filler),
    ] {
        enc.field(name.as_bytes(), value.as_bytes(), &mut block);
    }
    let len: usize = rng.random_range(0..40_000);
    let mut body = vec![0u8];
    body.extend_from_slice(&(len as u32).to_be_bytes());
    body.extend((0..len).map(|_| rng.random::<u8>()));
    let mut frames = vec![header_block(rng, id, &block, false)];
    frames.extend(data_frames(rng, id, &body, true));
    (frames, body)
}

/// The streams' frames interleaved (each stream's in order, streams opened in id order), with
/// control and unknown frames between; with them, how many PINGs were sent.
fn interleave(rng: &mut StdRng, streams: &[(u32, Vec<Vec<u8>>)]) -> (Vec<Vec<u8>>, usize) {
    let (mut units, mut pings) = (Vec::new(), 0);
    let mut next = vec![0; streams.len()];
    let mut opened = 0;
    loop {
        let open: Vec<usize> = (0..streams.len())
            .filter(|&s| next[s] < streams[s].1.len() && s <= opened)
            .collect();
        let Some(&s) = open.get(rng.random_range(0..open.len().max(1))) else {
            return (units, pings);
        };
        opened = opened.max(s + 1);
        units.push(streams[s].1[next[s]].clone());
        next[s] += 1;
        if rng.random_bool(0.3) {
            let id = streams[rng.random_range(0..streams.len())].0;
            units.push(match rng.random_range(0..5) {
                0 => {
                    pings += 1;
                    put_frame(frame::PING, 0, 0, &rng.random::<[u8; 8]>())
                }
                1 => put_frame(frame::PRIORITY, 0, id, &[0, 0, 0, 0, 16]),
                2 => put_frame(frame::WINDOW_UPDATE, 0, 0, &1000u32.to_be_bytes()),
                3 => put_frame(0x20, rng.random(), rng.random_range(0..9), b"unknown"),
                _ => put_frame(frame::SETTINGS, 0, 0, &[]),
            });
        }
    }
}

/// What the server sent back, by stream.
#[derive(Default)]
struct Answers {
    status: HashMap<u32, Vec<u8>>,
    data: HashMap<u32, Vec<u8>>,
    ended: Vec<u32>,
    ping_acks: usize,
    goaway: Option<u32>,
}

/// Reads the server's frames until it closes, or until `until` says the answers are complete.
async fn read_answers(
    mut io: impl tokio::io::AsyncRead + Unpin,
    until: impl Fn(&Answers) -> bool,
) -> Answers {
    let mut answers = Answers::default();
    let mut buf = BytesMut::new();
    let mut dec = Decoder::new(4096, 1 << 20);
    let mut block: Option<(u32, Vec<u8>)> = None;
    while !until(&answers) {
        let Some((head, payload)) = read_frame(&mut io, &mut buf).await else {
            break;
        };
        match head.kind {
            frame::HEADERS | frame::CONTINUATION => {
                let (id, mut bytes) = block.take().unwrap_or((head.stream, Vec::new()));
                bytes.extend_from_slice(&payload);
                if !head.has(frame::END_HEADERS) {
                    block = Some((id, bytes));
                    continue;
                }
                let result = dec.decode(&Bytes::from(bytes), |n, v| {
                    if n.as_bytes() == b":status" {
                        answers.status.insert(id, v.to_vec());
                    }
                });
                assert!(result.is_ok(), "the server's header block decodes");
            }
            frame::DATA => {
                let data = answers.data.entry(head.stream).or_default();
                data.extend_from_slice(&payload);
            }
            frame::PING if head.has(frame::ACK) => answers.ping_acks += 1,
            frame::GOAWAY => {
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                answers.goaway = Some(code);
            }
            _ => {}
        }
        if head.has(frame::END_STREAM) && matches!(head.kind, frame::HEADERS | frame::DATA) {
            answers.ended.push(head.stream);
        }
    }
    answers
}

fn server(io: tokio::io::DuplexStream) -> tokio::task::JoinHandle<Result<(), super::ConnError>> {
    let pending: BoxFuture<'static, ()> = Box::pin(futures::future::pending());
    tokio::spawn(serve(
        io,
        BytesMut::new(),
        Settings::default(),
        Arc::new(Echo),
        pending,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_framing_of_well_formed_traffic_is_answered_in_full() {
    let mut rng = testing::rng(9113);
    for case in 0..testing::cases(150) {
        let script = script(&mut rng);
        let (client, server_io) = tokio::io::duplex(32 * 1024);
        let server = server(server_io);
        let (rd, mut wr) = tokio::io::split(client);
        let (want, pings) = (script.bodies.len(), script.pings);
        let reader = tokio::spawn(read_answers(rd, move |a| {
            a.ended.len() == want && a.ping_acks == pings
        }));
        write_in_pieces(&mut rng, &mut wr, &script.units.concat()).await;
        let answers = tokio::time::timeout(Duration::from_secs(20), reader)
            .await
            .unwrap_or_else(|_| panic!("case {case}: answers did not all come"))
            .expect("reader");
        for (id, body) in &script.bodies {
            let at = format!("case {case}, stream {id}");
            assert_eq!(
                answers.status.get(id).map(|s| &s[..]),
                Some(&b"200"[..]),
                "{at}"
            );
            let back = answers.data.get(id).map_or(0, Vec::len);
            let echoed = answers.data.get(id) == Some(body);
            assert!(
                echoed,
                "{at}: {back} bytes back of {}, not the body",
                body.len()
            );
        }
        assert_eq!(answers.goaway, None, "case {case}");
        let _ = wr.shutdown().await;
        let ended = tokio::time::timeout(Duration::from_secs(5), server).await;
        let result = ended.unwrap_or_else(|_| panic!("case {case}: the connection lingered"));
        assert!(result.expect("no panic").is_ok(), "case {case}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_traffic_never_panics_and_the_connection_ends() {
    let mut rng = testing::rng(7540);
    let mut refused = 0;
    let cases = testing::cases(400);
    for case in 0..cases {
        let mut units = script(&mut rng).units;
        break_at_random(&mut rng, &mut units);
        let (client, server_io) = tokio::io::duplex(32 * 1024);
        let server = server(server_io);
        let (rd, mut wr) = tokio::io::split(client);
        let reader = tokio::spawn(read_answers(rd, |_| false));
        write_in_pieces(&mut rng, &mut wr, &units.concat()).await;
        let _ = wr.shutdown().await;
        let ended = tokio::time::timeout(Duration::from_secs(5), server).await;
        let result = ended.unwrap_or_else(|_| panic!("case {case}: the connection lingered"));
        let _ = result.unwrap_or_else(|e| panic!("case {case}: {e}"));
        let answers = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap_or_else(|_| panic!("case {case}: the connection was not closed"))
            .expect("reader");
        refused += usize::from(answers.goaway.is_some_and(|code| code != 0));
    }
    // The breakage reached the checks: many connections were refused with an error.
    assert!(
        refused > cases / 4,
        "only {refused} of {cases} ended with an error"
    );
}
