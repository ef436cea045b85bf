//! The report of `sluice-bench transactions`: the phases' figures, their medians over the
//! rounds, the transactional / idempotent throughput ratio of each round and issue 15's
//! check, as a table or JSON. Pure: nothing here measures; `transactions` fills it in.
//!
//! ```text
//!  PhaseRun (one per round and mode) ──► summarize ──► ModeSummary (median, min–max)
//!                                    └─► ratios_per_round ──► Spread ──► check (>= 80 %)
//! ```

use std::fmt::Write as _;

use serde::Serialize;

use crate::metadata::strip_ansi;
use crate::replication::{fmt_opt, fmt_spread, Check, Order, Spread};
use crate::stats::{group_thousands, LatencySummary};

/// Transactional throughput (commits every 100 ms) at least this fraction of idempotent
/// throughput (issue 15).
pub const RATIO_TARGET: f64 = 0.80;
/// The commit interval the issue's target is stated for, ms.
pub const TARGET_COMMIT_MS: u64 = 100;

/// How a phase's producers send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mode {
    /// enable.idempotence=true, no transactions: acked records count.
    Idempotent,
    /// A transaction per `ms` of sending: committed records count.
    CommitEveryMs { ms: u64 },
    /// A transaction per `records` records: committed records count.
    CommitEveryRecords { records: u64 },
}

impl Mode {
    /// Short name for tables and progress lines.
    pub fn label(&self) -> String {
        match self {
            Mode::Idempotent => "idempotent".into(),
            Mode::CommitEveryMs { ms } => format!("txn, every {ms} ms"),
            Mode::CommitEveryRecords { records } => {
                format!("txn, every {} rec", group_thousands(*records as f64))
            }
        }
    }

    /// A name usable in topic names and transactional ids.
    pub fn slug(&self) -> String {
        match self {
            Mode::Idempotent => "idem".into(),
            Mode::CommitEveryMs { ms } => format!("{ms}ms"),
            Mode::CommitEveryRecords { records } => format!("{records}rec"),
        }
    }

    pub fn is_transactional(&self) -> bool {
        !matches!(self, Mode::Idempotent)
    }

    /// Whether the open transaction, with `records` sent and open for `open_for_ms`, is
    /// due for its commit (never for idempotent phases).
    pub fn commit_due(&self, records: u64, open_for_ms: u128) -> bool {
        match self {
            Mode::Idempotent => false,
            Mode::CommitEveryMs { ms } => open_for_ms >= u128::from(*ms),
            Mode::CommitEveryRecords { records: n } => records >= *n,
        }
    }
}

/// The phases of `round` (from 1): idempotent, by time, by records in odd rounds and the
/// reverse in even ones (`Order::Alternate`), so drift over the run hits each mode alike.
pub fn round_modes(order: Order, round: u32, commit_ms: u64, commit_records: u64) -> [Mode; 3] {
    let forward = [
        Mode::Idempotent,
        Mode::CommitEveryMs { ms: commit_ms },
        Mode::CommitEveryRecords {
            records: commit_records,
        },
    ];
    match order {
        Order::Alternate if round.is_multiple_of(2) => {
            let [a, b, c] = forward;
            [c, b, a]
        }
        _ => forward,
    }
}

/// Transaction figures of a transactional phase.
#[derive(Clone, Debug, Serialize)]
pub struct TxnFigures {
    /// Transactions committed over the whole phase (warm-up and the last one included).
    pub committed: u64,
    /// Commits that returned inside the measured window, per second.
    pub commits_per_sec: f64,
    /// Mean records per transaction committed inside the window.
    pub records_per_commit: Option<f64>,
    /// Transactions aborted after a failed commit, and their records.
    pub aborted: u64,
    pub records_aborted: u64,
    /// Wall time of each commit that returned inside the window: librdkafka's flush of the
    /// transaction's records still in flight plus `rd_kafka_commit_transaction` (EndTxn).
    pub commit_latency: Option<LatencySummary>,
    /// The flush part of `commit_latency`.
    pub commit_flush_latency: Option<LatencySummary>,
    /// The `rd_kafka_commit_transaction` part of `commit_latency`.
    pub commit_end_latency: Option<LatencySummary>,
    /// Slowest `init_transactions` of the phase's producers, ms.
    pub init_ms_max: f64,
}

/// One mode in one round.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseRun {
    /// Round, from 1.
    pub round: u32,
    pub mode: Mode,
    /// Producer threads (transactional ones each with its own transactional.id).
    pub producers: u32,
    /// Counted payload MB/s in the window: acked records (idempotent) or records of
    /// transactions committed in the window (transactional).
    pub mb_per_sec: f64,
    /// The same in records per second.
    pub msg_per_sec: f64,
    /// Length of the measured window, s.
    pub window_seconds: f64,
    /// Records sent over the whole phase.
    pub records_sent: u64,
    /// Records counted (acked or committed) over the whole phase.
    pub records_counted: u64,
    /// Transactional phases only.
    pub txn: Option<TxnFigures>,
    /// Broker utime + stime over the whole phase.
    pub broker_cpu_seconds: f64,
    /// Wall seconds the CPU figures cover.
    pub wall_seconds: f64,
    /// `broker_cpu_seconds` per GB (10^9 B of payload) counted over the whole phase.
    pub broker_cpu_s_per_gb: Option<f64>,
    /// The bench's own CPU over the phase, % of one core (it shares the cores).
    pub client_cpu_percent_of_core: Option<f64>,
    /// Send, delivery and commit errors.
    pub errors: u64,
    pub first_error: Option<String>,
}

/// One mode over all rounds: median, min and max.
#[derive(Clone, Debug, Serialize)]
pub struct ModeSummary {
    pub mode: Mode,
    pub rounds: usize,
    pub mb_per_sec: Option<Spread>,
    pub commit_p50_ms: Option<Spread>,
    pub commit_p99_ms: Option<Spread>,
    pub commit_p999_ms: Option<Spread>,
    pub broker_cpu_s_per_gb: Option<Spread>,
}

/// WARN and ERROR lines of the node's log over the whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BrokerLog {
    pub warn_lines: u64,
    pub error_lines: u64,
    /// The first few of them.
    pub first: Vec<String>,
}

/// The result of `sluice-bench transactions`.
#[derive(Clone, Debug, Serialize)]
pub struct TransactionsReport {
    /// "transactions".
    pub name: String,
    pub sluice_bin: String,
    /// Work directory (the node log under logs/).
    pub work_dir: String,
    pub settings: Vec<String>,
    pub cores: u32,
    pub partitions: u32,
    pub message_size: usize,
    /// Producer threads of every phase.
    pub producers: u32,
    pub duration_seconds: f64,
    pub warmup_seconds: f64,
    pub commit_ms: u64,
    pub commit_records: u64,
    pub order: Order,
    /// Every phase in the order it ran.
    pub phases: Vec<PhaseRun>,
    /// Idempotent, by time, by records.
    pub summaries: Vec<ModeSummary>,
    /// Commit-by-time MB/s ÷ idempotent MB/s of the same round.
    pub time_ratio_per_round: Vec<f64>,
    pub time_ratio: Option<Spread>,
    /// Commit-by-records MB/s ÷ idempotent MB/s of the same round.
    pub records_ratio_per_round: Vec<f64>,
    pub records_ratio: Option<Spread>,
    pub checks: Vec<Check>,
    pub broker_log: BrokerLog,
}

/// The figures of `mode` over the rounds.
pub fn summarize(phases: &[PhaseRun], mode: Mode) -> ModeSummary {
    let mine: Vec<&PhaseRun> = phases.iter().filter(|p| p.mode == mode).collect();
    let spread = |f: &dyn Fn(&PhaseRun) -> Option<f64>| {
        Spread::of(&mine.iter().filter_map(|p| f(p)).collect::<Vec<_>>())
    };
    let commit = |p: &PhaseRun| p.txn.as_ref().and_then(|t| t.commit_latency.clone());
    ModeSummary {
        mode,
        rounds: mine.len(),
        mb_per_sec: spread(&|p| Some(p.mb_per_sec)),
        commit_p50_ms: spread(&|p| commit(p).map(|l| l.p50_ms)),
        commit_p99_ms: spread(&|p| commit(p).map(|l| l.p99_ms)),
        commit_p999_ms: spread(&|p| commit(p).map(|l| l.p999_ms)),
        broker_cpu_s_per_gb: spread(&|p| p.broker_cpu_s_per_gb),
    }
}

/// `mode`'s MB/s ÷ idempotent MB/s, for each round that ran both (idempotent above 0).
pub fn ratios_per_round(phases: &[PhaseRun], mode: Mode) -> Vec<f64> {
    let mut rounds: Vec<u32> = phases.iter().map(|p| p.round).collect();
    rounds.dedup();
    rounds
        .into_iter()
        .filter_map(|round| {
            let of = |m: Mode| {
                phases
                    .iter()
                    .find(|p| p.round == round && p.mode == m)
                    .map(|p| p.mb_per_sec)
            };
            match (of(Mode::Idempotent), of(mode)) {
                (Some(idem), Some(txn)) if idem > 0.0 => Some(txn / idem),
                _ => None,
            }
        })
        .collect()
}

/// Issue 15's target, judged on the median ratio of the rounds.
pub fn check(ratio: Option<&Spread>, commit_ms: u64) -> Check {
    let median = ratio.map(|s| s.median);
    Check {
        name: format!("txn (commit every {commit_ms} ms) / idempotent throughput"),
        target: format!(">= {:.0} %", RATIO_TARGET * 100.0),
        measured: median.map(|r| r * 100.0),
        unit: "%".into(),
        pass: median.map(|r| r >= RATIO_TARGET),
        note: (commit_ms != TARGET_COMMIT_MS)
            .then(|| format!("the target is stated for commits every {TARGET_COMMIT_MS} ms")),
    }
}

/// Counts WARN and ERROR lines of a tracing log (level in the second column).
pub fn scan_broker_log(log: &str) -> BrokerLog {
    let mut out = BrokerLog::default();
    for raw in log.lines() {
        let line = strip_ansi(raw);
        match line.split_whitespace().nth(1) {
            Some("WARN") => out.warn_lines += 1,
            Some("ERROR") => out.error_lines += 1,
            _ => continue,
        }
        if out.first.len() < 5 {
            out.first.push(line.chars().take(300).collect());
        }
    }
    out
}

fn percent_list(ratios: &[f64]) -> String {
    if ratios.is_empty() {
        return "-".into();
    }
    let v: Vec<String> = ratios
        .iter()
        .map(|r| format!("{:.1} %", r * 100.0))
        .collect();
    v.join(", ")
}

fn percent_spread(s: Option<&Spread>) -> String {
    match s {
        Some(s) => format!(
            "median {:.1} % (min {:.1} %, max {:.1} %)",
            s.median * 100.0,
            s.min * 100.0,
            s.max * 100.0
        ),
        None => "-".into(),
    }
}

/// The human report: one row per phase, the medians, the ratios and the check.
pub fn table(r: &TransactionsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== transactions: 1 node ({} shard(s)), 1 topic x {} partitions, {} B records, acks=all, \
         enable.idempotence=true, {} producer thread(s) per phase (each transactional one with \
         its own transactional.id)",
        r.cores, r.partitions, r.message_size, r.producers
    );
    let _ = writeln!(
        out,
        "   phases: {:.0} s warm-up + {:.0} s measured; MB/s counts acked records (idempotent) \
         or records of transactions committed in the window",
        r.warmup_seconds, r.duration_seconds
    );
    let _ = writeln!(
        out,
        "  {:>5} {:<20} {:>8} {:>10} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} | {:>8} {:>7} {:>6}",
        "round",
        "phase",
        "MB/s",
        "msg/s",
        "txn/s",
        "rec/txn",
        "commit",
        "p99",
        "p99.9",
        "flush",
        "CPU s/GB",
        "bench %",
        "errors"
    );
    let _ = writeln!(
        out,
        "  {:>5} {:<20} {:>8} {:>10} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} |",
        "", "", "", "", "", "", "p50 ms", "ms", "ms", "p50 ms"
    );
    for p in &r.phases {
        let t = p.txn.as_ref();
        let lat = t.and_then(|t| t.commit_latency.as_ref());
        let flush = t.and_then(|t| t.commit_flush_latency.as_ref());
        let _ = writeln!(
            out,
            "  {:>5} {:<20} {:>8.1} {:>10} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} | {:>8} {:>7} {:>6}",
            p.round,
            p.mode.label(),
            p.mb_per_sec,
            group_thousands(p.msg_per_sec),
            fmt_opt(t.map(|t| t.commits_per_sec), 1),
            fmt_opt(t.and_then(|t| t.records_per_commit), 0),
            fmt_opt(lat.map(|l| l.p50_ms), 1),
            fmt_opt(lat.map(|l| l.p99_ms), 1),
            fmt_opt(lat.map(|l| l.p999_ms), 1),
            fmt_opt(flush.map(|l| l.p50_ms), 1),
            fmt_opt(p.broker_cpu_s_per_gb, 2),
            fmt_opt(p.client_cpu_percent_of_core, 0),
            p.errors
        );
        if let Some(t) = t.filter(|t| t.aborted > 0) {
            let _ = writeln!(
                out,
                "        {} transaction(s) aborted ({} records)",
                t.aborted,
                group_thousands(t.records_aborted as f64)
            );
        }
        if let Some(e) = &p.first_error {
            let _ = writeln!(out, "        first error: {e}");
        }
    }
    let _ = writeln!(
        out,
        "  (commit = wall time of flush + commit_transaction; flush = its wait for the \
         transaction's records still in flight)"
    );
    let _ = writeln!(out, "\n  median (min–max) over the rounds:");
    let _ = writeln!(
        out,
        "  {:<20} {:>24} {:>22} {:>22} {:>22} {:>18}",
        "phase", "MB/s", "commit p50 ms", "commit p99 ms", "commit p99.9 ms", "CPU s/GB"
    );
    for s in &r.summaries {
        let _ = writeln!(
            out,
            "  {:<20} {:>24} {:>22} {:>22} {:>22} {:>18}",
            s.mode.label(),
            fmt_spread(s.mb_per_sec.as_ref(), 1),
            fmt_spread(s.commit_p50_ms.as_ref(), 1),
            fmt_spread(s.commit_p99_ms.as_ref(), 1),
            fmt_spread(s.commit_p999_ms.as_ref(), 1),
            fmt_spread(s.broker_cpu_s_per_gb.as_ref(), 2)
        );
    }
    let _ = writeln!(
        out,
        "\n  txn every {} ms / idempotent, per round: {}; {}",
        r.commit_ms,
        percent_list(&r.time_ratio_per_round),
        percent_spread(r.time_ratio.as_ref())
    );
    let _ = writeln!(
        out,
        "  txn every {} records / idempotent, per round: {}; {}",
        group_thousands(r.commit_records as f64),
        percent_list(&r.records_ratio_per_round),
        percent_spread(r.records_ratio.as_ref())
    );
    for c in &r.checks {
        let mark = match c.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "n/a",
        };
        let _ = writeln!(
            out,
            "  [{mark}] {} {} {}, target {} (issue 15, median of the rounds){}",
            c.name,
            fmt_opt(c.measured, 1),
            c.unit,
            c.target,
            c.note
                .as_deref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default()
        );
    }
    let l = &r.broker_log;
    let _ = writeln!(
        out,
        "  broker log: {} ERROR, {} WARN line(s); {}/logs",
        l.error_lines, l.warn_lines, r.work_dir
    );
    for line in &l.first {
        let _ = writeln!(out, "    {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIME: Mode = Mode::CommitEveryMs { ms: 100 };
    const RECS: Mode = Mode::CommitEveryRecords { records: 1000 };

    fn lat(p50: f64) -> LatencySummary {
        LatencySummary {
            count: 100,
            mean_ms: p50,
            p50_ms: p50,
            p90_ms: p50 * 2.0,
            p99_ms: p50 * 4.0,
            p999_ms: p50 * 8.0,
            max_ms: p50 * 10.0,
        }
    }

    fn phase(round: u32, mode: Mode, mb: f64) -> PhaseRun {
        PhaseRun {
            round,
            mode,
            producers: 4,
            mb_per_sec: mb,
            msg_per_sec: mb * 1e6 / 1024.0,
            window_seconds: 15.0,
            records_sent: 1,
            records_counted: 1,
            txn: mode.is_transactional().then(|| TxnFigures {
                committed: 150,
                commits_per_sec: 10.0,
                records_per_commit: Some(1000.0),
                aborted: 0,
                records_aborted: 0,
                commit_latency: Some(lat(mb / 10.0)),
                commit_flush_latency: Some(lat(1.0)),
                commit_end_latency: Some(lat(2.0)),
                init_ms_max: 5.0,
            }),
            broker_cpu_seconds: 10.0,
            wall_seconds: 20.0,
            broker_cpu_s_per_gb: Some(2.0),
            client_cpu_percent_of_core: Some(90.0),
            errors: 0,
            first_error: None,
        }
    }

    #[test]
    fn modes_decide_commits_and_alternate() {
        assert!(!Mode::Idempotent.commit_due(1_000_000, 1_000_000));
        assert!(!TIME.commit_due(5_000, 99));
        assert!(TIME.commit_due(0, 100));
        assert!(!RECS.commit_due(999, 10_000));
        assert!(RECS.commit_due(1000, 0));
        assert_eq!(
            round_modes(Order::Alternate, 1, 100, 1000),
            [Mode::Idempotent, TIME, RECS]
        );
        assert_eq!(
            round_modes(Order::Alternate, 2, 100, 1000),
            [RECS, TIME, Mode::Idempotent]
        );
        assert_eq!(
            round_modes(Order::Fixed, 2, 100, 1000),
            [Mode::Idempotent, TIME, RECS]
        );
        assert_eq!(TIME.slug(), "100ms");
        assert_eq!(RECS.label(), "txn, every 1,000 rec");
        assert_eq!(
            serde_json::to_value(TIME).expect("serializes"),
            serde_json::json!({"kind": "commit_every_ms", "ms": 100})
        );
    }

    #[test]
    fn ratios_pair_rounds_and_the_check_judges_the_median() {
        let phases = vec![
            phase(1, Mode::Idempotent, 400.0),
            phase(1, TIME, 360.0),
            phase(1, RECS, 100.0),
            phase(2, RECS, 120.0),
            phase(2, TIME, 280.0),
            phase(2, Mode::Idempotent, 400.0),
            phase(3, TIME, 300.0), // no idempotent phase in round 3
        ];
        assert_eq!(ratios_per_round(&phases, TIME), vec![0.9, 0.7]);
        assert_eq!(ratios_per_round(&phases, RECS), vec![0.25, 0.3]);
        let spread = Spread::of(&ratios_per_round(&phases, TIME));
        let c = check(spread.as_ref(), 100);
        assert_eq!(c.pass, Some(true), "median 80 % meets >= 80 %");
        assert!((c.measured.expect("measured") - 80.0).abs() < 1e-9);
        assert!(c.note.is_none());
        let low = Spread::of(&[0.5, 0.79]);
        assert_eq!(check(low.as_ref(), 100).pass, Some(false));
        assert!(check(low.as_ref(), 50).note.is_some());
        assert_eq!(check(None, 100).pass, None);
        let s = summarize(&phases, TIME);
        assert_eq!(s.rounds, 3);
        assert_eq!(s.mb_per_sec.as_ref().map(|x| x.median), Some(300.0));
        // commit p99 = 4 × p50 = 4 × MB/s / 10 in these fixtures
        assert_eq!(s.commit_p99_ms.as_ref().map(|x| x.max), Some(144.0));
        assert!(summarize(&phases, Mode::Idempotent).commit_p50_ms.is_none());
    }

    #[test]
    fn broker_log_counts_levels() {
        let log = "2026-12-02T05:00:00.1Z  INFO sluice: started\n\
                   2026-12-02T05:00:01.1Z  WARN sluice_broker::txn: marker failed; retrying\n\
                   \x1b[2m2026-12-02T05:00:02.1Z\x1b[0m \x1b[31mERROR\x1b[0m sluice: boom\n\
                   WARN is not a level in the first column\n";
        let l = scan_broker_log(log);
        assert_eq!((l.warn_lines, l.error_lines), (1, 1));
        assert_eq!(l.first.len(), 2);
        assert!(l.first[1].contains("ERROR sluice: boom"), "{:?}", l.first);
    }

    #[test]
    fn table_and_json_show_rounds_ratios_and_the_mark() {
        let phases = vec![
            phase(1, Mode::Idempotent, 400.0),
            phase(1, TIME, 300.0),
            phase(1, RECS, 100.0),
        ];
        let time_ratio_per_round = ratios_per_round(&phases, TIME);
        let time_ratio = Spread::of(&time_ratio_per_round);
        let records_ratio_per_round = ratios_per_round(&phases, RECS);
        let records_ratio = Spread::of(&records_ratio_per_round);
        let r = TransactionsReport {
            name: "transactions".into(),
            sluice_bin: "/x/sluice".into(),
            work_dir: "/tmp/w".into(),
            settings: vec![],
            cores: 1,
            partitions: 16,
            message_size: 1024,
            producers: 4,
            duration_seconds: 15.0,
            warmup_seconds: 3.0,
            commit_ms: 100,
            commit_records: 1000,
            order: Order::Alternate,
            summaries: [Mode::Idempotent, TIME, RECS]
                .into_iter()
                .map(|m| summarize(&phases, m))
                .collect(),
            phases,
            checks: vec![check(time_ratio.as_ref(), 100)],
            time_ratio_per_round,
            time_ratio,
            records_ratio_per_round,
            records_ratio,
            broker_log: BrokerLog::default(),
        };
        let t = table(&r);
        assert!(t.contains("4 producer thread(s)"), "{t}");
        assert!(t.contains("per round: 75.0 %"), "{t}");
        assert!(
            t.contains("[MISS] txn (commit every 100 ms) / idempotent throughput 75.0 %"),
            "{t}"
        );
        assert!(t.contains("txn, every 1,000 rec"), "{t}");
        assert!(t.contains("0 ERROR, 0 WARN"), "{t}");
        let v = serde_json::to_value(&r).expect("serializes");
        assert_eq!(v["time_ratio"]["median"], serde_json::json!(0.75));
        assert_eq!(v["checks"][0]["pass"], serde_json::json!(false));
        assert_eq!(
            v["phases"][1]["txn"]["commit_latency"]["p50_ms"],
            serde_json::json!(30.0)
        );
        assert!(v["phases"][0]["txn"].is_null());
    }
}
