//! The report of `sluice-bench partitions`: one `LayoutRun` per layout, the human tables,
//! and the markdown rows the README takes. Formatting only; `partitions` measures.
//!
//! A phase that failed leaves its figures `None` and an entry in `errors`; a partition
//! whose seeded record is gone after a restart is counted in `Verify::missing` and named
//! in `errors` too, never folded into a number.

use std::fmt::Write;

use serde::Serialize;

use crate::procstat::Footprint;
use crate::stats::{group_thousands, LatencySummary, Throughput};

/// What the load phase measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadFigures {
    /// Target rate, msg/s and MB/s (10^6 B of payload).
    pub target_msg_per_sec: f64,
    pub target_mb_per_sec: f64,
    /// Records acked inside the window.
    pub produced: Option<Throughput>,
    /// Records received inside the window.
    pub consumed: Option<Throughput>,
    /// Send to delivery report, records sent inside the window.
    pub ack_latency: Option<LatencySummary>,
    /// Intended send time (the constant-rate schedule) to delivery report, records
    /// intended inside the window: corrected for coordinated omission; empty when the
    /// producers fell so far behind that none of those records was sent.
    pub ack_latency_from_intended: Option<LatencySummary>,
    /// Send time (stamped in the record) to receive.
    pub e2e_latency: Option<LatencySummary>,
    /// Records due by the schedule but not sent when the window closed.
    pub backlog_at_window_end: u64,
    pub sent_total: u64,
    pub acked_total: u64,
    pub consumed_total: u64,
    /// Partitions with at least one record acked during the load.
    pub partitions_acked: u64,
    pub produce_errors: u64,
    pub consume_errors: u64,
    pub first_error: Option<String>,
    /// Broker utime+stime inside the window, and per GB (10^9 B of payload) acked in it.
    pub broker_cpu_seconds: f64,
    pub broker_cpu_percent_of_core: f64,
    pub broker_cpu_s_per_gb: Option<f64>,
    /// Broker RSS at the window's end, and its peak (VmHWM) then.
    pub broker_rss_bytes: u64,
    pub broker_peak_rss_bytes: u64,
    /// The bench's own CPU inside the window (it shares the cores with the broker).
    pub client_cpu_percent_of_core: Option<f64>,
    /// Per-second samples and the ack / e2e percentile curves for `--report` (not in
    /// the JSON).
    #[serde(skip)]
    pub charts: crate::timeline::RunCharts,
}

/// Times of one broker start, from the spawn.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StartTimes {
    /// Until it accepted a TCP connection.
    pub listening_seconds: f64,
    /// Until Metadata showed every partition with a leader.
    pub all_led_seconds: f64,
}

/// Latest offsets after a restart against the records acked before it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Verify {
    /// Partitions checked (every partition of the layout).
    pub partitions: u64,
    /// Partitions whose latest offset is below the last seeded record's offset + 1, or
    /// whose offset could not be read.
    pub missing: u64,
    /// The first few of them, `topic-partition: what`.
    pub examples: Vec<String>,
    /// ListOffsets rounds until one answered (a round that fails as a whole is retried).
    pub attempts: u32,
    /// Why the first round failed, when one did.
    pub first_failure: Option<String>,
    /// From the first round to the answer.
    pub answered_after_seconds: f64,
}

/// Everything measured for one layout.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LayoutRun {
    /// `TxP`.
    pub layout: String,
    pub topics: u32,
    pub partitions_per_topic: u32,
    pub partitions: u64,
    /// First CreateTopics until Metadata showed every partition led.
    pub create_seconds: Option<f64>,
    /// Records acked by each seeding round (one per partition).
    pub seeded: Vec<u64>,
    /// How long each seeding round took (the first: every partition's first write).
    pub seed_seconds: Vec<f64>,
    /// SIGTERM until the process exited.
    pub clean_stop_seconds: Option<f64>,
    /// Start after the clean stop.
    pub clean_start: Option<StartTimes>,
    /// Check of the first seed after the clean start.
    pub verify_after_clean_start: Option<Verify>,
    /// Start after `kill -9` (recovery).
    pub recovery_start: Option<StartTimes>,
    /// Check of both seeds after the recovery.
    pub verify_after_recovery: Option<Verify>,
    pub footprint_after_create: Option<Footprint>,
    pub footprint_after_clean_start: Option<Footprint>,
    pub footprint_after_recovery: Option<Footprint>,
    /// Broker CPU with no traffic, over the idle period, % of one core.
    pub idle_cpu_percent_of_core: Option<f64>,
    pub load: Option<LoadFigures>,
    /// Once the load has drained.
    pub footprint_after_load: Option<Footprint>,
    /// SIGTERM after the load until the exit.
    pub final_stop_seconds: Option<f64>,
    /// Failed phases and lost records; any makes the command exit 1.
    pub errors: Vec<String>,
    /// Anomalies that are not errors (a ListOffsets that answered only when retried).
    pub notes: Vec<String>,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionsReport {
    pub name: String,
    pub sluice_bin: String,
    pub work_dir: String,
    pub cores: u32,
    pub settings: Vec<String>,
    pub message_size: usize,
    pub rate_mb_per_sec: f64,
    pub warmup_seconds: f64,
    pub duration_seconds: f64,
    pub idle_seconds: f64,
    pub producers: u32,
    /// The producers spoke the protocol themselves (`--raw-producers`), not librdkafka.
    pub raw_producers: bool,
    pub consumers: u32,
    pub linger_ms: f64,
    pub batch_size: u32,
    pub layouts: Vec<LayoutRun>,
}

impl PartitionsReport {
    /// Errors of every layout, prefixed with the layout.
    pub fn errors(&self) -> Vec<String> {
        self.layouts
            .iter()
            .flat_map(|l| l.errors.iter().map(move |e| format!("{}: {e}", l.layout)))
            .collect()
    }

    fn notes(&self) -> Vec<String> {
        self.layouts
            .iter()
            .flat_map(|l| l.notes.iter().map(move |e| format!("{}: {e}", l.layout)))
            .collect()
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or("–".into(), |s| format!("{s:.2}"))
}

fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / (1024.0 * 1024.0))
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        group_thousands(v)
    } else {
        format!("{v:.2}")
    }
}

fn footprint(f: Option<&Footprint>) -> String {
    f.map_or("–".into(), |f| {
        format!("{} / {}", mib(f.rss_bytes), f.open_fds)
    })
}

fn verified(v: Option<&Verify>) -> String {
    v.map_or("–".into(), |v| {
        format!(
            "{}/{}",
            group_thousands((v.partitions - v.missing) as f64),
            group_thousands(v.partitions as f64)
        )
    })
}

fn ack(l: &LoadFigures) -> String {
    l.ack_latency.as_ref().map_or("–".into(), |a| {
        format!("{} / {} / {}", ms(a.p50_ms), ms(a.p99_ms), ms(a.p999_ms))
    })
}

fn e2e_p99(l: &LoadFigures) -> String {
    l.e2e_latency.as_ref().map_or("–".into(), |e| ms(e.p99_ms))
}

fn produced_mb(l: &LoadFigures) -> String {
    l.produced
        .as_ref()
        .map_or("–".into(), |p| format!("{:.1}", p.mb_per_sec))
}

/// The human tables.
pub fn table(r: &PartitionsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== partitions: {} shard(s), {} B records, acks=all, {} MB/s target, {} s measured, idle {} s, {} producer(s)",
        r.cores,
        r.message_size,
        r.rate_mb_per_sec,
        r.duration_seconds,
        r.idle_seconds,
        if r.raw_producers { "raw-protocol" } else { "librdkafka" }
    );
    let _ = writeln!(
        out,
        "  {:<10} {:>10} {:>8} {:>13} {:>7} {:>8} {:>9} {:>13} {:>8} {:>15} {:>15}",
        "layout",
        "partitions",
        "create s",
        "seed 1 / 2 s",
        "stop s",
        "start s",
        "kill-9 s",
        "RSS MiB / fds",
        "idle CPU",
        "seed ok (clean)",
        "seed ok (kill)"
    );
    for l in &r.layouts {
        let _ = writeln!(
            out,
            "  {:<10} {:>10} {:>8} {:>13} {:>7} {:>8} {:>9} {:>13} {:>8} {:>15} {:>15}",
            l.layout,
            group_thousands(l.partitions as f64),
            secs(l.create_seconds),
            format!(
                "{} / {}",
                secs(l.seed_seconds.first().copied()),
                secs(l.seed_seconds.get(1).copied())
            ),
            secs(l.clean_stop_seconds),
            secs(l.clean_start.map(|s| s.all_led_seconds)),
            secs(l.recovery_start.map(|s| s.all_led_seconds)),
            footprint(l.footprint_after_recovery.as_ref()),
            l.idle_cpu_percent_of_core
                .map_or("–".into(), |c| format!("{c:.2}%")),
            verified(l.verify_after_clean_start.as_ref()),
            verified(l.verify_after_recovery.as_ref()),
        );
    }
    let _ = writeln!(
        out,
        "\n  {:<10} {:>8} {:>8} {:>24} {:>10} {:>9} {:>9} {:>13} {:>10} {:>8}",
        "layout",
        "MB/s",
        "cons MB/s",
        "ack p50/p99/p99.9 ms",
        "e2e p99",
        "CPU s/GB",
        "RSS MiB",
        "after MiB/fds",
        "written",
        "bench"
    );
    for l in &r.layouts {
        let Some(load) = &l.load else {
            let _ = writeln!(out, "  {:<10} (no load phase)", l.layout);
            continue;
        };
        let _ = writeln!(
            out,
            "  {:<10} {:>8} {:>9} {:>24} {:>10} {:>9} {:>9} {:>13} {:>10} {:>8}",
            l.layout,
            produced_mb(load),
            load.consumed
                .as_ref()
                .map_or("–".into(), |c| format!("{:.1}", c.mb_per_sec)),
            ack(load),
            e2e_p99(load),
            load.broker_cpu_s_per_gb
                .map_or("–".into(), |c| format!("{c:.2}")),
            mib(load.broker_rss_bytes),
            footprint(l.footprint_after_load.as_ref()),
            group_thousands(load.partitions_acked as f64),
            load.client_cpu_percent_of_core
                .map_or("–".into(), |c| format!("{c:.0}%")),
        );
    }
    for (title, lines) in [("errors", r.errors()), ("notes", r.notes())] {
        if !lines.is_empty() {
            let _ = writeln!(out, "\n  {title}:");
            for e in &lines {
                let _ = writeln!(out, "    {e}");
            }
        }
    }
    let _ = writeln!(out, "\nREADME rows:\n{}", markdown(r));
    out
}

/// The markdown table for the README: one row per layout.
pub fn markdown(r: &PartitionsReport) -> String {
    let mut out = String::from(
        "| layout | create s | clean stop / start s | start after kill -9 s | idle RSS MiB / fds | idle CPU | produce MB/s | ack p50 / p99 / p99.9 ms | e2e p99 ms | broker CPU s/GB | RSS under load MiB | seeds intact |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for l in &r.layouts {
        let load = l.load.as_ref();
        let intact = match (&l.verify_after_clean_start, &l.verify_after_recovery) {
            (Some(a), Some(b)) if a.missing == 0 && b.missing == 0 => "yes".to_string(),
            (a, b) => format!(
                "**no**: {} / {} missing",
                a.as_ref().map_or("?".into(), |v| v.missing.to_string()),
                b.as_ref().map_or("?".into(), |v| v.missing.to_string())
            ),
        };
        let _ = writeln!(
            out,
            "| {} × {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            group_thousands(l.topics as f64),
            group_thousands(l.partitions_per_topic as f64),
            secs(l.create_seconds),
            secs(l.clean_stop_seconds),
            secs(l.clean_start.map(|s| s.all_led_seconds)),
            secs(l.recovery_start.map(|s| s.all_led_seconds)),
            footprint(l.footprint_after_recovery.as_ref()),
            l.idle_cpu_percent_of_core
                .map_or("–".into(), |c| format!("{c:.2} %")),
            load.map_or("–".into(), |l| format!(
                "{} of {:.0}",
                produced_mb(l),
                l.target_mb_per_sec
            )),
            load.map_or("–".into(), ack),
            load.map_or("–".into(), e2e_p99),
            load.and_then(|l| l.broker_cpu_s_per_gb)
                .map_or("–".into(), |c| format!("{c:.2}")),
            load.map_or("–".into(), |l| mib(l.broker_rss_bytes)),
            intact,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> PartitionsReport {
        let fp = Footprint {
            rss_bytes: 64 << 20,
            open_fds: 20_123,
        };
        let ok = Verify {
            partitions: 10_000,
            attempts: 1,
            ..Verify::default()
        };
        let full = LayoutRun {
            layout: "1x10000".into(),
            topics: 1,
            partitions_per_topic: 10_000,
            partitions: 10_000,
            create_seconds: Some(3.25),
            clean_stop_seconds: Some(0.5),
            clean_start: Some(StartTimes {
                listening_seconds: 0.1,
                all_led_seconds: 1.5,
            }),
            recovery_start: Some(StartTimes {
                listening_seconds: 0.2,
                all_led_seconds: 2.0,
            }),
            verify_after_clean_start: Some(ok.clone()),
            verify_after_recovery: Some(Verify {
                missing: 2,
                examples: vec!["t-1: gone".into()],
                ..ok
            }),
            notes: vec!["ListOffsets answered late".into()],
            footprint_after_recovery: Some(fp),
            footprint_after_load: Some(fp),
            idle_cpu_percent_of_core: Some(0.4),
            load: Some(LoadFigures {
                target_mb_per_sec: 100.0,
                produced: Some(Throughput::new(
                    1000,
                    97_000_000,
                    std::time::Duration::from_secs(1),
                )),
                ack_latency: Some(LatencySummary {
                    count: 1,
                    mean_ms: 1.0,
                    p50_ms: 12.5,
                    p90_ms: 1.0,
                    p99_ms: 2_500.0,
                    p999_ms: 3_100.0,
                    max_ms: 4_000.0,
                }),
                broker_cpu_s_per_gb: Some(4.25),
                broker_rss_bytes: 128 << 20,
                ..LoadFigures::default()
            }),
            errors: vec!["2 partitions lost records".into()],
            ..LayoutRun::default()
        };
        PartitionsReport {
            name: "partitions".into(),
            sluice_bin: "sluice".into(),
            work_dir: "/tmp/x".into(),
            cores: 1,
            settings: Vec::new(),
            message_size: 1024,
            rate_mb_per_sec: 100.0,
            warmup_seconds: 5.0,
            duration_seconds: 30.0,
            idle_seconds: 10.0,
            producers: 1,
            raw_producers: false,
            consumers: 1,
            linger_ms: 5.0,
            batch_size: 1 << 20,
            layouts: vec![
                full,
                LayoutRun {
                    layout: "1000x10".into(),
                    topics: 1000,
                    partitions_per_topic: 10,
                    partitions: 10_000,
                    errors: vec!["create: timed out".into()],
                    ..LayoutRun::default()
                },
            ],
        }
    }

    #[test]
    fn markdown_rows_show_figures_and_lost_records() {
        let md = markdown(&report());
        let rows: Vec<&str> = md.lines().collect();
        assert_eq!(rows.len(), 4, "{md}");
        assert!(rows[2].starts_with("| 1 × 10,000 | 3.25 | 0.50 / 1.50 | 2.00 | 64 / 20123 | 0.40 % | 97.0 of 100 | 12.50 / 2,500 / 3,100 |"), "{}", rows[2]);
        assert!(
            rows[2].ends_with("| 4.25 | 128 | **no**: 0 / 2 missing |"),
            "{}",
            rows[2]
        );
        assert!(rows[3].starts_with("| 1,000 × 10 | – |"), "{}", rows[3]);
    }

    #[test]
    fn table_lists_errors_per_layout_and_json_has_the_fields() {
        let r = report();
        let t = table(&r);
        assert!(t.contains("1x10000: 2 partitions lost records"), "{t}");
        assert!(t.contains("1000x10: create: timed out"), "{t}");
        assert!(t.contains("(no load phase)"), "{t}");
        assert!(
            t.contains("notes:\n    1x10000: ListOffsets answered late"),
            "{t}"
        );
        assert!(t.contains("10,000/10,000"), "{t}");
        let v = serde_json::to_value(&r).expect("json");
        let l = &v["layouts"][0];
        assert_eq!(l["clean_start"]["all_led_seconds"], 1.5);
        assert_eq!(l["verify_after_recovery"]["missing"], 2);
        assert_eq!(l["footprint_after_load"]["open_fds"], 20_123);
        assert_eq!(l["load"]["ack_latency"]["p999_ms"], 3_100.0);
        assert_eq!(l["idle_cpu_percent_of_core"], 0.4);
    }
}
