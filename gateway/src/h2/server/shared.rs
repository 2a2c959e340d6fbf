//! What a connection shares with the tasks that serve its streams: the mailbox they post to,
//! a stream's outbox (the response frames its task produces, taken by the connection as flow
//! control allows) and a stream's inbox (the request body the connection receives, read by the
//! task as a `http_body::Body`).

use super::Reply;
use bytes::Bytes;
use futures::task::AtomicWaker;
use http::{HeaderMap, StatusCode};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// What tasks tell their connection.
pub enum Event {
    /// A collected request's answer, computed off the connection's task.
    Reply(u32, Reply),
    /// The stream's outbox has frames.
    Ready(u32),
    /// The stream's task has read this many bytes of its request body.
    Consumed(u32, usize),
}

/// Events for the connection, and the waker of its task.
#[derive(Default)]
pub struct Mailbox {
    events: Mutex<Vec<Event>>,
    waker: AtomicWaker,
}

impl Mailbox {
    pub fn post(&self, event: Event) {
        lock(&self.events).push(event);
        self.waker.wake();
    }

    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Everything posted since the last call, in order.
    pub fn take(&self, into: &mut Vec<Event>) {
        std::mem::swap(&mut *lock(&self.events), into);
    }
}

/// A frame of a response, waiting for its turn (and, for data, its flow-control window).
pub enum Out {
    Head {
        status: StatusCode,
        headers: HeaderMap,
        end: bool,
    },
    Data {
        data: Bytes,
        end: bool,
    },
    /// `grpc-status: 0`, ending the stream.
    GrpcOk,
    Trailers(HeaderMap),
    /// The response failed after its head: the stream is reset.
    Reset,
}

/// A stream's queued response frames.
#[derive(Default)]
pub struct OutQueue {
    pub frames: VecDeque<Out>,
    /// Data bytes queued.
    pub queued: usize,
    /// The producer waits for room.
    pub producer: Option<Waker>,
    /// The stream is gone (reset, or its connection closed): the producer should stop.
    pub closed: bool,
    /// A `Ready` event is posted and not yet handled.
    pub notified: bool,
}

impl OutQueue {
    pub fn push(&mut self, out: Out) {
        if let Out::Data { data, .. } = &out {
            self.queued += data.len();
        }
        self.frames.push_back(out);
    }

    /// Data bytes left the queue; the producer may go on once it is under its limit.
    pub fn sent(&mut self, bytes: usize) {
        self.queued = self.queued.saturating_sub(bytes);
        if self.queued < OUTBOX_LIMIT {
            if let Some(w) = self.producer.take() {
                w.wake();
            }
        }
    }
}

/// How far a stream's task may run ahead of what the connection has sent.
pub const OUTBOX_LIMIT: usize = 64 * 1024;

/// A stream's outbox, shared by the task producing the response and the connection.
pub struct Outbox {
    queue: Mutex<OutQueue>,
    id: u32,
    mailbox: Arc<Mailbox>,
}

impl Outbox {
    pub fn new(id: u32, mailbox: Arc<Mailbox>) -> Arc<Outbox> {
        Arc::new(Outbox {
            queue: Mutex::new(OutQueue::default()),
            id,
            mailbox,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, OutQueue> {
        lock(&self.queue)
    }

    /// Ready once there is room for more, or the stream is gone (`false`).
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut q = self.lock();
        if q.closed {
            return Poll::Ready(false);
        }
        if q.queued < OUTBOX_LIMIT {
            return Poll::Ready(true);
        }
        q.producer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Queues a frame; `false` when the stream is gone.
    pub fn push(&self, out: Out) -> bool {
        let mut q = self.lock();
        if q.closed {
            return false;
        }
        q.push(out);
        let notify = !q.notified;
        q.notified = true;
        drop(q);
        if notify {
            self.mailbox.post(Event::Ready(self.id));
        }
        true
    }

    pub fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.frames.clear();
        if let Some(w) = q.producer.take() {
            w.wake();
        }
    }
}

/// A stream's request body as the connection receives it.
#[derive(Default)]
pub struct InQueue {
    pub chunks: VecDeque<Bytes>,
    pub trailers: Option<HeaderMap>,
    pub end: bool,
    /// The stream was reset, or its connection closed, before the body ended.
    pub broken: bool,
    /// The body was dropped: what arrives from now on is released at once.
    pub dropped: bool,
    /// Bytes buffered here, not yet read.
    pub buffered: usize,
    pub reader: Option<Waker>,
}

pub struct Inbox {
    queue: Mutex<InQueue>,
    id: u32,
    mailbox: Arc<Mailbox>,
}

/// Bytes read before the connection is told, so that window updates come in batches.
const CONSUMED_BATCH: usize = 16 * 1024;

impl Inbox {
    pub fn new(id: u32, mailbox: Arc<Mailbox>) -> Arc<Inbox> {
        Arc::new(Inbox {
            queue: Mutex::new(InQueue::default()),
            id,
            mailbox,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, InQueue> {
        lock(&self.queue)
    }

    /// Data arrived; `false` when the body was dropped (the caller releases it at once).
    pub fn data(&self, data: Bytes) -> bool {
        let mut q = self.lock();
        if q.dropped {
            return false;
        }
        q.buffered += data.len();
        q.chunks.push_back(data);
        wake(&mut q.reader);
        true
    }

    pub fn end(&self, trailers: Option<HeaderMap>) {
        let mut q = self.lock();
        q.end = true;
        q.trailers = trailers;
        wake(&mut q.reader);
    }

    pub fn break_off(&self) {
        let mut q = self.lock();
        if !q.end {
            q.broken = true;
        }
        wake(&mut q.reader);
    }
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(w) = waker.take() {
        w.wake();
    }
}

/// A bridged stream's request body.
pub struct RequestBody {
    inbox: Arc<Inbox>,
    /// Read but not yet reported to the connection.
    unreported: usize,
}

impl RequestBody {
    pub fn new(inbox: Arc<Inbox>) -> RequestBody {
        RequestBody {
            inbox,
            unreported: 0,
        }
    }

    fn report(&mut self, force: bool) {
        if self.unreported >= CONSUMED_BATCH || (force && self.unreported > 0) {
            let n = std::mem::take(&mut self.unreported);
            self.inbox.mailbox.post(Event::Consumed(self.inbox.id, n));
        }
    }
}

/// The stream was reset by the client, or the connection closed.
#[derive(Debug)]
pub struct BodyBroken;

impl std::fmt::Display for BodyBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request stream was reset or its connection closed")
    }
}

impl std::error::Error for BodyBroken {}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyBroken;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BodyBroken>>> {
        let mut q = self.inbox.lock();
        if let Some(chunk) = q.chunks.pop_front() {
            q.buffered -= chunk.len();
            // A reader that has caught up reports at once, so an idle stream holds back none
            // of the connection's window.
            let drained = q.chunks.is_empty();
            drop(q);
            self.unreported += chunk.len();
            self.report(drained);
            return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
        }
        if let Some(trailers) = q.trailers.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        if q.end {
            return Poll::Ready(None);
        }
        if q.broken {
            return Poll::Ready(Some(Err(BodyBroken)));
        }
        q.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let q = self.inbox.lock();
        q.end && q.chunks.is_empty() && q.trailers.is_none()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let mut q = self.inbox.lock();
        q.dropped = true;
        self.unreported += std::mem::take(&mut q.buffered);
        q.chunks.clear();
        drop(q);
        self.report(true);
    }
}

/// A poisoned lock only means another task panicked while holding it; the queues stay usable.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
