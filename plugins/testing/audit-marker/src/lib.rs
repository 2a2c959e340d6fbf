//! An auditor whose records are easy to tell apart from audit-jsonl's, for keygate's reload
//! tests: one `{"marker": "audit-marker", "method": ..., "key": ...}` per event. It accepts any
//! configuration, since the test swaps it in for audit-jsonl under audit-jsonl's.

use keygate_plugin_sdk::auditor::{export_auditor, AuditEvent, Guest};

#[derive(serde::Serialize)]
struct Record<'a> {
    marker: &'static str,
    method: &'a str,
    key: String,
}

struct AuditMarker;

impl Guest for AuditMarker {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn on_batch(events: Vec<AuditEvent>) -> Vec<String> {
        events
            .iter()
            .map(|e| Record {
                marker: "audit-marker",
                method: e.request.operation.name(),
                key: (e.request.ranges.first())
                    .map(|r| String::from_utf8_lossy(&r.key).into_owned())
                    .unwrap_or_default(),
            })
            // Serializing plain strings cannot fail.
            .map(|r| serde_json::to_string(&r).unwrap_or_default())
            .collect()
    }
}

export_auditor!(AuditMarker);
