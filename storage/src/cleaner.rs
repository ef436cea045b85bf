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

use crate::clean_point::CleanPoint;
use crate::cleaner_io::{SegmentBatches, Throttle};
use crate::config::MAX_DECOMPRESSED;
use crate::error::StorageError;
use crate::inner::LogInner;
use crate::offset_map::OffsetMap;
use crate::segment::{with_suffix, write_small_file, SegState, Segment, CLEANED};
use crate::shard::ShardStorage;
use crate::state::LogState;
use crate::swap::{self, SwapStep};
use crate::txn::{AbortedEntry, SegTxn};
use crate::writer::SegmentWriter;
use bytes::Bytes;
use sluice_proto::batch::{
    empty_batch_like, for_each_record, rebuild_batch, records_section, RecordBatchHeader, RecordRef,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

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

/// Old segments (base, end, size) that become one cleaned segment at `base`.
struct Group {
    base: i64,
    end: i64,
    sources: Vec<(i64, i64, u64)>,
}

/// Consecutive segments grouped while their total size stays within `max_bytes` and
/// their offsets within 2^31 of the group's base (Kafka's groupSegmentsBySize).
fn group_segments(segments: &[(i64, i64, u64)], max_bytes: u64) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    let mut size = 0u64;
    for &s in segments {
        match out.last_mut() {
            Some(g) if size + s.2 <= max_bytes && s.1 - g.base <= i32::MAX as i64 => {
                g.end = s.1;
                g.sources.push(s);
                size += s.2;
            }
            _ => {
                out.push(Group {
                    base: s.0,
                    end: s.1,
                    sources: vec![s],
                });
                size = s.2;
            }
        }
    }
    out
}

/// The aborted transactions of a log as a pass sees them (Kafka's
/// CleanedTransactionMetadata, from the segments' `.txnindex` entries).
struct Aborted {
    /// Producer id -> (first offset, marker offset) of each of its aborted transactions.
    ranges: HashMap<i64, Vec<(i64, i64)>>,
    /// Segment base -> its entries, carried into the cleaned segment replacing it.
    by_segment: HashMap<i64, Vec<AbortedEntry>>,
}

impl Aborted {
    /// None if some segment's entries are not in memory.
    fn of(segments: &[Segment]) -> Option<Aborted> {
        let mut a = Aborted {
            ranges: HashMap::new(),
            by_segment: HashMap::new(),
        };
        for s in segments {
            let entries = s.txn.loaded()?;
            for e in entries {
                a.ranges
                    .entry(e.producer_id)
                    .or_default()
                    .push((e.first_offset, e.last_offset));
            }
            a.by_segment.insert(s.base, entries.to_vec());
        }
        Some(a)
    }
    /// Is `h` a data batch of an aborted transaction (its records are dropped)?
    fn aborted(&self, h: &RecordBatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && self.ranges.get(&h.producer_id).is_some_and(|r| {
                r.iter()
                    .any(|&(first, last)| first <= h.base_offset && h.base_offset <= last)
            })
    }
}

/// What becomes of one batch.
enum Kept {
    Whole,
    Rewritten(Vec<u8>),
    Gone,
}

/// One cleaning pass over one log.
struct Pass<'a> {
    shard: &'a Rc<ShardStorage>,
    log: &'a Rc<LogInner>,
    now_ms: i64,
    plan: Cleanable,
    map: OffsetMap,
    /// Offsets from here on are not cleaned in this pass (the map's end).
    bound: i64,
    /// Producer id -> last offset of its last batch in the log.
    last_batches: HashMap<i64, i64>,
    /// The log's aborted transactions.
    txn: Aborted,
    /// The checkpoint as the pass started (tombstones' first-clean times).
    clean: CleanPoint,
    delete_retention_ms: i64,
    segment_bytes: u64,
    interval: u32,
    throttle: Throttle,
    /// Bases of the cleaned segments written so far (removed if the pass gives up).
    created: Vec<i64>,
    /// The log reads the cleaned segments: no way back.
    switched: bool,
    /// When the earliest tombstone this pass kept below its bound may go.
    tombstones_expire: Option<i64>,
    stats: CleanerPass,
}

impl Pass<'_> {
    async fn run(&mut self) -> Result<(), PassError> {
        let res = self.run_steps().await;
        if self.switched {
            return res;
        }
        if let Err(PassError::Failed(_)) = &res {
            if let Some(why) = self.changed() {
                self.abandon().await;
                return Err(PassError::Changed(why));
            }
        }
        if matches!(res, Err(PassError::Changed(_)) | Err(PassError::Failed(_))) {
            self.abandon().await;
        }
        res
    }

    async fn run_steps(&mut self) -> Result<(), PassError> {
        self.bound = self.build_map().await?;
        // (a pass with nothing dirty, for expired tombstones, has first_dirty == end)
        if self.bound <= self.plan.first_dirty && self.plan.first_dirty < self.plan.end {
            return Err(PassError::Failed(StorageError::InvalidRecord(format!(
                "cleaner dedupe buffer too small for the keys of the batch at offset {}",
                self.plan.first_dirty
            ))));
        }
        let bound = self.bound;
        let sources: Vec<(i64, i64, u64)> = self
            .plan
            .segments
            .iter()
            .copied()
            .filter(|s| s.0 < bound)
            .collect();
        let groups = group_segments(&sources, self.segment_bytes);
        let mut written = Vec::with_capacity(groups.len());
        for g in &groups {
            written.push(self.write_group(g).await?);
        }
        self.stats.segments_before = sources.len();
        self.stats.segments_after = written.len();
        self.stats.bytes_before = sources.iter().map(|s| s.2).sum();
        self.stats.bytes_after = written.iter().map(|s| s.size).sum();
        self.swap(&groups, written).await
    }

    /// Why the pass must stop without a trace: the log is not the one it planned on.
    fn changed(&self) -> Option<&'static str> {
        let st = self.log.state();
        if st.check_open().is_err() {
            return Some("the log closed, failed or was deleted");
        }
        if st.truncate_epoch() != self.plan.truncate_epoch {
            return Some("the log was truncated");
        }
        if st.layout_epoch() != self.plan.layout_epoch {
            return Some("the log's segments were swapped");
        }
        let same = st.segments().len() > self.plan.segments.len()
            && st
                .segments()
                .iter()
                .zip(&self.plan.segments)
                .all(|(s, p)| s.base == p.0 && s.end_offset == p.1 && s.size == p.2);
        (!same).then_some("retention removed segments")
    }

    /// Removes the cleaned files written so far (on a blocking helper).
    async fn abandon(&mut self) {
        let bases = std::mem::take(&mut self.created);
        if bases.is_empty() {
            return;
        }
        let dir = self.log.dir.clone();
        let shown = dir.display().to_string();
        if let Err(e) =
            crate::blocking::run(&self.log.dir, move || swap::abandon(&dir, &bases)).await
        {
            tracing::warn!(dir = %shown, error = %e, "removing an abandoned cleaning's files; the next open does");
        }
    }

    /// Maps key -> latest offset over the dirty segments; returns where the map ends:
    /// the plan's end, or where the map filled up (a segment base, or in the first dirty
    /// segment the base of the batch that did not fit).
    async fn build_map(&mut self) -> Result<i64, PassError> {
        let first_dirty = self.plan.first_dirty;
        let dirty: Vec<(i64, i64, u64)> = self
            .plan
            .segments
            .iter()
            .copied()
            .filter(|s| s.1 > first_dirty)
            .collect();
        for (i, &(base, _, size)) in dirty.iter().enumerate() {
            let mut rd = SegmentBatches::open(self.shard, self.log, base, size).await?;
            while let Some(b) = rd
                .next(&mut self.throttle, &mut self.stats.bytes_read)
                .await?
            {
                let h = RecordBatchHeader::parse(&b)?;
                if h.last_offset() < first_dirty
                    || h.is_control()
                    || h.records_count == 0
                    || self.txn.aborted(&h)
                {
                    continue;
                }
                let section = records_section(&b, MAX_DECOMPRESSED)?;
                let mut full = false;
                let map = &mut self.map;
                for_each_record(&h, &section, |r| {
                    if let Some(k) = r.key.filter(|_| r.offset >= first_dirty && !full) {
                        full = !map.put(k, r.offset);
                    }
                    Ok(())
                })?;
                if full {
                    let at = if i == 0 { h.base_offset } else { base };
                    tracing::debug!(dir = %self.log.dir.display(), keys = self.map.len(), at,
                        "cleaner offset map full; cleaning up to there");
                    return Ok(at);
                }
                self.throttle.breathe().await;
            }
        }
        Ok(self.plan.end)
    }

    /// Writes the cleaned segment of `g` as `.cleaned` files.
    async fn write_group(&mut self, g: &Group) -> Result<Segment, PassError> {
        if let Some(why) = self.changed() {
            return Err(PassError::Changed(why));
        }
        // creating it allocates its blocks (at most the sources' size): a disk operation
        self.throttle.disk_turn().await;
        let mut w = SegmentWriter::create_cleaned(
            self.log.dir.clone(),
            g.base,
            self.interval,
            self.shard.opts.cleaner_read_chunk(),
            g.sources.iter().map(|s| s.2).sum(),
        )
        .await?;
        self.created.push(g.base);
        for &(base, _, size) in &g.sources {
            let mut rd = SegmentBatches::open(self.shard, self.log, base, size).await?;
            while let Some(b) = rd
                .next(&mut self.throttle, &mut self.stats.bytes_read)
                .await?
            {
                let kept = self.filter(&b)?;
                self.throttle.breathe().await;
                let out = match kept {
                    Kept::Whole => b,
                    Kept::Rewritten(v) => Bytes::from(v),
                    Kept::Gone => continue,
                };
                if w.writes_on(out.len()) {
                    self.throttle.disk_turn().await;
                }
                w.append(&out).await?;
                self.stats.bytes_written += out.len() as u64;
                self.throttle.io(out.len() as u64).await;
            }
        }
        self.throttle.disk_turn().await;
        let mut seg = w.finish_cleaned(g.end).await?;
        // the aborted transactions of the segments it replaces (their markers are kept)
        let entries: Vec<AbortedEntry> = g
            .sources
            .iter()
            .flat_map(|s| self.txn.by_segment.get(&s.0).cloned().unwrap_or_default())
            .collect();
        let path = with_suffix(&crate::txn::txnindex_path(&self.log.dir, g.base), CLEANED);
        write_small_file(&path, crate::txn::encode_entries(&entries)).await?;
        seg.txn = SegTxn::Loaded(entries);
        seg.txn_file = true;
        Ok(seg)
    }

    /// Whether record `r` (below the pass's end) stays.
    fn keep(&self, r: &RecordRef<'_>) -> bool {
        if r.offset >= self.bound {
            return true;
        }
        let Some(key) = r.key else {
            return false; // Kafka counts a keyless record in a compacted log invalid
        };
        if self.map.get(key).is_some_and(|latest| r.offset < latest) {
            return false;
        }
        r.has_value
            || self
                .clean
                .first_cleaned_at(r.offset)
                .is_none_or(|t| self.now_ms < t.saturating_add(self.delete_retention_ms))
    }

    /// What becomes of batch `b` (see the module comment).
    fn filter(&mut self, b: &[u8]) -> Result<Kept, PassError> {
        let h = RecordBatchHeader::parse(b)?;
        if h.base_offset >= self.bound || h.is_control() {
            return Ok(Kept::Whole);
        }
        let section = records_section(b, MAX_DECOMPRESSED)?;
        let mut kept = Vec::new();
        let (mut n, mut removed, mut max_ts) = (0i32, 0u64, i64::MIN);
        let mut expire: Option<i64> = None;
        let aborted = self.txn.aborted(&h);
        for_each_record(&h, &section, |r| {
            if aborted {
                removed += 1;
                return Ok(());
            }
            if self.keep(&r) {
                if !r.has_value && r.offset < self.bound {
                    // a tombstone kept for delete.retention.ms: when it may go
                    let at = self
                        .clean
                        .first_cleaned_at(r.offset)
                        .unwrap_or(self.now_ms)
                        .saturating_add(self.delete_retention_ms);
                    expire = Some(expire.map_or(at, |e| e.min(at)));
                }
                kept.extend_from_slice(r.raw);
                n += 1;
                max_ts = max_ts.max(r.timestamp);
            } else {
                removed += 1;
            }
            Ok(())
        })?;
        if let Some(at) = expire {
            self.tombstones_expire = Some(self.tombstones_expire.map_or(at, |e| e.min(at)));
        }
        self.stats.records_removed += removed;
        if n == 0 {
            let producers_last = h.producer_id >= 0
                && self.last_batches.get(&h.producer_id) == Some(&h.last_offset());
            return Ok(match (producers_last, h.records_count) {
                (false, _) => Kept::Gone,
                (true, 0) => Kept::Whole,
                (true, _) => Kept::Rewritten(empty_batch_like(b)?),
            });
        }
        if removed == 0 {
            return Ok(Kept::Whole);
        }
        Ok(Kept::Rewritten(rebuild_batch(b, &kept, n, max_ts)?))
    }

    /// Asks the test hook whether to go on at `step` (true without a hook).
    async fn go_on(&self, step: SwapStep) -> bool {
        let hook = self.log.cleaner_hook.borrow().clone();
        match hook {
            Some(h) => h(step, self.bound).await,
            None => true,
        }
    }

    async fn step(&self, step: SwapStep) -> Result<(), PassError> {
        if self.go_on(step).await {
            Ok(())
        } else {
            Err(PassError::Crash(step))
        }
    }

    /// Runs one file step of the swap on a blocking helper; a hook saying no at `half`
    /// makes it do half its operations (of `ops`) and stop there as a crash would.
    async fn files<F>(&self, half: SwapStep, ops: usize, f: F) -> Result<(), PassError>
    where
        F: FnOnce(&std::path::Path, Option<usize>) -> std::io::Result<()> + Send + 'static,
    {
        let limit = (!self.go_on(half).await).then_some(ops / 2);
        let dir = self.log.dir.clone();
        crate::blocking::run(&self.log.dir, move || f(&dir, limit)).await?;
        match limit {
            Some(_) => Err(PassError::Crash(half)),
            None => Ok(()),
        }
    }

    /// Puts the cleaned segments in place of `groups` (see `swap.rs` for the files).
    async fn swap(&mut self, groups: &[Group], new: Vec<Segment>) -> Result<(), PassError> {
        let bases: Vec<i64> = groups.iter().map(|g| g.base).collect();
        self.step(SwapStep::Cleaned).await?;
        let _permit = crate::permit::acquire(&self.log.io, 1)
            .await
            .map_err(StorageError::from)?;
        if let Some(why) = self.changed() {
            return Err(PassError::Changed(why));
        }
        crate::journal_flush::barrier(self.shard, self.log).await?;
        let b = bases.clone();
        self.files(SwapStep::HalfCommitted, 4 * bases.len(), move |d, l| {
            swap::commit(d, &b, l)
        })
        .await?;
        self.step(SwapStep::Committed).await?;
        self.log.clear_marker().await?;
        let old: Vec<(i64, u64)> = groups
            .iter()
            .flat_map(|g| g.sources.iter().map(|s| (s.0, s.2)))
            .collect();
        let end = groups.last().map_or(self.bound, |g| g.end);
        let removed = self.log.state_mut().swap_segments(&old, new)?;
        // switched: the new files are the log's now; a failure from here on fails the log
        // and the next open finishes the swap
        self.created.clear();
        self.switched = true;
        let files = self.shard.forget_replaced(self.log.id, end, &removed);
        let watch: Vec<_> = files.iter().map(std::rc::Rc::downgrade).collect();
        crate::files::close_files(files).await;
        match self.finish_swap(&bases, &removed, watch).await {
            Ok(()) => Ok(()),
            Err(PassError::Failed(e)) => {
                tracing::error!(dir = %self.log.dir.display(), error = %e,
                    "cleaner swap failed on disk; log is now failed (the next open finishes it)");
                self.log.state_mut().fail(&e);
                self.shard.notify_log(self.log);
                Err(PassError::Failed(e))
            }
            Err(other) => Err(other),
        }
    }

    /// Steps 3 and 4 of the swap and the checkpoint, after the switch; the retired files
    /// go to the shard's reaper once they carry their `.deleted` names (`watch`: the
    /// replaced segments' files readers may still hold).
    async fn finish_swap(
        &mut self,
        bases: &[i64],
        removed: &[i64],
        watch: Vec<std::rc::Weak<glommio::io::DmaFile>>,
    ) -> Result<(), PassError> {
        self.step(SwapStep::Switched).await?;
        // the old segments at the new ones' bases too: their files would otherwise go
        // (and their blocks be freed at once) when step 4's renames replace them
        let old = removed.to_vec();
        let n = old.len();
        let retired = swap::retired(&self.log.dir, &old);
        self.files(SwapStep::HalfRemoved, n, move |d, l| {
            swap::retire_replaced(d, &old, l)
        })
        .await?;
        self.shard.reaper.retire(&self.log.dir, retired, watch);
        self.step(SwapStep::Removed).await?;
        let b = bases.to_vec();
        self.files(SwapStep::HalfInstalled, 4 * bases.len(), move |d, l| {
            swap::install(d, &b, l)
        })
        .await?;
        self.log.state_mut().swap_finished();
        self.step(SwapStep::Installed).await?;
        let snap = {
            let mut st = self.log.state_mut();
            st.advance_clean_point(self.bound, self.now_ms, self.tombstones_expire);
            st.clean_point_snapshot()
        };
        self.stats.clean_offset = self.bound;
        if let Some((gen, data)) = snap {
            match crate::clean_point::write(self.log.dir.clone(), data).await {
                Ok(()) => self.log.state_mut().clean_point_persisted(gen),
                // the file keeps the older point: the next pass cleans that range again
                Err(e) => tracing::warn!(dir = %self.log.dir.display(), error = %e,
                    "cannot write the cleaner checkpoint"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::group_segments;

    #[test]
    fn segments_are_grouped_up_to_the_size_limit_and_the_offset_range() {
        let segs = [
            (0, 10, 400),
            (10, 20, 500),
            (20, 30, 200),
            (30, 40, 900),
            (40, (1 << 31) + 29, 1),
            ((1 << 31) + 29, (1 << 31) + 30, 1),
        ];
        let g: Vec<(i64, i64, usize)> = group_segments(&segs, 1000)
            .iter()
            .map(|g| (g.base, g.end, g.sources.len()))
            .collect();
        assert_eq!(
            g,
            vec![
                (0, 20, 2),
                (20, 30, 1),
                (30, (1 << 31) + 29, 2),
                ((1 << 31) + 29, (1 << 31) + 30, 1)
            ]
        );
    }
}

#[cfg(test)]
mod swap_tests {
    use crate::swap::{CleanerHook, SwapStep};
    use crate::{CleanupPolicy, LogConfig, PartitionLog};
    use sluice_proto::batch::{build_batch, RecordBatchHeader, SimpleRecord};
    use std::rc::Rc;

    fn tempdir() -> tempfile::TempDir {
        crate::test_dir()
    }

    /// A read that looked its segment up before the switch (its layout epoch is the old
    /// one) must not return or cache what it finds at the old position: the file under
    /// that name is, or soon is, the cleaned one. The retrying read gets the new batch.
    #[test]
    fn a_read_that_looked_up_a_segment_before_the_switch_starts_again() {
        let dir = tempdir();
        let path = dir.path().join("t-0");
        crate::on_test_shard(move |shard| async move {
            let cfg = LogConfig {
                segment_bytes: 1024,
                cleanup_policy: CleanupPolicy::parse("compact").unwrap(), // ok: test
                ..Default::default()
            };
            let log = PartitionLog::open(&shard, path, cfg).await.unwrap(); // ok: test
            for i in 0..200i64 {
                let k = format!("k{}", i % 7).into_bytes();
                let r = [SimpleRecord {
                    key: Some(&k),
                    value: Some(b"some value"),
                    timestamp: i,
                    headers: &[],
                }];
                log.append(build_batch(0, &r), 1).unwrap(); // ok: test
            }
            log.wait_durable(199).await.unwrap(); // ok: test
            let old = log.inner.state().layout_epoch();
            let (s, l) = (log.shard.clone(), log.inner.clone());
            let hook: CleanerHook = Rc::new(move |step, _| {
                let (s, l) = (s.clone(), l.clone());
                Box::pin(async move {
                    if step == SwapStep::Switched || step == SwapStep::Installed {
                        for o in [0, 50, 100] {
                            let stale = crate::read::read_disk_in(&s, &l, o, 1 << 16, true, old)
                                .await
                                .unwrap_or_default();
                            assert!(stale.is_empty(), "{step:?}: a stale read at {o}");
                            let fresh = crate::read::read_disk(&s, &l, o, 1, false).await.unwrap(); // ok: test
                            let h = RecordBatchHeader::parse(&fresh[0].2).unwrap(); // ok: test
                                                                                    // offset 0 was superseded: the new log has a later batch
                            assert!(h.last_offset() >= o && h.base_offset > 0, "{step:?}: {h:?}");
                        }
                        assert!(s.inner.borrow().cache.get(l.id, 0).is_none());
                    }
                    true
                })
            });
            log.set_cleaner_hook(Some(hook));
            log.compact(10_000).await.unwrap().unwrap(); // ok: test
            shard.shutdown().await.unwrap(); // ok: test
        });
    }
}
