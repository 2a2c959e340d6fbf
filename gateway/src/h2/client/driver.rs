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

mod recv;

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
