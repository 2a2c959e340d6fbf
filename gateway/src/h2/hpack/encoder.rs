//! The HPACK encoder for what keygate sends: a few fields repeat on every response of a
//! connection (`:status 200`, `content-type: application/grpc`, `grpc-status: 0`) or every
//! request to a member (`:path`, `:authority`), so those are indexed once and sent as a byte
//! or two after; everything else goes as a plain literal, without indexing, so the table only
//! ever holds the repeating fields.

use super::table::{static_field_index, static_name_index, DynamicTable, STATIC_LEN};
use bytes::{BufMut, Bytes};

/// keygate's own table never grows past this, whatever the peer allows.
const OWN_MAX: usize = 4096;

pub struct Encoder {
    table: DynamicTable<Bytes>,
    /// A size update owed to the peer at the start of the next block.
    update: Option<usize>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            table: DynamicTable::new(OWN_MAX),
            update: None,
        }
    }
}

impl Encoder {
    /// The peer's SETTINGS_HEADER_TABLE_SIZE changed.
    pub fn set_peer_max(&mut self, peer_max: usize) {
        let size = peer_max.min(OWN_MAX);
        if size != self.table.max_size() {
            self.table.set_max_size(size);
            self.update = Some(size);
        }
    }

    /// Starts a header block: any size update owed goes first.
    pub fn begin(&mut self, out: &mut Vec<u8>) {
        if let Some(size) = self.update.take() {
            integer(out, size, 5, 0x20);
        }
    }

    /// Encodes one field of the block begun with `begin`.
    pub fn field(&mut self, name: &[u8], value: &[u8], out: &mut Vec<u8>) {
        // Only these names have values in the static table.
        let static_value = matches!(
            name,
            b":status" | b":method" | b":path" | b":scheme" | b"accept-encoding"
        );
        let full = match static_value {
            true => static_field_index(name, value),
            false => None,
        };
        if let Some(i) = full.or_else(|| self.dynamic(name, value)) {
            integer(out, i, 7, 0x80);
            return;
        }
        let name_index = static_name_index(name);
        if indexable(name, value) && self.table.max_size() > 0 {
            prefixed(out, name_index, name, 6, 0x40);
            string(out, value);
            self.table
                .insert(Bytes::copy_from_slice(name), Bytes::copy_from_slice(value));
            return;
        }
        prefixed(out, name_index, name, 4, 0x00);
        string(out, value);
    }

    fn dynamic(&self, name: &[u8], value: &[u8]) -> Option<usize> {
        self.table
            .iter()
            .position(|(n, v)| n.as_ref() == name && v.as_ref() == value)
            .map(|i| i + STATIC_LEN + 1)
    }
}

/// Fields worth a place in the table: the ones that repeat on every response, or on every
/// request of a connection to a member. Credentials (`token`, `authorization`) never are.
fn indexable(name: &[u8], value: &[u8]) -> bool {
    match name {
        b"content-type"
        | b"grpc-encoding"
        | b"grpc-accept-encoding"
        | b":path"
        | b":authority"
        | b"te"
        | b"hasleader"
        | b"user-agent" => true,
        b"grpc-status" => value == b"0",
        _ => false,
    }
}

/// A literal's name: its static index, or the name itself.
fn prefixed(out: &mut Vec<u8>, index: Option<usize>, name: &[u8], prefix: u8, flags: u8) {
    match index {
        Some(i) => integer(out, i, prefix, flags),
        None => {
            out.put_u8(flags);
            string(out, name);
        }
    }
}

/// A plain (not Huffman-coded) string literal.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

/// An HPACK integer with an N-bit prefix, the prefix byte's other bits set to `flags`.
pub fn integer(out: &mut Vec<u8>, value: usize, prefix: u8, flags: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.put_u8(flags | value as u8);
        return;
    }
    out.put_u8(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.put_u8((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.put_u8(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::super::{Decoder, Name};
    use super::*;

    fn round_trip(enc: &mut Encoder, dec: &mut Decoder, fields: &[(&str, &str)]) -> usize {
        let mut block = Vec::new();
        enc.begin(&mut block);
        for (n, v) in fields {
            enc.field(n.as_bytes(), v.as_bytes(), &mut block);
        }
        let mut got = Vec::new();
        dec.decode(&Bytes::from(block.clone()), |n: Name, v| {
            got.push((n.as_bytes().to_vec(), v.to_vec()))
        })
        .expect("decodes");
        let want: Vec<_> = fields
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(got, want);
        block.len()
    }

    #[test]
    fn repeated_responses_shrink_to_a_few_bytes() {
        let (mut enc, mut dec) = (Encoder::default(), Decoder::new(4096, 1 << 16));
        let head = [(":status", "200"), ("content-type", "application/grpc")];
        let trailers = [("grpc-status", "0")];
        let first =
            round_trip(&mut enc, &mut dec, &head) + round_trip(&mut enc, &mut dec, &trailers);
        let later =
            round_trip(&mut enc, &mut dec, &head) + round_trip(&mut enc, &mut dec, &trailers);
        assert!(first > 20, "{first}");
        assert_eq!(later, 3);
        // Errors and other fields go as literals.
        round_trip(
            &mut enc,
            &mut dec,
            &[
                ("grpc-status", "9"),
                ("grpc-message", "etcdserver: no leader"),
                ("x-big", &"v".repeat(300)),
            ],
        );
    }

    #[test]
    fn a_smaller_peer_table_is_announced_and_respected() {
        let (mut enc, mut dec) = (Encoder::default(), Decoder::new(4096, 1 << 16));
        round_trip(&mut enc, &mut dec, &[("content-type", "application/grpc")]);
        enc.set_peer_max(0);
        round_trip(&mut enc, &mut dec, &[("content-type", "application/grpc")]);
        assert_eq!(dec_table_len(&dec), 0);
        let mut d0 = Decoder::new(0, 1 << 16);
        let mut e0 = Encoder::default();
        e0.set_peer_max(0);
        round_trip(
            &mut e0,
            &mut d0,
            &[("grpc-status", "0"), ("content-type", "application/grpc")],
        );
    }

    fn dec_table_len(dec: &Decoder) -> usize {
        dec.table_len()
    }
}
