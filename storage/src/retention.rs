//! Operations that remove data: `truncate_to` (replication divergence), delete retention
//! (`retention.ms` by batch max timestamp, `retention.bytes`), and deleting a whole log.
//! Each holds the log's I/O permit so it never races the flusher; in-memory state is cut
//! first (so reads and appends see the new bounds at once), then files are changed.
//! Later segments are deleted before an earlier one is cut, so a crash midway leaves a
//! log that recovery reads as a prefix. Truncation drops the producer state (rebuilt
//! lazily from what remains); retention forgets producers with nothing left in the log.

use crate::error::StorageError;
use crate::flusher::{clear_marker, sync_dir};
use crate::log::PartitionLog;
use crate::recovery::remove_segments;
use crate::segment::{log_path, open_segment_file, scan_segment, SegState, Segment};

pub(crate) async fn truncate_to(log: &PartitionLog, offset: i64) -> Result<(), StorageError> {
    let end = {
        let st = log.inner.st.borrow();
        st.check_open()?;
        st.log_end
    };
    if offset >= end {
        return Ok(());
    }
    // make everything durable so the files hold exactly the in-memory log
    log.wait_durable(end - 1).await?;
    let _permit = log.inner.io.acquire_permit(1).await?;
    clear_marker(&log.inner).await?;
    let (start, end) = {
        let st = log.inner.st.borrow();
        st.check_open()?;
        (st.log_start(), st.log_end)
    };
    if offset >= end {
        return Ok(());
    }
    let dir = log.inner.dir.clone();
    let id = log.inner.id;
    if offset <= start {
        // nothing survives: restart the log empty at `offset`
        let bases: Vec<i64> = {
            let mut st = log.inner.st.borrow_mut();
            let bases = st.segments.iter().map(|s| s.base).collect();
            st.segments = vec![Segment::new_empty(offset, false)];
            cut_state(&mut st, offset);
            bases
        };
        forget(log, &bases, offset);
        remove_segments(&dir, bases.iter().rev().copied().collect()).await?;
        let f = open_segment_file(&log_path(&dir, offset), true).await?;
        f.close().await?;
        if let Some(s) = log.inner.st.borrow_mut().segments.first_mut() {
            s.file_exists = true;
        }
        sync_dir(&log.inner).await?;
        notify(log);
        return Ok(());
    }
    // find the batch holding `offset`: its base is the new log end
    let batch_base = {
        let b = log.read(offset, end, 1, true).await?;
        let Some(first) = b.first() else {
            return Ok(());
        };
        sluice_proto::batch::RecordBatchHeader::parse(first)?.base_offset
    };
    let (seg_base, doomed, interval) = {
        let mut st = log.inner.st.borrow_mut();
        let Some(i) = st.segment_for(batch_base) else {
            return Ok(());
        };
        let seg_base = st.segments[i].base;
        let doomed: Vec<i64> = st.segments[i + 1..].iter().map(|s| s.base).collect();
        st.segments.truncate(i + 1);
        cut_state(&mut st, batch_base);
        (seg_base, doomed, st.config.index_interval_bytes)
    };
    forget(log, &doomed, batch_base);
    remove_segments(&dir, doomed.iter().rev().copied().collect()).await?;
    // cut the segment at the batch boundary and rebuild its in-memory state
    let file = log.shard.segment_file(&log.inner, seg_base, false).await?;
    let len = file.file_size().await?;
    let r = scan_segment(&file, seg_base, len, interval, false).await?;
    let mut pos = r.valid_end;
    let mut seg = Segment::new_empty(seg_base, true);
    if r.next_offset > batch_base {
        // the scan went past the cut: rescan only the prefix that stays
        let prefix = position_of(&file, seg_base, len, batch_base).await?;
        pos = prefix;
    }
    file.truncate(pos).await?;
    file.fdatasync().await?;
    let r = scan_segment(&file, seg_base, pos, interval, false).await?;
    seg.size = r.valid_end;
    seg.flushed = r.valid_end;
    seg.end_offset = r.next_offset;
    seg.max_ts = r.max_ts;
    seg.max_ts_offset = r.max_ts_offset;
    seg.bytes_since_index = r.valid_end - r.index.entries.last().map_or(0, |e| e.1 as u64);
    seg.index = Some(r.index);
    seg.tindex = Some(r.tindex);
    seg.created_ms = if seg.size > 0 {
        crate::segment::now_ms()
    } else {
        -1
    };
    // the on-disk indexes may point past the cut (recovery resumes from them)
    let (i, t) = crate::recovery::encode_indexes(&seg);
    crate::segment::write_indexes(&dir, seg_base, i, t).await?;
    if !doomed.is_empty() {
        sync_dir(&log.inner).await?;
    }
    {
        let mut st = log.inner.st.borrow_mut();
        if let Some(last) = st.segments.last_mut() {
            *last = seg;
        }
        st.log_end = st.segments.last().map_or(batch_base, |s| s.end_offset);
        st.durable = st.log_end;
        st.producers = None; // an append may have rebuilt it while the file was cut
    }
    {
        let mut sh = log.shard.inner.borrow_mut();
        sh.cache.remove_from(id, batch_base);
        sh.readahead.drop_log(id);
    }
    notify(log);
    Ok(())
}

/// File position where the batch with base offset `target` starts.
async fn position_of(
    file: &glommio::io::DmaFile,
    base: i64,
    len: u64,
    target: i64,
) -> Result<u64, StorageError> {
    let mut pos = 0u64;
    let mut next = base;
    while next < target && pos < len {
        let r = file
            .read_at(pos, sluice_proto::batch::RECORD_BATCH_OVERHEAD)
            .await?;
        let h = sluice_proto::batch::RecordBatchHeader::parse(&r)?;
        pos += h.total_size() as u64;
        next = h.last_offset() + 1;
    }
    Ok(pos)
}

fn cut_state(st: &mut crate::log::LogState, new_end: i64) {
    st.pending.clear();
    st.log_end = new_end;
    st.durable = new_end;
    st.tail = None;
    st.truncate_epoch += 1;
    st.truncate_point = new_end;
    st.producers = None; // rebuilt from the remaining log on next need
    if let Some(last) = st.segments.last_mut() {
        last.state = SegState::Active;
    }
}

fn forget(log: &PartitionLog, bases: &[i64], cut: i64) {
    let mut sh = log.shard.inner.borrow_mut();
    sh.cache.remove_from(log.inner.id, cut);
    sh.readahead.drop_log(log.inner.id);
    for b in bases {
        sh.files.remove(log.inner.id, *b);
    }
}

fn notify(log: &PartitionLog) {
    log.inner.durable_signal.notify();
    log.shard.progress.notify();
}

pub(crate) async fn enforce_retention(log: &PartitionLog, now_ms: i64) -> Result<(), StorageError> {
    log.inner.st.borrow().check_open()?;
    let _permit = log.inner.io.acquire_permit(1).await?;
    let (doomed, roll) = {
        let st = log.inner.st.borrow();
        st.check_open()?;
        let cfg = &st.config;
        let mut total: i64 = st.segments.iter().map(|s| s.size as i64).sum();
        let mut doomed = Vec::new();
        let expired = |s: &Segment| {
            cfg.retention_ms >= 0
                && s.max_ts_offset >= 0
                && s.max_ts < now_ms.saturating_sub(cfg.retention_ms)
        };
        for s in &st.segments {
            if s.state != SegState::Sealed {
                break;
            }
            let too_big = cfg.retention_bytes >= 0 && total - s.size as i64 >= cfg.retention_bytes;
            if !(expired(s) || too_big) {
                break;
            }
            total -= s.size as i64;
            doomed.push(s.base);
        }
        // the active segment expires too once everything in it is old and durable
        let active = st.segments.last();
        let roll = doomed.len() + 1 == st.segments.len()
            && active.is_some_and(|a| a.size > 0 && a.flushed == a.size && expired(a))
            && st.pending.is_empty()
            && st.durable == st.log_end;
        (doomed, roll)
    };
    if doomed.is_empty() && !roll {
        return Ok(());
    }
    clear_marker(&log.inner).await?;
    let dir = log.inner.dir.clone();
    let mut removed = doomed.clone();
    if roll {
        let end = log.inner.st.borrow().log_end;
        let f = open_segment_file(&log_path(&dir, end), true).await?;
        f.close().await?;
        sync_dir(&log.inner).await?;
        let mut st = log.inner.st.borrow_mut();
        if st.log_end == end && st.pending.is_empty() {
            if let Some(a) = st.segments.last() {
                removed.push(a.base);
            }
            st.segments.push(Segment::new_empty(end, true));
            st.tail = None;
        }
    }
    let new_start = {
        let mut st = log.inner.st.borrow_mut();
        st.segments.retain(|s| !removed.contains(&s.base));
        let start = st.log_start();
        if let Some(ps) = st.producers.as_mut() {
            ps.trim_before(start);
        }
        start
    };
    {
        let mut sh = log.shard.inner.borrow_mut();
        sh.cache.remove_before(log.inner.id, new_start);
        for b in &removed {
            sh.files.remove(log.inner.id, *b);
        }
    }
    remove_segments(&dir, removed.clone()).await?;
    tracing::debug!(dir = %dir.display(), segments = removed.len(), new_start, "retention deleted segments");
    notify(log);
    Ok(())
}

pub(crate) async fn delete_log(log: &PartitionLog) -> Result<(), StorageError> {
    {
        let mut st = log.inner.st.borrow_mut();
        if st.deleted {
            return Err(StorageError::Closed);
        }
        st.deleted = true;
        st.pending.clear();
    }
    notify(log);
    let _permit = log.inner.io.acquire_permit(1).await?;
    log.shard.unregister(&log.inner).await;
    // Rename, durably, then remove in the background, as Kafka does: the answer does not
    // wait for gigabytes of unlinks, and a crash leaves a `-delete` directory that
    // `remove_deleted_dirs` finishes at the next start, never data under the live name.
    let dir = log.inner.dir.clone();
    let doomed = crate::blocking::run(move || -> std::io::Result<Option<std::path::PathBuf>> {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            return Ok(None);
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let doomed = dir.with_file_name(format!("{name}.{nanos:x}{DELETED_SUFFIX}"));
        match std::fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(Some(doomed))
    })
    .await?;
    if let Some(doomed) = doomed {
        glommio::spawn_local(async move {
            let shown = doomed.display().to_string();
            if let Err(e) = crate::blocking::run(move || std::fs::remove_dir_all(doomed)).await {
                tracing::warn!(dir = %shown, error = %e, "removing a deleted log; the next start retries");
            }
        })
        .detach();
    }
    notify(log);
    Ok(())
}

/// Ends the names of deleted log directories awaiting removal.
pub(crate) const DELETED_SUFFIX: &str = "-delete";

/// Removes the directories of logs deleted before a crash or stop (`<dir>.<id>-delete`)
/// under `data_dir`; returns how many. Blocking: call at startup, off the shards.
pub fn remove_deleted_dirs(data_dir: &std::path::Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for e in std::fs::read_dir(data_dir)? {
        let e = e?;
        let deleted = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(DELETED_SUFFIX) && n.contains('.'));
        if deleted && e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::remove_deleted_dirs;

    #[test]
    fn only_deleted_log_dirs_are_removed_at_start() {
        let d = tempfile::tempdir().unwrap(); // ok: test
        for name in ["orders-0", "x-delete-3", "orders-1.18f3a-delete"] {
            std::fs::create_dir(d.path().join(name)).unwrap(); // ok: test
        }
        std::fs::write(d.path().join("orders-1.18f3a-delete/seg.log"), b"x").unwrap(); // ok: test
        assert_eq!(remove_deleted_dirs(d.path()).unwrap(), 1); // ok: test
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap() // ok: test
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned()) // ok: test
            .collect();
        left.sort();
        assert_eq!(left, vec!["orders-0", "x-delete-3"]);
    }
}
