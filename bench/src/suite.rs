//! `sluice-bench suite`: against an already running broker, measure the physical limits,
//! max produce (acks=all), max consume, and end-to-end latency at 50% of max produce, and
//! express each result as a ratio to its physical reference.
//!
//! ```text
//!  limits ─► max produce (topic A) ─► max consume (read all of A) ─► e2e @ 50% (topic B)
//!      └──────────────── references ──────────────► ratios + targets
//! ```
//! The suite starts no broker; it creates its topics and deletes them unless told not to.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::engine::{self, LoadSpec, RunReport};
use crate::kafka;
use crate::limits::{self, Limits, LimitsConfig};
use crate::stats::group_thousands;

/// Targets from issue 5.
pub const PRODUCE_TARGET: f64 = 0.5;
/// Consume throughput target as a fraction of loopback.
pub const CONSUME_TARGET: f64 = 0.7;
/// e2e p99 target at 50% load, ms.
pub const E2E_P99_TARGET_MS: f64 = 5.0;

/// One result next to its physical reference.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ratio {
    /// What was measured.
    pub metric: String,
    /// The measured value.
    pub measured: f64,
    /// Physical reference it is compared with.
    pub reference_name: String,
    /// The reference value (same unit as `measured`).
    pub reference: f64,
    /// Unit of `measured` and `reference`.
    pub unit: String,
    /// measured / reference.
    pub ratio: f64,
    /// The target, in words, if the issue sets one.
    pub target: Option<String>,
    /// Whether the target is met.
    pub pass: Option<bool>,
}

/// Everything `suite` measured.
#[derive(Clone, Debug, Serialize)]
pub struct SuiteReport {
    /// Physical references.
    pub limits: Limits,
    /// Max produce, acks=all.
    pub max_produce: RunReport,
    /// Max consume of everything produced.
    pub max_consume: RunReport,
    /// End-to-end latency at 50% of max produce.
    pub e2e_half_load: RunReport,
    /// Ratios to the references.
    pub ratios: Vec<Ratio>,
}

/// Builds the ratio table from the measurements. Missing inputs drop their rows.
pub fn ratios(
    limits: &Limits,
    produce: &RunReport,
    consume: &RunReport,
    e2e: &RunReport,
) -> Vec<Ratio> {
    let mut out = Vec::new();
    let mbps = |b: f64| b / 1e6;
    let produce_mb = produce.produced.as_ref().map(|t| t.mb_per_sec);
    let consume_mb = consume.consumed.as_ref().map(|t| t.mb_per_sec);
    if let (Some(m), Some(lo)) = (produce_mb, limits.loopback_bytes_per_sec) {
        let ratio = m / mbps(lo);
        out.push(Ratio {
            metric: "max produce acks=all".into(),
            measured: m,
            reference_name: "loopback TCP".into(),
            reference: mbps(lo),
            unit: "MB/s".into(),
            ratio,
            target: Some(format!(">= {:.0}%", PRODUCE_TARGET * 100.0)),
            pass: Some(ratio >= PRODUCE_TARGET),
        });
    }
    if let (Some(m), Some(w)) = (produce_mb, limits.direct_write_bytes_per_sec) {
        out.push(Ratio {
            metric: "max produce acks=all".into(),
            measured: m,
            reference_name: "O_DIRECT write".into(),
            reference: mbps(w),
            unit: "MB/s".into(),
            ratio: m / mbps(w),
            target: None,
            pass: None,
        });
    }
    if let (Some(m), Some(lo)) = (consume_mb, limits.loopback_bytes_per_sec) {
        let ratio = m / mbps(lo);
        out.push(Ratio {
            metric: "max consume".into(),
            measured: m,
            reference_name: "loopback TCP".into(),
            reference: mbps(lo),
            unit: "MB/s".into(),
            ratio,
            target: Some(format!(">= {:.0}%", CONSUME_TARGET * 100.0)),
            pass: Some(ratio >= CONSUME_TARGET),
        });
    }
    if let (Some(m), Some(r)) = (consume_mb, limits.direct_read_bytes_per_sec) {
        // The suite reads back far more than the broker caches, so most of it comes from
        // disk: O_DIRECT read is the other physical ceiling.
        out.push(Ratio {
            metric: "max consume".into(),
            measured: m,
            reference_name: "O_DIRECT read".into(),
            reference: mbps(r),
            unit: "MB/s".into(),
            ratio: m / mbps(r),
            target: None,
            pass: None,
        });
    }
    let e2e_p99 = e2e.e2e_latency.as_ref().map(|l| l.p99_ms);
    let sync_p99 = limits.fdatasync_latency.as_ref().map(|l| l.p99_ms);
    if let (Some(m), Some(s)) = (e2e_p99, sync_p99) {
        out.push(Ratio {
            metric: "e2e p99 @ 50% of max produce".into(),
            measured: m,
            reference_name: "write+fdatasync p99".into(),
            reference: s,
            unit: "ms".into(),
            ratio: if s > 0.0 { m / s } else { f64::INFINITY },
            target: Some(format!("<= {E2E_P99_TARGET_MS} ms")),
            pass: Some(m <= E2E_P99_TARGET_MS),
        });
    }
    out
}

/// The ratio table as text.
pub fn ratio_table(rows: &[Ratio]) -> String {
    use std::fmt::Write;
    let mut out = String::from("== suite: results against physical references\n");
    let _ = writeln!(
        out,
        "  {:<30} {:>12} {:<22} {:>12} {:>8} {:>10} {:>5}",
        "metric", "measured", "reference", "ref value", "ratio", "target", "met"
    );
    for r in rows {
        let met = match r.pass {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let _ = writeln!(
            out,
            "  {:<30} {:>7.2} {:<4} {:<22} {:>7.2} {:<4} {:>7.1}% {:>10} {:>5}",
            r.metric,
            r.measured,
            r.unit,
            r.reference_name,
            r.reference,
            r.unit,
            r.ratio * 100.0,
            r.target.as_deref().unwrap_or("-"),
            met
        );
    }
    out
}

/// Suite parameters; `base` supplies bootstrap, sizes, client settings and durations.
#[derive(Clone, Debug)]
pub struct SuiteConfig {
    /// Template for the three runs (topics and rates are filled in per stage).
    pub base: LoadSpec,
    /// Limits probe configuration (data dir of the broker).
    pub limits: LimitsConfig,
    /// Keep the suite's topics afterwards.
    pub keep_topics: bool,
    /// Announce each stage on stderr as it starts.
    pub verbose: bool,
}

/// Runs the suite. Topics are deleted at the end (even after a failed stage) unless kept.
pub fn run(cfg: &SuiteConfig) -> Result<SuiteReport> {
    let base = &cfg.base;
    let say = |s: &str| {
        if cfg.verbose {
            eprintln!("{s}");
        }
    };
    say("suite: measuring physical limits ...");
    let limits = limits::measure(&cfg.limits);

    let tag: u32 = rand::random();
    let produce_topic = format!("sluice-bench-suite-{tag:08x}-max");
    let e2e_topic = format!("sluice-bench-suite-{tag:08x}-e2e");
    let timeout = Duration::from_secs(60);
    let mut created = Vec::new();
    let result = (|| -> Result<SuiteReport> {
        created.extend(
            kafka::create_topics(
                &base.bootstrap,
                std::slice::from_ref(&produce_topic),
                base.partitions,
                timeout,
            )
            .context("creating the max-produce topic")?,
        );
        say("suite: max produce (acks=all) ...");
        let produce_spec = LoadSpec {
            name: "max produce acks=all".into(),
            topics: vec![produce_topic.clone()],
            subscriptions_per_topic: 0,
            rate: None,
            producer: kafka::ProducerSettings {
                acks: "all".into(),
                ..base.producer.clone()
            },
            ..base.clone()
        };
        let max_produce = engine::run(&produce_spec)?;

        let count = kafka::topic_record_count(&base.bootstrap, &produce_topic, timeout)
            .context("counting records for the consume stage")?;
        say(&format!(
            "suite: max consume of {} records ...",
            group_thousands(count as f64)
        ));
        let consume_spec = LoadSpec {
            name: "max consume".into(),
            topics: vec![produce_topic.clone()],
            producers_per_topic: 0,
            subscriptions_per_topic: 1,
            consume_from_beginning: true,
            consume_until: Some(count),
            warmup: Duration::ZERO,
            duration: (base.duration + base.warmup) * 4 + Duration::from_secs(30),
            ..base.clone()
        };
        let max_consume = engine::run(&consume_spec)?;

        created.extend(
            kafka::create_topics(
                &base.bootstrap,
                std::slice::from_ref(&e2e_topic),
                base.partitions,
                timeout,
            )
            .context("creating the e2e topic")?,
        );
        let half = max_produce
            .produced
            .as_ref()
            .map(|t| t.msg_per_sec * 0.5)
            .filter(|r| *r >= 1.0)
            .context("max produce measured no throughput; cannot derive the 50% rate")?;
        say(&format!(
            "suite: end-to-end latency at {} msg/s (50% of max) ...",
            group_thousands(half)
        ));
        let e2e_spec = LoadSpec {
            name: "e2e @ 50% of max produce".into(),
            topics: vec![e2e_topic.clone()],
            subscriptions_per_topic: 1,
            rate: Some(half),
            consume_from_beginning: false,
            producer: kafka::ProducerSettings {
                acks: "all".into(),
                ..base.producer.clone()
            },
            ..base.clone()
        };
        let e2e_half_load = engine::run(&e2e_spec)?;
        let ratios = ratios(&limits, &max_produce, &max_consume, &e2e_half_load);
        Ok(SuiteReport {
            limits,
            max_produce,
            max_consume,
            e2e_half_load,
            ratios,
        })
    })();
    if !cfg.keep_topics {
        if let Err(e) = kafka::delete_topics(&base.bootstrap, &created, timeout) {
            eprintln!("warning: could not delete suite topics {created:?}: {e:#}");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{LatencySummary, Throughput};

    fn report(
        produced_mb: Option<f64>,
        consumed_mb: Option<f64>,
        e2e_p99: Option<f64>,
    ) -> RunReport {
        let tp = |mb: f64| {
            Throughput::new(
                (mb * 1e6 / 1000.0) as u64,
                (mb * 1e6) as u64,
                Duration::from_secs(1),
            )
        };
        RunReport {
            name: "x".into(),
            topics: 1,
            partitions: 1,
            message_size: 1000,
            target_rate: None,
            acks: "all".into(),
            produced: produced_mb.map(tp),
            consumed: consumed_mb.map(tp),
            produce_latency: None,
            e2e_latency: e2e_p99.map(|p| LatencySummary {
                count: 1,
                mean_ms: p,
                p50_ms: p,
                p90_ms: p,
                p99_ms: p,
                p999_ms: p,
                max_ms: p,
            }),
            acked_total: 0,
            consumed_total: 0,
            produce_errors: 0,
            consume_errors: 0,
            first_error: None,
            broker: None,
            client: None,
            charts: Default::default(),
        }
    }

    #[test]
    fn ratios_against_references_and_targets() {
        let limits = Limits {
            loopback_bytes_per_sec: Some(2e9), // 2000 MB/s
            direct_write_bytes_per_sec: Some(1e9),
            direct_read_bytes_per_sec: Some(4e9),
            fdatasync_latency: Some(LatencySummary {
                count: 1,
                mean_ms: 1.0,
                p50_ms: 1.0,
                p90_ms: 1.0,
                p99_ms: 2.0,
                p999_ms: 2.0,
                max_ms: 2.0,
            }),
            ..Limits::default()
        };
        let rows = ratios(
            &limits,
            &report(Some(1200.0), None, None),
            &report(None, Some(1000.0), None),
            &report(None, None, Some(6.0)),
        );
        assert_eq!(rows.len(), 5);
        assert!((rows[0].ratio - 0.6).abs() < 1e-9);
        assert_eq!(rows[0].pass, Some(true));
        assert!((rows[1].ratio - 1.2).abs() < 1e-9);
        assert_eq!(rows[1].pass, None);
        assert!((rows[2].ratio - 0.5).abs() < 1e-9);
        assert_eq!(rows[2].pass, Some(false), "50% < 70% consume target");
        assert!((rows[3].ratio - 0.25).abs() < 1e-9);
        assert_eq!(rows[3].reference_name, "O_DIRECT read");
        assert!((rows[4].ratio - 3.0).abs() < 1e-9);
        assert_eq!(rows[4].pass, Some(false), "6 ms > 5 ms");
        let table = ratio_table(&rows);
        assert!(table.contains("60.0%") && table.contains("NO"), "{table}");
    }

    #[test]
    fn missing_measurements_drop_rows() {
        let rows = ratios(
            &Limits::default(),
            &report(Some(1.0), None, None),
            &report(None, Some(1.0), None),
            &report(None, None, Some(1.0)),
        );
        assert!(rows.is_empty());
    }
}
