//! The log cleaner (Kafka log compaction) for logs whose `cleanup.policy` includes
//! `compact`: keeps the latest record of every key, at its original offset, and drops the
//! older ones. One pass per call, run by the shard's background task (`tasks.rs`) or on
//! demand (`PartitionLog::compact`); one pass at a time per shard
//! (`ShardStorage::cleaner_pass`: one dedupe buffer, never two passes over a log).
//!
//! ```text
//!  choose: dirtiest compacted log (bytes after the clean point / cleanable bytes >=
//!          min.cleanable.dirty.ratio, or its oldest dirty batch past max.compaction.lag.ms)
//!  range:  log start .. first uncleanable offset = min(active segment base, clean limit,
//!          first segment with a record newer than now - min.compaction.lag.ms), rounded
//!          down to a segment boundary; only sealed segments
//!  map:    key -> latest offset over [clean point, end) (offset_map.rs, bounded memory;
//!          full: stop at a segment boundary, or inside the first dirty segment)
//!  write:  segments of [log start, map end) grouped up to segment.bytes, each rewritten
//!          as <base>.log.cleaned through SegmentWriter (direct I/O, throttled)
//!  swap:   under the log's I/O permit: commit (.cleaned -> .swap), switch LogState,
//!          remove the old files, rename .swap -> final (swap.rs), then the checkpoint
//! ```
//!
//! A record below the pass's end survives if it has a key, no later offset for that key is
//! in the map, and it has a value or is a tombstone still within `delete.retention.ms` of
//! the pass that first cleaned it (`clean_point.rs`); a record without a key is dropped
//! (Kafka counts it invalid); batches at or past the end (a map that filled inside a
//! segment) are copied untouched. A batch keeps its base offset, lastOffsetDelta and
//! header fields (its max timestamp follows the records kept); one that lost records is
//! rebuilt in its codec (`sluice_proto::batch::rebuild_batch`), one that lost none is
//! copied byte for byte, one that lost all disappears (an offset gap) unless it is its
//! producer's last batch in the log (by the producer state): then an empty batch keeps the
//! producer's epoch and last sequence for the producer-state rebuild (Kafka's
//! RETAIN_EMPTY). Records keep their offsets, timestamps, keys, values and headers.
//!
//! Transactions (Kafka's CleanedTransactionMetadata): the cleanable range ends at the
//! first unstable offset (a transaction under way or not yet stable is never cleaned);
//! the data batches of aborted transactions (by the segments' `.txnindex` entries:
//! producer, first offset .. marker) are dropped while building the map (their keys do
//! not shadow older committed records) and when copying (emptied like any other batch,
//! so a producer's last batch stays as an empty one). Control batches (commit and abort
//! markers) are copied as they are: unlike Kafka, a marker is never removed once its
//! transaction's records are gone (not yet: it costs one small batch per transaction),
//! and each cleaned segment carries the `.txnindex` entries of the segments it replaces
//! (written as `.txnindex.cleaned`, renamed by the swap with the other files).
//!
//! Readers during a swap: `LogState::swap_segments` replaces the segments in one step and
//! bumps the layout epoch; a disk read or producer-state load that looked a segment up
//! before it starts again (`read.rs`), the shard forgets the cache entries, read-ahead
//! windows and open files of the replaced segments, and a read already holding a replaced
//! file keeps reading it (the file stays open through its `Rc` until the read ends, even
//! once unlinked). Until their rename the new files are found under `.swap` names
//! (`ShardStorage::segment_file`). Owned by one shard; never crosses cores.

use crate::cleaner_io::Throttle;
use crate::error::StorageError;
use crate::inner::LogInner;
use crate::offset_map::OffsetMap;
use crate::segment::SegState;
use crate::shard::ShardStorage;
use crate::state::LogState;
use crate::swap::SwapStep;
use sluice_proto::batch::RecordBatchHeader;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

mod pass;
use pass::{Aborted, Pass};

/// What one cleaning pass did (`PartitionLog::compact`, `ShardStorage::run_cleaner`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanerPass {
    /// The log's directory.
    pub dir: PathBuf,
    /// The clean point before the pass: the records from here on were mapped.
    pub first_dirty: i64,
    /// The clean point after the pass: every offset below it is clean.
    pub clean_offset: i64,
    pub segments_before: usize,
    pub segments_after: usize,
    /// Sizes of the segments replaced, and of the cleaned ones that replaced them.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Bytes the pass read (mapping and copying) and wrote.
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    pub micros: u64,
}

/// What the cleaner may clean in a log now (`cleanable`).
#[derive(Clone, Debug)]
struct Cleanable {
    first_dirty: i64,
    /// The first offset not to clean (a segment base).
    end: i64,
    /// (base, end, size) of the segments from the log start to `end`.
    segments: Vec<(i64, i64, u64)>,
    dirty_bytes: u64,
    total_bytes: u64,
    truncate_epoch: u64,
    layout_epoch: u64,
}

impl Cleanable {
    fn ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        self.dirty_bytes as f64 / self.total_bytes as f64
    }
}

/// The cleanable range of a compacted log: sealed segments from the log start up to the
/// first uncleanable offset; None if there is nothing dirty in it (or the log is not
/// compacted, closed, failed or given up on).
fn cleanable(st: &LogState, now_ms: i64) -> Option<Cleanable> {
    let cfg = st.config();
    if !cfg.cleanup_policy.compact || st.is_uncleanable() || st.check_open().is_err() {
        return None;
    }
    let segs = st.segments();
    let first_dirty = st.clean_point().offset(st.log_start());
    // never past a transaction that is not stable (known once the producer state is
    // built: `clean_log` builds it before it plans for real)
    let limit = match st.first_unstable_if_loaded() {
        Some(Some(fu)) => st.clean_limit().min(fu),
        _ => st.clean_limit(),
    };
    let lag_ts = now_ms.saturating_sub(cfg.min_compaction_lag_ms);
    let mut out = Vec::new();
    // never the active (last) segment
    for s in &segs[..segs.len().saturating_sub(1)] {
        if s.state != SegState::Sealed || s.in_swap || s.end_offset > limit {
            break;
        }
        // min.compaction.lag.ms: a dirty segment holding a newer record waits
        if s.end_offset > first_dirty && s.max_ts_offset >= 0 && s.max_ts > lag_ts {
            break;
        }
        out.push((s.base, s.end_offset, s.size));
    }
    let end = out.last()?.1;
    // nothing dirty: a pass only to drop tombstones whose time has come (KIP-534)
    if first_dirty >= end && !st.tombstones_due(now_ms) {
        return None;
    }
    Some(Cleanable {
        first_dirty,
        end,
        dirty_bytes: out.iter().filter(|s| s.1 > first_dirty).map(|s| s.2).sum(),
        total_bytes: out.iter().map(|s| s.2).sum(),
        segments: out,
        truncate_epoch: st.truncate_epoch(),
        layout_epoch: st.layout_epoch(),
    })
}

/// Whether the oldest dirty batch of `log` is older than `max.compaction.lag.ms` (Kafka
/// takes the first batch's max timestamp).
async fn overdue(shard: &Rc<ShardStorage>, log: &Rc<LogInner>, c: &Cleanable, now_ms: i64) -> bool {
    let max_lag = log.state().config().max_compaction_lag_ms;
    if max_lag == i64::MAX {
        return false;
    }
    match crate::read::read_disk(shard, log, c.first_dirty, 1, false).await {
        Ok(b) => b.first().is_some_and(|(_, _, data)| {
            RecordBatchHeader::parse(data)
                .is_ok_and(|h| h.max_timestamp < now_ms.saturating_sub(max_lag))
        }),
        Err(_) => false,
    }
}

/// One step of the shard's cleaner: a pass over the dirtiest compacted log that needs one
/// (ratio or max lag); None if none does.
pub(crate) async fn clean_dirtiest(
    shard: &Rc<ShardStorage>,
    now_ms: i64,
) -> Result<Option<CleanerPass>, StorageError> {
    let logs: Vec<Rc<LogInner>> = shard.inner.borrow().logs.values().cloned().collect();
    let mut best: Option<(f64, Rc<LogInner>)> = None;
    for l in logs {
        let found = {
            let st = l.state();
            cleanable(&st, now_ms).map(|c| (c, st.config().min_cleanable_dirty_ratio))
        };
        let Some((c, min_ratio)) = found else {
            continue;
        };
        let ratio = c.ratio();
        let due = (ratio >= min_ratio && c.dirty_bytes > 0)
            || l.state().tombstones_due(now_ms)
            || overdue(shard, &l, &c, now_ms).await;
        if due && best.as_ref().is_none_or(|b| ratio > b.0) {
            best = Some((ratio, l));
        }
        glommio::yield_if_needed().await;
    }
    match best {
        Some((_, l)) => clean_log(shard, &l, now_ms).await,
        None => Ok(None),
    }
}

/// One pass over `log` now, whatever its dirty ratio; None if there is nothing to clean
/// (or the log changed under the pass, which then left no trace).
pub(crate) async fn clean_log(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    now_ms: i64,
) -> Result<Option<CleanerPass>, StorageError> {
    let _one_pass = crate::permit::acquire(&shard.cleaner_pass, 1).await?;
    let started = Instant::now();
    if cleanable(&log.state(), now_ms).is_none() {
        return Ok(None);
    }
    // which batch is each producer's last (kept, emptied if need be), and where the
    // first unstable transaction starts (the pass stays below it)
    crate::read::load_producers(shard, log).await?;
    // the aborted transactions, to drop their records
    let bases: Vec<i64> = log.state().segments().iter().map(|s| s.base).collect();
    for b in bases {
        log.load_txn(b).await?;
    }
    let (plan, last_batches, clean, cfg, txn) = {
        let st = log.state();
        let Some(plan) = cleanable(&st, now_ms) else {
            return Ok(None);
        };
        let Some(ps) = st.producers() else {
            tracing::debug!(dir = %log.dir.display(), "producer state not built; cleaning later");
            return Ok(None);
        };
        let Some(txn) = Aborted::of(st.segments()) else {
            tracing::debug!(dir = %log.dir.display(), "aborted transactions not loaded; cleaning later");
            return Ok(None);
        };
        (
            plan,
            ps.last_offsets(),
            st.clean_point().clone(),
            st.config().clone(),
            txn,
        )
    };
    let mut pass = Pass {
        shard,
        log,
        now_ms,
        stats: CleanerPass {
            dir: log.dir.clone(),
            first_dirty: plan.first_dirty,
            ..Default::default()
        },
        plan,
        map: OffsetMap::with_memory(shard.opts.cleaner_dedupe_buffer_bytes),
        bound: 0,
        last_batches,
        txn,
        clean,
        delete_retention_ms: cfg.delete_retention_ms,
        segment_bytes: cfg.segment_bytes,
        interval: cfg.index_interval_bytes,
        throttle: Throttle::new(shard, shard.opts.cleaner_io_bytes_per_sec),
        created: Vec::new(),
        switched: false,
        tombstones_expire: None,
    };
    let res = pass.run().await;
    let mut stats = pass.stats;
    match res {
        Ok(()) => {
            stats.micros = started.elapsed().as_micros() as u64;
            shard.metrics_add(|m| {
                m.cleaner_passes += 1;
                m.cleaner_bytes_read += stats.bytes_read;
                m.cleaner_bytes_written += stats.bytes_written;
                m.cleaner_bytes_reclaimed += stats.bytes_before.saturating_sub(stats.bytes_after);
                m.cleaner_records_removed += stats.records_removed;
                m.cleaner_last_pass_micros = stats.micros;
            });
            tracing::info!(dir = %log.dir.display(), first_dirty = stats.first_dirty,
                clean_offset = stats.clean_offset, segments_before = stats.segments_before,
                segments_after = stats.segments_after, bytes_before = stats.bytes_before,
                bytes_after = stats.bytes_after, records_removed = stats.records_removed,
                micros = stats.micros, "log cleaned");
            Ok(Some(stats))
        }
        Err(PassError::Changed(why)) => {
            tracing::debug!(dir = %log.dir.display(), why, "cleaning pass dropped: the log changed");
            Ok(None)
        }
        Err(PassError::Crash(step)) => Err(StorageError::Io(std::io::Error::other(format!(
            "cleaning pass stopped by its hook at {step:?}"
        )))),
        Err(PassError::Failed(e)) => {
            tracing::warn!(dir = %log.dir.display(), error = %e,
                "log cleaning failed; the cleaner leaves this log alone until it is reopened");
            log.state_mut().mark_uncleanable();
            Err(e)
        }
    }
}

/// Why a pass ended early.
enum PassError {
    /// The log changed under the pass (truncated, retention, closed): nothing was done.
    Changed(&'static str),
    /// A test's hook stopped the pass as a crash would.
    Crash(SwapStep),
    Failed(StorageError),
}

impl From<StorageError> for PassError {
    fn from(e: StorageError) -> Self {
        PassError::Failed(e)
    }
}

impl From<std::io::Error> for PassError {
    fn from(e: std::io::Error) -> Self {
        PassError::Failed(e.into())
    }
}

impl From<sluice_proto::batch::BatchError> for PassError {
    fn from(e: sluice_proto::batch::BatchError) -> Self {
        PassError::Failed(e.into())
    }
}

#[cfg(test)]
mod swap_tests;
