//! Reads: whole batches from the shard cache, then the pending (not yet durable) queue,
//! then a read-ahead window, then a DMA read of the segment starting at its sparse-index
//! position. Cold reads are copied once into a `Send` `Bytes` and cached; a cold
//! sequential reader gets a read-ahead window (`readahead.rs` keeps the windows, this
//! module fills them). Also `offset_for_timestamp`, and the async build of the
//! idempotent-producer state (`load_producers`, in `read/producers.rs`), which reads the
//! log's tail.
//!
//! A cleaner's swap replaces segments under readers: a disk read that looked a segment
//! up before the swap (the layout epoch moved) starts again, and caches nothing it read;
//! the replaced files stay open for reads already under way (their `Rc`).
//!
//! Offsets need not be contiguous (a compacted log keeps batches at their original
//! offsets): a read at an offset no batch holds returns the batches from the first one
//! after it, as Kafka's fetch does. The segment holding an offset may end in a gap: the
//! read then continues in the next segment.
//!
//! ```text
//!  read(from) ─► cache.get(from) ─hit─► batch
//!                    └─miss─► pending(from) ─► read-ahead window ─► DMA read [index pos, ..) ─► cache
//! ```

use crate::cache::Batch;
use crate::config::MAX_DECOMPRESSED;
use crate::error::corrupt;
use crate::error::StorageError;
use crate::inner::LogInner;
use crate::readahead::{self, Planned};
use crate::shard::ShardStorage;
use crate::txn::SegTxn;
use bytes::Bytes;
use sluice_proto::batch::{decode_stored_records, RecordBatchHeader, RECORD_BATCH_OVERHEAD};
use std::rc::Rc;

mod producers;
pub(crate) use producers::load_producers;

const MIN_DISK_READ: usize = 64 << 10;
const MAX_DISK_READ: usize = 16 << 20;

/// A read under way: the batches so far, their bytes, the next offset, and whether it
/// touched disk or a read-ahead window (then it keeps a window ahead of this reader).
struct Progress {
    out: Vec<Bytes>,
    total: usize,
    next: i64,
    cold: bool,
    /// Batches memory gave (cache or pending queue; read-ahead windows): counted into the
    /// shard's metrics when the read finishes, so a `read_now` that gives up (and the
    /// `read` that then starts over) counts them once.
    cache_hits: u64,
    readahead_hits: u64,
}

/// The read's bounds, as `read` takes them.
#[derive(Clone, Copy)]
struct Bounds {
    from: i64,
    max_offset: i64,
    max_bytes: usize,
    min_one: bool,
}

impl Progress {
    /// Adds `batches` (in offset order); true when the read is complete: a batch reaches
    /// `max_offset`, or the next would pass `max_bytes`.
    fn take(&mut self, batches: Vec<Batch>, b: Bounds) -> bool {
        for (_, last, data) in batches {
            if last >= b.max_offset {
                return true;
            }
            if self.total + data.len() > b.max_bytes && !(self.out.is_empty() && b.min_one) {
                return true;
            }
            self.total += data.len();
            self.out.push(data);
            self.next = last + 1;
        }
        false
    }

    /// True when nothing is left to read below the bounds.
    fn at_end(&self, log: &LogInner, b: Bounds) -> bool {
        self.next >= b.max_offset || self.next >= log.state().log_end()
    }

    fn finish(self, shard: &Rc<ShardStorage>, log: &Rc<LogInner>, b: Bounds) -> Vec<Bytes> {
        if self.cache_hits + self.readahead_hits > 0 {
            shard.metrics_add(|m| {
                m.cache_hits += self.cache_hits;
                m.readahead_hits += self.readahead_hits;
            });
        }
        if self.cold && !self.out.is_empty() {
            advance_readahead(shard, log, b.from, self.next, self.total);
        }
        self.out
    }
}

impl Bounds {
    /// The bounds of a read from `from`, checked against the log's range (and that it is
    /// open).
    fn checked(
        log: &LogInner,
        from: i64,
        max_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<Self, StorageError> {
        let st = log.state();
        if st.is_closed() {
            return Err(StorageError::Closed);
        }
        let (start, end) = (st.log_start(), st.log_end());
        if from < start || from > end {
            return Err(StorageError::OffsetOutOfRange {
                offset: from,
                log_start: start,
                log_end: end,
            });
        }
        Ok(Bounds {
            from,
            max_offset,
            max_bytes,
            min_one,
        })
    }
}

/// The batch holding `p.next` if memory has it: the cache or the pending queue, else a
/// read-ahead window (which makes the read cold: it keeps a window ahead of itself).
fn from_memory(shard: &Rc<ShardStorage>, log: &Rc<LogInner>, p: &mut Progress) -> Option<Batch> {
    if let Some(batch) = lookup_memory(shard, log, p.next) {
        p.cold = p.cold || shard.inner.borrow().readahead.in_window(log.id, p.next);
        p.cache_hits += 1;
        return Some(batch);
    }
    let batch = shard.inner.borrow().readahead.lookup(log.id, p.next)?;
    p.readahead_hits += 1;
    p.cold = true;
    Some(batch)
}

/// The part of a read that memory serves (the cache, the pending queue, read-ahead
/// windows), without waiting: `Ok` with the whole answer, or `Err` with the progress up
/// to the first batch that needs the disk.
fn read_memory(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    b: Bounds,
) -> Result<Vec<Bytes>, Progress> {
    let mut p = Progress {
        out: Vec::new(),
        total: 0,
        next: b.from,
        cold: false,
        cache_hits: 0,
        readahead_hits: 0,
    };
    loop {
        if p.at_end(log, b) {
            return Ok(p.finish(shard, log, b));
        }
        let Some(batch) = from_memory(shard, log, &mut p) else {
            return Err(p);
        };
        if p.take(vec![batch], b) {
            return Ok(p.finish(shard, log, b));
        }
    }
}

/// `read` if memory holds the whole answer (no disk read, no wait): the fetch path tries
/// this first for each partition, and starts a task only for the others (at 10,000
/// partitions a task per partition read was a large part of a fetch round).
pub(crate) fn read_now(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    from: i64,
    max_offset: i64,
    max_bytes: usize,
    min_one: bool,
) -> Option<Result<Vec<Bytes>, StorageError>> {
    match Bounds::checked(log, from, max_offset, max_bytes, min_one) {
        Ok(b) => read_memory(shard, log, b).ok().map(Ok),
        Err(e) => Some(Err(e)),
    }
}

pub(crate) async fn read(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    from: i64,
    max_offset: i64,
    max_bytes: usize,
    min_one: bool,
) -> Result<Vec<Bytes>, StorageError> {
    let b = Bounds::checked(log, from, max_offset, max_bytes, min_one)?;
    let mut p = match read_memory(shard, log, b) {
        Ok(out) => return Ok(out),
        Err(p) => p,
    };
    let mut waited = false;
    loop {
        if p.at_end(log, b) {
            break;
        }
        let want = max_bytes.saturating_sub(p.total);
        let next = p.next;
        let batches = match from_memory(shard, log, &mut p) {
            Some(batch) => vec![batch],
            None => {
                let in_flight = shard.inner.borrow().readahead.in_flight(log.id, next);
                if let Some(done) = in_flight.filter(|_| !waited) {
                    done.wait().await;
                    waited = true;
                    continue;
                }
                shard.metrics_add(|m| m.cache_misses += 1);
                p.cold = true;
                let durable = log.state().durable();
                let got = read_disk(shard, log, next, want, true).await?;
                if got.is_empty() {
                    // nothing on disk from `next` on: the rest is still pending, unless a
                    // flush moved batches out of the queue during the read (retry)
                    let st = log.state();
                    if st.durable() != durable {
                        continue;
                    }
                    st.pending_from(next).into_iter().collect()
                } else {
                    got
                }
            }
        };
        if batches.is_empty() || p.take(batches, b) {
            break;
        }
    }
    Ok(p.finish(shard, log, b))
}

/// The batch for `offset` from memory: the cache (the batch holding it) or the pending
/// queue (the batch holding it, or the next one when it lies in a gap at the tail).
fn lookup_memory(shard: &ShardStorage, log: &LogInner, offset: i64) -> Option<Batch> {
    if let Some(b) = shard.inner.borrow().cache.get(log.id, offset) {
        return Some(b);
    }
    log.state().pending_batch(offset)
}

/// Read batches from disk starting with the one holding `offset` (or the first one after
/// it, in this segment or a later one, when `offset` falls in a gap), about `want` bytes,
/// and cache them if `cache`. Empty if the log was truncated meanwhile, or if no batch at
/// or after `offset` is on disk yet (it is then in the pending queue). A read that
/// overlaps a cleaner's swap (the segments it looked up were replaced: the layout epoch
/// moved) starts again on the new segments, whatever it read or failed with: a file
/// position of a replaced segment means nothing in the new one.
pub(crate) async fn read_disk(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    offset: i64,
    want: usize,
    cache: bool,
) -> Result<Vec<Batch>, StorageError> {
    loop {
        let layout = log.state().layout_epoch();
        let res = read_disk_in(shard, log, offset, want, cache, layout).await;
        if log.state().layout_epoch() == layout {
            return res;
        }
    }
}

/// `read_disk` while the layout epoch is `layout`; what it returns after a swap is
/// discarded by the caller (and nothing of it is cached).
pub(crate) async fn read_disk_in(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    offset: i64,
    want: usize,
    cache: bool,
    layout: u64,
) -> Result<Vec<Batch>, StorageError> {
    let mut offset = offset;
    let mut from_start = false;
    let epoch = log.state().truncate_epoch();
    loop {
        let base = {
            let st = log.state();
            st.segment_for(offset).map(|i| st.segments()[i].base)
        };
        if let Some(base) = base {
            log.load_indexes(base).await;
        }
        let Some(start) = log.state_mut().read_start(offset, &log.dir, from_start) else {
            return Ok(Vec::new());
        };
        let seg_base = start.seg_base;
        let limit = start.flushed;
        // where to look when this segment has no batch at or after `offset` on disk: the
        // next segment if this one is all on disk (it ends in a gap); else the batch is
        // still only in the pending queue
        let skip_to = start
            .next_base
            .filter(|&nb| start.all_flushed && nb > offset);
        if start.pos >= limit {
            match skip_to {
                Some(nb) => {
                    offset = nb;
                    from_start = false;
                    continue;
                }
                None => return Ok(Vec::new()),
            }
        }
        let file = shard.segment_file(log, seg_base, false).await?;
        let interval = log.state().config().index_interval_bytes as usize;
        let chunk = (want.max(MIN_DISK_READ) + 2 * interval).min(MAX_DISK_READ);
        let mut pos = start.pos;
        let mut buf_start = pos;
        let mut buf = file.read_at(pos, chunk.min((limit - pos) as usize)).await?;
        let mut found: Vec<(u64, RecordBatchHeader)> = Vec::new();
        let mut got = 0usize;
        let mut reread_at = None;
        let mut index_bad = false;
        while pos < limit {
            let off = (pos - buf_start) as usize;
            let avail = buf.len().saturating_sub(off);
            let h = if avail >= RECORD_BATCH_OVERHEAD {
                Some(RecordBatchHeader::parse(&buf[off..]))
            } else {
                None
            };
            let at_entry = pos == start.pos && start.pos != 0;
            let size = match &h {
                Some(Ok(h)) => h.total_size(),
                Some(Err(_)) if at_entry => {
                    index_bad = true;
                    break;
                }
                Some(Err(e)) => return Err(corrupt(format!("segment {seg_base} at {pos}: {e}"))),
                None => RECORD_BATCH_OVERHEAD,
            };
            if size as u64 > limit - pos {
                if at_entry {
                    index_bad = true;
                    break;
                }
                return Err(corrupt(format!(
                    "segment {seg_base}: batch at {pos} runs past the end"
                )));
            }
            if avail < size {
                if !found.is_empty() {
                    break;
                }
                if reread_at == Some(pos) {
                    return Err(corrupt(format!("segment {seg_base}: short read at {pos}")));
                }
                reread_at = Some(pos);
                let len = size.max(chunk).min((limit - pos) as usize);
                buf = file.read_at(pos, len).await?;
                buf_start = pos;
                continue;
            }
            let Some(Ok(h)) = h else { break };
            if at_entry && h.base_offset != start.offset {
                index_bad = true;
                break;
            }
            // the first batch whose last offset reaches `offset` holds it, or is the first
            // one after it (a gap): batches are in offset order
            if h.last_offset() >= offset {
                found.push((pos, h));
                got += size;
                if got >= want {
                    break;
                }
            }
            pos += size as u64;
        }
        if index_bad {
            if log.state().layout_epoch() != layout {
                return Ok(Vec::new()); // the file was replaced under this read, not its index
            }
            if from_start {
                return Err(corrupt(format!(
                    "segment {seg_base}: offset {offset} not found"
                )));
            }
            tracing::warn!(dir = %log.dir.display(), seg_base, "offset index does not match the segment; scanning from its start");
            log.state_mut().reset_index(seg_base);
            from_start = true;
            continue;
        }
        let Some(&(first_pos, _)) = found.first() else {
            match skip_to {
                Some(nb) => {
                    offset = nb;
                    from_start = false;
                    continue;
                }
                None => return Ok(Vec::new()),
            }
        };
        {
            let st = log.state();
            if st.truncate_epoch() != epoch || st.layout_epoch() != layout {
                return Ok(Vec::new());
            }
        }
        let lo = (first_pos - buf_start) as usize;
        let hi = lo + got;
        let whole = Bytes::copy_from_slice(&buf[lo..hi]);
        let mut batches = Vec::with_capacity(found.len());
        let mut sh = shard.inner.borrow_mut();
        for (p, h) in found {
            let s = (p - first_pos) as usize;
            let b = whole.slice(s..s + h.total_size());
            if cache {
                sh.cache
                    .insert(log.id, h.base_offset, h.last_offset(), b.clone());
            }
            batches.push((h.base_offset, h.last_offset(), b));
        }
        return Ok(batches);
    }
}

/// After a cold read of `[from, next)` that returned `got` bytes: let the read-ahead
/// windows follow the reader and, if a new window opens, read it in the background.
fn advance_readahead(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    from: i64,
    next: i64,
    got: usize,
) {
    let durable = {
        let st = log.state();
        if st.is_closed() {
            return;
        }
        st.durable()
    };
    let planned = {
        let mut sh = shard.inner.borrow_mut();
        let sh = &mut *sh;
        readahead::advance(
            &mut sh.readahead,
            &sh.cache,
            log.id,
            from,
            next,
            got,
            durable,
        )
    };
    let Some(Planned {
        window,
        start,
        len,
        done,
    }) = planned
    else {
        return;
    };
    let (shard, log) = (shard.clone(), log.clone());
    glommio::spawn_local(async move {
        let open = !log.state().is_closed();
        let batches = if open {
            read_disk(&shard, &log, start, len, false).await
        } else {
            Ok(Vec::new())
        };
        let batches = batches.unwrap_or_else(|e| {
            tracing::debug!(dir = %log.dir.display(), offset = start, error = %e, "read-ahead failed");
            Vec::new()
        });
        shard
            .inner
            .borrow_mut()
            .readahead
            .finish(log.id, window, batches);
        done.notify();
    })
    .detach();
}

/// (offset, timestamp) of the first record at or after the log start with timestamp >=
/// `ts`; see `PartitionLog::offset_for_timestamp`.
pub(crate) async fn offset_for_timestamp(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    ts: i64,
) -> Result<Option<(i64, i64)>, StorageError> {
    first_record_from(shard, log, ts, true).await
}

/// The first record with a timestamp at or past `ts` as (offset, timestamp): from the
/// time index's scan start in the first segment that reaches `ts`, each batch's records
/// inflated as Kafka's `searchForTimestamp`; with `above_start`, only records at or past
/// the log start count.
async fn first_record_from(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    ts: i64,
    above_start: bool,
) -> Result<Option<(i64, i64)>, StorageError> {
    let base = log
        .state()
        .segments()
        .iter()
        .find(|s| s.max_ts_offset >= 0 && s.max_ts >= ts)
        .map(|s| s.base);
    if let Some(base) = base {
        log.load_indexes(base).await;
    }
    let mut next = {
        let mut st = log.state_mut();
        st.check_open()?;
        match st.timestamp_start(ts, &log.dir) {
            Some(from) => from,
            None => return Ok(None),
        }
    };
    loop {
        let end = log.state().log_end();
        if next >= end {
            return Ok(None);
        }
        let batches = match read(shard, log, next, end, 1 << 20, true).await {
            Ok(b) => b,
            // only the maximum's search reads below the start (then gone meanwhile)
            Err(StorageError::OffsetOutOfRange { .. }) if !above_start => return Ok(None),
            Err(e) => return Err(e),
        };
        if batches.is_empty() {
            return Ok(None);
        }
        // a DeleteRecords may have put the start inside a batch: nothing below it counts
        let start = if above_start {
            log.state().log_start()
        } else {
            i64::MIN
        };
        for b in batches {
            let h = RecordBatchHeader::parse(&b)?;
            // an empty batch (the cleaner kept it for its producer) has no record to find
            if h.max_timestamp >= ts && h.records_count > 0 && h.last_offset() >= start {
                // each record, compressed batches inflated (as Kafka's
                // `searchForTimestamp`); a LogAppendTime batch's records carry its time
                let (_, recs) = decode_stored_records(&b, MAX_DECOMPRESSED)?;
                if let Some(r) = recs.iter().find(|r| r.timestamp >= ts && r.offset >= start) {
                    return Ok(Some((r.offset, r.timestamp)));
                }
            }
            next = h.last_offset() + 1;
        }
    }
}

/// (max timestamp, offset of the first record that has it); see
/// `PartitionLog::offset_of_max_timestamp`. The first record at or past the maximum is
/// the first that has it: found from the time index as any timestamp lookup, so the
/// answer does not depend on where the segment's maximum was remembered (a segment
/// recovered from its indexes knows only that its maximum is in it). Kafka does not
/// check the log start here either.
pub(crate) async fn offset_of_max_timestamp(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
) -> Result<Option<(i64, i64)>, StorageError> {
    let Some((ts, last)) = log.state().max_timestamp() else {
        return Ok(None);
    };
    // none found: the batch is gone (cleaned or truncated since): its last offset
    Ok(Some(
        match first_record_from(shard, log, ts, false).await? {
            Some((offset, _)) => (ts, offset),
            None => (ts, last),
        },
    ))
}

/// `PartitionLog::aborted_transactions`: the aborted-transaction entries of the
/// segments from the one holding `from` on, read from their `.txnindex` on the blocking
/// helper when not in memory, until one says nothing earlier can follow.
pub(crate) async fn aborted_transactions(
    log: &Rc<LogInner>,
    from: i64,
    upper: i64,
) -> Result<Vec<crate::txn::AbortedTxn>, StorageError> {
    let mut out = Vec::new();
    let segments = log.state().txn_segments_from(from);
    for (base, entries) in segments {
        let entries = match entries {
            SegTxn::Loaded(v) => v,
            SegTxn::Unknown => {
                return Err(corrupt(format!(
                    "segment {base}: aborted transactions not rebuilt yet"
                )))
            }
            SegTxn::OnDisk(_) => {
                let dir = log.dir.clone();
                let read =
                    crate::blocking::run(&log.dir, move || crate::txn::read_entries(&dir, base))
                        .await?;
                log.state_mut().install_txn(base, read.clone());
                read.ok_or_else(|| corrupt(format!("segment {base}: damaged transaction index")))?
            }
        };
        if crate::txn::collect(&entries, from, upper, &mut out) {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
