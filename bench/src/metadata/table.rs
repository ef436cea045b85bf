//! The human report of the `metadata` workload: creation throughput and latency, the
//! errors by Kafka error name, the Metadata check and the deletes.

use std::fmt::Write as _;

use super::{CreateReport, ErrorCount};
use crate::stats::{group_thousands, LatencySummary};

fn latency_line(out: &mut String, label: &str, l: &LatencySummary) {
    let _ = writeln!(
        out,
        "  {label:<26} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (mean {:.2} ms, {} calls)",
        l.p50_ms,
        l.p99_ms,
        l.max_ms,
        l.mean_ms,
        group_thousands(l.count as f64)
    );
}

fn errors_line(out: &mut String, label: &str, errors: &[ErrorCount]) {
    if errors.is_empty() {
        return;
    }
    let list: Vec<String> = errors
        .iter()
        .map(|e| format!("{} x{}", e.error, e.count))
        .collect();
    let _ = writeln!(out, "  {label:<26} {}", list.join(", "));
}

/// The human summary of a `metadata` run.
pub fn create_table(r: &CreateReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== metadata: {} topics x {} partitions, RF {}, {} topic(s) per CreateTopics, {} in flight",
        group_thousands(f64::from(r.topics)),
        r.partitions,
        r.replication_factor,
        r.batch,
        r.concurrency
    );
    let _ = writeln!(
        out,
        "  {:<26} {} of {} topics in {:.2} s: {:.1} topics/s, {} partitions/s",
        "created",
        group_thousands(r.created as f64),
        group_thousands(f64::from(r.topics)),
        r.create_seconds,
        r.topics_per_sec,
        group_thousands(r.partitions_per_sec)
    );
    if let Some(l) = &r.create_latency {
        latency_line(&mut out, "CreateTopics latency", l);
    }
    if let Some(l) = &r.failed_latency {
        latency_line(&mut out, "failed CreateTopics", l);
    }
    errors_line(&mut out, "errors (topics)", &r.errors);
    let v = &r.verify;
    let _ = writeln!(
        out,
        "  {:<26} {} of {} complete after {:.2} s more ({} polls); missing {}, wrong {}, partitions without leader {}, short of replicas {}, ISR < RF {}",
        "Metadata check",
        group_thousands(v.found as f64),
        group_thousands(v.expected as f64),
        v.seconds,
        v.polls,
        v.missing,
        v.wrong,
        v.partitions_without_leader,
        v.partitions_short_of_replicas,
        v.partitions_under_replicated
    );
    let _ = writeln!(
        out,
        "  {:<26} {:.2} s",
        "create + visible", r.create_and_verify_seconds
    );
    if let Some(d) = &r.delete {
        let _ = writeln!(
            out,
            "  {:<26} {} topics in {:.2} s",
            "deleted",
            group_thousands(d.deleted as f64),
            d.seconds
        );
        errors_line(&mut out, "delete errors", &d.errors);
    }
    out
}
