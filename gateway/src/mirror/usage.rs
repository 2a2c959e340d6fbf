//! What a tenant's namespace holds, for its storage quota: counted in the mirror, at a
//! revision no older than any a client has seen, so a tenant's own sequential writes are
//! always counted.

use super::Mirror;
use bytes::Bytes;

/// Keys, and bytes of keys (as the tenant names them) and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub keys: u64,
    pub bytes: u64,
}

/// A count of the mirror: the usage of a range and the stored size of some keys, at `revision`.
pub struct Counted {
    pub used: Usage,
    pub sizes: Vec<Option<u64>>,
    pub revision: i64,
}

impl Mirror {
    /// The usage of `[start, end)`, counted until it exceeds every limit in `cap` (0: none), and
    /// the stored size of each of `keys`, with the revision counted at; `None` when the mirror
    /// is not serving, is behind, or does not hold that range (`mirror.prefixes`). Right after
    /// keygate starts, waits for the mirror's first list (`mirror.first_list_wait_ms`): writes that
    /// arrive meanwhile are counted, not let through.
    /// Key lengths count without the first `prefix_len` bytes.
    pub async fn usage(
        &self,
        (start, end): (&[u8], &[u8]),
        prefix_len: usize,
        keys: &[Bytes],
        cap: Usage,
    ) -> Option<Counted> {
        if !self.shared.coverage.covers(start, end) {
            return None;
        }
        self.started().await;
        if !self.serving() || !self.catch_up().await {
            return None;
        }
        let store = self.shared.store.read().ok()?;
        let size =
            |key: &[u8], value: &[u8]| (key.len().saturating_sub(prefix_len) + value.len()) as u64;
        let mut used = Usage::default();
        for kv in store.range(start, end) {
            used.keys += 1;
            used.bytes += size(&kv.key, &kv.value);
            // Past every limit: any write that adds will be refused, however much more there is.
            let over = |used: u64, cap: u64| cap == 0 || used > cap;
            if over(used.keys, cap.keys) && over(used.bytes, cap.bytes) {
                break;
            }
        }
        let sizes = keys
            .iter()
            .map(|k| {
                store
                    .range(k, &[])
                    .next()
                    .map(|kv| size(&kv.key, &kv.value))
            })
            .collect();
        Some(Counted {
            used,
            sizes,
            revision: store.revision(),
        })
    }
}
