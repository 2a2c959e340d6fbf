//! Which keys the mirror holds: the whole keyspace, or the configured prefixes
//! (`mirror.prefixes`). The mirror still follows every revision; it only keeps and answers for
//! keys under these prefixes, and reads that reach outside them go to etcd.

use crate::namespace::prefix_end;
use bytes::Bytes;

/// Key ranges `[start, end)` in etcd's conventions (an end of "\0" has no bound).
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    /// Sorted and disjoint; empty means the whole keyspace.
    ranges: Vec<(Bytes, Bytes)>,
}

impl Coverage {
    /// The ranges of `prefixes` (each non-empty); a prefix under another one adds nothing.
    pub fn new(prefixes: &[String]) -> Coverage {
        let mut ranges: Vec<(Bytes, Bytes)> = prefixes
            .iter()
            .map(|p| {
                let end = prefix_end(p.as_bytes());
                (Bytes::copy_from_slice(p.as_bytes()), Bytes::from(end))
            })
            .collect();
        ranges.sort();
        let mut kept: Vec<(Bytes, Bytes)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            if kept.last().is_some_and(|(_, e)| within(&start, e)) {
                continue;
            }
            kept.push((start, end));
        }
        Coverage { ranges: kept }
    }

    /// True when the mirror holds every key.
    pub fn is_everything(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges to list, in key order.
    pub fn ranges(&self) -> Vec<(Bytes, Bytes)> {
        if self.ranges.is_empty() {
            return vec![(Bytes::from_static(b"\0"), Bytes::from_static(b"\0"))];
        }
        self.ranges.clone()
    }

    /// Whether the mirror holds `key`.
    pub fn holds(&self, key: &[u8]) -> bool {
        self.ranges.is_empty()
            || self
                .ranges
                .iter()
                .any(|(start, end)| key >= start.as_ref() && within(key, end))
    }

    /// Whether every key of etcd's range `[key, range_end)` is held ("" as the end: just `key`;
    /// "\0": every key from `key` on).
    pub fn covers(&self, key: &[u8], range_end: &[u8]) -> bool {
        if self.ranges.is_empty() || range_end.is_empty() {
            return self.holds(key);
        }
        self.ranges.iter().any(|(start, end)| {
            key >= start.as_ref()
                && (end.as_ref() == b"\0" || range_end != b"\0" && range_end <= end)
        })
    }
}

/// Whether `key` lies before `end` ("\0": no end).
fn within(key: &[u8], end: &[u8]) -> bool {
    end == b"\0" || key < end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(prefixes: &[&str]) -> Coverage {
        Coverage::new(&prefixes.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn no_prefixes_hold_everything() {
        let all = of(&[]);
        assert!(all.is_everything() && all.holds(b"x") && all.covers(b"\0", b"\0"));
        assert_eq!(all.ranges().len(), 1);
    }

    #[test]
    fn keys_and_ranges_inside_a_prefix_are_covered() {
        let c = of(&["/a/", "/b/"]);
        assert!(c.holds(b"/a/") && c.holds(b"/a/x") && c.holds(b"/b/\xff"));
        assert!(!c.holds(b"/a") && !c.holds(b"/ab") && !c.holds(b"/c/"));
        assert!(c.covers(b"/a/x", b""));
        assert!(c.covers(b"/a/", b"/a0"), "the prefix itself");
        assert!(c.covers(b"/a/k", b"/a/m"));
        assert!(
            !c.covers(b"/a/", b"/b/x"),
            "spans two prefixes and the gap between"
        );
        assert!(!c.covers(b"/a/", b"\0"), "from-key runs past the prefix");
        assert!(!c.covers(b"\0", b"\0"), "the whole keyspace");
        assert!(!c.covers(b"/", b"/a0"), "starts before the prefix");
    }

    #[test]
    fn nested_and_unbounded_prefixes() {
        let c = of(&["/a/", "/a/b/", "\u{7f}"]);
        assert_eq!(c.ranges().len(), 2, "/a/b/ lies inside /a/");
        let high = Coverage {
            ranges: vec![(Bytes::from_static(b"\xff"), Bytes::from_static(b"\0"))],
        };
        assert!(
            high.covers(b"\xff\x01", b"\0"),
            "a prefix of 0xff bytes has no end"
        );
        assert!(!high.covers(b"\xfe", b"\0"));
    }
}
