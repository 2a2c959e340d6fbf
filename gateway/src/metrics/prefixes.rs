//! KV requests and their bytes, and the hub's watchers and the events sent them, by key prefix
//! (`metrics.prefix_depth`): who does what to which part of the keyspace, e.g.
//! `/registry/pods/` against `/registry/events/` under kube-apiserver. The prefix is the request's first key (as etcd sees it: inside the caller's
//! namespace) up to its `prefix_depth`-th `/`, a leading `/` not counted; a key with fewer
//! segments counts up to its last `/` (the empty label: no `/` at all). Labels are bounded by
//! `metrics.max_prefixes`; later prefixes count as "other".

use crate::config::MetricsConfig;
use crate::describe::Describe;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use prost::Message;
use std::collections::HashSet;
use std::sync::Mutex;

/// The label of the prefixes beyond `metrics.max_prefixes`.
const OTHER: &str = "other";

#[derive(Clone)]
pub struct PrefixMetrics {
    requests: IntCounterVec,
    bytes: IntCounterVec,
    watchers: IntGaugeVec,
    watch_events: IntCounterVec,
    depth: usize,
    max: usize,
    labeled: std::sync::Arc<Mutex<HashSet<String>>>,
}

/// A request's prefix label, for counting its response.
pub struct Prefix {
    label: String,
    bytes: IntCounterVec,
}

impl Prefix {
    /// Counts the response to the request, of `bytes`.
    pub fn response(&self, method: &str, bytes: usize) {
        count_bytes(&self.bytes, &self.label, method, "out", bytes);
    }
}

/// A watcher's place in the key-prefix metrics: counted among its prefix's watchers until it is
/// dropped, with the events sent to it.
pub struct WatchedPrefix {
    watchers: IntGauge,
    events: IntCounter,
}

impl WatchedPrefix {
    /// Counts `events` sent to the watcher.
    pub fn sent(&self, events: usize) {
        if events > 0 {
            self.events.inc_by(events as u64);
        }
    }
}

impl Drop for WatchedPrefix {
    fn drop(&mut self) {
        self.watchers.dec();
    }
}

fn count_bytes(counter: &IntCounterVec, label: &str, method: &str, direction: &str, n: usize) {
    counter
        .with_label_values(&[label, method, direction])
        .inc_by(n as u64);
}

impl PrefixMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "keygate_prefix_requests_total",
                "KV requests (Range, Put, DeleteRange, Txn) by the prefix of their first key \
                 and method (metrics.prefix_depth).",
            ),
            &["prefix", "method"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "keygate_prefix_message_bytes_total",
                "Message bytes of KV requests (in) and their responses (out), by the prefix of \
                 the first key and method.",
            ),
            &["prefix", "method", "direction"],
        )?;
        let watchers = IntGaugeVec::new(
            Opts::new(
                "keygate_prefix_watchers",
                "Watchers served by the hub, by the prefix of their key.",
            ),
            &["prefix"],
        )?;
        let watch_events = IntCounterVec::new(
            Opts::new(
                "keygate_prefix_watch_events_total",
                "Events sent to the hub's watchers, by the prefix of the watcher's key.",
            ),
            &["prefix"],
        )?;
        r.register(Box::new(requests.clone()))?;
        r.register(Box::new(bytes.clone()))?;
        r.register(Box::new(watchers.clone()))?;
        r.register(Box::new(watch_events.clone()))?;
        Ok(PrefixMetrics {
            requests,
            bytes,
            watchers,
            watch_events,
            depth: 0,
            max: 0,
            labeled: Default::default(),
        })
    }

    /// Applies `metrics.prefix_depth` and `metrics.max_prefixes` (off until then).
    pub fn configure(&mut self, config: &MetricsConfig) {
        self.depth = config.prefix_depth;
        self.max = config.max_prefixes;
    }

    /// Counts a KV request by the prefix of its first key; the prefix, to count the response
    /// by. Nothing for other requests, or while `metrics.prefix_depth` is 0.
    pub fn request<T: Describe + Message>(&self, method: &str, request: &T) -> Option<Prefix> {
        if self.depth == 0 {
            return None;
        }
        let label = self.label(request.first_key()?);
        self.requests.with_label_values(&[&label, method]).inc();
        count_bytes(&self.bytes, &label, method, "in", request.encoded_len());
        Some(Prefix {
            label,
            bytes: self.bytes.clone(),
        })
    }

    /// Counts a watch creation by the prefix of its key (as etcd sees it: inside the caller's
    /// namespace), and the watcher among its prefix's until the returned place is dropped.
    pub fn watcher(&self, key: &[u8]) -> Option<WatchedPrefix> {
        if self.depth == 0 {
            return None;
        }
        let label = self.label(key);
        self.requests.with_label_values(&[&label, "Watch"]).inc();
        let watchers = self.watchers.with_label_values(&[&label]);
        watchers.inc();
        Some(WatchedPrefix {
            watchers,
            events: self.watch_events.with_label_values(&[&label]),
        })
    }

    fn label(&self, key: &[u8]) -> String {
        let prefix = prefix_of(key, self.depth).escape_ascii().to_string();
        let Ok(mut labeled) = self.labeled.lock() else {
            return OTHER.into();
        };
        if labeled.contains(&prefix) {
            return prefix;
        }
        if labeled.len() >= self.max {
            return OTHER.into();
        }
        labeled.insert(prefix.clone());
        prefix
    }
}

/// `key` up to and including its `depth`-th `/` (a leading `/` not counted), or up to its last
/// `/` when it has fewer.
fn prefix_of(key: &[u8], depth: usize) -> &[u8] {
    let mut end = 0;
    let mut seen = 0;
    for (i, byte) in key.iter().enumerate().skip(1) {
        if *byte == b'/' {
            end = i + 1;
            seen += 1;
            if seen == depth {
                break;
            }
        }
    }
    &key[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cut_at_the_configured_segment() {
        let key = b"/registry/pods/default/web-0";
        assert_eq!(prefix_of(key, 1), b"/registry/");
        assert_eq!(prefix_of(key, 2), b"/registry/pods/");
        assert_eq!(prefix_of(key, 9), b"/registry/pods/default/");
        assert_eq!(prefix_of(b"a/b/c", 1), b"a/");
        assert_eq!(prefix_of(b"/top", 2), b"");
        assert_eq!(prefix_of(b"plain", 1), b"");
        assert_eq!(prefix_of(b"", 1), b"");
    }

    #[test]
    fn labels_are_bounded_and_escaped() {
        let mut m = PrefixMetrics::register(&Registry::new()).expect("register");
        m.configure(&MetricsConfig {
            prefix_depth: 1,
            max_prefixes: 2,
        });
        assert_eq!(m.label(b"/a/1"), "/a/");
        assert_eq!(m.label(b"/\xff/1"), "/\\xff/");
        assert_eq!(m.label(b"/c/1"), OTHER);
        assert_eq!(m.label(b"/a/2"), "/a/");
    }
}
