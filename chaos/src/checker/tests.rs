//! Unit tests of `checker.rs`.

use super::*;

/// Builds histories by hand: a tiny DSL over `Entry`.
struct H {
    t: u64,
    id: u64,
    lines: Vec<Entry>,
}

impl H {
    fn new(partitions: i32) -> Self {
        let meta = Meta {
            seed: 1,
            brokers: 3,
            topic: "t".into(),
            partitions,
            duration_ms: 0,
            nemesis: vec![],
            replay: String::new(),
            schedule: vec![],
            broker_binary: String::new(),
            txn_topic: None,
            ctp_topic: None,
        };
        let m = Entry::new(0, Kind::Meta, Phase::Info)
            .detail(serde_json::to_string(&meta).expect("ok: serializable"));
        H {
            t: 1,
            id: 0,
            lines: vec![m],
        }
    }

    fn tick(&mut self) -> u64 {
        self.t += 1;
        self.t
    }

    /// A produce of `value` to `p`, acked at `offset` (None: failed).
    fn produce(&mut self, value: &str, p: i32, offset: Option<i64>) -> &mut Self {
        self.id += 1;
        let (t, id) = (self.tick(), self.id);
        self.lines.push(
            Entry::new(t, Kind::Produce, Phase::Invoke)
                .id(id)
                .worker("w0")
                .partition(p)
                .value(value),
        );
        let t = self.tick();
        self.lines.push(match offset {
            Some(o) => Entry::new(t, Kind::Produce, Phase::Ok)
                .id(id)
                .partition(p)
                .offset(o),
            None => Entry::new(t, Kind::Produce, Phase::Fail)
                .id(id)
                .partition(p)
                .error("MessageTimedOut"),
        });
        self
    }

    fn read(&mut self, w: &str, session: u64, p: i32, o: i64, value: &str) -> &mut Self {
        let t = self.tick();
        self.lines.push(
            Entry::new(t, Kind::Read, Phase::Ok)
                .worker(w)
                .session(session)
                .partition(p)
                .offset(o)
                .value(value),
        );
        self
    }

    fn commit_ok(&mut self, p: i32, o: i64) -> &mut Self {
        let t = self.tick();
        self.lines.push(
            Entry::new(t, Kind::Commit, Phase::Ok)
                .worker("g0")
                .group("g")
                .partition(p)
                .offset(o),
        );
        self
    }

    fn committed(&mut self, p: i32, o: i64) -> &mut Self {
        self.id += 1;
        let (t, id) = (self.tick(), self.id);
        self.lines.push(
            Entry::new(t, Kind::Committed, Phase::Invoke)
                .id(id)
                .group("g"),
        );
        let t = self.tick();
        self.lines.push(
            Entry::new(t, Kind::Committed, Phase::Ok)
                .id(id)
                .group("g")
                .partition(p)
                .offset(o),
        );
        self
    }

    /// The final log of partition `p`: values at offsets 0.., then its end.
    fn final_log(&mut self, p: i32, values: &[&str]) -> &mut Self {
        for (o, val) in values.iter().enumerate() {
            let t = self.tick();
            self.lines.push(
                Entry::new(t, Kind::FinalRead, Phase::Ok)
                    .partition(p)
                    .offset(o as i64)
                    .value(*val),
            );
        }
        let t = self.tick();
        self.lines.push(
            Entry::new(t, Kind::FinalEnd, Phase::Ok)
                .partition(p)
                .offset(values.len() as i64),
        );
        self
    }

    fn check(&self) -> Verdict {
        check(&self.lines)
    }
}

fn kinds(v: &Verdict) -> Vec<(&str, u64)> {
    v.anomalies.iter().map(|(k, n)| (k.as_str(), *n)).collect()
}

/// The clean history every planted one starts from: two partitions, a failed produce
/// that did land, a consumer, commits.
fn clean() -> H {
    let mut h = H::new(2);
    h.produce("w0-0", 0, Some(0))
        .produce("w0-1", 1, Some(0))
        .produce("w0-2", 0, Some(1))
        .produce("w0-3", 1, None) // indefinite; it landed
        .read("a0", 0, 0, 0, "w0-0")
        .read("a0", 0, 0, 1, "w0-2")
        .commit_ok(0, 1)
        .committed(0, 1)
        .commit_ok(0, 2)
        .committed(0, 2);
    h
}

#[test]
fn a_clean_history_passes() {
    let mut h = clean();
    h.final_log(0, &["w0-0", "w0-2"])
        .final_log(1, &["w0-1", "w0-3"]);
    let v = h.check();
    assert!(v.passed(), "{:?}", v.examples);
    assert_eq!(v.operations["produce_ok"], 3);
    assert_eq!(v.operations["produce_failed"], 1);
    assert_eq!(v.operations["reads"], 2);
    assert_eq!(v.operations["final_records"], 4);
}

#[test]
fn a_failed_produce_that_never_landed_passes() {
    let mut h = clean();
    h.final_log(0, &["w0-0", "w0-2"]).final_log(1, &["w0-1"]);
    assert!(h.check().passed());
}

#[test]
fn planted_loss_is_flagged() {
    let mut h = clean();
    // w0-2 acked at 0@1 is gone (the log ends at 1)
    h.final_log(0, &["w0-0"]).final_log(1, &["w0-1", "w0-3"]);
    let v = h.check();
    assert!(!v.passed());
    assert_eq!(kinds(&v), vec![("lost", 1), ("vanished_read", 1)]);
    let lost = v
        .examples
        .iter()
        .find(|a| a.kind == AnomalyKind::Lost)
        .expect("ok: flagged");
    assert!(lost.detail.contains("w0-2 acked at 0@1"), "{}", lost.detail);
}

#[test]
fn loss_by_overwrite_is_flagged() {
    let mut h = clean();
    // another value sits where w0-1 was acked; w0-1 itself is gone
    h.final_log(0, &["w0-0", "w0-2"]).final_log(1, &["w0-3"]);
    let v = h.check();
    assert_eq!(kinds(&v), vec![("lost", 1)]);
    assert!(v.examples[0].detail.contains("has w0-3 there"));
}

#[test]
fn two_values_acked_at_one_offset_lose_one() {
    let mut h = H::new(1);
    h.produce("w0-0", 0, Some(0)).produce("w1-0", 0, Some(0));
    h.final_log(0, &["w1-0"]);
    let v = h.check();
    assert_eq!(kinds(&v), vec![("lost", 1)]);
    assert!(
        v.examples[0].detail.contains("also acked to w1-0"),
        "{:?}",
        v.examples
    );
}

#[test]
fn planted_duplicate_is_flagged() {
    let mut h = clean();
    // a retry stored twice: w0-2 at offsets 1 and 2
    h.final_log(0, &["w0-0", "w0-2", "w0-2"])
        .final_log(1, &["w0-1", "w0-3"]);
    let v = h.check();
    // the second copy is also out of order (seq 2 after seq 2)
    assert_eq!(kinds(&v), vec![("duplicate", 1), ("reorder", 1)]);
    assert!(
        v.examples[0].detail.contains("0@1, 0@2"),
        "{:?}",
        v.examples
    );
}

#[test]
fn a_failed_produce_stored_twice_is_a_duplicate() {
    let mut h = clean();
    h.final_log(0, &["w0-0", "w0-2"])
        .final_log(1, &["w0-1", "w0-3", "w0-3"]);
    let v = h.check();
    assert_eq!(v.anomalies.get("duplicate"), Some(&1));
}

#[test]
fn planted_reorder_in_the_log_is_flagged() {
    let mut h = H::new(1);
    h.produce("w0-0", 0, Some(0))
        .produce("w0-1", 0, Some(1))
        .produce("w0-2", 0, Some(2));
    // w0-2 landed before w0-1 (acks say otherwise, so both also count as lost)
    h.final_log(0, &["w0-0", "w0-2", "w0-1"]);
    let v = h.check();
    assert_eq!(v.anomalies.get("reorder"), Some(&1));
    assert!(v.examples.iter().any(
        |a| a.kind == AnomalyKind::Reorder && a.detail.contains("w0-1 at offset 2 after w0-2")
    ));
}

#[test]
fn planted_reorder_in_a_consumer_session_is_flagged() {
    let mut h = clean();
    h.read("a0", 0, 0, 0, "w0-0"); // back to offset 0 in the same session
    h.read("a0", 1, 0, 0, "w0-0"); // a new session may start over
    h.final_log(0, &["w0-0", "w0-2"])
        .final_log(1, &["w0-1", "w0-3"]);
    let v = h.check();
    assert_eq!(kinds(&v), vec![("reorder", 1)]);
    assert!(v.examples[0].detail.contains("read 0@0 after 0@1"));
}

#[test]
fn planted_read_of_a_vanished_record_is_flagged() {
    let mut h = clean();
    // a consumer read w0-3 at 1@1 (the failed produce), later truncated away
    h.read("a0", 0, 1, 1, "w0-3");
    h.final_log(0, &["w0-0", "w0-2"]).final_log(1, &["w0-1"]);
    let v = h.check();
    assert_eq!(kinds(&v), vec![("vanished_read", 1)]);
    assert!(v.examples[0].detail.contains("read w0-3 at 1@1"));
}

#[test]
fn a_read_replaced_by_another_record_is_flagged() {
    let mut h = clean();
    h.read("a0", 0, 1, 1, "w0-9");
    h.final_log(0, &["w0-0", "w0-2"])
        .final_log(1, &["w0-1", "w0-3"]);
    let v = h.check();
    assert_eq!(kinds(&v), vec![("vanished_read", 1)]);
}

#[test]
fn committed_offset_moving_backwards_is_flagged() {
    let mut h = clean();
    h.committed(0, 1); // after 2 was acked and read back
    h.final_log(0, &["w0-0", "w0-2"])
        .final_log(1, &["w0-1", "w0-3"]);
    let v = h.check();
    assert_eq!(kinds(&v), vec![("commit_backwards", 1)]);
    assert!(v.examples[0].detail.contains("read back as 1"));
}

#[test]
fn an_older_commit_acknowledged_after_a_newer_one_is_the_clients_doing() {
    // as librdkafka does after a kill -9 of the coordinator: the commit of 1, failed
    // on the old connection, is retried after the commit of 2 and answered after it
    let mut h = H::new(1);
    h.produce("w0-0", 0, Some(0))
        .produce("w0-1", 0, Some(1))
        .commit_ok(0, 2)
        .commit_ok(0, 1)
        .committed(0, 1);
    h.final_log(0, &["w0-0", "w0-1"]);
    assert!(h.check().passed());
    // but once the coordinator answered a newer commit after it, going back is flagged
    let mut h = H::new(1);
    h.produce("w0-0", 0, Some(0))
        .produce("w0-1", 0, Some(1))
        .commit_ok(0, 1)
        .commit_ok(0, 2)
        .committed(0, 1);
    h.final_log(0, &["w0-0", "w0-1"]);
    let v = h.check();
    assert_eq!(kinds(&v), vec![("commit_backwards", 1)]);
    assert!(
        v.examples[0].detail.contains("after commit of 2"),
        "{:?}",
        v.examples
    );
}

#[test]
fn a_lost_commit_is_flagged() {
    let mut h = H::new(1);
    h.produce("w0-0", 0, Some(0))
        .commit_ok(0, 1)
        .committed(0, -1);
    h.final_log(0, &["w0-0"]);
    assert_eq!(kinds(&h.check()), vec![("commit_backwards", 1)]);
}

#[test]
fn unfinished_read_back_and_crash_fail_the_run() {
    let mut h = clean();
    h.final_log(0, &["w0-0", "w0-2"]); // partition 1 never finished
    let t = h.tick();
    h.lines
        .push(Entry::new(t, Kind::Crash, Phase::Info).detail("node 2 exited with 1"));
    let v = h.check();
    assert_eq!(kinds(&v), vec![("crash", 1), ("incomplete", 1)]);
}

#[test]
fn a_full_disk_that_does_not_answer_storage_error_is_flagged() {
    let mut h = clean();
    for (code, detail) in [
        (56, crate::nemesis::DISK_FULL_PROBE),
        (7, crate::nemesis::DISK_FULL_PROBE),
        (7, crate::nemesis::BASELINE_PROBE),
    ] {
        let t = h.tick();
        h.lines.push(
            Entry::new(t, Kind::Produce, Phase::Fail)
                .partition(0)
                .error(format!("error code {code}"))
                .detail(detail),
        );
    }
    h.final_log(0, &["w0-0", "w0-2"])
        .final_log(1, &["w0-1", "w0-3"]);
    let v = h.check();
    // the timeout with a full disk is the anomaly; the baseline one only a note
    assert_eq!(kinds(&v), vec![("storage_error", 1)]);
    assert!(v.examples[0].detail.contains("got error code 7"));
    assert!(v.notes.iter().any(|n| n.contains("before filling")));
}

#[test]
fn a_value_nobody_sent_is_flagged() {
    let mut h = clean();
    h.final_log(0, &["w0-0", "w0-2", "zz-1"])
        .final_log(1, &["w0-1", "w0-3"]);
    assert_eq!(kinds(&h.check()), vec![("unexpected_value", 1)]);
}

#[test]
fn a_history_survives_the_file_round_trip() {
    let dir = tempfile::tempdir().expect("ok: tempdir");
    let path = dir.path().join("h.jsonl");
    let mut h = clean();
    h.final_log(0, &["w0-0"]).final_log(1, &["w0-1", "w0-3"]);
    {
        let w = crate::history::HistoryWriter::create(&path).expect("ok: create");
        for e in &h.lines {
            w.write(e);
        }
        w.flush().expect("ok: flush");
    }
    // a torn last line, as a crash of the writer leaves, is skipped
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"t\":9,\"ki"))
        .expect("ok: append");
    let (back, torn) = crate::history::read(&path).expect("ok: read");
    assert_eq!(back, h.lines);
    assert!(torn.is_some());
    let v = check(&back);
    assert_eq!(v.anomalies.get("lost"), Some(&1));
}
