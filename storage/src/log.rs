//! `PartitionLog`: the public handle of one partition's log, and its shard-local state.
//! `append` is synchronous: it validates every batch first (all-or-nothing: CRC, and the
//! records themselves as Kafka's log validator does: `validate_client_batch`), assigns
//! contiguous offsets by writing each base offset into its header, rolls segments, puts
//! the batches in the pending queue and the shard cache, and marks the log dirty for the
//! flusher. Idempotent batches (producer id >= 0) are checked against the producer state
//! (`producer.rs`) first. Invariant: log_start <= durable <= log_end; offsets contiguous.

use crate::error::{FlushFailure, StorageError};
use crate::producer::{self, ProducerEntry, ProducerStates, Verdict};
use crate::segment::{SegState, Segment};
use crate::shard::ShardStorage;
use crate::signal::Signal;
use crate::LogConfig;
use bytes::{Bytes, BytesMut};
use sluice_proto::batch::{set_base_offset, BatchIter, RecordBatchHeader};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

/// Largest records section a compressed batch may inflate to when `append` counts its
/// records (Kafka validates compressed batches the same way, without this bound).
const MAX_DECOMPRESSED: usize = 64 << 20;

/// Result of a successful append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The time the log accepted the append (`now_ms` passed to `append`); -1 for a
    /// duplicate (Kafka answers a duplicate with no log append time).
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
    pub(crate) truncate_epoch: u64,
    pub(crate) truncate_point: i64,
    /// Idempotent-producer state; None until an idempotent batch needs it (idle
    /// partitions stay small) and again after a truncation (rebuilt from the log).
    pub(crate) producers: Option<Box<ProducerStates>>,
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
    pub fn append(&self, records: Bytes, now_ms: i64) -> Result<AppendInfo, StorageError> {
        let (max, interval, timestamps) = {
            let st = self.inner.st.borrow();
            st.check_open()?;
            let c = &st.config;
            (
                c.max_message_bytes as usize,
                c.index_interval_bytes,
                now_ms.saturating_sub(c.timestamp_before_max_ms)
                    ..=now_ms.saturating_add(c.timestamp_after_max_ms),
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
        let total_bytes = records.len();
        let mut buf = records
            .try_into_mut()
            .unwrap_or_else(|b| BytesMut::from(&b[..]));
        let mut st = self.inner.st.borrow_mut();
        let base0 = st.log_end;
        let mut next = base0;
        for (h, range) in batches.iter_mut() {
            set_base_offset(&mut buf[range.start..range.end], next);
            h.base_offset = next;
            next = h.last_offset() + 1;
        }
        let frozen = buf.freeze();
        let seg_bytes = st.config.segment_bytes;
        let seg_ms = st.config.segment_ms;
        let dir = self.inner.dir.clone();
        let mut cache_items = Vec::with_capacity(batches.len());
        for (h, range) in &batches {
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
            let data = frozen.slice(range.clone());
            cache_items.push((h.base_offset, h.last_offset(), data.clone()));
            st.pending.push_back(Pending {
                seg_base,
                base: h.base_offset,
                last: h.last_offset(),
                data,
            });
        }
        st.log_end = next;
        if let Some(ps) = st.producers.as_mut() {
            for (pid, e) in updates {
                if let Some(e) = e {
                    ps.insert(pid, e);
                }
            }
        }
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
        Ok(AppendInfo {
            base_offset: base0,
            last_offset: next - 1,
            log_append_time_ms: now_ms,
            log_start_offset: log_start,
            duplicate: false,
        })
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
    /// the offset was truncated away while waiting, or the log was deleted.
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
                if st.truncate_epoch != epoch && last_offset >= st.truncate_point {
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

    /// Drop every batch at or after the batch holding `offset`; log end becomes that
    /// batch's base offset (<= `offset`). Below the log start, the log restarts empty at
    /// `offset`.
    pub async fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        crate::retention::truncate_to(self, offset).await
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
