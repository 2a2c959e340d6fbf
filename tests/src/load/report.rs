//! One target's figures for one mode, and the per-mode tables: absolute figures and ratios
//! against etcd directly, as text and as Markdown.

use std::fmt::Write as _;

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
    pub watchers: u64,
    pub streams: u64,
    /// Resident memory the target's processes grew by while the watchers were created,
    /// divided by the watchers.
    pub rss_bytes_per_watcher: f64,
    /// The watch streams etcd served while the watchers were open (not read with --tls).
    pub etcd_streams: Option<u64>,
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
