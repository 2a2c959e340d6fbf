//! Response frames queued behind flow control, sent as the windows allow.

use super::shared::{Out, OutQueue};
use crate::h2::frame::Reason;
use crate::h2::writer::{Writer, HIGH_WATER};
use bytes::Bytes;

/// How sending a stream's queue went.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// The stream's last frame was sent.
    Ended,
    /// Data waits for window.
    Blocked,
    /// Everything queued was sent; more may come.
    Drained,
    /// The write buffer is full: try again once it has been written.
    Full,
}

/// Sends what the windows allow of `q` on `stream`.
pub fn send_queue(w: &mut Writer, stream: u32, window: &mut i64, q: &mut OutQueue) -> Sent {
    loop {
        if w.len >= HIGH_WATER {
            return Sent::Full;
        }
        let Some(front) = q.frames.front_mut() else {
            return Sent::Drained;
        };
        match front {
            Out::Head {
                status,
                headers,
                end,
            } => {
                let end = *end;
                w.head(stream, *status, headers, end);
                q.frames.pop_front();
                if end {
                    return Sent::Ended;
                }
            }
            Out::Data { data, end } => {
                if data.is_empty() {
                    let end = *end;
                    if end {
                        w.data(stream, Bytes::new(), true);
                    }
                    q.frames.pop_front();
                    if end {
                        return Sent::Ended;
                    }
                    continue;
                }
                let allowed = (*window).min(w.window).max(0) as usize;
                if allowed == 0 {
                    return Sent::Blocked;
                }
                let piece = data.split_to(allowed.min(data.len()));
                let (n, last, end) = (piece.len(), data.is_empty(), *end);
                *window -= n as i64;
                w.window -= n as i64;
                w.data(stream, piece, last && end);
                q.sent(n);
                if last {
                    q.frames.pop_front();
                    if end {
                        return Sent::Ended;
                    }
                }
            }
            Out::GrpcOk => {
                w.grpc_ok(stream);
                q.frames.pop_front();
                return Sent::Ended;
            }
            Out::Trailers(headers) => {
                let headers = std::mem::take(headers);
                w.trailers(stream, &headers);
                q.frames.pop_front();
                return Sent::Ended;
            }
            Out::Reset => {
                w.rst(stream, Reason::INTERNAL_ERROR);
                q.frames.pop_front();
                return Sent::Ended;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_data_waits_for_window() {
        let mut w = Writer::new();
        w.window = 10;
        let mut q = OutQueue::default();
        q.push(Out::Data {
            data: Bytes::from(vec![0u8; 25]),
            end: false,
        });
        q.push(Out::GrpcOk);
        let mut stream_window = 100;
        assert_eq!(
            send_queue(&mut w, 1, &mut stream_window, &mut q),
            Sent::Blocked
        );
        assert_eq!((stream_window, w.window, q.queued), (90, 0, 15));
        w.window = 100;
        assert_eq!(
            send_queue(&mut w, 1, &mut stream_window, &mut q),
            Sent::Ended
        );
        assert_eq!((stream_window, q.queued), (75, 0));
    }
}
