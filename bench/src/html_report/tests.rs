//! Unit tests of `html_report.rs`.

use std::time::Duration;

use super::*;
use crate::partitions_report::{LayoutRun, LoadFigures, PartitionsReport, StartTimes};
use crate::procstat::ProcUsage;
use crate::stats::{LatencyHistogram, Throughput};
use crate::tls_report::{Direction, TlsReport};

/// A histogram of `n` samples spread over 1 .. `top_us` µs.
fn hist(n: u64, top_us: u64) -> LatencyHistogram {
    let mut h = LatencyHistogram::new();
    for i in 1..=n {
        h.record(Duration::from_micros(1 + i * top_us / n));
    }
    h
}

fn charts(seconds: u64, acked: u64, received: u64) -> RunCharts {
    let timeline = (1..=seconds)
        .map(|t| TimelineSample {
            t_seconds: t as f64,
            acked,
            received,
            broker_cpu_percent: Some(40.0 + t as f64),
            broker_rss_bytes: Some((100 + t) << 20),
            client_cpu_percent: Some(90.0),
        })
        .collect();
    RunCharts {
        timeline,
        ack_curve: hist(50_000, 20_000).percentile_curve(),
        e2e_curve: if received > 0 {
            hist(50_000, 40_000).percentile_curve()
        } else {
            Vec::new()
        },
        window_seconds: Some((2.0, seconds as f64 - 1.0)),
    }
}

fn run_report(e2e: bool) -> RunReport {
    let h = hist(50_000, 20_000);
    RunReport {
        name: if e2e { "e2e" } else { "produce" }.into(),
        topics: 1,
        partitions: 16,
        message_size: 1024,
        target_rate: e2e.then_some(10_000.0),
        acks: "all".into(),
        produced: Some(Throughput::new(50_000, 51_200_000, Duration::from_secs(5))),
        consumed: e2e.then(|| Throughput::new(50_000, 51_200_000, Duration::from_secs(5))),
        produce_latency: h.summary(),
        e2e_latency: e2e.then(|| hist(50_000, 40_000).summary()).flatten(),
        acked_total: 70_000,
        consumed_total: if e2e { 70_000 } else { 0 },
        produce_errors: 0,
        consume_errors: 0,
        first_error: None,
        broker: Some(ProcUsage {
            pid: 4242,
            cpu_seconds: 3.0,
            cpu_percent_of_core: 45.0,
            peak_rss_bytes: 120 << 20,
        }),
        client: None,
        charts: charts(8, 10_000, if e2e { 10_000 } else { 0 }),
    }
}

/// Self-contained: no script, no reference outside the page but the SVG namespace.
fn assert_self_contained(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"), "doctype");
    assert!(html.trim_end().ends_with("</html>"), "closed");
    assert!(!html.to_lowercase().contains("<script"), "no script");
    let rest = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !rest.contains("http://") && !rest.contains("https://"),
        "external reference"
    );
    assert!(
        !rest.contains("<link") && !rest.contains("<img"),
        "external resource"
    );
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
}

fn info() -> PageInfo {
    PageInfo {
        title: "sluice-bench test <run>".into(),
        settings: vec![("command line".into(), "sluice-bench --report x e2e".into())],
    }
}

#[test]
fn run_page_has_the_plots_and_settings() {
    let html = page(
        &info(),
        &run_section("e2e", &run_report(true)).expect("renders"),
    );
    // SLUICE_REPORT_SAMPLE=FILE keeps the page, to look at
    if let Ok(out) = std::env::var("SLUICE_REPORT_SAMPLE") {
        std::fs::write(out, &html).expect("sample page");
    }
    assert_self_contained(&html);
    assert!(
        html.contains("sluice-bench test &lt;run&gt;"),
        "escaped title"
    );
    assert!(html.contains("sluice-bench --report x e2e"));
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "percentiles, throughput, CPU, RSS"
    );
    for want in [
        "e2e: latency by percentile",
        "produce ack",
        "end-to-end",
        "e2e: throughput per second",
        "acked (produce)",
        "received (consume)",
        "e2e: CPU per second",
        "sluice-bench (client)",
        "e2e: broker resident memory",
        "broker RSS",
        "latency, ms (log scale)",
        "\n99.9\n",
        "\n99.99\n",
        "10,000 msg/s",
    ] {
        assert!(html.contains(want), "missing {want:?}");
    }
    // produce only: no consume series, no e2e curve
    let html = page(
        &info(),
        &run_section("produce", &run_report(false)).expect("renders"),
    );
    assert_self_contained(&html);
    assert!(!html.contains("received (consume)") && !html.contains("end-to-end"));
    assert!(html.contains("max (as fast as librdkafka accepts)"));
}

#[test]
fn a_run_without_samples_draws_no_empty_chart() {
    let mut r = run_report(false);
    r.charts = RunCharts::default();
    r.broker = None;
    let html = page(&info(), &run_section("produce", &r).expect("renders"));
    assert_self_contained(&html);
    assert!(!html.contains("<svg"));
    assert!(html.contains("produce ack"), "the latency table stays");
    // no window: a consume-only run is rated from its first record to its last
    assert!(html.contains("from the first record received to the last"));
}

#[test]
fn suite_page_has_references_ratios_and_three_runs() {
    let limits = Limits {
        dir: "/data".into(),
        direct_block_bytes: 1 << 20,
        direct_write_queue_depth: 4,
        direct_read_queue_depth: 16,
        direct_queue_depths_tried: vec![4, 16],
        loopback_bytes_per_sec: Some(4.0e9),
        direct_write_bytes_per_sec: Some(1.5e9),
        direct_read_bytes_per_sec: Some(1.2e9),
        fdatasync_per_sec: Some(3000.0),
        fdatasync_latency: hist(1000, 500).summary(),
        errors: vec!["read probe: EINVAL".into()],
    };
    let (p, c, e) = (run_report(false), run_report(false), run_report(true));
    let ratios = crate::suite::ratios(&limits, &p, &c, &e);
    let r = SuiteReport {
        limits,
        max_produce: p,
        max_consume: c,
        e2e_half_load: e,
        ratios,
    };
    let html = page(&info(), &suite_body(&r).expect("renders"));
    assert_self_contained(&html);
    for want in [
        "Physical references",
        "loopback TCP",
        "4000 MB/s",
        "O_DIRECT write (QD 4, 1024 KiB blocks)",
        "1500 MB/s",
        "4 KiB write + fdatasync",
        "probe failed: read probe: EINVAL",
        "Results against the references",
        "Max produce (acks=all)",
        "Max consume",
        "End-to-end at 50 % of max produce",
    ] {
        assert!(html.contains(want), "missing {want:?}");
    }
    assert_eq!(html.matches("<svg").count(), 4 + 4 + 4);
}

#[test]
fn partitions_page_has_one_curve_per_count() {
    let layout = |p: u32, errors: Vec<String>| LayoutRun {
        layout: format!("1x{p}"),
        topics: 1,
        partitions_per_topic: p,
        partitions: u64::from(p),
        create_seconds: Some(0.5),
        clean_start: Some(StartTimes {
            listening_seconds: 0.1,
            all_led_seconds: 0.3,
        }),
        load: Some(LoadFigures {
            produced: Some(Throughput::new(10_000, 10_240_000, Duration::from_secs(5))),
            ack_latency: hist(10_000, 5_000 * u64::from(p)).summary(),
            e2e_latency: hist(10_000, 9_000).summary(),
            broker_cpu_percent_of_core: 30.0,
            charts: charts(6, 2_000, 2_000),
            ..LoadFigures::default()
        }),
        errors,
        ..LayoutRun::default()
    };
    let r = PartitionsReport {
        name: "partitions".into(),
        sluice_bin: "/bin/sluice".into(),
        work_dir: "/tmp/w".into(),
        cores: 1,
        settings: vec![],
        message_size: 1024,
        rate_mb_per_sec: 2.0,
        warmup_seconds: 1.0,
        duration_seconds: 5.0,
        idle_seconds: 1.0,
        producers: 1,
        consumers: 1,
        linger_ms: 5.0,
        batch_size: 1 << 20,
        raw_producers: false,
        layouts: vec![
            LayoutRun {
                layout: "10x10".into(),
                topics: 10,
                partitions_per_topic: 10,
                ..layout(100, vec![])
            },
            layout(100, vec![]),
            layout(1000, vec!["load: 3 partitions got no acked record".into()]),
            LayoutRun {
                layout: "1x10000".into(),
                partitions: 10_000,
                errors: vec!["creating topics: timed out".into()],
                ..LayoutRun::default()
            },
        ],
    };
    let html = page(&info(), &partitions_body(&r).expect("renders"));
    assert_self_contained(&html);
    assert_eq!(html.matches("<svg").count(), 5);
    for want in [
        "100 partitions (10 topics)",
        "Produce ack latency (from the send) by percentile",
        "End-to-end latency by percentile",
        "Acked MB/s per second",
        "Broker CPU per second",
        "Broker resident memory",
        "100 partitions",
        "1,000 partitions",
        "1x10000: creating topics: timed out",
        "1x1000: load: 3 partitions got no acked record",
        "/bin/sluice",
    ] {
        assert!(html.contains(want), "missing {want:?}");
    }
    // the failed layout has a table row but no curve
    assert!(!html.contains("10,000 partitions"));
}

#[test]
fn tls_page_has_one_curve_per_phase() {
    use crate::tls_report::{summarize, Phase, Protocol};
    let phase = |round: u32, protocol: Protocol, direction: Direction, mb: f64| Phase {
        round,
        protocol,
        direction,
        mb_per_sec: mb,
        msg_per_sec: mb * 1e6 / 1024.0,
        bytes: 1_000_000_000,
        broker_cpu_seconds: 1.0,
        broker_cpu_s_per_gb: Some(1.0),
        client_cpu_percent_of_core: Some(50.0),
        errors: 0,
        first_error: None,
        charts: charts(6, 100_000, 100_000),
    };
    let mut phases = Vec::new();
    for (p, mb) in [
        (Protocol::Plaintext, 600.0),
        (Protocol::Ssl, 450.0),
        (Protocol::SaslSsl, 420.0),
    ] {
        phases.push(phase(0, p, Direction::Produce, mb));
        phases.push(phase(0, p, Direction::Consume, mb * 1.5));
    }
    let summary = summarize(&phases);
    let r = TlsReport {
        name: "tls".into(),
        sluice_bin: "/bin/sluice".into(),
        listeners: "PLAINTEXT / SSL / SASL_SSL".into(),
        sasl_mechanism: "SCRAM-SHA-512".into(),
        cores: 1,
        rounds: 1,
        partitions: 8,
        message_size: 1024,
        ratios: crate::tls_report::ratios(&summary),
        summary,
        phases,
        errors: vec!["SASL_SSL consume: <boom>".into()],
        ..TlsReport::default()
    };
    let html = page(&info(), &tls_body(&r).expect("renders"));
    assert_self_contained(&html);
    assert_eq!(html.matches("<svg").count(), 5);
    for want in [
        "Produce ack latency by percentile (max rate)",
        "Produce: acked MB/s per second",
        "Consume: received MB/s per second",
        "Consume: broker CPU per second",
        "PLAINTEXT r1",
        "SASL_SSL r1",
        "75.0 %",
        "SCRAM-SHA-512",
        "SASL_SSL consume: &lt;boom&gt;",
    ] {
        assert!(html.contains(want), "missing {want:?}");
    }
}

#[test]
fn percentile_axis_labels_and_dates() {
    for (v, want) in [
        (0.0, "0"),
        (0.001, "0.001"),
        (0.1, "0.1"),
        (0.25, "0.25"),
        (2.0, "2"),
        (12.6, "13"),
        (1234.6, "1235"),
        (12e6, "12M"),
    ] {
        assert_eq!(short_number(v), want, "{v}");
    }
    assert_eq!(percentile_label(0.0), "0");
    assert_eq!(percentile_label(1.0), "90");
    assert_eq!(percentile_label(2.0), "99");
    assert_eq!(percentile_label(3.0), "99.9");
    assert_eq!(percentile_label(5.0), "99.999");
    assert!((percentile_x(99.9) - 3.0).abs() < 1e-9);
    assert_eq!(utc_date(0), "1970-01-01 00:00:00");
    assert_eq!(utc_date(1_796_300_000), "2026-12-03 12:13:20");
    assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00");
}

#[test]
fn writes_index_html_into_a_new_dir() {
    let dir = std::env::temp_dir().join(format!("sluice-report-test-{}", std::process::id()));
    let path = write_page(&dir.join("sub"), "<!DOCTYPE html>x").expect("writes");
    assert_eq!(path, dir.join("sub").join("index.html"));
    assert_eq!(
        std::fs::read_to_string(&path).expect("reads"),
        "<!DOCTYPE html>x"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
