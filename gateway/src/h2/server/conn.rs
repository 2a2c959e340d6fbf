//! The connection's task: a loop that reads frames, hands requests to the handler, polls the
//! answers worked out on the connection's own task, takes what the streams' tasks have posted,
//! sends what flow control allows and writes it all out together.

use super::inline::Inline;
use super::send::{send_queue, Sent};
use super::shared::{Event, Mailbox};
use super::stream::{State, Stream};
use super::{Handler, Reply, Settings};
use crate::h2::frame::{self, Reason};
use crate::h2::hpack::Decoder;
use crate::h2::writer::{Writer, HIGH_WATER, SLICES};
use bytes::BytesMut;
use futures::future::BoxFuture;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// How a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// keygate ended the connection with GOAWAY and this reason.
    #[error("{reason}: {detail}")]
    Protocol { reason: Reason, detail: String },
}

impl ConnError {
    pub fn protocol(reason: Reason, detail: impl Into<String>) -> ConnError {
        ConnError::Protocol {
            reason,
            detail: detail.into(),
        }
    }
}

/// How long a connection that failed may take to write its GOAWAY.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Rounds of the loop before the task yields to others.
const ROUNDS: usize = 32;

pub struct Conn<IO> {
    io: IO,
    pub(super) rbuf: BytesMut,
    pub(super) w: Writer,
    pub(super) decoder: Decoder,
    pub(super) settings: Settings,
    pub(super) handler: Arc<dyn Handler>,
    pub(super) mailbox: Arc<Mailbox>,
    pub(super) streams: HashMap<u32, Stream>,
    /// The highest stream the client has opened.
    pub(super) last_id: u32,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE.
    pub(super) peer_window: i64,
    /// What the client may still send on the connection.
    pub(super) recv_window: i64,
    /// Received bytes released but not yet granted back.
    pub(super) unacked: usize,
    /// A header block still waiting for its CONTINUATIONs: stream, END_STREAM, the block.
    pub(super) partial: Option<(u32, bool, BytesMut)>,
    pub(super) preface_done: bool,
    pub(super) settings_seen: bool,
    /// Bytes read before the connection began wait in `rbuf`.
    preread: bool,
    /// The write side is shut (a failed connection closing).
    write_shut: bool,
    /// Collected requests' answers worked out on the connection's task.
    pub(super) inline: Inline,
    /// Streams that may have frames to send.
    pub(super) ready: VecDeque<u32>,
    /// Streams waiting for the connection's window.
    pub(super) blocked: Vec<u32>,
    events: Vec<Event>,
    drain: Option<BoxFuture<'static, ()>>,
    /// GOAWAY was sent: no new streams, close once the open ones are done.
    pub(super) going_away: bool,
    /// The client sent GOAWAY.
    pub(super) peer_going_away: bool,
    read_closed: bool,
    /// The connection failed: write the GOAWAY (for a while), then return this.
    failed: Option<(ConnError, Pin<Box<tokio::time::Sleep>>)>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    pub fn new(
        io: IO,
        preread: BytesMut,
        settings: Settings,
        handler: Arc<dyn Handler>,
        drain: BoxFuture<'static, ()>,
    ) -> Conn<IO> {
        let mut w = Writer::new();
        let mut ours = vec![
            (frame::SETTINGS_INITIAL_WINDOW_SIZE, settings.stream_window),
            (
                frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                settings.max_header_list,
            ),
        ];
        if settings.max_concurrent_streams != u32::MAX {
            ours.push((
                frame::SETTINGS_MAX_CONCURRENT_STREAMS,
                settings.max_concurrent_streams,
            ));
        }
        w.control(|b| {
            frame::put_settings(b, &ours);
            let extra = i64::from(settings.connection_window) - frame::DEFAULT_WINDOW;
            if extra > 0 {
                frame::put_window_update(b, 0, extra as u32);
            }
        });
        let mut rbuf = preread;
        rbuf.reserve(32 * 1024);
        Conn {
            io,
            rbuf,
            w,
            decoder: Decoder::new(4096, settings.max_header_list as usize),
            settings,
            handler,
            mailbox: Arc::new(Mailbox::default()),
            streams: HashMap::new(),
            last_id: 0,
            peer_window: frame::DEFAULT_WINDOW,
            recv_window: i64::from(settings.connection_window).max(frame::DEFAULT_WINDOW),
            unacked: 0,
            partial: None,
            preface_done: false,
            settings_seen: false,
            preread: true,
            write_shut: false,
            inline: Inline::default(),
            ready: VecDeque::new(),
            blocked: Vec::new(),
            events: Vec::new(),
            drain: Some(drain),
            going_away: false,
            peer_going_away: false,
            read_closed: false,
            failed: None,
        }
    }

    /// One round of work; `Ok(true)` when anything moved.
    fn round(&mut self, cx: &mut Context<'_>) -> Result<bool, ConnError> {
        let mut moved = false;
        if let Some(drain) = &mut self.drain {
            if drain.as_mut().poll(cx).is_ready() {
                self.drain = None;
                self.go_away(Reason::NO_ERROR, b"");
                moved = true;
            }
        }
        if self.preread {
            // What was read before this connection began (the preface, and whatever came
            // with it) is handled before waiting for more.
            self.preread = false;
            self.frames()?;
            moved = true;
        }
        if !self.read_closed && self.w.len < HIGH_WATER {
            self.rbuf.reserve(16 * 1024);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => {
                    self.read_closed = true;
                    moved = true;
                }
                Poll::Ready(Ok(_)) => {
                    self.frames()?;
                    moved = true;
                }
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Pending => {}
            }
        }
        moved |= self.take_events();
        while let Poll::Ready((id, reply)) = self.inline.poll_next(cx) {
            self.reply(id, reply);
            moved = true;
        }
        self.pump();
        self.grant();
        moved |= self.write(cx)?;
        Ok(moved)
    }

    /// Writes what is buffered; `Ok(true)` when anything was written.
    fn write(&mut self, cx: &mut Context<'_>) -> Result<bool, ConnError> {
        let mut wrote = false;
        while self.w.len > 0 {
            let mut slices = [IoSlice::new(&[]); SLICES];
            let count = self.w.slices(&mut slices);
            let n = match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => {
                    return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into())
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Pending => return Ok(wrote),
            };
            self.w.advance(n);
            wrote = true;
        }
        if wrote {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        Ok(wrote)
    }

    /// Everything is done: the client closed, or keygate or the client is going away and no
    /// stream is left.
    fn finished(&self) -> bool {
        let idle = self.streams.is_empty() && self.inline.is_empty();
        let over = self.read_closed || ((self.going_away || self.peer_going_away) && idle);
        over && self.w.len == 0
    }

    /// Sends GOAWAY: no stream after the last one opened will be served.
    pub(super) fn go_away(&mut self, reason: Reason, debug: &[u8]) {
        if !self.going_away {
            self.going_away = true;
            let last = self.last_id;
            self.w
                .control(|b| frame::put_goaway(b, last, reason, debug));
        }
    }

    fn fail(&mut self, e: ConnError) {
        if let ConnError::Protocol { reason, detail } = &e {
            let debug = detail.clone();
            self.going_away = false;
            self.go_away(*reason, debug.as_bytes());
        }
        self.read_closed = true;
        self.streams.clear();
        self.failed = Some((e, Box::pin(tokio::time::sleep(CLOSE_GRACE))));
    }

    fn take_events(&mut self) -> bool {
        self.mailbox.take(&mut self.events);
        if self.events.is_empty() {
            return false;
        }
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            match event {
                Event::Reply(id, reply) => self.reply(id, reply),
                Event::Ready(id) => self.ready.push_back(id),
                Event::Consumed(id, n) => self.consumed(id, n),
            }
        }
        self.events = events;
        true
    }

    /// Sends what the ready streams have queued, as far as windows and the buffer allow.
    pub(super) fn pump(&mut self) {
        while let Some(id) = self.ready.pop_front() {
            let Some(stream) = self.streams.get_mut(&id) else {
                continue;
            };
            let sent = match &mut stream.state {
                State::Replying(q) => send_queue(&mut self.w, id, &mut stream.send_window, q),
                State::Bridged { outbox, .. } => {
                    let outbox = outbox.clone();
                    let mut q = outbox.lock();
                    q.notified = false;
                    send_queue(&mut self.w, id, &mut stream.send_window, &mut q)
                }
                _ => Sent::Drained,
            };
            match sent {
                Sent::Ended => self.local_end(id),
                Sent::Blocked => self.blocked.push(id),
                Sent::Drained => {}
                Sent::Full => {
                    self.ready.push_front(id);
                    return;
                }
            }
        }
    }

    /// keygate's side of the stream is over: it goes, and a client still sending is told
    /// to stop (RST_STREAM NO_ERROR, as RFC 9113, 8.1 allows).
    pub(super) fn local_end(&mut self, id: u32) {
        if let Some(mut stream) = self.streams.remove(&id) {
            if !stream.remote_done {
                self.w.rst(id, Reason::NO_ERROR);
            }
            self.unacked += stream.take_buffered();
        }
    }

    /// Window updates for what has been released, in batches.
    fn grant(&mut self) {
        let threshold = (self.settings.connection_window as usize / 4).max(1);
        if self.unacked >= threshold {
            let n = std::mem::take(&mut self.unacked);
            self.recv_window += n as i64;
            self.w.control(|b| frame::put_window_update(b, 0, n as u32));
        }
    }

    /// The stream's task has read `n` bytes of its request.
    fn consumed(&mut self, id: u32, n: usize) {
        self.unacked += n;
        if let Some(stream) = self.streams.get_mut(&id) {
            release(&mut self.w, id, stream, n, self.settings.stream_window);
        }
    }

    /// A collected request's answer.
    fn reply(&mut self, id: u32, reply: Reply) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if let State::Computing {
            cancelled: true, ..
        } = stream.state
        {
            self.streams.remove(&id);
            return;
        }
        match super::recv::answer(&mut self.w, id, stream, reply, &self.mailbox) {
            Sent::Ended => self.local_end(id),
            Sent::Blocked => self.blocked.push(id),
            Sent::Full => self.ready.push_back(id),
            Sent::Drained => {}
        }
    }
}

/// Grants a stream's window back once a quarter of it has been released (a stream whose
/// client has finished sending needs none).
pub(super) fn release(w: &mut Writer, id: u32, stream: &mut Stream, n: usize, window: u32) {
    if stream.remote_done {
        return;
    }
    stream.unacked += n;
    if stream.unacked >= (window as usize / 4).max(1) {
        let n = std::mem::take(&mut stream.unacked);
        stream.recv_window += n as i64;
        w.control(|b| frame::put_window_update(b, id, n as u32));
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Future for Conn<IO> {
    type Output = Result<(), ConnError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.failed.is_some() {
            return this.poll_close(cx);
        }
        this.mailbox.register(cx.waker());
        for _ in 0..ROUNDS {
            match this.round(cx) {
                Ok(true) => {}
                Ok(false) => {
                    if this.finished() {
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Pending;
                }
                Err(ConnError::Io(e)) => return Poll::Ready(Err(ConnError::Io(e))),
                Err(e) => {
                    this.fail(e);
                    return Pin::new(this).poll(cx);
                }
            }
            if this.finished() {
                return Poll::Ready(Ok(()));
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    /// A failed connection closes gracefully: its GOAWAY is written, its write side shut, and
    /// what the client still sends is read and dropped until it closes too (or the grace
    /// period ends) — closing with unread data would reset the connection, and the client
    /// could lose the GOAWAY that says why.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        let timed_out = match &mut self.failed {
            Some((_, grace)) => grace.as_mut().poll(cx).is_ready(),
            None => true,
        };
        let mut done = timed_out;
        if !done {
            done = match self.write(cx) {
                Ok(_) if self.w.len > 0 => false,
                Ok(_) => self.drain_input(cx),
                Err(_) => true,
            };
        }
        if !done {
            return Poll::Pending;
        }
        match self.failed.take() {
            Some((e, _)) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Shuts the write side, then reads and drops input; `true` once the client has closed.
    fn drain_input(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.write_shut {
            match Pin::new(&mut self.io).poll_shutdown(cx) {
                Poll::Pending => return false,
                Poll::Ready(Err(_)) => return true,
                Poll::Ready(Ok(())) => self.write_shut = true,
            }
        }
        loop {
            self.rbuf.clear();
            self.rbuf.reserve(16 * 1024);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                Poll::Pending => return false,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return true,
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

impl<IO> Drop for Conn<IO> {
    fn drop(&mut self) {
        // Each stream aborts its task as it goes.
        self.streams.clear();
    }
}
