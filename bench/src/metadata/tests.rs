//! Unit tests of `metadata.rs`.

use std::time::SystemTime;

use super::*;

const LOG: &str = "\
===== 2025-12-02 01:00:00 local-cluster.sh: starting node 2: /bin/sluice --listen x
2025-12-02T01:00:01.000000Z  INFO sluice_broker::quorum: metadata quorum leader node=2 leader=Some(1) term=1
===== 2025-12-02 01:05:00 local-cluster.sh: starting node 2: /bin/sluice --listen x
2025-12-02T01:05:01.250000Z  INFO sluice_broker::quorum: metadata quorum leader node=2 leader=None term=3
\x1b[2m2025-12-02T01:05:02.500000Z\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2msluice_broker::quorum\x1b[0m\x1b[2m:\x1b[0m metadata quorum leader \x1b[3mnode\x1b[0m\x1b[2m=\x1b[0m2 \x1b[3mleader\x1b[0m\x1b[2m=\x1b[0mSome(2) \x1b[3mterm\x1b[0m\x1b[2m=\x1b[0m4
2025-12-02T01:05:02.600000Z  WARN sluice_broker::quorum: node 2 is not the active controller; node 3 is
2025-12-02T01:05:02.700000Z  INFO sluice_broker::quorum: active controller node=2 term=4
";

#[test]
fn node_view_reads_the_current_run_only() {
    let v = node_view(LOG);
    let l = v.last_leader.expect("leader line");
    assert_eq!(l.leader, Some(2));
    assert_eq!(
        l.at,
        parse_rfc3339_utc("2025-12-02T01:05:02.5Z"),
        "timestamp of the ANSI-coloured line"
    );
    let (at, term) = v.active_since_leader.expect("active line");
    assert_eq!(term, Some(4));
    assert_eq!(at, parse_rfc3339_utc("2025-12-02T01:05:02.700Z"));
    // Before the active line, the leader has not become active yet.
    let cut = LOG.find("2025-12-02T01:05:02.700000Z").expect("present");
    assert_eq!(node_view(&LOG[..cut]).active_since_leader, None);
}

#[test]
fn unfenced_lines_after_a_time() {
    let log = "2025-12-02T01:00:00.000000Z  INFO c: broker unfenced node=3 epoch=9
2025-12-02T01:00:05.000000Z  INFO c: broker unfenced node=13 epoch=20
2025-12-02T01:00:06.000000Z  INFO c: broker unfenced node=3 epoch=21
";
    let since = parse_rfc3339_utc("2025-12-02T01:00:01Z").expect("time");
    assert_eq!(
        unfenced_line(log, 3, since),
        parse_rfc3339_utc("2025-12-02T01:00:06Z")
    );
    assert_eq!(
        unfenced_line(log, 13, since),
        parse_rfc3339_utc("2025-12-02T01:00:05Z")
    );
    assert_eq!(unfenced_line(log, 1, since), None);
}

#[test]
fn leader_lines_parse() {
    let l = parse_leader_line("x INFO q: metadata quorum leader node=1 leader=Some(13) term=2");
    assert_eq!(l.map(|l| l.leader), Some(Some(13)));
    let n = parse_leader_line("x INFO q: metadata quorum leader node=1 leader=None term=2");
    assert_eq!(n.map(|l| l.leader), Some(None));
    assert!(parse_leader_line("something else leader=Some(1)").is_none());
    assert_eq!(strip_ansi("\x1b[1;32mok\x1b[0m!"), "ok!");
}

#[test]
fn majority_needs_more_than_half() {
    let v = |leader: Option<u64>| NodeView {
        last_leader: Some(LeaderLine { at: None, leader }),
        active_since_leader: None,
    };
    assert_eq!(
        majority_leader(&[v(Some(1)), v(Some(1)), v(Some(2))]),
        Some(1)
    );
    assert_eq!(majority_leader(&[v(Some(1)), v(None), v(Some(2))]), None);
    assert_eq!(majority_leader(&[v(Some(3)), v(Some(3))]), Some(3));
    assert_eq!(majority_leader(&[v(Some(3)), NodeView::default()]), None);
}

#[test]
fn timestamps_parse() {
    let t = |s| {
        parse_rfc3339_utc(s)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
    };
    assert_eq!(t("1970-01-01T00:00:00Z"), Some(0.0));
    assert_eq!(t("2000-03-01T00:00:00.5Z"), Some(951_868_800.5));
    assert_eq!(t("2024-02-29T23:59:59.000001Z"), Some(1_709_251_199.000001));
    assert_eq!(t("2024-02-29T23:59:59+01:00"), None);
    assert_eq!(t("not a time"), None);
}

#[test]
fn cluster_env_parses() {
    let e = parse_cluster_env(
        "# c\nN=3\nCLUSTER_ID=x\nKAFKA_PORTS=1,2,3\nCONTROLLER_PORTS=4,5,6\nSETTINGS=a=1 b=2\n",
    )
    .expect("parses");
    assert_eq!(e.n, 3);
    assert_eq!(e.kafka_ports, vec![1, 2, 3]);
    assert_eq!(e.settings, "a=1 b=2");
    assert!(parse_cluster_env("N=2\nKAFKA_PORTS=1\n").is_err());
}

#[test]
fn summaries() {
    let s = MsSummary::of(&[5.0, 1.0, 3.0, 9.0]).expect("values");
    assert_eq!(
        (s.min_ms, s.median_ms, s.max_ms, s.mean_ms),
        (1.0, 4.0, 9.0, 4.5)
    );
    assert_eq!(MsSummary::of(&[2.0]).map(|s| s.median_ms), Some(2.0));
    assert!(MsSummary::of(&[]).is_none());
    assert_eq!(parse_secs("250ms"), Ok(Duration::from_millis(250)));
    assert!(parse_secs("0").is_err());
}
