//! The client against a scripted member that takes a batch of concurrent calls and answers
//! them in random order, framed every way RFC 9113 allows: header blocks split into
//! CONTINUATIONs, padding, priority data, bodies in DATA frames of any size, answers
//! interleaved, PINGs and unknown frames between, some answers trailers-only errors. Every
//! call gets its own answer. The same answers broken at random leave no call unsettled: each
//! ends answered or failed, and the connection's task ends, once the member has closed.

use super::*;
use crate::h2::frame;
use crate::h2::hpack::Encoder;
use crate::h2::testing::{self, break_at_random, data_frames, header_block, put_frame};
use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn settings() -> Settings {
    Settings {
        stream_window: 1 << 20,
        connection_window: 1 << 20,
        keep_alive_interval: Duration::from_secs(30),
        keep_alive_timeout: Duration::from_secs(30),
    }
}

/// What a call's answer is: its message (the request's body reversed), or an error status.
fn answer_for(body: &[u8]) -> Result<Vec<u8>, &'static str> {
    match body.get(5) {
        Some(b) if b % 5 == 0 => Err("5"),
        _ => Ok(body.iter().rev().copied().collect()),
    }
}

/// Reads the client's frames until `calls` requests have ended; returns their streams and
/// bodies, in the order they ended. Every DATA frame's window is given back at once.
async fn requests(io: &mut DuplexStream, calls: usize) -> Vec<(u32, Vec<u8>)> {
    let mut buf = BytesMut::new();
    let mut bodies: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut ended = Vec::new();
    while ended.len() < calls {
        let next = testing::read_frame(io, &mut buf).await;
        let (head, payload) = next.expect("the client closed");
        if head.kind == frame::DATA && head.len > 0 {
            bodies.entry(head.stream).or_default().extend(&payload);
            let mut out = Vec::new();
            frame::put_window_update(&mut out, 0, head.len as u32);
            frame::put_window_update(&mut out, head.stream, head.len as u32);
            io.write_all(&out).await.expect("writes");
        }
        let request = matches!(head.kind, frame::HEADERS | frame::DATA);
        if request && head.has(frame::END_STREAM) {
            ended.push((head.stream, bodies.remove(&head.stream).unwrap_or_default()));
        }
    }
    ended
}

/// The answers to `requests`, each stream's frames in order and the streams interleaved, with
/// PINGs and unknown frames between. Header blocks are encoded in the order they are sent.
fn answers(rng: &mut StdRng, requests: &[(u32, Vec<u8>)]) -> Vec<Vec<u8>> {
    enum Part {
        Head(u32, Vec<(&'static [u8], Vec<u8>)>, bool),
        Data(Vec<Vec<u8>>),
    }
    let mut streams: Vec<Vec<Part>> = requests
        .iter()
        .map(|(id, body)| {
            let id = *id;
            let mut head = vec![(&b":status"[..], b"200".to_vec())];
            head.push((b"content-type", b"application/grpc".to_vec()));
            match answer_for(body) {
                Err(code) => {
                    head.push((b"grpc-status", code.as_bytes().to_vec()));
                    head.push((b"grpc-message", b"not found".to_vec()));
                    vec![Part::Head(id, head, true)]
                }
                Ok(message) => {
                    let trailers = vec![(&b"grpc-status"[..], b"0".to_vec())];
                    vec![
                        Part::Head(id, head, false),
                        Part::Data(data_frames(rng, id, &message, false)),
                        Part::Head(id, trailers, true),
                    ]
                }
            }
        })
        .collect();
    for s in &mut streams {
        s.reverse();
    }
    let mut enc = Encoder::default();
    let mut units = Vec::new();
    loop {
        let open: Vec<usize> = (0..streams.len())
            .filter(|&s| !streams[s].is_empty())
            .collect();
        let Some(&s) = open.get(rng.random_range(0..open.len().max(1))) else {
            return units;
        };
        match streams[s].pop() {
            Some(Part::Head(id, fields, end)) => {
                let mut block = Vec::new();
                enc.begin(&mut block);
                for (name, value) in &fields {
                    enc.field(name, value, &mut block);
                }
                units.push(header_block(rng, id, &block, end));
            }
            Some(Part::Data(mut frames)) if !frames.is_empty() => {
                units.push(frames.remove(0));
                streams[s].push(Part::Data(frames));
            }
            _ => {}
        }
        if rng.random_bool(0.2) {
            units.push(match rng.random_bool(0.5) {
                true => put_frame(frame::PING, 0, 0, &rng.random::<[u8; 8]>()),
                false => put_frame(0x21, rng.random(), rng.random_range(0..9), b"?"),
            });
        }
    }
}

/// `calls` concurrent calls with random bodies (the first byte after the gRPC prefix picks
/// whether the member answers with an error).
fn calls(rng: &mut StdRng, client: &Client, calls: usize) -> Vec<(Vec<u8>, CallHandle)> {
    (0..calls)
        .map(|_| {
            let len = rng.random_range(1..30_000);
            let mut body = vec![0u8];
            body.extend_from_slice(&(len as u32).to_be_bytes());
            body.extend((0..len).map(|_| rng.random::<u8>()));
            let request = UnaryRequest {
                path: Bytes::from_static(b"/etcdserverpb.KV/Put"),
                headers: HeaderMap::new(),
                body: Bytes::from(body.clone()),
            };
            let client = client.clone();
            (
                body,
                tokio::spawn(async move { client.call(request).await }),
            )
        })
        .collect()
}

/// Reads (and drops) whatever the client sends until it closes.
fn read_to_end(mut rd: impl AsyncReadExt + Unpin + Send + 'static) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = rd.read_to_end(&mut sink).await;
    })
}

type CallHandle = tokio::task::JoinHandle<Result<UnaryResponse, CallError>>;

/// A client on one end of a pipe, its task spawned; the member's end after the opening.
async fn connect() -> (Client, tokio::task::JoinHandle<()>, DuplexStream) {
    let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
    let (client, driver) = Client::new(ours, settings(), "http", "member:2379");
    let driver = tokio::spawn(driver);
    let mut preface = [0u8; 24];
    theirs.read_exact(&mut preface).await.expect("preface");
    let mut out = Vec::new();
    frame::put_settings(&mut out, &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, 20_000)]);
    frame::put_settings_ack(&mut out);
    theirs.write_all(&out).await.expect("settings");
    (client, driver, theirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_framing_of_the_members_answers_reaches_its_call() {
    let mut rng = testing::rng(9114);
    for case in 0..testing::cases(150) {
        let (client, driver, mut member) = connect().await;
        let n = rng.random_range(1..16);
        let calls = calls(&mut rng, &client, n);
        let requests = requests(&mut member, n).await;
        let units = answers(&mut rng, &requests);
        // The member keeps reading (PING acks, window updates) while it answers.
        let (rd, mut wr) = tokio::io::split(member);
        let reader = read_to_end(rd);
        testing::write_in_pieces(&mut rng, &mut wr, &units.concat()).await;
        for (i, (body, call)) in calls.into_iter().enumerate() {
            let at = format!("case {case}, call {i}");
            let settled = tokio::time::timeout(Duration::from_secs(10), call).await;
            let result = settled.unwrap_or_else(|_| panic!("{at}: no answer"));
            let response = result
                .expect("no panic")
                .unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(response.status, StatusCode::OK, "{at}");
            let status = |h: &HeaderMap| h.get("grpc-status").map(|v| v.as_bytes().to_vec());
            match answer_for(&body) {
                Err(code) => {
                    assert_eq!(status(&response.headers), Some(code.into()), "{at}");
                    assert!(response.trailers.is_none(), "{at}: trailers-only");
                }
                Ok(message) => {
                    assert!(response.body[..] == message[..], "{at}: not its own answer");
                    let trailers = response.trailers.as_ref().map(status);
                    assert_eq!(trailers, Some(Some(b"0".to_vec())), "{at}");
                }
            }
        }
        let _ = wr.shutdown().await;
        drop(wr);
        let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
        ended
            .unwrap_or_else(|_| panic!("case {case}: the connection's task lingered"))
            .expect("no panic");
        let _ = reader.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_answers_leave_no_call_unsettled() {
    let mut rng = testing::rng(7541);
    let cases = testing::cases(300);
    let mut failed = 0;
    for case in 0..cases {
        let (client, driver, mut member) = connect().await;
        let n = rng.random_range(1..8);
        let calls = calls(&mut rng, &client, n);
        let requests = requests(&mut member, n).await;
        let mut units = answers(&mut rng, &requests);
        units.insert(0, Vec::new());
        break_at_random(&mut rng, &mut units);
        let (rd, mut wr) = tokio::io::split(member);
        let reader = read_to_end(rd);
        testing::write_in_pieces(&mut rng, &mut wr, &units.concat()).await;
        // The member closes: whatever was not answered must fail now.
        let _ = wr.shutdown().await;
        drop(wr);
        for (i, (_, call)) in calls.into_iter().enumerate() {
            let settled = tokio::time::timeout(Duration::from_secs(5), call).await;
            let result = settled.unwrap_or_else(|_| panic!("case {case}, call {i}: unsettled"));
            failed += usize::from(result.expect("no panic").is_err());
        }
        let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
        ended
            .unwrap_or_else(|_| panic!("case {case}: the connection's task lingered"))
            .expect("no panic");
        reader.abort();
    }
    // The breakage reached the checks: many calls failed.
    assert!(
        failed > cases / 4,
        "only {failed} calls failed in {cases} cases"
    );
}
