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
//! The methods on producers and transactions are in `state/producers.rs`, those that
//! remove or replace batches (truncation, retention, the cleaner's swap) in
//! `state/trim.rs`: child modules, so the fields stay private to this type.
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
use crate::error::{FlushFailure, StorageError};
use crate::pending::{Pending, PendingQueue};
use crate::producer::{self, ProducerStates};
use crate::segment::{SegState, Segment};
use crate::txn::SegTxn;
use bytes::Bytes;
use sluice_proto::batch::RecordBatchHeader;
use std::collections::{BTreeSet, VecDeque};
use std::ops::Range;
use std::path::Path;

mod producers;
mod trim;

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
    /// This log has had snapshots (found at open or written since): one cut below all of
    /// them gets a snapshot of its end again (`snapshot_to_restore`), and its state is
    /// snapshotted even when empty.
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
    /// A log start past the first segment's base (DeleteRecords, or a follower following
    /// its leader's), as persisted in `log_start.rs`'s file; i64::MIN: none. Never past
    /// the log end.
    start_floor: i64,
    /// `start_floor` changed (lowered by a restart) and its file is behind.
    start_floor_dirty: bool,
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
            start_floor: i64::MIN,
            start_floor_dirty: false,
        }
    }

    // ---- offsets and segments (read only) ----

    /// The first offset a read may ask for: the first segment's base, or the log start a
    /// deletion moved past it (`start_floor`).
    pub(crate) fn log_start(&self) -> i64 {
        let base = self.segments.first().map_or(self.log_end, |s| s.base);
        base.max(self.start_floor.min(self.log_end))
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
            return Some(Err(StorageError::Truncated {
                offset: last_offset,
            }));
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
