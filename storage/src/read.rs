//! Reads: whole batches from the shard cache, then the pending (not yet durable) queue,
//! then a DMA read of the segment starting at its sparse-index position. Cold reads are
//! copied once into a `Send` `Bytes` and cached; a cold sequential reader gets a
//! read-ahead window (`readahead`). Also `offset_for_timestamp`.
//!
//! ```text
//!  read(from) ─► cache.get(from) ─hit─► batch
//!                    └─miss─► pending(from) ─► read-ahead window ─► DMA read [index pos, ..) ─► cache
//! ```

use crate::error::StorageError;
use crate::log::{LogInner, PartitionLog};
use crate::readahead;
use crate::segment::SegState;
use bytes::Bytes;
use sluice_proto::batch::{decode_records, RecordBatchHeader, RECORD_BATCH_OVERHEAD};

pub(crate) type Batch = (i64, i64, Bytes); // (base, last, bytes)

const MIN_DISK_READ: usize = 64 << 10;
const MAX_DISK_READ: usize = 16 << 20;

pub(crate) async fn read(
    log: &PartitionLog,
    from: i64,
    max_offset: i64,
    max_bytes: usize,
    min_one: bool,
) -> Result<Vec<Bytes>, StorageError> {
    {
        let st = log.inner.st.borrow();
        if st.closed || st.deleted {
            return Err(StorageError::Closed);
        }
        let (start, end) = (st.log_start(), st.log_end);
        if from < start || from > end {
            return Err(StorageError::OffsetOutOfRange {
                offset: from,
                log_start: start,
                log_end: end,
            });
        }
    }
    let mut out = Vec::new();
    let mut total = 0usize;
    let mut next = from;
    // touched disk or a read-ahead window: keep a window ahead of this reader
    let mut cold = false;
    let mut waited = false;
    'outer: loop {
        let log_end = log.inner.st.borrow().log_end;
        if next >= max_offset || next >= log_end {
            break;
        }
        let want = max_bytes.saturating_sub(total);
        let batches = match lookup_memory(log, next) {
            Some(b) => {
                cold = cold || readahead::in_window(log, next);
                vec![b]
            }
            None => match readahead::lookup(log, next) {
                Some(b) => {
                    cold = true;
                    vec![b]
                }
                None => {
                    if !waited && readahead::wait_in_flight(log, next).await {
                        waited = true;
                        continue;
                    }
                    log.shard.metrics_add(|m| m.cache_misses += 1);
                    cold = true;
                    read_disk(log, next, want, true).await?
                }
            },
        };
        if batches.is_empty() {
            break;
        }
        for (_, last, b) in batches {
            if last >= max_offset {
                break 'outer;
            }
            if total + b.len() > max_bytes && !(out.is_empty() && min_one) {
                break 'outer;
            }
            total += b.len();
            out.push(b);
            next = last + 1;
        }
    }
    if cold && !out.is_empty() {
        readahead::advance(log, from, next, total);
    }
    Ok(out)
}

fn lookup_memory(log: &PartitionLog, offset: i64) -> Option<Batch> {
    if let Some(b) = log.shard.inner.borrow().cache.get(log.inner.id, offset) {
        log.shard.metrics_add(|m| m.cache_hits += 1);
        return Some(b);
    }
    let st = log.inner.st.borrow();
    let i = st.pending.partition_point(|p| p.base <= offset);
    let p = st.pending.get(i.checked_sub(1)?)?;
    (p.last >= offset).then(|| {
        log.shard.metrics_add(|m| m.cache_hits += 1);
        (p.base, p.last, p.data.clone())
    })
}

/// Damage found in a segment on disk (not a client error).
fn corrupt(msg: String) -> StorageError {
    StorageError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, msg))
}

/// Read batches from disk starting with the one holding `offset`, about `want` bytes,
/// and cache them if `cache` (if the log was truncated meanwhile, nothing is returned).
pub(crate) async fn read_disk(
    log: &PartitionLog,
    offset: i64,
    want: usize,
    cache: bool,
) -> Result<Vec<Batch>, StorageError> {
    let mut from_start = false;
    let epoch = log.inner.st.borrow().truncate_epoch;
    loop {
        let base = {
            let st = log.inner.st.borrow();
            st.segment_for(offset).map(|i| st.segments[i].base)
        };
        if let Some(base) = base {
            crate::segment::load_indexes(&log.inner, base).await;
        }
        let (seg_base, start_off, start_pos, limit) = {
            let mut st = log.inner.st.borrow_mut();
            let Some(i) = st.segment_for(offset) else {
                return Ok(Vec::new());
            };
            let dir = log.inner.dir.clone();
            let seg = &mut st.segments[i];
            if offset >= seg.end_offset {
                return Ok(Vec::new());
            }
            seg.ensure_indexes(&dir);
            let (o, p) = if from_start {
                (seg.base, 0)
            } else {
                seg.index_lookup(offset)
            };
            (seg.base, o, p, seg.flushed)
        };
        if start_pos >= limit {
            return Ok(Vec::new());
        }
        let file = log.shard.segment_file(&log.inner, seg_base, false).await?;
        let interval = log.inner.st.borrow().config.index_interval_bytes as usize;
        let chunk = (want.max(MIN_DISK_READ) + 2 * interval).min(MAX_DISK_READ);
        let mut pos = start_pos;
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
            let size = match &h {
                Some(Ok(h)) => h.total_size(),
                Some(Err(e)) => return Err(corrupt(format!("segment {seg_base} at {pos}: {e}"))),
                None => RECORD_BATCH_OVERHEAD,
            };
            if size as u64 > limit - pos {
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
            if pos == start_pos && start_pos != 0 && h.base_offset != start_off {
                index_bad = true;
                break;
            }
            if h.last_offset() >= offset {
                if found.is_empty() && h.base_offset > offset {
                    index_bad = true;
                    break;
                }
                found.push((pos, h));
                got += size;
                if got >= want {
                    break;
                }
            }
            pos += size as u64;
        }
        if index_bad {
            if from_start {
                return Err(corrupt(format!(
                    "segment {seg_base}: offset {offset} not found"
                )));
            }
            tracing::warn!(dir = %log.inner.dir.display(), seg_base, "offset index does not match the segment; scanning from its start");
            if let Some(s) = log
                .inner
                .st
                .borrow_mut()
                .segments
                .iter_mut()
                .find(|s| s.base == seg_base)
            {
                s.index = Some(Default::default());
            }
            from_start = true;
            continue;
        }
        let Some(&(first_pos, _)) = found.first() else {
            return Ok(Vec::new());
        };
        if log.inner.st.borrow().truncate_epoch != epoch {
            return Ok(Vec::new());
        }
        let lo = (first_pos - buf_start) as usize;
        let hi = lo + got;
        let whole = Bytes::copy_from_slice(&buf[lo..hi]);
        let mut batches = Vec::with_capacity(found.len());
        let mut sh = log.shard.inner.borrow_mut();
        for (p, h) in found {
            let s = (p - first_pos) as usize;
            let b = whole.slice(s..s + h.total_size());
            if cache {
                sh.cache
                    .insert(log.inner.id, h.base_offset, h.last_offset(), b.clone());
            }
            batches.push((h.base_offset, h.last_offset(), b));
        }
        return Ok(batches);
    }
}

pub(crate) async fn offset_for_timestamp(
    log: &PartitionLog,
    ts: i64,
) -> Result<Option<(i64, i64)>, StorageError> {
    let base = log
        .inner
        .st
        .borrow()
        .segments
        .iter()
        .find(|s| s.max_ts_offset >= 0 && s.max_ts >= ts)
        .map(|s| s.base);
    if let Some(base) = base {
        crate::segment::load_indexes(&log.inner, base).await;
    }
    let mut next = {
        let mut st = log.inner.st.borrow_mut();
        st.check_open()?;
        let dir = log.inner.dir.clone();
        let start = st.log_start();
        let Some(seg) = st
            .segments
            .iter_mut()
            .find(|s| s.max_ts_offset >= 0 && s.max_ts >= ts)
        else {
            return Ok(None);
        };
        seg.ensure_indexes(&dir);
        let rel = seg.tindex.as_ref().and_then(|t| t.scan_start(ts));
        let from = rel.map_or(seg.base, |r| seg.base + r as i64 + 1);
        from.max(start)
    };
    loop {
        let end = log.log_end_offset();
        if next >= end {
            return Ok(None);
        }
        let batches = log.read(next, end, 1 << 20, true).await?;
        if batches.is_empty() {
            return Ok(None);
        }
        for b in batches {
            let h = RecordBatchHeader::parse(&b)?;
            if h.max_timestamp >= ts {
                if h.compression() == 0 {
                    if let Ok(recs) = decode_records(&b) {
                        if let Some(r) = recs.iter().find(|r| r.timestamp >= ts) {
                            return Ok(Some((r.offset, r.timestamp)));
                        }
                    }
                }
                return Ok(Some((h.base_offset, h.max_timestamp)));
            }
            next = h.last_offset() + 1;
        }
    }
}

/// Free the in-memory indexes of sealed segments (reloaded lazily on the next read).
pub(crate) fn drop_idle_indexes(log: &LogInner) {
    if let Ok(mut st) = log.st.try_borrow_mut() {
        for s in st
            .segments
            .iter_mut()
            .filter(|s| s.state == SegState::Sealed)
        {
            s.index = None;
            s.tindex = None;
        }
    }
}
