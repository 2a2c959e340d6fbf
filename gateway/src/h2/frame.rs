//! HTTP/2 framing (RFC 9113, section 4 and 6): the 9-byte frame header, the frame types, flags,
//! error codes and settings keygate uses, and writers for the frames it sends.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The client connection preface.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEAD_LEN: usize = 9;
/// The frame size every peer accepts until it says otherwise.
pub const DEFAULT_MAX_FRAME: usize = 16_384;
pub const MAX_FRAME_LIMIT: usize = (1 << 24) - 1;
pub const DEFAULT_WINDOW: i64 = 65_535;
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const PRIORITY: u8 = 2;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PUSH_PROMISE: u8 = 5;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 1;
pub const SETTINGS_ENABLE_PUSH: u16 = 2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 6;

/// HTTP/2 error codes (RFC 9113, section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0);
    pub const PROTOCOL_ERROR: Reason = Reason(1);
    pub const INTERNAL_ERROR: Reason = Reason(2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(3);
    pub const STREAM_CLOSED: Reason = Reason(5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(6);
    pub const REFUSED_STREAM: Reason = Reason(7);
    pub const CANCEL: Reason = Reason(8);
    pub const COMPRESSION_ERROR: Reason = Reason(9);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(11);
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            0 => "NO_ERROR",
            1 => "PROTOCOL_ERROR",
            2 => "INTERNAL_ERROR",
            3 => "FLOW_CONTROL_ERROR",
            4 => "SETTINGS_TIMEOUT",
            5 => "STREAM_CLOSED",
            6 => "FRAME_SIZE_ERROR",
            7 => "REFUSED_STREAM",
            8 => "CANCEL",
            9 => "COMPRESSION_ERROR",
            10 => "CONNECT_ERROR",
            11 => "ENHANCE_YOUR_CALM",
            12 => "INADEQUATE_SECURITY",
            13 => "HTTP_1_1_REQUIRED",
            other => return write!(f, "error code {other}"),
        };
        f.write_str(name)
    }
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    pub fn parse(b: &[u8]) -> Option<Head> {
        let b: &[u8; HEAD_LEN] = b.get(..HEAD_LEN)?.try_into().ok()?;
        Some(Head {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A frame whose payload is larger than the size both sides allow.
pub struct TooLarge;

/// Takes the next whole frame off the front of `buf`: `None` while it has not all arrived (room
/// for the rest is reserved).
pub fn take(buf: &mut BytesMut) -> Result<Option<(Head, Bytes)>, TooLarge> {
    let Some(head) = Head::parse(buf) else {
        return Ok(None);
    };
    if head.len > DEFAULT_MAX_FRAME {
        return Err(TooLarge);
    }
    if buf.len() < HEAD_LEN + head.len {
        buf.reserve(HEAD_LEN + head.len - buf.len());
        return Ok(None);
    }
    buf.advance(HEAD_LEN);
    Ok(Some((head, buf.split_to(head.len).freeze())))
}

pub fn put_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.put_uint(len as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

pub fn put_settings(out: &mut Vec<u8>, settings: &[(u16, u32)]) {
    put_head(out, settings.len() * 6, SETTINGS, 0, 0);
    for &(id, value) in settings {
        out.put_u16(id);
        out.put_u32(value);
    }
}

pub fn put_settings_ack(out: &mut Vec<u8>) {
    put_head(out, 0, SETTINGS, ACK, 0);
}

pub fn put_ping(out: &mut Vec<u8>, ack: bool, payload: [u8; 8]) {
    put_head(out, 8, PING, if ack { ACK } else { 0 }, 0);
    out.extend_from_slice(&payload);
}

pub fn put_goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason, debug: &[u8]) {
    put_head(out, 8 + debug.len(), GOAWAY, 0, 0);
    out.put_u32(last_stream);
    out.put_u32(reason.0);
    out.extend_from_slice(debug);
}

pub fn put_rst(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    put_head(out, 4, RST_STREAM, 0, stream);
    out.put_u32(reason.0);
}

pub fn put_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    put_head(out, 4, WINDOW_UPDATE, 0, stream);
    out.put_u32(increment);
}

/// One DATA frame; `data` must fit the peer's frame size.
pub fn put_data(out: &mut Vec<u8>, stream: u32, data: &[u8], end: bool) {
    put_head(
        out,
        data.len(),
        DATA,
        if end { END_STREAM } else { 0 },
        stream,
    );
    out.extend_from_slice(data);
}

/// A header block as HEADERS plus as many CONTINUATIONs as the peer's frame size needs.
pub fn put_headers(out: &mut Vec<u8>, stream: u32, block: &[u8], end: bool, max_frame: usize) {
    let mut chunks = block.chunks(max_frame.max(1)).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let last = chunks.peek().is_none();
    let mut flags = if end { END_STREAM } else { 0 };
    if last {
        flags |= END_HEADERS;
    }
    put_head(out, first.len(), HEADERS, flags, stream);
    out.extend_from_slice(first);
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        put_head(out, chunk.len(), CONTINUATION, flags, stream);
        out.extend_from_slice(chunk);
    }
}

/// A DATA or HEADERS payload without its padding; `None` when the padding is longer than
/// the payload (a PROTOCOL_ERROR).
pub fn unpad(head: &Head, payload: &[u8]) -> Option<std::ops::Range<usize>> {
    if !head.has(PADDED) {
        return Some(0..payload.len());
    }
    let pad = usize::from(*payload.first()?);
    let end = payload.len().checked_sub(pad)?;
    (end >= 1).then_some(1..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip() {
        let mut out = Vec::new();
        put_head(&mut out, 0x01_02_03, HEADERS, END_HEADERS, 0x7fff_ffff);
        assert_eq!(
            Head::parse(&out),
            Some(Head {
                len: 0x01_02_03,
                kind: HEADERS,
                flags: END_HEADERS,
                stream: 0x7fff_ffff
            })
        );
        // The reserved bit is ignored.
        out[5] |= 0x80;
        assert_eq!(Head::parse(&out).map(|h| h.stream), Some(0x7fff_ffff));
        assert_eq!(Head::parse(&out[..8]), None);
    }

    #[test]
    fn large_header_blocks_continue() {
        let mut out = Vec::new();
        put_headers(&mut out, 3, &[7u8; 40], true, 16);
        let heads: Vec<Head> = {
            let mut at = 0;
            let mut v = Vec::new();
            while at < out.len() {
                let h = Head::parse(&out[at..]).expect("head");
                at += HEAD_LEN + h.len;
                v.push(h);
            }
            v
        };
        assert_eq!(heads.len(), 3);
        assert_eq!(heads[0].kind, HEADERS);
        assert_eq!(heads[0].flags, END_STREAM);
        assert_eq!(heads[1].kind, CONTINUATION);
        assert_eq!(heads[2].flags, END_HEADERS);
        assert_eq!(heads[2].len, 8);
    }

    #[test]
    fn padding_is_stripped_or_refused() {
        let head = Head {
            len: 5,
            kind: DATA,
            flags: PADDED,
            stream: 1,
        };
        assert_eq!(unpad(&head, &[2, b'a', b'b', 0, 0]), Some(1..3));
        assert_eq!(unpad(&head, &[5, 0, 0, 0, 0]), None);
        assert_eq!(unpad(&head, &[]), None);
    }
}
