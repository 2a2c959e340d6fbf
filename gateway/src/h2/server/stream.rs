//! One stream as its connection keeps it: flow-control windows both ways, which sides have
//! ended, and where its request and its answer are.

use super::shared::{Inbox, OutQueue, Outbox};
use super::RequestHead;
use bytes::Bytes;
use std::sync::Arc;
use tokio::task::AbortHandle;

pub struct Stream {
    /// What keygate may still send on it (the client's window).
    pub send_window: i64,
    /// What the client may still send on it.
    pub recv_window: i64,
    /// Received bytes released but not yet granted back to the client.
    pub unacked: usize,
    /// The client has ended its side.
    pub remote_done: bool,
    pub state: State,
}

pub enum State {
    /// A collected request's body arriving.
    Collecting(Collecting),
    /// A collected request's answer being worked out; its task, when it has one of its own.
    /// `cancelled`: the client reset the stream meanwhile.
    Computing {
        task: Option<AbortHandle>,
        cancelled: bool,
    },
    /// A collected request's answer waiting for window.
    Replying(OutQueue),
    /// A stream with a task of its own.
    Bridged {
        inbox: Option<Arc<Inbox>>,
        outbox: Arc<Outbox>,
        task: AbortHandle,
    },
}

pub struct Collecting {
    pub head: RequestHead,
    pub limit: usize,
    pub chunks: Vec<Bytes>,
    pub received: usize,
}

impl Collecting {
    /// The collected body as one buffer.
    pub fn body(&mut self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.swap_remove(0),
            _ => self.chunks.concat().into(),
        }
    }

    /// The body's first bytes (at most `n`), for an oversized request's error.
    pub fn first(&self, n: usize) -> Bytes {
        let mut first = Vec::with_capacity(n);
        for c in &self.chunks {
            let take = (n - first.len()).min(c.len());
            first.extend_from_slice(&c[..take]);
            if first.len() == n {
                break;
            }
        }
        first.into()
    }
}

impl Stream {
    pub fn new(send_window: i64, recv_window: i64, state: State) -> Stream {
        Stream {
            send_window,
            recv_window,
            unacked: 0,
            remote_done: false,
            state,
        }
    }

    /// Bytes of the request buffered for its task and never read, released when the stream
    /// goes.
    pub fn take_buffered(&mut self) -> usize {
        match &self.state {
            State::Bridged {
                inbox: Some(inbox), ..
            } => {
                let mut q = inbox.lock();
                q.dropped = true;
                q.chunks.clear();
                std::mem::take(&mut q.buffered)
            }
            _ => 0,
        }
    }
}

/// A stream that goes stops whatever still works for it.
impl Drop for Stream {
    fn drop(&mut self) {
        match &self.state {
            State::Computing {
                task: Some(task), ..
            } => task.abort(),
            State::Bridged {
                inbox,
                outbox,
                task,
            } => {
                task.abort();
                outbox.close();
                if let Some(inbox) = inbox {
                    inbox.break_off();
                }
            }
            _ => {}
        }
    }
}
