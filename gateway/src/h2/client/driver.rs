//! The task of one client connection: it writes queued requests (their bodies as the member's
//! flow-control windows allow), reads the answers, keeps the connection alive with PINGs, and
//! settles every call: answered, or failed with whether it may have reached the member.

use super::{lock, CallError, Pending, Settings, Shared, UnaryResponse};
use crate::h2::frame::{self, Head, Reason};
use crate::h2::hpack::{DecodeError, Decoder, Name};
use crate::h2::writer::{Writer, HIGH_WATER, SLICES};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};
use std::collections::HashMap;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

/// Rounds of the loop before the task yields to others.
const ROUNDS: usize = 32;
/// The highest stream id a client may use.
const LAST_ID: u32 = (1 << 31) - 1;

/// A call in flight.
struct Call {
    answer: oneshot::Sender<Result<UnaryResponse, CallError>>,
    send_window: i64,
    /// Body bytes still to send, waiting for window.
    unsent: Bytes,
    unacked: usize,
    head: Option<(StatusCode, HeaderMap)>,
    body: Vec<Bytes>,
}

pub struct Driver<IO> {
    io: IO,
    rbuf: BytesMut,
    w: Writer,
    decoder: Decoder,
    settings: Settings,
    shared: Arc<Shared>,
    calls: HashMap<u32, Call>,
    next_id: u32,
    /// The member's SETTINGS_MAX_CONCURRENT_STREAMS.
    max_streams: usize,
    /// The member's SETTINGS_INITIAL_WINDOW_SIZE.
    peer_window: i64,
    /// What the member may still send on the connection.
    recv_window: i64,
    unacked: usize,
    partial: Option<(u32, bool, BytesMut)>,
    /// Calls waiting for window to send the rest of their body.
    blocked: Vec<u32>,
    /// The member's GOAWAY: the last stream it will answer.
    goaway: Option<u32>,
    settings_seen: bool,
    /// Something arrived since the keep-alive timer was last set.
    heard: bool,
    ping_outstanding: bool,
    timer: Pin<Box<Sleep>>,
    pending: Vec<Pending>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Driver<IO> {
    pub(super) fn new(io: IO, settings: Settings, shared: Arc<Shared>) -> Driver<IO> {
        let mut w = Writer::new();
        w.control(|b| {
            b.extend_from_slice(frame::PREFACE);
            frame::put_settings(
                b,
                &[
                    (frame::SETTINGS_ENABLE_PUSH, 0),
                    (frame::SETTINGS_INITIAL_WINDOW_SIZE, settings.stream_window),
                ],
            );
            let extra = i64::from(settings.connection_window) - frame::DEFAULT_WINDOW;
            if extra > 0 {
                frame::put_window_update(b, 0, extra as u32);
            }
        });
        Driver {
            io,
            rbuf: BytesMut::with_capacity(64 * 1024),
            w,
            decoder: Decoder::new(4096, 16 << 20),
            settings,
            shared,
            calls: HashMap::new(),
            next_id: 1,
            max_streams: usize::MAX,
            peer_window: frame::DEFAULT_WINDOW,
            recv_window: i64::from(settings.connection_window).max(frame::DEFAULT_WINDOW),
            unacked: 0,
            partial: None,
            blocked: Vec::new(),
            goaway: None,
            settings_seen: false,
            heard: false,
            ping_outstanding: false,
            timer: Box::pin(tokio::time::sleep(settings.keep_alive_interval)),
            pending: Vec::new(),
        }
    }

    fn round(&mut self, cx: &mut Context<'_>) -> Result<bool, CallError> {
        let mut moved = false;
        self.rbuf.reserve(16 * 1024);
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
            Poll::Ready(Ok(0)) => return Err(failed("the member closed the connection")),
            Poll::Ready(Ok(_)) => {
                self.heard = true;
                self.frames()?;
                moved = true;
            }
            Poll::Ready(Err(e)) => return Err(failed(&format!("reading from the member: {e}"))),
            Poll::Pending => {}
        }
        moved |= self.start_new();
        self.pump();
        self.keep_alive(cx)?;
        moved |= self.write(cx)?;
        Ok(moved)
    }

    /// Takes queued requests and starts them, as far as the member's stream limit allows.
    fn start_new(&mut self) -> bool {
        if self.goaway.is_some() || self.w.len >= HIGH_WATER {
            return false;
        }
        {
            let mut q = lock(&self.shared.queue);
            let room = self.max_streams.saturating_sub(self.calls.len());
            let n = q.new.len().min(room);
            self.pending.extend(q.new.drain(..n));
        }
        if self.pending.is_empty() {
            return false;
        }
        let mut pending = std::mem::take(&mut self.pending);
        for p in pending.drain(..) {
            self.start(p);
        }
        self.pending = pending;
        true
    }

    fn start(&mut self, p: Pending) {
        let id = self.next_id;
        if id > LAST_ID {
            let _ = p
                .answer
                .send(Err(CallError::NotSent("stream ids used up".into())));
            self.close("stream ids used up");
            return;
        }
        self.next_id += 2;
        let origin = (&self.shared.scheme[..], &self.shared.authority[..]);
        let request = p.request;
        let end = request.body.is_empty();
        self.w.request(
            id,
            (origin.0, origin.1, &request.path),
            &request.headers,
            end,
        );
        let mut call = Call {
            answer: p.answer,
            send_window: self.peer_window,
            unsent: request.body,
            unacked: 0,
            head: None,
            body: Vec::new(),
        };
        if !end && !send_body(&mut self.w, id, &mut call) {
            self.blocked.push(id);
        }
        self.calls.insert(id, call);
    }

    /// Sends the bodies that were waiting for window.
    fn pump(&mut self) {
        if self.blocked.is_empty() || self.w.window <= 0 {
            return;
        }
        let blocked = std::mem::take(&mut self.blocked);
        for id in blocked {
            if let Some(call) = self.calls.get_mut(&id) {
                if !send_body(&mut self.w, id, call) {
                    self.blocked.push(id);
                }
            }
        }
    }

    /// PINGs a quiet connection; a PING left unanswered past the timeout ends it.
    fn keep_alive(&mut self, cx: &mut Context<'_>) -> Result<(), CallError> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let next = if self.ping_outstanding && !self.heard {
                return Err(failed(
                    "the member did not answer a keep-alive PING in time",
                ));
            } else if self.heard {
                self.heard = false;
                self.ping_outstanding = false;
                self.settings.keep_alive_interval
            } else {
                self.ping_outstanding = true;
                self.w.control(|b| frame::put_ping(b, false, *b"keygate!"));
                self.settings.keep_alive_timeout
            };
            self.timer.as_mut().reset(Instant::now() + next);
        }
        Ok(())
    }

    fn write(&mut self, cx: &mut Context<'_>) -> Result<bool, CallError> {
        let mut wrote = false;
        while self.w.len > 0 {
            let mut slices = [IoSlice::new(&[]); SLICES];
            let count = self.w.slices(&mut slices);
            let n = match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => return Err(failed("the member stopped taking writes")),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Err(failed(&format!("writing to the member: {e}"))),
                Poll::Pending => return Ok(wrote),
            };
            self.w.advance(n);
            wrote = true;
        }
        if wrote {
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx) {
                return Err(failed(&format!("writing to the member: {e}")));
            }
        }
        Ok(wrote)
    }

    fn frames(&mut self) -> Result<(), CallError> {
        loop {
            let next = frame::take(&mut self.rbuf);
            let Some((head, payload)) = next.map_err(|_| {
                self.protocol(Reason::FRAME_SIZE_ERROR, "frame larger than allowed")
            })?
            else {
                break;
            };
            self.frame(head, payload)?;
        }
        Ok(())
    }

    fn frame(&mut self, head: Head, payload: Bytes) -> Result<(), CallError> {
        if !self.settings_seen && (head.kind != frame::SETTINGS || head.has(frame::ACK)) {
            return Err(self.protocol(Reason::PROTOCOL_ERROR, "the first frame must be SETTINGS"));
        }
        if let Some((id, ..)) = &self.partial {
            if head.kind != frame::CONTINUATION || head.stream != *id {
                return Err(self.protocol(Reason::PROTOCOL_ERROR, "a header block was interrupted"));
            }
        }
        match head.kind {
            frame::DATA => self.on_data(head, payload),
            frame::HEADERS => {
                let mut range = frame::unpad(&head, &payload)
                    .ok_or_else(|| self.protocol(Reason::PROTOCOL_ERROR, "bad padding"))?;
                if head.has(frame::PRIORITY_FLAG) {
                    range.start += 5;
                    if range.start > range.end {
                        return Err(self.protocol(Reason::PROTOCOL_ERROR, "HEADERS too short"));
                    }
                }
                let block = payload.slice(range);
                let end = head.has(frame::END_STREAM);
                if head.has(frame::END_HEADERS) {
                    return self.header_block(head.stream, end, block);
                }
                self.partial = Some((head.stream, end, BytesMut::from(&block[..])));
                Ok(())
            }
            frame::CONTINUATION => {
                let Some((id, end, mut block)) = self.partial.take() else {
                    return Err(self.protocol(Reason::PROTOCOL_ERROR, "CONTINUATION alone"));
                };
                block.extend_from_slice(&payload);
                if head.has(frame::END_HEADERS) {
                    return self.header_block(id, end, block.freeze());
                }
                self.partial = Some((id, end, block));
                Ok(())
            }
            frame::RST_STREAM => {
                let code = payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or_else(|| self.protocol(Reason::FRAME_SIZE_ERROR, "short RST_STREAM"))?;
                if let Some(call) = self.calls.remove(&head.stream) {
                    let reason = Reason(code);
                    let why = format!("the member reset the stream: {reason}");
                    // REFUSED_STREAM: the member did no work on it (RFC 9113, 8.7).
                    let e = if reason == Reason::REFUSED_STREAM {
                        CallError::NotSent(why)
                    } else {
                        CallError::Failed(why)
                    };
                    let _ = call.answer.send(Err(e));
                }
                Ok(())
            }
            frame::SETTINGS => self.on_settings(head, &payload),
            frame::PUSH_PROMISE => Err(self.protocol(Reason::PROTOCOL_ERROR, "push is off")),
            frame::PING => {
                let data: [u8; 8] = payload[..].try_into().map_err(|_| {
                    self.protocol(Reason::FRAME_SIZE_ERROR, "PING of the wrong size")
                })?;
                if head.has(frame::ACK) {
                    self.ping_outstanding = false;
                } else {
                    self.w.control(|b| frame::put_ping(b, true, data));
                }
                Ok(())
            }
            frame::GOAWAY => {
                let last = payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
                    .ok_or_else(|| self.protocol(Reason::FRAME_SIZE_ERROR, "short GOAWAY"))?;
                self.go_away(last);
                Ok(())
            }
            frame::WINDOW_UPDATE => {
                let raw: [u8; 4] = payload[..]
                    .try_into()
                    .map_err(|_| self.protocol(Reason::FRAME_SIZE_ERROR, "bad WINDOW_UPDATE"))?;
                let increment = i64::from(u32::from_be_bytes(raw) & 0x7fff_ffff);
                if head.stream == 0 {
                    self.w.window += increment;
                } else if let Some(call) = self.calls.get_mut(&head.stream) {
                    call.send_window += increment;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_data(&mut self, head: Head, payload: Bytes) -> Result<(), CallError> {
        self.recv_window -= head.len as i64;
        if self.recv_window < 0 {
            return Err(self.protocol(Reason::FLOW_CONTROL_ERROR, "connection window exceeded"));
        }
        let range = frame::unpad(&head, &payload)
            .ok_or_else(|| self.protocol(Reason::PROTOCOL_ERROR, "bad padding"))?;
        // Everything received is taken at once: the window goes back as it arrives.
        self.unacked += head.len;
        let threshold = (self.settings.connection_window as usize / 4).max(1);
        if self.unacked >= threshold {
            let n = std::mem::take(&mut self.unacked);
            self.recv_window += n as i64;
            self.w.control(|b| frame::put_window_update(b, 0, n as u32));
        }
        let id = head.stream;
        let Some(call) = self.calls.get_mut(&id) else {
            return Ok(());
        };
        let data = payload.slice(range);
        if !data.is_empty() {
            call.body.push(data);
        }
        if head.has(frame::END_STREAM) {
            self.complete(id, None);
            return Ok(());
        }
        call.unacked += head.len;
        if call.unacked >= (self.settings.stream_window as usize / 4).max(1) {
            let n = std::mem::take(&mut call.unacked);
            self.w
                .control(|b| frame::put_window_update(b, id, n as u32));
        }
        Ok(())
    }

    fn header_block(&mut self, id: u32, end: bool, block: Bytes) -> Result<(), CallError> {
        let mut status = None;
        let mut headers = HeaderMap::new();
        let decoded = self.decoder.decode(&block, |name, value| match name {
            Name::Status => {
                status = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|s| s.parse().ok())
            }
            Name::Header(name) => {
                if let Ok(value) = HeaderValue::from_maybe_shared(value) {
                    headers.append(name, value);
                }
            }
            _ => {}
        });
        match decoded {
            Ok(()) => {}
            Err(DecodeError::ListTooLarge) => {
                if let Some(call) = self.calls.remove(&id) {
                    let _ = call
                        .answer
                        .send(Err(failed("the member's headers were too large")));
                }
                return Ok(());
            }
            Err(DecodeError::Compression(why)) => {
                return Err(self.protocol(Reason::COMPRESSION_ERROR, why));
            }
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return Ok(());
        };
        if call.head.is_none() {
            let Some(status) = status.and_then(|s: u16| StatusCode::from_u16(s).ok()) else {
                if let Some(call) = self.calls.remove(&id) {
                    let _ = call
                        .answer
                        .send(Err(failed("the member's answer had no :status")));
                }
                return Ok(());
            };
            call.head = Some((status, headers));
            if end {
                self.complete(id, None);
            }
            return Ok(());
        }
        if end {
            self.complete(id, Some(headers));
        }
        Ok(())
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), CallError> {
        if head.has(frame::ACK) {
            return Ok(());
        }
        if !payload.len().is_multiple_of(6) {
            return Err(self.protocol(Reason::FRAME_SIZE_ERROR, "SETTINGS of the wrong size"));
        }
        for setting in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match id {
                frame::SETTINGS_HEADER_TABLE_SIZE => self.w.set_peer_table_size(value as usize),
                frame::SETTINGS_MAX_CONCURRENT_STREAMS => self.max_streams = value as usize,
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    let delta = i64::from(value) - self.peer_window;
                    self.peer_window = i64::from(value);
                    for call in self.calls.values_mut() {
                        call.send_window += delta;
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    let size = value as usize;
                    if !(frame::DEFAULT_MAX_FRAME..=frame::MAX_FRAME_LIMIT).contains(&size) {
                        return Err(self.protocol(Reason::PROTOCOL_ERROR, "bad MAX_FRAME_SIZE"));
                    }
                    self.w.max_frame = size;
                }
                _ => {}
            }
        }
        self.settings_seen = true;
        self.w.control(frame::put_settings_ack);
        Ok(())
    }

    /// The member is going away: calls past `last` were never seen and may go elsewhere; no
    /// new call is taken.
    fn go_away(&mut self, last: u32) {
        self.goaway = Some(last);
        let unseen: Vec<u32> = self.calls.keys().copied().filter(|&id| id > last).collect();
        for id in unseen {
            if let Some(call) = self.calls.remove(&id) {
                let why = "the member is going away (GOAWAY)".to_string();
                let _ = call.answer.send(Err(CallError::NotSent(why)));
            }
        }
        self.close("the member is going away (GOAWAY)");
    }

    fn complete(&mut self, id: u32, trailers: Option<HeaderMap>) {
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        let Some((status, headers)) = call.head.take() else {
            return;
        };
        let body = match call.body.len() {
            0 => Bytes::new(),
            1 => call.body.swap_remove(0),
            _ => call.body.concat().into(),
        };
        let _ = call.answer.send(Ok(UnaryResponse {
            status,
            headers,
            body,
            trailers,
        }));
    }

    /// No more requests on this connection; those queued may go elsewhere.
    fn close(&mut self, why: &str) {
        let mut q = lock(&self.shared.queue);
        q.closed.get_or_insert_with(|| why.to_string());
        for p in q.new.drain(..) {
            let _ = p.answer.send(Err(CallError::NotSent(why.to_string())));
        }
    }

    /// A protocol error by the member: GOAWAY, and the connection is over.
    fn protocol(&mut self, reason: Reason, why: &str) -> CallError {
        let last = 0;
        self.w
            .control(|b| frame::put_goaway(b, last, reason, why.as_bytes()));
        failed(&format!("the member broke HTTP/2 ({reason}): {why}"))
    }

    /// The connection is over: every call in flight fails, queued ones may go elsewhere.
    fn fail(&mut self, e: &CallError) {
        let why = e.to_string();
        self.close(&why);
        for (_, call) in self.calls.drain() {
            let _ = call.answer.send(Err(CallError::Failed(why.clone())));
        }
    }
}

/// Sends as much of the call's body as the windows allow; `true` once all of it is sent.
fn send_body(w: &mut Writer, id: u32, call: &mut Call) -> bool {
    let allowed = call.send_window.min(w.window).max(0) as usize;
    if allowed == 0 {
        return call.unsent.is_empty();
    }
    let piece = call.unsent.split_to(allowed.min(call.unsent.len()));
    let n = piece.len() as i64;
    call.send_window -= n;
    w.window -= n;
    let done = call.unsent.is_empty();
    w.data(id, piece, done);
    done
}

fn failed(why: &str) -> CallError {
    CallError::Failed(why.to_string())
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Future for Driver<IO> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.shared.waker.register(cx.waker());
        for _ in 0..ROUNDS {
            match this.round(cx) {
                Ok(true) => {}
                Ok(false) => {
                    let done = this.goaway.is_some() && this.calls.is_empty();
                    if done {
                        // Best effort: whatever is left to write goes with the connection.
                        let _ = this.write(cx);
                        return Poll::Ready(());
                    }
                    return Poll::Pending;
                }
                Err(e) => {
                    // Best effort: a GOAWAY for a member that broke the protocol.
                    let _ = this.write(cx);
                    this.fail(&e);
                    return Poll::Ready(());
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<IO> Drop for Driver<IO> {
    fn drop(&mut self) {
        let mut q = lock(&self.shared.queue);
        q.closed
            .get_or_insert_with(|| "the connection's task ended".to_string());
        for p in q.new.drain(..) {
            let _ = p.answer.send(Err(CallError::NotSent(
                "the connection's task ended".into(),
            )));
        }
        drop(q);
        for (_, call) in self.calls.drain() {
            let _ = call
                .answer
                .send(Err(CallError::Failed("the connection's task ended".into())));
        }
    }
}
