//! The decoder against a reference encoder that uses every representation RFC 7541 allows —
//! indexed fields from both tables, literals with, without and never indexing, with indexed or
//! literal names, plain and Huffman strings, table size updates — chosen at random, block after
//! block on one connection: every field comes out as sent (up to the header list limit), and
//! the two tables stay in step. Blocks broken at random are refused or decoded, never a panic.

use super::encoder::integer;
use super::huffman;
use super::table::{entry_size, lookup, DynamicTable, Name, STATIC_LEN};
use super::{DecodeError, Decoder};
use crate::h2::testing;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::VecDeque;

type Field = (Vec<u8>, Vec<u8>);

/// The reference encoder: its own model of the dynamic table, and the static table.
struct Reference {
    statics: Vec<Field>,
    table: VecDeque<Field>,
    size: usize,
    max: usize,
}

impl Reference {
    fn new(max: usize) -> Reference {
        let none = DynamicTable::<Name>::new(0);
        let statics = (1..=STATIC_LEN)
            .filter_map(|i| lookup(&none, i))
            .map(|(n, v)| (n.as_bytes().to_vec(), v.to_vec()))
            .collect();
        Reference {
            statics,
            table: VecDeque::new(),
            size: 0,
            max,
        }
    }

    fn set_max(&mut self, max: usize) {
        self.max = max;
        self.evict();
    }

    fn insert(&mut self, field: Field) {
        self.size += entry_size(&field.0, &field.1);
        self.table.push_front(field);
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max {
            let Some((n, v)) = self.table.pop_back() else {
                break;
            };
            self.size -= entry_size(&n, &v);
        }
    }

    /// Every index (static, then dynamic) whose entry has this name, and whether its value too.
    fn indices(&self, field: &Field) -> Vec<(usize, bool)> {
        let all = self.statics.iter().chain(self.table.iter());
        all.enumerate()
            .filter(|(_, e)| e.0 == field.0)
            .map(|(i, e)| (i + 1, e.1 == field.1))
            .collect()
    }

    /// A field worth sending: one of the tables' own, a table's name with a new value, or new.
    fn field(&self, rng: &mut StdRng) -> Field {
        let pick = rng.random_range(0..4);
        let entries = if pick == 0 || self.table.is_empty() {
            &self.statics
        } else {
            self.table.as_slices().0
        };
        match pick {
            0 | 1 if !entries.is_empty() => entries[rng.random_range(0..entries.len())].clone(),
            2 => {
                let (name, _) = &self.statics[rng.random_range(0..self.statics.len())];
                (name.clone(), bytes(rng))
            }
            _ => (name(rng), bytes(rng)),
        }
    }

    /// Encodes `field` one way or another, as a peer's encoder may.
    fn encode(&mut self, rng: &mut StdRng, field: Field, out: &mut Vec<u8>) {
        let indices = self.indices(&field);
        let mut whole = indices.iter().filter(|(_, whole)| *whole).map(|(i, _)| *i);
        if let Some(i) = whole.next_back().filter(|_| rng.random_bool(0.7)) {
            integer(out, i, 7, 0x80);
            return;
        }
        let (prefix, flags, index) = match rng.random_range(0..3) {
            0 => (6, 0x40, true),
            1 => (4, 0x00, false),
            _ => (4, 0x10, false),
        };
        match indices.first().filter(|_| rng.random_bool(0.6)) {
            Some(&(i, _)) => integer(out, i, prefix, flags),
            None => {
                out.push(flags);
                string(rng, &field.0, out);
            }
        }
        string(rng, &field.1, out);
        if index {
            self.insert(field);
        }
    }

    /// A header block of random fields; with it, the fields it carries.
    fn block(&mut self, rng: &mut StdRng, allowed: usize) -> (Vec<u8>, Vec<Field>) {
        let mut out = Vec::new();
        if rng.random_bool(0.2) {
            // One or two size updates (the smaller first, as RFC 7541 4.2 has it).
            let mut sizes = [rng.random_range(0..=allowed), rng.random_range(0..=allowed)];
            sizes.sort();
            let n = rng.random_range(1..=2);
            for &size in &sizes[2 - n..] {
                integer(&mut out, size, 5, 0x20);
                self.set_max(size);
            }
        }
        let fields: Vec<Field> = (0..rng.random_range(0..12))
            .map(|_| self.field(rng))
            .collect();
        for f in &fields {
            self.encode(rng, f.clone(), &mut out);
        }
        (out, fields)
    }
}

fn string(rng: &mut StdRng, s: &[u8], out: &mut Vec<u8>) {
    if rng.random_bool(0.5) {
        let coded = huffman::encode(s);
        integer(out, coded.len(), 7, 0x80);
        out.extend_from_slice(&coded);
    } else {
        integer(out, s.len(), 7, 0);
        out.extend_from_slice(s);
    }
}

/// A name: mostly a valid lowercase token, sometimes a pseudo-header, sometimes any bytes.
fn name(rng: &mut StdRng) -> Vec<u8> {
    const TOKEN: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_";
    match rng.random_range(0..10) {
        0 => b":path".to_vec(),
        1 => (0..rng.random_range(1..8)).map(|_| rng.random()).collect(),
        _ => (0..rng.random_range(1..16))
            .map(|_| TOKEN[rng.random_range(0..TOKEN.len())])
            .collect(),
    }
}

/// A value: printable, or any bytes; now and then long.
fn bytes(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.random_bool(0.1) {
        true => rng.random_range(0..600),
        false => rng.random_range(0..40),
    };
    match rng.random_bool(0.5) {
        true => (0..len).map(|_| rng.random_range(0x20..0x7f)).collect(),
        false => (0..len).map(|_| rng.random()).collect(),
    }
}

fn decode(dec: &mut Decoder, block: &[u8]) -> (Result<(), DecodeError>, Vec<Field>) {
    let mut got = Vec::new();
    let result = dec.decode(&Bytes::copy_from_slice(block), |n, v| {
        got.push((n.as_bytes().to_vec(), v.to_vec()))
    });
    (result, got)
}

#[test]
fn every_representation_decodes_as_sent_and_the_tables_stay_in_step() {
    let mut rng = testing::rng(7541);
    for conn in 0..testing::cases(400) {
        let allowed = [0, 64, 256, 4096][conn % 4];
        let max_list = match rng.random_bool(0.3) {
            true => rng.random_range(50..1500),
            false => 1 << 20,
        };
        let mut reference = Reference::new(allowed);
        let mut dec = Decoder::new(allowed, max_list);
        for n in 0..30 {
            let (block, sent) = reference.block(&mut rng, allowed);
            let (result, got) = decode(&mut dec, &block);
            // The decoder hands out fields while their running total is within the limit.
            let mut total = 0;
            let within: Vec<Field> = sent
                .iter()
                .take_while(|(n, v)| {
                    total += entry_size(n, v);
                    total <= max_list
                })
                .cloned()
                .collect();
            let list: usize = sent.iter().map(|(n, v)| entry_size(n, v)).sum();
            let want = match list > max_list {
                true => Err(DecodeError::ListTooLarge),
                false => Ok(()),
            };
            let at = format!("connection {conn}, block {n}: {block:02x?}");
            assert_eq!(result, want, "{at}");
            assert_eq!(got, within, "{at}");
            assert_eq!(dec.table_len(), reference.table.len(), "{at}");
        }
    }
}

#[test]
fn broken_blocks_are_refused_or_decoded_never_a_panic() {
    let mut rng = testing::rng(9113);
    let mut refused = 0;
    let cases = testing::cases(3000);
    for _ in 0..cases {
        let allowed = 4096;
        let mut reference = Reference::new(allowed);
        let mut dec = Decoder::new(allowed, 1 << 16);
        let (mut block, _) = reference.block(&mut rng, allowed);
        match rng.random_range(0..4) {
            0 => block.truncate(rng.random_range(0..=block.len())),
            1 => block = (0..rng.random_range(1..64)).map(|_| rng.random()).collect(),
            2 => block.extend((0..rng.random_range(1..8)).map(|_| rng.random::<u8>())),
            _ => {
                for _ in 0..rng.random_range(1..4) {
                    if !block.is_empty() {
                        let at = rng.random_range(0..block.len());
                        block[at] ^= 1 << rng.random_range(0..8);
                    }
                }
            }
        }
        let (result, got) = decode(&mut dec, &block);
        if result.is_err() {
            refused += 1;
        }
        // Whatever came out fits the limit and the table its bound.
        let list: usize = got.iter().map(|(n, v)| entry_size(n, v)).sum();
        assert!(list <= 1 << 16, "{block:02x?}");
        assert!(dec.table_len() <= allowed / 32, "{block:02x?}");
    }
    // The breakage did break blocks.
    assert!(
        refused > cases / 3,
        "only {refused} of {cases} broken blocks were refused"
    );
}
