//! The run's Markdown section: what was run where, the issue targets and every mode's table,
//! written between loadgen's markers in a results file.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::issue_targets::TargetRow;
use super::report::ModeReport;

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
    /// Which client the request modes used.
    pub client: &'static str,
    pub duration: f64,
    pub warmup: f64,
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
        "- {} clients over {} HTTP/2 connections per target ({}); {:.0} s warm-up, then {:.0} s measured per mode and target; targets run one after another against the same cluster",
        info.clients, info.conns, info.client, info.warmup, info.duration
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
