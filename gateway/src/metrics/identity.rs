//! keygate_requests_by_identity_total and keygate_tls_*: who calls, and how TLS handshakes
//! and certificate reloads go. Identity names are capped so a flood of distinct callers
//! cannot grow the registry without bound.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The series a thread counted last, and whose metrics it belongs to.
struct Last {
    metrics: usize,
    source: &'static str,
    name: String,
    counter: IntCounter,
}

thread_local! {
    static LAST: RefCell<Option<Last>> = const { RefCell::new(None) };
}

#[derive(Clone)]
pub struct IdentityMetrics {
    /// Requests by identity source (certificate, etcd_token, bearer, anonymous) and name.
    requests: IntCounterVec,
    /// TLS handshakes on the client port by result (ok, failed, timeout).
    pub tls_handshakes: IntCounterVec,
    names: Arc<Mutex<HashSet<String>>>,
    cap: usize,
}

impl IdentityMetrics {
    pub fn register(r: &Registry, cap: usize) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "keygate_requests_by_identity_total",
                "gRPC requests by the caller's identity source and name (names past the cap count as \"other\").",
            ),
            &["identity_source", "identity"],
        )?;
        r.register(Box::new(requests.clone()))?;
        let tls_handshakes = IntCounterVec::new(
            Opts::new(
                "keygate_tls_handshakes_total",
                "TLS handshakes on the client port by result.",
            ),
            &["result"],
        )?;
        r.register(Box::new(tls_handshakes.clone()))?;
        Ok(Self {
            requests,
            tls_handshakes,
            names: Arc::new(Mutex::new(HashSet::new())),
            cap,
        })
    }

    /// Counts one request; a name beyond the first `cap` distinct ones is labelled "other".
    /// The series last counted on this thread is remembered: callers repeat.
    pub fn request(&self, source: &'static str, name: &str) {
        let me = Arc::as_ptr(&self.names) as usize;
        let hit = LAST.with(|last| {
            let last = last.borrow();
            match &*last {
                Some(l) if l.metrics == me && l.source == source && l.name == name => {
                    l.counter.inc();
                    true
                }
                _ => false,
            }
        });
        if hit {
            return;
        }
        let counter = self.series(source, name);
        counter.inc();
        LAST.with(|last| {
            *last.borrow_mut() = Some(Last {
                metrics: me,
                source,
                name: name.to_string(),
                counter,
            })
        });
    }

    fn series(&self, source: &str, name: &str) -> IntCounter {
        let admitted = {
            let mut names = match self.names.lock() {
                Ok(n) => n,
                Err(poisoned) => poisoned.into_inner(),
            };
            if names.contains(name) {
                true
            } else if names.len() < self.cap {
                names.insert(name.to_string());
                true
            } else {
                false
            }
        };
        let label = if admitted { name } else { "other" };
        self.requests.with_label_values(&[source, label])
    }
}
