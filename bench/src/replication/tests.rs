//! Unit tests of `replication.rs`.

use super::*;
use crate::stats::Throughput;

fn lat(p: f64) -> LatencySummary {
    LatencySummary {
        count: 100,
        mean_ms: p,
        p50_ms: p,
        p90_ms: p * 2.0,
        p99_ms: p * 4.0,
        p999_ms: p * 8.0,
        max_ms: p * 10.0,
    }
}

fn phase(mb: f64, latency: LatencySummary, e2e: bool) -> Phase {
    let run = RunReport {
        name: "x".into(),
        topics: 1,
        partitions: 16,
        message_size: 1000,
        target_rate: None,
        acks: "all".into(),
        produced: Some(Throughput::new(
            (mb * 1000.0) as u64,
            (mb * 1e6) as u64,
            Duration::from_secs(1),
        )),
        consumed: None,
        produce_latency: Some(latency.clone()),
        e2e_latency: e2e.then(|| latency.clone()),
        acked_total: 0,
        consumed_total: 0,
        produce_errors: 0,
        consume_errors: 0,
        first_error: None,
        broker: None,
        client: None,
        charts: Default::default(),
    };
    Phase {
        mb_per_sec: mb,
        msg_per_sec: mb * 1000.0,
        ack_latency: Some(latency.clone()),
        e2e_latency: e2e.then_some(latency),
        consumed_mb_per_sec: None,
        gb_acked: mb * 25.0 / 1000.0,
        broker_cpu_seconds: mb * 25.0 / 1000.0 * 2.0,
        wall_seconds: 25.0,
        broker_cpu_s_per_gb: Some(2.0),
        nodes: vec![],
        client_cpu_percent_of_core: Some(90.0),
        min_isr_after: Some(3),
        errors: 0,
        first_error: None,
        disk_settle_seconds: 0.0,
        disk_quiet: true,
        run,
    }
}

fn cluster_run(round: u32, rf: u32, mb: f64, e2e_p50: f64) -> ClusterRun {
    ClusterRun {
        round,
        replication_factor: rf,
        nodes: rf,
        min_insync_replicas: (rf > 1).then_some(2),
        max: phase(mb, lat(100.0), false),
        e2e: phase(50.0, lat(e2e_p50), true),
        isr_shrinks: 0,
    }
}

#[test]
fn spread_takes_min_median_max() {
    assert_eq!(Spread::of(&[]), None);
    let s = Spread::of(&[3.0, 1.0, 2.0]).expect("values");
    assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
    let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]).expect("values");
    assert_eq!(s.median, 2.5, "mean of the two middle values");
    let s = Spread::of(&[f64::NAN, 5.0]).expect("the finite value");
    assert_eq!((s.min, s.median, s.max), (5.0, 5.0, 5.0));
}

#[test]
fn ratios_pair_rounds_and_skip_incomplete_ones() {
    let runs = vec![
        cluster_run(1, 1, 400.0, 1.0),
        cluster_run(1, 3, 200.0, 2.0),
        cluster_run(2, 3, 150.0, 2.0), // alternate order: RF3 first
        cluster_run(2, 1, 300.0, 1.0),
        cluster_run(3, 1, 500.0, 1.0), // no RF3 in round 3
    ];
    let r = ratios_per_round(&runs);
    assert_eq!(r, vec![0.5, 0.5]);
    let s = summarize(&runs, 1);
    assert_eq!(s.rounds, 3);
    assert_eq!(s.mb_per_sec.as_ref().map(|x| x.median), Some(400.0));
    let s3 = summarize(&runs, 3);
    assert_eq!(s3.rounds, 2);
    assert_eq!(s3.mb_per_sec.as_ref().map(|x| x.median), Some(175.0));
    // e2e p99 = 4 × p50 in these fixtures
    assert_eq!(s3.e2e_p99_ms.as_ref().map(|x| x.median), Some(8.0));
}

#[test]
fn checks_judge_the_medians() {
    let runs = vec![
        cluster_run(1, 1, 400.0, 1.0),
        cluster_run(1, 3, 100.0, 3.0), // p99 12 ms
    ];
    let ratio = Spread::of(&ratios_per_round(&runs));
    let c = checks(ratio.as_ref(), &summarize(&runs, 3), 50.0);
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].measured, Some(25.0));
    assert_eq!(c[0].pass, Some(false), "25 % < 40 %");
    assert_eq!(c[1].measured, Some(12.0));
    assert_eq!(c[1].pass, Some(false), "12 ms > 10 ms");
    assert!(c[1].note.is_none());

    let runs = vec![
        cluster_run(1, 1, 400.0, 1.0),
        cluster_run(1, 3, 160.0, 2.5), // exactly 40 %, p99 exactly 10 ms
    ];
    let ratio = Spread::of(&ratios_per_round(&runs));
    let c = checks(ratio.as_ref(), &summarize(&runs, 3), 20.0);
    assert_eq!(c[0].pass, Some(true));
    assert_eq!(c[1].pass, Some(true));
    assert!(c[1].note.as_deref().is_some_and(|n| n.contains("20")));

    let c = checks(None, &ClusterSummary::default(), 50.0);
    assert_eq!(c[0].pass, None);
    assert_eq!(c[1].pass, None);
}

#[test]
fn table_shows_rounds_medians_and_marks() {
    let runs = vec![cluster_run(1, 1, 400.0, 1.0), cluster_run(1, 3, 200.0, 2.0)];
    let ratio_per_round = ratios_per_round(&runs);
    let ratio = Spread::of(&ratio_per_round);
    let rf1 = summarize(&runs, 1);
    let rf3 = summarize(&runs, 3);
    let checks = checks(ratio.as_ref(), &rf3, 50.0);
    let r = ReplicationReport {
        name: "replication".into(),
        sluice_bin: "/x/sluice".into(),
        work_dir: "/tmp/w".into(),
        settings: vec![],
        cores: 1,
        partitions: 16,
        message_size: 1024,
        producers: 1,
        duration_seconds: 20.0,
        warmup_seconds: 5.0,
        e2e_rate_mb: 50.0,
        order: Order::Alternate,
        runs,
        ratio_per_round,
        ratio,
        rf1,
        rf3,
        checks,
    };
    let t = table(&r);
    assert!(t.contains("min.insync.replicas=2"), "{t}");
    assert!(t.contains("50.0 %"), "{t}");
    assert!(t.contains("[PASS] RF3 / RF1 max throughput"), "{t}");
    assert!(t.contains("[PASS] RF3 e2e p99 at 50 MB/s"), "{t}");
    assert!(t.contains("400.0"), "{t}");
    let v = serde_json::to_value(&r).expect("serializes");
    assert_eq!(v["ratio"]["median"], serde_json::json!(0.5));
    assert_eq!(v["rf3"]["mb_per_sec"]["median"], serde_json::json!(200.0));
    assert_eq!(v["checks"][0]["pass"], serde_json::json!(true));
    assert_eq!(
        v["runs"][1]["max"]["broker_cpu_s_per_gb"],
        serde_json::json!(2.0)
    );
    assert_eq!(v["order"], serde_json::json!("Alternate"));

    // the --report page: one curve per cluster run on each plot
    let mut r = r;
    let mut h = crate::stats::LatencyHistogram::new();
    for us in 1..=5_000u64 {
        h.record(Duration::from_micros(us * 7));
    }
    for c in &mut r.runs {
        c.max.run.charts.ack_curve = h.percentile_curve();
        c.e2e.run.charts.e2e_curve = h.percentile_curve();
        c.max.run.charts.timeline = (1..=4)
            .map(|t| crate::timeline::TimelineSample {
                t_seconds: f64::from(t),
                acked: 1000,
                ..Default::default()
            })
            .collect();
    }
    let html = crate::html_report::replication_body(&r).expect("renders");
    assert_eq!(
        html.matches("<svg").count(),
        3,
        "no samples: no e2e-phase MB/s plot"
    );
    for want in [
        "Max produce (acks=all): ack latency by percentile",
        "End-to-end latency by percentile at 50 MB/s",
        "Max produce: acked MB/s per second",
        "RF1 r1",
        "RF3 r1",
        "min.insync.replicas=2",
    ] {
        assert!(html.contains(want), "missing {want:?}");
    }
}

#[test]
fn small_helpers() {
    assert_eq!(msg_rate(50.0, 1024), 50e6 / 1024.0);
    assert_eq!(round_order(Order::Alternate, 1), [1, 3]);
    assert_eq!(round_order(Order::Alternate, 2), [3, 1]);
    assert_eq!(round_order(Order::Fixed, 2), [1, 3]);
    assert_eq!(bootstrap_list(&[1, 2]), "127.0.0.1:1,127.0.0.1:2");
    assert_eq!(parse_pid(" 4242\n"), Some(4242));
    assert_eq!(parse_pid("0"), None);
    assert_eq!(parse_pid("x"), None);
    let log = "a\n2026-12-02T05:00:00Z WARN sluice_broker::hw: followers fell behind: shrinking the ISR topic=t\nb ISR changed\n";
    assert_eq!(count_isr_shrinks(log), 1);
    assert_eq!(
        cluster_settings(&[("a.b".into(), "1".into()), ("c".into(), "x=y".into())]).expect("plain"),
        "a.b=1 c=x=y"
    );
    assert!(cluster_settings(&[("a".into(), "x y".into())]).is_err());
}
