//! The consume-transform-produce checks: exactly once from input to output. The input is
//! the idempotent topic's final log (every partition read back to its high watermark);
//! the output is the output topic read back read_committed after healing; the group's
//! committed offsets are those read (stable) after the workers stopped. Every output value
//! `<p>@<o>=<value>` names its input record. Against them:
//!
//! - `ctp_missing`: an input record below its partition's committed offset with no output
//!   (its offset was committed without its transform: lost);
//! - `ctp_duplicate`: an input record with more than one output;
//! - `ctp_ahead`: an output of an input record at or above the committed offset (the
//!   output committed without its input offset: it would be transformed again);
//! - `ctp_not_drained`: a partition whose committed offset stayed below the input's end
//!   (the records above it never got their transform);
//! - `ctp_reorder`: outputs of one input partition out of input order in the output log.
//!
//! An output naming an input record that the input log does not hold is a
//! `vanished_read`; a value of another shape `unexpected_value`; a read-back that did not
//! finish `incomplete`. Committed offsets going backwards are checked with the other
//! groups' (`commit_backwards`): each acknowledged transaction is a `commit` of `chaos-ctp`.

use std::collections::{BTreeMap, HashMap};

use crate::checker::{AnomalyKind, Found, Verdict};
use crate::ctp_workload::CTP_GROUP;
use crate::history::{Entry, Kind, Phase};

/// Examples of one partition's missing or duplicated records kept in a detail.
const LISTED: usize = 5;

/// (input partition, input offset, input value) of an output value.
fn parse_output(v: &str) -> Option<(i32, i64, &str)> {
    let (at, value) = v.split_once('=')?;
    let (p, o) = at.split_once('@')?;
    Some((p.parse().ok()?, o.parse().ok()?, value))
}

/// Checks the consume-transform-produce lines of `entries` against the input's final log
/// (`input`: (partition, offset) → value below each complete partition's end; `input_end`:
/// the ends of the complete partitions); `partitions` are the output topic's.
pub(crate) fn check(
    entries: &[Entry],
    input: &BTreeMap<(i32, i64), &str>,
    input_end: &BTreeMap<i32, i64>,
    partitions: &[i32],
    found: &mut Found,
    v: &mut Verdict,
) {
    let mut count = |name: &str, n: u64| *v.operations.entry(name.to_string()).or_default() += n;
    let mut output: BTreeMap<(i32, i64), (&str, u64)> = BTreeMap::new();
    let mut out_end: BTreeMap<i32, i64> = BTreeMap::new();
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    // input partition -> (highest acknowledged commit, its time)
    let mut acked: BTreeMap<i32, (i64, u64)> = BTreeMap::new();
    for e in entries {
        match (e.kind, e.phase) {
            (Kind::Commit, Phase::Ok) if e.group.as_deref() == Some(CTP_GROUP) => {
                if let (Some(p), Some(o)) = (e.partition, e.offset) {
                    let a = acked.entry(p).or_insert((o, e.t));
                    if o > a.0 {
                        *a = (o, e.t);
                    }
                }
            }
            (Kind::CtpTxn, Phase::Invoke) => count("ctp_txn_begun", 1),
            (Kind::CtpTxn, Phase::Ok) if e.detail.as_deref() == Some("committed") => {
                count("ctp_txn_committed", 1)
            }
            (Kind::CtpTxn, Phase::Ok) => count("ctp_txn_aborted", 1),
            (Kind::CtpTxn, Phase::Fail) => {
                count("ctp_txn_unknown", 1);
                if e.error.as_deref().is_some_and(|x| x.contains("abandoned")) {
                    count("ctp_calls_abandoned", 1);
                }
            }
            (Kind::CtpFinalRead, Phase::Ok) => {
                if let (Some(p), Some(o), Some(val)) = (e.partition, e.offset, &e.value) {
                    output.insert((p, o), (val, e.t));
                }
            }
            (Kind::CtpFinalEnd, Phase::Ok) => {
                if let (Some(p), Some(o)) = (e.partition, e.offset) {
                    out_end.insert(p, o);
                }
            }
            (Kind::CtpFinalCommitted, Phase::Ok) => {
                if let (Some(p), Some(o)) = (e.partition, e.offset) {
                    committed.insert(p, o);
                }
            }
            _ => {}
        }
    }
    let last_t = entries.last().map_or(0, |e| e.t);
    let mut complete = true;
    for p in partitions {
        if !out_end.contains_key(p) {
            complete = false;
            found.add(
                AnomalyKind::Incomplete,
                last_t,
                format!("consume-transform-produce output partition {p}: the read_committed read-back did not finish; the workload is unchecked"),
            );
        }
    }
    if committed.is_empty() {
        complete = false;
        found.add(
            AnomalyKind::Incomplete,
            last_t,
            "consume-transform-produce: the group's final committed offsets were not read; the workload is unchecked".into(),
        );
    }
    for (p, c) in &committed {
        if let Some((a, t)) = acked.get(p).filter(|(a, _)| a > c) {
            found.add(
                AnomalyKind::CommitBackwards,
                *t,
                format!("group {CTP_GROUP} partition {p}: committed offset read back as {c} after the workers stopped, after a transaction committing {a} was acknowledged at t={t}"),
            );
        }
    }
    if !complete {
        return;
    }
    output.retain(|(p, o), _| out_end.get(p).is_some_and(|end| o < end));
    count("ctp_final_outputs", output.len() as u64);

    // --- outputs -----------------------------------------------------------------------
    // input (partition, offset) -> output offsets (partition, offset)
    let mut outputs_of: HashMap<(i32, i64), Vec<(i32, i64)>> = HashMap::new();
    let mut last_in: HashMap<(i32, i32), (i64, i64)> = HashMap::new(); // (out p, in p) -> (in o, out o)
    for ((op, oo), (val, t)) in &output {
        let Some((ip, io, ival)) = parse_output(val) else {
            found.add(
                AnomalyKind::UnexpectedValue,
                *t,
                format!("consume-transform-produce output {op}@{oo} holds {val:?}, which names no input record"),
            );
            continue;
        };
        if let Some((prev_in, prev_out)) = last_in.get(&(*op, ip)) {
            if io <= *prev_in {
                found.add(
                    AnomalyKind::CtpReorder,
                    *t,
                    format!("output partition {op}: the transform of input {ip}@{io} at {oo} after that of {ip}@{prev_in} at {prev_out}"),
                );
            }
        }
        last_in.insert((*op, ip), (io, *oo));
        if !input_end.contains_key(&ip) {
            continue; // its input partition was not read back: unchecked
        }
        if input.get(&(ip, io)) != Some(&ival) {
            let there = input
                .get(&(ip, io))
                .map_or("nothing".to_string(), |x| x.to_string());
            found.add(
                AnomalyKind::VanishedRead,
                *t,
                format!("consume-transform-produce output {op}@{oo} transforms {ival} at input {ip}@{io}; the input's final log holds {there} there"),
            );
            continue;
        }
        outputs_of.entry((ip, io)).or_default().push((*op, *oo));
    }

    // --- inputs ------------------------------------------------------------------------
    let mut checked = 0u64;
    // partition -> input offsets with no output below the committed offset / above it
    let mut missing: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let mut undrained: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for ((ip, io), ival) in input {
        let Some(c) = committed.get(ip).copied() else {
            continue;
        };
        checked += 1;
        let outs = outputs_of.get(&(*ip, *io)).map_or(&[][..], Vec::as_slice);
        if outs.len() > 1 {
            found.add(
                AnomalyKind::CtpDuplicate,
                last_t,
                format!(
                    "input {ival} at {ip}@{io} has {} outputs under read_committed, at {}",
                    outs.len(),
                    fmt_at(outs)
                ),
            );
        }
        match (*io < c, outs.is_empty()) {
            (true, true) => missing.entry(*ip).or_default().push(*io),
            (false, true) => undrained.entry(*ip).or_default().push(*io),
            (false, false) => found.add(
                AnomalyKind::CtpAhead,
                last_t,
                format!("input {ival} at {ip}@{io} has an output at {} but the group's committed offset is {c}: it would be transformed again", fmt_at(outs)),
            ),
            (true, false) => {}
        }
    }
    count("ctp_inputs_checked", checked);
    for (p, offsets) in missing {
        found.add(
            AnomalyKind::CtpMissing,
            last_t,
            format!(
                "input partition {p}: {} record(s) below the committed offset {} have no output under read_committed (first: {})",
                offsets.len(),
                committed[&p],
                list(&offsets)
            ),
        );
    }
    for (p, offsets) in undrained {
        found.add(
            AnomalyKind::CtpNotDrained,
            last_t,
            format!(
                "input partition {p}: the committed offset stayed at {} below the input's end {}: {} record(s) never transformed (first: {})",
                committed[&p],
                input_end.get(&p).copied().unwrap_or(-1),
                offsets.len(),
                list(&offsets)
            ),
        );
    }
    for (p, c) in &committed {
        if let Some(end) = input_end.get(p).filter(|end| c > *end) {
            found.add(
                AnomalyKind::VanishedRead,
                last_t,
                format!("consume-transform-produce: the committed offset {c} of input partition {p} is past its final end {end}"),
            );
        }
    }
}

fn list(offsets: &[i64]) -> String {
    let shown: Vec<String> = offsets.iter().take(LISTED).map(i64::to_string).collect();
    shown.join(", ")
}

fn fmt_at(at: &[(i32, i64)]) -> String {
    at.iter()
        .map(|(p, o)| format!("{p}@{o}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    //! Planted histories: a clean consume-transform-produce run, then a duplicate output,
    //! a missing output, an output ahead of its offset, an undrained partition, a reorder,
    //! an output of a vanished input, and committed offsets going backwards.

    use crate::checker::{check, Verdict};
    use crate::history::{Entry, Kind, Meta, Phase};

    /// Input: partition 0 holds w0.0-0..3 at 0..3, partition 1 w0.0-4..5 at 0..1; both
    /// read back to their ends (4, 2).
    fn input() -> Vec<Entry> {
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
            txn_topic: None,
            ctp_topic: Some("out".into()),
        };
        let mut lines = vec![Entry::new(0, Kind::Meta, Phase::Info)
            .detail(serde_json::to_string(&meta).expect("ok: serializable"))];
        let records = [
            (0, 0, 0),
            (0, 1, 1),
            (0, 2, 2),
            (0, 3, 3),
            (1, 0, 4),
            (1, 1, 5),
        ];
        for (i, (p, o, seq)) in records.iter().enumerate() {
            let val = format!("w0.0-{seq}");
            lines.push(
                Entry::new(1, Kind::Produce, Phase::Invoke)
                    .id(i as u64)
                    .worker("w0.0")
                    .partition(*p)
                    .value(&val),
            );
            lines.push(
                Entry::new(2, Kind::Produce, Phase::Ok)
                    .id(i as u64)
                    .partition(*p)
                    .offset(*o),
            );
            lines.push(
                Entry::new(3, Kind::FinalRead, Phase::Ok)
                    .partition(*p)
                    .offset(*o)
                    .value(&val),
            );
        }
        for (p, end) in [(0, 4), (1, 2)] {
            lines.push(
                Entry::new(4, Kind::FinalEnd, Phase::Ok)
                    .partition(p)
                    .offset(end),
            );
        }
        lines
    }

    /// Two committed transactions (0@0..1 + 1@0; 0@2..3 + 1@1) and one aborted, the
    /// committed offsets read during the run.
    fn run() -> Vec<Entry> {
        let mut lines = input();
        let txn = |id: u64, detail: &str, phase: Phase| {
            Entry::new(5, Kind::CtpTxn, phase)
                .id(id)
                .worker("y0.0")
                .detail(detail)
        };
        let commit = |id: u64, p: i32, o: i64, t: u64| {
            Entry::new(t, Kind::Commit, Phase::Ok)
                .id(id)
                .worker("y0.0")
                .group("chaos-ctp")
                .partition(p)
                .offset(o)
        };
        lines.push(txn(1, "3 records", Phase::Invoke));
        lines.push(txn(1, "committed", Phase::Ok));
        lines.push(commit(1, 0, 2, 6));
        lines.push(commit(1, 1, 1, 6));
        lines.push(txn(2, "3 records", Phase::Invoke));
        lines.push(txn(2, "aborted", Phase::Ok));
        lines.push(txn(3, "3 records", Phase::Invoke));
        lines.push(txn(3, "committed", Phase::Ok));
        lines.push(commit(3, 0, 4, 8));
        lines.push(commit(3, 1, 2, 8));
        lines
    }

    /// The output read-back (`outputs`: (output partition, value)) and the final
    /// committed offsets.
    fn finish(mut lines: Vec<Entry>, outputs: &[(i32, &str)], committed: [i64; 2]) -> Verdict {
        let mut next = [0i64; 2];
        for (p, val) in outputs {
            let o = next[*p as usize];
            // a commit marker after every record, as if each were its own transaction
            next[*p as usize] += 2;
            lines.push(
                Entry::new(10, Kind::CtpFinalRead, Phase::Ok)
                    .partition(*p)
                    .offset(o)
                    .value(*val),
            );
        }
        for p in 0..2 {
            lines.push(
                Entry::new(11, Kind::CtpFinalEnd, Phase::Ok)
                    .partition(p)
                    .offset(next[p as usize]),
            );
            lines.push(
                Entry::new(11, Kind::CtpFinalCommitted, Phase::Ok)
                    .group("chaos-ctp")
                    .partition(p)
                    .offset(committed[p as usize]),
            );
        }
        check(&lines)
    }

    const CLEAN: &[(i32, &str)] = &[
        (0, "0@0=w0.0-0"),
        (0, "0@1=w0.0-1"),
        (1, "1@0=w0.0-4"),
        (0, "0@2=w0.0-2"),
        (0, "0@3=w0.0-3"),
        (1, "1@1=w0.0-5"),
    ];

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
    fn a_clean_consume_transform_produce_history_passes() {
        let v = finish(run(), CLEAN, [4, 2]);
        assert!(v.passed(), "{:?}", v.examples);
        assert_eq!(v.operations["ctp_txn_begun"], 3);
        assert_eq!(v.operations["ctp_txn_committed"], 2);
        assert_eq!(v.operations["ctp_txn_aborted"], 1);
        assert_eq!(v.operations["ctp_final_outputs"], 6);
        assert_eq!(v.operations["ctp_inputs_checked"], 6);
    }

    #[test]
    fn planted_duplicate_output_is_flagged() {
        let mut out = CLEAN.to_vec();
        out.push((0, "0@3=w0.0-3"));
        let v = finish(run(), &out, [4, 2]);
        // the copy is also out of input order in its output partition
        assert_eq!(kinds(&v), vec![("ctp_duplicate", 1), ("ctp_reorder", 1)]);
        assert!(
            detail_of(&v, "ctp_duplicate").contains("w0.0-3 at 0@3 has 2 outputs"),
            "{:?}",
            v.examples
        );
    }

    #[test]
    fn planted_missing_output_is_flagged() {
        let out: Vec<(i32, &str)> = CLEAN
            .iter()
            .copied()
            .filter(|(_, v)| *v != "0@1=w0.0-1")
            .collect();
        let v = finish(run(), &out, [4, 2]);
        assert_eq!(kinds(&v), vec![("ctp_missing", 1)]);
        assert!(
            detail_of(&v, "ctp_missing").contains("1 record(s) below the committed offset 4"),
            "{:?}",
            v.examples
        );
    }

    /// `run()` with the last transaction's outcome unknown (no acknowledged commit).
    fn run_last_unknown() -> Vec<Entry> {
        let mut lines = run();
        lines.retain(|e| !(e.id == Some(3) && e.phase == Phase::Ok));
        lines.push(
            Entry::new(8, Kind::CtpTxn, Phase::Fail)
                .id(3)
                .worker("y0.0")
                .detail("unknown")
                .error("commit_transaction: timed out"),
        );
        lines
    }

    #[test]
    fn an_output_ahead_of_its_committed_offset_is_flagged() {
        // the last transaction's outputs are there, its offsets are not
        let v = finish(run_last_unknown(), CLEAN, [2, 1]);
        assert_eq!(kinds(&v), vec![("ctp_ahead", 3)], "{:?}", v.examples);
        assert_eq!(v.operations["ctp_txn_unknown"], 1);
    }

    #[test]
    fn a_final_committed_offset_below_an_acknowledged_commit_is_flagged() {
        let v = finish(run(), &CLEAN[..3], [2, 1]);
        // and the last transaction's records, acknowledged, were never transformed
        assert_eq!(
            kinds(&v),
            vec![("commit_backwards", 2), ("ctp_not_drained", 2)],
            "{:?}",
            v.examples
        );
    }

    #[test]
    fn an_undrained_partition_is_flagged() {
        let v = finish(run_last_unknown(), &CLEAN[..4], [3, 1]);
        assert_eq!(kinds(&v), vec![("ctp_not_drained", 2)], "{:?}", v.examples);
        assert!(detail_of(&v, "ctp_not_drained").contains("stayed at 3 below the input's end 4"));
    }

    #[test]
    fn planted_reorder_is_flagged() {
        let mut out = CLEAN.to_vec();
        out.swap(0, 1);
        let v = finish(run(), &out, [4, 2]);
        assert_eq!(kinds(&v), vec![("ctp_reorder", 1)]);
    }

    #[test]
    fn an_output_of_a_vanished_input_is_flagged() {
        let mut out = CLEAN.to_vec();
        out[1] = (0, "0@1=w0.0-9");
        let v = finish(run(), &out, [4, 2]);
        // its input record has no output then: missing as well
        assert_eq!(
            kinds(&v),
            vec![("ctp_missing", 1), ("vanished_read", 1)],
            "{:?}",
            v.examples
        );
    }

    #[test]
    fn committed_offsets_going_backwards_are_flagged() {
        let mut lines = run();
        lines.push(
            Entry::new(20, Kind::Committed, Phase::Invoke)
                .id(50)
                .worker("y0.1")
                .group("chaos-ctp"),
        );
        lines.push(
            Entry::new(21, Kind::Committed, Phase::Ok)
                .id(50)
                .worker("y0.1")
                .group("chaos-ctp")
                .partition(0)
                .offset(2),
        );
        let v = finish(lines, CLEAN, [4, 2]);
        assert_eq!(kinds(&v), vec![("commit_backwards", 1)], "{:?}", v.examples);
    }

    #[test]
    fn an_unfinished_output_read_back_is_incomplete() {
        let mut lines = run();
        lines.push(
            Entry::new(11, Kind::CtpFinalEnd, Phase::Ok)
                .partition(0)
                .offset(0),
        );
        let v = check(&lines);
        // partition 1's read-back and the committed offsets are missing
        assert_eq!(kinds(&v), vec![("incomplete", 2)], "{:?}", v.examples);
    }
}
