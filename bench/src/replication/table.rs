//! The human report of the `replication` workload: one row per cluster run, the medians,
//! the RF3/RF1 ratio and the targets (and the number formats other reports share).

use std::fmt::Write as _;

use super::{ClusterSummary, ReplicationReport, Spread};

pub(crate) fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) => format!("{x:.decimals$}"),
        None => "-".into(),
    }
}

pub(crate) fn fmt_spread(s: Option<&Spread>, decimals: usize) -> String {
    match s {
        Some(s) if s.min == s.max => format!("{:.decimals$}", s.median),
        Some(s) => format!(
            "{:.decimals$} ({:.decimals$}–{:.decimals$})",
            s.median, s.min, s.max
        ),
        None => "-".into(),
    }
}

/// The human report: one row per cluster run, the medians, the ratio and the targets.
pub fn table(r: &ReplicationReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== replication: RF1 (1 node) vs RF3 (3 nodes, min.insync.replicas={}), {} shard(s) per node, \
         1 topic x {} partitions, {} B records, acks=all, {} producer(s)",
        r.runs
            .iter()
            .find_map(|x| x.min_insync_replicas)
            .map_or("-".to_string(), |m| m.to_string()),
        r.cores,
        r.partitions,
        r.message_size,
        r.producers
    );
    let _ = writeln!(
        out,
        "   phases: {:.0} s warm-up + {:.0} s measured; max produce, then e2e at {} MB/s",
        r.warmup_seconds, r.duration_seconds, r.e2e_rate_mb
    );
    let _ = writeln!(
        out,
        "  {:>5} {:>3} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} | {:>8} {:>7} {:>7} {:>7} {:>8} {:>4} {:>4}",
        "round", "RF", "MB/s", "ack p50", "p99", "p99.9", "CPU s/GB", "brk %", "bench %",
        "e2e MB/s", "e2e p50", "p99", "p99.9", "CPU s/GB", "ISR", "shr"
    );
    for x in &r.runs {
        let ack = x.max.ack_latency.as_ref();
        let e2e = x.e2e.e2e_latency.as_ref();
        let brk = if x.max.wall_seconds > 0.0 {
            Some(x.max.broker_cpu_seconds / x.max.wall_seconds * 100.0)
        } else {
            None
        };
        let isr = match (x.max.min_isr_after, x.e2e.min_isr_after) {
            (Some(a), Some(b)) => a.min(b).to_string(),
            (Some(a), None) | (None, Some(a)) => a.to_string(),
            (None, None) => "?".into(),
        };
        let _ = writeln!(
            out,
            "  {:>5} {:>3} {:>8.1} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} | {:>8.1} {:>7} {:>7} {:>7} {:>8} {:>4} {:>4}",
            x.round,
            x.replication_factor,
            x.max.mb_per_sec,
            fmt_opt(ack.map(|l| l.p50_ms), 1),
            fmt_opt(ack.map(|l| l.p99_ms), 1),
            fmt_opt(ack.map(|l| l.p999_ms), 1),
            fmt_opt(x.max.broker_cpu_s_per_gb, 2),
            fmt_opt(brk, 0),
            fmt_opt(x.max.client_cpu_percent_of_core, 0),
            x.e2e.mb_per_sec,
            fmt_opt(e2e.map(|l| l.p50_ms), 2),
            fmt_opt(e2e.map(|l| l.p99_ms), 2),
            fmt_opt(e2e.map(|l| l.p999_ms), 2),
            fmt_opt(x.e2e.broker_cpu_s_per_gb, 2),
            isr,
            x.isr_shrinks
        );
        for (phase, p) in [("max", &x.max), ("e2e", &x.e2e)] {
            if !p.disk_quiet {
                let _ = writeln!(
                    out,
                    "        {phase}: started on a busy disk (not quiet after {:.0} s)",
                    p.disk_settle_seconds
                );
            }
            if p.errors > 0 {
                let _ = writeln!(
                    out,
                    "        {phase}: {} errors, first: {}",
                    p.errors,
                    p.first_error.as_deref().unwrap_or("-")
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "  (brk % = all nodes' CPU in % of one core over the max phase; ISR = smallest ISR after the phases; \
         shr = ISR-shrink log lines)"
    );
    let _ = writeln!(out, "\n  median (min–max) over the rounds:");
    let _ = writeln!(out, "  {:<34} {:>24} {:>24}", "", "RF1", "RF3");
    type Getter = fn(&ClusterSummary) -> Option<&Spread>;
    let rows: [(&str, Getter, usize); 10] = [
        ("max produce MB/s", |s| s.mb_per_sec.as_ref(), 1),
        ("ack latency p50 ms", |s| s.ack_p50_ms.as_ref(), 1),
        ("ack latency p99 ms", |s| s.ack_p99_ms.as_ref(), 1),
        ("ack latency p99.9 ms", |s| s.ack_p999_ms.as_ref(), 1),
        (
            "broker CPU s per GB (max phase)",
            |s| s.cpu_s_per_gb.as_ref(),
            2,
        ),
        ("e2e phase MB/s", |s| s.e2e_mb_per_sec.as_ref(), 1),
        ("e2e p50 ms", |s| s.e2e_p50_ms.as_ref(), 2),
        ("e2e p99 ms", |s| s.e2e_p99_ms.as_ref(), 2),
        ("e2e p99.9 ms", |s| s.e2e_p999_ms.as_ref(), 2),
        (
            "broker CPU s per GB (e2e phase)",
            |s| s.e2e_cpu_s_per_gb.as_ref(),
            2,
        ),
    ];
    for (label, f, d) in rows {
        let _ = writeln!(
            out,
            "  {:<34} {:>24} {:>24}",
            label,
            fmt_spread(f(&r.rf1), d),
            fmt_spread(f(&r.rf3), d)
        );
    }
    let per_round: Vec<String> = r
        .ratio_per_round
        .iter()
        .map(|x| format!("{:.1} %", x * 100.0))
        .collect();
    let _ = writeln!(
        out,
        "  RF3 / RF1 throughput per round: {}",
        if per_round.is_empty() {
            "-".to_string()
        } else {
            per_round.join(", ")
        }
    );
    let _ = writeln!(out, "\n  targets (issue 12), on the medians:");
    for c in &r.checks {
        let mark = match c.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a",
        };
        let _ = writeln!(
            out,
            "  [{mark}] {:<40} {:>10} {:<2}  target {}{}",
            c.name,
            fmt_opt(c.measured, 1),
            c.unit,
            c.target,
            c.note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(out, "  node logs: {}/logs", r.work_dir);
    out
}
