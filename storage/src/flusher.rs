//! Group commit for one log: take every pending batch, write it with few large aligned
//! DMA writes (the in-memory partial tail page first, zero padding last), make it durable,
//! seal rolled segments, then advance the durable offset and wake waiters. A failure marks
//! the log failed so waiters get an error, never "durable".
//! Durable how (`FlushSync`): one fdatasync per touched segment, or — in a cycle of the
//! shard's flusher (`CycleSync`) — no sync of its own: the log arrives at the cycle's
//! barrier once its writes are done, and waits for the cycle's one `syncfs` per
//! filesystem before it advances its durable offset.
//! If the leader-epoch cache changed, its checkpoint is written before the batches, and
//! so are the `.txnindex` files whose aborted transactions changed; after the sync the
//! producer-state snapshots of segments rolled since are written (`snapshot.rs`).
//!
//! ```text
//!  page_start            start_pos                     end          align_up(end)
//!  |── tail (memory) ────|── pending batches ──────────|── zeros ───|
//!
//!  cycle (Filesystem): log tasks ─ write ─► arrive ─┐
//!                                   barrier: all arrived ─► syncfs per device ─► synced
//!                      log tasks ◄─ set durable, wake waiters ◄──────────────────┘
//! ```

use crate::error::StorageError;
use crate::histogram::LatencyHistogram;
use crate::inner::LogInner;
use crate::segment::{align_down, align_up, SegState, PAGE};
use crate::shard::ShardStorage;
use crate::signal::Signal;
use bytes::Bytes;
use glommio::io::DmaFile;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Largest single DMA write; several are in flight at once.
const WRITE_CHUNK: usize = 1 << 20;
const MAX_IN_FLIGHT: usize = 8;

struct Group {
    seg_base: i64,
    start_pos: u64,
    data: Vec<Bytes>,
}

/// One flusher cycle's shared sync (`FlushSync::Filesystem`): every log of the cycle
/// arrives once (its writes done, or not taking part), then `sync` runs one `syncfs` per
/// filesystem the logs wrote to and publishes the outcome to the logs waiting for it.
/// Owned by the shard's flusher; never crosses cores.
pub(crate) struct CycleSync {
    /// Logs of the cycle that have not arrived yet.
    waiting: Cell<usize>,
    arrived: Signal,
    /// (device, the directory of one log on it) of every log that wrote in this cycle.
    devices: RefCell<Vec<(u64, PathBuf)>>,
    /// None until synced; then Ok, or the error (kind and text) every log gets.
    outcome: RefCell<Option<Result<(), (std::io::ErrorKind, String)>>>,
    synced: Signal,
}

impl CycleSync {
    pub(crate) fn new(logs: usize) -> CycleSync {
        CycleSync {
            waiting: Cell::new(logs),
            arrived: Signal::default(),
            devices: RefCell::new(Vec::new()),
            outcome: RefCell::new(None),
            synced: Signal::default(),
        }
    }

    fn arrive(&self) {
        let n = self.waiting.get().saturating_sub(1);
        self.waiting.set(n);
        if n == 0 {
            self.arrived.notify();
        }
    }

    fn note_device(&self, dev: u64, dir: &std::path::Path) {
        let mut d = self.devices.borrow_mut();
        if !d.iter().any(|x| x.0 == dev) {
            d.push((dev, dir.to_path_buf()));
        }
    }

    async fn wait_synced(&self) -> Result<(), StorageError> {
        loop {
            let w = self.synced.wait();
            if let Some(r) = self.outcome.borrow().as_ref() {
                return r
                    .clone()
                    .map_err(|(kind, msg)| std::io::Error::new(kind, msg).into());
            }
            w.await;
        }
    }

    /// Waits until every log arrived, syncs each filesystem written to on the blocking
    /// helper and wakes the logs; returns (syncs, time they took).
    pub(crate) async fn sync(&self) -> (u64, Duration) {
        while self.waiting.get() > 0 {
            let w = self.arrived.wait();
            if self.waiting.get() == 0 {
                break;
            }
            w.await;
        }
        let devices = std::mem::take(&mut *self.devices.borrow_mut());
        let t = Instant::now();
        let mut outcome = Ok(());
        for (_, dir) in &devices {
            if let Err(e) = crate::blocking::syncfs(dir.clone()).await {
                tracing::error!(dir = %dir.display(), error = %e, "syncfs failed; the cycle's logs fail");
                outcome = Err((e.kind(), format!("syncfs of {}: {e}", dir.display())));
                break;
            }
        }
        let took = t.elapsed();
        *self.outcome.borrow_mut() = Some(outcome);
        self.synced.notify();
        (devices.len() as u64, took)
    }
}

/// Arrives at the cycle's barrier once: when told, or when dropped (an error or an early
/// return), so the cycle never waits for a log that stopped. Arriving also gives back the
/// log's slot in the flusher's write window.
struct Arrival<'a> {
    cycle: Option<&'a CycleSync>,
    slot: Option<glommio::sync::Permit<'a>>,
}

impl Arrival<'_> {
    fn now(&mut self) {
        if let Some(c) = self.cycle.take() {
            self.slot = None;
            c.arrive();
        }
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        self.now();
    }
}

/// Flush everything pending for `log`. Errors are recorded on the log (and its waiters).
/// `slot` (the flusher's write window) is held until the log arrives at the cycle's
/// barrier, or to the end without a cycle. With `cycle`, the data is made durable by the
/// cycle's sync if the log's I/O permit is free now; a log busy with another file change
/// arrives at once and, once it has the permit, syncs its own segments (the cycle does not
/// wait for it).
pub(crate) async fn flush_log(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    cycle: Option<&CycleSync>,
    slot: Option<glommio::sync::Permit<'_>>,
) {
    let mut arrival = Arrival { cycle, slot };
    let permit = match log.io.try_acquire_permit(1) {
        Ok(p) => p,
        Err(_) => {
            arrival.now();
            match crate::permit::acquire(&log.io, 1).await {
                Ok(p) => p,
                Err(_) => return,
            }
        }
    };
    let res = flush_locked(shard, log, &mut arrival, None).await;
    drop(permit);
    if let Err(e) = res {
        tracing::error!(dir = %log.dir.display(), error = %e, "log flush failed; log is now failed");
        // never flushed now: the pending bytes go back to the shard's budget
        log.state_mut().fail(&e);
    }
    log.durable_signal.notify();
}

/// Writes `log`'s journaled batches into their segments without a sync (the journal
/// holds them durably; a checkpoint syncs the segments), sealing a rolled segment once all
/// its batches are written (that syncs it). The log's I/O permit must be held.
/// `written` gets the segments written before the batches leave the pending queue (so a
/// checkpoint that sees none journaled also sees where they went).
pub(crate) async fn write_behind_locked(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    written: &dyn Fn(&[i64]),
) -> Result<(), StorageError> {
    let mut arrival = Arrival {
        cycle: None,
        slot: None,
    };
    flush_locked(shard, log, &mut arrival, Some(written)).await
}

/// Told the segments a write-behind wrote (`write_behind_locked`).
type OnWritten<'a> = &'a dyn Fn(&[i64]);

/// With `behind`: only the journaled batches, no sync but at seal, durable offset left
/// alone (`write_behind_locked`); it gets the segments written.
async fn flush_locked(
    shard: &Rc<ShardStorage>,
    log: &Rc<LogInner>,
    arrival: &mut Arrival<'_>,
    on_written: Option<OnWritten<'_>>,
) -> Result<(), StorageError> {
    let behind = on_written.is_some();
    let mut written_bases = Vec::new();
    let (n, target_end, groups, to_seal, checkpoint) = {
        let mut st = log.state_mut();
        if behind {
            // a failed log's journaled batches too: acknowledged, durable only in the
            // journal (`LogState::fail` keeps them)
            if st.is_deleted() || st.pending().journaled() == 0 {
                return Ok(());
            }
        } else if !st.begin_flush() {
            return Ok(());
        }
        let n = if behind {
            st.pending().journaled()
        } else {
            st.pending().len()
        };
        let mut groups: Vec<Group> = Vec::new();
        for p in st.pending().iter().take(n) {
            match groups.last_mut() {
                Some(g) if g.seg_base == p.seg_base => g.data.push(p.data.clone()),
                _ => groups.push(Group {
                    seg_base: p.seg_base,
                    // a journaled batch where the journal put it (see `Pending::pos`)
                    start_pos: st.write_pos(p),
                    data: vec![p.data.clone()],
                }),
            }
        }
        // a rolled segment is sealed once every batch of it is written
        let unwritten: Vec<i64> = st.pending().iter().skip(n).map(|p| p.seg_base).collect();
        let to_seal: Vec<i64> = st
            .segments()
            .iter()
            .filter(|s| s.state == SegState::Rolled && !unwritten.contains(&s.base))
            .map(|s| s.base)
            .collect();
        let target_end = if behind {
            None
        } else {
            st.pending().back().map(|p| p.last + 1)
        };
        (n, target_end, groups, to_seal, st.epochs_snapshot())
    };
    if groups.is_empty() && to_seal.is_empty() {
        return Ok(());
    }
    log.clear_marker().await?;
    // the epochs of the batches written below reach the checkpoint first
    if let Some((gen, entries)) = checkpoint {
        crate::epoch::write_checkpoint(log.dir.clone(), entries).await?;
        log.state_mut().epochs_persisted(gen);
    }
    // and so do the aborted transactions of the markers among them
    write_txn_files(log).await?;
    let mut bases: Vec<i64> = groups
        .iter()
        .map(|g| g.seg_base)
        .chain(to_seal.iter().copied())
        .collect();
    bases.sort_unstable();
    bases.dedup();
    let mut need_dir_sync = false;
    let mut fsyncs = 0u64;
    let mut fsync_us = 0u64;
    let mut fsync_times = LatencyHistogram::default();
    let mut written = 0u64;
    // with the cycle's sync: segments' new sizes, set once it is done
    let mut unsynced: Vec<(i64, u64)> = Vec::new();
    let cycle = arrival.cycle;
    for base in bases {
        let exists = log.state().segment(base).is_some_and(|s| s.file_exists);
        let file = shard.segment_file(log, base, !exists).await?;
        if !exists {
            need_dir_sync = true;
            log.state_mut().set_file_exists(base);
        }
        let mut new_flushed = None;
        if let Some(g) = groups.iter().find(|g| g.seg_base == base) {
            let len: u64 = g.data.iter().map(|d| d.len() as u64).sum();
            let have = log.state().segment(base).map_or(0, |s| s.flushed);
            // written by an attempt that failed at a later segment (the batches still
            // journaled): not again (a sealed segment's padded rewrite would also leave
            // it longer than its logical size), but still synced as if written now
            if g.start_pos + len > have {
                written += write_region(log, &file, g).await?;
            }
            new_flushed = Some(g.start_pos + len);
        }
        let seal = to_seal.contains(&base);
        if new_flushed.is_some() {
            written_bases.push(base);
        }
        match (cycle, new_flushed) {
            // written behind the journal: synced at its checkpoint (or sealed below)
            (_, Some(f)) if behind && !seal => {
                log.state_mut().set_flushed(base, f);
            }
            // a segment being sealed is synced now, as without a cycle
            (Some(c), Some(f)) if !seal => {
                c.note_device(log.dev, &log.dir);
                unsynced.push((base, f));
            }
            _ => {
                let t = Instant::now();
                file.fdatasync().await?;
                let took = t.elapsed();
                fsync_us += took.as_micros() as u64;
                fsync_times.observe(took);
                fsyncs += 1;
                if let Some(f) = new_flushed {
                    log.state_mut().set_flushed(base, f);
                }
            }
        }
        if seal {
            seal_segment(log, &file, base).await?;
            fsyncs += 1;
        }
    }
    // a segment created here, or a new log's first (created at open) whose entry no
    // directory fsync has covered since
    let dir_fsyncs = u64::from(need_dir_sync || log.dir_unsynced());
    if dir_fsyncs > 0 {
        log.sync_dir().await?;
    }
    if let Some(c) = cycle {
        arrival.now();
        if !unsynced.is_empty() {
            c.wait_synced().await?;
            for (base, f) in unsynced {
                log.state_mut().set_flushed(base, f);
            }
        }
    }
    if let Some(f) = on_written {
        f(&written_bases);
    }
    log.state_mut().finish_flush(n, target_end);
    // rolled segments' producer-state snapshots, now that everything below them is
    // durable
    let due = log.state_mut().take_due_snapshots();
    for (offset, ps) in due {
        persist_snapshot(log, offset, &ps).await?;
    }
    shard.metrics_add(|m| {
        m.flushes += 1;
        m.fsyncs += fsyncs;
        m.fsync_micros_total += fsync_us;
        m.flush_dir_fsyncs += dir_fsyncs;
        m.bytes_written += written;
        m.fsync_durations.merge(&fsync_times);
    });
    Ok(())
}

/// Writes the producer-state snapshot of `ps` for `offset` and removes the ones beyond
/// those the log keeps (the log's I/O permit held: the flusher, close, a rebuild).
pub(crate) async fn persist_snapshot(
    log: &LogInner,
    offset: i64,
    ps: &crate::producer::ProducerStates,
) -> std::io::Result<()> {
    crate::snapshot::write(&log.dir, offset, ps).await?;
    let old = log.state_mut().snapshot_written(offset);
    crate::snapshot::remove(&log.dir, old).await
}

/// Writes the `.txnindex` of every segment whose aborted-transaction entries changed
/// (`txn::write_file`: atomic; removed when there are none), before the batches holding
/// their markers are flushed.
pub(crate) async fn write_txn_files(log: &LogInner) -> Result<(), StorageError> {
    let dirty = log.state().dirty_txn_files();
    for (base, entries) in dirty {
        crate::txn::write_file(&log.dir, base, &entries).await?;
        log.state_mut().txn_file_written(base, entries.len());
    }
    Ok(())
}

/// Cut a rolled segment to its logical size, sync it, persist its indexes (the time
/// index ending with the entry recovery trusts a sealed segment by).
async fn seal_segment(log: &LogInner, file: &DmaFile, base: i64) -> Result<(), StorageError> {
    let Some((size, idx, tidx)) = log.state_mut().seal_indexes(base, &log.dir) else {
        return Ok(());
    };
    file.truncate(size).await?;
    file.fdatasync().await?;
    crate::segment::write_indexes(&log.dir, base, idx, tidx).await?;
    log.state_mut().mark_sealed(base);
    Ok(())
}

/// Copies `len` bytes starting at logical offset `from` of head ++ data into `dst`.
fn gather(head: &[u8], data: &[Bytes], mut from: usize, dst: &mut [u8]) {
    let mut out = 0;
    for piece in std::iter::once(head).chain(data.iter().map(|d| &d[..])) {
        if out == dst.len() {
            break;
        }
        if from >= piece.len() {
            from -= piece.len();
            continue;
        }
        let n = (piece.len() - from).min(dst.len() - out);
        dst[out..out + n].copy_from_slice(&piece[from..from + n]);
        out += n;
        from = 0;
    }
    dst[out..].fill(0);
}

/// Writes `g` after the partial tail page; returns the bytes written (whole pages).
async fn write_region(log: &LogInner, file: &Rc<DmaFile>, g: &Group) -> Result<u64, StorageError> {
    let page_start = align_down(g.start_pos);
    let head_len = (g.start_pos - page_start) as usize;
    let cached = log.state().tail_head(g.seg_base, page_start, head_len);
    let head = match cached {
        Some(h) => h,
        None if head_len == 0 => Vec::new(),
        None => {
            let r = file.read_at_aligned(page_start, PAGE as usize).await?;
            if r.len() < head_len {
                return Err(StorageError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("segment {} shorter than its flushed size", g.seg_base),
                )));
            }
            r[..head_len].to_vec()
        }
    };
    let data_len: usize = g.data.iter().map(|d| d.len()).sum();
    let total = head_len + data_len;
    let padded = align_up(total as u64) as usize;
    let mut writes = Vec::new();
    let mut off = 0usize;
    while off < padded {
        let len = (padded - off).min(WRITE_CHUNK);
        let mut buf = file.alloc_dma_buffer(len);
        gather(&head, &g.data, off, buf.as_bytes_mut());
        writes.push((page_start + off as u64, buf));
        off += len;
    }
    let mut iter = writes.into_iter().peekable();
    while iter.peek().is_some() {
        let batch: Vec<_> = iter.by_ref().take(MAX_IN_FLIGHT).collect();
        // one glommio task per write: re-polling pending glommio I/O from a single task
        // leaks waker references in glommio 0.9 (task refcount overflow)
        let tasks: Vec<_> = batch
            .into_iter()
            .map(|(pos, buf)| {
                let want = buf.len();
                let file = file.clone();
                glommio::spawn_local(async move {
                    let n = file.write_at(buf, pos).await?;
                    if n != want {
                        return Err(StorageError::Io(std::io::Error::new(
                            std::io::ErrorKind::WriteZero,
                            format!("short DMA write: {n} of {want} bytes"),
                        )));
                    }
                    Ok(())
                })
            })
            .collect();
        let mut first_err = None;
        for t in tasks {
            if let Err(e) = t.await {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    // remember the new partial tail page
    let end = g.start_pos + data_len as u64;
    let new_page = align_down(end);
    let tail_len = (end - new_page) as usize;
    let tail = if tail_len > 0 {
        let mut t = vec![0u8; tail_len];
        gather(&head, &g.data, (new_page - page_start) as usize, &mut t);
        Some((g.seg_base, new_page, t))
    } else {
        None
    };
    log.state_mut().set_tail(tail);
    Ok(padded as u64)
}

#[cfg(test)]
mod tests {
    use super::gather;
    use bytes::Bytes;

    #[test]
    fn gather_spans_pieces_and_pads() {
        let data = vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defg")];
        let mut out = [9u8; 6];
        gather(b"XY", &data, 1, &mut out);
        assert_eq!(&out, b"Yabcde");
        let mut out = [9u8; 6];
        gather(b"XY", &data, 6, &mut out);
        assert_eq!(&out, b"efg\0\0\0");
    }
}
