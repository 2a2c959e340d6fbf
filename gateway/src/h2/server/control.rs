//! The connection-level frames a client sends (RFC 9113, section 6): RST_STREAM, SETTINGS,
//! PING and WINDOW_UPDATE.

use super::conn::{Conn, ConnError};
use super::recv::error;
use super::stream::State;
use crate::h2::frame::{self, Head, Reason};
use tokio::io::{AsyncRead, AsyncWrite};

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    pub(super) fn on_rst(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(error(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0"));
        }
        if payload.len() != 4 {
            return Err(error(
                Reason::FRAME_SIZE_ERROR,
                "RST_STREAM of the wrong size",
            ));
        }
        if head.stream > self.last_id {
            return Err(error(
                Reason::PROTOCOL_ERROR,
                "RST_STREAM on an idle stream",
            ));
        }
        let id = head.stream;
        if let Some(stream) = self.streams.get_mut(&id) {
            // An answer worked out on the connection's task cannot be stopped on its own: the
            // stream stays (and counts against the stream limit) until it is done.
            if let State::Computing {
                task: None,
                cancelled,
            } = &mut stream.state
            {
                *cancelled = true;
                stream.remote_done = true;
                return Ok(());
            }
            self.drop_stream(id);
        }
        Ok(())
    }

    pub(super) fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(error(Reason::PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if head.has(frame::ACK) {
            if !payload.is_empty() {
                return Err(error(
                    Reason::FRAME_SIZE_ERROR,
                    "SETTINGS ack with a payload",
                ));
            }
            return Ok(());
        }
        if !payload.len().is_multiple_of(6) {
            return Err(error(
                Reason::FRAME_SIZE_ERROR,
                "SETTINGS of the wrong size",
            ));
        }
        for setting in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match id {
                frame::SETTINGS_HEADER_TABLE_SIZE => self.w.set_peer_table_size(value as usize),
                frame::SETTINGS_ENABLE_PUSH if value > 1 => {
                    return Err(error(Reason::PROTOCOL_ERROR, "ENABLE_PUSH above 1"));
                }
                frame::SETTINGS_INITIAL_WINDOW_SIZE => self.initial_window(value)?,
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    let size = value as usize;
                    if !(frame::DEFAULT_MAX_FRAME..=frame::MAX_FRAME_LIMIT).contains(&size) {
                        return Err(error(Reason::PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range"));
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

    /// The client's initial stream window changed: every open stream's window moves by as
    /// much (RFC 9113, 6.9.2).
    fn initial_window(&mut self, value: u32) -> Result<(), ConnError> {
        let value = i64::from(value);
        if value > frame::MAX_WINDOW {
            return Err(error(
                Reason::FLOW_CONTROL_ERROR,
                "INITIAL_WINDOW_SIZE too large",
            ));
        }
        let delta = value - self.peer_window;
        self.peer_window = value;
        for stream in self.streams.values_mut() {
            stream.send_window += delta;
            if stream.send_window > frame::MAX_WINDOW {
                return Err(error(
                    Reason::FLOW_CONTROL_ERROR,
                    "a stream window overflowed",
                ));
            }
        }
        if delta > 0 {
            self.ready.extend(self.blocked.drain(..));
        }
        Ok(())
    }

    pub(super) fn on_ping(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(error(Reason::PROTOCOL_ERROR, "PING on a stream"));
        }
        let data: [u8; 8] = payload
            .try_into()
            .map_err(|_| error(Reason::FRAME_SIZE_ERROR, "PING of the wrong size"))?;
        if !head.has(frame::ACK) {
            self.w.control(|b| frame::put_ping(b, true, data));
        }
        Ok(())
    }

    pub(super) fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let raw: [u8; 4] = payload
            .try_into()
            .map_err(|_| error(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size"))?;
        let increment = i64::from(u32::from_be_bytes(raw) & 0x7fff_ffff);
        let id = head.stream;
        if id == 0 {
            if increment == 0 {
                return Err(error(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE of 0"));
            }
            self.w.window += increment;
            if self.w.window > frame::MAX_WINDOW {
                return Err(error(
                    Reason::FLOW_CONTROL_ERROR,
                    "connection window overflowed",
                ));
            }
            self.ready.extend(self.blocked.drain(..));
            return Ok(());
        }
        if id > self.last_id {
            return Err(error(
                Reason::PROTOCOL_ERROR,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if increment == 0 {
            self.reset(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        stream.send_window += increment;
        if stream.send_window > frame::MAX_WINDOW {
            self.reset(id, Reason::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        self.ready.push_back(id);
        Ok(())
    }
}
