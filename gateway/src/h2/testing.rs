//! For the randomized tests of the HTTP/2 code: seeds and case counts, and frames built every
//! way RFC 9113 allows or broken at random. Each test has its own fixed seed, so CI runs the
//! same cases every time; `KEYGATE_TEST_SEED` and `KEYGATE_TEST_CASES` run other and more cases
//! by hand (`docs/testing.md`).

use crate::h2::frame::{self, Head};
use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The test's random source: from `KEYGATE_TEST_SEED` when set, else from `seed`.
pub fn rng(seed: u64) -> StdRng {
    let seed = from_env("KEYGATE_TEST_SEED").unwrap_or(seed);
    eprintln!("seed {seed}");
    StdRng::seed_from_u64(seed)
}

/// How many cases to run: `KEYGATE_TEST_CASES` when set, else `cases`.
pub fn cases(cases: usize) -> usize {
    from_env("KEYGATE_TEST_CASES").map_or(cases, |n| n as usize)
}

fn from_env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// `flag` when `on`, else no flag.
pub fn flag(on: bool, flag: u8) -> u8 {
    if on {
        flag
    } else {
        0
    }
}

/// One frame: its 9-byte header, then `payload`.
pub fn put_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::put_head(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

/// A payload with padding when `padded`: the pad length first, zeros after.
pub fn padded(rng: &mut StdRng, padded: bool, body: &[u8]) -> Vec<u8> {
    if !padded {
        return body.to_vec();
    }
    let pad = rng.random_range(0..32u8);
    let mut out = vec![pad];
    out.extend_from_slice(body);
    out.extend(std::iter::repeat_n(0, usize::from(pad)));
    out
}

/// A header block as HEADERS (maybe padded, maybe with priority data, END_STREAM when `end`)
/// and CONTINUATIONs split at random points.
pub fn header_block(rng: &mut StdRng, id: u32, block: &[u8], end: bool) -> Vec<u8> {
    let mut cuts: Vec<usize> = (0..rng.random_range(0..4))
        .map(|_| rng.random_range(0..=block.len()))
        .collect();
    cuts.sort();
    cuts.push(block.len());
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &cut) in cuts.iter().enumerate() {
        let piece = &block[start..cut];
        start = cut;
        let end_headers = flag(i + 1 == cuts.len(), frame::END_HEADERS);
        if i > 0 {
            out.extend(put_frame(frame::CONTINUATION, end_headers, id, piece));
            continue;
        }
        let (pad, priority) = (rng.random_bool(0.3), rng.random_bool(0.3));
        let mut payload = Vec::new();
        if priority {
            payload.extend_from_slice(&[0, 0, 0, 0, 200]);
        }
        payload.extend_from_slice(piece);
        let flags = end_headers
            | flag(end, frame::END_STREAM)
            | flag(pad, frame::PADDED)
            | flag(priority, frame::PRIORITY_FLAG);
        out.extend(put_frame(
            frame::HEADERS,
            flags,
            id,
            &padded(rng, pad, &payload),
        ));
    }
    out
}

/// `body` as DATA frames of random sizes, some padded, with END_STREAM on the last (or on an
/// empty one after it) when `end`.
pub fn data_frames(rng: &mut StdRng, id: u32, body: &[u8], end: bool) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (piece, after) = rest.split_at(rng.random_range(1..=rest.len().min(16_000)));
        rest = after;
        let pad = rng.random_bool(0.3);
        let last = end && rest.is_empty() && rng.random_bool(0.7);
        let flags = flag(pad, frame::PADDED) | flag(last, frame::END_STREAM);
        frames.push(put_frame(frame::DATA, flags, id, &padded(rng, pad, piece)));
    }
    let ended = frames.last().is_some_and(|f| f[4] & frame::END_STREAM != 0);
    if end && !ended {
        frames.push(put_frame(frame::DATA, frame::END_STREAM, id, &[]));
    }
    frames
}

/// The next whole frame from `io` (`buf` keeps what is read past it); None once `io` ends.
/// Every frame must fit the default frame size, as neither side of these tests raises it.
pub async fn read_frame(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
) -> Option<(Head, Bytes)> {
    loop {
        match frame::take(buf) {
            Ok(Some(frame)) => return Some(frame),
            Ok(None) => {}
            Err(frame::TooLarge) => panic!("a frame larger than {}", frame::DEFAULT_MAX_FRAME),
        }
        match io.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Writes `bytes` in pieces of random sizes.
pub async fn write_in_pieces(
    rng: &mut StdRng,
    io: &mut (impl AsyncWriteExt + Unpin),
    bytes: &[u8],
) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let (piece, after) = rest.split_at(rng.random_range(1..=rest.len().min(20_000)));
        rest = after;
        if io.write_all(piece).await.is_err() {
            return;
        }
    }
}

/// Inserts, drops, repeats, alters or cuts short a few of the script's units (never the
/// connection's opening, the first).
pub fn break_at_random(rng: &mut StdRng, units: &mut Vec<Vec<u8>>) {
    for _ in 0..rng.random_range(1..4) {
        if units.len() < 2 {
            break;
        }
        let at = rng.random_range(1..units.len());
        match rng.random_range(0..6) {
            0 => {
                let kind = rng.random_range(0..11);
                let payload: Vec<u8> = (0..rng.random_range(0..24)).map(|_| rng.random()).collect();
                let stream = [0, 1, 2, 3, 5, rng.random()][rng.random_range(0..6)];
                units.insert(at, put_frame(kind, rng.random(), stream, &payload));
            }
            1 => drop(units.remove(at)),
            2 => units.insert(at, units[at].clone()),
            3 if !units[at].is_empty() => {
                let unit = &mut units[at];
                let byte = rng.random_range(0..unit.len());
                unit[byte] ^= 1 << rng.random_range(0..8);
            }
            4 if !units[at].is_empty() => {
                let unit = &mut units[at];
                unit.truncate(rng.random_range(0..unit.len()));
            }
            5 => units.truncate(at),
            _ => {}
        }
    }
}
