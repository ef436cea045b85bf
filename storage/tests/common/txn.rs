//! Transactions as a test sees them: batch builders for transactional producers, a
//! read_committed consumer (Kafka's fetcher: aborted transactions from the fetch answer,
//! records up to the last stable offset), and a plain model of what the log should say
//! (last stable offset, aborted transactions, what a read_committed reader sees).
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use sluice_proto::batch::{build_batch, end_txn_marker, RecordBatchHeader, SimpleRecord};
use sluice_storage::{AbortedTxn, PartitionLog};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A batch from producer `pid`/`epoch`, first sequence `seq`, one record per tag (value
/// = the tag, big endian), transactional or not.
pub fn tx_batch(pid: i64, epoch: i16, seq: i32, tags: &[u32], transactional: bool) -> Bytes {
    let vals: Vec<[u8; 4]> = tags.iter().map(|t| t.to_be_bytes()).collect();
    let recs: Vec<SimpleRecord<'_>> = vals
        .iter()
        .map(|v| SimpleRecord {
            key: Some(b"k"),
            value: Some(v),
            timestamp: 1000,
            headers: &[],
        })
        .collect();
    let mut v = build_batch(0, &recs).to_vec();
    if pid >= 0 {
        v[43..51].copy_from_slice(&pid.to_be_bytes());
        v[51..53].copy_from_slice(&epoch.to_be_bytes());
        v[53..57].copy_from_slice(&seq.to_be_bytes());
    }
    if transactional {
        v[22] |= 0x10;
    }
    let crc = crc32c::crc32c(&v[21..]);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(v)
}

/// The tags a read_committed consumer gets from `[from, lso)` of `log`, by Kafka's
/// fetcher rules: a transactional batch of a producer with an aborted transaction that
/// started at or before it (and whose abort marker it has not passed) is skipped;
/// control batches are never delivered.
pub async fn read_committed(log: &PartitionLog, from: i64, lso: i64) -> Vec<u32> {
    let aborted = log.aborted_transactions(from, lso).await.unwrap();
    let mut queue: Vec<AbortedTxn> = aborted;
    queue.sort_by_key(|a| a.first_offset);
    let mut queue = queue.into_iter().peekable();
    let mut aborting: HashSet<i64> = HashSet::new();
    let mut out = Vec::new();
    let mut next = from;
    while next < lso {
        let got = log.read(next, lso, 1 << 20, true).await.unwrap();
        if got.is_empty() {
            break;
        }
        for b in got {
            let h = RecordBatchHeader::parse(&b).unwrap();
            next = h.last_offset() + 1;
            while queue
                .peek()
                .is_some_and(|a| a.first_offset <= h.last_offset())
            {
                let a = queue.next().unwrap();
                aborting.insert(a.producer_id);
            }
            if h.is_control() {
                if end_txn_marker(&b).unwrap().is_some_and(|m| !m.commit) {
                    aborting.remove(&h.producer_id);
                }
                continue;
            }
            if h.is_transactional() && aborting.contains(&h.producer_id) {
                continue;
            }
            for r in super::records_of(&b) {
                let v = r.3.unwrap();
                out.push(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
            }
        }
    }
    out
}

/// One transaction in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MTxn {
    pub pid: i64,
    pub first: i64,
    /// (marker offset, committed)
    pub end: Option<(i64, bool)>,
}

/// What the log should hold, transaction-wise.
#[derive(Clone, Debug, Default)]
pub struct TxnModel {
    /// offset -> (tag, transaction index or None for a plain record)
    pub records: BTreeMap<i64, (u32, Option<usize>)>,
    pub txns: Vec<MTxn>,
    /// Offsets of every batch (markers too), for truncation at batch boundaries.
    pub batches: Vec<(i64, i64)>,
    pub hw_seen: i64,
    pub end: i64,
    pub start: i64,
}

impl TxnModel {
    fn ongoing(&self, pid: i64) -> Option<usize> {
        self.txns
            .iter()
            .position(|t| t.pid == pid && t.end.is_none())
    }

    /// A data batch at `base` with `tags`.
    pub fn data(&mut self, pid: i64, transactional: bool, base: i64, tags: &[u32]) {
        let txn = if transactional {
            Some(self.ongoing(pid).unwrap_or_else(|| {
                self.txns.push(MTxn {
                    pid,
                    first: base,
                    end: None,
                });
                self.txns.len() - 1
            }))
        } else {
            None
        };
        for (i, &t) in tags.iter().enumerate() {
            self.records.insert(base + i as i64, (t, txn));
        }
        let last = base + tags.len() as i64 - 1;
        self.batches.push((base, last));
        self.end = last + 1;
    }

    /// A marker at `offset`.
    pub fn marker(&mut self, pid: i64, commit: bool, offset: i64) {
        if let Some(i) = self.ongoing(pid) {
            self.txns[i].end = Some((offset, commit));
        }
        self.batches.push((offset, offset));
        self.end = offset + 1;
    }

    /// Kafka's last stable offset for `hw` (which, as the log takes it, never goes down:
    /// a transaction whose marker fell below the highest one seen is stable).
    pub fn lso(&mut self, hw: i64) -> i64 {
        self.hw_seen = self.hw_seen.max(hw);
        let mut lso = hw;
        for t in &self.txns {
            let unstable = match t.end {
                None => true,
                Some((m, _)) => m >= self.hw_seen,
            };
            if unstable {
                lso = lso.min(t.first);
            }
        }
        lso
    }

    /// The first unstable offset (with the high watermarks seen so far).
    pub fn first_unstable(&self) -> Option<i64> {
        self.txns
            .iter()
            .filter(|t| t.end.is_none_or(|(m, _)| m >= self.hw_seen))
            .map(|t| t.first)
            .min()
    }

    /// What a Fetch of `[from, upper)` returns as aborted transactions, as a set.
    pub fn aborted(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        let mut v: Vec<AbortedTxn> = self
            .txns
            .iter()
            .filter(|t| {
                t.end
                    .is_some_and(|(m, c)| !c && m >= from && m >= self.start && t.first < upper)
            })
            .map(|t| AbortedTxn {
                producer_id: t.pid,
                first_offset: t.first,
            })
            .collect();
        v.sort();
        v
    }

    /// The tags a read_committed reader sees in `[from, lso)`.
    pub fn visible(&self, from: i64, lso: i64) -> Vec<u32> {
        self.records
            .range(from..lso)
            .filter(|(_, (_, txn))| {
                txn.is_none_or(|i| self.txns[i].end.is_none_or(|(_, commit)| commit))
            })
            .map(|(_, (t, _))| *t)
            .collect()
    }

    /// Retention moved the log start to `start`.
    pub fn set_start(&mut self, start: i64) {
        self.start = start;
        self.records.retain(|&o, _| o >= start);
        self.batches.retain(|b| b.0 >= start);
    }

    /// Cut everything at or after `end` (a batch boundary).
    pub fn truncate(&mut self, end: i64) {
        self.records.retain(|&o, _| o < end);
        self.batches.retain(|b| b.0 < end);
        self.txns.retain(|t| t.first < end);
        for t in self.txns.iter_mut() {
            if t.end.is_some_and(|(m, _)| m >= end) {
                t.end = None;
            }
        }
        self.end = end;
        self.hw_seen = self.hw_seen.min(end);
    }

    /// The batch boundary at or before `offset` (the cut `truncate_from` makes).
    pub fn boundary(&self, offset: i64) -> i64 {
        self.batches
            .iter()
            .find(|b| b.1 >= offset)
            .map_or(self.end, |b| b.0)
    }

    /// Producer id -> first offset of its transaction under way.
    pub fn ongoing_set(&self) -> HashMap<i64, i64> {
        self.txns
            .iter()
            .filter(|t| t.end.is_none())
            .map(|t| (t.pid, t.first))
            .collect()
    }
}

/// Checks `log` against `m` at high watermark `hw`: last stable offset, first unstable
/// offset, the transactions under way, the aborted transactions of every window and
/// what a read_committed reader sees.
pub async fn check_txns(log: &PartitionLog, m: &mut TxnModel, hw: i64, ctx: &str) {
    let lso = log.last_stable_offset(hw);
    assert_eq!(lso, m.lso(hw), "{ctx}: last stable offset at hw {hw}");
    assert_eq!(
        log.first_unstable_offset(),
        m.first_unstable(),
        "{ctx}: first unstable"
    );
    let ongoing: HashMap<i64, i64> = log
        .producers()
        .iter()
        .filter(|p| p.current_txn_start_offset >= 0)
        .map(|p| (p.producer_id, p.current_txn_start_offset))
        .collect();
    assert_eq!(ongoing, m.ongoing_set(), "{ctx}: transactions under way");
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    let step = ((end - start) / 12).max(1);
    let mut points: Vec<i64> = (start..=end + 1).step_by(step as usize).collect();
    points.push(end);
    for &from in &points {
        for &upper in &points {
            let mut got = log.aborted_transactions(from, upper).await.unwrap();
            got.sort();
            assert_eq!(
                got,
                m.aborted(from, upper),
                "{ctx}: aborted in [{from}, {upper})"
            );
        }
    }
    assert_eq!(
        read_committed(log, start, lso).await,
        m.visible(start, lso),
        "{ctx}: read_committed view up to {lso}"
    );
}
