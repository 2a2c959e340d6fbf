//! What the connection's task does with each frame the member sends: answers' headers, bodies
//! and trailers, settings, pings, resets, window updates and GOAWAY.

use super::*;

impl<IO: AsyncRead + AsyncWrite + Unpin> Driver<IO> {
    pub(super) fn frames(&mut self) -> Result<(), CallError> {
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
}
