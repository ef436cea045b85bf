//! `ShardStorage`: everything one shard shares between its logs — the registry of open
//! logs, the batch cache and the read-ahead windows, the open-file table, the dirty list
//! the flusher drains, progress notification, the unflushed-bytes total, metrics. Its
//! background tasks (flusher; retention + idle-file sweep; the log cleaner), `start` and
//! `shutdown` are in `tasks.rs`, above the operations they run. Owned by one shard; never crosses cores.
//!
//! ```text
//!  append ─► dirty list ─► flush_wake ─► flusher (tasks.rs) ─► durable_signal(l), progress
//! ```

use crate::cache::BatchCache;
use crate::config::ShardStorageOptions;
use crate::error::StorageError;
use crate::files::FileTable;
use crate::histogram::LatencyHistogram;
use crate::inner::LogInner;
use crate::readahead::ReadAheads;
use crate::segment::{log_path, open_segment_file, with_suffix, SWAP};
use crate::signal::Signal;
use glommio::io::DmaFile;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::rc::{Rc, Weak};

/// Counters for one shard (summed across shards by the broker on scrape).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageMetrics {
    pub bytes_appended: u64,
    pub batches_appended: u64,
    pub flushes: u64,
    /// Flusher cycles: each takes the dirty list and makes every log on it durable.
    pub flush_cycles: u64,
    /// Wall time of each flusher cycle (from taking the dirty list to the last log's
    /// durable signal).
    pub flush_cycle_durations: LatencyHistogram,
    pub fsyncs: u64,
    pub fsync_micros_total: u64,
    /// Each segment `fdatasync` of a group commit (not the sync that seals a rolled one),
    /// and with `FlushSync::Filesystem` each cycle's `syncfs` calls (counted in `fsyncs`);
    /// with `FlushSync::Journal` each cycle's journal write and sync.
    pub fsync_durations: LatencyHistogram,
    /// Directory fsyncs a group commit waited for (a segment file it created, or a new
    /// log's first segment whose entry no earlier directory fsync covered).
    pub flush_dir_fsyncs: u64,
    /// Bytes the flusher wrote to segment files: whole aligned pages, so the rewritten
    /// partial tail page and the zero padding count too.
    pub bytes_written: u64,
    /// Batches read from memory (the batch cache or the pending queue).
    pub cache_hits: u64,
    /// Batches read from disk (in neither memory nor a read-ahead window).
    pub cache_misses: u64,
    /// Batches read from a read-ahead window (not in the cache, no disk read waited for).
    pub readahead_hits: u64,
    pub open_files: u64,
    /// Segment files taken out of their logs (retention, the cleaner's swaps, deleted
    /// logs) whose space is not freed yet (`reaper.rs`).
    pub retired_files: u64,
    /// Log cleaner passes completed (segments swapped in).
    pub cleaner_passes: u64,
    /// Bytes the cleaner read (building its key map and copying segments).
    pub cleaner_bytes_read: u64,
    /// Bytes of cleaned segments written.
    pub cleaner_bytes_written: u64,
    /// Bytes the swapped-in segments are smaller than the ones they replaced.
    pub cleaner_bytes_reclaimed: u64,
    /// Records the cleaner removed (superseded, expired tombstones, keyless).
    pub cleaner_records_removed: u64,
    /// How long the last completed pass took.
    pub cleaner_last_pass_micros: u64,
    /// Bytes written to the journal (`storage.flush.sync=journal`): record sets, whole
    /// pages.
    pub journal_bytes_written: u64,
    /// Journal checkpoints (segments synced, an epoch retired).
    pub journal_checkpoints: u64,
}

pub(crate) struct ShardInner {
    pub(crate) next_log_id: u64,
    /// Every open log, held until it is closed or deleted (shutdown closes them all).
    pub(crate) logs: HashMap<u64, Rc<LogInner>>,
    pub(crate) dirs: HashSet<PathBuf>,
    pub(crate) dirty: Vec<Rc<LogInner>>,
    pub(crate) cache: BatchCache,
    pub(crate) readahead: ReadAheads,
    pub(crate) files: FileTable,
}

/// Longest a background disk operation waits for the flusher's cycle to end
/// (`ShardStorage::disk_turn`).
pub(crate) const TURN_MAX: std::time::Duration = std::time::Duration::from_millis(50);

/// Opens of a shard surveying and rescanning their logs at once (see `ShardStorage::open_io`).
const OPEN_IO: u64 = 32;

/// Storage state of one shard. Owned by one shard (one glommio executor); never crosses
/// cores. Create it with [`ShardStorage::start`] inside the executor.
pub struct ShardStorage {
    pub(crate) opts: ShardStorageOptions,
    pub(crate) inner: RefCell<ShardInner>,
    pub(crate) progress: Signal,
    pub(crate) flush_wake: Signal,
    /// Bytes appended to this shard's logs and not yet durable, and (journal mode)
    /// durable but not yet written behind (see `pending.rs`).
    pub(crate) totals: crate::pending::Totals,
    metrics: RefCell<StorageMetrics>,
    /// Shutdown under way: the flusher exits once the dirty list is empty.
    pub(crate) stopping: Cell<bool>,
    /// Notified when the flusher exits (`flusher_running` false).
    pub(crate) flusher_done: Signal,
    pub(crate) flusher_running: Cell<bool>,
    /// A flusher cycle is writing or syncing (set from its start to its end).
    pub(crate) flushing: Cell<bool>,
    /// Notified at the end of every flusher cycle.
    pub(crate) cycle_done: Signal,
    /// One log-cleaner pass at a time on this shard (one dedupe buffer's memory, and
    /// never two passes over the same log).
    pub(crate) cleaner_pass: glommio::sync::Semaphore,
    /// With `FlushSync::Journal`: the shard's journal once opened (the first time a cycle
    /// would use it, `tasks::journal_ready`), or why it could not be (cycles then sync
    /// segments).
    pub(crate) journal: RefCell<Option<Result<Rc<crate::journal_file::JournalCtl>, String>>>,
    /// The journal is being opened (its files filled) by a task of its own.
    pub(crate) journal_opening: Cell<bool>,
    /// A journal was still live at start (no replay ran), or the journal failed
    /// (`journal_flush::poison`): every cycle fails its logs.
    pub(crate) journal_refused: Cell<bool>,
    /// One `syncfs` for many logs' recovery and close writes (`group_sync.rs`).
    pub(crate) group_sync: crate::group_sync::GroupSync,
    /// Opens surveying and rescanning at once (`recovery::open_log`): bounds their reads
    /// and helper calls while any number of opens wait for a group sync.
    pub(crate) open_io: glommio::sync::Semaphore,
    /// Files taken out of the logs, freed in the background (`reaper.rs`).
    pub(crate) reaper: crate::reaper::Reaper,
    pub(crate) me: Weak<ShardStorage>,
}

impl ShardStorage {
    /// The shard's storage, without its background tasks (`ShardStorage::start` spawns
    /// them).
    pub(crate) fn new(opts: ShardStorageOptions) -> Rc<ShardStorage> {
        Rc::new_cyclic(|me| ShardStorage {
            me: me.clone(),
            inner: RefCell::new(ShardInner {
                next_log_id: 1,
                logs: HashMap::new(),
                dirs: HashSet::new(),
                dirty: Vec::new(),
                cache: BatchCache::new(opts.cache_bytes),
                readahead: ReadAheads::new(opts.readahead_bytes),
                files: FileTable::new(opts.max_open_files),
            }),
            opts,
            progress: Signal::default(),
            flush_wake: Signal::default(),
            totals: Default::default(),
            metrics: RefCell::new(StorageMetrics::default()),
            stopping: Cell::new(false),
            flusher_done: Signal::default(),
            flusher_running: Cell::new(true),
            flushing: Cell::new(false),
            cycle_done: Signal::default(),
            cleaner_pass: glommio::sync::Semaphore::new(1),
            journal: RefCell::new(None),
            journal_opening: Cell::new(false),
            journal_refused: Cell::new(false),
            group_sync: Default::default(),
            open_io: glommio::sync::Semaphore::new(OPEN_IO),
            reaper: Default::default(),
        })
    }

    /// Waits for a background disk operation's turn: at once while the flusher is idle
    /// and no log is dirty, else until the flusher's cycle under way ends (at most
    /// `TURN_MAX`). A produce cycle's writes and `fdatasync` then share the device with
    /// one background I/O at most, instead of queueing behind a run of them; under
    /// constant produce the background work still moves one I/O per cycle.
    pub(crate) async fn disk_turn(&self) {
        if !self.flushing.get() && self.inner.borrow().dirty.is_empty() {
            return;
        }
        let done = self.cycle_done.wait();
        futures_lite::future::or(done, glommio::timer::sleep(TURN_MAX)).await;
    }

    /// True when the shard's journal is open (`FlushSync::Journal`, after the flusher
    /// opened it).
    pub(crate) fn journal_open(&self) -> bool {
        matches!(&*self.journal.borrow(), Some(Ok(_)))
    }

    /// The shard's journal (`FlushSync::Journal`), an error if it is not open.
    pub(crate) fn journal_ctl(&self) -> Result<Rc<crate::journal_file::JournalCtl>, StorageError> {
        match &*self.journal.borrow() {
            Some(Ok(c)) => Ok(c.clone()),
            Some(Err(e)) => Err(StorageError::Io(std::io::Error::other(e.clone()))),
            None => Err(StorageError::Io(std::io::Error::other(
                "the shard's journal is not open",
            ))),
        }
    }

    /// Resolves the next time any log of this shard advances its durable offset, is
    /// truncated or deleted. Cancel-safe.
    pub async fn wait_progress(&self) {
        self.progress.wait().await
    }

    /// Bytes appended to this shard's logs that are not yet durable. Produce admission
    /// compares it with its budget; it falls as the flusher completes cycles (each ends
    /// with a `wait_progress` wake-up) or logs are truncated, deleted or fail.
    pub fn unflushed_bytes(&self) -> usize {
        self.totals.unflushed.get()
    }

    /// With `FlushSync::Journal`: bytes durable in the journal, not yet written behind into
    /// their segments (held in memory, readable).
    pub fn journal_behind_bytes(&self) -> usize {
        self.totals.behind.get()
    }

    /// Bytes held in memory that produce admission counts against its budget: the
    /// unflushed bytes, plus (journal mode) the journaled bytes not yet written behind
    /// beyond `storage.journal.behind.max.bytes`. Falls as `unflushed_bytes` does, and as
    /// the write-behind task completes passes (each ends with a `wait_progress` wake-up).
    pub fn admission_bytes(&self) -> usize {
        let behind = self.totals.behind.get();
        self.totals.unflushed.get() + behind.saturating_sub(self.opts.journal_behind_bytes)
    }

    pub fn metrics(&self) -> StorageMetrics {
        let mut m = self.metrics.borrow().clone();
        m.open_files = self.inner.borrow().files.len() as u64;
        m.retired_files = self.reaper.queued_files() as u64;
        m
    }

    pub(crate) fn metrics_add(&self, f: impl FnOnce(&mut StorageMetrics)) {
        f(&mut self.metrics.borrow_mut())
    }

    /// The segment's DMA file, opening it (lazily, bounded by max_open_files) if needed.
    /// A segment the cleaner just swapped in may still be at `<base>.log.swap` (renamed
    /// atomically to `<base>.log` right after): tried first, then the final name. The file
    /// is remembered only if no swap happened while it opened (then the name may have
    /// meant the replaced file; callers that looked the segment up before recheck
    /// `LogState::layout_epoch` and start again).
    pub(crate) async fn segment_file(
        &self,
        log: &LogInner,
        base: i64,
        create: bool,
    ) -> Result<Rc<DmaFile>, StorageError> {
        if let Some(f) = self.inner.borrow_mut().files.get(log.id, base) {
            return Ok(f);
        }
        let (layout, in_swap) = {
            let st = log.state();
            (
                st.layout_epoch(),
                st.segment(base).is_some_and(|s| s.in_swap),
            )
        };
        let path = log_path(&log.dir, base);
        let swapped = if in_swap {
            match open_segment_file(&with_suffix(&path, SWAP), false).await {
                Ok(f) => Some(f),
                Err(StorageError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let f = match swapped {
            Some(f) => Rc::new(f),
            None => Rc::new(open_segment_file(&path, create).await?),
        };
        if log.state().layout_epoch() != layout {
            return Ok(f);
        }
        let evicted = self
            .inner
            .borrow_mut()
            .files
            .insert(log.id, base, f.clone());
        crate::files::close_files(evicted).await;
        Ok(f)
    }

    pub(crate) fn register(&self, inner_fn: impl FnOnce(u64) -> Rc<LogInner>) -> Rc<LogInner> {
        let id = {
            let mut sh = self.inner.borrow_mut();
            sh.next_log_id += 1;
            sh.next_log_id
        };
        let log = inner_fn(id);
        let mut sh = self.inner.borrow_mut();
        sh.logs.insert(id, log.clone());
        sh.dirs.insert(log.dir.clone());
        log
    }

    /// Forget a closed or deleted log: cache entries, open files, registry.
    pub(crate) async fn unregister(&self, log: &LogInner) {
        let files = {
            let mut sh = self.inner.borrow_mut();
            sh.logs.remove(&log.id);
            sh.dirs.remove(&log.dir);
            sh.cache.drop_log(log.id);
            sh.readahead.drop_log(log.id);
            sh.dirty.retain(|l| l.id != log.id);
            sh.files.remove_log(log.id)
        };
        crate::files::close_files(files).await;
    }

    /// Wake the waiters of `log` and of the shard: its durable offset or end moved, or it
    /// failed, closed or was deleted.
    pub(crate) fn notify_log(&self, log: &LogInner) {
        log.durable_signal.notify();
        self.progress.notify();
    }

    /// Forget what the shard holds for `log` from offset `cut` on (a truncation): cached
    /// batches, read-ahead windows, and the open files of segments `bases`, which the
    /// caller closes.
    pub(crate) fn forget_from(&self, log: u64, cut: i64, bases: &[i64]) -> Vec<Rc<DmaFile>> {
        let mut sh = self.inner.borrow_mut();
        sh.cache.remove_from(log, cut);
        sh.readahead.drop_log(log);
        bases
            .iter()
            .filter_map(|b| sh.files.remove(log, *b))
            .collect()
    }

    /// Forget what the shard holds for `log` before offset `start` (retention): cached
    /// batches, and the open files of segments `bases`, which the caller closes.
    pub(crate) fn forget_before(&self, log: u64, start: i64, bases: &[i64]) -> Vec<Rc<DmaFile>> {
        let mut sh = self.inner.borrow_mut();
        sh.cache.remove_before(log, start);
        bases
            .iter()
            .filter_map(|b| sh.files.remove(log, *b))
            .collect()
    }

    /// Forget what the shard holds for `log` of segments the cleaner replaced (`bases`,
    /// covering the offsets below `end`): cached batches (the cleaned segments hold other
    /// versions of them), read-ahead windows, and their open files, which the caller
    /// closes (a read still using one keeps it open until it ends).
    pub(crate) fn forget_replaced(&self, log: u64, end: i64, bases: &[i64]) -> Vec<Rc<DmaFile>> {
        let mut sh = self.inner.borrow_mut();
        sh.cache.remove_before(log, end);
        sh.readahead.drop_log(log);
        bases
            .iter()
            .filter_map(|b| sh.files.remove(log, *b))
            .collect()
    }

    /// Put `batches` of `log` in the shard cache and, unless it already is, `log` on the
    /// dirty list (then the flusher is woken).
    pub(crate) fn appended(
        &self,
        log: &Rc<LogInner>,
        batches: Vec<crate::cache::Batch>,
        was_dirty: bool,
    ) {
        {
            let mut sh = self.inner.borrow_mut();
            for (b, l, d) in batches {
                sh.cache.insert(log.id, b, l, d);
            }
            if !was_dirty {
                sh.dirty.push(log.clone());
            }
        }
        if !was_dirty {
            self.flush_wake.notify();
        }
    }
}
