//! keygate's HTTP/2 client for the unary calls it forwards to a member: a request is one
//! message, its answer is collected whole. Callers queue requests on a shared handle; one task
//! per connection writes every queued request in one go and hands each answer back as it
//! completes. Whether a failed call may have reached the member is part of its error, so that
//! a write is only retried elsewhere when it cannot have been applied.

mod driver;

use bytes::Bytes;
use futures::task::AtomicWaker;
use http::{HeaderMap, StatusCode};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

pub use driver::Driver;

/// The connection's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub stream_window: u32,
    pub connection_window: u32,
    /// A PING goes out when nothing has been heard for this long...
    pub keep_alive_interval: Duration,
    /// ...and the connection is given up when its answer takes longer than this.
    pub keep_alive_timeout: Duration,
}

/// One unary call: `path` (`/service/Method`), the request's headers (metadata), and its body
/// (one framed message).
pub struct UnaryRequest {
    pub path: Bytes,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The member's answer, whole.
#[derive(Debug)]
pub struct UnaryResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// A call that got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The request never reached the member: it is safe to send anywhere else.
    #[error("{0}")]
    NotSent(String),
    /// The request may have reached the member.
    #[error("{0}")]
    Failed(String),
}

/// A handle on one connection; cheap to clone.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// The driver's waker.
    waker: AtomicWaker,
    scheme: Bytes,
    authority: Bytes,
}

#[derive(Default)]
struct Queue {
    new: VecDeque<Pending>,
    /// Why the connection takes no more requests.
    closed: Option<String>,
}

struct Pending {
    request: UnaryRequest,
    answer: oneshot::Sender<Result<UnaryResponse, CallError>>,
}

impl Client {
    /// A client on `io`, an established connection to `scheme://authority`; the driver must
    /// be polled (spawned) for anything to happen.
    pub fn new<IO>(
        io: IO,
        settings: Settings,
        scheme: &str,
        authority: &str,
    ) -> (Client, Driver<IO>)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            waker: AtomicWaker::new(),
            scheme: Bytes::copy_from_slice(scheme.as_bytes()),
            authority: Bytes::copy_from_slice(authority.as_bytes()),
        });
        let driver = Driver::new(io, settings, shared.clone());
        (Client { shared }, driver)
    }

    /// The connection takes no more requests (it failed, or the member is going away).
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.queue).closed.is_some()
    }

    pub async fn call(&self, request: UnaryRequest) -> Result<UnaryResponse, CallError> {
        let (answer, rx) = oneshot::channel();
        {
            let mut q = lock(&self.shared.queue);
            if let Some(why) = &q.closed {
                return Err(CallError::NotSent(why.clone()));
            }
            q.new.push_back(Pending { request, answer });
        }
        self.shared.waker.wake();
        rx.await
            .unwrap_or_else(|_| Err(CallError::Failed("the connection's task ended".into())))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod tests;
