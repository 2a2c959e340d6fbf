//! Key-range arithmetic as etcd defines it: a range is `[key, range_end)`, an empty end is the
//! single key, an end of "\0" is every key from `key` on.

/// The end of the range holding every key with `prefix` (etcd's GetPrefixRangeEnd): the
/// prefix with its last byte below 0xff incremented; "\0" (no end) when there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whether every key of `[key, range_end)` starts with `prefix`.
pub fn within(key: &[u8], range_end: &[u8], prefix: &[u8]) -> bool {
    if !key.starts_with(prefix) {
        return false;
    }
    if range_end.is_empty() {
        return true;
    }
    let end = prefix_end(prefix);
    if range_end == [0] {
        return end == [0];
    }
    end == [0] || range_end <= end.as_slice()
}

/// Whether `[key, range_end)` holds at least one key starting with `prefix`.
pub fn overlaps(key: &[u8], range_end: &[u8], prefix: &[u8]) -> bool {
    if range_end.is_empty() {
        return key.starts_with(prefix);
    }
    let end = prefix_end(prefix);
    let below_end = end == [0] || key < end.as_slice();
    let reaches_prefix = range_end == [0] || range_end > prefix;
    below_end && reaches_prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert!(within(b"a/x", b"", b"a/"));
        assert!(within(b"a/", b"a0", b"a/"));
        assert!(!within(b"a/", b"b", b"a/"));
        assert!(!within(b"a/", b"\0", b"a/"));
        assert!(!within(b"b", b"", b"a/"));
        assert!(overlaps(b"", b"\0", b"a/"));
        assert!(overlaps(b"a", b"a/0", b"a/"));
        assert!(!overlaps(b"a0", b"\0", b"a/"));
        assert!(!overlaps(b"a", b"a/", b"a/"));
    }

    /// Every string of `alphabet` up to `len` bytes.
    fn strings(alphabet: &[u8], len: usize) -> Vec<Vec<u8>> {
        let mut all = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..len {
            let next: Vec<Vec<u8>> = (last.iter())
                .flat_map(|s| alphabet.iter().map(move |&b| [s.as_slice(), &[b]].concat()))
                .collect();
            all.extend(next.iter().cloned());
            last = next;
        }
        all
    }

    /// Whether `k` is in `[key, range_end)` as etcd reads a range.
    fn in_range(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
        match range_end {
            [] => k == key,
            [0] => k >= key,
            end => k >= key && k < end,
        }
    }

    /// `within` and `overlaps` against the keys themselves: every range and prefix of up to
    /// two bytes from an alphabet with the boundary bytes, checked against every key of up to
    /// three bytes. `within` must never say yes when a key in the range lacks the prefix (a
    /// tenant would reach outside its namespace); `overlaps` must never say no when a key in
    /// the range has it (a protected prefix would be written).
    #[test]
    fn against_every_key() {
        let alphabet = [0x00, 0x01, b'a', 0xfe, 0xff];
        let bounds = strings(&alphabet, 2);
        let keys = strings(&alphabet, 3);
        for prefix in &bounds {
            for key in &bounds {
                for range_end in &bounds {
                    let mut inside = keys.iter().filter(|k| in_range(k, key, range_end));
                    let all_prefixed = inside.clone().all(|k| k.starts_with(prefix));
                    let any_prefixed = inside.any(|k| k.starts_with(prefix));
                    let case = format!("key {key:?} range_end {range_end:?} prefix {prefix:?}");
                    if within(key, range_end, prefix) {
                        assert!(all_prefixed, "within says yes: {case}");
                    }
                    if any_prefixed {
                        assert!(overlaps(key, range_end, prefix), "overlaps says no: {case}");
                    }
                }
            }
        }
    }
}
