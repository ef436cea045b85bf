//! `ShardStorage`: everything one shard shares between its logs — the batch cache and its
//! read-ahead windows, the open-file table, the dirty list the flusher drains, progress
//! notification, metrics —
//! and the background tasks (flusher; retention + idle-file sweep), each in its own task
//! queue so they cannot starve request handling. Owned by one shard; never crosses cores.
//!
//! ```text
//!  append ─► dirty list ─► flush_wake ─► flusher: join_all(flush_log(l) for l in dirty)
//!                                            └─► durable_signal(l), progress
//! ```

use crate::cache::BatchCache;
use crate::error::StorageError;
use crate::files::FileTable;
use crate::log::{LogInner, PartitionLog};
use crate::readahead::ReadAheads;
use crate::segment::{log_path, open_segment_file};
use crate::signal::Signal;
use crate::ShardStorageOptions;
use glommio::io::DmaFile;
use glommio::{Latency, Shares};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// Counters for one shard (summed across shards by the broker on scrape).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageMetrics {
    pub bytes_appended: u64,
    pub batches_appended: u64,
    pub flushes: u64,
    pub fsyncs: u64,
    pub fsync_micros_total: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub open_files: u64,
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

/// Storage state of one shard. Owned by one shard (one glommio executor); never crosses
/// cores. Create it with [`ShardStorage::start`] inside the executor.
pub struct ShardStorage {
    pub(crate) opts: ShardStorageOptions,
    pub(crate) inner: RefCell<ShardInner>,
    pub(crate) progress: Signal,
    pub(crate) flush_wake: Signal,
    /// Bytes appended to this shard's logs and not yet durable (see `pending.rs`).
    pub(crate) unflushed: Rc<Cell<usize>>,
    metrics: RefCell<StorageMetrics>,
    stopping: Cell<bool>,
    flusher_done: Signal,
    flusher_running: Cell<bool>,
    me: Weak<ShardStorage>,
}

impl ShardStorage {
    /// Create the shard's storage and spawn its flusher and background tasks. Must be
    /// called inside a glommio executor.
    pub fn start(opts: ShardStorageOptions) -> Rc<ShardStorage> {
        let shard = Rc::new_cyclic(|me| ShardStorage {
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
            unflushed: Rc::new(Cell::new(0)),
            metrics: RefCell::new(StorageMetrics::default()),
            stopping: Cell::new(false),
            flusher_done: Signal::default(),
            flusher_running: Cell::new(true),
        });
        let ex = glommio::executor();
        let flush_tq = ex.create_task_queue(
            Shares::Static(400),
            Latency::Matters(Duration::from_millis(1)),
            "sluice-flush",
        );
        let bg_tq = ex.create_task_queue(
            Shares::Static(50),
            Latency::NotImportant,
            "sluice-storage-bg",
        );
        let s = shard.clone();
        match glommio::spawn_local_into(async move { flusher_loop(s).await }, flush_tq) {
            Ok(t) => {
                t.detach();
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot spawn the storage flusher in its queue; using the default queue");
                let s = shard.clone();
                glommio::spawn_local(async move { flusher_loop(s).await }).detach();
            }
        }
        let w = Rc::downgrade(&shard);
        match glommio::spawn_local_into(async move { background_loop(w).await }, bg_tq) {
            Ok(t) => {
                t.detach();
            }
            Err(e) => tracing::error!(error = %e, "cannot spawn storage background task"),
        }
        shard
    }

    /// Resolves the next time any log of this shard advances its durable offset, is
    /// truncated or deleted. Cancel-safe.
    pub async fn wait_progress(&self) {
        self.progress.wait().await
    }

    /// Flush and fsync every log, write clean-shutdown markers, close files, stop tasks.
    pub async fn shutdown(&self) -> Result<(), StorageError> {
        let logs: Vec<Rc<LogInner>> = self.inner.borrow().logs.values().cloned().collect();
        let mut first_err = None;
        for chunk in logs.chunks(FLUSH_FANOUT) {
            let Some(me) = self.me.upgrade() else { break };
            // one task per log (see flusher_loop)
            let tasks: Vec<_> = chunk
                .iter()
                .map(|l| {
                    let (s, l) = (me.clone(), l.clone());
                    glommio::spawn_local(async move { crate::recovery::close_inner(&s, &l).await })
                })
                .collect();
            for t in tasks {
                if let Err(e) = t.await {
                    first_err.get_or_insert(e);
                }
            }
        }
        self.stopping.set(true);
        self.flush_wake.notify();
        while self.flusher_running.get() {
            let w = self.flusher_done.wait();
            if !self.flusher_running.get() {
                break;
            }
            w.await;
        }
        let files: Vec<Rc<DmaFile>> = {
            let mut sh = self.inner.borrow_mut();
            sh.files.take_idle(Duration::ZERO)
        };
        crate::files::close_files(files).await;
        first_err.map_or(Ok(()), Err)
    }

    /// Bytes appended to this shard's logs that are not yet durable. Produce admission
    /// compares it with its budget; it falls as the flusher completes cycles (each ends
    /// with a `wait_progress` wake-up) or logs are truncated, deleted or fail.
    pub fn unflushed_bytes(&self) -> usize {
        self.unflushed.get()
    }

    pub fn metrics(&self) -> StorageMetrics {
        let mut m = self.metrics.borrow().clone();
        m.open_files = self.inner.borrow().files.len() as u64;
        m
    }

    pub(crate) fn metrics_add(&self, f: impl FnOnce(&mut StorageMetrics)) {
        f(&mut self.metrics.borrow_mut())
    }

    /// The segment's DMA file, opening it (lazily, bounded by max_open_files) if needed.
    pub(crate) async fn segment_file(
        &self,
        log: &LogInner,
        base: i64,
        create: bool,
    ) -> Result<Rc<DmaFile>, StorageError> {
        if let Some(f) = self.inner.borrow_mut().files.get(log.id, base) {
            return Ok(f);
        }
        let f = Rc::new(open_segment_file(&log_path(&log.dir, base), create).await?);
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
}

/// Logs flushed (or closed) concurrently by one task.
const FLUSH_FANOUT: usize = 64;

async fn flusher_loop(shard: Rc<ShardStorage>) {
    loop {
        let wait = shard.flush_wake.wait();
        let dirty: Vec<Rc<LogInner>> = std::mem::take(&mut shard.inner.borrow_mut().dirty);
        if dirty.is_empty() {
            if shard.stopping.get() {
                break;
            }
            wait.await;
            continue;
        }
        drop(wait);
        // bounded fan-out, one glommio task per log: re-polling many pending glommio I/Os
        // from a single task leaks waker references in glommio 0.9 (refcount overflow)
        for chunk in dirty.chunks(FLUSH_FANOUT) {
            let tasks: Vec<_> = chunk
                .iter()
                .map(|l| {
                    let (s, l) = (shard.clone(), l.clone());
                    glommio::spawn_local(async move { crate::flusher::flush_log(&s, &l).await })
                })
                .collect();
            for t in tasks {
                t.await;
            }
        }
        shard.progress.notify();
    }
    shard.flusher_running.set(false);
    shard.flusher_done.notify();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn background_loop(shard: Weak<ShardStorage>) {
    let Some(s) = shard.upgrade() else { return };
    let idle = s.opts.idle_file_timeout;
    let retention_every = s.opts.retention_check_interval;
    drop(s);
    let tick = (idle / 2)
        .min(retention_every)
        .max(Duration::from_millis(10));
    let mut last_retention = Instant::now();
    loop {
        glommio::timer::sleep(tick).await;
        let Some(s) = shard.upgrade() else { return };
        if s.stopping.get() {
            return;
        }
        let (files, logs) = {
            let mut sh = s.inner.borrow_mut();
            let files = sh.files.take_idle(idle);
            let logs: Vec<Rc<LogInner>> = sh.logs.values().cloned().collect();
            (files, logs)
        };
        crate::files::close_files(files).await;
        for l in &logs {
            crate::read::drop_idle_indexes(l);
        }
        if last_retention.elapsed() >= retention_every {
            last_retention = Instant::now();
            for l in logs {
                let log = PartitionLog {
                    shard: s.clone(),
                    inner: l,
                };
                if let Err(e) = log.enforce_retention(now_ms()).await {
                    if !matches!(e, StorageError::Closed) {
                        tracing::warn!(dir = %log.inner.dir.display(), error = %e, "retention failed");
                    }
                }
                glommio::yield_if_needed().await;
            }
        }
    }
}
