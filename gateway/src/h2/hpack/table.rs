//! HPACK's header tables: the static table (RFC 7541, Appendix A) and a dynamic table, with the
//! names keygate's HTTP/2 layer works with.

use bytes::Bytes;
use http::HeaderName;
use std::collections::VecDeque;
use std::sync::OnceLock;

/// A header field's name as the HTTP/2 layer needs it: a request's pseudo-headers apart,
/// regular names already parsed, anything else kept as bytes (a request that uses it is
/// malformed, but the table must still hold it to stay in step with the peer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    Authority,
    Method,
    Path,
    Scheme,
    Status,
    Header(HeaderName),
    Invalid(Bytes),
}

impl Name {
    /// A name as it arrived on the wire; regular names must be lowercase.
    pub fn parse(bytes: &[u8]) -> Name {
        match bytes {
            b":authority" => Name::Authority,
            b":method" => Name::Method,
            b":path" => Name::Path,
            b":scheme" => Name::Scheme,
            b":status" => Name::Status,
            _ => match HeaderName::from_lowercase(bytes) {
                Ok(name) => Name::Header(name),
                Err(_) => Name::Invalid(Bytes::copy_from_slice(bytes)),
            },
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Authority => b":authority",
            Name::Method => b":method",
            Name::Path => b":path",
            Name::Scheme => b":scheme",
            Name::Status => b":status",
            Name::Header(name) => name.as_str().as_bytes(),
            Name::Invalid(bytes) => bytes,
        }
    }
}

/// The static table: index 1 is the first entry.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

pub const STATIC_LEN: usize = STATIC.len();

/// The static table's entries, parsed once.
fn static_entries() -> &'static [(Name, Bytes)] {
    static ENTRIES: OnceLock<Vec<(Name, Bytes)>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        STATIC
            .iter()
            .map(|(n, v)| (Name::parse(n.as_bytes()), Bytes::from_static(v.as_bytes())))
            .collect()
    })
}

/// The static table's index of a name (its first entry), for encoding.
pub fn static_name_index(name: &[u8]) -> Option<usize> {
    STATIC
        .iter()
        .position(|(n, _)| n.as_bytes() == name)
        .map(|i| i + 1)
}

/// The static table's index of a whole field, for encoding.
pub fn static_field_index(name: &[u8], value: &[u8]) -> Option<usize> {
    STATIC
        .iter()
        .position(|(n, v)| n.as_bytes() == name && v.as_bytes() == value)
        .map(|i| i + 1)
}

/// An entry's size as HPACK counts it.
pub fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

/// A dynamic table: newest entry first, evicted oldest first to stay within its size.
#[derive(Debug)]
pub struct DynamicTable<N> {
    entries: VecDeque<(N, Bytes)>,
    size: usize,
    max_size: usize,
}

impl<N: AsRef<[u8]>> DynamicTable<N> {
    pub fn new(max_size: usize) -> Self {
        DynamicTable {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    pub fn max_size(&self) -> usize {
        self.max_size
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    /// Adds an entry; one larger than the whole table empties it (RFC 7541, 4.4).
    pub fn insert(&mut self, name: N, value: Bytes) {
        let size = entry_size(name.as_ref(), &value);
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.entries.push_front((name, value));
    }

    /// The entry at a 0-based position, newest first.
    pub fn get(&self, at: usize) -> Option<&(N, Bytes)> {
        self.entries.get(at)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(N, Bytes)> {
        self.entries.iter()
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            match self.entries.pop_back() {
                Some((n, v)) => self.size -= entry_size(n.as_ref(), &v),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

impl AsRef<[u8]> for Name {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// The field at `index` (1-based; the static table, then `table`).
pub fn lookup(table: &DynamicTable<Name>, index: usize) -> Option<(Name, Bytes)> {
    match index {
        0 => None,
        i if i <= STATIC_LEN => static_entries().get(i - 1).cloned(),
        i => table.get(i - STATIC_LEN - 1).cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_keeps_the_table_within_its_size() {
        let mut t: DynamicTable<Name> = DynamicTable::new(100);
        t.insert(Name::parse(b"a"), Bytes::from_static(b"1")); // 34
        t.insert(Name::parse(b"b"), Bytes::from_static(b"2")); // 68
        t.insert(Name::parse(b"c"), Bytes::from_static(b"3")); // 102: evicts a
        assert_eq!(t.len(), 2);
        assert_eq!(lookup(&t, 62).map(|e| e.1), Some(Bytes::from_static(b"3")));
        assert_eq!(lookup(&t, 63).map(|e| e.1), Some(Bytes::from_static(b"2")));
        assert!(lookup(&t, 64).is_none());
        t.set_max_size(40);
        assert_eq!(t.len(), 1);
        t.insert(Name::parse(b"a-long-name"), Bytes::from(vec![b'x'; 10]));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn static_entries_are_where_the_rfc_puts_them() {
        let t: DynamicTable<Name> = DynamicTable::new(0);
        assert_eq!(
            lookup(&t, 2),
            Some((Name::Method, Bytes::from_static(b"GET")))
        );
        assert_eq!(lookup(&t, 8).map(|e| e.0), Some(Name::Status));
        assert_eq!(static_name_index(b"content-type"), Some(31));
        assert_eq!(static_field_index(b":status", b"200"), Some(8));
        assert_eq!(static_name_index(b"www-authenticate"), Some(61));
        assert!(lookup(&t, 0).is_none());
    }
}
