//! Reads: whole batches from the shard cache, then the pending (not yet durable) queue,
//! then a read-ahead window, then a DMA read of the segment starting at its sparse-index
//! position. Cold reads are copied once into a `Send` `Bytes` and cached; a cold
//! sequential reader gets a read-ahead window (`readahead.rs` keeps the windows, this
//! module fills them). Also `offset_for_timestamp`, and the async build of the
//! idempotent-producer state (`load_producers`), which reads the log's tail.
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
use crate::error::corrupt;
use crate::error::StorageError;
use crate::inner::LogInner;
use crate::producer;
use crate::readahead::{self, Planned};
use crate::shard::ShardStorage;
use crate::txn::SegTxn;
use bytes::Bytes;
use sluice_proto::batch::{decode_records, RecordBatchHeader, RECORD_BATCH_OVERHEAD};
use std::rc::Rc;

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

/// (offset, timestamp) of the first record with timestamp >= `ts`; see
/// `PartitionLog::offset_for_timestamp`.
pub(crate) async fn offset_for_timestamp(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    ts: i64,
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
        let batches = read(shard, log, next, end, 1 << 20, true).await?;
        if batches.is_empty() {
            return Ok(None);
        }
        for b in batches {
            let h = RecordBatchHeader::parse(&b)?;
            // an empty batch (the cleaner kept it for its producer) has no record to find
            if h.max_timestamp >= ts && h.records_count > 0 {
                if h.compression() != 0 || h.timestamp_type_log_append() {
                    return Ok(Some((h.base_offset, h.max_timestamp)));
                }
                match decode_records(&b) {
                    Ok(recs) => {
                        if let Some(r) = recs.iter().find(|r| r.timestamp >= ts) {
                            return Ok(Some((r.offset, r.timestamp)));
                        }
                    }
                    Err(_) => return Ok(Some((h.base_offset, h.max_timestamp))),
                }
            }
            next = h.last_offset() + 1;
        }
    }
}

/// Build the producer state with async reads (for `PartitionLog::load_producer_state`),
/// so the shard does not block: the newest usable snapshot (read on the blocking
/// helper), then the batch headers after it by DMA reads (without a snapshot, the tail
/// of the log). Installs it only if the log did not change in a way the read could have
/// missed (a truncation, a swap, batches flushed and dequeued that the read did not
/// reach: see `Replayer::feed_pending`); otherwise reads again holding the log's I/O
/// permit. Segments whose aborted-transaction entries were unknown (open after a crash)
/// get them from the replay, and sealed ones their `.txnindex` file. One load at a time
/// per log: a caller arriving during one waits for it and finds the state built.
pub(crate) async fn load_producers(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
) -> Result<(), StorageError> {
    // concurrent callers (fetches, a coordinator's retried writes) share one load
    let _one = crate::permit::acquire(&log.producer_load, 1).await?;
    let filled = match load_once(shard, log, false).await? {
        Replay::Installed(filled) => filled,
        Replay::Done => return Ok(()),
        Replay::Again => {
            // the log changed under the read (batches left the pending queue before it
            // reached them, a truncation, a swap): once more with the log's I/O permit,
            // which every flush, truncation and swap holds, so nothing can change under
            // it and the append waiting for this load finds the state built
            let _permit = crate::permit::acquire(&log.io, 1).await?;
            #[cfg(test)]
            LOCKED_REPLAYS.with(|n| n.set(n.get() + 1));
            match load_once(shard, log, true).await? {
                Replay::Installed(filled) => filled,
                Replay::Done | Replay::Again => return Ok(()),
            }
        }
    };
    if log.state().snapshot_to_restore().is_some() {
        // keep a snapshot on disk, or a restart would fall back to the tail window
        let _permit = crate::permit::acquire(&log.io, 1).await?;
        let snap = log.state().snapshot_to_restore();
        if let Some((offset, ps)) = snap {
            crate::flusher::persist_snapshot(log, offset, &ps).await?;
        }
    }
    if !filled.is_empty() {
        let _permit = crate::permit::acquire(&log.io, 1).await?;
        for (seg_base, entries) in filled {
            if log.state().segment(seg_base).is_none() {
                continue;
            }
            crate::txn::write_file(&log.dir, seg_base, &entries).await?;
            log.state_mut().txn_file_written(seg_base, entries.len());
        }
    }
    Ok(())
}

/// Reads the newest usable snapshot and replays the log after it (`replay`).
async fn load_once(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    locked: bool,
) -> Result<Replay, StorageError> {
    let max_bytes = shard.opts.producer_rebuild_bytes;
    if log.state().producers_loaded() {
        return Ok(Replay::Done);
    }
    #[cfg(test)]
    LOADS.with(|n| n.set(n.get() + 1));
    let candidates = log.state().snapshot_candidates();
    let mut base = None;
    for o in candidates {
        let dir = log.dir.clone();
        match crate::blocking::run(&log.dir, move || crate::snapshot::read(&dir, o)).await {
            Some(ps) => {
                base = Some((o, ps));
                break;
            }
            None => {
                tracing::warn!(dir = %log.dir.display(), offset = o, "unusable producer-state snapshot; trying an older one");
                log.state_mut().forget_snapshot(o);
            }
        }
    }
    let at = base.as_ref().map(|b| b.0);
    let ps = base.map(|b| b.1).unwrap_or_default();
    replay(shard, log, max_bytes, at, ps, locked).await
}

#[cfg(test)]
thread_local! {
    /// Replays `load_producers` made again under the log's I/O permit (tests).
    static LOCKED_REPLAYS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Loads that read the files (tests).
    static LOADS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// What one replay of `load_producers` came to.
enum Replay {
    /// Installed; the sealed segments whose unknown aborted-transaction entries it filled.
    Installed(Vec<(i64, Vec<crate::txn::AbortedEntry>)>),
    /// Closed, or already loaded: nothing to do.
    Done,
    /// The log changed in a way the read could have missed: batches left the pending
    /// queue before it reached them, or a truncation or swap came under it.
    Again,
}

/// Plans a rebuild from the snapshot at `at` (state `ps`) or the log's tail, reads the
/// planned ranges and installs the state with the pending batches. `locked`: the caller
/// holds the log's I/O permit, so no flush moved the durable offset since the plan; what
/// the files then fail to give (a short or damaged read) is installed anyway with a
/// warning.
async fn replay(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    max_bytes: u64,
    at: Option<i64>,
    ps: producer::ProducerStates,
    locked: bool,
) -> Result<Replay, StorageError> {
    // the plan may consult the sparse index of the segment it starts in
    let bases: Vec<i64> = {
        let st = log.state();
        let n = st.segments().len();
        match at {
            Some(o) => st
                .segment_for(o)
                .map(|i| st.segments()[i].base)
                .into_iter()
                .collect(),
            None => st.segments()[n.saturating_sub(producer::REBUILD_SEGMENTS)..]
                .iter()
                .map(|s| s.base)
                .collect(),
        }
    };
    for b in bases {
        log.load_indexes(b).await;
    }
    let (plan, epoch, layout, log_end) = {
        let mut st = log.state_mut();
        st.check_open()?;
        if st.producers_loaded() {
            return Ok(Replay::Done);
        }
        let p = st.plan_producer_rebuild(&log.dir, max_bytes, at);
        (p, st.truncate_epoch(), st.layout_epoch(), st.log_end())
    };
    match replay_files(shard, log, &plan, log_end, ps).await {
        Ok(r) => install_replayed(log, r, &plan, epoch, layout, locked),
        // segments swapped under the read (a file gone or replaced): leave it unbuilt
        Err(_) if log.state().layout_epoch() != layout => Ok(Replay::Again),
        Err(e) => Err(e),
    }
}

/// The planned ranges of the segment files, replayed on top of `ps`.
async fn replay_files(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    plan: &producer::Plan,
    log_end: i64,
    ps: producer::ProducerStates,
) -> Result<producer::Replayer, StorageError> {
    let mut r = producer::Replayer::new(plan, log_end, ps);
    'segments: for &(base, from, to) in &plan.ranges {
        if to <= from {
            continue;
        }
        let file = shard.segment_file(log, base, false).await?;
        let mut buf = glommio::io::ReadResult::default();
        let mut buf_start = 0u64;
        let mut pos = from;
        let overhead = RECORD_BATCH_OVERHEAD as u64;
        while pos + overhead <= to {
            if pos < buf_start || pos + overhead > buf_start + buf.len() as u64 {
                let want = (to - pos).min(producer::READ_CHUNK as u64) as usize;
                buf = file.read_at(pos, want).await?;
                buf_start = pos;
                if buf.len() < RECORD_BATCH_OVERHEAD {
                    r.range_read(pos, to);
                    break 'segments;
                }
            }
            let off = (pos - buf_start) as usize;
            let Ok(h) = RecordBatchHeader::parse(&buf[off..off + RECORD_BATCH_OVERHEAD]) else {
                r.range_read(pos, to);
                break 'segments;
            };
            let size = h.total_size();
            if pos + size as u64 > to {
                r.range_read(pos, to);
                break 'segments;
            }
            let mut marker = None;
            if h.is_control() && size <= producer::READ_CHUNK {
                // a control batch is small: read it whole for its transaction marker
                if off + size > buf.len() {
                    let want = (to - pos).min(producer::READ_CHUNK as u64) as usize;
                    buf = file.read_at(pos, want).await?;
                    buf_start = pos;
                    if buf.len() < size {
                        r.range_read(pos, to);
                        break 'segments;
                    }
                }
                let off = (pos - buf_start) as usize;
                marker = producer::marker_of(&h, &buf[off..off + size]);
            }
            if !r.feed(&h, marker) {
                r.range_read(pos, to);
                break 'segments;
            }
            pos += size as u64;
        }
        r.range_read(pos, to);
    }
    Ok(r)
}

/// Installs what `replay_files` read, with the pending batches, unless the log changed
/// in a way the read could have missed (with `locked`, only a short or damaged read can:
/// installed anyway, with a warning).
fn install_replayed(
    log: &LogInner,
    mut r: producer::Replayer,
    plan: &producer::Plan,
    epoch: u64,
    layout: u64,
    locked: bool,
) -> Result<Replay, StorageError> {
    let mut st = log.state_mut();
    if st.producers_loaded() || st.check_open().is_err() {
        return Ok(Replay::Done);
    }
    if st.truncate_epoch() != epoch || st.layout_epoch() != layout {
        return Ok(Replay::Again);
    }
    let (end, durable) = (st.log_end(), st.durable());
    if !r.feed_pending(st.pending(), end, plan.durable, durable)? {
        if !locked {
            return Ok(Replay::Again);
        }
        tracing::warn!(dir = %log.dir.display(), next = r.next, log_end = end,
            "producer state rebuilt from a log it could not read whole; older producers may be unknown");
    }
    Ok(Replay::Installed(st.install_producers(
        r.ps,
        r.aborted,
        plan.skip_below,
    )))
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
mod tests {
    use super::{LOADS, LOCKED_REPLAYS};
    use crate::{LogConfig, PartitionLog};
    use std::time::Duration;

    /// A flush that moves the durable offset while the async producer-state load reads
    /// the files makes it read again under the log's I/O permit and install the state:
    /// `append` is then never left to rebuild it with blocking reads on the shard.
    #[test]
    fn a_flush_under_the_async_producer_load_does_not_leave_it_unbuilt() {
        let dir = crate::test_dir();
        let path = dir.path().join("t-0");
        crate::on_test_shard(move |shard| async move {
            let value = vec![7u8; 64 << 10];
            let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
                .await
                .unwrap(); // ok: test
            let mut last = 0;
            for i in 0..256 {
                last = log
                    .append(crate::test_batch(i, &value), 1)
                    .unwrap()
                    .last_offset; // ok: test
            }
            log.wait_durable(last).await.unwrap(); // ok: test
            log.close().await.unwrap(); // ok: test
            let mut raced = 0;
            for round in 0..20u64 {
                let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
                    .await
                    .unwrap(); // ok: test
                assert!(!log.inner.state().producers_loaded());
                // batches pending, not flushed while the permit is held here
                let permit = crate::permit::acquire(&log.inner.io, 1).await.unwrap(); // ok: test
                let end = log.inner.state().log_end();
                for i in 0..4 {
                    last = log
                        .append(crate::test_batch(end + i, b"x"), 1)
                        .unwrap()
                        .last_offset; // ok: test
                }
                let before = LOCKED_REPLAYS.with(|n| n.get());
                let l = log.clone();
                let load = glommio::spawn_local(async move { l.load_producer_state().await });
                // let the load plan (with those batches pending), then let them flush
                glommio::timer::sleep(Duration::from_micros(200 * (round + 1))).await;
                drop(permit);
                log.wait_durable(last).await.unwrap(); // ok: test
                load.await.unwrap(); // ok: test
                assert!(
                    log.inner.state().producers_loaded(),
                    "round {round}: the load left the producer state unbuilt"
                );
                raced += LOCKED_REPLAYS.with(|n| n.get()) - before;
                log.close().await.unwrap(); // ok: test
            }
            assert!(raced > 0, "no round had a flush under the load's read");
            shard.shutdown().await.unwrap(); // ok: test
        });
    }

    /// A log at `path` with `n` durable 4 KiB batches, closed and opened again: its
    /// producer state is not built.
    async fn reopened_with_batches(
        shard: &std::rc::Rc<crate::ShardStorage>,
        path: std::path::PathBuf,
        n: i64,
    ) -> PartitionLog {
        let log = PartitionLog::open(shard, path.clone(), LogConfig::default())
            .await
            .unwrap(); // ok: test
        let mut last = 0;
        for i in 0..n {
            last = log
                .append(crate::test_batch(i, &[1u8; 4096]), 1)
                .unwrap() // ok: test
                .last_offset;
        }
        log.wait_durable(last).await.unwrap(); // ok: test
        log.close().await.unwrap(); // ok: test
        PartitionLog::open(shard, path, LogConfig::default())
            .await
            .unwrap() // ok: test
    }

    /// A caller that stops waiting (its request timed out) does not stop the load: it
    /// finishes in its own task, and the state is built for the next caller.
    #[test]
    fn a_load_whose_caller_stops_waiting_still_finishes() {
        let dir = crate::test_dir();
        let path = dir.path().join("t-0");
        crate::on_test_shard(move |shard| async move {
            let log = reopened_with_batches(&shard, path, 1).await;
            assert!(!log.producer_state_loaded());
            // another load holds the one-at-a-time permit, so this caller waits
            let other = crate::permit::acquire(&log.inner.producer_load, 1)
                .await
                .unwrap(); // ok: test
            let mut load = Box::pin(log.load_producer_state());
            assert!(futures_lite::future::poll_once(&mut load).await.is_none());
            drop(load); // the caller gives up
            drop(other);
            for _ in 0..200 {
                if log.producer_state_loaded() {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                log.producer_state_loaded(),
                "the dropped load was not finished"
            );
            shard.shutdown().await.unwrap(); // ok: test
        });
    }

    /// Callers loading the producer state at once (a read_committed fetch, a
    /// coordinator's retried write) share one read of the files.
    #[test]
    fn concurrent_producer_loads_read_the_log_once() {
        let dir = crate::test_dir();
        let path = dir.path().join("t-0");
        crate::on_test_shard(move |shard| async move {
            let log = reopened_with_batches(&shard, path, 64).await;
            assert!(!log.inner.state().producers_loaded());
            let before = LOADS.with(|n| n.get());
            let loads: Vec<_> = (0..8)
                .map(|_| {
                    let l = log.clone();
                    glommio::spawn_local(async move { l.load_producer_state().await })
                })
                .collect();
            for l in loads {
                l.await.unwrap(); // ok: test
            }
            assert!(log.inner.state().producers_loaded());
            assert_eq!(
                LOADS.with(|n| n.get()) - before,
                1,
                "the log was read more than once"
            );
            shard.shutdown().await.unwrap(); // ok: test
        });
    }
}
