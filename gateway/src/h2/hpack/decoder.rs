//! The HPACK decoder: header blocks into fields, with the dynamic table kept in step with the
//! peer's encoder. Indexed fields come out of the tables without a copy; plain literals are
//! slices of the block.

use super::huffman;
use super::table::{entry_size, lookup, DynamicTable, Name};
use bytes::Bytes;

/// Why a header block could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The block breaks HPACK: the connection cannot go on (COMPRESSION_ERROR).
    Compression(&'static str),
    /// The fields add up to more than the header list limit. The table was kept in step; only
    /// this block's request is refused.
    ListTooLarge,
}

pub struct Decoder {
    table: DynamicTable<Name>,
    /// The table size keygate allows the peer (SETTINGS_HEADER_TABLE_SIZE).
    max_allowed: usize,
    /// The largest header list accepted, counted as HPACK counts entries.
    max_list: usize,
    huffman: Vec<u8>,
    /// Recently decoded Huffman strings. Some clients send the same string as a Huffman
    /// literal on every request (hyper's never indexes `:path`): it is decoded once.
    recent: Vec<(Bytes, Bytes)>,
    next_recent: usize,
}

/// How many decoded Huffman strings are remembered.
const RECENT: usize = 8;

impl Decoder {
    pub fn new(max_table: usize, max_list: usize) -> Decoder {
        Decoder {
            table: DynamicTable::new(max_table),
            max_allowed: max_table,
            max_list,
            huffman: Vec::new(),
            recent: Vec::with_capacity(RECENT),
            next_recent: 0,
        }
    }

    #[cfg(test)]
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// Decodes one whole header block (HEADERS plus CONTINUATIONs), calling `emit` for every
    /// field in order.
    pub fn decode(
        &mut self,
        block: &Bytes,
        mut emit: impl FnMut(Name, Bytes),
    ) -> Result<(), DecodeError> {
        let mut at = 0usize;
        let mut list = 0usize;
        let mut fields = false;
        while at < block.len() {
            let first = block[at];
            let (name, value, index) = if first & 0x80 != 0 {
                // Indexed field.
                let i = integer(block, &mut at, 7)?;
                let (name, value) = lookup(&self.table, i).ok_or(bad("index out of range"))?;
                (name, value, false)
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing.
                let (name, value) = self.literal(block, &mut at, 6)?;
                (name, value, true)
            } else if first & 0x20 != 0 {
                // Dynamic table size update: only before the block's first field.
                if fields {
                    return Err(bad("table size update after a field"));
                }
                let size = integer(block, &mut at, 5)?;
                if size > self.max_allowed {
                    return Err(bad("table size update above the allowed size"));
                }
                self.table.set_max_size(size);
                continue;
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                let (name, value) = self.literal(block, &mut at, 4)?;
                (name, value, false)
            };
            fields = true;
            list = list.saturating_add(entry_size(name.as_bytes(), &value));
            if index {
                self.table.insert(name.clone(), value.clone());
            }
            if list <= self.max_list {
                emit(name, value);
            }
        }
        if list > self.max_list {
            return Err(DecodeError::ListTooLarge);
        }
        Ok(())
    }

    /// A literal field: its name (indexed or literal) and its value.
    fn literal(
        &mut self,
        block: &Bytes,
        at: &mut usize,
        prefix: u8,
    ) -> Result<(Name, Bytes), DecodeError> {
        let i = integer(block, at, prefix)?;
        let name = if i == 0 {
            let raw = self.string(block, at)?;
            Name::parse(&raw)
        } else {
            lookup(&self.table, i)
                .ok_or(bad("name index out of range"))?
                .0
        };
        let value = self.string(block, at)?;
        Ok((name, value))
    }

    /// A string literal: a slice of the block, or Huffman-decoded into a new buffer.
    fn string(&mut self, block: &Bytes, at: &mut usize) -> Result<Bytes, DecodeError> {
        let first = *block.get(*at).ok_or(bad("truncated string"))?;
        let len = integer(block, at, 7)?;
        let end = at
            .checked_add(len)
            .filter(|&end| end <= block.len())
            .ok_or(bad("string past the end of the block"))?;
        let raw = block.slice(*at..end);
        *at = end;
        if first & 0x80 == 0 {
            return Ok(raw);
        }
        if let Some((_, decoded)) = self.recent.iter().find(|(r, _)| *r == raw) {
            return Ok(decoded.clone());
        }
        self.huffman.clear();
        huffman::decode(&raw, &mut self.huffman).ok_or(bad("invalid Huffman string"))?;
        let decoded = Bytes::copy_from_slice(&self.huffman);
        if raw.len() <= 64 {
            let entry = (Bytes::copy_from_slice(&raw), decoded.clone());
            if self.recent.len() < RECENT {
                self.recent.push(entry);
            } else {
                self.recent[self.next_recent] = entry;
                self.next_recent = (self.next_recent + 1) % RECENT;
            }
        }
        Ok(decoded)
    }
}

fn bad(why: &'static str) -> DecodeError {
    DecodeError::Compression(why)
}

/// An HPACK integer with an N-bit prefix (RFC 7541, 5.1), bounded well below overflow.
pub fn integer(block: &[u8], at: &mut usize, prefix: u8) -> Result<usize, DecodeError> {
    let mask = (1u16 << prefix) as u8 - 1;
    let first = *block.get(*at).ok_or(bad("truncated integer"))? & mask;
    *at += 1;
    if first < mask {
        return Ok(usize::from(first));
    }
    let mut value = usize::from(mask);
    let mut shift = 0u32;
    loop {
        let byte = *block.get(*at).ok_or(bad("truncated integer"))?;
        *at += 1;
        value += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 28 {
            return Err(bad("integer too large"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Bytes {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>()
            .into()
    }

    fn fields(d: &mut Decoder, block: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        d.decode(&hex(block), |n, v| {
            out.push((
                String::from_utf8_lossy(n.as_bytes()).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ))
        })
        .expect("decodes");
        out
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rfc_requests_without_huffman() {
        // RFC 7541 C.3: three requests on one connection.
        let mut d = Decoder::new(4096, 16 << 10);
        let first = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ];
        assert_eq!(
            fields(&mut d, "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
            pairs(&first)
        );
        let mut second = first.to_vec();
        second.push(("cache-control", "no-cache"));
        assert_eq!(
            fields(&mut d, "8286 84be 5808 6e6f 2d63 6163 6865"),
            pairs(&second)
        );
        assert_eq!(d.table.len(), 2);
    }

    #[test]
    fn rfc_requests_with_huffman() {
        // RFC 7541 C.4.
        let mut d = Decoder::new(4096, 16 << 10);
        let first = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ];
        assert_eq!(
            fields(&mut d, "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
            pairs(&first)
        );
        let mut second = first.to_vec();
        second.push(("cache-control", "no-cache"));
        assert_eq!(
            fields(&mut d, "8286 84be 5886 a8eb 1064 9cbf"),
            pairs(&second)
        );
        let third = [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ];
        assert_eq!(
            fields(
                &mut d,
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"
            ),
            pairs(&third)
        );
    }

    #[test]
    fn broken_blocks_are_compression_errors() {
        let mut d = Decoder::new(4096, 16 << 10);
        for block in [
            "be",                // index 62 with an empty dynamic table
            "80",                // index 0
            "410f 7777",         // string longer than the block
            "3fe2 1f",           // size update above the allowed 4096
            "82 20",             // size update after a field
            "ff ff ff ff ff ff", // integer that never ends / overflows
        ] {
            let got = d.decode(&hex(block), |_, _| {});
            assert!(
                matches!(got, Err(DecodeError::Compression(_))),
                "{block}: {got:?}"
            );
        }
    }

    #[test]
    fn an_oversized_list_is_refused_but_the_table_keeps_up() {
        let mut d = Decoder::new(4096, 60);
        // custom-key: custom-value with incremental indexing (54 bytes), then indexed again.
        let block = "400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65be";
        assert_eq!(
            d.decode(&hex(block), |_, _| {}),
            Err(DecodeError::ListTooLarge)
        );
        assert_eq!(d.table.len(), 1);
        let mut got = Vec::new();
        d.decode(&hex("be"), |n, _| got.push(n)).expect("decodes");
        assert_eq!(got, vec![Name::parse(b"custom-key")]);
    }

    #[test]
    fn uppercase_names_are_kept_but_invalid() {
        let mut d = Decoder::new(4096, 16 << 10);
        let mut got = Vec::new();
        // Literal without indexing, new name "X-A" = "b".
        d.decode(&hex("0003 582d 4101 62"), |n, _| got.push(n))
            .expect("decodes");
        assert!(matches!(got[0], Name::Invalid(_)));
    }
}
