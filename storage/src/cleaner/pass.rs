//! One cleaning pass over one log (`Pass`, started by `clean_log`): segments grouped
//! into cleaned ones, each batch kept whole, rewritten without its superseded records, or
//! dropped, written with direct I/O and swapped in crash-safely; the log's aborted
//! transactions decide which transactional records and markers may go.

use super::{Cleanable, CleanerPass, PassError};
use crate::clean_point::CleanPoint;
use crate::cleaner_io::{SegmentBatches, Throttle};
use crate::config::MAX_DECOMPRESSED;
use crate::error::StorageError;
use crate::inner::LogInner;
use crate::offset_map::OffsetMap;
use crate::segment::{with_suffix, write_small_file, Segment, CLEANED};
use crate::shard::ShardStorage;
use crate::swap::{self, SwapStep};
use crate::txn::{AbortedEntry, SegTxn};
use crate::writer::SegmentWriter;
use bytes::Bytes;
use sluice_proto::batch::{
    empty_batch_like, for_each_record, rebuild_batch, records_section, RecordBatchHeader, RecordRef,
};
use std::collections::HashMap;
use std::rc::Rc;

/// Old segments (base, end, size) that become one cleaned segment at `base`.
pub(super) struct Group {
    base: i64,
    end: i64,
    sources: Vec<(i64, i64, u64)>,
}

/// Consecutive segments grouped while their total size stays within `max_bytes` and
/// their offsets within 2^31 of the group's base (Kafka's groupSegmentsBySize).
pub(super) fn group_segments(segments: &[(i64, i64, u64)], max_bytes: u64) -> Vec<Group> {
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
pub(super) struct Aborted {
    /// Producer id -> (first offset, marker offset) of each of its aborted transactions.
    ranges: HashMap<i64, Vec<(i64, i64)>>,
    /// Segment base -> its entries, carried into the cleaned segment replacing it.
    by_segment: HashMap<i64, Vec<AbortedEntry>>,
}

impl Aborted {
    /// None if some segment's entries are not in memory.
    pub(super) fn of(segments: &[Segment]) -> Option<Aborted> {
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
pub(super) enum Kept {
    Whole,
    Rewritten(Vec<u8>),
    Gone,
}

/// One cleaning pass over one log.
pub(super) struct Pass<'a> {
    pub(super) shard: &'a Rc<ShardStorage>,
    pub(super) log: &'a Rc<LogInner>,
    pub(super) now_ms: i64,
    pub(super) plan: Cleanable,
    pub(super) map: OffsetMap,
    /// Offsets from here on are not cleaned in this pass (the map's end).
    pub(super) bound: i64,
    /// Producer id -> last offset of its last batch in the log.
    pub(super) last_batches: HashMap<i64, i64>,
    /// The log's aborted transactions.
    pub(super) txn: Aborted,
    /// The checkpoint as the pass started (tombstones' first-clean times).
    pub(super) clean: CleanPoint,
    pub(super) delete_retention_ms: i64,
    pub(super) segment_bytes: u64,
    pub(super) interval: u32,
    pub(super) throttle: Throttle,
    /// Bases of the cleaned segments written so far (removed if the pass gives up).
    pub(super) created: Vec<i64>,
    /// The log reads the cleaned segments: no way back.
    pub(super) switched: bool,
    /// When the earliest tombstone this pass kept below its bound may go.
    pub(super) tombstones_expire: Option<i64>,
    pub(super) stats: CleanerPass,
}

impl Pass<'_> {
    pub(super) async fn run(&mut self) -> Result<(), PassError> {
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
mod tests;
