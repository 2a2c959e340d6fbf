//! What a connection does with each frame the client sends (RFC 9113, section 6): requests
//! opened, bodies received within flow control, answers started, and the answer to a
//! collected request (resets, settings, pings and window updates are in `control.rs`).

use super::bridge::drive;
use super::conn::{release, Conn, ConnError};
use super::request::Fields;
use super::send::{send_queue, Sent};
use super::shared::{Event, Inbox, Mailbox, Out, OutQueue, Outbox, RequestBody};
use super::stream::{Collecting, State, Stream};
use super::{Call, Collected, Reply, Route};
use crate::h2::frame::{self, Head, Reason, PREFACE};
use crate::h2::hpack::DecodeError;
use crate::h2::writer::{Writer, HIGH_WATER};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

pub(super) fn error(reason: Reason, detail: &str) -> ConnError {
    ConnError::protocol(reason, detail)
}

/// What is done with a DATA frame once the stream has it.
enum AfterData {
    Nothing,
    Collected,
    TooLarge,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    /// Handles every whole frame in the read buffer.
    pub(super) fn frames(&mut self) -> Result<(), ConnError> {
        if !self.preface_done {
            let n = self.rbuf.len().min(PREFACE.len());
            if self.rbuf[..n] != PREFACE[..n] {
                return Err(error(Reason::PROTOCOL_ERROR, "not the HTTP/2 preface"));
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            self.rbuf.advance(PREFACE.len());
            self.preface_done = true;
        }
        while let Some((head, payload)) = frame::take(&mut self.rbuf)
            .map_err(|_| error(Reason::FRAME_SIZE_ERROR, "frame larger than allowed"))?
        {
            self.frame(head, payload)?;
        }
        Ok(())
    }

    fn frame(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if !self.settings_seen && (head.kind != frame::SETTINGS || head.has(frame::ACK)) {
            return Err(error(
                Reason::PROTOCOL_ERROR,
                "the first frame must be SETTINGS",
            ));
        }
        if let Some((id, ..)) = &self.partial {
            if head.kind != frame::CONTINUATION || head.stream != *id {
                return Err(error(
                    Reason::PROTOCOL_ERROR,
                    "a header block was interrupted",
                ));
            }
        }
        match head.kind {
            frame::DATA => self.on_data(head, payload),
            frame::HEADERS => self.on_headers(head, payload),
            frame::CONTINUATION => self.on_continuation(head, payload),
            frame::PRIORITY => {
                if head.stream == 0 {
                    return Err(error(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0"));
                }
                if head.len != 5 {
                    self.reset(head.stream, Reason::FRAME_SIZE_ERROR);
                }
                Ok(())
            }
            frame::RST_STREAM => self.on_rst(head, &payload),
            frame::SETTINGS => self.on_settings(head, &payload),
            frame::PUSH_PROMISE => Err(error(Reason::PROTOCOL_ERROR, "a client cannot push")),
            frame::PING => self.on_ping(head, &payload),
            frame::GOAWAY => {
                if head.stream != 0 {
                    return Err(error(Reason::PROTOCOL_ERROR, "GOAWAY on a stream"));
                }
                if head.len < 8 {
                    return Err(error(Reason::FRAME_SIZE_ERROR, "GOAWAY too short"));
                }
                self.peer_going_away = true;
                Ok(())
            }
            frame::WINDOW_UPDATE => self.on_window_update(head, &payload),
            // Unknown frame types are ignored (RFC 9113, 4.1).
            _ => Ok(()),
        }
    }

    fn on_data(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        let id = head.stream;
        if id == 0 {
            return Err(error(Reason::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        self.recv_window -= head.len as i64;
        if self.recv_window < 0 {
            return Err(error(
                Reason::FLOW_CONTROL_ERROR,
                "connection window exceeded",
            ));
        }
        let range = frame::unpad(&head, &payload)
            .ok_or_else(|| error(Reason::PROTOCOL_ERROR, "padding longer than the frame"))?;
        let data = payload.slice(range);
        // Padding is released at once; the data when it is used.
        self.unacked += head.len - data.len();
        let Some(stream) = self.streams.get_mut(&id) else {
            if id > self.last_id {
                return Err(error(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            // A stream already closed: the data goes nowhere.
            self.unacked += data.len();
            return Ok(());
        };
        if stream.remote_done {
            self.unacked += data.len();
            self.reset(id, Reason::STREAM_CLOSED);
            return Ok(());
        }
        stream.recv_window -= head.len as i64;
        if stream.recv_window < 0 {
            self.unacked += data.len();
            self.reset(id, Reason::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        let (padding, window) = (head.len - data.len(), self.settings.stream_window);
        release(&mut self.w, id, stream, padding, window);
        let end = head.has(frame::END_STREAM);
        stream.remote_done |= end;
        let n = data.len();
        let after = match &mut stream.state {
            State::Collecting(c) => {
                c.received += n;
                if c.received > c.limit {
                    AfterData::TooLarge
                } else {
                    if n > 0 {
                        c.chunks.push(data);
                    }
                    if end {
                        AfterData::Collected
                    } else {
                        AfterData::Nothing
                    }
                }
            }
            State::Bridged {
                inbox: Some(inbox), ..
            } => {
                let kept = n == 0 || inbox.data(data);
                if end {
                    inbox.end(None);
                }
                if kept {
                    return Ok(());
                }
                AfterData::Nothing
            }
            // An answer has been given or is being worked out: the rest goes nowhere.
            _ => AfterData::Nothing,
        };
        self.unacked += n;
        release(&mut self.w, id, stream, n, self.settings.stream_window);
        match after {
            AfterData::Nothing => {}
            AfterData::Collected => self.collected(id),
            AfterData::TooLarge => self.too_large(id),
        }
        Ok(())
    }

    fn on_headers(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(error(Reason::PROTOCOL_ERROR, "HEADERS on stream 0"));
        }
        let mut range = frame::unpad(&head, &payload)
            .ok_or_else(|| error(Reason::PROTOCOL_ERROR, "padding longer than the frame"))?;
        if head.has(frame::PRIORITY_FLAG) {
            range.start += 5;
            if range.start > range.end {
                return Err(error(Reason::PROTOCOL_ERROR, "HEADERS too short"));
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

    fn on_continuation(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        let Some((id, end, mut block)) = self.partial.take() else {
            return Err(error(
                Reason::PROTOCOL_ERROR,
                "CONTINUATION without HEADERS",
            ));
        };
        block.extend_from_slice(&payload);
        if block.len() > self.settings.max_header_list as usize + frame::DEFAULT_MAX_FRAME {
            return Err(error(Reason::ENHANCE_YOUR_CALM, "header block too large"));
        }
        if head.has(frame::END_HEADERS) {
            return self.header_block(id, end, block.freeze());
        }
        self.partial = Some((id, end, block));
        Ok(())
    }

    /// A whole header block: a new request, or a request's trailers.
    fn header_block(&mut self, id: u32, end: bool, block: Bytes) -> Result<(), ConnError> {
        let mut fields = Fields::default();
        let oversized = match self.decoder.decode(&block, |n, v| fields.add(n, v)) {
            Ok(()) => false,
            Err(DecodeError::ListTooLarge) => true,
            Err(DecodeError::Compression(why)) => {
                return Err(error(Reason::COMPRESSION_ERROR, why))
            }
        };
        if self.streams.contains_key(&id) {
            return self.trailers(id, end, fields, oversized);
        }
        if id.is_multiple_of(2) {
            return Err(error(
                Reason::PROTOCOL_ERROR,
                "a client stream with an even id",
            ));
        }
        if id <= self.last_id {
            // A stream already closed (answered and reset): nothing to do.
            return Ok(());
        }
        self.last_id = id;
        if self.going_away || self.peer_going_away {
            self.w.rst(id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        if oversized {
            let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
            self.w.head(id, status, &HeaderMap::new(), true);
            if !end {
                self.w.rst(id, Reason::NO_ERROR);
            }
            return Ok(());
        }
        if self.streams.len() >= self.settings.max_concurrent_streams as usize {
            self.w.rst(id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        let head = match fields.into_head() {
            Ok(head) => head,
            Err(why) => {
                tracing::debug!(stream = id, why, "malformed request; stream reset");
                self.w.rst(id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
        };
        let (send, recv) = (self.peer_window, i64::from(self.settings.stream_window));
        match self.handler.route(&head) {
            Route::Collect { limit } => {
                let collecting = Collecting {
                    head,
                    limit,
                    chunks: Vec::new(),
                    received: 0,
                };
                let mut stream = Stream::new(send, recv, State::Collecting(collecting));
                stream.remote_done = end;
                self.streams.insert(id, stream);
                if end {
                    self.collected(id);
                }
            }
            Route::Bridge => {
                let inbox = Inbox::new(id, self.mailbox.clone());
                if end {
                    inbox.end(None);
                }
                let body = tonic::body::Body::new(RequestBody::new(inbox.clone()));
                let mut request = http::Request::new(body);
                *request.method_mut() = head.method;
                *request.uri_mut() = head.uri;
                *request.headers_mut() = head.headers;
                *request.version_mut() = http::Version::HTTP_2;
                let outbox = Outbox::new(id, self.mailbox.clone());
                let response = self.handler.bridge(request);
                let task = tokio::spawn(drive(response, outbox.clone())).abort_handle();
                let state = State::Bridged {
                    inbox: Some(inbox),
                    outbox,
                    task,
                };
                let mut stream = Stream::new(send, recv, state);
                stream.remote_done = end;
                self.streams.insert(id, stream);
            }
        }
        Ok(())
    }

    /// Trailers end a request's body.
    fn trailers(
        &mut self,
        id: u32,
        end: bool,
        fields: Fields,
        oversized: bool,
    ) -> Result<(), ConnError> {
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if stream.remote_done {
            self.reset(id, Reason::STREAM_CLOSED);
            return Ok(());
        }
        let trailers = match fields.into_trailers() {
            Ok(t) if end && !oversized => t,
            _ => {
                self.reset(id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
        };
        stream.remote_done = true;
        match &stream.state {
            State::Collecting(_) => self.collected(id),
            State::Bridged {
                inbox: Some(inbox), ..
            } => inbox.end(Some(trailers)),
            _ => {}
        }
        Ok(())
    }

    /// A collected request's body is complete: its answer is started.
    fn collected(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let computing = State::Computing {
            task: None,
            cancelled: false,
        };
        let State::Collecting(mut c) = std::mem::replace(&mut stream.state, computing) else {
            return;
        };
        let body = Collected::Body(c.body());
        let call = self.handler.collected(c.head, body);
        self.start(id, call);
    }

    /// A collected request's body went over its limit: its answer (an error) is started at
    /// once, and the rest of the body goes nowhere.
    fn too_large(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let computing = State::Computing {
            task: None,
            cancelled: false,
        };
        let State::Collecting(c) = std::mem::replace(&mut stream.state, computing) else {
            return;
        };
        let body = Collected::TooLarge {
            first: c.first(16),
            received: c.received,
        };
        let call = self.handler.collected(c.head, body);
        self.start(id, call);
    }

    fn start(&mut self, id: u32, call: Call) {
        if call.inline {
            self.inline.push(id, call.reply);
            return;
        }
        let mailbox = self.mailbox.clone();
        let reply = call.reply;
        let task = tokio::spawn(async move {
            let reply = reply.await;
            mailbox.post(Event::Reply(id, reply));
        })
        .abort_handle();
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.state = State::Computing {
                task: Some(task),
                cancelled: false,
            };
        }
    }

    /// Resets a stream keygate can no longer serve.
    pub(super) fn reset(&mut self, id: u32, reason: Reason) {
        self.w.rst(id, reason);
        self.drop_stream(id);
    }

    pub(super) fn drop_stream(&mut self, id: u32) {
        if let Some(mut stream) = self.streams.remove(&id) {
            self.unacked += stream.take_buffered();
        }
    }
}

/// Starts sending a collected request's answer.
pub(super) fn answer(
    w: &mut Writer,
    id: u32,
    stream: &mut Stream,
    reply: Reply,
    mailbox: &Arc<Mailbox>,
) -> Sent {
    match reply {
        Reply::Grpc { headers, framed } => {
            let n = framed.len() as i64;
            if n <= stream.send_window.min(w.window) && w.len < HIGH_WATER {
                w.head(id, StatusCode::OK, &headers, false);
                if n > 0 {
                    stream.send_window -= n;
                    w.window -= n;
                    w.data(id, framed, false);
                }
                w.grpc_ok(id);
                return Sent::Ended;
            }
            let mut q = OutQueue::default();
            q.push(Out::Head {
                status: StatusCode::OK,
                headers,
                end: false,
            });
            q.push(Out::Data {
                data: framed,
                end: false,
            });
            q.push(Out::GrpcOk);
            let sent = send_queue(w, id, &mut stream.send_window, &mut q);
            stream.state = State::Replying(q);
            sent
        }
        Reply::Status(status) => {
            let mut headers = HeaderMap::with_capacity(4);
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            if status.add_header(&mut headers).is_err() {
                headers.insert("grpc-status", HeaderValue::from_static("13"));
            }
            w.head(id, StatusCode::OK, &headers, true);
            Sent::Ended
        }
        Reply::Http(response) => {
            let outbox = Outbox::new(id, mailbox.clone());
            let response = Box::pin(std::future::ready(response));
            let task = tokio::spawn(drive(response, outbox.clone())).abort_handle();
            stream.state = State::Bridged {
                inbox: None,
                outbox,
                task,
            };
            Sent::Drained
        }
    }
}
