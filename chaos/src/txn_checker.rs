//! The transactional topic's checks. The ground truth is its read-back after healing:
//! read_committed up to each partition's last stable offset (LSO), and read_uncommitted up
//! to its high watermark. A transaction's outcome as the client saw it is `committed`,
//! `aborted` or unknown (a call failed); one without a `commit` end call can never commit.
//!
//! - `txn_aborted_read`: a record of a transaction that cannot have committed (the client
//!   aborted it, or never asked to commit it), read under read_committed — during the run
//!   or in the read-back — or a run-time read_committed read of a record the read-back
//!   skips as aborted (its marker was ABORT); one per transaction;
//! - `txn_committed_lost`: a transaction whose commit was acknowledged, not every record of
//!   which is in the read_committed read-back (at its acknowledged offset);
//! - `txn_partial`: a transaction of unknown outcome read back in part;
//! - `txn_duplicate`: a transactional value at two offsets of a read-back, or read at two
//!   offsets during the run;
//! - `txn_reorder`: a read_committed session reading a partition's offsets out of rising
//!   order, or one producer's values out of sequence order in the read_committed log;
//! - `txn_uncommitted_read`: a read_committed read of a record before its transaction's
//!   commit was asked for, or at or above the partition's final LSO (read past the LSO);
//! - `txn_lso_stuck`: after healing and the last transactional send, the LSO held below
//!   the high watermark past every transaction timeout (an open transaction nobody ends).
//!
//! Reads of records no final log holds count as `vanished_read`, unknown values as
//! `unexpected_value`, an unfinished read_committed read-back as `incomplete`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::checker::{split_value, AnomalyKind, Found, Verdict};
use crate::history::{Entry, Isolation, Kind, Phase, HEALED};
use crate::txn_workload::{TXN_CLEANUP_INTERVAL_MS, TXN_TIMEOUT_MS};

/// How long after the later of the last transactional send and the heal the LSO must have
/// reached the high watermark: a transaction left open is aborted by its coordinator after
/// `transaction.timeout.ms`, checked every cleanup interval.
pub const LSO_GRACE_MS: u64 = TXN_TIMEOUT_MS + TXN_CLEANUP_INTERVAL_MS + 4_000;

/// How a transaction ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed,
    Aborted,
    /// A call failed; the producer was replaced.
    Unknown,
    /// No end in the history (the run stopped first).
    Open,
}

struct Txn<'a> {
    id: u64,
    worker: &'a str,
    /// (partition, value) of every record sent, in order.
    records: Vec<(i32, &'a str)>,
    /// value -> (partition, offset) of its delivery report.
    acked: HashMap<&'a str, (i32, i64)>,
    /// When the `commit` end call was asked for.
    commit_asked: Option<u64>,
    outcome: Outcome,
    /// When the outcome was seen (else when the transaction began).
    t: u64,
}

impl Txn<'_> {
    /// The transaction cannot have committed: aborted by its client, or never asked to
    /// commit.
    fn never_committed(&self) -> bool {
        self.outcome == Outcome::Aborted || self.commit_asked.is_none()
    }

    fn describe(&self) -> String {
        let outcome = match self.outcome {
            Outcome::Committed => "commit acknowledged",
            Outcome::Aborted => "aborted by its client",
            Outcome::Unknown if self.commit_asked.is_some() => "outcome unknown, commit asked",
            Outcome::Unknown => "outcome unknown, commit never asked",
            Outcome::Open => "never ended",
        };
        format!(
            "transaction {} of {} ({outcome}, {} records)",
            self.id,
            self.worker,
            self.records.len()
        )
    }
}

type Log<'a> = BTreeMap<(i32, i64), &'a str>;

/// Checks the transactional topic's lines of `entries`; `partitions` are its partitions.
pub(crate) fn check(entries: &[Entry], partitions: &[i32], found: &mut Found, v: &mut Verdict) {
    let mut count = |name: &str, n: u64| *v.operations.entry(name.to_string()).or_default() += n;
    let mut txns: BTreeMap<u64, Txn<'_>> = BTreeMap::new();
    let mut value_txn: HashMap<&str, u64> = HashMap::new();
    let mut reads: Vec<&Entry> = Vec::new();
    let (mut rc_log, mut ru_log): (Log<'_>, Log<'_>) = Default::default();
    // partition -> (end offset, t of the end line)
    let mut rc_end: BTreeMap<i32, (i64, u64)> = BTreeMap::new();
    let mut ru_end: BTreeMap<i32, (i64, u64)> = BTreeMap::new();
    let (mut last_send, mut healed) = (0u64, 0u64);

    for e in entries {
        let committed = e.isolation.as_deref() == Some(Isolation::ReadCommitted.name());
        match (e.kind, e.phase, e.id) {
            (Kind::Txn, Phase::Invoke, Some(id)) => {
                count("txn_begun", 1);
                txns.insert(
                    id,
                    Txn {
                        id,
                        worker: e.worker.as_deref().unwrap_or("?"),
                        records: Vec::new(),
                        acked: HashMap::new(),
                        commit_asked: None,
                        outcome: Outcome::Open,
                        t: e.t,
                    },
                );
            }
            (Kind::TxnSend, Phase::Invoke, Some(id)) => {
                last_send = last_send.max(e.t);
                if let (Some(t), Some(p), Some(val)) = (txns.get_mut(&id), e.partition, &e.value) {
                    count("txn_records_sent", 1);
                    t.records.push((p, val));
                    value_txn.insert(val, id);
                }
            }
            (Kind::TxnSend, Phase::Ok, Some(id)) => {
                if let (Some(t), Some(p), Some(o), Some(val)) =
                    (txns.get_mut(&id), e.partition, e.offset, &e.value)
                {
                    count("txn_records_acked", 1);
                    t.acked.insert(val, (p, o));
                }
            }
            (Kind::TxnEnd, Phase::Invoke, Some(id)) if e.detail.as_deref() == Some("commit") => {
                if let Some(t) = txns.get_mut(&id) {
                    t.commit_asked = Some(e.t);
                }
            }
            (Kind::Txn, Phase::Ok | Phase::Fail, Some(id)) => {
                let outcome = match (e.phase, e.detail.as_deref()) {
                    (Phase::Ok, Some("committed")) => Outcome::Committed,
                    (Phase::Ok, Some("aborted")) => Outcome::Aborted,
                    _ => Outcome::Unknown,
                };
                count(
                    match outcome {
                        Outcome::Committed => "txn_committed",
                        Outcome::Aborted => "txn_aborted",
                        _ => "txn_unknown",
                    },
                    1,
                );
                if let Some(t) = txns.get_mut(&id) {
                    t.outcome = outcome;
                    t.t = e.t;
                }
            }
            (Kind::TxnRead, Phase::Ok, _) => {
                count("txn_reads", 1);
                reads.push(e);
            }
            (Kind::TxnFinalRead, Phase::Ok, _) => {
                if let (Some(p), Some(o), Some(val)) = (e.partition, e.offset, &e.value) {
                    let log = if committed { &mut rc_log } else { &mut ru_log };
                    log.insert((p, o), val);
                }
            }
            (Kind::TxnFinalEnd, Phase::Ok, _) => {
                if let (Some(p), Some(o)) = (e.partition, e.offset) {
                    let ends = if committed { &mut rc_end } else { &mut ru_end };
                    ends.insert(p, (o, e.t));
                }
            }
            (Kind::Info, _, _) if e.detail.as_deref() == Some(HEALED) => healed = e.t,
            _ => {}
        }
    }
    let open = txns.values().filter(|t| t.outcome == Outcome::Open).count();
    if open > 0 {
        v.notes.push(format!(
            "{open} transaction(s) without an end in the history"
        ));
    }

    // --- the read-backs --------------------------------------------------------------------
    let last_t = entries.last().map_or(0, |e| e.t);
    for p in partitions {
        if !rc_end.contains_key(p) {
            found.add(
                AnomalyKind::Incomplete,
                last_t,
                format!("transactional topic partition {p}: the read_committed read-back did not finish; its transactions are unchecked"),
            );
        }
    }
    rc_log.retain(|(p, o), _| rc_end.get(p).is_some_and(|(end, _)| o < end));
    ru_log.retain(|(p, o), _| ru_end.get(p).is_some_and(|(end, _)| o < end));
    count("txn_final_records", rc_log.len() as u64);
    count("txn_final_records_uncommitted", ru_log.len() as u64);
    let where_rc = positions(&rc_log);
    let where_ru = positions(&ru_log);
    let t_of = |val: &str| {
        value_txn
            .get(val)
            .and_then(|id| txns.get(id))
            .map_or(last_t, |t| t.t)
    };
    for (log, at, what) in [
        (&rc_log, &where_rc, "read_committed"),
        (&ru_log, &where_ru, "read_uncommitted"),
    ] {
        for ((p, o), val) in log {
            if !value_txn.contains_key(val) {
                found.add(
                    AnomalyKind::UnexpectedValue,
                    last_t,
                    format!("transactional topic {p}@{o} holds {val:?} ({what}), which no producer sent"),
                );
            }
        }
        for (val, places) in at {
            // a duplicate in both read-backs is one anomaly
            if places.len() > 1
                && (what == "read_committed" || where_rc.get(val).is_none_or(|x| x.len() < 2))
            {
                found.add(
                    AnomalyKind::TxnDuplicate,
                    t_of(val),
                    format!(
                        "transactional value {val} is in the {what} read-back {} times, at {}",
                        places.len(),
                        fmt_at(places)
                    ),
                );
            }
        }
    }
    // one producer's values in sequence order per partition of the read_committed log
    let mut last_seq: HashMap<(i32, &str), (u64, i64)> = HashMap::new();
    for ((p, o), val) in &rc_log {
        let Some((prod, seq)) = split_value(val) else {
            continue;
        };
        if let Some((prev, prev_o)) = last_seq.get(&(*p, prod)) {
            if seq <= *prev {
                found.add(
                    AnomalyKind::TxnReorder,
                    t_of(val),
                    format!("transactional partition {p}: {prod}-{seq} at offset {o} after {prod}-{prev} at offset {prev_o} (read_committed)"),
                );
            }
        }
        last_seq.insert((*p, prod), (seq, *o));
    }

    // --- transactions against the read_committed read-back -----------------------------------
    // transaction id -> where records of a never-committed transaction were read
    let mut aborted_seen: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for t in txns.values() {
        if t.records.is_empty() || !t.records.iter().all(|(p, _)| rc_end.contains_key(p)) {
            continue;
        }
        let in_rc: Vec<&str> = t
            .records
            .iter()
            .map(|(_, val)| *val)
            .filter(|val| where_rc.contains_key(val))
            .collect();
        if t.never_committed() {
            for val in &in_rc {
                aborted_seen.entry(t.id).or_default().push(format!(
                    "{val} in the read_committed read-back at {}",
                    fmt_at(&where_rc[val])
                ));
            }
            continue;
        }
        match t.outcome {
            Outcome::Committed => {
                let mut wrong = Vec::new();
                for (p, val) in &t.records {
                    let acked = t.acked.get(val);
                    match (where_rc.get(val), acked) {
                        (None, _) => wrong.push(format!(
                            "{val} (sent to partition {p}) is missing{}",
                            elsewhere(val, &where_ru, &rc_end)
                        )),
                        (Some(at), Some(ack)) if !at.contains(ack) => wrong.push(format!(
                            "{val} acked at {}@{} is at {}",
                            ack.0,
                            ack.1,
                            fmt_at(at)
                        )),
                        _ => {}
                    }
                }
                if !wrong.is_empty() {
                    found.add(
                        AnomalyKind::TxnCommittedLost,
                        t.t,
                        format!(
                            "{}: {} of its records not read back as acknowledged under read_committed: {}",
                            t.describe(),
                            wrong.len(),
                            wrong.join("; ")
                        ),
                    );
                }
            }
            Outcome::Unknown | Outcome::Open => {
                if in_rc.len() == t.records.len() {
                    count("txn_unknown_read_whole", 1);
                } else if !in_rc.is_empty() {
                    found.add(
                        AnomalyKind::TxnPartial,
                        t.t,
                        format!(
                            "{}: {} of its records read back under read_committed ({})",
                            t.describe(),
                            in_rc.len(),
                            in_rc.join(", ")
                        ),
                    );
                }
            }
            Outcome::Aborted => {} // never_committed
        }
    }

    // --- read_committed reads during the run ------------------------------------------------
    let mut session_last: HashMap<(&str, u64, i32), i64> = HashMap::new();
    let mut read_at: BTreeMap<&str, BTreeSet<(i32, i64)>> = BTreeMap::new();
    for e in &reads {
        let (Some(p), Some(o), Some(val)) = (e.partition, e.offset, e.value.as_deref()) else {
            continue;
        };
        let w = e.worker.as_deref().unwrap_or("?");
        let key = (w, e.session.unwrap_or(0), p);
        if let Some(prev) = session_last.get(&key) {
            if o <= *prev {
                found.add(
                    AnomalyKind::TxnReorder,
                    e.t,
                    format!(
                        "read_committed consumer {w} session {}: read {p}@{o} after {p}@{prev}",
                        key.1
                    ),
                );
            }
        }
        session_last.insert(key, o);
        read_at.entry(val).or_default().insert((p, o));
        let Some(t) = value_txn.get(val).and_then(|id| txns.get(id)) else {
            found.add(
                AnomalyKind::UnexpectedValue,
                e.t,
                format!(
                    "read_committed consumer {w} read {val:?} at {p}@{o}, which no producer sent"
                ),
            );
            continue;
        };
        if t.never_committed() {
            aborted_seen
                .entry(t.id)
                .or_default()
                .push(format!("{val} read by {w} at {p}@{o} (t={})", e.t));
            continue;
        }
        if let Some(asked) = t.commit_asked.filter(|asked| e.t < *asked) {
            found.add(
                AnomalyKind::TxnUncommittedRead,
                e.t,
                format!("read_committed consumer {w} read {val} at {p}@{o} at t={}, before {} asked to commit (t={asked})", e.t, t.describe()),
            );
        }
        let Some((end, _)) = rc_end.get(&p) else {
            continue;
        };
        let in_ru = ru_log.get(&(p, o)) == Some(&val);
        if o >= *end {
            let what = if in_ru {
                format!("the read_committed read-back ends (last stable offset) at {end}")
            } else {
                format!("no read-back holds it there; the read_committed one ends at {end}")
            };
            found.add(
                AnomalyKind::TxnUncommittedRead,
                e.t,
                format!("read_committed consumer {w} read {val} at {p}@{o}, past the last stable offset: {what}"),
            );
        } else if rc_log.get(&(p, o)) != Some(&val) {
            if in_ru && t.outcome != Outcome::Committed {
                aborted_seen.entry(t.id).or_default().push(format!(
                    "{val} read by {w} at {p}@{o} (t={}), which the read_committed read-back skips (aborted)",
                    e.t
                ));
            } else if !in_ru {
                let now = rc_log
                    .get(&(p, o))
                    .map_or("nothing".to_string(), |x| x.to_string());
                found.add(
                    AnomalyKind::VanishedRead,
                    e.t,
                    format!("read_committed consumer {w} read {val} at transactional {p}@{o}; the read-backs hold {now} there"),
                );
            } // else: a committed transaction's record lost later, flagged as txn_committed_lost
        }
    }
    for (val, at) in &read_at {
        if at.len() > 1 {
            let at: Vec<(i32, i64)> = at.iter().copied().collect();
            found.add(
                AnomalyKind::TxnDuplicate,
                t_of(val),
                format!(
                    "read_committed consumers read {val} at {} offsets: {}",
                    at.len(),
                    fmt_at(&at)
                ),
            );
        }
    }
    for (id, seen) in aborted_seen {
        let t = &txns[&id];
        found.add(
            AnomalyKind::TxnAbortedRead,
            t.t,
            format!(
                "{} read under read_committed: {}",
                t.describe(),
                seen.join("; ")
            ),
        );
    }

    // --- the last stable offset after healing ----------------------------------------------
    let since = last_send.max(healed);
    for (p, (lso, lso_t)) in &rc_end {
        let Some((hw, _)) = ru_end.get(p) else {
            continue;
        };
        if lso >= hw {
            continue;
        }
        let held: Vec<String> = ru_log
            .range((*p, *lso)..(*p, *hw))
            .take(5)
            .map(|((_, o), val)| {
                let owner = value_txn
                    .get(val)
                    .and_then(|id| txns.get(id))
                    .map_or("unknown".to_string(), |t| t.describe());
                format!("{o}: {val} ({owner})")
            })
            .collect();
        let waited = lso_t.saturating_sub(since);
        let what = format!(
            "transactional partition {p}: last stable offset {lso} below the high watermark {hw} {waited} ms after the last transactional send or the heal; from the LSO: {}",
            held.join(", ")
        );
        if waited >= LSO_GRACE_MS {
            found.add(AnomalyKind::TxnLsoStuck, *lso_t, what);
        } else {
            v.notes.push(format!(
                "{what} (within the {LSO_GRACE_MS} ms grace: not judged)"
            ));
        }
    }
}

/// value -> where it is in `log`.
fn positions<'a>(log: &Log<'a>) -> HashMap<&'a str, Vec<(i32, i64)>> {
    let mut at: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    for ((p, o), val) in log {
        at.entry(*val).or_default().push((*p, *o));
    }
    at
}

/// Where a value missing from the read_committed read-back is otherwise.
fn elsewhere(
    val: &str,
    where_ru: &HashMap<&str, Vec<(i32, i64)>>,
    rc_end: &BTreeMap<i32, (i64, u64)>,
) -> String {
    match where_ru.get(val) {
        Some(at) => {
            let beyond = at
                .iter()
                .any(|(p, o)| rc_end.get(p).is_some_and(|(end, _)| o >= end));
            let why = if beyond {
                "at or past the last stable offset"
            } else {
                "skipped as aborted"
            };
            format!(
                " (the read_uncommitted read-back has it at {}: {why})",
                fmt_at(at)
            )
        }
        None => " (nowhere in the read_uncommitted read-back either)".into(),
    }
}

fn fmt_at(at: &[(i32, i64)]) -> String {
    at.iter()
        .map(|(p, o)| format!("{p}@{o}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[path = "txn_checker_tests.rs"]
mod tests;
