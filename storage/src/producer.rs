//! Producer state of one partition (Kafka's ProducerStateManager): per producer id its
//! epoch, its last 5 batches' (seq, offset) ranges, the coordinator epoch of its last
//! transaction marker and the first offset of its transaction under way; per log the
//! transactions under way (by first offset) and the completed ones that may not be
//! stable yet (their marker at or past the high watermark last seen). `append` checks
//! every idempotent or transactional batch against it (fencing, sequence order,
//! duplicate retries, a plain batch inside a transaction) before writing anything, and
//! `append_control` checks a marker's epochs. Every batch that enters the log is then
//! replayed into it (`ProducerStates::replay`, no checks: Kafka's replication origin),
//! which starts and ends transactions and yields the aborted-transaction entries.
//! Built lazily (never at open) by `PartitionLog::load_producer_state`, with async reads
//! before the first append that needs it (an append never reads the log): from the newest snapshot
//! (`snapshot.rs`) at or below the log end and the batch headers after it, or without
//! one from the log start (`Replayer` takes the headers in offset order, gaps
//! included); dropped by truncation, trimmed by retention, untouched by the log cleaner
//! (which keeps each known producer's last batch, emptied if all its records go, so a
//! rebuild still finds its epoch and last sequence). A follower's `append_replicated`
//! replays the leader's batches the same way, so a replica that takes over still
//! recognises retries and has the same transactions.

use crate::error::StorageError;
use crate::pending::PendingQueue;
use crate::segment::Segment;
use crate::txn::{AbortedEntry, ProducerInfo};
use sluice_proto::batch::{end_txn_marker, EndTxnMarker, RecordBatchHeader};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;

/// Batches remembered per producer for duplicate detection (Kafka: 5, the client's
/// max.in.flight.requests.per.connection limit for idempotence).
pub(crate) const BATCHES_PER_PRODUCER: usize = 5;
/// Bytes read at once when hopping over batch headers.
pub(crate) const READ_CHUNK: usize = 256 << 10;

/// Sequence and offset range of one appended batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    pub(crate) first_seq: i32,
    pub(crate) last_seq: i32,
    pub(crate) first_offset: i64,
    pub(crate) last_offset: i64,
}

/// One producer id's state; owned by the partition's shard, never crosses cores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    pub(crate) epoch: i16,
    /// Oldest first; at most `BATCHES_PER_PRODUCER`, all of `epoch`.
    pub(crate) batches: VecDeque<BatchMeta>,
    /// Coordinator epoch of the producer's last transaction marker (-1: none seen).
    pub(crate) coordinator_epoch: i32,
    /// First offset of the producer's transaction under way (Kafka's
    /// currentTxnFirstOffset).
    pub(crate) txn_first: Option<i64>,
    /// Max timestamp of the producer's last batch or marker.
    pub(crate) last_timestamp: i64,
}

impl ProducerEntry {
    pub(crate) fn new(epoch: i16) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            coordinator_epoch: -1,
            txn_first: None,
            last_timestamp: -1,
        }
    }
    /// Kafka's maybeUpdateProducerEpoch: a new epoch forgets the batches of the old one.
    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }
    fn push(&mut self, epoch: i16, m: BatchMeta) {
        self.set_epoch(epoch);
        if self.batches.len() == BATCHES_PER_PRODUCER {
            self.batches.pop_front();
        }
        self.batches.push_back(m);
    }
    fn last_offset(&self) -> i64 {
        self.batches.back().map_or(-1, |b| b.last_offset)
    }
}

/// Sequence of the last record of a batch: base + delta, wrapping to 0 after i32::MAX.
pub(crate) fn last_seq(base_seq: i32, delta: i32) -> i32 {
    let delta = delta.max(0);
    if base_seq > i32::MAX - delta {
        delta - (i32::MAX - base_seq) - 1
    } else {
        base_seq + delta
    }
}

/// The sequence that must follow `last`.
pub(crate) fn next_seq(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

/// Does this batch take part in idempotence checks?
pub(crate) fn is_idempotent(h: &RecordBatchHeader) -> bool {
    h.producer_id >= 0 && !h.is_control()
}

/// Outcome of checking one batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    New,
    /// A retry of a batch already in the log (same epoch and sequence range).
    Duplicate(BatchMeta),
}

/// All producers of one partition and its transactions; owned by the partition's shard,
/// never crosses cores.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProducerStates {
    map: HashMap<i64, ProducerEntry>,
    /// First offset -> producer id of every transaction under way.
    ongoing: BTreeMap<i64, i64>,
    /// Completed transactions whose marker may be at or past the high watermark (Kafka's
    /// unreplicatedTxns): first offset -> (producer id, marker offset).
    unstable: BTreeMap<i64, (i64, i64)>,
    /// (marker offset, first offset) of `unstable`, to drop them as the high watermark
    /// passes.
    unstable_by_end: BTreeSet<(i64, i64)>,
    /// KIP-890 verifications under way, by producer id: of a producer with no
    /// transaction here whose partition the broker is asking the coordinator about.
    /// Ended by the producer's next transactional batch or marker. In memory only (a
    /// rebuilt state has none: the append is then refused INVALID_TXN_STATE).
    verifying: HashMap<i64, Verifying>,
}

/// One KIP-890 verification under way (Kafka's VerificationStateEntry).
#[derive(Clone, Copy, Debug)]
struct Verifying {
    guard: u64,
    started_ms: i64,
    /// The producer epoch and the lowest first sequence of the batches verified under it:
    /// a batch with a higher one waits (OUT_OF_ORDER_SEQUENCE, which the client retries
    /// after the lower one), so a lower batch whose verification failed retriably is not
    /// overtaken by a later one of the same transaction.
    epoch: i16,
    lowest_seq: i32,
}

/// Verifications older than this are dropped when another starts (Kafka drops them with
/// expired producers, `producer.id.expiration.ms`, 1 day by default).
const VERIFICATION_MAX_AGE_MS: i64 = 24 * 60 * 60 * 1000;

/// Guards are unique in the process, never reused (a rebuilt state must not give a stale
/// verification's guard to a new one).
fn next_guard() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl ProducerStates {
    pub(crate) fn get(&self, pid: i64) -> Option<&ProducerEntry> {
        self.map.get(&pid)
    }

    /// No producer and no transaction known.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty() && self.ongoing.is_empty() && self.unstable.is_empty()
    }

    /// Record a batch that enters the log or is read back from it (no checks, like
    /// Kafka's replay of the log and of a leader's batches). `h.base_offset` must be the
    /// assigned offset; `marker` is the transaction marker of a control batch
    /// (`end_txn_marker`). A data batch of a transactional producer without a
    /// transaction here starts one at its base offset; a marker ends the producer's
    /// transaction, takes its epochs and, for an abort of a transaction under way,
    /// returns the aborted-transaction entry (None for a marker of a producer with no
    /// transaction here, as Kafka: nothing to abort).
    pub(crate) fn replay(
        &mut self,
        h: &RecordBatchHeader,
        marker: Option<EndTxnMarker>,
    ) -> Option<AbortedEntry> {
        let pid = h.producer_id;
        if pid < 0 {
            return None;
        }
        if h.is_transactional() {
            // data of the transaction, or its end: either way the verification is over
            self.verifying.remove(&pid);
        }
        if h.is_control() {
            return self.end_txn(
                pid,
                h.producer_epoch,
                marker?,
                h.base_offset,
                h.max_timestamp,
            );
        }
        let e = self
            .map
            .entry(pid)
            .or_insert_with(|| ProducerEntry::new(h.producer_epoch));
        e.push(h.producer_epoch, meta(h, h.base_offset));
        e.last_timestamp = h.max_timestamp;
        if h.is_transactional() && e.txn_first.is_none() {
            e.txn_first = Some(h.base_offset);
            self.ongoing.insert(h.base_offset, pid);
        }
        None
    }

    fn end_txn(
        &mut self,
        pid: i64,
        epoch: i16,
        m: EndTxnMarker,
        offset: i64,
        timestamp: i64,
    ) -> Option<AbortedEntry> {
        let e = self
            .map
            .entry(pid)
            .or_insert_with(|| ProducerEntry::new(epoch));
        e.set_epoch(epoch);
        e.coordinator_epoch = m.coordinator_epoch;
        e.last_timestamp = timestamp;
        let first = e.txn_first.take()?;
        self.ongoing.remove(&first);
        self.unstable.insert(first, (pid, offset));
        self.unstable_by_end.insert((offset, first));
        // Kafka's lastStableOffset(completedTxn): the earliest other transaction under way
        let lso = self
            .ongoing
            .keys()
            .next()
            .copied()
            .unwrap_or(offset.saturating_add(1));
        (!m.commit).then_some(AbortedEntry {
            producer_id: pid,
            first_offset: first,
            last_offset: offset,
            last_stable_offset: lso,
        })
    }

    /// The first offset of the earliest transaction under way or completed with its
    /// marker at or past `hw`; None if there is none. Cheap when `prune_stable(hw)` ran.
    pub(crate) fn first_unstable(&self, hw: i64) -> Option<i64> {
        let a = self.ongoing.keys().next().copied();
        let b = self
            .unstable
            .iter()
            .find(|(_, &(_, last))| last >= hw)
            .map(|(&first, _)| first);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forget completed transactions whose marker is below `hw`: they are stable.
    pub(crate) fn prune_stable(&mut self, hw: i64) {
        while let Some(&(last, first)) = self.unstable_by_end.first() {
            if last >= hw {
                break;
            }
            self.unstable_by_end.pop_first();
            self.unstable.remove(&first);
        }
    }

    /// Each producer's last batch in the log: producer id -> that batch's last offset.
    pub(crate) fn last_offsets(&self) -> HashMap<i64, i64> {
        self.map
            .iter()
            .map(|(&pid, e)| (pid, e.last_offset()))
            .collect()
    }

    /// Forget producers whose every remembered batch is below the new log start, unless
    /// they have a transaction under way (retention keeps its data), and completed
    /// transactions that ended below it.
    pub(crate) fn trim_before(&mut self, log_start: i64) {
        self.map
            .retain(|_, e| e.last_offset() >= log_start || e.txn_first.is_some());
        self.prune_stable(log_start);
    }

    /// DescribeProducers' view, by producer id.
    pub(crate) fn infos(&self) -> Vec<ProducerInfo> {
        let mut v: Vec<ProducerInfo> = self
            .map
            .iter()
            .map(|(&pid, e)| ProducerInfo {
                producer_id: pid,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                current_txn_start_offset: e.txn_first.unwrap_or(-1),
            })
            .collect();
        v.sort_by_key(|p| p.producer_id);
        v
    }

    /// KIP-890: before a transactional batch of `pid` (at `epoch`, first sequence `seq`)
    /// is appended here while the producer has no transaction here, the broker asks the
    /// coordinator whether this partition is in the producer's transaction. None: a
    /// transaction is under way here, nothing to ask. Some(guard): ask, and append with
    /// this guard (`verified`); a marker or data batch of the producer meanwhile ends the
    /// verification (a stale answer then cannot open a transaction the coordinator has
    /// ended). A verification already under way for `pid` is reused; it keeps the lowest
    /// sequence asked under the newest epoch (Kafka's maybeUpdateLowestSequenceAndEpoch).
    pub(crate) fn start_verification(
        &mut self,
        pid: i64,
        (epoch, seq): (i16, i32),
        now_ms: i64,
    ) -> Option<u64> {
        if self.map.get(&pid).is_some_and(|e| e.txn_first.is_some()) {
            return None;
        }
        if !self.verifying.contains_key(&pid) && self.verifying.len() >= 64 {
            self.verifying
                .retain(|_, v| now_ms.saturating_sub(v.started_ms) < VERIFICATION_MAX_AGE_MS);
        }
        let v = self.verifying.entry(pid).or_insert_with(|| Verifying {
            guard: next_guard(),
            started_ms: now_ms,
            epoch,
            lowest_seq: seq,
        });
        if epoch > v.epoch {
            v.epoch = epoch;
            v.lowest_seq = seq;
        } else if epoch == v.epoch && seq < v.lowest_seq {
            v.lowest_seq = seq;
        }
        Some(v.guard)
    }

    /// Whether `guard` is the verification under way for `pid`.
    pub(crate) fn verified(&self, pid: i64, guard: Option<u64>) -> bool {
        guard.is_some() && self.verifying.get(&pid).map(|v| v.guard) == guard
    }

    /// The lowest first sequence of a verification under way for `pid` (see `Verifying`).
    pub(crate) fn verifying_lowest_seq(&self, pid: i64) -> Option<i32> {
        self.verifying.get(&pid).map(|v| v.lowest_seq)
    }

    /// Every producer (for a snapshot).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.map.iter().map(|(&pid, e)| (pid, e))
    }
    /// The completed, maybe unstable transactions: (producer id, first, marker offset).
    pub(crate) fn unstable(&self) -> impl Iterator<Item = (i64, i64, i64)> + '_ {
        self.unstable
            .iter()
            .map(|(&first, &(pid, last))| (pid, first, last))
    }
    /// A state from its parts (a snapshot): the transactions under way follow from the
    /// entries.
    pub(crate) fn from_parts(
        map: HashMap<i64, ProducerEntry>,
        unstable: impl IntoIterator<Item = (i64, i64, i64)>,
    ) -> ProducerStates {
        let ongoing = map
            .iter()
            .filter_map(|(&pid, e)| e.txn_first.map(|f| (f, pid)))
            .collect();
        let mut ps = ProducerStates {
            map,
            ongoing,
            ..Default::default()
        };
        for (pid, first, last) in unstable {
            ps.unstable.insert(first, (pid, last));
            ps.unstable_by_end.insert((last, first));
        }
        ps
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

fn meta(h: &RecordBatchHeader, base_offset: i64) -> BatchMeta {
    BatchMeta {
        first_seq: h.base_sequence,
        last_seq: last_seq(h.base_sequence, h.last_offset_delta),
        first_offset: base_offset,
        last_offset: base_offset.saturating_add(h.last_offset_delta as i64),
    }
}

/// Check `h` (to be appended at `base_offset`) against `entry` (None: producer unknown)
/// and, when it is new, record it in `entry`. Kafka's ProducerAppendInfo rules:
/// - epoch below the current one: fenced (`InvalidProducerEpoch`);
/// - same epoch: a batch equal to one of the last 5 is a `Duplicate`; otherwise its first
///   sequence must follow the last one (wrapping after i32::MAX) or `OutOfOrderSequence`;
/// - newer epoch of a known producer: the first sequence must be 0;
/// - unknown producer (never seen, or its state was trimmed by retention or lies beyond
///   the rebuild bound): any sequence is accepted (Kafka >= 2.5, KIP-360), so a producer
///   that was quiet for a while is not fenced by lost state;
/// - a non-transactional batch from a producer with a transaction under way:
///   `InvalidTxnState`; a transactional batch of a producer without one starts one here.
pub(crate) fn check_and_apply(
    entry: &mut Option<ProducerEntry>,
    h: &RecordBatchHeader,
    base_offset: i64,
) -> Result<Verdict, StorageError> {
    let pid = h.producer_id;
    let got = h.base_sequence;
    let m = meta(h, base_offset);
    if let Some(e) = entry.as_ref() {
        if h.producer_epoch < e.epoch {
            return Err(StorageError::InvalidProducerEpoch {
                producer_id: pid,
                current: e.epoch,
                got: h.producer_epoch,
            });
        }
        if h.producer_epoch > e.epoch {
            if got != 0 {
                return Err(StorageError::OutOfOrderSequence {
                    producer_id: pid,
                    expected: 0,
                    got,
                });
            }
        } else {
            // newest first: after lost state a sequence range can be in the log twice
            if let Some(d) = e
                .batches
                .iter()
                .rev()
                .find(|b| b.first_seq == m.first_seq && b.last_seq == m.last_seq)
            {
                return Ok(Verdict::Duplicate(*d));
            }
            if let Some(last) = e.batches.back() {
                if next_seq(last.last_seq) != got {
                    return Err(StorageError::OutOfOrderSequence {
                        producer_id: pid,
                        expected: next_seq(last.last_seq),
                        got,
                    });
                }
            }
        }
        if let (Some(first), false) = (e.txn_first, h.is_transactional()) {
            return Err(StorageError::InvalidTxnState {
                producer_id: pid,
                reason: format!(
                    "a non-transactional batch while its transaction from offset {first} is under way"
                ),
            });
        }
    }
    let e = entry.get_or_insert_with(|| ProducerEntry::new(h.producer_epoch));
    e.push(h.producer_epoch, m);
    e.last_timestamp = h.max_timestamp;
    if h.is_transactional() && e.txn_first.is_none() {
        e.txn_first = Some(base_offset);
    }
    Ok(Verdict::New)
}

/// Check a transaction marker of producer `pid` against its state (Kafka's
/// `appendEndTxnMarker`): an epoch older than the producer's is fenced
/// (`InvalidProducerEpoch`), a coordinator epoch older than the one of its last marker
/// too (`TransactionCoordinatorFenced`). An unknown producer takes any.
pub(crate) fn check_marker(
    entry: Option<&ProducerEntry>,
    pid: i64,
    epoch: i16,
    coordinator_epoch: i32,
) -> Result<(), StorageError> {
    let Some(e) = entry else {
        return Ok(());
    };
    if epoch < e.epoch {
        return Err(StorageError::InvalidProducerEpoch {
            producer_id: pid,
            current: e.epoch,
            got: epoch,
        });
    }
    if coordinator_epoch < e.coordinator_epoch {
        return Err(StorageError::TransactionCoordinatorFenced {
            producer_id: pid,
            current: e.coordinator_epoch,
            got: coordinator_epoch,
        });
    }
    Ok(())
}

/// The transaction marker of a stored batch (`batch` holds at least the whole batch when
/// it is a control batch); None for a data batch or a control batch of another kind.
pub(crate) fn marker_of(h: &RecordBatchHeader, batch: &[u8]) -> Option<EndTxnMarker> {
    if !h.is_control() {
        return None;
    }
    end_txn_marker(batch).ok().flatten()
}

/// What a rebuild reads: the durable range `[from, to)` of each segment, oldest first,
/// starting at a batch boundary whose batch starts at or after `start_offset` (exactly
/// there when `from` is a sparse-index entry), and the log's durable offset when planned.
/// Batches ending before `skip_below` (the snapshot's offset) are read past, not
/// replayed.
pub(crate) struct Plan {
    pub(crate) ranges: Vec<(i64, u64, u64)>,
    pub(crate) start_offset: i64,
    pub(crate) skip_below: i64,
    pub(crate) durable: i64,
}

/// Choose where a rebuild starts. From a snapshot at `snapshot` (a batch boundary in the
/// log): the sparse-index entry at or before it in its segment. Without one: the log
/// start, as Kafka rebuilds from the first segment after an unclean stop with no snapshot
/// (a log that never rolled a segment nor stopped cleanly has none). Any later window
/// would forget a transaction begun before it: its records would read as committed, and
/// its abort would index nothing.
/// Loads the index of the segment it starts in (`ensure_indexes`: the caller loaded it
/// off the shard before).
pub(crate) fn plan(
    dir: &Path,
    segments: &mut [Segment],
    log_end: i64,
    durable: i64,
    snapshot: Option<i64>,
) -> Plan {
    let n = segments.len();
    // (segment index, file position, offset at or before the batch there)
    let mut start = (n, 0u64, log_end);
    if let (None, Some(first)) = (snapshot, segments.first()) {
        start = (0, 0, first.base);
    } else if let Some(at) = snapshot {
        let i = segments.partition_point(|s| s.base <= at).saturating_sub(1);
        if let Some(seg) = segments.get_mut(i) {
            seg.ensure_indexes(dir);
            let (o, pos) = if at == seg.base {
                (seg.base, 0)
            } else {
                seg.index_lookup(at)
            };
            start = (i, pos, o);
        }
    }
    let ranges = segments[start.0.min(n)..]
        .iter()
        .enumerate()
        .map(|(k, seg)| {
            let from = if k == 0 { start.1 } else { 0 };
            let to = if seg.file_exists { seg.flushed } else { 0 };
            (seg.base, from, to.max(from))
        })
        .collect();
    Plan {
        ranges,
        start_offset: start.2,
        skip_below: snapshot.unwrap_or(start.2).max(start.2),
        durable,
    }
}

/// Replays batch headers in offset order. Offsets must move forward (gaps are fine: a
/// compacted log has them) and stay below the log end, so a file racing a truncation or a
/// stale index cannot add wrong batches.
pub(crate) struct Replayer {
    pub(crate) ps: ProducerStates,
    /// Offset after the last batch replayed (the plan's start before any).
    pub(crate) next: i64,
    /// Aborted-transaction entries of the markers replayed, in order.
    pub(crate) aborted: Vec<AbortedEntry>,
    skip_below: i64,
    log_end: i64,
    /// Every planned file range was read to its end.
    covered: bool,
}

impl Replayer {
    /// A replay on top of `ps` (a snapshot's state, or empty).
    pub(crate) fn new(plan: &Plan, log_end: i64, ps: ProducerStates) -> Replayer {
        Replayer {
            ps,
            next: plan.start_offset,
            aborted: Vec::new(),
            skip_below: plan.skip_below,
            log_end,
            covered: true,
        }
    }
    /// Take the next batch from a segment file (`marker`: its transaction marker, for a
    /// control batch); false (stop reading) if it does not follow the previous one or
    /// lies past the log end.
    pub(crate) fn feed(&mut self, h: &RecordBatchHeader, marker: Option<EndTxnMarker>) -> bool {
        if h.base_offset < self.next || h.base_offset >= self.log_end || h.last_offset_delta < 0 {
            return false;
        }
        if h.last_offset() >= self.skip_below {
            if let Some(a) = self.ps.replay(h, marker) {
                self.aborted.push(a);
            }
        }
        self.next = h.last_offset() + 1;
        true
    }
    /// A planned file range ended at `pos` of `[from, to)`.
    pub(crate) fn range_read(&mut self, pos: u64, to: u64) {
        if pos < to {
            self.covered = false;
        }
    }
    /// Take the not-yet-durable batches (those the files already held are skipped), then
    /// say whether the replay saw every batch from the plan's start to the log end. Files
    /// and pending queue together hold them all when the files were read to the end of
    /// their planned ranges and no batch left the queue since the plan (the durable offset
    /// did not move), or when the files alone reached the durable offset (every batch at
    /// or after it is in the queue). Offsets alone cannot tell: a gap looks like a batch
    /// that went missing.
    pub(crate) fn feed_pending(
        &mut self,
        pending: &PendingQueue,
        log_end: i64,
        plan_durable: i64,
        durable: i64,
    ) -> Result<bool, StorageError> {
        let complete = (self.covered && durable == plan_durable) || self.next >= durable;
        self.log_end = log_end;
        for p in pending.iter() {
            let h = RecordBatchHeader::parse(&p.data)?;
            if h.base_offset < self.next {
                continue;
            }
            if !self.feed(&h, marker_of(&h, &p.data)) {
                return Ok(false);
            }
        }
        Ok(complete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(pid: i64, epoch: i16, seq: i32, n: i32) -> RecordBatchHeader {
        RecordBatchHeader {
            base_offset: 0,
            batch_length: 49,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: n,
        }
    }

    #[test]
    fn sequence_wraps_after_i32_max() {
        assert_eq!(last_seq(i32::MAX, 0), i32::MAX);
        assert_eq!(last_seq(i32::MAX, 1), 0);
        assert_eq!(last_seq(i32::MAX - 1, 3), 1);
        assert_eq!(next_seq(i32::MAX), 0);
        let mut e = None;
        check_and_apply(&mut e, &hdr(1, 0, i32::MAX - 1, 2), 0).unwrap();
        assert_eq!(
            check_and_apply(&mut e, &hdr(1, 0, 0, 1), 2).unwrap(),
            Verdict::New
        );
    }

    #[test]
    fn only_last_five_batches_are_duplicates() {
        let mut e = None;
        for i in 0..7 {
            check_and_apply(&mut e, &hdr(1, 0, i * 2, 2), i as i64 * 2).unwrap();
        }
        let entry = e.clone().unwrap();
        assert_eq!(entry.batches.len(), BATCHES_PER_PRODUCER);
        assert!(matches!(
            check_and_apply(&mut e, &hdr(1, 0, 4, 2), 99).unwrap(),
            Verdict::Duplicate(BatchMeta {
                first_offset: 4,
                last_offset: 5,
                ..
            })
        ));
        // batch 1 (seq 2..3) fell out of the window: a plain out-of-order error
        assert!(matches!(
            check_and_apply(&mut e, &hdr(1, 0, 2, 2), 99),
            Err(StorageError::OutOfOrderSequence {
                expected: 14,
                got: 2,
                ..
            })
        ));
    }

    #[test]
    fn replay_resets_on_epoch_change_and_trim_forgets() {
        let mut ps = ProducerStates::default();
        let mut h = hdr(7, 0, 0, 3);
        ps.replay(&h, None);
        h.base_offset = 3;
        h.producer_epoch = 1;
        ps.replay(&h, None);
        let e = ps.get(7).unwrap();
        assert_eq!((e.epoch, e.batches.len()), (1, 1));
        ps.trim_before(5);
        assert_eq!(ps.len(), 1);
        ps.trim_before(6);
        assert_eq!(ps.len(), 0);
        ps.replay(&hdr(-1, -1, -1, 1), None);
        assert_eq!(ps.len(), 0);
    }
}
