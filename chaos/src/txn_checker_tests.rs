//! Planted-history tests of `txn_checker.rs`: a clean transactional history, and each
//! anomaly kind planted in it (the validation of the checker).

use crate::checker::{check, Verdict};
use crate::history::{Entry, Isolation, Kind, Meta, Phase, HEALED};

/// How a planted transaction ends.
#[derive(Clone, Copy)]
enum End {
    Committed,
    Aborted,
    /// commit asked, the call failed
    UnknownAfterCommit,
    /// a send failed, then the abort call failed: commit never asked
    UnknownNoCommit,
}

/// Builds transactional histories by hand. Two partitions; the idempotent topic's
/// read-back is empty and complete, so only transactional anomalies show.
struct B {
    t: u64,
    lines: Vec<Entry>,
}

impl B {
    fn new() -> Self {
        let meta = Meta {
            seed: 1,
            brokers: 3,
            topic: "t".into(),
            partitions: 2,
            duration_ms: 0,
            nemesis: vec![],
            replay: String::new(),
            schedule: vec![],
            broker_binary: String::new(),
            txn_topic: Some("tx".into()),
            ctp_topic: None,
        };
        let mut b = B {
            t: 0,
            lines: vec![Entry::new(0, Kind::Meta, Phase::Info)
                .detail(serde_json::to_string(&meta).expect("ok: serializable"))],
        };
        for p in 0..2 {
            b.push(
                Entry::new(0, Kind::FinalEnd, Phase::Ok)
                    .partition(p)
                    .offset(0),
            );
        }
        b
    }

    fn push(&mut self, mut e: Entry) -> &mut Self {
        self.t += 1;
        e.t = self.t;
        self.lines.push(e);
        self
    }

    /// Begins transaction `id` and sends `records` (partition, value, acked offset).
    fn begin(&mut self, id: u64, records: &[(i32, &str, Option<i64>)]) -> &mut Self {
        self.push(
            Entry::new(0, Kind::Txn, Phase::Invoke)
                .id(id)
                .worker("x0.0")
                .detail("commit"),
        );
        for (p, val, _) in records {
            self.push(
                Entry::new(0, Kind::TxnSend, Phase::Invoke)
                    .id(id)
                    .partition(*p)
                    .value(*val),
            );
        }
        for (p, val, o) in records {
            let e = Entry::new(0, Kind::TxnSend, Phase::Ok)
                .id(id)
                .partition(*p)
                .value(*val);
            match o {
                Some(o) => self.push(e.offset(*o)),
                None => self.push(Entry {
                    phase: Phase::Fail,
                    ..e.error("MsgTimedOut")
                }),
            };
        }
        self
    }

    fn end(&mut self, id: u64, end: End) -> &mut Self {
        let call = match end {
            End::Committed | End::UnknownAfterCommit => "commit",
            End::Aborted | End::UnknownNoCommit => "abort",
        };
        self.push(
            Entry::new(0, Kind::TxnEnd, Phase::Invoke)
                .id(id)
                .detail(call),
        );
        let done = Entry::new(0, Kind::Txn, Phase::Ok).id(id);
        match end {
            End::Committed => self.push(done.detail("committed")),
            End::Aborted => self.push(done.detail("aborted")),
            End::UnknownAfterCommit | End::UnknownNoCommit => self.push(Entry {
                phase: Phase::Fail,
                ..done.detail("unknown")
            }),
        }
    }

    fn txn(&mut self, id: u64, records: &[(i32, &str, Option<i64>)], end: End) -> &mut Self {
        self.begin(id, records).end(id, end)
    }

    fn read(&mut self, session: u64, p: i32, o: i64, val: &str) -> &mut Self {
        self.push(
            Entry::new(0, Kind::TxnRead, Phase::Ok)
                .worker("r0")
                .session(session)
                .partition(p)
                .offset(o)
                .value(val),
        )
    }

    /// A read-back of partition `p`: the records handed over, then the end.
    fn final_log(&mut self, i: Isolation, p: i32, records: &[(i64, &str)], end: i64) -> &mut Self {
        for (o, val) in records {
            self.push(
                Entry::new(0, Kind::TxnFinalRead, Phase::Ok)
                    .partition(p)
                    .offset(*o)
                    .value(*val)
                    .isolation(i),
            );
        }
        self.push(
            Entry::new(0, Kind::TxnFinalEnd, Phase::Ok)
                .partition(p)
                .offset(end)
                .isolation(i),
        )
    }

    fn healed(&mut self) -> &mut Self {
        self.push(Entry::new(0, Kind::Info, Phase::Info).detail(HEALED))
    }

    /// Moves the clock on (for the LSO grace).
    fn wait(&mut self, ms: u64) -> &mut Self {
        self.t += ms;
        self
    }

    fn check(&self) -> Verdict {
        check(&self.lines)
    }
}

/// Four transactions: 1 committed (0@0, 1@0), 2 aborted (0@2), 3 of unknown outcome
/// after asking to commit (0@4, 1@2; it did commit), 4 of unknown outcome with a failed
/// send (1@4; never committed). Markers sit at the odd offsets. A read_committed
/// consumer reads 1's and 3's records during the run.
fn history() -> B {
    let mut b = B::new();
    b.txn(
        1,
        &[(0, "x0.0-0", Some(0)), (1, "x0.0-1", Some(0))],
        End::Committed,
    )
    .txn(2, &[(0, "x0.0-2", Some(2))], End::Aborted)
    .txn(
        3,
        &[(0, "x0.0-3", Some(4)), (1, "x0.0-4", None)],
        End::UnknownAfterCommit,
    )
    .txn(4, &[(1, "x0.1-5", None)], End::UnknownNoCommit)
    .read(0, 0, 0, "x0.0-0")
    .read(0, 1, 0, "x0.0-1")
    .read(0, 0, 4, "x0.0-3")
    .healed();
    b
}

const RC0: &[(i64, &str)] = &[(0, "x0.0-0"), (4, "x0.0-3")];
const RC1: &[(i64, &str)] = &[(0, "x0.0-1"), (2, "x0.0-4")];
const RU0: &[(i64, &str)] = &[(0, "x0.0-0"), (2, "x0.0-2"), (4, "x0.0-3")];
const RU1: &[(i64, &str)] = &[(0, "x0.0-1"), (2, "x0.0-4"), (4, "x0.1-5")];

/// The read-backs: read_committed of both partitions, then read_uncommitted.
fn finish(b: &mut B, rc: [&[(i64, &str)]; 2], ru: [&[(i64, &str)]; 2]) {
    b.final_log(Isolation::ReadCommitted, 0, rc[0], 6)
        .final_log(Isolation::ReadCommitted, 1, rc[1], 6)
        .final_log(Isolation::ReadUncommitted, 0, ru[0], 6)
        .final_log(Isolation::ReadUncommitted, 1, ru[1], 6);
}

fn kinds(v: &Verdict) -> Vec<(&str, u64)> {
    v.anomalies.iter().map(|(k, n)| (k.as_str(), *n)).collect()
}

fn detail_of<'a>(v: &'a Verdict, kind: &str) -> &'a str {
    v.examples
        .iter()
        .find(|a| a.kind.name() == kind)
        .map_or("", |a| a.detail.as_str())
}

#[test]
fn a_clean_transactional_history_passes() {
    let mut b = history();
    finish(&mut b, [RC0, RC1], [RU0, RU1]);
    let v = b.check();
    assert!(v.passed(), "{:?}", v.examples);
    assert_eq!(v.operations["txn_begun"], 4);
    assert_eq!(v.operations["txn_committed"], 1);
    assert_eq!(v.operations["txn_aborted"], 1);
    assert_eq!(v.operations["txn_unknown"], 2);
    assert_eq!(v.operations["txn_unknown_read_whole"], 1);
    assert_eq!(v.operations["txn_reads"], 3);
    assert_eq!(v.operations["txn_final_records"], 4);
    assert_eq!(v.operations["txn_final_records_uncommitted"], 6);
}

#[test]
fn an_unknown_transaction_read_not_at_all_passes() {
    let mut b = history();
    // transaction 3 was aborted after all (no run-time read of it here)
    b.lines
        .retain(|e| !(e.kind == Kind::TxnRead && e.value.as_deref() == Some("x0.0-3")));
    finish(&mut b, [&[(0, "x0.0-0")], &[(0, "x0.0-1")]], [RU0, RU1]);
    assert!(b.check().passed());
}

#[test]
fn planted_read_of_an_aborted_record_is_flagged() {
    let mut b = history();
    b.read(1, 0, 2, "x0.0-2"); // transaction 2 was aborted by its client
    finish(&mut b, [RC0, RC1], [RU0, RU1]);
    let v = b.check();
    assert_eq!(kinds(&v), vec![("txn_aborted_read", 1)]);
    assert!(
        detail_of(&v, "txn_aborted_read").contains("aborted by its client"),
        "{:?}",
        v.examples
    );
}

#[test]
fn an_aborted_record_in_the_read_committed_read_back_is_flagged() {
    let mut b = history();
    // transaction 4 never asked to commit, yet its record is read back committed
    finish(
        &mut b,
        [RC0, &[(0, "x0.0-1"), (2, "x0.0-4"), (4, "x0.1-5")]],
        [RU0, RU1],
    );
    let v = b.check();
    assert_eq!(kinds(&v), vec![("txn_aborted_read", 1)]);
    assert!(detail_of(&v, "txn_aborted_read").contains("commit never asked"));
}

#[test]
fn a_read_of_a_record_whose_marker_was_abort_is_flagged() {
    let mut b = history();
    // transaction 3 (unknown) was read during the run, but the read-back skips both of
    // its records as aborted
    finish(&mut b, [&[(0, "x0.0-0")], &[(0, "x0.0-1")]], [RU0, RU1]);
    let v = b.check();
    assert_eq!(kinds(&v), vec![("txn_aborted_read", 1)]);
    assert!(detail_of(&v, "txn_aborted_read").contains("skips (aborted)"));
}

#[test]
fn planted_loss_of_a_committed_transaction_is_flagged() {
    let mut b = history();
    // x0.0-1 (committed at 1@0) is not in the read_committed read-back
    finish(&mut b, [RC0, &[(2, "x0.0-4")]], [RU0, RU1]);
    let v = b.check();
    assert_eq!(kinds(&v), vec![("txn_committed_lost", 1)]);
    assert!(detail_of(&v, "txn_committed_lost").contains("x0.0-1 (sent to partition 1) is missing"));
}

#[test]
fn a_committed_record_at_another_offset_is_flagged() {
    let mut b = history();
    finish(&mut b, [&[(1, "x0.0-0"), (4, "x0.0-3")], RC1], [RU0, RU1]);
    let v = b.check();
    // the run-time read of 0@0, still in the read_uncommitted read-back there, is part
    // of the same loss, not a second anomaly
    assert_eq!(kinds(&v), vec![("txn_committed_lost", 1)]);
    assert!(detail_of(&v, "txn_committed_lost").contains("acked at 0@0 is at 0@1"));
}

#[test]
fn planted_partial_transaction_is_flagged() {
    let mut b = history();
    // transaction 3 (unknown): x0.0-3 read back committed, x0.0-4 not
    finish(&mut b, [RC0, &[(0, "x0.0-1")]], [RU0, RU1]);
    let v = b.check();
    assert_eq!(kinds(&v), vec![("txn_partial", 1)]);
    assert!(detail_of(&v, "txn_partial").contains("1 of its records"));
}

#[test]
fn planted_duplicate_is_flagged() {
    let mut b = history();
    let rc0: &[(i64, &str)] = &[(0, "x0.0-0"), (4, "x0.0-3"), (5, "x0.0-0")];
    let ru0: &[(i64, &str)] = &[(0, "x0.0-0"), (2, "x0.0-2"), (4, "x0.0-3"), (5, "x0.0-0")];
    finish(&mut b, [rc0, RC1], [ru0, RU1]);
    let v = b.check();
    // the copy is also out of sequence order; both read-backs' copies count once
    assert_eq!(kinds(&v), vec![("txn_duplicate", 1), ("txn_reorder", 1)]);
    assert!(detail_of(&v, "txn_duplicate").contains("0@0, 0@5"));
}

#[test]
fn a_value_read_at_two_offsets_during_the_run_is_a_duplicate() {
    let mut b = history();
    b.read(1, 0, 5, "x0.0-0");
    finish(&mut b, [RC0, RC1], [RU0, RU1]);
    let v = b.check();
    assert_eq!(
        v.anomalies.get("txn_duplicate"),
        Some(&1),
        "{:?}",
        v.examples
    );
}

#[test]
fn planted_reorder_in_a_read_committed_session_is_flagged() {
    let mut b = history();
    b.read(0, 0, 0, "x0.0-0"); // session 0 goes back to 0@0 after 0@4
    b.read(1, 0, 0, "x0.0-0"); // a new session may start over
    finish(&mut b, [RC0, RC1], [RU0, RU1]);
    let v = b.check();
    assert_eq!(kinds(&v), vec![("txn_reorder", 1)]);
    assert!(detail_of(&v, "txn_reorder").contains("read 0@0 after 0@4"));
}

#[test]
fn a_read_before_the_commit_was_asked_is_flagged() {
    let mut b = B::new();
    b.begin(1, &[(0, "x0.0-0", Some(0)), (1, "x0.0-1", Some(0))])
        .read(0, 0, 0, "x0.0-0") // the transaction is still open
        .end(1, End::Committed);
    finish(
        &mut b,
        [&[(0, "x0.0-0")], &[(0, "x0.0-1")]],
        [&[(0, "x0.0-0")], &[(0, "x0.0-1")]],
    );
    let v = b.check();
    assert_eq!(kinds(&v), vec![("txn_uncommitted_read", 1)]);
    assert!(detail_of(&v, "txn_uncommitted_read").contains("before transaction 1"));
}

#[test]
fn a_read_past_the_final_last_stable_offset_is_flagged() {
    let mut b = history();
    b.read(1, 1, 2, "x0.0-4");
    b.wait(super::LSO_GRACE_MS);
    // partition 1's LSO stays at 2 (below x0.0-4): the read went past it
    b.final_log(Isolation::ReadCommitted, 0, RC0, 6)
        .final_log(Isolation::ReadCommitted, 1, &[(0, "x0.0-1")], 2)
        .final_log(Isolation::ReadUncommitted, 0, RU0, 6)
        .final_log(Isolation::ReadUncommitted, 1, RU1, 6);
    let v = b.check();
    assert_eq!(
        v.anomalies.get("txn_uncommitted_read"),
        Some(&1),
        "{:?}",
        v.examples
    );
    assert!(detail_of(&v, "txn_uncommitted_read").contains("past the last stable offset"));
}

#[test]
fn a_last_stable_offset_stuck_below_the_high_watermark_is_flagged() {
    let mut b = history();
    b.wait(super::LSO_GRACE_MS);
    b.final_log(Isolation::ReadCommitted, 0, RC0, 6)
        .final_log(Isolation::ReadCommitted, 1, RC1, 4)
        .final_log(Isolation::ReadUncommitted, 0, RU0, 6)
        .final_log(Isolation::ReadUncommitted, 1, RU1, 6);
    let v = b.check();
    assert_eq!(kinds(&v), vec![("txn_lso_stuck", 1)]);
    let d = detail_of(&v, "txn_lso_stuck");
    assert!(
        d.contains("last stable offset 4 below the high watermark 6"),
        "{d}"
    );
    assert!(d.contains("4: x0.1-5 (transaction 4"), "{d}");
}

#[test]
fn a_last_stable_offset_behind_within_the_grace_is_only_noted() {
    let mut b = history();
    b.final_log(Isolation::ReadCommitted, 0, RC0, 6)
        .final_log(Isolation::ReadCommitted, 1, RC1, 4)
        .final_log(Isolation::ReadUncommitted, 0, RU0, 6)
        .final_log(Isolation::ReadUncommitted, 1, RU1, 6);
    let v = b.check();
    assert!(v.passed(), "{:?}", v.examples);
    assert!(v.notes.iter().any(|n| n.contains("not judged")));
}

#[test]
fn an_unfinished_read_committed_read_back_is_incomplete() {
    let mut b = history();
    b.final_log(Isolation::ReadCommitted, 0, RC0, 6)
        .final_log(Isolation::ReadUncommitted, 0, RU0, 6)
        .final_log(Isolation::ReadUncommitted, 1, RU1, 6);
    let v = b.check();
    assert_eq!(kinds(&v), vec![("incomplete", 1)]);
}

#[test]
fn a_transactional_history_survives_the_file_round_trip() {
    let dir = tempfile::tempdir().expect("ok: tempdir");
    let path = dir.path().join("h.jsonl");
    let mut b = history();
    b.read(1, 0, 2, "x0.0-2");
    finish(&mut b, [RC0, RC1], [RU0, RU1]);
    {
        let w = crate::history::HistoryWriter::create(&path).expect("ok: create");
        for e in &b.lines {
            w.write(e);
        }
        w.flush().expect("ok: flush");
    }
    let (back, _) = crate::history::read(&path).expect("ok: read");
    assert_eq!(back, b.lines);
    assert_eq!(kinds(&check(&back)), vec![("txn_aborted_read", 1)]);
}
