//! Human-readable tables for run reports and limits. JSON output is the serde form of
//! the same structs; these functions only format, they never compute results.

use std::fmt::Write;

use crate::engine::RunReport;
use crate::limits::Limits;
use crate::procstat::ProcUsage;
use crate::stats::{group_thousands, LatencySummary, Throughput};

/// Bytes per second as "x.xx GB/s" (10^9).
pub fn gbps(bytes_per_sec: f64) -> String {
    format!("{:.2} GB/s", bytes_per_sec / 1e9)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn usage_line(label: &str, u: &ProcUsage) -> String {
    let who = if u.pid == 0 {
        label.to_string()
    } else {
        format!("{label} (pid {})", u.pid)
    };
    format!(
        "{who}: {:.1} CPU s ({:.0}% of one core), peak RSS {}",
        u.cpu_seconds,
        u.cpu_percent_of_core,
        mib(u.peak_rss_bytes)
    )
}

fn throughput_row(out: &mut String, label: &str, t: &Throughput) {
    let _ = writeln!(
        out,
        "  {label:<18} {:>12} {:>10.1}",
        group_thousands(t.msg_per_sec),
        t.mb_per_sec
    );
}

fn latency_row(out: &mut String, label: &str, l: &LatencySummary) {
    let _ = writeln!(
        out,
        "  {label:<18} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>10}",
        l.p50_ms,
        l.p90_ms,
        l.p99_ms,
        l.p999_ms,
        l.max_ms,
        group_thousands(l.count as f64)
    );
}

/// The table for one run.
pub fn run_table(r: &RunReport) -> String {
    let mut out = String::new();
    let rate = match r.target_rate {
        Some(x) => format!("{} msg/s target", group_thousands(x)),
        None => "max rate".to_string(),
    };
    let _ = writeln!(
        out,
        "== {}: {} topic(s) x {} partitions, {} B records, acks={}, {}",
        r.name, r.topics, r.partitions, r.message_size, r.acks, rate
    );
    if r.produced.is_some() || r.consumed.is_some() {
        let _ = writeln!(out, "  {:<18} {:>12} {:>10}", "throughput", "msg/s", "MB/s");
        if let Some(t) = &r.produced {
            throughput_row(&mut out, "produced (acked)", t);
        }
        if let Some(t) = &r.consumed {
            throughput_row(&mut out, "consumed", t);
        }
    }
    if r.produce_latency.is_some() || r.e2e_latency.is_some() {
        let _ = writeln!(
            out,
            "  {:<18} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "latency (ms)", "p50", "p90", "p99", "p99.9", "max", "samples"
        );
        if let Some(l) = &r.produce_latency {
            latency_row(&mut out, "produce ack", l);
        }
        if let Some(l) = &r.e2e_latency {
            latency_row(&mut out, "end-to-end", l);
        }
    }
    let _ = writeln!(
        out,
        "  records: {} acked, {} consumed; errors: {} produce, {} consume",
        group_thousands(r.acked_total as f64),
        group_thousands(r.consumed_total as f64),
        r.produce_errors,
        r.consume_errors
    );
    if let Some(e) = &r.first_error {
        let _ = writeln!(out, "  first error: {e}");
    }
    if let Some(b) = &r.broker {
        let _ = writeln!(out, "  {}", usage_line("broker", b));
    }
    if let Some(c) = &r.client {
        let _ = writeln!(out, "  {}", usage_line("bench client", c));
    }
    out
}

/// The table for `limits`.
pub fn limits_table(l: &Limits) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "== physical limits (io_uring), data dir {}", l.dir);
    let row = |out: &mut String, label: &str, v: Option<String>| {
        let _ = writeln!(
            out,
            "  {label:<40} {}",
            v.unwrap_or_else(|| "failed (see errors)".to_string())
        );
    };
    row(
        &mut out,
        "loopback TCP, 1 stream",
        l.loopback_bytes_per_sec.map(gbps),
    );
    let shape = |qd: usize| format!("{} KiB x QD {qd}", l.direct_block_bytes / 1024);
    row(
        &mut out,
        &format!(
            "O_DIRECT seq. write ({})",
            shape(l.direct_write_queue_depth)
        ),
        l.direct_write_bytes_per_sec.map(gbps),
    );
    row(
        &mut out,
        &format!("O_DIRECT seq. read ({})", shape(l.direct_read_queue_depth)),
        l.direct_read_bytes_per_sec.map(gbps),
    );
    if l.direct_queue_depths_tried.len() > 1 {
        let tried: Vec<String> = l
            .direct_queue_depths_tried
            .iter()
            .map(|q| q.to_string())
            .collect();
        let _ = writeln!(
            out,
            "  (O_DIRECT: best of queue depths {})",
            tried.join(", ")
        );
    }
    row(
        &mut out,
        "4 KiB write + fdatasync",
        l.fdatasync_per_sec.map(|r| {
            let lat = l
                .fdatasync_latency
                .as_ref()
                .map(|s| format!(" (p50 {:.3} ms, p99 {:.3} ms)", s.p50_ms, s.p99_ms))
                .unwrap_or_default();
            format!("{}/s{lat}", group_thousands(r))
        }),
    );
    for e in &l.errors {
        let _ = writeln!(out, "  error: {e}");
    }
    out
}

/// Prints a command's report (JSON with `json`, else `table`) and writes the JSON to
/// `json_out` when given.
pub fn emit<T: serde::Serialize>(
    json: bool,
    json_out: Option<&std::path::Path>,
    report: &T,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let doc = serde_json::to_string_pretty(report)?;
    if let Some(path) = json_out {
        std::fs::write(path, format!("{doc}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        println!("{doc}");
    } else {
        print!("{}", table(report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procstat::ProcUsage;
    use std::time::Duration;

    fn sample_report() -> RunReport {
        RunReport {
            name: "e2e".into(),
            topics: 1,
            partitions: 16,
            message_size: 1024,
            target_rate: Some(50_000.0),
            acks: "all".into(),
            produced: Some(Throughput::new(
                500_000,
                512_000_000,
                Duration::from_secs(10),
            )),
            consumed: None,
            produce_latency: Some(LatencySummary {
                count: 500_000,
                mean_ms: 1.0,
                p50_ms: 0.9,
                p90_ms: 1.5,
                p99_ms: 2.25,
                p999_ms: 4.0,
                max_ms: 9.5,
            }),
            e2e_latency: None,
            acked_total: 600_000,
            consumed_total: 0,
            produce_errors: 0,
            consume_errors: 0,
            first_error: None,
            broker: Some(ProcUsage {
                pid: 77,
                cpu_seconds: 8.0,
                cpu_percent_of_core: 80.0,
                peak_rss_bytes: 100 << 20,
            }),
            client: None,
            charts: Default::default(),
        }
    }

    #[test]
    fn run_table_shows_rates_percentiles_and_broker() {
        let t = run_table(&sample_report());
        assert!(t.contains("50,000 msg/s target"), "{t}");
        assert!(t.contains("produced (acked)"), "{t}");
        assert!(t.contains("51.2"), "{t}"); // 512 MB over 10 s
        assert!(t.contains("2.25"), "{t}");
        assert!(t.contains("broker (pid 77): 8.0 CPU s (80% of one core), peak RSS 100.0 MiB"));
        assert!(!t.contains("end-to-end"), "{t}");
    }

    #[test]
    fn json_has_stable_field_names() {
        let v = serde_json::to_value(sample_report()).expect("serializes");
        assert_eq!(v["produced"]["msg_per_sec"], serde_json::json!(50_000.0));
        assert_eq!(v["produce_latency"]["p999_ms"], serde_json::json!(4.0));
        assert_eq!(
            v["broker"]["peak_rss_bytes"],
            serde_json::json!(100u64 << 20)
        );
        assert!(v["e2e_latency"].is_null());
    }

    #[test]
    fn limits_table_marks_failures() {
        let l = Limits {
            dir: "/data".into(),
            loopback_bytes_per_sec: Some(4.5e9),
            errors: vec!["O_DIRECT bandwidth: EINVAL".into()],
            ..Limits::default()
        };
        let t = limits_table(&l);
        assert!(t.contains("4.50 GB/s"), "{t}");
        assert!(t.contains("failed (see errors)"), "{t}");
        assert!(t.contains("error: O_DIRECT bandwidth: EINVAL"), "{t}");
    }
}
