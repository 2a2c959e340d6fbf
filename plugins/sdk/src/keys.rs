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
}
