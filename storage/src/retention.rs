//! Operations that remove data from the front: delete retention (`retention.ms` by batch
//! max timestamp, `retention.bytes`), and deleting a whole log (cutting a suffix is
//! `truncate.rs`). Each holds the log's I/O permit so it never races the flusher.
//! Retention forgets producers with nothing left in the log and folds leader-epoch
//! entries before the new log start into it.

use crate::error::StorageError;
use crate::flusher::{clear_marker, sync_dir};
use crate::log::PartitionLog;
use crate::recovery::remove_segments;
use crate::segment::{log_path, open_segment_file, SegState, Segment};

pub(crate) fn notify(log: &PartitionLog) {
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
        // never the last segment here, sealed or not: it holds the log end, and a log
        // without segments would restart at 0 (the active case below rolls it instead)
        let all_but_last = &st.segments[..st.segments.len().saturating_sub(1)];
        for s in all_but_last {
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
        // the last segment expires too once everything in it is old and durable: an
        // empty segment at the log end takes its place
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
    // The segment left last may exist only in memory (its data never reached the disk,
    // e.g. cut by a truncation before a flush): give it its file before the others go,
    // or a reopen would find no segment and restart the log at 0.
    let empty_last = {
        let st = log.inner.st.borrow();
        st.segments
            .last()
            .filter(|l| !roll && l.size == 0 && !doomed.contains(&l.base))
            .map(|l| l.base)
    };
    if let Some(base) = empty_last {
        let f = open_segment_file(&log_path(&dir, base), true).await?;
        f.close().await?;
        sync_dir(&log.inner).await?;
    }
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
        if start < st.log_end {
            st.epochs.truncate_from_start(start);
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
