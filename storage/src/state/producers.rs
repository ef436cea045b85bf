//! `LogState`'s producer state and transactions: the idempotent producers' sequences, the
//! open and completed transactions behind the last stable offset, producer-state
//! snapshots and `.txnindex` contents (the methods of `LogState`, `state.rs`, that touch
//! them; the invariants there hold here too).

use std::path::Path;

use super::LogState;
use crate::error::StorageError;
use crate::producer::{self, Plan, ProducerStates};
use crate::txn::{AbortedEntry, SegTxn};

impl LogState {
    // ---- producers and transactions ----

    pub(crate) fn producers(&self) -> Option<&ProducerStates> {
        self.producers.as_deref()
    }
    pub(crate) fn producers_loaded(&self) -> bool {
        self.producers.is_some()
    }
    /// Snapshots a rebuild may start from, newest first: at or above the log start, at
    /// or below the log end and below every segment whose aborted-transaction entries
    /// are unknown (the replay rebuilds those).
    pub(crate) fn snapshot_candidates(&self) -> Vec<i64> {
        let bound = self
            .segments
            .iter()
            .filter(|s| s.txn == SegTxn::Unknown)
            .map(|s| s.base)
            .min()
            .unwrap_or(self.log_end)
            .min(self.log_end);
        let start = self.log_start();
        self.snapshots.range(start..=bound).rev().copied().collect()
    }
    /// A snapshot file turned out unusable: forget it (its file is left for open or
    /// retention to remove).
    pub(crate) fn forget_snapshot(&mut self, offset: i64) {
        self.snapshots.remove(&offset);
    }
    /// Where a rebuild of the producer state reads (see `producer::plan`): from the
    /// snapshot at `snapshot` if it is still inside the log, else the log start.
    pub(crate) fn plan_producer_rebuild(&mut self, dir: &Path, snapshot: Option<i64>) -> Plan {
        let start = self.log_start();
        let snapshot = snapshot.filter(|&o| o >= start && o <= self.log_end);
        producer::plan(
            dir,
            &mut self.segments,
            self.log_end,
            self.durable,
            snapshot,
        )
    }
    /// `PartitionLog::start_txn_verification`.
    pub(crate) fn start_txn_verification(
        &mut self,
        pid: i64,
        epoch_seq: (i16, i32),
        now_ms: i64,
    ) -> Result<Option<u64>, StorageError> {
        self.require_producers()?;
        Ok(self
            .producers
            .as_mut()
            .and_then(|ps| ps.start_verification(pid, epoch_seq, now_ms)))
    }
    /// The producer state must be built before an append that checks or replays into it
    /// (idempotent or transactional batches, markers): `ProducerStateNotLoaded` when it is
    /// not. Nothing here reads the log: the caller awaits
    /// `PartitionLog::load_producer_state` (async reads) and tries again.
    pub(crate) fn require_producers(&self) -> Result<(), StorageError> {
        if self.producers.is_some() {
            Ok(())
        } else {
            Err(StorageError::ProducerStateNotLoaded)
        }
    }
    /// Install a state built elsewhere (the async load), without producers that have
    /// nothing left in the log; `aborted` (the entries of the markers the replay saw
    /// from `replayed_from` on) fill the segments whose entries were unknown (a damaged
    /// `.txnindex` found at open). Returns the segments so filled, whose `.txnindex` the
    /// caller writes.
    pub(crate) fn install_producers(
        &mut self,
        mut ps: ProducerStates,
        aborted: Vec<AbortedEntry>,
        replayed_from: i64,
    ) -> Vec<(i64, Vec<AbortedEntry>)> {
        ps.trim_before(self.log_start());
        ps.prune_stable(self.known_hw());
        self.producers = Some(Box::new(ps));
        let mut filled = Vec::new();
        let n = self.segments.len();
        for (i, s) in self.segments.iter_mut().enumerate() {
            if s.txn != SegTxn::Unknown {
                continue;
            }
            if s.base < replayed_from {
                tracing::warn!(seg_base = s.base, replayed_from,
                    "aborted transactions rebuilt without the start of the segment: no snapshot reaches it");
            }
            let end = s.end_offset;
            let mine: Vec<AbortedEntry> = aborted
                .iter()
                .filter(|a| a.last_offset >= s.base && (i + 1 == n || a.last_offset < end))
                .copied()
                .collect();
            filled.push((s.base, mine.clone()));
            s.txn = SegTxn::Loaded(mine);
            s.txn_dirty = true;
        }
        filled
    }
    /// The first offset of the earliest transaction that is not stable: under way, or
    /// completed with its marker at or past the high watermark last passed to
    /// `last_stable_offset`. None if every transaction is stable; the log start while
    /// the producer state is not built (everything is taken as unstable). Never below the
    /// log start (Kafka's too): a transaction whose start DeleteRecords removed holds
    /// back the records from the log start on, not from offsets nobody can read.
    pub(crate) fn first_unstable_offset(&self) -> Option<i64> {
        match self.producers.as_deref() {
            Some(ps) => ps
                .first_unstable(self.known_hw())
                .map(|f| f.max(self.log_start())),
            None => Some(self.log_start()),
        }
    }
    /// `first_unstable_offset` if the producer state is built.
    pub(crate) fn first_unstable_if_loaded(&self) -> Option<Option<i64>> {
        let hw = self.known_hw();
        self.producers.as_deref().map(|ps| ps.first_unstable(hw))
    }
    /// The high watermark as far as the log knows it: the highest given to
    /// `last_stable_offset` or `set_clean_limit`, else the durable offset (one node).
    fn known_hw(&self) -> i64 {
        if self.hw_seen == i64::MIN {
            self.durable
        } else {
            self.hw_seen
        }
    }
    /// The high watermark moved to `hw` (ignored if lower than one seen before): the
    /// transactions completed below it are stable.
    pub(super) fn note_hw(&mut self, hw: i64) {
        if hw > self.hw_seen {
            self.hw_seen = hw;
            if let Some(ps) = self.producers.as_mut() {
                ps.prune_stable(hw);
            }
        }
    }
    /// min(`hw`, first unstable offset); a higher `hw` than any before makes the
    /// transactions completed below it stable.
    pub(crate) fn last_stable_offset(&mut self, hw: i64) -> i64 {
        self.note_hw(hw);
        self.first_unstable_offset().map_or(hw, |f| f.min(hw))
    }
    /// A rolled segment's producer-state snapshot waits for nothing but its write.
    pub(crate) fn has_due_snapshots(&self) -> bool {
        self.pending_snapshots
            .iter()
            .any(|(o, _)| *o <= self.durable)
    }
    /// Snapshots rolled segments asked for whose offset is durable now.
    pub(crate) fn take_due_snapshots(&mut self) -> Vec<(i64, ProducerStates)> {
        let durable = self.durable;
        let (due, keep) = std::mem::take(&mut self.pending_snapshots)
            .into_iter()
            .partition(|(o, _)| *o <= durable);
        self.pending_snapshots = keep;
        due
    }
    /// The snapshot for `offset` is on disk; returns the offsets of the older ones to
    /// remove beyond the newest `snapshot::KEEP`.
    pub(crate) fn snapshot_written(&mut self, offset: i64) -> Vec<i64> {
        self.snapshot_history = true;
        self.snapshots.insert(offset);
        // the oldest stays too: a deep truncation then replays from it, not the window
        let extra = self
            .snapshots
            .len()
            .saturating_sub(crate::snapshot::KEEP + 1);
        let old: Vec<i64> = self.snapshots.iter().skip(1).take(extra).copied().collect();
        for o in &old {
            self.snapshots.remove(o);
        }
        old
    }
    /// The producer state, if built and worth a snapshot: a log that never had a producer
    /// (a new log's state is built empty at open) writes none, as before it had one, so
    /// plain logs keep no snapshot files; a load of such a log replays its tail.
    pub(crate) fn producers_to_snapshot(&self) -> Option<&ProducerStates> {
        self.producers
            .as_deref()
            .filter(|ps| self.snapshot_history || !ps.is_empty())
    }
    /// The producer state as of the log end, to snapshot, when the log had snapshots but
    /// has none left at or below its end (a truncation below all of them), the state is
    /// built and every batch is durable.
    pub(crate) fn snapshot_to_restore(&self) -> Option<(i64, ProducerStates)> {
        let ps = self.producers.as_deref()?;
        let none = self
            .snapshots
            .range(self.log_start()..=self.log_end)
            .next()
            .is_none();
        (self.snapshot_history && none && self.durable == self.log_end && self.pending.is_empty())
            .then(|| (self.log_end, ps.clone()))
    }
    /// Forget (for the caller to remove) the snapshots past `offset`: they describe
    /// batches that are gone.
    pub(crate) fn take_snapshots_after(&mut self, offset: i64) -> Vec<i64> {
        let gone: Vec<i64> = self
            .snapshots
            .range(offset.saturating_add(1)..)
            .copied()
            .collect();
        for o in &gone {
            self.snapshots.remove(o);
        }
        gone
    }
    /// Forget (for the caller to remove) the snapshots below the log start.
    pub(crate) fn take_snapshots_before_start(&mut self) -> Vec<i64> {
        let start = self.log_start();
        let gone: Vec<i64> = self.snapshots.range(..start).copied().collect();
        for o in &gone {
            self.snapshots.remove(o);
        }
        gone
    }
    /// DescribeProducers' view (empty while the state is not built).
    pub(crate) fn producer_infos(&self) -> Vec<crate::txn::ProducerInfo> {
        self.producers
            .as_deref()
            .map(ProducerStates::infos)
            .unwrap_or_default()
    }
    /// Bases of the segments whose aborted-transaction entries are unknown.
    pub(crate) fn unknown_txn_segments(&self) -> Vec<i64> {
        self.segments
            .iter()
            .filter(|s| s.txn == SegTxn::Unknown)
            .map(|s| s.base)
            .collect()
    }
    /// Segment `base`'s entries are in its file, not in memory.
    pub(crate) fn txn_on_disk(&self, base: i64) -> bool {
        self.segment(base)
            .is_some_and(|s| matches!(s.txn, SegTxn::OnDisk(_)))
    }
    /// Segment `base`'s entries, read from its file elsewhere (None: the file is
    /// damaged, and they become unknown).
    pub(crate) fn install_txn(&mut self, base: i64, entries: Option<Vec<AbortedEntry>>) {
        if let Some(s) = self.segment_mut(base) {
            if matches!(s.txn, SegTxn::OnDisk(_)) {
                s.txn = entries.map_or(SegTxn::Unknown, SegTxn::Loaded);
            }
        }
    }
    /// The segments a search for aborted transactions with a marker at or after `from`
    /// visits, in order, with what is known of their entries (empty ones left out).
    pub(crate) fn txn_segments_from(&self, from: i64) -> Vec<(i64, SegTxn)> {
        let i = self.segment_for(from).unwrap_or(0);
        self.segments[i.min(self.segments.len())..]
            .iter()
            .filter(|s| !s.txn.is_empty())
            .map(|s| (s.base, s.txn.clone()))
            .collect()
    }
    /// The `.txnindex` files the flusher must write before flushing batches: (segment
    /// base, entries) of every segment whose entries changed since (empty: remove the
    /// file).
    pub(crate) fn dirty_txn_files(&self) -> Vec<(i64, Vec<AbortedEntry>)> {
        self.segments
            .iter()
            .filter(|s| s.txn_dirty)
            .filter_map(|s| s.txn.loaded().map(|v| (s.base, v.to_vec())))
            .collect()
    }
    /// Segment `base`'s `.txnindex` now holds its first `n` entries (none: no file); it
    /// is clean unless entries were added meanwhile.
    pub(crate) fn txn_file_written(&mut self, base: i64, n: usize) {
        if let Some(s) = self.segment_mut(base) {
            s.txn_file = n > 0;
            if s.txn.loaded().is_some_and(|v| v.len() == n) {
                s.txn_dirty = false;
            }
        }
    }
}
