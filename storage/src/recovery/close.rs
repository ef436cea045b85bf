//! Closing logs (`close_logs`, `close_inner`): drained, files cut and indexed, then the
//! clean-shutdown markers, with the syncs of many logs shared so that a close of 10,000
//! partitions costs two `syncfs` per filesystem; a crash at any point stays safe (a
//! marker only ever vouches for durable files).

use std::rc::Rc;

use super::Marker;
use crate::error::StorageError;
use crate::inner::LogInner;
use crate::segment::{
    index_path, marker_path, timeindex_path, write_indexes_unsynced, write_small_file_unsynced,
};
use crate::shard::ShardStorage;

/// Close a log: wait until everything is durable, then cut the active file to its
/// logical end, write its indexes and the clean-shutdown marker, and unregister it (see
/// `close_logs`).
pub(crate) async fn close_inner(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
) -> Result<(), StorageError> {
    close_logs(shard, vec![log.clone()], 1).await
}

/// Close `logs`, `window` at a time doing I/O, each in a task of its own, and return the
/// first error. The logs share group syncs (`group_sync.rs`) instead of an `fdatasync` per
/// file, and the syncs are held until every log wrote its files, so the close costs two
/// `syncfs` per filesystem; the order keeps a crash at any point safe:
///
/// ```text
///  per log (window):  drained ─► epoch/txn/snapshot files (synced as always)
///                     ─► cut the active segment, write its 2 indexes (no fsync)
///  all logs there:    one syncfs (each log waits for one started after its writes)
///  per log (window):  write the marker (no fsync)
///  once per device:   one syncfs (the markers reach the disk)
/// ```
///
/// A marker is written only after a `syncfs` that started after its segment's cut and
/// index writes returned, so a marker on disk always vouches for durable files; a marker
/// lost in a crash only costs the next open a rescan. A log whose marker is still on disk
/// (nothing changed since an open trusted it) writes nothing.
pub(crate) async fn close_logs(
    shard: &Rc<ShardStorage>,
    logs: Vec<Rc<LogInner>>,
    window: usize,
) -> Result<(), StorageError> {
    let gate = Rc::new(glommio::sync::Semaphore::new(window.max(1) as u64));
    // no syncfs until every log wrote its cut and indexes (or stopped): then one for all
    shard.group_sync.hold(logs.len());
    let tasks: Vec<_> = logs
        .into_iter()
        .map(|log| {
            let (shard, gate) = (shard.clone(), gate.clone());
            // taken here, not in the task: a task dropped before it ran gives it back too
            let hold = SyncHold(Some(shard.clone()));
            glommio::spawn_local(async move { close_one(&shard, &log, &gate, hold).await })
        })
        .collect();
    let mut first_err = None;
    let mut marked: Vec<(u64, std::path::PathBuf)> = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Some((dev, dir))) => {
                if !marked.iter().any(|m| m.0 == dev) {
                    marked.push((dev, dir));
                }
            }
            Ok(None) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    // the markers on the disk, so the next start trusts them even after a power loss
    for (dev, dir) in marked {
        if let Err(e) = shard.group_sync.wait(dev, &dir).await {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// One hold of the shard's group sync (`GroupSync::hold`), given back when released or
/// dropped (an error, an early return, a task that never ran).
struct SyncHold(Option<Rc<ShardStorage>>);

impl SyncHold {
    fn release(&mut self) {
        if let Some(s) = self.0.take() {
            s.group_sync.release();
        }
    }
}

impl Drop for SyncHold {
    fn drop(&mut self) {
        self.release();
    }
}

/// One log of `close_logs`: Some(device, dir) if it wrote a marker.
async fn close_one(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    gate: &glommio::sync::Semaphore,
    hold: SyncHold,
) -> Result<Option<(u64, std::path::PathBuf)>, StorageError> {
    if !log.state_mut().mark_closed() {
        return Ok(None);
    }
    // wait for the flusher to make everything durable (no new appends: closed)
    loop {
        let w = log.durable_signal.wait();
        if log.state().drained() {
            break;
        }
        w.await;
    }
    let failed = log.state().failure();
    if let Some(e) = failed {
        shard.unregister(log).await;
        return Err(e);
    }
    let res = close_files_and_mark(shard, log, gate, hold).await;
    shard.unregister(log).await;
    shard.notify_log(log);
    res.map(|marked| marked.then(|| (log.dev, log.dir.clone())))
}

/// True if it wrote a marker.
async fn close_files_and_mark(
    shard: &ShardStorage,
    log: &Rc<LogInner>,
    gate: &glommio::sync::Semaphore,
    mut hold: SyncHold,
) -> Result<bool, StorageError> {
    let _permit = crate::permit::acquire(&log.io, 1).await?;
    let marker = {
        let _slot = crate::permit::acquire(gate, 1).await?;
        let files = close_files(shard, log).await;
        hold.release();
        match files? {
            Some(m) => m,
            None => return Ok(false),
        }
    };
    // the cut and the indexes durable before the marker that vouches for them exists
    shard.group_sync.wait(log.dev, &log.dir).await?;
    let _slot = crate::permit::acquire(gate, 1).await?;
    write_small_file_unsynced(&marker_path(&log.dir), marker.encode()).await?;
    log.state_mut().set_marker_present(true);
    Ok(true)
}

/// The first half of a close: the epoch checkpoint, `.txnindex` files and producer
/// snapshot (each synced as always), then the active segment cut to its logical end and
/// its indexes written, neither synced. The marker to write once they are durable, or None
/// if none is needed (nothing in the active segment, its indexes missing, or its marker
/// still on disk from the open that trusted it).
async fn close_files(
    shard: &ShardStorage,
    log: &Rc<LogInner>,
) -> Result<Option<Marker>, StorageError> {
    crate::journal_flush::barrier(shard, log).await?;
    let checkpoint = log.state().epochs_snapshot();
    if let Some((gen, entries)) = checkpoint {
        crate::epoch::write_checkpoint(log.dir.clone(), entries).await?;
        log.state_mut().epochs_persisted(gen);
    }
    crate::flusher::write_txn_files(log).await?;
    // the producer state at the log end (everything is durable): the next load replays
    // nothing
    let snap = {
        let st = log.state();
        st.producers_to_snapshot()
            .map(|ps| (st.log_end(), ps.clone()))
    };
    if let Some((end, ps)) = snap {
        crate::flusher::persist_snapshot(log, end, &ps).await?;
    }
    let (base, size, exists, idx, marker) = {
        let st = log.state();
        if st.marker_present() {
            // the files have not changed since the open trusted the marker: it and the
            // indexes it vouches for are what a close would write again
            return Ok(None);
        }
        let Some(a) = st.last_segment() else {
            return Ok(None);
        };
        let idx = match (&a.index, &a.tindex) {
            (Some(_), Some(_)) => Some(a.encode_indexes()),
            _ => None,
        };
        let m = Marker {
            base: a.base,
            size: a.size,
            end: a.end_offset,
            max_ts: a.max_ts,
            max_ts_offset: a.max_ts_offset,
        };
        (a.base, a.size, a.file_exists, idx, m)
    };
    if !exists || size == 0 {
        // nothing in the active segment (a new log's, created at open): the next open
        // scans nothing, so neither indexes nor a marker are worth a write
        return Ok(None);
    }
    let file = shard.segment_file(log, base, false).await?;
    file.truncate(size).await?;
    if let Some((i, t)) = idx {
        write_indexes_unsynced(&log.dir, base, i, t).await?;
    } else {
        let (ip, tp) = (index_path(&log.dir, base), timeindex_path(&log.dir, base));
        let both = crate::blocking::run(&log.dir, move || ip.exists() && tp.exists()).await;
        if !both {
            return Ok(None); // no marker: the next open rescans and rebuilds
        }
    }
    Ok(Some(marker))
}
