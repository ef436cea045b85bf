//! `PartitionLog`: the public handle of one partition's log, and its shard-local state.
//! `append` is synchronous: it validates every batch first (all-or-nothing: CRC, and the
//! records themselves as Kafka's log validator does: `validate_client_batch`), assigns
//! contiguous offsets by writing each base offset into its header, rolls segments, puts
//! the batches in the pending queue and the shard cache, and marks the log dirty for the
//! flusher. Idempotent batches (producer id >= 0) are checked against the producer state
//! (`producer.rs`) first. Invariant: log_start <= durable <= log_end; offsets contiguous.
//!
//! Replication groundwork: `set_leader_epoch` makes `append` stamp that epoch into every
//! batch (partitionLeaderEpoch, outside the CRC); `append_replicated` takes a leader's
//! batches as they are (offsets and epochs kept); both keep the leader-epoch cache
//! (`epoch.rs`) that answers `end_offset_for_epoch`; `truncate_from` cuts a divergent
//! suffix (`truncate.rs`).

use crate::epoch::EpochCache;
use crate::error::{FlushFailure, StorageError};
use crate::producer::{self, ProducerEntry, ProducerStates, Verdict};
use crate::segment::{SegState, Segment};
use crate::shard::ShardStorage;
use crate::signal::Signal;
use crate::LogConfig;
use bytes::{Bytes, BytesMut};
use sluice_proto::batch::{set_base_offset, BatchIter, RecordBatchHeader};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;

/// Largest records section a compressed batch may inflate to when `append` counts its
/// records (Kafka validates compressed batches the same way, without this bound).
const MAX_DECOMPRESSED: usize = 64 << 20;

/// Truncations remembered for `wait_durable` (a waiter that slept through more fails
/// conservatively).
const TRUNCATIONS_KEPT: usize = 64;

/// Byte range of partitionLeaderEpoch in a v2 batch header (outside the CRC).
const LEADER_EPOCH_FIELD: std::ops::Range<usize> = 12..16;

/// Result of a successful append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The time the log accepted the append (`now_ms` passed to `append`); -1 for a
    /// duplicate (Kafka answers a duplicate with no log append time) and for
    /// `append_replicated` (the leader's batches keep their timestamps).
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// The request was a retry of an idempotent batch already in the log: nothing was
    /// appended, and `base_offset`/`last_offset` are the original batch's. The broker
    /// answers success (error 0) with that base offset, as Kafka does.
    pub duplicate: bool,
}

/// Outcome of the producer checks of one append request.
enum Checked {
    /// Append; then commit these updated producer entries.
    Append(Vec<(i64, Option<ProducerEntry>)>),
    /// The request is a retry of a batch already in the log; answer with this.
    Duplicate(AppendInfo),
}

/// A batch appended but not yet durable; also reachable by reads until it is.
pub(crate) struct Pending {
    pub(crate) seg_base: i64,
    pub(crate) base: i64,
    pub(crate) last: i64,
    pub(crate) data: Bytes,
}

/// Mutable state of one log; owned by the partition's shard, never crosses cores.
/// Never borrowed across an `.await`.
pub(crate) struct LogState {
    pub(crate) config: LogConfig,
    pub(crate) segments: Vec<Segment>,
    pub(crate) log_end: i64,
    pub(crate) durable: i64,
    pub(crate) pending: crate::pending::PendingQueue,
    pub(crate) failed: Option<FlushFailure>,
    pub(crate) closed: bool,
    pub(crate) deleted: bool,
    /// A clean-shutdown marker is on disk; it must go before the files change.
    pub(crate) marker_present: bool,
    /// Last partial page of the active segment on disk: (segment base, page position, bytes).
    pub(crate) tail: Option<(i64, u64, Vec<u8>)>,
    pub(crate) dirty: bool,
    /// Bumped by every truncation (reads and producer-state loads started before one
    /// discard what they read).
    pub(crate) truncate_epoch: u64,
    /// (truncate_epoch after, new log end) of the latest truncations, oldest first.
    pub(crate) truncations: VecDeque<(u64, i64)>,
    /// A truncation is between its start and its in-memory cut: appends are refused.
    pub(crate) truncating: bool,
    /// Idempotent-producer state; None until an idempotent batch needs it (idle
    /// partitions stay small) and again after a truncation (rebuilt from the log).
    pub(crate) producers: Option<Box<ProducerStates>>,
    /// The epoch `append` stamps into batches; None (the default, or after a negative
    /// `set_leader_epoch`): batches keep the partitionLeaderEpoch the client sent.
    pub(crate) leader_epoch: Option<i32>,
    /// (epoch, first offset) of every leader epoch in the log.
    pub(crate) epochs: EpochCache,
}

impl LogState {
    pub(crate) fn log_start(&self) -> i64 {
        self.segments.first().map_or(self.log_end, |s| s.base)
    }
    pub(crate) fn active(&mut self) -> &mut Segment {
        let i = self.segments.len() - 1; // ok: a log always has at least one segment
        &mut self.segments[i]
    }
    /// Index of the segment holding `offset` (last with base <= offset).
    pub(crate) fn segment_for(&self, offset: i64) -> Option<usize> {
        let i = self.segments.partition_point(|s| s.base <= offset);
        i.checked_sub(1)
    }
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
    fn check_appendable(&self) -> Result<(), StorageError> {
        self.check_open()?;
        if self.truncating {
            return Err(StorageError::Truncating);
        }
        Ok(())
    }
    /// Record a truncation that left the log ending at `new_end`.
    pub(crate) fn note_truncation(&mut self, new_end: i64) {
        self.truncate_epoch += 1;
        if self.truncations.len() == TRUNCATIONS_KEPT {
            self.truncations.pop_front();
        }
        self.truncations.push_back((self.truncate_epoch, new_end));
    }
    /// Lowest log end any truncation after `epoch` left (i64::MIN if that history is no
    /// longer known); None if there was none.
    fn lowest_cut_since(&self, epoch: u64) -> Option<i64> {
        lowest_cut(&self.truncations, self.truncate_epoch, epoch)
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

/// Shared core of a log; owned by the partition's shard, never crosses cores.
pub(crate) struct LogInner {
    pub(crate) id: u64,
    pub(crate) dir: PathBuf,
    pub(crate) st: RefCell<LogState>,
    /// Serialises file mutations (flush, truncate, retention, close) for this log.
    pub(crate) io: glommio::sync::Semaphore,
    /// Notified whenever durable advances, the log is truncated, fails or closes.
    pub(crate) durable_signal: Signal,
}

/// Cheap handle to one partition's log. Owned by the partition's shard; `!Send`, never
/// crosses cores.
#[derive(Clone)]
pub struct PartitionLog {
    pub(crate) shard: Rc<ShardStorage>,
    pub(crate) inner: Rc<LogInner>,
}

impl PartitionLog {
    /// Open (creating the directory if missing) and recover the log in `dir`.
    pub async fn open(
        shard: &Rc<ShardStorage>,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<PartitionLog, StorageError> {
        crate::recovery::open_log(shard, dir, config).await
    }

    /// Validate, assign offsets and enqueue `records` (one or more v2 batches) for the
    /// flusher. All-or-nothing: any invalid batch rejects the whole call and writes nothing.
    /// With a leader epoch set (`set_leader_epoch`) each batch is stamped with it and the
    /// leader-epoch cache records where the epoch starts; an epoch older than the log's
    /// latest is refused (`StaleLeaderEpoch`).
    pub fn append(&self, records: Bytes, now_ms: i64) -> Result<AppendInfo, StorageError> {
        let (max, timestamps, stamp) = {
            let st = self.inner.st.borrow();
            st.check_appendable()?;
            if let (Some(epoch), Some(latest)) = (st.leader_epoch, st.epochs.latest()) {
                if latest > epoch {
                    return Err(StorageError::StaleLeaderEpoch { epoch, latest });
                }
            }
            let c = &st.config;
            (
                c.max_message_bytes as usize,
                now_ms.saturating_sub(c.timestamp_before_max_ms)
                    ..=now_ms.saturating_add(c.timestamp_after_max_ms),
                st.leader_epoch,
            )
        };
        if records.is_empty() {
            return Err(StorageError::InvalidRecord("no record batches".into()));
        }
        let mut batches: Vec<(RecordBatchHeader, std::ops::Range<usize>)> = Vec::new();
        for item in BatchIter::new(&records) {
            let (h, range) = item?;
            if h.total_size() > max {
                return Err(StorageError::MessageTooLarge {
                    size: h.total_size(),
                    max,
                });
            }
            sluice_proto::batch::validate_client_batch_within(
                &records[range.clone()],
                MAX_DECOMPRESSED,
                timestamps.clone(),
            )?;
            batches.push((h, range));
        }
        let count: i64 = batches
            .iter()
            .map(|(h, _)| i64::from(h.last_offset_delta) + 1)
            .sum();
        if self
            .inner
            .st
            .borrow()
            .log_end
            .checked_add(count)
            .is_none_or(|end| end == i64::MAX)
        {
            return Err(StorageError::InvalidRecord(
                "the log's offsets would pass i64::MAX".into(),
            ));
        }
        let updates = match self.check_producers(&batches)? {
            Checked::Append(u) => u,
            Checked::Duplicate(info) => return Ok(info),
        };
        let mut buf = records
            .try_into_mut()
            .unwrap_or_else(|b| BytesMut::from(&b[..]));
        let base0 = self.inner.st.borrow().log_end;
        let mut next = base0;
        for (h, range) in batches.iter_mut() {
            set_base_offset(&mut buf[range.start..range.end], next);
            h.base_offset = next;
            if let Some(epoch) = stamp {
                let at =
                    range.start + LEADER_EPOCH_FIELD.start..range.start + LEADER_EPOCH_FIELD.end;
                buf[at].copy_from_slice(&epoch.to_be_bytes());
                h.partition_leader_epoch = epoch;
            }
            next = h.last_offset() + 1;
        }
        let log_start = self.enqueue(buf.freeze(), &batches, now_ms, stamp.is_some(), |st| {
            if let Some(ps) = st.producers.as_mut() {
                for (pid, e) in updates {
                    if let Some(e) = e {
                        ps.insert(pid, e);
                    }
                }
            }
        });
        Ok(AppendInfo {
            base_offset: base0,
            last_offset: next - 1,
            log_append_time_ms: now_ms,
            log_start_offset: log_start,
            duplicate: false,
        })
    }

    /// Follower append: `records` are one or more v2 batches exactly as the leader stored
    /// them (base offsets and partitionLeaderEpoch set), stored byte for byte. Checked:
    /// every batch's length, magic, CRC and record count (`BatchIter`), the first base
    /// offset == the log end offset and each next one right after the previous batch
    /// (`UnexpectedAppendOffset`). Not checked, as Kafka's follower does not: the client
    /// rules (timestamps, sequences, max.message.bytes), which the leader applied. The
    /// leader-epoch cache learns each batch's epoch (negative epochs, from batches written
    /// before epochs were stamped, are not recorded) and a built idempotent-producer state
    /// replays the batches, so duplicates are still caught after this replica takes over.
    /// The batches go through the same pending queue, unflushed-bytes budget, flusher and
    /// `wait_durable` as `append`. All-or-nothing. `log_append_time_ms` is -1.
    pub fn append_replicated(&self, records: Bytes) -> Result<AppendInfo, StorageError> {
        let mut expected = {
            let st = self.inner.st.borrow();
            st.check_appendable()?;
            st.log_end
        };
        if records.is_empty() {
            return Err(StorageError::InvalidRecord("no record batches".into()));
        }
        let base0 = expected;
        let mut batches: Vec<(RecordBatchHeader, std::ops::Range<usize>)> = Vec::new();
        for item in BatchIter::new(&records) {
            let (h, range) = item?;
            if h.base_offset != expected {
                return Err(StorageError::UnexpectedAppendOffset {
                    expected,
                    got: h.base_offset,
                });
            }
            if h.last_offset() == i64::MAX {
                return Err(StorageError::InvalidRecord(
                    "the log's offsets would pass i64::MAX".into(),
                ));
            }
            expected = h.last_offset() + 1;
            batches.push((h, range));
        }
        let now = crate::segment::now_ms();
        let log_start = self.enqueue(records, &batches, now, true, |st| {
            if let Some(ps) = st.producers.as_mut() {
                for (h, _) in &batches {
                    ps.replay(h);
                }
            }
        });
        Ok(AppendInfo {
            base_offset: base0,
            last_offset: expected - 1,
            log_append_time_ms: -1,
            log_start_offset: log_start,
            duplicate: false,
        })
    }

    /// Put batches whose final bytes are in `data` (offsets assigned, contiguous from the
    /// log end) into the log: segment roll, indexes, pending queue, shard cache, the
    /// leader-epoch cache (with `learn_epochs`), then `commit` on the state, and wake the
    /// flusher. Synchronous: nothing can interleave. Returns the log start offset.
    fn enqueue(
        &self,
        data: Bytes,
        batches: &[(RecordBatchHeader, std::ops::Range<usize>)],
        now_ms: i64,
        learn_epochs: bool,
        commit: impl FnOnce(&mut LogState),
    ) -> i64 {
        let total_bytes = data.len();
        let mut st = self.inner.st.borrow_mut();
        let interval = st.config.index_interval_bytes;
        let seg_bytes = st.config.segment_bytes;
        let seg_ms = st.config.segment_ms;
        let dir = self.inner.dir.clone();
        let mut cache_items = Vec::with_capacity(batches.len());
        for (h, range) in batches {
            let size = h.total_size() as u64;
            let active = st.active();
            let full = active.size > 0 && active.size + size > seg_bytes;
            let old = active.created_ms >= 0 && now_ms.saturating_sub(active.created_ms) >= seg_ms;
            let overflow = h.last_offset() - active.base > (u32::MAX as i64) - 1;
            let too_big = active.size + size > u32::MAX as u64;
            if active.size > 0 && (full || old || overflow || too_big) {
                active.state = SegState::Rolled;
                st.segments.push(Segment::new_empty(h.base_offset, false));
            }
            let active = st.active();
            active.ensure_indexes(&dir);
            let seg_base = active.base;
            active.note_batch(h, interval, now_ms);
            let data = data.slice(range.clone());
            cache_items.push((h.base_offset, h.last_offset(), data.clone()));
            st.pending.push_back(Pending {
                seg_base,
                base: h.base_offset,
                last: h.last_offset(),
                data,
            });
            if learn_epochs {
                st.epochs.assign(h.partition_leader_epoch, h.base_offset);
            }
            st.log_end = h.last_offset() + 1;
        }
        commit(&mut st);
        let log_start = st.log_start();
        let was_dirty = std::mem::replace(&mut st.dirty, true);
        drop(st);
        {
            let mut sh = self.shard.inner.borrow_mut();
            for (b, l, d) in cache_items {
                sh.cache.insert(self.inner.id, b, l, d);
            }
            if !was_dirty {
                sh.dirty.push(self.inner.clone());
            }
        }
        self.shard.metrics_add(|m| {
            m.bytes_appended += total_bytes as u64;
            m.batches_appended += batches.len() as u64;
        });
        if !was_dirty {
            self.shard.flush_wake.notify();
        }
        log_start
    }

    /// Check the idempotent batches of a request against the producer state (built on
    /// first need), each against the state as updated by the earlier ones. Returns the
    /// updated entries to commit after the write, or the answer for a request that is
    /// exactly one duplicate batch. A duplicate inside a multi-batch request is
    /// rejected as out of order: Kafka would answer the whole request with the duplicate's
    /// offsets and silently drop its new batches.
    fn check_producers(
        &self,
        batches: &[(RecordBatchHeader, std::ops::Range<usize>)],
    ) -> Result<Checked, StorageError> {
        let mut updates: Vec<(i64, Option<ProducerEntry>)> = Vec::new();
        if !batches.iter().any(|(h, _)| producer::is_idempotent(h)) {
            return Ok(Checked::Append(updates));
        }
        let max_bytes = self.shard.opts.producer_rebuild_bytes;
        let mut st = self.inner.st.borrow_mut();
        if st.producers.is_none() {
            let ps = producer::rebuild(&self.inner.dir, &mut st, max_bytes)?;
            st.producers = Some(Box::new(ps));
        }
        let Some(ps) = st.producers.as_deref() else {
            return Ok(Checked::Append(updates)); // ok: unreachable, set just above
        };
        let mut next = st.log_end;
        for (h, _) in batches {
            let base = next;
            next = base + h.last_offset_delta as i64 + 1;
            if !producer::is_idempotent(h) {
                continue;
            }
            let pid = h.producer_id;
            let slot = match updates.iter().position(|(p, _)| *p == pid) {
                Some(i) => i,
                None => {
                    updates.push((pid, ps.get(pid).cloned()));
                    updates.len() - 1
                }
            };
            let entry = &mut updates[slot].1;
            if let Verdict::Duplicate(m) = producer::check_and_apply(entry, h, base)? {
                if batches.len() != 1 {
                    let expected = entry
                        .as_ref()
                        .and_then(|e| e.batches.back())
                        .map_or(0, |b| producer::next_seq(b.last_seq));
                    return Err(StorageError::OutOfOrderSequence {
                        producer_id: pid,
                        expected,
                        got: h.base_sequence,
                    });
                }
                return Ok(Checked::Duplicate(AppendInfo {
                    base_offset: m.first_offset,
                    last_offset: m.last_offset,
                    log_append_time_ms: -1,
                    log_start_offset: st.log_start(),
                    duplicate: true,
                }));
            }
        }
        Ok(Checked::Append(updates))
    }

    /// Build the idempotent-producer state now, with async reads, if it is not built yet
    /// (a no-op otherwise). Optional: `append` builds it synchronously on first need,
    /// reading up to `ShardStorageOptions::producer_rebuild_bytes`; a broker awaits this
    /// before appending idempotent batches so the shard never blocks on that read.
    pub async fn load_producer_state(&self) -> Result<(), StorageError> {
        producer::load(self).await
    }

    /// Whether the idempotent-producer state is built (then `append` reads nothing).
    pub fn producer_state_loaded(&self) -> bool {
        self.inner.st.borrow().producers.is_some()
    }

    /// Whether appending `records` would first rebuild the idempotent-producer state
    /// synchronously: they hold an idempotent batch and the state is not built. A caller
    /// that must not block awaits `load_producer_state` first.
    pub fn needs_producer_state(&self, records: &[u8]) -> bool {
        !self.producer_state_loaded()
            && BatchIter::headers_only(records)
                .any(|b| b.is_ok_and(|(h, _)| producer::is_idempotent(&h)))
    }

    /// Resolves once every offset <= `last_offset` is fsynced. Fails if the flush failed,
    /// the offset was truncated away while waiting (even if the log has grown past it
    /// again since: that offset now holds other data), or the log was deleted.
    pub async fn wait_durable(&self, last_offset: i64) -> Result<(), StorageError> {
        let epoch = self.inner.st.borrow().truncate_epoch;
        loop {
            let wait = self.inner.durable_signal.wait();
            {
                let st = self.inner.st.borrow();
                if st.deleted {
                    return Err(StorageError::Closed);
                }
                if let Some(f) = &st.failed {
                    if last_offset >= st.durable {
                        return Err(f.to_error());
                    }
                }
                if st
                    .lowest_cut_since(epoch)
                    .is_some_and(|cut| last_offset >= cut)
                {
                    return Err(StorageError::Io(std::io::Error::other(format!(
                        "offset {last_offset} was truncated before it became durable"
                    ))));
                }
                if last_offset < st.durable {
                    return Ok(());
                }
                if last_offset >= st.log_end {
                    return Err(StorageError::OffsetOutOfRange {
                        offset: last_offset,
                        log_start: st.log_start(),
                        log_end: st.log_end,
                    });
                }
            }
            wait.await;
        }
    }

    pub fn log_start_offset(&self) -> i64 {
        self.inner.st.borrow().log_start()
    }
    pub fn log_end_offset(&self) -> i64 {
        self.inner.st.borrow().log_end
    }
    /// Every offset below this is fsynced (the broker's high watermark on one node).
    pub fn durable_offset(&self) -> i64 {
        self.inner.st.borrow().durable
    }

    /// Whole batches starting with the one holding `from_offset`, each with last offset <
    /// `max_offset`, at most `max_bytes` in total (the first one regardless if `min_one`).
    pub async fn read(
        &self,
        from_offset: i64,
        max_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<Vec<Bytes>, StorageError> {
        crate::read::read(self, from_offset, max_offset, max_bytes, min_one).await
    }

    /// (offset, timestamp) of the first record with timestamp >= `ts`. For an uncompressed
    /// batch this is the exact record; for a compressed batch it is that batch's base
    /// offset and max timestamp (records are not decompressed). None if no such record.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        crate::read::offset_for_timestamp(self, ts).await
    }

    /// (max timestamp in the log, last offset of the batch that has it).
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let st = self.inner.st.borrow();
        st.segments.iter().filter(|s| s.max_ts_offset >= 0).fold(
            None,
            |acc: Option<(i64, i64)>, s| match acc {
                Some((t, _)) if t >= s.max_ts => acc,
                _ => Some((s.max_ts, s.max_ts_offset)),
            },
        )
    }

    /// `truncate_from`, without the new end.
    pub async fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        self.truncate_from(offset).await.map(|_| ())
    }

    /// Cut a divergent suffix (a follower after OffsetsForLeaderEpoch): drop every batch
    /// at or after the batch holding `offset` and return the new log end, that batch's
    /// base offset (<= `offset`); batches are never split. `offset` >= the log end changes
    /// nothing (returns the log end); `offset` <= the log start empties the log, which
    /// restarts at `offset` (Kafka's truncateFullyAndStartAt); a negative `offset` is
    /// `OffsetOutOfRange`.
    ///
    /// Durable and crash-safe: pending (not yet flushed) batches in the cut range are
    /// dropped unwritten; when data on disk must go, a truncation intent is made durable
    /// first, then later segments are deleted, the segment holding the cut is shortened
    /// and its indexes rewritten, the leader-epoch checkpoint rewritten and the intent
    /// removed; a crash before the intent is durable recovers the old log, after it open
    /// completes the cut, so recovery never ends between the two. In memory the log is
    /// cut before the files (reads and appends see the new end at once; appends are
    /// refused with `Truncating` only while the cut point is being located). The cache,
    /// read-ahead windows, leader-epoch entries from the cut on and the idempotent-producer
    /// state (rebuilt from what remains on next need) are dropped. `wait_durable` callers
    /// for cut offsets fail (never hang). Returns once everything below the new end is
    /// durable (also when nothing was cut). Runs in its own task: dropping the future does
    /// not stop it half-way.
    pub async fn truncate_from(&self, offset: i64) -> Result<i64, StorageError> {
        crate::truncate::truncate(self, offset).await
    }

    /// Set the leader epoch this replica appends under, as leader, from now on: `append`
    /// writes it into every batch's partitionLeaderEpoch (the CRC does not cover it) and
    /// the leader-epoch cache records the first offset of each epoch. Not persisted: call
    /// it after every open, before appending as leader. A negative epoch turns stamping
    /// off, as for a log whose epoch was never set: then `append` keeps the value the
    /// client sent (-1 or 0 in practice) and records no epochs, exactly the behaviour
    /// before replication. Epochs must not go backwards: an `append` under an epoch below
    /// the log's latest fails with `StaleLeaderEpoch`. Followers need not call it
    /// (`append_replicated` keeps the leader's epochs).
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.inner.st.borrow_mut().leader_epoch = (epoch >= 0).then_some(epoch);
    }

    /// The epoch `append` stamps, if one is set.
    pub fn leader_epoch(&self) -> Option<i32> {
        self.inner.st.borrow().leader_epoch
    }

    /// The newest leader epoch with data in the log (the last leader-epoch cache entry).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.inner.st.borrow().epochs.latest()
    }

    /// OffsetsForLeaderEpoch for `epoch` (Kafka's LeaderEpochFileCache.endOffsetFor):
    /// (the largest epoch <= `epoch` in the log, the start offset of the next higher epoch
    /// or the log end offset if it is the latest). None means UNDEFINED (-1, -1): `epoch`
    /// is negative or the log has no epochs. Below the first epoch: (`epoch`, start of the
    /// first epoch), as Kafka answers. Above the latest: (latest, log end offset).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let st = self.inner.st.borrow();
        st.epochs.end_offset_for(epoch, st.log_end)
    }

    /// The leader-epoch cache: (epoch, start offset), both increasing.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.inner.st.borrow().epochs.entries().to_vec()
    }

    /// Delete whole segments past retention.ms (by batch max timestamp) and retention.bytes.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<(), StorageError> {
        crate::retention::enforce_retention(self, now_ms).await
    }

    pub fn config(&self) -> LogConfig {
        self.inner.st.borrow().config.clone()
    }
    pub fn set_config(&self, config: LogConfig) {
        self.inner.st.borrow_mut().config = config;
    }

    /// Bytes in all segments, including appended-but-not-yet-durable batches.
    pub fn size_bytes(&self) -> u64 {
        self.inner.st.borrow().segments.iter().map(|s| s.size).sum()
    }

    /// Flush, fsync, write indexes and the clean-shutdown marker, close files.
    pub async fn close(&self) -> Result<(), StorageError> {
        crate::recovery::close_log(self).await
    }

    /// Remove every file of the log and its directory; later calls fail with `Closed`.
    pub async fn delete(&self) -> Result<(), StorageError> {
        crate::retention::delete_log(self).await
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
