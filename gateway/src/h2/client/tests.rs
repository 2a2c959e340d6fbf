//! The client against a member played by hand, frame by frame: what a call's error says about
//! whether it reached the member decides whether a write may be sent elsewhere.

use super::*;
use crate::h2::frame::{self, Head, Reason, HEAD_LEN};
use crate::h2::hpack::Encoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn settings() -> Settings {
    Settings {
        stream_window: 1 << 20,
        connection_window: 1 << 20,
        keep_alive_interval: Duration::from_millis(200),
        keep_alive_timeout: Duration::from_millis(200),
    }
}

fn request(body: usize) -> UnaryRequest {
    UnaryRequest {
        path: Bytes::from_static(b"/etcdserverpb.KV/Put"),
        headers: HeaderMap::new(),
        body: Bytes::from(vec![7u8; body]),
    }
}

/// The member's side of the connection: reads frames, writes frames.
struct Member {
    io: DuplexStream,
    buf: Vec<u8>,
    enc: Encoder,
}

impl Member {
    /// Reads the client's preface and SETTINGS, answers with its own SETTINGS.
    async fn accept(io: DuplexStream, own: &[(u16, u32)]) -> Member {
        let mut m = Member {
            io,
            buf: Vec::new(),
            enc: Encoder::default(),
        };
        let mut preface = [0u8; 24];
        m.io.read_exact(&mut preface).await.expect("preface");
        assert_eq!(&preface, frame::PREFACE);
        let mut out = Vec::new();
        frame::put_settings(&mut out, own);
        m.io.write_all(&out).await.expect("settings");
        m
    }

    /// The next frame from the client that is not SETTINGS, WINDOW_UPDATE or a PING ack.
    async fn next(&mut self) -> (Head, Vec<u8>) {
        loop {
            while self.buf.len() < HEAD_LEN
                || self.buf.len() < HEAD_LEN + Head::parse(&self.buf).map_or(0, |h| h.len)
            {
                let mut chunk = [0u8; 4096];
                let n = self.io.read(&mut chunk).await.expect("reads");
                assert!(n > 0, "the client closed");
                self.buf.extend_from_slice(&chunk[..n]);
            }
            let head = Head::parse(&self.buf).expect("head");
            let payload = self.buf[HEAD_LEN..HEAD_LEN + head.len].to_vec();
            self.buf.drain(..HEAD_LEN + head.len);
            match head.kind {
                frame::SETTINGS | frame::WINDOW_UPDATE => continue,
                _ => return (head, payload),
            }
        }
    }

    /// Reads frames until the request on a stream has ended; returns the stream and the body.
    async fn request(&mut self) -> (u32, usize) {
        let mut body = 0;
        loop {
            let (head, payload) = self.next().await;
            if head.kind == frame::DATA {
                body += payload.len();
            }
            if head.has(frame::END_STREAM) {
                return (head.stream, body);
            }
        }
    }

    async fn send(&mut self, out: Vec<u8>) {
        self.io.write_all(&out).await.expect("writes");
    }

    /// A whole gRPC answer: head, one message of `message` bytes, `grpc-status: 0`.
    fn answer(&mut self, stream: u32, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut block = Vec::new();
        self.enc.begin(&mut block);
        self.enc.field(b":status", b"200", &mut block);
        self.enc
            .field(b"content-type", b"application/grpc", &mut block);
        frame::put_headers(&mut out, stream, &block, false, 16_384);
        frame::put_data(&mut out, stream, message, false);
        block.clear();
        self.enc.begin(&mut block);
        self.enc.field(b"grpc-status", b"0", &mut block);
        frame::put_headers(&mut out, stream, &block, true, 16_384);
        out
    }
}

fn pair(settings: Settings) -> (Client, DuplexStream) {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (client, driver) = Client::new(ours, settings, "http", "member:2379");
    tokio::spawn(driver);
    (client, theirs)
}

#[tokio::test]
async fn an_answer_comes_back_whole_and_a_large_body_waits_for_window() {
    let (client, io) = pair(settings());
    let member = tokio::spawn(async move {
        // The member's windows start at 1,000 bytes: a 50,000-byte body needs updates.
        let mut m = Member::accept(io, &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, 1_000)]).await;
        let mut got = 0;
        let stream = loop {
            let (head, payload) = m.next().await;
            if head.kind == frame::DATA {
                got += payload.len();
                let mut out = Vec::new();
                frame::put_window_update(&mut out, 0, payload.len() as u32);
                frame::put_window_update(&mut out, head.stream, payload.len() as u32);
                m.send(out).await;
            }
            if head.has(frame::END_STREAM) {
                break head.stream;
            }
        };
        let answer = m.answer(stream, b"hello");
        m.send(answer).await;
        got
    });
    let response = client.call(request(50_000)).await.expect("answered");
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(&response.body[..], b"hello");
    let trailers = response.trailers.expect("trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(member.await.expect("member"), 50_000);
}

#[tokio::test]
async fn refused_and_unseen_calls_were_never_sent() {
    let (client, io) = pair(settings());
    let member = tokio::spawn(async move {
        let mut m = Member::accept(io, &[]).await;
        let (first, _) = m.request().await;
        let mut out = Vec::new();
        frame::put_rst(&mut out, first, Reason::REFUSED_STREAM);
        m.send(out).await;
        let (second, _) = m.request().await;
        // Going away before the second stream was seen.
        let mut out = Vec::new();
        frame::put_goaway(&mut out, first, Reason::NO_ERROR, b"");
        m.send(out).await;
        second
    });
    let first = client.call(request(10)).await;
    assert!(matches!(first, Err(CallError::NotSent(_))), "{first:?}");
    let second = client.call(request(10)).await;
    assert!(matches!(second, Err(CallError::NotSent(_))), "{second:?}");
    member.await.expect("member");
    // The connection takes nothing more: the caller dials another.
    assert!(client.is_closed());
    let third = client.call(request(10)).await;
    assert!(matches!(third, Err(CallError::NotSent(_))), "{third:?}");
}

#[tokio::test]
async fn calls_the_member_may_have_seen_fail_as_failed() {
    let (client, io) = pair(settings());
    tokio::spawn(async move {
        let mut m = Member::accept(io, &[]).await;
        let (stream, _) = m.request().await;
        let mut out = Vec::new();
        frame::put_rst(&mut out, stream, Reason::INTERNAL_ERROR);
        m.send(out).await;
        // Then the connection drops with a call in flight.
        m.request().await;
        drop(m);
    });
    let reset = client.call(request(10)).await;
    assert!(matches!(reset, Err(CallError::Failed(_))), "{reset:?}");
    let dropped = client.call(request(10)).await;
    assert!(matches!(dropped, Err(CallError::Failed(_))), "{dropped:?}");
    assert!(client.is_closed());
}

#[tokio::test]
async fn a_member_that_stops_answering_pings_is_given_up() {
    let (client, io) = pair(settings());
    let _member = tokio::spawn(async move {
        let mut m = Member::accept(io, &[]).await;
        m.request().await;
        // Never answers, never acks a PING; keeps the connection open.
        loop {
            m.next().await;
        }
    });
    let started = std::time::Instant::now();
    let result = client.call(request(10)).await;
    assert!(matches!(result, Err(CallError::Failed(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
