//! Cutting a suffix off the log (`PartitionLog::truncate_from`): a follower dropping what
//! diverges from its leader (KIP-101), and open finishing a cut that a crash interrupted.
//! Runs under the log's I/O permit (never alongside the flusher or retention), so the
//! files hold exactly `[log start, durable)` and the pending queue `[durable, log end)`.
//! Every batch whose last offset is >= the cut offset goes; the new log end is the end of
//! the last batch kept in the segment holding the offset (that segment's base if none is
//! kept), so with gaps (a compacted log) it may lie below the offset, never above it.
//!
//! ```text
//!  locate the cut (appends refused): the first batch reaching `offset`, found by a scan
//!      from the sparse-index entry before it (disk) and then the pending queue (memory)
//!  intent: `.truncate-intent` = cut, durable           ── only if data on disk must go
//!  memory: LogState::cut (segments, pending, log end, durable, epochs, producers, the
//!      cut segment's aborted transactions), cache, read-ahead (appends resume at the
//!      cut; `wait_durable` for cut offsets fails)
//!  files: producer-state snapshots past the cut deleted, later segments deleted (newest
//!      first, with their `.txnindex`), the cut segment shortened + fdatasync, its
//!      indexes rewritten, directory fsync, epoch and cleaner checkpoints, intent
//!      removed (the cut segment's `.txnindex` is rewritten by the next flush, before
//!      any batch past the cut reaches the disk)
//! ```
//!
//! A crash before the intent is durable leaves the old files (recovery gives the old
//! log); after it, recovery gives some prefix of the old log at least as long as the cut
//! and `finish_intent` completes the cut at open: never an end in between. An I/O error
//! after the in-memory cut marks the log failed (memory and files would disagree); the
//! intent completes the cut at the next open.

use crate::epoch;
use crate::error::corrupt;
use crate::error::StorageError;
use crate::index::{OffsetIndex, TimeIndex};
use crate::inner::LogInner;
use crate::scan::{scan, ScanOpts};
use crate::segment::{
    log_path, open_segment_file, remove_segments, write_indexes, SegState, Segment,
};
use crate::shard::ShardStorage;
use sluice_proto::batch::RecordBatchHeader;
use std::rc::Rc;

pub(crate) async fn truncate(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    offset: i64,
) -> Result<i64, StorageError> {
    let noop = {
        let st = log.state();
        st.check_open()?;
        if offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: st.log_start(),
                log_end: st.log_end(),
            });
        }
        (offset >= st.log_end()).then_some(st.log_end())
    };
    let end = match noop {
        Some(end) => end,
        None => {
            // a task of its own: a caller that stops waiting cannot leave the cut half done
            let (s, l) = (shard.clone(), log.clone());
            glommio::spawn_local(async move {
                let _permit = crate::permit::acquire(&l.io, 1).await?;
                crate::journal_flush::barrier(&s, &l).await?;
                truncate_under_permit(&s, &l, offset).await
            })
            .detach()
            .await
            .ok_or_else(|| {
                StorageError::Io(std::io::Error::other("truncation task was cancelled"))
            })??
        }
    };
    // batches below the cut may still be pending: answer once they are durable
    if end > log.state().log_start() {
        let since = log.state().truncate_epoch();
        log.wait_durable(end - 1, since).await?;
    }
    Ok(end)
}

/// Empties the log and restarts it at `at`, wherever `at` lies (Kafka's
/// `truncateFullyAndStartAt`): a follower whose log ends before its leader's log start
/// (retention or a new, empty replica) can then copy from the leader's first offset.
/// Crash-safe like a cut: a crash before every old segment is gone leaves a prefix of the
/// old log (the follower resets again), after it the empty log at `at`.
pub(crate) async fn reset(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    at: i64,
) -> Result<i64, StorageError> {
    if at < 0 {
        let st = log.state();
        return Err(StorageError::OffsetOutOfRange {
            offset: at,
            log_start: st.log_start(),
            log_end: st.log_end(),
        });
    }
    let (s, l) = (shard.clone(), log.clone());
    glommio::spawn_local(async move {
        let _permit = crate::permit::acquire(&l.io, 1).await?;
        crate::journal_flush::barrier(&s, &l).await?;
        let guard = Truncating::start(&l);
        l.state().check_open()?;
        l.clear_marker().await?;
        restart_at(&s, &l, at, guard).await
    })
    .detach()
    .await
    .ok_or_else(|| StorageError::Io(std::io::Error::other("reset task was cancelled")))?
}

/// Marks the log as being truncated (appends refused) until dropped.
struct Truncating<'a>(&'a LogInner);

impl<'a> Truncating<'a> {
    fn start(log: &'a LogInner) -> Self {
        log.state_mut().set_truncating(true);
        Truncating(log)
    }
}

impl Drop for Truncating<'_> {
    fn drop(&mut self) {
        if let Some(mut st) = self.0.try_state_mut() {
            st.set_truncating(false);
        }
    }
}

/// The truncation itself; the caller holds the log's I/O permit. Returns the new end.
pub(crate) async fn truncate_under_permit(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    offset: i64,
) -> Result<i64, StorageError> {
    let guard = Truncating::start(log);
    let (start, end, seg_base) = {
        let st = log.state();
        st.check_open()?;
        let seg = st.segment_for(offset).map(|i| st.segments()[i].base);
        (st.log_start(), st.log_end(), seg)
    };
    if offset >= end {
        return Ok(end);
    }
    log.clear_marker().await?;
    if offset <= start {
        return restart_at(shard, log, offset, guard).await;
    }
    let seg_base = seg_base.ok_or_else(|| corrupt(format!("no segment holds offset {offset}")))?;
    // the cut segment's aborted transactions are cut in memory (`LogState::cut`)
    log.load_txn(seg_base).await?;
    let rw = rewind(shard, log, seg_base, offset).await?;
    let cut = rw.end_offset;
    let dir = log.dir.clone();
    // what the files must lose: the tail of the cut segment, and later segments
    let (shorten, later, ahead) = {
        let st = log.state();
        let old = st
            .segment(seg_base)
            .ok_or_else(|| corrupt(format!("segment {seg_base} vanished")))?;
        let later: Vec<(i64, bool)> = st
            .segments()
            .iter()
            .filter(|s| s.base > seg_base)
            .map(|s| (s.base, s.file_exists))
            .collect();
        // `.txnindex` files written ahead for segments whose log file never came to be
        let ahead: Vec<i64> = st
            .segments()
            .iter()
            .filter(|s| s.base > seg_base && s.txn_file && !s.file_exists)
            .map(|s| s.base)
            .collect();
        (rw.size < old.flushed, later, ahead)
    };
    let on_disk = shorten || later.iter().any(|l| l.1);
    if on_disk {
        epoch::write_intent(dir.clone(), cut).await?;
    }
    let size = rw.size;
    let exists = rw.file_exists;
    let (idx, tidx) = rw.encode_indexes();
    let cut_done = log.state_mut().cut(seg_base, rw);
    if let Err(e) = cut_done {
        if on_disk {
            let _ = epoch::remove_intent(dir).await; // ok: best effort, `e` is the answer
        }
        return Err(e);
    }
    drop(guard);
    // snapshots past the cut describe batches that are gone
    let stale_snapshots = log.state_mut().take_snapshots_after(cut);
    let later: Vec<i64> = later.into_iter().map(|l| l.0).collect();
    crate::files::close_files(shard.forget_from(log.id, cut, &later)).await;
    shard.notify_log(log);
    tracing::debug!(dir = %dir.display(), offset, cut, on_disk, "log truncated");
    if !on_disk {
        // the file steps below end with `finish_files`, which saves a lowered start too
        if let Err(e) = save_start_floor(log).await {
            fail(shard, log, &e);
            return Err(e);
        }
    }
    let nothing_to_remove = stale_snapshots.is_empty() && ahead.is_empty();
    if !on_disk && !nothing_to_remove {
        let removed = async {
            crate::snapshot::remove(&dir, stale_snapshots.clone()).await?;
            for b in ahead {
                crate::blocking::remove_file(crate::txn::txnindex_path(&dir, b)).await?;
            }
            std::io::Result::Ok(())
        };
        if let Err(e) = removed.await {
            let e = StorageError::from(e);
            fail(shard, log, &e);
            return Err(e);
        }
    }
    if on_disk {
        let res = async {
            crate::snapshot::remove(&dir, stale_snapshots).await?;
            remove_segments(&dir, later.iter().rev().copied().collect()).await?;
            if exists {
                let file = shard.segment_file(log, seg_base, false).await?;
                file.truncate(size).await?;
                file.fdatasync().await?;
                // the old indexes may point past the cut (recovery resumes from them)
                write_indexes(&dir, seg_base, idx, tidx).await?;
            }
            log.sync_dir().await?;
            finish_files(log).await
        }
        .await;
        if let Err(e) = res {
            fail(shard, log, &e);
            return Err(e);
        }
    }
    Ok(cut)
}

/// Empty the log and restart it at `at` (everything is cut: `at` <= log start).
async fn restart_at(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    at: i64,
    guard: Truncating<'_>,
) -> Result<i64, StorageError> {
    let dir = log.dir.clone();
    epoch::write_intent(dir.clone(), at).await?;
    let abort = log.state().gone();
    if let Some(e) = abort {
        let _ = epoch::remove_intent(dir).await; // ok: best effort, `e` is the answer
        return Err(e);
    }
    let bases = log.state_mut().restart_at(at);
    let snapshots = log.state_mut().take_snapshots_after(i64::MIN);
    drop(guard);
    crate::files::close_files(shard.forget_from(log.id, i64::MIN, &bases)).await;
    shard.notify_log(log);
    let res = async {
        crate::snapshot::remove(&dir, snapshots).await?;
        remove_segments(&dir, bases.iter().rev().copied().collect()).await?;
        let f = open_segment_file(&log_path(&dir, at), true).await?;
        f.close().await?;
        log.sync_dir().await?;
        log.state_mut().set_file_exists(at);
        finish_files(log).await
    }
    .await;
    if let Err(e) = res {
        fail(shard, log, &e);
        return Err(e);
    }
    tracing::debug!(dir = %dir.display(), at, "log emptied by truncation");
    Ok(at)
}

/// Last steps on disk: the epoch checkpoint without the cut entries, the cleaner
/// checkpoint no further than the cut (what is appended there next is not clean) and the
/// log start no further than a restart's offset, then the intent goes.
async fn finish_files(log: &LogInner) -> Result<(), StorageError> {
    let snap = log.state().epochs_snapshot();
    if let Some((gen, entries)) = snap {
        epoch::write_checkpoint(log.dir.clone(), entries).await?;
        log.state_mut().epochs_persisted(gen);
    }
    let clean = log.state().clean_point_snapshot();
    if let Some((gen, data)) = clean {
        crate::clean_point::write(log.dir.clone(), data).await?;
        log.state_mut().clean_point_persisted(gen);
    }
    save_start_floor(log).await?;
    epoch::remove_intent(log.dir.clone()).await?;
    Ok(())
}

/// Saves the log start if a cut or restart lowered it (`log_start.rs`).
async fn save_start_floor(log: &LogInner) -> Result<(), StorageError> {
    let start = log.state().start_floor_snapshot();
    if let Some(start) = start {
        crate::log_start::write(log.dir.clone(), start).await?;
        log.state_mut().start_floor_persisted();
    }
    Ok(())
}

/// Memory and files disagree after a failed file step: fail the log like a failed flush.
fn fail(shard: &ShardStorage, log: &LogInner, e: &StorageError) {
    tracing::error!(dir = %log.dir.display(), error = %e, "truncation failed on disk; log is now failed");
    log.state_mut().fail(e);
    shard.notify_log(log);
}

/// The segment `seg_base` cut right before the first batch whose last offset reaches
/// `offset` (its `end_offset` is the cut: the end of the last batch kept, or the
/// segment's base). Its durable bytes are scanned from the last sparse-index entry at or
/// before `offset` (from the start if that entry does not lead there), then its pending
/// batches follow. If no batch of the segment reaches `offset` (the offset is in a gap
/// at its end), the whole segment stays. The cut does not depend on where a scan
/// started: one that stops right at its index entry tries an earlier entry, since the
/// batch before the entry may end before it (a gap).
async fn rewind(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    seg_base: i64,
    offset: i64,
) -> Result<Segment, StorageError> {
    log.load_indexes(seg_base).await;
    let (flushed, created_ms, file_exists, interval) = {
        let mut st = log.state_mut();
        st.ensure_indexes(seg_base, &log.dir); // loaded just above: reads nothing
        let interval = st.config().index_interval_bytes;
        let seg = st
            .segment(seg_base)
            .ok_or_else(|| corrupt(format!("segment {seg_base} vanished")))?;
        (seg.flushed, seg.created_ms, seg.file_exists, interval)
    };
    let c = CutSearch {
        seg_base,
        offset,
        flushed,
        file_exists,
        interval,
        created_ms,
    };
    let mut skip = 0usize;
    let mut seg = loop {
        let start = {
            let st = log.state();
            let seg = st
                .segment(seg_base)
                .ok_or_else(|| corrupt(format!("segment {seg_base} vanished")))?;
            resume_point(seg, offset, skip)
        };
        let from = start.size;
        match cut_from(shard, log, &c, start).await? {
            Some(seg) if seg.size > from || from == 0 => break seg,
            Some(_) => skip += 1, // cut right at the entry
            None => {
                tracing::warn!(dir = %log.dir.display(), seg_base, from, "offset index does not lead to the truncation point; scanning the segment from its start");
                skip = usize::MAX;
            }
        }
    };
    seg.flushed = flushed.min(seg.size);
    seg.state = SegState::Active;
    seg.file_exists = file_exists;
    seg.created_ms = if seg.size > 0 { created_ms } else { -1 };
    Ok(seg)
}

/// What `rewind` looks for, in which segment.
struct CutSearch {
    seg_base: i64,
    offset: i64,
    flushed: u64,
    file_exists: bool,
    interval: u32,
    created_ms: i64,
}

/// One attempt of `rewind` from `start` (a prefix of the segment): the durable bytes
/// after it, then the pending batches. None if the scan from an index entry found
/// something else than valid batches up to the cut.
async fn cut_from(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    c: &CutSearch,
    start: Segment,
) -> Result<Option<Segment>, StorageError> {
    let (seg_base, offset, flushed) = (c.seg_base, c.offset, c.flushed);
    let (mut seg, reached) = if flushed <= start.size || !c.file_exists {
        (start, false)
    } else {
        let from = start.size;
        let opts = ScanOpts {
            interval: c.interval,
            validate: false,
            stop: Some(offset),
            limit: None,
        };
        let file = shard.segment_file(log, seg_base, false).await?;
        let r = scan(&file, start, flushed, opts).await?;
        if !(r.reached_stop || (r.seg.size == flushed && r.stopped.is_none())) {
            if from == 0 {
                return Err(corrupt(format!(
                    "segment {seg_base}: offset {offset} not found ({})",
                    r.stopped.unwrap_or_default()
                )));
            }
            return Ok(None);
        }
        (r.seg.scanned(), r.reached_stop)
    };
    if !reached {
        // the first batch reaching `offset` is not on disk yet: continue through the
        // pending ones (if none reaches it either, `offset` is in a gap after them)
        let st = log.state();
        let first = seg.end_offset;
        for p in st
            .pending()
            .iter()
            .filter(|p| p.seg_base == seg_base && p.last >= first)
        {
            if p.base < seg.end_offset {
                return Err(corrupt(format!(
                    "segment {seg_base}: pending batch {} goes back before offset {}",
                    p.base, seg.end_offset
                )));
            }
            if p.last >= offset {
                break;
            }
            seg.note_batch(
                &RecordBatchHeader::parse(&p.data)?,
                c.interval,
                c.created_ms,
            );
        }
    }
    Ok(Some(seg))
}

/// Where a scan for `offset` can start in `seg`: its `skip`-th last index entry at or
/// before `offset` on disk, with the prefix state the indexes give (the same
/// approximation as recovery: the max timestamp's offset is that of the time-index
/// entry); else (no such entry) the start.
fn resume_point(seg: &Segment, offset: i64, skip: usize) -> Segment {
    let mut s = Segment::new_empty(seg.base, true);
    let (Some(idx), Some(tidx)) = (&seg.index, &seg.tindex) else {
        return s;
    };
    let Some(&(rel, pos)) = idx
        .entries
        .iter()
        .rev()
        .filter(|&&(r, p)| seg.base + r as i64 <= offset && p as u64 <= seg.flushed)
        .nth(skip)
    else {
        return s;
    };
    let Some(&(ts, ts_rel)) = tidx.entries.iter().rev().find(|&&(_, r)| r < rel) else {
        return s;
    };
    s.size = pos as u64;
    s.flushed = pos as u64;
    s.end_offset = seg.base + rel as i64;
    s.max_ts = ts;
    s.max_ts_offset = seg.base + ts_rel as i64;
    s.index = Some(OffsetIndex {
        entries: idx.entries.iter().filter(|e| e.0 <= rel).copied().collect(),
    });
    s.tindex = Some(TimeIndex {
        entries: tidx.entries.iter().filter(|e| e.1 < rel).copied().collect(),
    });
    s.bytes_since_index = 0;
    s
}

/// Finish a truncation a crash interrupted (open found `.truncate-intent`); `intent` is
/// None if the file is unreadable. It is written by temp file and rename, so it is never
/// torn: an unreadable one is damage and is dropped (the log stays as recovered).
pub(crate) async fn finish_intent(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    intent: Option<i64>,
) -> Result<(), StorageError> {
    let dir = log.dir.clone();
    let Some(cut) = intent else {
        tracing::warn!(dir = %dir.display(), "unreadable truncation intent; ignoring it");
        epoch::remove_intent(dir).await?;
        return Ok(());
    };
    let _permit = crate::permit::acquire(&log.io, 1).await?;
    let (start, end) = {
        let st = log.state();
        (st.log_start(), st.log_end())
    };
    tracing::warn!(dir = %dir.display(), cut, start, end, "finishing a truncation interrupted by a crash");
    if start == end && end != cut {
        // every segment was removed before the crash: the restart did not finish
        let guard = Truncating::start(log);
        log.clear_marker().await?;
        restart_at(shard, log, cut, guard).await?;
    } else if cut < end {
        truncate_under_permit(shard, log, cut).await?;
    }
    epoch::remove_intent(dir).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::truncate_under_permit;
    use crate::{LogConfig, PartitionLog, ShardStorage, ShardStorageOptions, StorageError};
    use bytes::Bytes;
    use sluice_proto::batch::{build_batch, RecordBatchHeader, SimpleRecord};
    use std::future::Future;

    fn run<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .expect("spawn executor") // ok: test setup
            .join()
            .expect("executor panicked"); // ok: test setup
    }

    /// A temp dir under the target dir (a filesystem with O_DIRECT, unlike some /tmp).
    fn tempdir() -> tempfile::TempDir {
        crate::test_dir()
    }

    fn batch(n: usize, tag: u8) -> Bytes {
        let v = [tag; 40];
        let recs: Vec<SimpleRecord<'_>> = (0..n)
            .map(|i| SimpleRecord {
                key: None,
                value: Some(&v),
                timestamp: 1000 + i as i64,
                headers: &[],
            })
            .collect();
        build_batch(0, &recs)
    }

    async fn contents(log: &PartitionLog) -> Vec<(i64, u8)> {
        let end = log.log_end_offset();
        let mut out = Vec::new();
        let mut next = log.log_start_offset();
        while next < end {
            for b in log.read(next, end, 1 << 20, true).await.unwrap() {
                let h = RecordBatchHeader::parse(&b).unwrap();
                out.push((h.base_offset, b[b.len() - 2]));
                next = h.last_offset() + 1;
            }
        }
        out
    }

    #[test]
    fn pending_batches_in_the_cut_are_dropped_unwritten_and_their_waiters_fail() {
        let dir = tempdir();
        let path = dir.path().join("t-0");
        run(move || async move {
            let shard = ShardStorage::start(ShardStorageOptions::default());
            let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
                .await
                .unwrap();
            log.set_leader_epoch(1);
            let a = log.append(batch(2, 0xA), 1).unwrap();
            log.wait_durable(a.last_offset).await.unwrap();
            let seg = path.join(format!("{:020}.log", 0));
            let len_before = std::fs::metadata(&seg).unwrap().len();
            // hold the log's I/O permit: the flusher cannot write what follows
            let permit = crate::permit::acquire(&log.inner.io, 1).await.unwrap();
            let b = log.append(batch(3, 0xB), 1).unwrap();
            log.set_leader_epoch(2);
            let c = log.append(batch(2, 0xC), 1).unwrap();
            let d = log.append(batch(1, 0xD), 1).unwrap();
            assert_eq!(log.epoch_entries(), vec![(1, 0), (2, c.base_offset)]);
            let pending_bytes = shard.unflushed_bytes();
            assert!(pending_bytes > 0);
            let wait = |off: i64| {
                let log = log.clone();
                glommio::spawn_local(async move { log.wait_durable(off).await }).detach()
            };
            let (wb, wc, wd) = (
                wait(b.last_offset),
                wait(c.last_offset),
                wait(d.last_offset),
            );
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            // cut inside c: c and d go, b (pending too) stays
            let cut = truncate_under_permit(&log.shard, &log.inner, c.base_offset + 1)
                .await
                .unwrap();
            assert_eq!(cut, c.base_offset);
            assert_eq!(log.log_end_offset(), c.base_offset);
            assert_eq!(log.durable_offset(), a.last_offset + 1);
            assert!(shard.unflushed_bytes() < pending_bytes && shard.unflushed_bytes() > 0);
            assert_eq!(log.epoch_entries(), vec![(1, 0)]);
            // nothing on disk had to change: no intent, no write
            assert_eq!(std::fs::metadata(&seg).unwrap().len(), len_before);
            assert!(!path.join(crate::epoch::INTENT).exists());
            assert!(matches!(
                wc.await,
                Some(Err(StorageError::Truncated { .. }))
            ));
            assert!(matches!(
                wd.await,
                Some(Err(StorageError::Truncated { .. }))
            ));
            drop(permit);
            assert!(matches!(wb.await, Some(Ok(()))));
            assert_eq!(shard.unflushed_bytes(), 0);
            assert_eq!(contents(&log).await, vec![(0, 0xA), (b.base_offset, 0xB)]);
            // appends continue at the cut, under the current epoch
            let e = log.append(batch(1, 0xE), 1).unwrap();
            assert_eq!(e.base_offset, c.base_offset);
            log.wait_durable(e.last_offset).await.unwrap();
            assert_eq!(log.epoch_entries(), vec![(1, 0), (2, e.base_offset)]);
            log.close().await.unwrap();
            let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
                .await
                .unwrap();
            assert_eq!(
                contents(&log).await,
                vec![(0, 0xA), (b.base_offset, 0xB), (e.base_offset, 0xE)]
            );
            assert_eq!(log.epoch_entries(), vec![(1, 0), (2, e.base_offset)]);
            shard.shutdown().await.unwrap();
        });
    }

    /// A wait made at the append but first polled after a cut and a regrowth past its
    /// offset (a produce answered after other partitions' waits) must not report the new
    /// data there as its own.
    #[test]
    fn a_wait_counts_cuts_from_its_call_not_its_first_poll() {
        let dir = tempdir();
        let path = dir.path().join("t-2");
        run(move || async move {
            let shard = ShardStorage::start(ShardStorageOptions::default());
            let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
                .await
                .unwrap();
            let a = log.append(batch(2, 0xA), 1).unwrap();
            log.wait_durable(a.last_offset).await.unwrap();
            let permit = crate::permit::acquire(&log.inner.io, 1).await.unwrap();
            let b = log.append(batch(2, 0xB), 1).unwrap();
            let wb = log.wait_durable(b.last_offset);
            let mark = log.truncation_mark();
            truncate_under_permit(&log.shard, &log.inner, b.base_offset)
                .await
                .unwrap();
            drop(permit);
            // other data now stands at b's offsets, durable
            let c = log.append(batch(3, 0xC), 1).unwrap();
            assert!(c.last_offset > b.last_offset);
            log.wait_durable(c.last_offset).await.unwrap();
            assert!(
                matches!(wb.await, Err(StorageError::Truncated { offset }) if offset == b.last_offset)
            );
            assert!(matches!(
                log.wait_durable_from(b.last_offset, mark).await,
                Err(StorageError::Truncated { .. })
            ));
            // a mark taken after the cut sees none
            log.wait_durable_from(c.last_offset, log.truncation_mark())
                .await
                .unwrap();
            shard.shutdown().await.unwrap();
        });
    }

    #[test]
    fn a_cut_below_the_durable_offset_drops_all_pending_and_goes_to_disk() {
        let dir = tempdir();
        let path = dir.path().join("t-1");
        run(move || async move {
            let shard = ShardStorage::start(ShardStorageOptions::default());
            let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
                .await
                .unwrap();
            let a = log.append(batch(2, 0xA), 1).unwrap();
            let b = log.append(batch(2, 0xB), 1).unwrap();
            log.wait_durable(b.last_offset).await.unwrap();
            let permit = crate::permit::acquire(&log.inner.io, 1).await.unwrap();
            let c = log.append(batch(2, 0xC), 1).unwrap();
            let wc = {
                let log = log.clone();
                glommio::spawn_local(async move { log.wait_durable(c.last_offset).await }).detach()
            };
            // appends are refused only while the cut is being located; afterwards they
            // land at the new end even before the files are cut
            let cut = truncate_under_permit(&log.shard, &log.inner, b.base_offset)
                .await
                .unwrap();
            assert_eq!(cut, b.base_offset);
            assert_eq!((log.log_end_offset(), log.durable_offset()), (cut, cut));
            assert_eq!(shard.unflushed_bytes(), 0);
            assert!(matches!(wc.await, Some(Err(_))));
            let seg = path.join(format!("{:020}.log", 0));
            let a_len = std::fs::metadata(&seg).unwrap().len();
            assert!(a_len > 0 && a_len < 4096, "file cut to batch a: {a_len}");
            assert!(!path.join(crate::epoch::INTENT).exists());
            drop(permit);
            let d = log.append(batch(1, 0xD), 1).unwrap();
            log.wait_durable(d.last_offset).await.unwrap();
            assert_eq!(contents(&log).await, vec![(0, 0xA), (cut, 0xD)]);
            assert_eq!(a.base_offset, 0);
            shard.shutdown().await.unwrap();
        });
    }
}
