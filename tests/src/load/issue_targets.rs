//! The targets of keygate's issues beside what this run measured, as rows for the text
//! summary and the Markdown section.

use std::fmt::Write as _;

use super::report::ModeReport;

/// One target of keygate's issues with what this run measured.
pub struct TargetRow {
    pub issue: &'static str,
    pub what: String,
    pub goal: String,
    pub proxy: String,
    pub keygate: String,
    pub status: String,
}

fn find<'a>(reports: &'a [ModeReport], mode: &str) -> Option<&'a ModeReport> {
    reports.iter().find(|r| r.mode == mode)
}

/// The targets of issues 2, 6 and 7 next to this run's figures.
pub fn targets_table(reports: &[ModeReport]) -> Vec<TargetRow> {
    let mut rows = Vec::new();
    let fmt_ratio = |r: Option<f64>| {
        r.map(|r| format!("{r:.2}×"))
            .unwrap_or_else(|| "not measured".into())
    };
    // Throughput ratio vs etcd of `target` in `mode`.
    let ratio = |mode: &str, target: &str| -> Option<f64> {
        let r = find(reports, mode)?;
        let (b, m) = (r.get("etcd")?, r.get(target)?);
        Some(m.ops_per_sec() / b.ops_per_sec())
    };
    let added_p50 = |mode: &str, target: &str| -> Option<f64> {
        let r = find(reports, mode)?;
        Some(r.get(target)?.p50() - r.get("etcd")?.p50())
    };
    let p99_ratio = |mode: &str, target: &str| -> Option<f64> {
        let r = find(reports, mode)?;
        Some(r.get(target)?.p99() / r.get("etcd")?.p99())
    };
    let cpu_ratio = |mode: &str, target: &str| -> Option<f64> {
        let r = find(reports, mode)?;
        Some(r.get(target)?.cpu_per_op() / r.get("etcd")?.cpu_per_op())
    };
    // The watch mode's check when it ran at issue #7's scale (`--watchers 100000
    // --watch-streams 1000`).
    let big_watch = |target: &str| {
        let w = find(reports, "watch")?.get(target)?.watch.as_ref()?;
        (w.watchers >= 100_000 && w.streams >= 1_000).then_some(w)
    };
    let status = |v: Option<f64>, ok: &dyn Fn(f64) -> bool| match v {
        None => "not measured".to_string(),
        Some(v) if ok(v) => "met".to_string(),
        Some(_) => "**missed**".to_string(),
    };
    // Issue #2's targets are for pure forwarding: judged on keygate-no-mirror, with the
    // default keygate (mirror on) shown beside it.
    let fmt_us = |v: Option<f64>| {
        v.map(|v| format!("{v:+.0} µs"))
            .unwrap_or_else(|| "not measured".into())
    };
    for (mode, issue_ref) in [("put", "0.50×"), ("get-linearizable", "0.41×")] {
        let k = ratio(mode, "keygate-no-mirror");
        rows.push(TargetRow {
            issue: "#2",
            what: format!("{mode}: throughput (forwarded)"),
            goal: "≥ 0.80× etcd".into(),
            proxy: format!(
                "{} (issue: {issue_ref})",
                fmt_ratio(ratio(mode, "grpc-proxy"))
            ),
            keygate: format!(
                "no-mirror {}, mirror {}",
                fmt_ratio(k),
                fmt_ratio(ratio(mode, "keygate"))
            ),
            status: status(k, &|v| v >= 0.8),
        });
        let d = added_p50(mode, "keygate-no-mirror");
        rows.push(TargetRow {
            issue: "#2",
            what: format!("{mode}: added p50 (forwarded)"),
            goal: "≤ 150 µs".into(),
            proxy: fmt_us(added_p50(mode, "grpc-proxy")),
            keygate: format!(
                "no-mirror {}, mirror {}",
                fmt_us(d),
                fmt_us(added_p50(mode, "keygate"))
            ),
            status: status(d, &|v| v <= 150.0),
        });
    }
    let cpu_fmt = |mode: &str, t: &str| {
        cpu_ratio(mode, t)
            .map(|v| format!("{v:.2}×"))
            .unwrap_or_else(|| "not measured".into())
    };
    rows.push(TargetRow {
        issue: "#2",
        what: "put / get-linearizable: server CPU per op".into(),
        goal: "reported (no bound)".into(),
        proxy: format!(
            "{} / {}",
            cpu_fmt("put", "grpc-proxy"),
            cpu_fmt("get-linearizable", "grpc-proxy")
        ),
        keygate: format!(
            "no-mirror {} / {}, mirror {} / {}",
            cpu_fmt("put", "keygate-no-mirror"),
            cpu_fmt("get-linearizable", "keygate-no-mirror"),
            cpu_fmt("put", "keygate"),
            cpu_fmt("get-linearizable", "keygate")
        ),
        status: "-".into(),
    });
    for (mode, goal, issue_ref) in [
        ("get-serializable", 3.0, "1.29×"),
        ("get-linearizable", 2.0, "0.41×"),
        ("list-serializable", 5.0, "2.19×"),
        ("list-linearizable", 4.0, "0.46×"),
    ] {
        let k = ratio(mode, "keygate");
        rows.push(TargetRow {
            issue: "#6",
            what: format!("{mode}: throughput"),
            goal: format!("≥ {goal:.0}× etcd"),
            proxy: format!(
                "{} (issue: {issue_ref})",
                fmt_ratio(ratio(mode, "grpc-proxy"))
            ),
            keygate: fmt_ratio(k),
            status: status(k, &|v| v >= goal),
        });
        let p = p99_ratio(mode, "keygate");
        rows.push(TargetRow {
            issue: "#6",
            what: format!("{mode}: p99"),
            goal: "≤ etcd's p99".into(),
            proxy: fmt_ratio(p99_ratio(mode, "grpc-proxy")),
            keygate: fmt_ratio(p),
            status: status(p, &|v| v <= 1.0),
        });
    }
    let c = cpu_ratio("get-serializable", "keygate");
    rows.push(TargetRow {
        issue: "#6",
        what: "get-serializable: server CPU per op".into(),
        goal: "≤ 0.25× etcd".into(),
        proxy: cpu_fmt("get-serializable", "grpc-proxy"),
        keygate: fmt_ratio(c),
        status: status(c, &|v| v <= 0.25),
    });
    rows.push(TargetRow {
        issue: "#6",
        what: "mirror memory with 1,000,000 keys".into(),
        goal: "≤ 2× raw bytes".into(),
        proxy: "-".into(),
        keygate: "not measured".into(),
        status: "not measured".into(),
    });
    let watch = find(reports, "watch");
    let wcheck = |t: &str| {
        watch
            .and_then(|r| r.get(t))
            .and_then(|m| m.watch.clone())
            .map(|w| (w.missed, w.duplicated, w.out_of_order, w.canceled))
    };
    let p = p99_ratio("watch", "keygate");
    rows.push(TargetRow {
        issue: "#7",
        what: "watch fan-out: put-to-receipt p99".into(),
        goal: "≤ etcd's p99".into(),
        proxy: fmt_ratio(p99_ratio("watch", "grpc-proxy")),
        keygate: fmt_ratio(p),
        status: status(p, &|v| v <= 1.0),
    });
    let fmt_w = |w: Option<(u64, u64, u64, u64)>| {
        w.map(|(m, d, o, c)| format!("{m} / {d} / {o} / {c}"))
            .unwrap_or_else(|| "not measured".into())
    };
    let kw = wcheck("keygate");
    rows.push(TargetRow {
        issue: "#7",
        what: "watch fan-out: missed / duplicated / out-of-order / canceled".into(),
        goal: "0 / 0 / 0 / 0".into(),
        proxy: fmt_w(wcheck("grpc-proxy")),
        keygate: fmt_w(kw),
        status: match kw {
            None => "not measured".into(),
            Some((0, 0, 0, 0)) => "met".into(),
            Some(_) => "**missed**".into(),
        },
    });
    rows.push(TargetRow {
        issue: "#7",
        what: "100,000 watchers over 1,000 streams: memory per watcher".into(),
        goal: "≤ 1 KiB/watcher + buffers".into(),
        proxy: big_watch("grpc-proxy")
            .map(|w| format!("{:.0} B/watcher", w.rss_bytes_per_watcher))
            .unwrap_or_else(|| "-".into()),
        keygate: big_watch("keygate")
            .map(|w| {
                let streams = w
                    .etcd_streams
                    .map(|n| format!(", etcd serving {n} watch stream(s)"))
                    .unwrap_or_default();
                format!("{:.0} B/watcher{streams}", w.rss_bytes_per_watcher)
            })
            .unwrap_or_else(|| "not measured".into()),
        status: match big_watch("keygate") {
            None => "not measured".into(),
            Some(w)
                if w.rss_bytes_per_watcher <= 1024.0
                    && w.missed + w.duplicated + w.out_of_order + w.canceled == 0
                    && w.etcd_streams.is_none_or(|n| n == 1) =>
            {
                "met".into()
            }
            Some(_) => "**missed**".into(),
        },
    });
    let k = ratio("mixed", "keygate");
    rows.push(TargetRow {
        issue: "#7",
        what: "mixed kube-like load: throughput".into(),
        goal: "≥ 1.5× etcd".into(),
        proxy: format!("{} (issue: 0.64×)", fmt_ratio(ratio("mixed", "grpc-proxy"))),
        keygate: fmt_ratio(k),
        status: status(k, &|v| v >= 1.5),
    });
    rows
}

pub fn targets_text(rows: &[TargetRow]) -> String {
    let mut out = String::from("\n== targets of issues 2, 6, 7 (keygate vs etcd directly)\n");
    for r in rows {
        let _ = writeln!(
            out,
            "{:<3} {:<62} goal {:<26} grpc-proxy {:<26} keygate {:<14} {}",
            r.issue,
            r.what,
            r.goal,
            r.proxy,
            r.keygate,
            r.status.replace("**", "")
        );
    }
    out
}
