//! How batches leave a log, as `LogState` methods (`state.rs`, whose invariants hold
//! here too): truncation (a follower cut back to its leader, a restart at an offset),
//! retention (segments dropped at the front) and the log cleaner's segment swap.

use super::{LogState, TRUNCATIONS_KEPT};
use crate::clean_point::CleanPoint;
use crate::error::{corrupt, StorageError};
use crate::segment::{SegState, Segment};
use crate::txn::SegTxn;

impl LogState {
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
        // a cut inside the batch (or gap) holding the log start goes below it: a start
        // past the new end would hide what is appended from `cut` on
        if self.start_floor > cut {
            self.start_floor = cut;
            self.start_floor_dirty = true;
        }
        Ok(())
    }
    /// Empty the log in memory and restart it at `at`; returns the bases of the segments
    /// it had.
    pub(crate) fn restart_at(&mut self, at: i64) -> Vec<i64> {
        let bases = self.segments.iter().map(|s| s.base).collect();
        // what was not durable is dropped unwritten, also when `at` lies past the old
        // end: a waiter for an offset from the old durable one on must fail
        let cut = at.min(self.durable);
        self.segments = vec![Segment::new_empty(at, false)];
        self.pending.clear();
        self.log_end = at;
        self.durable = at;
        self.tail = None;
        self.note_truncation(cut);
        self.producers = None;
        self.pending_snapshots.clear();
        self.hw_seen = i64::MIN;
        self.epochs.clear();
        self.clean.truncate_to(at);
        self.clean.drop_before(at);
        if self.start_floor > at {
            // a start past the new end would hide what is appended from `at` on
            self.start_floor = at;
            self.start_floor_dirty = true;
        }
        bases
    }
    fn note_truncation(&mut self, new_end: i64) {
        self.truncate_epoch += 1;
        if self.truncations.len() == TRUNCATIONS_KEPT {
            self.truncations.pop_front();
        }
        self.truncations.push_back((self.truncate_epoch, new_end));
    }

    // ---- log start (DeleteRecords) ----

    /// The log start the file held at open, fitted to the recovered log: a start past the
    /// log end (a follower's, above what reached its disk) comes back to the end. True if
    /// the file must be rewritten with `start_floor_snapshot`.
    pub(crate) fn recovered_start_floor(&mut self, floor: i64) -> bool {
        self.start_floor = floor.min(self.log_end);
        self.start_floor_dirty = floor > self.log_end;
        self.start_floor_dirty
    }
    /// Moves the log start up to `offset` (at most the log end; never down). The caller
    /// has persisted it (`log_start::write`) first.
    pub(crate) fn raise_start_floor(&mut self, offset: i64) -> i64 {
        self.start_floor = self.start_floor.max(offset.min(self.log_end));
        self.log_start()
    }
    /// The log start to write if the file is behind (a restart lowered it).
    pub(crate) fn start_floor_snapshot(&self) -> Option<i64> {
        self.start_floor_dirty.then_some(self.start_floor.max(0))
    }
    pub(crate) fn start_floor_persisted(&mut self) {
        self.start_floor_dirty = false;
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
