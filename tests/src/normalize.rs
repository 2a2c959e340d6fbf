//! Normalizing etcdctl output so runs against two different clusters compare equal exactly
//! when they should: ids, addresses, timings and terms are masked; keys, values, revisions,
//! counts, flags and error messages are kept.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

use crate::CmdOutput;

/// JSON fields that name a member, cluster, lease or raft term, or measure a size: they differ
/// between two clusters doing the same thing.
const MASKED_FIELDS: &[&str] = &[
    "cluster_id",
    "member_id",
    "raft_term",
    "ID",
    "id",
    "lease",
    "leader",
    "raftTerm",
    "raftIndex",
    "raftAppliedIndex",
    "dbSize",
    "dbSizeInUse",
    "took",
];

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).unwrap_or_else(|e| panic!("bad regex {pattern}: {e}")))
}

/// Masks what legitimately differs between two targets in one line of text.
pub fn normalize_text(text: &str) -> String {
    static ADDR: OnceLock<Regex> = OnceLock::new();
    static HEX_ID: OnceLock<Regex> = OnceLock::new();
    static TOOK: OnceLock<Regex> = OnceLock::new();
    static REMAINING: OnceLock<Regex> = OnceLock::new();
    static FIELDS: OnceLock<Regex> = OnceLock::new();
    static ATTACHED: OnceLock<Regex> = OnceLock::new();
    let text = re(&ADDR, r"(https?://)?127\.0\.0\.1:\d+").replace_all(text, "<addr>");
    // Lease ids print as %016x, lock and election keys end in them as %x.
    let text = re(&HEX_ID, r"\b[0-9a-f]{12,16}\b").replace_all(&text, "<id>");
    let text = re(&TOOK, r"took = [0-9.]+[a-zµ]+").replace_all(&text, "took = <t>");
    // `-w fields` output.
    let text = re(&FIELDS, r#""(ClusterID|MemberID|RaftTerm|Lease)" : \d+"#)
        .replace_all(&text, "\"$1\" : <masked>");
    // etcd lists a lease's keys from a Go map: in no particular order.
    let text = re(&ATTACHED, r"attached keys\(\[([^\]]*)\]\)").replace_all(
        &text,
        |c: &regex::Captures| {
            let mut keys: Vec<&str> = c[1].split(' ').collect();
            keys.sort_unstable();
            format!("attached keys([{}])", keys.join(" "))
        },
    );
    // A lease's remaining TTL ticks while the two runs happen one after the other.
    re(&REMAINING, r"remaining\(\d+s\)")
        .replace_all(&text, "remaining(<ttl>)")
        .into_owned()
}

/// Masks ids and sizes in a JSON document (recursively).
pub fn normalize_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if MASKED_FIELDS.contains(&k.as_str()) && !v.is_object() && !v.is_array() {
                    *v = Value::String("<masked>".into());
                } else if k == "Endpoint" {
                    *v = Value::String("<addr>".into());
                } else {
                    normalize_json(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_json),
        Value::String(s) => *s = normalize_text(s),
        _ => {}
    }
}

/// Normalizes a whole stdout: each line that is JSON is normalized as JSON, others as text.
pub fn normalize_stdout(stdout: &str) -> String {
    stdout
        .lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(mut v) if v.is_object() || v.is_array() => {
                normalize_json(&mut v);
                v.to_string()
            }
            _ => normalize_text(line),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Keeps only what etcdctl tells the user on stderr (`Error: ...` and watch cancellations),
/// dropping the client library's timestamped zap log lines.
pub fn normalize_stderr(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with('{'))
        .map(normalize_text)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Normalizes a whole command result.
pub fn normalize(out: &CmdOutput) -> CmdOutput {
    CmdOutput {
        code: out.code,
        stdout: normalize_stdout(&out.stdout),
        stderr: normalize_stderr(&out.stderr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_ids_addresses_and_timings_only() {
        assert_eq!(
            normalize_text(
                "127.0.0.1:2379 is healthy: successfully committed proposal: took = 1.4ms"
            ),
            "<addr> is healthy: successfully committed proposal: took = <t>"
        );
        assert_eq!(
            normalize_text("lease 7d7ba20d21c3600a granted with TTL(60s), remaining(59s)"),
            "lease <id> granted with TTL(60s), remaining(<ttl>)"
        );
        assert_eq!(normalize_text("mylock/7d7ba20d21c36012"), "mylock/<id>");
        assert_eq!(normalize_text("mylock/66fa20d23853c09"), "mylock/<id>");
        assert_eq!(
            normalize_text("attached keys([b a])"),
            "attached keys([a b])"
        );
        assert_eq!(normalize_text("foo 12 bar"), "foo 12 bar");
        let a = normalize_stdout(
            r#"{"header":{"cluster_id":1,"member_id":2,"revision":3,"raft_term":2},"count":1}"#,
        );
        let b = normalize_stdout(
            r#"{"header":{"cluster_id":9,"member_id":8,"revision":3,"raft_term":3},"count":1}"#,
        );
        assert_eq!(a, b);
        let c = normalize_stdout(
            r#"{"header":{"cluster_id":9,"member_id":8,"revision":4,"raft_term":3},"count":1}"#,
        );
        assert_ne!(a, c, "revisions must still be compared");
    }
}
