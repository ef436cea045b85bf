//! `LogState`, the mutable state of one partition's log (held by `LogInner`, `inner.rs`).
//! It changes only through `LogState`'s methods: the operations on a log (append in
//! `log.rs`, `flusher.rs`, `read.rs`, `truncate.rs`, `retention.rs`, `recovery.rs`,
//! `cleaner.rs`) read it through getters and call one method per change, so this one type
//! keeps the invariants:
//! - segments are in base order, at least one; each segment but the last ends where the
//!   next begins (`end_offset` == the next base), the last one at the log end;
//! - a segment's batches have increasing offsets inside its range, with gaps allowed (a
//!   compacted segment keeps batches at their original offsets);
//! - log start (the first segment's base) <= durable <= log end;
//! - the pending queue holds exactly the batches from the durable offset on, in order;
//! - only the cleaner's `swap_segments` replaces segments in the middle of the log (sealed
//!   ones below the active segment, by cleaned ones covering the same offsets), and it
//!   bumps `layout_epoch`, so a reader that looked a segment up before knows its file
//!   position may now mean other bytes.
//!
//! ```text
//!  log.rs (append) ──┐                    ┌─► segments, pending queue, offsets,
//!  flusher, read,    ├─► LogState methods ┤   leader epochs, producer state, flags
//!  truncate, ...   ──┘                    └─► (no other module writes these fields)
//! ```

use crate::cache::Batch;
use crate::clean_point::CleanPoint;
use crate::config::LogConfig;
use crate::epoch::EpochCache;
use crate::error::{corrupt, FlushFailure, StorageError};
use crate::pending::{Pending, PendingQueue};
use crate::producer::{self, Plan, ProducerStates};
use crate::segment::{SegState, Segment};
use crate::txn::{AbortedEntry, SegTxn};
use bytes::Bytes;
use sluice_proto::batch::RecordBatchHeader;
use std::collections::{BTreeSet, VecDeque};
use std::ops::Range;
use std::path::Path;

/// Truncations remembered for `wait_durable` (a waiter that slept through more fails
/// conservatively).
const TRUNCATIONS_KEPT: usize = 64;

/// The last partial page of the active segment on disk: (segment base, page position,
/// bytes), so the next flush need not read it back.
pub(crate) type TailPage = (i64, u64, Vec<u8>);

/// Mutable state of one log; owned by the partition's shard, never crosses cores.
/// Never borrowed across an `.await`. See the module comment for its invariants.
pub(crate) struct LogState {
    config: LogConfig,
    segments: Vec<Segment>,
    log_end: i64,
    durable: i64,
    pending: PendingQueue,
    failed: Option<FlushFailure>,
    closed: bool,
    deleted: bool,
    /// A clean-shutdown marker is on disk; it must go before the files change.
    marker_present: bool,
    tail: Option<TailPage>,
    /// On the shard's dirty list (the flusher has work here).
    dirty: bool,
    /// Bumped by every truncation (reads and producer-state loads started before one
    /// discard what they read).
    truncate_epoch: u64,
    /// (truncate_epoch after, new log end) of the latest truncations, oldest first.
    truncations: VecDeque<(u64, i64)>,
    /// A truncation is between its start and its in-memory cut: appends are refused.
    truncating: bool,
    /// Producer state (idempotence and transactions); None until a batch or a reader
    /// of the transaction state needs it (idle partitions stay small) and again after a
    /// truncation (rebuilt from a snapshot and the log).
    producers: Option<Box<ProducerStates>>,
    /// Offsets of the producer-state snapshots on disk.
    snapshots: BTreeSet<i64>,
    /// This log has had snapshots (found at open or written since): a rebuild that finds
    /// none at or below where it must start (a deep truncation) replays the whole log
    /// rather than the tail window meant for logs written before snapshots.
    snapshot_history: bool,
    /// Snapshots taken at segment rolls, for the flusher to write once everything below
    /// their offset is durable: (offset, state of the batches below it).
    pending_snapshots: Vec<(i64, ProducerStates)>,
    /// The highest high watermark given to `last_stable_offset` or `set_clean_limit`
    /// (i64::MIN: none yet, then the durable offset stands for it): completed
    /// transactions with a marker below it are stable.
    hw_seen: i64,
    /// The epoch `append` stamps into batches; None (the default, or after a negative
    /// `set_leader_epoch`): batches keep the partitionLeaderEpoch the client sent.
    leader_epoch: Option<i32>,
    /// (epoch, first offset) of every leader epoch in the log.
    epochs: EpochCache,
    /// The log cleaner's checkpoint (`clean_point.rs`).
    clean: CleanPoint,
    /// `set_clean_limit` (the broker's high watermark); None: the durable offset.
    clean_limit: Option<i64>,
    /// Bumped when the cleaner swaps segments in (readers started before retry).
    layout_epoch: u64,
    /// The cleaner failed on this log and leaves it alone until it is reopened (Kafka's
    /// uncleanable partitions).
    uncleanable: bool,
}

/// What `LogState::enqueue` did.
pub(crate) struct Enqueued {
    /// The batches, for the shard cache.
    pub(crate) batches: Vec<Batch>,
    pub(crate) log_start: i64,
    /// The log was already on the shard's dirty list.
    pub(crate) was_dirty: bool,
}

/// Where a disk read for an offset starts (`LogState::read_start`).
pub(crate) struct ReadStart {
    pub(crate) seg_base: i64,
    /// Base offset of the batch at `pos` (the segment's base at position 0: its first
    /// batch starts there or later).
    pub(crate) offset: i64,
    pub(crate) pos: u64,
    /// Bytes of the segment on disk.
    pub(crate) flushed: u64,
    /// Every byte of the segment is on disk (none only in the pending queue).
    pub(crate) all_flushed: bool,
    /// The next segment's base, if there is one.
    pub(crate) next_base: Option<i64>,
}

impl LogState {
    /// The state of a log just opened: `segments` as recovered (an empty list becomes one
    /// empty segment at 0), everything durable.
    pub(crate) fn new(
        config: LogConfig,
        mut segments: Vec<Segment>,
        epochs: EpochCache,
        marker_present: bool,
        pending: PendingQueue,
        clean: CleanPoint,
        snapshots: Vec<i64>,
    ) -> LogState {
        if segments.is_empty() {
            segments.push(Segment::new_empty(0, false));
        }
        let log_end = segments.last().map_or(0, |s| s.end_offset);
        LogState {
            config,
            segments,
            log_end,
            durable: log_end,
            pending,
            failed: None,
            closed: false,
            deleted: false,
            marker_present,
            tail: None,
            dirty: false,
            truncate_epoch: 0,
            truncations: VecDeque::new(),
            truncating: false,
            // a log with nothing in it, ever (no offset, no snapshot), has no producers:
            // its state is known without a load
            producers: (log_end == 0 && snapshots.is_empty()).then(Default::default),
            snapshot_history: !snapshots.is_empty(),
            snapshots: snapshots.into_iter().collect(),
            pending_snapshots: Vec::new(),
            hw_seen: i64::MIN,
            leader_epoch: None,
            epochs,
            clean,
            clean_limit: None,
            layout_epoch: 0,
            uncleanable: false,
        }
    }

    // ---- offsets and segments (read only) ----

    pub(crate) fn log_start(&self) -> i64 {
        self.segments.first().map_or(self.log_end, |s| s.base)
    }
    pub(crate) fn log_end(&self) -> i64 {
        self.log_end
    }
    pub(crate) fn durable(&self) -> i64 {
        self.durable
    }
    pub(crate) fn truncate_epoch(&self) -> u64 {
        self.truncate_epoch
    }
    /// Changes whenever segments are swapped for cleaned ones: a segment base and file
    /// position looked up under another value may now name different bytes.
    pub(crate) fn layout_epoch(&self) -> u64 {
        self.layout_epoch
    }
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }
    pub(crate) fn segment(&self, base: i64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.base == base)
    }
    fn segment_mut(&mut self, base: i64) -> Option<&mut Segment> {
        self.segments.iter_mut().find(|s| s.base == base)
    }
    /// The active segment (the last one).
    pub(crate) fn last_segment(&self) -> Option<&Segment> {
        self.segments.last()
    }
    /// Index of the segment whose range holds `offset` (last with base <= offset).
    pub(crate) fn segment_for(&self, offset: i64) -> Option<usize> {
        let i = self.segments.partition_point(|s| s.base <= offset);
        i.checked_sub(1)
    }
    pub(crate) fn pending(&self) -> &PendingQueue {
        &self.pending
    }
    pub(crate) fn config(&self) -> &LogConfig {
        &self.config
    }
    pub(crate) fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// Bytes in all segments, including appended-but-not-yet-durable batches.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// (max timestamp in the log, last offset of the batch that has it).
    pub(crate) fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.segments.iter().filter(|s| s.max_ts_offset >= 0).fold(
            None,
            |acc: Option<(i64, i64)>, s| match acc {
                Some((t, _)) if t >= s.max_ts => acc,
                _ => Some((s.max_ts, s.max_ts_offset)),
            },
        )
    }

    // ---- open, closed, failed ----

    pub(crate) fn check_open(&self) -> Result<(), StorageError> {
        if self.closed || self.deleted {
            return Err(StorageError::Closed);
        }
        if let Some(f) = &self.failed {
            return Err(f.to_error());
        }
        Ok(())
    }
    /// `check_open`, and no truncation in progress (for appends).
    pub(crate) fn check_appendable(&self) -> Result<(), StorageError> {
        self.check_open()?;
        if self.truncating {
            return Err(StorageError::Truncating);
        }
        Ok(())
    }
    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted
    }
    /// Closed or deleted (a failed log still serves reads of what it has).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed || self.deleted
    }
    pub(crate) fn failure(&self) -> Option<StorageError> {
        self.failed.as_ref().map(|f| f.to_error())
    }
    /// Why a change under way must not be applied: the log was deleted or failed
    /// meanwhile (a closing log still takes it: close waits for the I/O permit).
    pub(crate) fn gone(&self) -> Option<StorageError> {
        if self.deleted {
            return Some(StorageError::Closed);
        }
        self.failure()
    }
    /// Start closing; false if it was already closed or deleted.
    pub(crate) fn mark_closed(&mut self) -> bool {
        if self.closed || self.deleted {
            return false;
        }
        self.closed = true;
        true
    }
    /// Mark deleted and drop the pending batches; false if it already was.
    pub(crate) fn mark_deleted(&mut self) -> bool {
        if self.deleted {
            return false;
        }
        self.deleted = true;
        self.pending.clear();
        true
    }
    /// A closing log has nothing left to flush (or failed).
    pub(crate) fn drained(&self) -> bool {
        self.failed.is_some() || (self.durable >= self.log_end && self.pending.is_empty())
    }
    /// Memory and files disagree, or a write failed: waiters get this error from now on
    /// and the pending batches not yet durable are dropped (their bytes go back to the
    /// shard's budget). Those durable in the journal stay: acknowledged, they still go
    /// into their segments (`journal_flush::write_behind`), and until they have, no
    /// checkpoint retires the journal epoch holding them.
    pub(crate) fn fail(&mut self, e: &StorageError) {
        self.failed = Some(FlushFailure::from_err(e));
        self.pending.clear_unjournaled();
    }
    /// Failed with batches durable only in the journal (`fail` keeps them) that are not
    /// written behind yet; a deleted log has none to keep.
    pub(crate) fn stranded_in_journal(&self) -> bool {
        self.failed.is_some() && !self.deleted && self.pending.journaled() > 0
    }

    /// Where `wait_durable(last_offset)` stands for a waiter that started at truncation
    /// epoch `since`: Some(answer) once decided, None to keep waiting.
    pub(crate) fn durable_wait(
        &self,
        last_offset: i64,
        since: u64,
    ) -> Option<Result<(), StorageError>> {
        if self.deleted {
            return Some(Err(StorageError::Closed));
        }
        if let Some(f) = &self.failed {
            if last_offset >= self.durable {
                return Some(Err(f.to_error()));
            }
        }
        if lowest_cut(&self.truncations, self.truncate_epoch, since)
            .is_some_and(|cut| last_offset >= cut)
        {
            return Some(Err(StorageError::Io(std::io::Error::other(format!(
                "offset {last_offset} was truncated before it became durable"
            )))));
        }
        if last_offset < self.durable {
            return Some(Ok(()));
        }
        if last_offset >= self.log_end {
            return Some(Err(StorageError::OffsetOutOfRange {
                offset: last_offset,
                log_start: self.log_start(),
                log_end: self.log_end,
            }));
        }
        None
    }

    // ---- append ----

    /// Put batches whose final bytes are `data[range]` (offsets assigned, in order from
    /// the log end) into the log: segment roll (segment.bytes, segment.ms, the 32-bit
    /// relative range; with the producer state built, a snapshot of it for the new
    /// segment's base), indexes, pending queue, the leader-epoch cache (with
    /// `learn_epochs`), the producer state (each batch replayed, if it is built: callers
    /// checked the batches against it first), the aborted-transaction entries of the
    /// active segment, the log end; and put the log on the dirty list.
    pub(crate) fn enqueue(
        &mut self,
        dir: &Path,
        data: &Bytes,
        batches: &[(RecordBatchHeader, Range<usize>)],
        now_ms: i64,
        learn_epochs: bool,
    ) -> Enqueued {
        let interval = self.config.index_interval_bytes;
        let seg_bytes = self.config.segment_bytes;
        let seg_ms = self.config.segment_ms;
        let mut out = Vec::with_capacity(batches.len());
        for (h, range) in batches {
            let size = h.total_size() as u64;
            let active = self.active_mut();
            let full = active.size > 0 && active.size + size > seg_bytes;
            let old = active.created_ms >= 0 && now_ms.saturating_sub(active.created_ms) >= seg_ms;
            let overflow = h.last_offset() - active.base > (u32::MAX as i64) - 1;
            let too_big = active.size + size > u32::MAX as u64;
            if active.size > 0 && (full || old || overflow || too_big) {
                active.state = SegState::Rolled;
                active.end_offset = h.base_offset;
                self.segments.push(Segment::new_empty(h.base_offset, false));
                if let Some(ps) = self.producers_to_snapshot() {
                    self.pending_snapshots.push((h.base_offset, ps.clone()));
                }
            }
            let data = data.slice(range.clone());
            let aborted = match self.producers.as_mut() {
                Some(ps) => ps.replay(h, producer::marker_of(h, &data)),
                None => None,
            };
            let active = self.active_mut();
            active.ensure_indexes(dir);
            let seg_base = active.base;
            active.note_batch(h, interval, now_ms);
            if let Some(a) = aborted {
                match &mut active.txn {
                    SegTxn::Loaded(v) => {
                        v.push(a);
                        active.txn_dirty = true;
                    }
                    // ok: unreachable, open settles the active segment's entries
                    other => {
                        tracing::warn!(seg_base, state = ?other, "aborted transaction of a segment whose entries are not loaded")
                    }
                }
            }
            out.push((h.base_offset, h.last_offset(), data.clone()));
            self.pending.push_back(Pending {
                seg_base,
                base: h.base_offset,
                last: h.last_offset(),
                data,
                pos: None,
            });
            if learn_epochs {
                self.epochs.assign(h.partition_leader_epoch, h.base_offset);
            }
            self.log_end = h.last_offset() + 1;
        }
        Enqueued {
            batches: out,
            log_start: self.log_start(),
            was_dirty: std::mem::replace(&mut self.dirty, true),
        }
    }

    fn active_mut(&mut self) -> &mut Segment {
        if self.segments.is_empty() {
            self.segments.push(Segment::new_empty(self.log_end, false));
        }
        let i = self.segments.len() - 1; // ok: not empty (just ensured)
        &mut self.segments[i]
    }

    // ---- leader epochs ----

    pub(crate) fn leader_epoch(&self) -> Option<i32> {
        self.leader_epoch
    }
    pub(crate) fn set_leader_epoch(&mut self, epoch: i32) {
        self.leader_epoch = (epoch >= 0).then_some(epoch);
    }
    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest()
    }
    pub(crate) fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end)
    }
    pub(crate) fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.epochs.entries().to_vec()
    }
    /// A flush has files to write before its batches: the clean-shutdown marker to remove,
    /// the leader-epoch checkpoint or a `.txnindex` changed.
    pub(crate) fn has_files_to_prepare(&self) -> bool {
        self.marker_present
            || self.epochs.is_dirty()
            || self
                .segments
                .iter()
                .any(|s| s.txn_dirty && s.txn.loaded().is_some())
    }
    /// The leader-epoch entries and their change counter, if the checkpoint is behind.
    pub(crate) fn epochs_snapshot(&self) -> Option<(u64, Vec<(i32, i64)>)> {
        self.epochs.snapshot_if_dirty()
    }
    /// The checkpoint file now reflects change `gen`.
    pub(crate) fn epochs_persisted(&mut self, gen: u64) {
        self.epochs.mark_persisted(gen);
    }

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
    /// snapshot at `snapshot` if it is still inside the log, else the newest segments.
    pub(crate) fn plan_producer_rebuild(
        &mut self,
        dir: &Path,
        max_bytes: u64,
        snapshot: Option<i64>,
    ) -> Plan {
        let start = self.log_start();
        let snapshot = snapshot.filter(|&o| o >= start && o <= self.log_end);
        producer::plan(
            dir,
            &mut self.segments,
            self.log_end,
            self.durable,
            max_bytes,
            snapshot,
            self.snapshot_history,
        )
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
    /// the producer state is not built (everything is taken as unstable).
    pub(crate) fn first_unstable_offset(&self) -> Option<i64> {
        match self.producers.as_deref() {
            Some(ps) => ps.first_unstable(self.known_hw()),
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
    fn note_hw(&mut self, hw: i64) {
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

    // ---- indexes ----

    /// Whether segment `base` has an index not loaded in memory.
    pub(crate) fn indexes_missing(&self, base: i64) -> bool {
        self.segment(base).is_some_and(|s| s.indexes_missing())
    }
    /// Installs index file contents read off the shard, for whichever is not in memory.
    pub(crate) fn install_indexes(&mut self, base: i64, idx: &[u8], tidx: &[u8]) {
        if let Some(s) = self.segment_mut(base) {
            s.install_indexes(idx, tidx);
        }
    }
    /// Loads segment `base`'s indexes if not in memory (blocking fallback; callers load
    /// them with `LogInner::load_indexes` first).
    pub(crate) fn ensure_indexes(&mut self, base: i64, dir: &Path) {
        if let Some(s) = self.segment_mut(base) {
            s.ensure_indexes(dir);
        }
    }
    /// Drop segment `base`'s offset index: it does not match the file (reads scan from the
    /// start until the file is next indexed).
    pub(crate) fn reset_index(&mut self, base: i64) {
        if let Some(s) = self.segment_mut(base) {
            s.index = Some(Default::default());
        }
    }
    /// Free the in-memory indexes of sealed segments (reloaded lazily on the next read).
    pub(crate) fn drop_idle_indexes(&mut self) {
        // a segment still in its swap keeps them: its index files are being renamed
        for s in self
            .segments
            .iter_mut()
            .filter(|s| s.state == SegState::Sealed && !s.in_swap)
        {
            s.index = None;
            s.tindex = None;
        }
    }
    /// Where a disk read for `offset` starts: its segment's sparse-index entry at or
    /// before it (or the segment start with `from_start`). None if no segment holds it.
    pub(crate) fn read_start(
        &mut self,
        offset: i64,
        dir: &Path,
        from_start: bool,
    ) -> Option<ReadStart> {
        let i = self.segment_for(offset)?;
        let next_base = self.segments.get(i + 1).map(|s| s.base);
        let seg = &mut self.segments[i];
        if offset >= seg.end_offset {
            return None;
        }
        seg.ensure_indexes(dir);
        let (o, p) = if from_start {
            (seg.base, 0)
        } else {
            seg.index_lookup(offset)
        };
        Some(ReadStart {
            seg_base: seg.base,
            offset: o,
            pos: p,
            flushed: seg.flushed,
            all_flushed: seg.flushed >= seg.size,
            next_base,
        })
    }
    /// The offset to start scanning at for the first record with timestamp >= `ts`: in
    /// the first segment whose max timestamp reaches `ts`, after its last time-index entry
    /// below `ts`. None if no segment reaches `ts`.
    pub(crate) fn timestamp_start(&mut self, ts: i64, dir: &Path) -> Option<i64> {
        let start = self.log_start();
        let seg = self
            .segments
            .iter_mut()
            .find(|s| s.max_ts_offset >= 0 && s.max_ts >= ts)?;
        seg.ensure_indexes(dir);
        let rel = seg.tindex.as_ref().and_then(|t| t.scan_start(ts));
        let from = rel.map_or(seg.base, |r| seg.base + r as i64 + 1);
        Some(from.max(start))
    }

    /// The not-yet-durable batch for `offset`: the one holding it, or, when `offset` is at
    /// or past the durable offset, the first one after it (the queue holds every batch
    /// from there on, so nothing lies in between: `offset` is in a gap).
    pub(crate) fn pending_batch(&self, offset: i64) -> Option<Batch> {
        let p = self.pending.first_from(offset)?;
        (p.base <= offset || offset >= self.durable).then(|| (p.base, p.last, p.data.clone()))
    }
    /// The first not-yet-durable batch whose last offset is >= `offset`.
    pub(crate) fn pending_from(&self, offset: i64) -> Option<Batch> {
        let p = self.pending.first_from(offset)?;
        Some((p.base, p.last, p.data.clone()))
    }

    // ---- flush ----

    /// Back on the dirty list (a cycle left some of its batches for the next one): true
    /// if the caller must push it there (it was not on it).
    pub(crate) fn requeue(&mut self) -> bool {
        !std::mem::replace(&mut self.dirty, true)
    }
    /// The flusher took the log off the dirty list; false if there is nothing it may
    /// write (deleted or failed).
    pub(crate) fn begin_flush(&mut self) -> bool {
        self.dirty = false;
        !(self.deleted || self.failed.is_some())
    }
    pub(crate) fn set_file_exists(&mut self, base: i64) {
        if let Some(s) = self.segment_mut(base) {
            s.file_exists = true;
        }
    }
    /// Where `p`'s bytes go in its segment file: where the journal put it, else after
    /// what the segment has written (the first pending batch of its segment).
    pub(crate) fn write_pos(&self, p: &Pending) -> u64 {
        p.pos
            .unwrap_or_else(|| self.segment(p.seg_base).map_or(0, |s| s.flushed))
    }
    /// Bytes of segment `base` up to `pos` are durable on disk (never less than before:
    /// a journaled batch written again goes where it went the first time).
    pub(crate) fn set_flushed(&mut self, base: i64, pos: u64) {
        if let Some(s) = self.segment_mut(base) {
            s.flushed = s.flushed.max(pos);
        }
    }
    /// The pending batches after the journaled ones, one per position given, are durable
    /// in the shard's journal at those positions of their segments, up to `end`; they
    /// stay pending (and readable) until written behind.
    pub(crate) fn journaled(&mut self, positions: &[u64], end: i64) {
        self.pending.mark_journaled(positions);
        self.finish_flush(0, Some(end));
    }
    /// The first `n` pending batches are durable, up to `end`.
    pub(crate) fn finish_flush(&mut self, n: usize, end: Option<i64>) {
        for _ in 0..n {
            self.pending.pop_front();
        }
        if let Some(end) = end {
            self.durable = self.durable.max(end);
        }
        if self.hw_seen == i64::MIN {
            // no high watermark given: the durable offset stands for it
            let durable = self.durable;
            if let Some(ps) = self.producers.as_mut() {
                ps.prune_stable(durable);
            }
        }
    }
    /// A rolled segment's logical size and both encoded indexes, the time index ending
    /// with its final entry (kept in memory too), for the flusher to seal it.
    pub(crate) fn seal_indexes(
        &mut self,
        base: i64,
        dir: &Path,
    ) -> Option<(u64, Vec<u8>, Vec<u8>)> {
        let s = self.segment_mut(base)?;
        s.ensure_indexes(dir); // a rolled segment's indexes are in memory since it was active
        let (idx, tidx) = s.seal_indexes();
        Some((s.size, idx, tidx))
    }
    /// Segment `base` is cut to size, synced and indexed on disk.
    pub(crate) fn mark_sealed(&mut self, base: i64) {
        if let Some(s) = self.segment_mut(base) {
            if s.state == SegState::Rolled {
                s.state = SegState::Sealed;
            }
        }
        if self.tail.as_ref().is_some_and(|t| t.0 == base) {
            self.tail = None;
        }
    }
    /// The first `len` bytes of the remembered tail page if it is page `page` of segment
    /// `seg_base`.
    pub(crate) fn tail_head(&self, seg_base: i64, page: u64, len: usize) -> Option<Vec<u8>> {
        self.tail
            .as_ref()
            .filter(|t| t.0 == seg_base && t.1 == page && t.2.len() >= len)
            .map(|t| t.2[..len].to_vec())
    }
    pub(crate) fn set_tail(&mut self, tail: Option<TailPage>) {
        self.tail = tail;
    }
    pub(crate) fn marker_present(&self) -> bool {
        self.marker_present
    }
    pub(crate) fn set_marker_present(&mut self, present: bool) {
        self.marker_present = present;
    }

    // ---- truncation ----

    pub(crate) fn set_truncating(&mut self, on: bool) {
        self.truncating = on;
    }
    /// Cut the log in memory: `seg` (segment `seg_base` rebuilt up to the cut, its
    /// `end_offset` the new log end) replaces that segment, later segments and pending
    /// batches from the cut on go, the durable offset, leader epochs and waiters follow,
    /// and the producer state is dropped (rebuilt on next need). Fails if the log went
    /// away meanwhile or no longer has that segment.
    pub(crate) fn cut(&mut self, seg_base: i64, seg: Segment) -> Result<(), StorageError> {
        if let Some(e) = self.gone() {
            return Err(e);
        }
        let i = self
            .segments
            .iter()
            .position(|s| s.base == seg_base)
            .ok_or_else(|| corrupt(format!("segment {seg_base} vanished")))?;
        let cut = seg.end_offset;
        let mut seg = seg;
        let old = &self.segments[i];
        seg.txn = match &old.txn {
            SegTxn::Loaded(v) => {
                SegTxn::Loaded(v.iter().filter(|a| a.last_offset < cut).copied().collect())
            }
            other => other.clone(),
        };
        seg.txn_file = old.txn_file;
        // its file may name markers that are cut: rewritten before anything is flushed
        seg.txn_dirty = old.txn_dirty || (old.txn_file && seg.txn != old.txn);
        self.segments.truncate(i + 1);
        self.segments[i] = seg;
        self.pending_snapshots.retain(|(o, _)| *o <= cut);
        if self.hw_seen > cut {
            self.hw_seen = cut;
        }
        self.pending.truncate_from(cut);
        self.log_end = cut;
        self.durable = self.durable.min(cut);
        self.tail = None;
        self.note_truncation(cut);
        self.producers = None;
        self.epochs.truncate_from_end(cut);
        self.clean.truncate_to(cut);
        Ok(())
    }
    /// Empty the log in memory and restart it at `at`; returns the bases of the segments
    /// it had.
    pub(crate) fn restart_at(&mut self, at: i64) -> Vec<i64> {
        let bases = self.segments.iter().map(|s| s.base).collect();
        self.segments = vec![Segment::new_empty(at, false)];
        self.pending.clear();
        self.log_end = at;
        self.durable = at;
        self.tail = None;
        self.note_truncation(at);
        self.producers = None;
        self.pending_snapshots.clear();
        self.hw_seen = i64::MIN;
        self.epochs.clear();
        self.clean.truncate_to(at);
        self.clean.drop_before(at);
        bases
    }
    fn note_truncation(&mut self, new_end: i64) {
        self.truncate_epoch += 1;
        if self.truncations.len() == TRUNCATIONS_KEPT {
            self.truncations.pop_front();
        }
        self.truncations.push_back((self.truncate_epoch, new_end));
    }

    // ---- retention ----

    /// Replace the last segment, all durable and nothing pending, by an empty one at the
    /// log end (its file exists); returns the replaced segment's base. None (nothing
    /// done) if the log end moved from `end` or batches are pending.
    pub(crate) fn roll_empty(&mut self, end: i64) -> Option<i64> {
        if self.log_end != end || !self.pending.is_empty() {
            return None;
        }
        let old = self.segments.last().map(|s| s.base)?;
        self.segments.push(Segment::new_empty(end, true));
        self.tail = None;
        Some(old)
    }
    /// Drop the segments `removed` (never the last one) from the front; the producer
    /// state forgets producers with nothing left and leader epochs before the new log
    /// start fold into it. Returns the new log start.
    pub(crate) fn drop_front(&mut self, removed: &[i64]) -> i64 {
        let last = self.segments.last().map(|s| s.base);
        self.segments
            .retain(|s| Some(s.base) == last || !removed.contains(&s.base));
        let start = self.log_start();
        if let Some(ps) = self.producers.as_mut() {
            ps.trim_before(start);
        }
        if start < self.log_end {
            self.epochs.truncate_from_start(start);
        }
        self.clean.drop_before(start);
        start
    }

    // ---- log cleaner ----

    pub(crate) fn clean_point(&self) -> &CleanPoint {
        &self.clean
    }
    /// Offsets below this may be cleaned: the limit the broker set (its high watermark),
    /// by default the durable offset, and never past the durable offset.
    pub(crate) fn clean_limit(&self) -> i64 {
        self.clean_limit
            .map_or(self.durable, |l| l.min(self.durable))
    }
    /// The broker's high watermark: the cleaning limit, and what makes completed
    /// transactions stable.
    pub(crate) fn set_clean_limit(&mut self, offset: i64) {
        self.clean_limit = Some(offset);
        self.note_hw(offset);
    }
    pub(crate) fn is_uncleanable(&self) -> bool {
        self.uncleanable
    }
    pub(crate) fn mark_uncleanable(&mut self) {
        self.uncleanable = true;
    }
    /// A cleaning pass at `now_ms` cleaned every offset below `to`, keeping tombstones of
    /// which the first may go at `tombstones_expire`.
    pub(crate) fn advance_clean_point(
        &mut self,
        to: i64,
        now_ms: i64,
        tombstones_expire: Option<i64>,
    ) {
        self.clean.advance(to, now_ms, tombstones_expire);
    }
    /// Whether a tombstone the cleaner kept may go by `now_ms` (KIP-534).
    pub(crate) fn tombstones_due(&self, now_ms: i64) -> bool {
        self.clean.tombstones_expire().is_some_and(|t| t <= now_ms)
    }
    /// The checkpoint file's contents and change counter, if the file is behind.
    pub(crate) fn clean_point_snapshot(&self) -> Option<(u64, Vec<u8>)> {
        self.clean.snapshot_if_dirty()
    }
    pub(crate) fn clean_point_persisted(&mut self, gen: u64) {
        self.clean.mark_persisted(gen);
    }
    /// Replace the first segments, which must still be `old` ((base, size) each, sealed,
    /// not the last one), by the cleaned segments `new`, which cover the same offsets
    /// (from the first old base to the next segment's base, each ending where the next
    /// begins). They are marked `in_swap` until `swap_finished`. Bumps the layout epoch;
    /// returns the bases replaced. Fails, changing nothing, if the log went away or its
    /// segments changed meanwhile.
    pub(crate) fn swap_segments(
        &mut self,
        old: &[(i64, u64)],
        mut new: Vec<Segment>,
    ) -> Result<Vec<i64>, StorageError> {
        if let Some(e) = self.gone() {
            return Err(e);
        }
        let n = old.len();
        let unchanged = n > 0
            && n < self.segments.len()
            && self.segments[..n].iter().zip(old).all(|(s, &(b, size))| {
                s.base == b && s.size == size && s.state == SegState::Sealed
            });
        let next_base = self.segments.get(n).map(|s| s.base);
        let contiguous = new.first().map(|s| s.base) == old.first().map(|o| o.0)
            && new.windows(2).all(|w| w[0].end_offset == w[1].base)
            && new.last().map(|s| s.end_offset) == next_base;
        if !unchanged || !contiguous {
            return Err(corrupt(format!(
                "cleaned segments no longer match the log (bases {:?})",
                old.iter().map(|o| o.0).collect::<Vec<_>>()
            )));
        }
        for s in new.iter_mut() {
            s.in_swap = true;
        }
        let removed = self.segments.splice(..n, new).map(|s| s.base).collect();
        self.layout_epoch += 1;
        Ok(removed)
    }
    /// The swapped-in segments' files carry their final names now.
    pub(crate) fn swap_finished(&mut self) {
        for s in self.segments.iter_mut() {
            s.in_swap = false;
        }
    }
}

/// Lowest log end left by the truncations in `history` (consecutive epochs up to `now`)
/// after `since`; i64::MIN if some of them are no longer in `history`.
fn lowest_cut(history: &VecDeque<(u64, i64)>, now: u64, since: u64) -> Option<i64> {
    if now == since {
        return None;
    }
    match history.front() {
        Some(&(e, _)) if e <= since + 1 => history
            .iter()
            .filter(|&&(e, _)| e > since)
            .map(|&(_, p)| p)
            .min(),
        _ => Some(i64::MIN),
    }
}

#[cfg(test)]
mod tests {
    use super::lowest_cut;
    use std::collections::VecDeque;

    #[test]
    fn a_waiter_sees_the_lowest_cut_since_it_started() {
        let h: VecDeque<(u64, i64)> = [(3, 50), (4, 10), (5, 40)].into_iter().collect();
        assert_eq!(lowest_cut(&h, 5, 5), None);
        assert_eq!(lowest_cut(&h, 5, 4), Some(40));
        // cut to 10, regrown, cut to 40: offset 20 was cut even though 20 < 40
        assert_eq!(lowest_cut(&h, 5, 3), Some(10));
        assert_eq!(lowest_cut(&h, 5, 2), Some(10));
        // truncation 2 fell out of the history: fail safe
        assert_eq!(lowest_cut(&h, 5, 1), Some(i64::MIN));
    }
}
