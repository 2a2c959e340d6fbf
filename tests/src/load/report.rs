//! Tables: per mode with absolute figures and ratios against etcd directly, and the targets
//! of keygate's issues beside what was measured; as text and as Markdown.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

use super::workload::new_hist;

/// Watch fan-out's delivery check.
#[derive(Clone, Debug, Default)]
pub struct WatchCheck {
    pub puts: u64,
    pub expected: u64,
    pub missed: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub canceled: u64,
}

/// One target's figures for one mode.
pub struct Measure {
    pub target: String,
    pub hist: Histogram<u64>,
    pub ops: u64,
    pub secs: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub server_cpu_s: f64,
    /// The proxy process's share of `server_cpu_s`.
    pub proxy_cpu_s: f64,
    pub client_cpu_s: f64,
    pub machine_busy_pct: Option<f64>,
    pub notes: String,
    pub failed: Option<String>,
    pub watch: Option<WatchCheck>,
}

impl Measure {
    pub fn new(target: &str) -> Self {
        Self {
            target: target.to_string(),
            hist: new_hist(),
            ops: 0,
            secs: 0.0,
            errors: 0,
            first_error: None,
            server_cpu_s: 0.0,
            proxy_cpu_s: 0.0,
            client_cpu_s: 0.0,
            machine_busy_pct: None,
            notes: String::new(),
            failed: None,
            watch: None,
        }
    }

    pub fn failed(target: &str, why: String) -> Self {
        let mut m = Self::new(target);
        m.failed = Some(why);
        m
    }

    pub fn ok(&self) -> bool {
        self.failed.is_none() && self.ops > 0
    }

    pub fn ops_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }

    pub fn p50(&self) -> f64 {
        self.hist.value_at_quantile(0.50) as f64
    }

    pub fn p99(&self) -> f64 {
        self.hist.value_at_quantile(0.99) as f64
    }

    /// Whole server-side CPU per operation, µs.
    pub fn cpu_per_op(&self) -> f64 {
        if self.ops > 0 {
            self.server_cpu_s * 1e6 / self.ops as f64
        } else {
            f64::NAN
        }
    }

    /// The proxy process's CPU per operation, µs.
    pub fn proxy_cpu_per_op(&self) -> f64 {
        if self.ops > 0 {
            self.proxy_cpu_s * 1e6 / self.ops as f64
        } else {
            f64::NAN
        }
    }

    pub fn one_line(&self) -> String {
        if let Some(f) = &self.failed {
            return format!("{:<17} FAILED: {f}", self.target);
        }
        format!(
            "{:<17} {:>9.0} ops/s  p50 {:>7.0} µs  p99 {:>8.0} µs  errors {}  server CPU {:.1} µs/op (proxy {:.1}){}",
            self.target,
            self.ops_per_sec(),
            self.p50(),
            self.p99(),
            self.errors,
            self.cpu_per_op(),
            self.proxy_cpu_per_op(),
            self.first_error
                .as_ref()
                .map(|e| format!("  (first error: {e})"))
                .unwrap_or_default()
        )
    }
}

/// One mode's rows.
pub struct ModeReport {
    pub mode: String,
    pub description: String,
    pub rows: Vec<Measure>,
}

/// What the Markdown header says about the run.
pub struct RunInfo {
    pub date: String,
    pub command: String,
    pub machine: String,
    pub etcd_version: String,
    pub keygate_bin: String,
    pub members: usize,
    pub clients: usize,
    pub conns: usize,
    pub duration: f64,
    pub warmup: f64,
}

const HEAD: [&str; 13] = [
    "target",
    "ops/s",
    "p50 µs",
    "p99 µs",
    "errors",
    "server CPU µs/op",
    "of which proxy",
    "× etcd ops/s",
    "+ p50 µs",
    "× etcd p99",
    "× etcd CPU/op",
    "client CPU %",
    "machine busy %",
];

impl ModeReport {
    pub fn new(mode: &str, description: String) -> Self {
        Self {
            mode: mode.to_string(),
            description,
            rows: Vec::new(),
        }
    }

    pub fn get(&self, target: &str) -> Option<&Measure> {
        self.rows.iter().find(|m| m.target == target && m.ok())
    }

    fn cells(&self) -> Vec<Vec<String>> {
        let base = self.get("etcd");
        self.rows
            .iter()
            .map(|m| {
                if let Some(f) = &m.failed {
                    let mut row = vec![m.target.clone(), format!("FAILED: {}", one_line(f, 160))];
                    row.resize(HEAD.len(), String::new());
                    return row;
                }
                let ratio = |a: f64, b: f64| {
                    if b > 0.0 && a.is_finite() && b.is_finite() {
                        format!("{:.2}×", a / b)
                    } else {
                        "-".into()
                    }
                };
                let (r_ops, d_p50, r_p99, r_cpu) = match base {
                    Some(b) if m.ok() => (
                        ratio(m.ops_per_sec(), b.ops_per_sec()),
                        format!("{:+.0}", m.p50() - b.p50()),
                        ratio(m.p99(), b.p99()),
                        ratio(m.cpu_per_op(), b.cpu_per_op()),
                    ),
                    _ => ("-".into(), "-".into(), "-".into(), "-".into()),
                };
                vec![
                    m.target.clone(),
                    format!("{:.0}", m.ops_per_sec()),
                    format!("{:.0}", m.p50()),
                    format!("{:.0}", m.p99()),
                    m.errors.to_string(),
                    format!("{:.1}", m.cpu_per_op()),
                    if m.target == "etcd" {
                        "-".into()
                    } else {
                        format!("{:.1}", m.proxy_cpu_per_op())
                    },
                    r_ops,
                    d_p50,
                    r_p99,
                    r_cpu,
                    if m.secs > 0.0 {
                        format!("{:.0}", 100.0 * m.client_cpu_s / m.secs)
                    } else {
                        "-".into()
                    },
                    m.machine_busy_pct
                        .map(|p| format!("{p:.0}"))
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect()
    }

    fn footnotes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for m in &self.rows {
            if !m.notes.is_empty() {
                notes.push(format!("{}: {}", m.target, m.notes));
            }
            if let (Some(e), None) = (&m.first_error, &m.failed) {
                notes.push(format!("{}: first error: {}", m.target, one_line(e, 200)));
            }
        }
        notes
    }

    pub fn text_table(&self) -> String {
        let mut rows = vec![HEAD.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
        rows.extend(self.cells());
        let widths: Vec<usize> = (0..HEAD.len())
            .map(|c| {
                rows.iter()
                    .filter(|r| !r[1].starts_with("FAILED"))
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = format!("\n== {} — {}\n", self.mode, self.description);
        for r in &rows {
            if r[1].starts_with("FAILED") {
                let _ = writeln!(out, "{:<w$}  {}", r[0], r[1], w = widths[0]);
                continue;
            }
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(c, s)| {
                    if c == 0 {
                        format!("{s:<w$}", w = widths[c])
                    } else {
                        format!("{s:>w$}", w = widths[c])
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", line.join("  "));
        }
        for n in self.footnotes() {
            let _ = writeln!(out, "  * {n}");
        }
        out
    }

    pub fn markdown_table(&self) -> String {
        let mut out = format!("### {}\n\n{}.\n\n", self.mode, self.description);
        let _ = writeln!(out, "| {} |", HEAD.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            HEAD.iter()
                .enumerate()
                .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
                .collect::<String>()
        );
        for r in self.cells() {
            let r: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }
        let notes = self.footnotes();
        if !notes.is_empty() {
            out.push('\n');
            for n in notes {
                let _ = writeln!(out, "- {}", n.replace('|', "\\|"));
            }
        }
        out
    }
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.replace('\n', " ⏎ ");
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max).collect::<String>())
    } else {
        s
    }
}

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
    let status = |v: Option<f64>, ok: &dyn Fn(f64) -> bool| match v {
        None => "not measured".to_string(),
        Some(v) if ok(v) => "met".to_string(),
        Some(_) => "**missed**".to_string(),
    };
    for (mode, issue_ref) in [("put", "0.50×"), ("get-linearizable", "0.41×")] {
        let k = ratio(mode, "keygate");
        rows.push(TargetRow {
            issue: "#2",
            what: format!("{mode}: throughput"),
            goal: "≥ 0.80× etcd".into(),
            proxy: format!(
                "{} (issue: {issue_ref})",
                fmt_ratio(ratio(mode, "grpc-proxy"))
            ),
            keygate: fmt_ratio(k),
            status: status(k, &|v| v >= 0.8),
        });
        let d = added_p50(mode, "keygate");
        rows.push(TargetRow {
            issue: "#2",
            what: format!("{mode}: added p50"),
            goal: "≤ 150 µs".into(),
            proxy: added_p50(mode, "grpc-proxy")
                .map(|v| format!("{v:+.0} µs"))
                .unwrap_or_else(|| "not measured".into()),
            keygate: d
                .map(|v| format!("{v:+.0} µs"))
                .unwrap_or_else(|| "not measured".into()),
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
            "{} / {}",
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
        proxy: "-".into(),
        keygate: "not measured".into(),
        status: "not measured".into(),
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

pub const BEGIN: &str = "<!-- loadgen:begin -->";
pub const END: &str = "<!-- loadgen:end -->";

pub fn markdown(info: &RunInfo, reports: &[ModeReport], targets: &[TargetRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(out, "## Results of {}\n", info.date);
    let _ = writeln!(out, "- Command: `{}`", info.command);
    let _ = writeln!(out, "- Machine: {}", info.machine);
    let _ = writeln!(
        out,
        "- etcd {} ({} member{}, `--unsafe-no-fsync`, on loopback); keygate binary `{}`",
        info.etcd_version,
        info.members,
        if info.members == 1 { "" } else { "s" },
        info.keygate_bin
    );
    let _ = writeln!(
        out,
        "- {} clients over {} HTTP/2 connections per target; {:.0} s warm-up, then {:.0} s measured per mode and target; targets run one after another against the same cluster",
        info.clients, info.conns, info.warmup, info.duration
    );
    let _ = writeln!(
        out,
        "- server CPU µs/op = utime+stime of every server process of the target (etcd members, plus grpc-proxy or keygate) over the measured window, divided by operations; \"of which proxy\" = the grpc-proxy or keygate process alone; client CPU % = the load generator's own CPU; machine busy % = all CPUs, 100 = every core busy\n"
    );
    let _ = writeln!(out, "### Targets from the issues\n");
    let _ = writeln!(
        out,
        "| issue | what | target | grpc-proxy (this run) | keygate (this run) | status |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for r in targets {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.issue, r.what, r.goal, r.proxy, r.keygate, r.status
        );
    }
    out.push('\n');
    for r in reports {
        out.push_str(&r.markdown_table());
        out.push('\n');
    }
    let _ = writeln!(out, "{END}");
    out
}

/// Replaces the loadgen section of `path` (or appends one, or creates the file).
pub fn write_markdown(path: &Path, section: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => {
            format!(
                "{}{}{}",
                &old[..b],
                section.trim_end(),
                &old[e + END.len()..]
            )
        }
        _ if old.is_empty() => format!("# keygate benchmarks\n\n{section}"),
        _ => format!("{}\n\n{section}", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}
