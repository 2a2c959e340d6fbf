//! Comparing recorded streams: etcd's and keygate's response by response, and each against
//! etcd's own history (ordered, unique, reliable, atomic, prev_kv, bookmarkable).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use keygate_proto::etcdserverpb::WatchResponse;
use keygate_proto::mvccpb::Event;
use keygate_tests::watch_record::{is_progress_notify, masked, revision};

use super::watchers::Spec;

pub fn show(r: &WatchResponse) -> String {
    let evs: Vec<String> = r
        .events
        .iter()
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            format!(
                "{}{}@{}{}",
                if e.r#type == 0 { "PUT " } else { "DEL " },
                String::from_utf8_lossy(&kv.key),
                kv.mod_revision,
                if e.prev_kv.is_some() { "+prev" } else { "" }
            )
        })
        .collect();
    format!(
        "{{id {} rev {}{}{}{}{}{} [{}]}}",
        r.watch_id,
        revision(r),
        if r.created { " created" } else { "" },
        if r.canceled { " canceled" } else { "" },
        if r.compact_revision != 0 {
            format!(" compact {}", r.compact_revision)
        } else {
            String::new()
        },
        if r.cancel_reason.is_empty() {
            String::new()
        } else {
            format!(" reason {:?}", r.cancel_reason)
        },
        if r.fragment { " fragment" } else { "" },
        evs.join(", ")
    )
}

/// Responses by watch id (created responses go under the id they announce), periodic
/// progress notifications left out.
pub fn by_id(resps: &[WatchResponse]) -> BTreeMap<i64, Vec<WatchResponse>> {
    let mut out: BTreeMap<i64, Vec<WatchResponse>> = BTreeMap::new();
    for r in resps.iter().filter(|r| !is_progress_notify(r)) {
        out.entry(r.watch_id).or_default().push(masked(r.clone()));
    }
    out
}

/// Compares two recorded streams watcher by watcher, response by response; the differences.
///
/// One allowance: a run of consecutive event responses on one side may equal a single
/// response on the other carrying the same events. etcd batches several revisions into one
/// response for a watcher it had to set aside (its stream's send buffer was full, as happens
/// on a loaded machine), and so may keygate for a watcher it catches up from its window;
/// which responses get batched depends on timing, not on the request. The events themselves,
/// their order, and each response's header revision covering its events still must match.
pub fn compare_exact(what: &str, etcd: &[WatchResponse], gw: &[WatchResponse]) -> Vec<String> {
    let (e, g) = (by_id(etcd), by_id(gw));
    let mut out = Vec::new();
    for id in e.keys().chain(g.keys()).collect::<BTreeSet<_>>() {
        let (ev, gv) = (
            e.get(id).cloned().unwrap_or_default(),
            g.get(id).cloned().unwrap_or_default(),
        );
        if let Err((at_e, at_g)) = align(&ev, &gv) {
            out.push(format!(
                "{what} watch id {id}: {} responses from etcd, {} from keygate; first \
                 difference at #{at_e} / #{at_g}:\n    etcd:    {}\n    keygate: {}",
                ev.len(),
                gv.len(),
                ev.get(at_e).map_or("<none>".into(), show),
                gv.get(at_g).map_or("<none>".into(), show),
            ));
        }
    }
    out
}

/// A plain event response: one that batching may split or merge.
fn mergeable(r: &WatchResponse) -> bool {
    let last = r.events.last().and_then(|e| e.kv.as_ref());
    !r.created
        && !r.canceled
        && !r.fragment
        && r.compact_revision == 0
        && last.is_some_and(|kv| revision(r) >= kv.mod_revision)
}

/// Walks both sides in step; where they differ, merges consecutive plain event responses on
/// the side that has fewer events so far until both carry the same events. The positions of
/// the first difference that merging cannot explain.
fn align(e: &[WatchResponse], g: &[WatchResponse]) -> Result<(), (usize, usize)> {
    let (mut i, mut j) = (0, 0);
    while i < e.len() && j < g.len() {
        if e[i] == g[j] {
            (i, j) = (i + 1, j + 1);
            continue;
        }
        let (at_e, at_g) = (i, j);
        if !mergeable(&e[i]) || !mergeable(&g[j]) {
            return Err((at_e, at_g));
        }
        let (mut ee, mut gg) = (e[i].events.clone(), g[j].events.clone());
        (i, j) = (i + 1, j + 1);
        while ee != gg {
            if ee.len() < gg.len() && gg.starts_with(&ee) && e.get(i).is_some_and(mergeable) {
                ee.extend(e[i].events.iter().cloned());
                i += 1;
            } else if gg.len() < ee.len() && ee.starts_with(&gg) && g.get(j).is_some_and(mergeable)
            {
                gg.extend(g[j].events.iter().cloned());
                j += 1;
            } else {
                return Err((at_e, at_g));
            }
        }
    }
    if i == e.len() && j == g.len() {
        Ok(())
    } else {
        Err((i, j))
    }
}

/// The watch id each spec got: the created responses in order (no spec here is refused).
pub fn assigned_ids(specs: &[Spec], resps: &[WatchResponse]) -> Result<Vec<i64>> {
    let created: Vec<&WatchResponse> = resps.iter().filter(|r| r.created).collect();
    ensure!(created.len() >= specs.len(), "missing created responses");
    Ok(created[..specs.len()].iter().map(|r| r.watch_id).collect())
}

/// Checks one side's stream against etcd's history for every spec; the violations.
pub fn check_properties(
    side: &str,
    specs: &[Spec],
    ids: &[i64],
    resps: &[WatchResponse],
    history: &[Event],
    last_rev: i64,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (spec, &id) in specs.iter().zip(ids) {
        let mine: Vec<&WatchResponse> = resps.iter().filter(|r| r.watch_id == id).collect();
        let created = mine.first().copied().context("no created response")?;
        let start = if spec.start_rev > 0 {
            spec.start_rev
        } else {
            revision(created) + 1
        };
        let expected: Vec<Event> = history
            .iter()
            .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= start))
            .filter(|e| spec.wants(e))
            .map(|e| {
                let mut e = e.clone();
                if !spec.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect();
        let mut got = Vec::new();
        let mut problems = Vec::new();
        // Atomic: a logical response (fragments merged) holds all of a revision's events.
        let mut logical: Vec<Event> = Vec::new();
        let mut progress = 0;
        for r in &mine[1..] {
            if r.canceled {
                problems.push(format!("canceled: {}", show(r)));
                continue;
            }
            if is_progress_notify(r) {
                progress += 1;
                // Bookmarkable: nothing at or below R after it, everything up to R before it.
                let rv = revision(r);
                let owed = expected
                    .iter()
                    .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision <= rv))
                    .count();
                if got.len() != owed {
                    problems.push(format!(
                        "progress notification at revision {rv} after {} events, but {owed} \
                         events up to {rv} are owed",
                        got.len()
                    ));
                }
                continue;
            }
            logical.extend(r.events.iter().cloned());
            if r.fragment {
                continue;
            }
            let mut revs: Vec<i64> = logical
                .iter()
                .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
                .collect();
            revs.dedup();
            for rv in revs {
                let have = logical
                    .iter()
                    .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision == rv))
                    .count();
                let want = expected
                    .iter()
                    .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision == rv))
                    .count();
                if have != want {
                    problems.push(format!(
                        "not atomic: revision {rv} has {want} events but a response carried \
                         {have}"
                    ));
                }
            }
            got.append(&mut logical);
        }
        // Ordered and unique.
        let keys: Vec<(i64, Bytes)> = got
            .iter()
            .filter_map(|e| e.kv.as_ref().map(|kv| (kv.mod_revision, kv.key.clone())))
            .collect();
        if keys.windows(2).any(|w| w[0].0 > w[1].0) {
            problems.push("events out of revision order".into());
        }
        if keys.iter().collect::<HashSet<_>>().len() != keys.len() {
            problems.push("duplicate events".into());
        }
        if got
            .iter()
            .any(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision > last_rev))
        {
            problems.push("events past the last write".into());
        }
        // Reliable, with the right prev_kv: exactly etcd's history for this watcher.
        if got != expected {
            let at = got
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(expected.len()));
            let brief = |e: Option<&Event>| {
                e.map_or("<none>".to_string(), |e| {
                    show(&WatchResponse {
                        events: vec![e.clone()],
                        ..Default::default()
                    })
                })
            };
            problems.push(format!(
                "{} events, {} owed by etcd's history; first difference at #{at}: got {} \
                 want {}",
                got.len(),
                expected.len(),
                brief(got.get(at)),
                brief(expected.get(at))
            ));
        }
        if spec.progress && progress < 2 {
            problems.push(format!(
                "progress_notify watcher got {progress} progress notifications over a quiet \
                 second at a 200 ms interval"
            ));
        }
        if !spec.progress && progress > 0 {
            problems.push(format!(
                "{progress} progress notifications without progress_notify"
            ));
        }
        for p in problems {
            out.push(format!("{side} {} (id {id}): {p}", spec.name));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use keygate_proto::etcdserverpb::ResponseHeader;
    use keygate_proto::mvccpb::KeyValue;

    use super::*;

    fn resp(header: i64, revs: &[i64]) -> WatchResponse {
        WatchResponse {
            header: Some(ResponseHeader {
                revision: header,
                ..Default::default()
            }),
            events: revs
                .iter()
                .map(|&r| Event {
                    kv: Some(KeyValue {
                        key: Bytes::from(format!("k{r}")),
                        mod_revision: r,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn batching_is_allowed_and_nothing_else() {
        let one_by_one = [resp(2, &[2]), resp(3, &[3]), resp(4, &[4])];
        let batched = [resp(2, &[2]), resp(4, &[3, 4])];
        assert_eq!(align(&one_by_one, &batched), Ok(()));
        assert_eq!(align(&batched, &one_by_one), Ok(()));
        // A missing event, an extra response, a header older than its events: not batching.
        assert!(align(&one_by_one, &[resp(2, &[2]), resp(4, &[4])]).is_err());
        assert!(align(&one_by_one[..2], &one_by_one).is_err());
        assert!(align(&one_by_one, &[resp(2, &[2]), resp(3, &[3, 4])]).is_err());
    }
}
