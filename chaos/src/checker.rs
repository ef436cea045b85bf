//! The history checker: from the lines of one run, the verdict and the anomalies.
//! The ground truth is the final read-back (every partition read from offset 0 to its high
//! watermark after every fault was healed); against it:
//!
//! - `lost`: an acknowledged produce whose value is not at the offset it was acked with;
//! - `duplicate`: a value at more than one offset of the final log;
//! - `reorder`: one producer's values out of sequence order within a partition, or a
//!   consumer session reading a partition's offsets out of rising order;
//! - `vanished_read`: a consumer read a (partition, offset, value) the final log does not
//!   hold (it read past a durable high watermark, or the record was truncated later);
//! - `commit_backwards`: a group's committed offset, read back, lower than the last one
//!   read back or acknowledged before the read-back started (unless a lower commit was
//!   acknowledged while it ran: librdkafka retries failed commits, so its own older commit
//!   can land after a newer one);
//! - `unexpected_value`: a value in the log that no producer ever sent;
//! - `incomplete`: a partition whose final read-back did not finish (nothing to check it by);
//! - `crash`: a broker exited without being told to;
//! - `storage_error`: an acks=all produce to a leader whose disk is full (the disk
//!   nemesis's probe) answered with something else than KAFKA_STORAGE_ERROR (or success,
//!   not leader, too small an ISR): a timeout, no answer, another code;
//! - the transactional topic's kinds (`txn_aborted_read`, `txn_committed_lost`,
//!   `txn_partial`, `txn_duplicate`, `txn_reorder`, `txn_uncommitted_read`,
//!   `txn_lso_stuck`), described in `txn_checker.rs`;
//! - the consume-transform-produce kinds (`ctp_missing`, `ctp_duplicate`, `ctp_ahead`,
//!   `ctp_not_drained`, `ctp_reorder`), described in `ctp_checker.rs`.
//!
//! Produce failures are indefinite (the record may have been written): such values may
//! appear at most once, anywhere. Values are `<producer>-<sequence>`, the sequence rising
//! per producer.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::history::{Entry, Kind, Meta, Phase};

/// What a leader whose disk is full may answer an acks=all produce: KAFKA_STORAGE_ERROR,
/// or that it no longer leads, or that its ISR is too small (success is checked like any
/// acknowledged produce).
const DISK_FULL_ANSWERS: [&str; 4] = [
    "error code 56",
    "error code 6",
    "error code 19",
    "error code 20",
];
/// What a healthy leader may answer the probe besides success.
const BASELINE_ANSWERS: [&str; 3] = ["error code 6", "error code 19", "error code 20"];

/// Examples kept per anomaly kind.
const EXAMPLES_PER_KIND: usize = 5;

/// An anomaly kind, named as in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    Lost,
    Duplicate,
    Reorder,
    VanishedRead,
    CommitBackwards,
    UnexpectedValue,
    Incomplete,
    Crash,
    StorageError,
    TxnAbortedRead,
    TxnCommittedLost,
    TxnPartial,
    TxnDuplicate,
    TxnReorder,
    TxnUncommittedRead,
    TxnLsoStuck,
    CtpMissing,
    CtpDuplicate,
    CtpAhead,
    CtpNotDrained,
    CtpReorder,
}

impl AnomalyKind {
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::Lost => "lost",
            AnomalyKind::Duplicate => "duplicate",
            AnomalyKind::Reorder => "reorder",
            AnomalyKind::VanishedRead => "vanished_read",
            AnomalyKind::CommitBackwards => "commit_backwards",
            AnomalyKind::UnexpectedValue => "unexpected_value",
            AnomalyKind::Incomplete => "incomplete",
            AnomalyKind::Crash => "crash",
            AnomalyKind::StorageError => "storage_error",
            AnomalyKind::TxnAbortedRead => "txn_aborted_read",
            AnomalyKind::TxnCommittedLost => "txn_committed_lost",
            AnomalyKind::TxnPartial => "txn_partial",
            AnomalyKind::TxnDuplicate => "txn_duplicate",
            AnomalyKind::TxnReorder => "txn_reorder",
            AnomalyKind::TxnUncommittedRead => "txn_uncommitted_read",
            AnomalyKind::TxnLsoStuck => "txn_lso_stuck",
            AnomalyKind::CtpMissing => "ctp_missing",
            AnomalyKind::CtpDuplicate => "ctp_duplicate",
            AnomalyKind::CtpAhead => "ctp_ahead",
            AnomalyKind::CtpNotDrained => "ctp_not_drained",
            AnomalyKind::CtpReorder => "ctp_reorder",
        }
    }
}

/// One anomaly: its kind, the time of the operation that shows it, and what was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub t: u64,
    pub detail: String,
}

/// What the checker found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    /// Operation counts by name (`produce_ok`, `reads`, …).
    pub operations: BTreeMap<String, u64>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Anomalies, by kind (kinds with none left out).
    pub anomalies: BTreeMap<String, u64>,
    /// The first anomalies of each kind, earliest first.
    pub examples: Vec<Anomaly>,
    /// Produce errors by error text (e.g. how often KAFKA_STORAGE_ERROR was seen).
    pub produce_errors: BTreeMap<String, u64>,
    /// Things the reader should know (a torn last line, no meta line).
    pub notes: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.anomalies.is_empty()
    }

    pub fn anomaly_count(&self) -> u64 {
        self.anomalies.values().sum()
    }
}

/// The anomalies found so far, in any order.
#[derive(Default)]
pub(crate) struct Found {
    all: Vec<Anomaly>,
}

impl Found {
    pub(crate) fn add(&mut self, kind: AnomalyKind, t: u64, detail: String) {
        self.all.push(Anomaly { kind, t, detail });
    }
}

/// (producer, sequence) of a value `<producer>-<sequence>`.
pub(crate) fn split_value(v: &str) -> Option<(&str, u64)> {
    let (p, s) = v.rsplit_once('-')?;
    Some((p, s.parse().ok()?))
}

/// Checks a history.
pub fn check(entries: &[Entry]) -> Verdict {
    let mut v = Verdict::default();
    let mut found = Found::default();
    let mut ops: BTreeMap<String, u64> = BTreeMap::new();
    let mut count = |name: &str| *ops.entry(name.to_string()).or_default() += 1;

    let meta: Option<Meta> = entries
        .iter()
        .find(|e| e.kind == Kind::Meta)
        .and_then(|e| serde_json::from_str(e.detail.as_deref()?).ok());
    if meta.is_none() {
        v.notes
            .push("no meta line: partitions known only from the history".into());
    }

    // --- collect -----------------------------------------------------------------------
    // produce invokes: id -> (t, worker, partition, value)
    let mut invoked: HashMap<u64, (u64, String, i32, String)> = HashMap::new();
    let mut sent_values: HashMap<String, u64> = HashMap::new(); // value -> invoke t
    let mut acked: Vec<(u64, i32, i64, String)> = Vec::new(); // (t, partition, offset, value)
    let mut failed_values: Vec<String> = Vec::new();
    let mut reads: Vec<&Entry> = Vec::new();
    let mut commit_ok: Vec<(usize, &Entry)> = Vec::new(); // (history position, line)
    let mut committed_invoke: HashMap<u64, u64> = HashMap::new(); // id -> start t
    let mut committed_obs: Vec<(usize, &Entry)> = Vec::new();
    let mut final_log: BTreeMap<(i32, i64), &Entry> = BTreeMap::new();
    let mut final_end: BTreeMap<i32, i64> = BTreeMap::new();
    let mut partitions_seen: BTreeMap<i32, ()> = BTreeMap::new();

    for (pos, e) in entries.iter().enumerate() {
        let txn_topic = matches!(
            e.kind,
            Kind::Txn
                | Kind::TxnSend
                | Kind::TxnEnd
                | Kind::TxnRead
                | Kind::TxnFinalRead
                | Kind::TxnFinalEnd
                | Kind::CtpFinalRead
                | Kind::CtpFinalEnd
        );
        if let (Some(p), false) = (e.partition, txn_topic) {
            partitions_seen.insert(p, ());
        }
        match (e.kind, e.phase) {
            (Kind::Produce, Phase::Invoke) => {
                count("produce_invoked");
                if let (Some(id), Some(p), Some(val)) = (e.id, e.partition, &e.value) {
                    let w = e.worker.clone().unwrap_or_default();
                    invoked.insert(id, (e.t, w, p, val.clone()));
                    sent_values.insert(val.clone(), e.t);
                }
            }
            (Kind::Produce, Phase::Ok) => {
                count("produce_ok");
                let inv = e.id.and_then(|id| invoked.get(&id));
                match (inv, e.partition, e.offset) {
                    (Some((_, _, _, val)), Some(p), Some(o)) => {
                        acked.push((e.t, p, o, val.clone()))
                    }
                    _ => v.notes.push(format!(
                        "produce ok at t={} without its invoke or offset: ignored",
                        e.t
                    )),
                }
            }
            (Kind::Produce, Phase::Fail) => {
                count("produce_failed");
                let err = e.error.clone().unwrap_or_else(|| "unknown".into());
                match e.detail.as_deref() {
                    Some(crate::nemesis::DISK_FULL_PROBE)
                        if !DISK_FULL_ANSWERS.contains(&err.as_str()) =>
                    {
                        found.add(
                            AnomalyKind::StorageError,
                            e.t,
                            format!(
                                "an acks=all produce to the leader of partition {} with a full disk got {err}, not KAFKA_STORAGE_ERROR (56)",
                                e.partition.unwrap_or(-1)
                            ),
                        );
                    }
                    Some(crate::nemesis::BASELINE_PROBE)
                        if !BASELINE_ANSWERS.contains(&err.as_str()) =>
                    {
                        v.notes.push(format!(
                            "a probe produce before filling the disk got {err} at t={}",
                            e.t
                        ));
                    }
                    _ => {}
                }
                *v.produce_errors.entry(err).or_default() += 1;
                if let Some((_, _, _, val)) = e.id.and_then(|id| invoked.get(&id)) {
                    failed_values.push(val.clone());
                }
            }
            (Kind::Read, Phase::Ok) => {
                count("reads");
                reads.push(e);
            }
            (Kind::Commit, Phase::Invoke) => count("commits_invoked"),
            (Kind::Commit, Phase::Ok) => {
                count("commits_ok");
                commit_ok.push((pos, e));
            }
            (Kind::Commit, Phase::Fail) => count("commits_failed"),
            (Kind::Committed, Phase::Invoke) => {
                if let Some(id) = e.id {
                    committed_invoke.insert(id, e.t);
                }
            }
            (Kind::Committed, Phase::Ok) => {
                count("committed_reads");
                committed_obs.push((pos, e));
            }
            (Kind::FinalRead, Phase::Ok) => {
                if let (Some(p), Some(o)) = (e.partition, e.offset) {
                    final_log.insert((p, o), e);
                }
            }
            (Kind::FinalEnd, Phase::Ok) => {
                if let (Some(p), Some(o)) = (e.partition, e.offset) {
                    final_end.insert(p, o);
                }
            }
            (Kind::Nemesis, Phase::Invoke) => {
                let f = e.fault.clone().unwrap_or_else(|| "unknown".into());
                *v.faults.entry(f).or_default() += 1;
            }
            (Kind::Crash, _) => {
                count("crashes");
                found.add(
                    AnomalyKind::Crash,
                    e.t,
                    e.detail.clone().unwrap_or_else(|| "a broker exited".into()),
                );
            }
            _ => {}
        }
    }
    v.operations = ops;

    // --- completeness ----------------------------------------------------------------
    let partitions: Vec<i32> = match &meta {
        Some(m) => (0..m.partitions).collect(),
        None => partitions_seen.keys().copied().collect(),
    };
    let last_t = entries.last().map_or(0, |e| e.t);
    for p in &partitions {
        if !final_end.contains_key(p) {
            found.add(
                AnomalyKind::Incomplete,
                last_t,
                format!(
                    "partition {p}: the final read-back did not finish; its records are unchecked"
                ),
            );
        }
    }
    let complete = |p: i32| final_end.contains_key(&p);
    // the final log is what lies below each partition's final high watermark
    final_log.retain(|(p, o), _| final_end.get(p).is_some_and(|end| o < end));
    *v.operations.entry("final_records".into()).or_default() = final_log.len() as u64;

    // --- the final log ---------------------------------------------------------------
    let mut where_is: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    for ((p, o), e) in &final_log {
        if let Some(val) = e.value.as_deref() {
            where_is.entry(val).or_default().push((*p, *o));
        }
    }
    // duplicates and unexpected values
    let mut dups: Vec<(&str, &Vec<(i32, i64)>)> = where_is
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(val, at)| (*val, at))
        .collect();
    dups.sort_by_key(|(_, at)| at[1]);
    for (val, at) in dups {
        let t = final_log[&at[1]].t;
        found.add(
            AnomalyKind::Duplicate,
            t,
            format!(
                "value {val} is in the final log {} times, at {}",
                at.len(),
                fmt_at(at)
            ),
        );
    }
    for ((p, o), e) in &final_log {
        let val = e.value.as_deref().unwrap_or("");
        if !sent_values.contains_key(val) {
            found.add(
                AnomalyKind::UnexpectedValue,
                e.t,
                format!("{p}@{o} holds {val:?}, which no producer sent"),
            );
        }
    }
    // per-producer order within each partition of the final log
    let mut last_seq: HashMap<(i32, &str), (u64, i64)> = HashMap::new();
    for ((p, o), e) in &final_log {
        let Some((prod, seq)) = e.value.as_deref().and_then(split_value) else {
            continue;
        };
        if let Some((prev_seq, prev_o)) = last_seq.get(&(*p, prod)) {
            if seq <= *prev_seq {
                found.add(
                    AnomalyKind::Reorder,
                    e.t,
                    format!(
                        "partition {p}: {prod}-{seq} at offset {o} after {prod}-{prev_seq} at offset {prev_o}"
                    ),
                );
            }
        }
        last_seq.insert((*p, prod), (seq, *o));
    }

    // --- acknowledged records ----------------------------------------------------------
    acked.sort();
    // two values acked at one offset: at most one of them can be there (the other is
    // reported as lost, with this in its detail)
    let mut acked_at: HashMap<(i32, i64), Vec<&str>> = HashMap::new();
    for (_, p, o, val) in &acked {
        acked_at.entry((*p, *o)).or_default().push(val);
    }
    for (t, p, o, val) in &acked {
        if !complete(*p) {
            continue;
        }
        let there = final_log.get(&(*p, *o)).and_then(|e| e.value.as_deref());
        if there != Some(val.as_str()) {
            let now = match there {
                Some(x) => format!("the final log has {x} there"),
                None => format!(
                    "the final log has nothing there (its end is {})",
                    final_end.get(p).copied().unwrap_or(-1)
                ),
            };
            let elsewhere = match where_is.get(val.as_str()) {
                Some(at) => format!("; the value is at {}", fmt_at(at)),
                None => "; the value is nowhere in the final log".into(),
            };
            let also: Vec<&str> = acked_at[&(*p, *o)]
                .iter()
                .copied()
                .filter(|x| *x != val.as_str())
                .collect();
            let also = if also.is_empty() {
                String::new()
            } else {
                format!("; {p}@{o} was also acked to {}", also.join(", "))
            };
            found.add(
                AnomalyKind::Lost,
                *t,
                format!("{val} acked at {p}@{o}: {now}{elsewhere}{also}"),
            );
        }
    }
    let _ = failed_values; // indefinite: allowed once anywhere, which `duplicate` covers

    // --- consumer reads ------------------------------------------------------------------
    let mut session_last: HashMap<(&str, u64, i32), i64> = HashMap::new();
    for e in &reads {
        let (Some(p), Some(o)) = (e.partition, e.offset) else {
            continue;
        };
        let val = e.value.as_deref().unwrap_or("");
        let w = e.worker.as_deref().unwrap_or("?");
        let key = (w, e.session.unwrap_or(0), p);
        if let Some(prev) = session_last.get(&key) {
            if o <= *prev {
                found.add(
                    AnomalyKind::Reorder,
                    e.t,
                    format!(
                        "consumer {w} session {}: read {p}@{o} after {p}@{prev}",
                        key.1
                    ),
                );
            }
        }
        session_last.insert(key, o);
        if !complete(p) {
            continue;
        }
        let there = final_log.get(&(p, o)).and_then(|f| f.value.as_deref());
        if there != Some(val) {
            let now = match there {
                Some(x) => format!("the final log has {x} there"),
                None => format!(
                    "the final log ends at {}",
                    final_end.get(&p).copied().unwrap_or(-1)
                ),
            };
            found.add(
                AnomalyKind::VanishedRead,
                e.t,
                format!("consumer {w} read {val} at {p}@{o}; {now}"),
            );
        }
    }

    // --- liveness (a note, not an anomaly: the windows are too short to demand more) -----
    let mut group_reads: Vec<u64> = reads
        .iter()
        .filter(|e| e.worker.as_deref().is_some_and(|w| w.starts_with('g')))
        .map(|e| e.t)
        .collect();
    group_reads.sort_unstable();
    if let (Some(first_ack), Some(last_ack)) = (acked.first(), acked.last()) {
        let mut points = vec![first_ack.0];
        points.extend(group_reads.iter().copied().filter(|t| *t <= last_ack.0));
        points.push(last_ack.0);
        let gap = points
            .windows(2)
            .map(|w| (w[1].saturating_sub(w[0]), w[0], w[1]))
            .max();
        if let Some((len, from, to)) = gap {
            v.notes.push(format!(
                "longest stretch without a read by the group's consumers while produces were acked: {:.1} s (t={from}..{to} ms)",
                len as f64 / 1000.0
            ));
        }
    }

    // --- committed offsets -------------------------------------------------------------
    // Every known committed offset, in the order the history learnt it: commit acks are
    // points (their answer, in the order librdkafka handed the answers over, which is the
    // order the coordinator answered and applied them), read-backs span invoke..answer.
    // A read-back must not be lower than the *last* value known before it started, unless
    // a lower commit was acknowledged while it ran. The last, not the highest: librdkafka
    // retries an OffsetCommit that failed (transport error, COORDINATOR_NOT_AVAILABLE,
    // NOT_COORDINATOR, REQUEST_TIMED_OUT, COORDINATOR_LOAD_IN_PROGRESS) after a backoff,
    // so an older commit can reach the coordinator after a newer one and set the group's
    // offset back: the client's doing, not the broker's.
    type Key = (String, i32);
    /// (end t, history position, offset, what, is a commit)
    type Known = (u64, usize, i64, String, bool);
    let mut known: HashMap<Key, Vec<Known>> = HashMap::new();
    for (pos, e) in &commit_ok {
        if let (Some(g), Some(p), Some(o)) = (&e.group, e.partition, e.offset) {
            let w = e.worker.as_deref().unwrap_or("?");
            known.entry((g.clone(), p)).or_default().push((
                e.t,
                *pos,
                o,
                format!("commit of {o} by {w} acked at t={}", e.t),
                true,
            ));
        }
    }
    let mut observations: Vec<(u64, u64, Key, i64)> = Vec::new(); // (start, end, key, offset)
    for (pos, e) in &committed_obs {
        if let (Some(g), Some(p), Some(o)) = (&e.group, e.partition, e.offset) {
            let start =
                e.id.and_then(|id| committed_invoke.get(&id).copied())
                    .unwrap_or(e.t);
            observations.push((start, e.t, (g.clone(), p), o));
            known.entry((g.clone(), p)).or_default().push((
                e.t,
                *pos,
                o,
                format!("read back as {o} at t={}", e.t),
                false,
            ));
        }
    }
    for list in known.values_mut() {
        list.sort_by_key(|(end, pos, _, _, _)| (*end, *pos));
    }
    observations.sort_by_key(|(start, _, _, _)| *start);
    for (start, end, key, o) in &observations {
        let Some(list) = known.get(key) else { continue };
        // the last value known before this read-back started
        let Some((_, _, last, what, _)) = list.iter().take_while(|(t, ..)| t < start).last() else {
            continue;
        };
        // a lower commit acknowledged while the read-back ran may be what it saw
        let during = list
            .iter()
            .filter(|(t, _, _, _, commit)| *commit && t >= start && t <= end)
            .map(|(_, _, off, _, _)| *off)
            .min();
        let floor = during.map_or(*last, |d| d.min(*last));
        if o < &floor {
            found.add(
                AnomalyKind::CommitBackwards,
                *end,
                format!(
                    "group {} partition {}: committed offset read back as {o} (asked at t={start}), after {what}",
                    key.0, key.1
                ),
            );
        }
    }

    // --- the transactional topic ----------------------------------------------------------
    if meta.as_ref().is_some_and(|m| m.txn_topic.is_some()) {
        crate::txn_checker::check(entries, &partitions, &mut found, &mut v);
    } else if entries.iter().any(|e| e.kind == Kind::Txn) {
        // a history without its meta line: check what it holds, partitions as seen
        let seen: Vec<i32> = entries
            .iter()
            .filter(|e| e.kind == Kind::TxnFinalEnd)
            .filter_map(|e| e.partition)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        crate::txn_checker::check(entries, &seen, &mut found, &mut v);
    }

    // --- consume-transform-produce: the final log above is its input --------------------------
    if meta.as_ref().is_some_and(|m| m.ctp_topic.is_some()) {
        let input: BTreeMap<(i32, i64), &str> = final_log
            .iter()
            .filter_map(|(k, e)| Some((*k, e.value.as_deref()?)))
            .collect();
        crate::ctp_checker::check(entries, &input, &final_end, &partitions, &mut found, &mut v);
    }

    // --- verdict -------------------------------------------------------------------------
    found.all.sort_by_key(|a| (a.kind, a.t));
    let mut per_kind: BTreeMap<AnomalyKind, usize> = BTreeMap::new();
    for a in found.all {
        let n = per_kind.entry(a.kind).or_default();
        *n += 1;
        *v.anomalies.entry(a.kind.name().to_string()).or_default() += 1;
        if *n <= EXAMPLES_PER_KIND {
            v.examples.push(a);
        }
    }
    v
}

fn fmt_at(at: &[(i32, i64)]) -> String {
    at.iter()
        .map(|(p, o)| format!("{p}@{o}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
