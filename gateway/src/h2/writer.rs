//! What a connection sends: frames gathered in a write buffer and written out together, large
//! payloads referenced rather than copied, and header blocks encoded in the order they are
//! sent (HPACK's table depends on it).

use super::frame::{self, Reason};
use super::hpack::Encoder;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use std::collections::VecDeque;
use std::io::IoSlice;

/// Payloads at least this large are written from their own buffer instead of copied.
const BY_REFERENCE: usize = 4096;
/// Past this many unsent bytes, nothing more is queued until some are written.
pub const HIGH_WATER: usize = 512 * 1024;
/// Most buffers given to one vectored write.
pub const SLICES: usize = 32;

pub struct Writer {
    /// Written before `small`.
    chunks: VecDeque<Bytes>,
    small: Vec<u8>,
    /// How much of `small` is written.
    small_at: usize,
    /// Unsent bytes in all.
    pub len: usize,
    enc: Encoder,
    block: Vec<u8>,
    /// The client's SETTINGS_MAX_FRAME_SIZE.
    pub max_frame: usize,
    /// What keygate may still send on the connection.
    pub window: i64,
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

impl Writer {
    pub fn new() -> Writer {
        Writer {
            chunks: VecDeque::new(),
            small: Vec::with_capacity(16 * 1024),
            small_at: 0,
            len: 0,
            enc: Encoder::default(),
            block: Vec::with_capacity(256),
            max_frame: frame::DEFAULT_MAX_FRAME,
            window: frame::DEFAULT_WINDOW,
        }
    }

    pub fn set_peer_table_size(&mut self, size: usize) {
        self.enc.set_peer_max(size);
    }

    /// Appends control frames written by `f` (settings, pings, window updates, resets).
    pub fn control(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let before = self.small.len();
        f(&mut self.small);
        self.len += self.small.len() - before;
    }

    pub fn rst(&mut self, stream: u32, reason: Reason) {
        self.control(|b| frame::put_rst(b, stream, reason));
    }

    /// A response head (`:status` and headers).
    pub fn head(&mut self, stream: u32, status: StatusCode, headers: &HeaderMap, end: bool) {
        let mut block = std::mem::take(&mut self.block);
        block.clear();
        self.enc.begin(&mut block);
        self.enc
            .field(b":status", status.as_str().as_bytes(), &mut block);
        self.fields(headers, &mut block);
        self.header_block(stream, &block, end);
        self.block = block;
    }

    /// A request head: the pseudo-headers of a POST, then `headers`.
    pub fn request(
        &mut self,
        stream: u32,
        (scheme, authority, path): (&[u8], &[u8], &[u8]),
        headers: &HeaderMap,
        end: bool,
    ) {
        let mut block = std::mem::take(&mut self.block);
        block.clear();
        self.enc.begin(&mut block);
        self.enc.field(b":method", b"POST", &mut block);
        self.enc.field(b":scheme", scheme, &mut block);
        self.enc.field(b":authority", authority, &mut block);
        self.enc.field(b":path", path, &mut block);
        self.fields(headers, &mut block);
        self.header_block(stream, &block, end);
        self.block = block;
    }

    /// Trailers, ending the stream.
    pub fn trailers(&mut self, stream: u32, headers: &HeaderMap) {
        let mut block = std::mem::take(&mut self.block);
        block.clear();
        self.enc.begin(&mut block);
        self.fields(headers, &mut block);
        self.header_block(stream, &block, true);
        self.block = block;
    }

    /// `grpc-status: 0`, ending the stream.
    pub fn grpc_ok(&mut self, stream: u32) {
        let mut block = std::mem::take(&mut self.block);
        block.clear();
        self.enc.begin(&mut block);
        self.enc.field(b"grpc-status", b"0", &mut block);
        self.header_block(stream, &block, true);
        self.block = block;
    }

    fn fields(&mut self, headers: &HeaderMap, block: &mut Vec<u8>) {
        for (name, value) in headers {
            if !is_connection_specific(name) {
                self.enc
                    .field(name.as_str().as_bytes(), value.as_bytes(), block);
            }
        }
    }

    fn header_block(&mut self, stream: u32, block: &[u8], end: bool) {
        let max = self.max_frame;
        self.control(|b| frame::put_headers(b, stream, block, end, max));
    }

    /// DATA frames carrying `data`, split to the client's frame size. Flow control is the
    /// caller's.
    pub fn data(&mut self, stream: u32, mut data: Bytes, end: bool) {
        loop {
            let piece = data.split_to(data.len().min(self.max_frame));
            let last = data.is_empty();
            let flags = if last && end { frame::END_STREAM } else { 0 };
            self.control(|b| frame::put_head(b, piece.len(), frame::DATA, flags, stream));
            self.len += piece.len();
            if piece.len() >= BY_REFERENCE {
                self.seal_small();
                self.chunks.push_back(piece);
            } else {
                self.small.extend_from_slice(&piece);
            }
            if last {
                return;
            }
        }
    }

    /// Moves the unsent part of `small` behind the chunks, so that what follows keeps its
    /// place in line.
    fn seal_small(&mut self) {
        if self.small.len() > self.small_at {
            let small = std::mem::replace(&mut self.small, Vec::with_capacity(16 * 1024));
            self.chunks
                .push_back(Bytes::from(small).slice(self.small_at..));
        } else {
            self.small.clear();
        }
        self.small_at = 0;
    }

    /// What is unsent, as slices for a vectored write; returns how many were filled.
    pub fn slices<'a>(&'a self, out: &mut [IoSlice<'a>; SLICES]) -> usize {
        let mut n = 0;
        for c in self.chunks.iter().take(SLICES) {
            out[n] = IoSlice::new(c);
            n += 1;
        }
        if n < SLICES && self.small.len() > self.small_at {
            out[n] = IoSlice::new(&self.small[self.small_at..]);
            n += 1;
        }
        n
    }

    /// `n` bytes were written.
    pub fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            match self.chunks.front_mut() {
                Some(c) if c.len() <= n => {
                    n -= c.len();
                    self.chunks.pop_front();
                }
                Some(c) => {
                    let _ = c.split_to(n);
                    return;
                }
                None => {
                    self.small_at += n;
                    break;
                }
            }
        }
        if self.small_at == self.small.len() {
            self.small.clear();
            self.small_at = 0;
        }
    }
}

/// Headers HTTP/2 forbids (RFC 9113, 8.2.2); keygate leaves them out of what it sends.
pub fn is_connection_specific(name: &HeaderName) -> bool {
    name == http::header::CONNECTION
        || name == http::header::TRANSFER_ENCODING
        || name == http::header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(w: &mut Writer) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let mut slices = [IoSlice::new(&[]); SLICES];
            let count = w.slices(&mut slices);
            if count == 0 {
                break;
            }
            let n: usize = slices[..count].iter().map(|s| s.len()).sum();
            for s in &slices[..count] {
                all.extend_from_slice(s);
            }
            w.advance(n);
        }
        all
    }

    #[test]
    fn large_payloads_keep_their_place_in_line() {
        let mut w = Writer::new();
        w.rst(1, Reason::CANCEL);
        let big = Bytes::from(vec![7u8; 20_000]);
        w.data(3, big.clone(), true);
        w.rst(5, Reason::CANCEL);
        let total = w.len;
        let out = written(&mut w);
        assert_eq!(out.len(), total);
        assert_eq!(w.len, 0);
        // rst(13) + data head(9) + 16384 + head(9) + 3616 + rst(13)
        assert_eq!(out.len(), 13 + 9 + 16_384 + 9 + 3_616 + 13);
        let second = frame::Head::parse(&out[13 + 9 + 16_384..]).expect("head");
        assert_eq!((second.len, second.flags), (3_616, frame::END_STREAM));
        assert_eq!(
            &out[out.len() - 13..out.len() - 9],
            &[0, 0, 4, frame::RST_STREAM]
        );
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut w = Writer::new();
        w.data(1, Bytes::from(vec![1u8; 5000]), false);
        w.data(1, Bytes::from_static(b"tail"), true);
        let expected = {
            let mut copy = Writer::new();
            copy.data(1, Bytes::from(vec![1u8; 5000]), false);
            copy.data(1, Bytes::from_static(b"tail"), true);
            written(&mut copy)
        };
        let mut got = Vec::new();
        while w.len > 0 {
            let mut slices = [IoSlice::new(&[]); SLICES];
            w.slices(&mut slices);
            let first = slices[0].len().min(7);
            got.extend_from_slice(&slices[0][..first]);
            w.advance(first);
        }
        assert_eq!(got, expected);
    }
}
