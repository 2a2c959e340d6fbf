//! HPACK's Huffman code (RFC 7541, Appendix B), decoding only: keygate writes its own header
//! strings as plain literals. The code is canonical, so the length of each symbol's code is all
//! the table needs; the codes follow from the lengths.

use std::sync::OnceLock;

/// Code length in bits of each symbol, 0..=255 and EOS (256).
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;

/// The canonical code laid out for decoding: per length, the first code and where that
/// length's symbols start in `symbols` (ordered by length, then symbol).
struct Canonical {
    first_code: [u32; MAX_LEN + 1],
    count: [u32; MAX_LEN + 1],
    offset: [u32; MAX_LEN + 1],
    symbols: Vec<u16>,
}

fn canonical() -> &'static Canonical {
    static CODE: OnceLock<Canonical> = OnceLock::new();
    CODE.get_or_init(|| {
        let mut count = [0u32; MAX_LEN + 1];
        for &len in &LENGTHS {
            count[usize::from(len)] += 1;
        }
        let mut first_code = [0u32; MAX_LEN + 1];
        let mut offset = [0u32; MAX_LEN + 1];
        let (mut code, mut at) = (0u32, 0u32);
        for len in 1..=MAX_LEN {
            code = (code + count[len - 1]) << 1;
            first_code[len] = code;
            offset[len] = at;
            at += count[len];
        }
        let mut symbols: Vec<u16> = (0..=EOS).collect();
        symbols.sort_by_key(|&s| (LENGTHS[usize::from(s)], s));
        Canonical {
            first_code,
            count,
            offset,
            symbols,
        }
    })
}

/// The code of `symbol`, for tests and for encoding if keygate ever needs it.
#[cfg(test)]
pub fn code_of(symbol: u16) -> (u32, u8) {
    let c = canonical();
    let len = LENGTHS[usize::from(symbol)];
    let l = usize::from(len);
    let rank = c.symbols[c.offset[l] as usize..][..c.count[l] as usize]
        .iter()
        .position(|&s| s == symbol)
        .unwrap_or(0) as u32;
    (c.first_code[l] + rank, len)
}

/// `input` Huffman-coded, padded with ones (for tests: keygate sends no Huffman strings).
#[cfg(test)]
pub fn encode(input: &[u8]) -> Vec<u8> {
    let (mut acc, mut bits, mut out) = (0u64, 0u32, Vec::new());
    for &b in input {
        let (code, len) = code_of(u16::from(b));
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) | ((1 << (8 - bits)) - 1)) as u8);
    }
    out
}

/// Decodes a Huffman-coded string; `None` when it is not a valid encoding (an EOS symbol, or
/// padding that is longer than 7 bits or not all ones).
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let c = canonical();
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let rank = code.wrapping_sub(c.first_code[len]);
            if rank < c.count[len] {
                let symbol = c.symbols[(c.offset[len] + rank) as usize];
                if symbol == EOS {
                    return None;
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            } else if len == MAX_LEN {
                return None;
            }
        }
    }
    // What is left is padding: the top bits of EOS, all ones, shorter than a byte.
    (len < 8 && code == (1 << len) - 1).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_rfc_examples() {
        // RFC 7541 C.4.1: "www.example.com"
        let expected = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        assert_eq!(encode(b"www.example.com"), expected);
        let mut out = Vec::new();
        assert_eq!(decode(&expected, &mut out), Some(()));
        assert_eq!(out, b"www.example.com");
        assert_eq!(code_of(u16::from(b'0')), (0, 5));
        assert_eq!(code_of(EOS), (0x3fff_ffff, 30));
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        assert_eq!(decode(&encode(&all), &mut out), Some(()));
        assert_eq!(out, all);
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // '0' is 00000; padding of zeros instead of ones.
        assert_eq!(decode(&[0x00], &mut out), None);
        // A whole byte of padding.
        out.clear();
        assert_eq!(decode(&[0x07, 0xff], &mut out), None);
        // EOS itself.
        out.clear();
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff], &mut out), None);
    }
}
