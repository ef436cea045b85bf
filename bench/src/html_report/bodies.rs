//! The pages of the workloads that start their own brokers: `partitions` (one curve per
//! partition count), `tls` (per listener and direction) and `replication` (per round),
//! built from the shared pieces of `html_report.rs`.

use std::fmt::Write as _;

use anyhow::Result;

use super::{
    esc, kv_table, mb_per_sec, percentile_chart, points, push_chart, table, time_chart,
    SamplesToPoints, Series, MIB,
};
use crate::partitions_report::PartitionsReport;
use crate::replication::ReplicationReport;
use crate::stats::{group_thousands, CurvePoint, LatencySummary};
use crate::timeline::RunCharts;
use crate::tls_report::{Direction, Spread, TlsReport};

/// The body of a `partitions` page: the per-count table, one curve per partition count
/// (ack and e2e latency, throughput, broker CPU and RSS during the load), the settings.
pub fn partitions_body(r: &PartitionsReport) -> Result<String> {
    let mut out = String::from("<section><h2>Settings of the run</h2>\n");
    out.push_str(&kv_table(&[
        ("broker binary".into(), r.sluice_bin.clone()),
        ("broker cores (shards)".into(), r.cores.to_string()),
        (
            "broker settings".into(),
            if r.settings.is_empty() {
                "–".into()
            } else {
                r.settings.join(", ")
            },
        ),
        (
            "load".into(),
            format!(
                "{} MB/s of {} B records, acks=all",
                r.rate_mb_per_sec, r.message_size
            ),
        ),
        (
            "producers / consumers".into(),
            format!(
                "{} ({}) / {}",
                r.producers,
                if r.raw_producers {
                    "raw protocol"
                } else {
                    "librdkafka"
                },
                r.consumers
            ),
        ),
        (
            "linger.ms / batch.size".into(),
            format!("{} / {}", r.linger_ms, r.batch_size),
        ),
        (
            "warm-up + window, idle period".into(),
            format!(
                "{} + {} s, {} s",
                r.warmup_seconds, r.duration_seconds, r.idle_seconds
            ),
        ),
    ]));
    out.push_str("</section>\n<section><h2>Per partition count</h2>\n");
    let f2 = |v: Option<f64>| v.map_or("–".into(), |s| format!("{s:.2}"));
    let rows: Vec<Vec<String>> = r
        .layouts
        .iter()
        .map(|l| {
            let load = l.load.as_ref();
            let lat = |f: fn(&LatencySummary) -> f64,
                       which: fn(
                &crate::partitions_report::LoadFigures,
            ) -> &Option<LatencySummary>| {
                load.and_then(|x| which(x).as_ref())
                    .map_or("–".into(), |s| format!("{:.1}", f(s)))
            };
            vec![
                l.layout.clone(),
                group_thousands(l.partitions as f64),
                f2(l.create_seconds),
                f2(l.clean_start.map(|t| t.all_led_seconds)),
                f2(l.recovery_start.map(|t| t.all_led_seconds)),
                l.footprint_after_recovery
                    .map_or("–".into(), |f| format!("{:.0}", f.rss_bytes as f64 / MIB)),
                f2(l.idle_cpu_percent_of_core),
                load.and_then(|x| x.produced.as_ref())
                    .map_or("–".into(), |t| format!("{:.1}", t.mb_per_sec)),
                lat(|s| s.p50_ms, |x| &x.ack_latency),
                lat(|s| s.p99_ms, |x| &x.ack_latency),
                lat(|s| s.p999_ms, |x| &x.ack_latency),
                lat(|s| s.p99_ms, |x| &x.e2e_latency),
                load.map_or("–".into(), |x| {
                    format!("{:.0}", x.broker_cpu_percent_of_core)
                }),
                f2(load.and_then(|x| x.broker_cpu_s_per_gb)),
                l.errors.len().to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "layout",
            "partitions",
            "create s",
            "clean start s",
            "kill -9 start s",
            "idle RSS MiB",
            "idle CPU %",
            "load MB/s",
            "ack p50 ms",
            "ack p99 ms",
            "ack p99.9 ms",
            "e2e p99 ms",
            "broker CPU %",
            "CPU s/GB",
            "errors",
        ],
        &rows,
    ));
    for l in &r.layouts {
        for e in &l.errors {
            let _ = writeln!(out, "<p class=\"warn\">{}: {}</p>", esc(&l.layout), esc(e));
        }
        for n in &l.notes {
            let _ = writeln!(out, "<p>{}: {}</p>", esc(&l.layout), esc(n));
        }
    }
    out.push_str("</section>\n<section><h2>During the load, one curve per partition count</h2>\n");
    let loads: Vec<(String, &crate::partitions_report::LoadFigures)> = r
        .layouts
        .iter()
        .filter_map(|l| {
            l.load.as_ref().map(|x| {
                // two layouts can have one total (10x100, 1x1000): name the layout too
                let n = group_thousands(l.partitions as f64);
                let name = if l.topics > 1 {
                    format!("{n} partitions ({} topics)", l.topics)
                } else {
                    format!("{n} partitions")
                };
                (name, x)
            })
        })
        .collect();
    let curves = |f: fn(&RunCharts) -> &Vec<CurvePoint>| -> Vec<(String, &[CurvePoint])> {
        loads
            .iter()
            .map(|(n, x)| (n.clone(), f(&x.charts).as_slice()))
            .collect()
    };
    push_chart(
        &mut out,
        percentile_chart(
            "Produce ack latency (from the send) by percentile",
            &curves(|c| &c.ack_curve),
        ),
    )?;
    push_chart(
        &mut out,
        percentile_chart(
            "End-to-end latency by percentile",
            &curves(|c| &c.e2e_curve),
        ),
    )?;
    let window = loads.first().and_then(|(_, x)| x.charts.window_seconds);
    let series = |f: &SamplesToPoints<'_>| -> Vec<Series> {
        loads
            .iter()
            .map(|(n, x)| Series {
                name: n.clone(),
                points: f(&x.charts.timeline),
            })
            .collect()
    };
    let size = r.message_size;
    push_chart(
        &mut out,
        time_chart(
            "Acked MB/s per second",
            "MB/s (10^6 B of payload)",
            &series(&|t| mb_per_sec(t, size, |s| s.acked)),
            window,
        ),
    )?;
    push_chart(
        &mut out,
        time_chart(
            "Broker CPU per second",
            "% of one core",
            &series(&|t| points(t, |s| s.broker_cpu_percent, |v| v)),
            window,
        ),
    )?;
    push_chart(
        &mut out,
        time_chart(
            "Broker resident memory",
            "RSS, MiB",
            &series(&|t| points(t, |s| s.broker_rss_bytes, |v| v as f64 / MIB)),
            window,
        ),
    )?;
    out.push_str("</section>\n");
    Ok(out)
}

/// The body of a `tls` page: settings, the per-listener medians and the TLS/PLAINTEXT
/// ratios, then one curve per phase (listener and round): produce-ack latency by
/// percentile, produce and consume MB/s and broker CPU per second.
pub fn tls_body(r: &TlsReport) -> Result<String> {
    let mut out = String::from("<section><h2>Settings of the run</h2>\n");
    out.push_str(&kv_table(&[
        ("broker binary".into(), r.sluice_bin.clone()),
        ("listeners".into(), r.listeners.clone()),
        ("SASL mechanism".into(), r.sasl_mechanism.clone()),
        ("broker cores (shards)".into(), r.cores.to_string()),
        (
            "broker settings".into(),
            if r.settings.is_empty() {
                "–".into()
            } else {
                r.settings.join(", ")
            },
        ),
        ("rounds".into(), r.rounds.to_string()),
        (
            "warm-up + window per phase".into(),
            format!("{} + {} s", r.warmup_seconds, r.duration_seconds),
        ),
        (
            "topic".into(),
            format!(
                "{} partitions, {} B records, acks=all",
                r.partitions, r.message_size
            ),
        ),
        (
            "producers / consumers".into(),
            format!("{} / {}", r.producers, r.consumers),
        ),
        (
            "linger.ms / batch.size".into(),
            format!("{} / {}", r.linger_ms, r.batch_size),
        ),
    ]));
    out.push_str("</section>\n<section><h2>Per listener, median (min..max) over the rounds</h2>\n");
    let cell = |s: Option<Spread>, d: usize| {
        s.map_or("–".into(), |s| {
            format!("{:.d$} ({:.d$}..{:.d$})", s.median, s.min, s.max)
        })
    };
    let rows: Vec<Vec<String>> = r
        .summary
        .iter()
        .map(|s| {
            vec![
                s.protocol.name().to_string(),
                cell(s.produce_mb_per_sec, 1),
                cell(s.consume_mb_per_sec, 1),
                cell(s.produce_cpu_s_per_gb, 2),
                cell(s.consume_cpu_s_per_gb, 2),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "listener",
            "produce MB/s",
            "consume MB/s",
            "broker CPU s/GB produce",
            "broker CPU s/GB consume",
        ],
        &rows,
    ));
    let rows: Vec<Vec<String>> = r
        .ratios
        .iter()
        .map(|x| {
            vec![
                x.protocol.name().to_string(),
                direction(x.direction).to_string(),
                format!("{:.1} %", x.ratio * 100.0),
                format!("{:.1} %", x.cost * 100.0),
                x.target.clone(),
                if x.pass { "PASS" } else { "MISS" }.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "listener",
            "direction",
            "of PLAINTEXT",
            "cost",
            "target",
            "",
        ],
        &rows,
    ));
    for e in &r.errors {
        let _ = writeln!(out, "<p class=\"warn\">{}</p>", esc(e));
    }
    out.push_str("</section>\n<section><h2>One curve per phase (listener, round)</h2>\n");
    let phases = |d: Direction| -> Vec<(String, &RunCharts)> {
        r.phases
            .iter()
            .filter(|p| p.direction == d)
            .map(|p| (format!("{} r{}", p.protocol.name(), p.round + 1), &p.charts))
            .collect()
    };
    let (produce, consume) = (phases(Direction::Produce), phases(Direction::Consume));
    let curves: Vec<(String, &[CurvePoint])> = produce
        .iter()
        .map(|(n, c)| (n.clone(), c.ack_curve.as_slice()))
        .collect();
    push_chart(
        &mut out,
        percentile_chart("Produce ack latency by percentile (max rate)", &curves),
    )?;
    let size = r.message_size;
    let series = |list: &[(String, &RunCharts)], f: &SamplesToPoints<'_>| -> Vec<Series> {
        list.iter()
            .map(|(n, c)| Series {
                name: n.clone(),
                points: f(&c.timeline),
            })
            .collect()
    };
    let window = produce.first().and_then(|(_, c)| c.window_seconds);
    push_chart(
        &mut out,
        time_chart(
            "Produce: acked MB/s per second",
            "MB/s (10^6 B of payload)",
            &series(&produce, &|t| mb_per_sec(t, size, |s| s.acked)),
            window,
        ),
    )?;
    push_chart(
        &mut out,
        time_chart(
            "Produce: broker CPU per second",
            "% of one core",
            &series(&produce, &|t| points(t, |s| s.broker_cpu_percent, |v| v)),
            window,
        ),
    )?;
    push_chart(
        &mut out,
        time_chart(
            "Consume: received MB/s per second",
            "MB/s (10^6 B of payload)",
            &series(&consume, &|t| mb_per_sec(t, size, |s| s.received)),
            None,
        ),
    )?;
    push_chart(
        &mut out,
        time_chart(
            "Consume: broker CPU per second",
            "% of one core",
            &series(&consume, &|t| points(t, |s| s.broker_cpu_percent, |v| v)),
            None,
        ),
    )?;
    out.push_str("</section>\n");
    Ok(out)
}

/// The body of a `replication` page: the command's own tables (RF1 against RF3, the
/// targets), then one curve per cluster run (round, RF): ack latency of the max phase and
/// end-to-end latency of the fixed-rate phase by percentile, acked MB/s per second of
/// both. The nodes' CPU is in the tables only: the engine samples no single broker pid
/// in a cluster.
pub fn replication_body(r: &ReplicationReport) -> Result<String> {
    let mut out = String::from("<section><h2>Results</h2>\n<pre>");
    out.push_str(&esc(&crate::replication::table(r)));
    out.push_str("</pre>\n</section>\n<section><h2>One curve per cluster run</h2>\n");
    let name =
        |c: &crate::replication::ClusterRun| format!("RF{} r{}", c.replication_factor, c.round);
    let max_curves: Vec<(String, &[CurvePoint])> = r
        .runs
        .iter()
        .map(|c| (name(c), c.max.run.charts.ack_curve.as_slice()))
        .collect();
    push_chart(
        &mut out,
        percentile_chart(
            "Max produce (acks=all): ack latency by percentile",
            &max_curves,
        ),
    )?;
    let e2e_curves: Vec<(String, &[CurvePoint])> = r
        .runs
        .iter()
        .map(|c| (name(c), c.e2e.run.charts.e2e_curve.as_slice()))
        .collect();
    push_chart(
        &mut out,
        percentile_chart(
            &format!("End-to-end latency by percentile at {} MB/s", r.e2e_rate_mb),
            &e2e_curves,
        ),
    )?;
    let size = r.message_size;
    for (title, pick) in [
        ("Max produce: acked MB/s per second", true),
        ("Fixed-rate phase: acked MB/s per second", false),
    ] {
        let series: Vec<Series> = r
            .runs
            .iter()
            .map(|c| {
                let phase = if pick { &c.max } else { &c.e2e };
                Series {
                    name: name(c),
                    points: mb_per_sec(&phase.run.charts.timeline, size, |s| s.acked),
                }
            })
            .collect();
        let window = r
            .runs
            .first()
            .and_then(|c| if pick { &c.max } else { &c.e2e }.run.charts.window_seconds);
        push_chart(
            &mut out,
            time_chart(title, "MB/s (10^6 B of payload)", &series, window),
        )?;
    }
    out.push_str("</section>\n");
    Ok(out)
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Produce => "produce",
        Direction::Consume => "consume",
    }
}
