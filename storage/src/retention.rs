//! Operations that remove data from the front: delete retention (`retention.ms` by batch
//! max timestamp, `retention.bytes`; only for logs whose `cleanup.policy` includes
//! `delete`), and deleting a whole log (cutting a suffix is `truncate.rs`). Each holds the log's I/O permit so it never races the flusher.
//! Retention never deletes a segment holding an offset at or past the high watermark the
//! broker set (`set_clean_limit`; the durable offset without one), nor at or past the
//! first unstable offset (a transaction under way, or completed but not yet stable, keeps its data:
//! the producer state is loaded first), deletes each segment's `.txnindex` with it and
//! the producer-state snapshots below the new log start, forgets producers with nothing
//! left in the log and folds leader-epoch entries before the new log start into it. The new log start is the base of the first
//! segment kept, also when its first batch starts later (a compacted segment), or the
//! log start DeleteRecords set inside it (`log_start.rs`). Segments wholly below that log
//! start go whatever the policy (`advance_log_start`).

use crate::error::StorageError;
use crate::inner::LogInner;
use crate::segment::{log_path, open_segment_file, retire_segments, SegState, Segment};
use crate::shard::ShardStorage;
use crate::state::LogState;
use std::rc::Rc;

/// The segments retention deletes now (bases, from the front) and whether the last one
/// is replaced by an empty one, deleting nothing at or past `cap` (the high watermark or
/// the first unstable offset, whichever is lower). Without a time (`now_ms` None), only the segments wholly below the log start.
fn plan(st: &LogState, now_ms: Option<i64>, cap: i64) -> (Vec<i64>, bool) {
    let cfg = st.config();
    let segments = st.segments();
    // wholly below the log start (DeleteRecords moved it into a later segment), whatever
    // the policy: Kafka's log-start-breached segments
    let start = st.log_start();
    let below_start = |i: usize| segments.get(i + 1).is_some_and(|n| n.base <= start);
    let Some(now_ms) = now_ms.filter(|_| cfg.cleanup_policy.delete) else {
        // compact only: otherwise the cleaner alone removes data
        let n = (0..segments.len())
            .take_while(|&i| {
                below_start(i)
                    && segments[i].state == SegState::Sealed
                    && segments[i].end_offset <= cap
            })
            .count();
        return (segments[..n].iter().map(|s| s.base).collect(), false);
    };
    let mut total: i64 = segments.iter().map(|s| s.size as i64).sum();
    let mut doomed = Vec::new();
    // a segment without batches (compaction can leave one) holds nothing to keep
    let expired = |s: &Segment| {
        cfg.retention_ms >= 0
            && (s.size == 0
                || (s.max_ts_offset >= 0 && s.max_ts < now_ms.saturating_sub(cfg.retention_ms)))
    };
    // never the last segment here, sealed or not: it holds the log end, and a log
    // without segments would restart at 0 (the active case below rolls it instead)
    let all_but_last = &segments[..segments.len().saturating_sub(1)];
    for (i, s) in all_but_last.iter().enumerate() {
        if s.state != SegState::Sealed || s.end_offset > cap {
            break;
        }
        let too_big = cfg.retention_bytes >= 0 && total - s.size as i64 >= cfg.retention_bytes;
        if !(below_start(i) || expired(s) || too_big) {
            break;
        }
        total -= s.size as i64;
        doomed.push(s.base);
    }
    // the last segment expires too once everything in it is old and durable: an
    // empty segment at the log end takes its place
    let active = segments.last();
    let roll = doomed.len() + 1 == segments.len()
        && active.is_some_and(|a| a.size > 0 && a.flushed == a.size && expired(a))
        && st.pending().is_empty()
        && st.durable() == st.log_end()
        && st.log_end() <= cap;
    (doomed, roll)
}

/// Retention at `now_ms`; None: only the segments wholly below the log start (right
/// after DeleteRecords moved it, without applying time and size retention early).
pub(crate) async fn enforce_retention(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    now_ms: Option<i64>,
) -> Result<(), StorageError> {
    log.state().check_open()?;
    let (doomed, roll) = plan(&log.state(), now_ms, i64::MAX);
    if doomed.is_empty() && !roll {
        return Ok(());
    }
    // never delete data of a transaction that is not stable: that needs the state
    crate::read::load_producers(shard, log).await?;
    let _permit = crate::permit::acquire(&log.io, 1).await?;
    let (doomed, roll) = {
        let st = log.state();
        st.check_open()?;
        // not built (the log changed under the load): delete nothing this time. A
        // transaction that began below the log start holds back nothing below it.
        let unstable = match st.first_unstable_if_loaded() {
            Some(fu) => fu.map_or(i64::MAX, |f| f.max(st.log_start())),
            None => st.log_start(),
        };
        // nothing at or past the high watermark either (the broker's, `clean_limit`), as
        // Kafka's deletableSegments: records a follower has not copied yet stay, and the
        // log start never passes the high watermark (earliest above latest loops every
        // consumer that resets to the latest offset)
        let committed = st.clean_limit().max(st.log_start());
        plan(&st, now_ms, unstable.min(committed))
    };
    if doomed.is_empty() && !roll {
        return Ok(());
    }
    crate::journal_flush::barrier(shard, log).await?;
    log.clear_marker().await?;
    let dir = log.dir.clone();
    // The segment left last may exist only in memory (its data never reached the disk,
    // e.g. cut by a truncation before a flush): give it its file before the others go,
    // or a reopen would find no segment and restart the log at 0.
    let empty_last = log
        .state()
        .last_segment()
        .filter(|l| !roll && l.size == 0 && !doomed.contains(&l.base))
        .map(|l| l.base);
    if let Some(base) = empty_last {
        let f = open_segment_file(&log_path(&dir, base), true).await?;
        f.close().await?;
        log.sync_dir().await?;
        log.state_mut().set_file_exists(base);
    }
    let mut removed = doomed.clone();
    if roll {
        let end = log.state().log_end();
        let f = open_segment_file(&log_path(&dir, end), true).await?;
        f.close().await?;
        log.sync_dir().await?;
        if let Some(old) = log.state_mut().roll_empty(end) {
            removed.push(old);
        }
    }
    let new_start = log.state_mut().drop_front(&removed);
    let files = shard.forget_before(log.id, new_start, &removed);
    let watch = files.iter().map(Rc::downgrade).collect();
    crate::files::close_files(files).await;
    // renamed now, their space freed by the reaper a step at a time (`reaper.rs`)
    let retired = retire_segments(&dir, removed.clone()).await?;
    shard.reaper.retire(&dir, retired, watch);
    let old_snapshots = log.state_mut().take_snapshots_before_start();
    crate::snapshot::remove(&dir, old_snapshots).await?;
    tracing::debug!(dir = %dir.display(), segments = removed.len(), new_start, "retention deleted segments");
    shard.notify_log(log);
    Ok(())
}

/// See `PartitionLog::advance_log_start`. In a task of its own, under the log's I/O
/// permit (never racing a truncation, which may lower the start again): a caller that
/// stops waiting cannot leave memory and file apart.
pub(crate) async fn advance_log_start(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    offset: i64,
) -> Result<i64, StorageError> {
    {
        let st = log.state();
        st.check_open()?;
        if offset < 0 || offset > st.log_end() {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: st.log_start(),
                log_end: st.log_end(),
            });
        }
        if offset <= st.log_start() {
            return Ok(st.log_start());
        }
    }
    let (s, l) = (shard.clone(), log.clone());
    glommio::spawn_local(async move {
        let _permit = crate::permit::acquire(&l.io, 1).await?;
        let (start, end) = {
            let st = l.state();
            st.check_open()?;
            (st.log_start(), st.log_end())
        };
        // a truncation meanwhile may have cut below `offset`: only up to the end
        let to = offset.min(end);
        if to <= start {
            return Ok(start);
        }
        crate::log_start::write(l.dir.clone(), to).await?;
        let start = l.state_mut().raise_start_floor(to);
        tracing::debug!(dir = %l.dir.display(), start, "log start moved");
        s.notify_log(&l);
        Ok(start)
    })
    .detach()
    .await
    .ok_or_else(|| StorageError::Io(std::io::Error::other("log start task was cancelled")))?
}

pub(crate) async fn delete_log(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
) -> Result<(), StorageError> {
    if !log.state_mut().mark_deleted() {
        return Err(StorageError::Closed);
    }
    shard.notify_log(log);
    let _permit = crate::permit::acquire(&log.io, 1).await?;
    crate::journal_flush::barrier(shard, log).await?;
    shard.unregister(log).await;
    // Rename, durably, then remove in the background, as Kafka does: the answer does not
    // wait for gigabytes of unlinks, and a crash leaves a `-delete` directory that
    // `remove_deleted_dirs` finishes at the next start, never data under the live name.
    let dir = log.dir.clone();
    // keyed by the log's directory: a log opened again under this name afterwards (its
    // survey creates the directory) waits for the rename
    let doomed = crate::blocking::run(
        &log.dir,
        move || -> std::io::Result<Option<std::path::PathBuf>> {
            let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
                return Ok(None);
            };
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let doomed = dir.with_file_name(doomed_name(name, nanos));
            match std::fs::rename(&dir, &doomed) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
            if let Some(parent) = dir.parent() {
                crate::blocking::sync_dir_now(parent)?;
            }
            Ok(Some(doomed))
        },
    )
    .await?;
    if let Some(doomed) = doomed {
        // its files freed a step at a time, then the directory (`reaper.rs`)
        let d = doomed.clone();
        let files = match crate::blocking::run(&doomed, move || crate::reaper::list_files(&d)).await
        {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(dir = %doomed.display(), error = %e,
                    "cannot list a deleted log's files; removing its directory at once");
                Vec::new()
            }
        };
        shard.reaper.retire_dir(doomed, files);
    }
    shard.notify_log(log);
    Ok(())
}

/// Ends the names of deleted log directories awaiting removal.
pub(crate) const DELETED_SUFFIX: &str = "-delete";

/// The name a deleted log's directory `name` (`<topic>-<partition>`) is renamed to:
/// `<topic>-<partition>.<id>-delete`, the topic cut short as Kafka cuts it
/// (`logDirNameWithSuffixCappedLength`) so the name stays within the 255 bytes a file
/// name may have: a topic of Kafka's maximum 249 characters must still be deletable.
fn doomed_name(name: &str, id: u128) -> String {
    const NAME_MAX: usize = 255;
    let (topic, partition) = name.rsplit_once('-').unwrap_or((name, ""));
    let suffix = format!("-{partition}.{id:x}{DELETED_SUFFIX}");
    let mut keep = topic.len().min(NAME_MAX.saturating_sub(suffix.len()));
    while !topic.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &topic[..keep])
}

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
    use super::{doomed_name, remove_deleted_dirs};

    #[test]
    fn deleted_names_fit_a_file_name_and_keep_the_partition() {
        assert_eq!(doomed_name("orders-3", 0x18f3a), "orders-3.18f3a-delete");
        let topic = "t".repeat(249);
        let name = format!("{topic}-99999");
        let doomed = doomed_name(&name, u128::MAX);
        assert!(doomed.len() <= 255, "{} bytes", doomed.len());
        assert!(doomed.ends_with(&format!("-99999.{:x}-delete", u128::MAX)));
        assert!(doomed.starts_with("ttt"));
        // a directory of that name can be made, and `remove_deleted_dirs` takes it
        let d = tempfile::tempdir().unwrap(); // ok: test
        std::fs::create_dir(d.path().join(&name)).unwrap(); // ok: test
        std::fs::rename(d.path().join(&name), d.path().join(&doomed)).unwrap(); // ok: test
        assert_eq!(remove_deleted_dirs(d.path()).unwrap(), 1); // ok: test
    }

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
