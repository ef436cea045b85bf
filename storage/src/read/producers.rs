//! The async build of a log's idempotent-producer and transaction state
//! (`load_producers`, for `PartitionLog::load_producer_state`): the newest usable
//! snapshot, then a replay of the batch headers after it read by DMA, installed only if
//! the log did not change under the read (else read again holding the log's I/O permit).

use std::rc::Rc;

use sluice_proto::batch::{RecordBatchHeader, RECORD_BATCH_OVERHEAD};

use crate::error::StorageError;
use crate::inner::LogInner;
use crate::producer;
use crate::shard::ShardStorage;

/// Build the producer state with async reads (for `PartitionLog::load_producer_state`),
/// so the shard does not block: the newest usable snapshot (read on the blocking
/// helper), then the batch headers after it by DMA reads (without a snapshot, from the
/// log start). Installs it only if the log did not change in a way the read could have
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
        // keep a snapshot on disk, or a restart would replay the whole log
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
    replay(shard, log, at, ps, locked).await
}

#[cfg(test)]
thread_local! {
    /// Replays `load_producers` made again under the log's I/O permit (tests).
    pub(super) static LOCKED_REPLAYS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Loads that read the files (tests).
    pub(super) static LOADS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
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

/// Plans a rebuild from the snapshot at `at` (state `ps`) or the log's start, reads the
/// planned ranges and installs the state with the pending batches. `locked`: the caller
/// holds the log's I/O permit, so no flush moved the durable offset since the plan; what
/// the files then fail to give (a short or damaged read) is installed anyway with a
/// warning.
async fn replay(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    at: Option<i64>,
    ps: producer::ProducerStates,
    locked: bool,
) -> Result<Replay, StorageError> {
    // the plan may consult the sparse index of the segment it starts in
    // (from the log start, without a snapshot: no index is needed)
    let bases: Vec<i64> = {
        let st = log.state();
        at.and_then(|o| st.segment_for(o))
            .map(|i| st.segments()[i].base)
            .into_iter()
            .collect()
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
        let p = st.plan_producer_rebuild(&log.dir, at);
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
