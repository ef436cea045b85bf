//! The shard's storage tasks and its life cycle: `ShardStorage::start` spawns the flusher
//! (task queue "sluice-flush": each cycle takes the dirty list and flushes its logs, one
//! task per log, `FLUSH_WINDOW` writing at once; with `FlushSync::Filesystem` the cycle
//! then runs one `syncfs` per filesystem before the logs advance; with
//! `FlushSync::Journal` a cycle is `journal_flush::cycle`, and the write-behind task runs
//! beside it), the background
//! task (queue "sluice-storage-bg", low shares: closes idle files, frees idle indexes,
//! applies retention to every log) and, in the same queue, the log cleaner (every
//! `cleaner_backoff`, passes over the dirtiest compacted logs until none needs one), each
//! in a queue of its own so none starves request handling; `shutdown` closes every log and
//! stops them (a cleaning pass finds its log closed and drops its files). Above the
//! operations it runs (`flusher`, `retention`, `cleaner`, `recovery`): they never name
//! this module. Owned by one shard.
//!
//! ```text
//!  append ─► dirty list ─► flush_wake ─► flusher_loop: flush_log(l) for l in dirty
//!                                          (window of 64; [syncfs per filesystem])
//!                                            └─► durable_signal(l), progress
//! ```

use crate::config::{FlushSync, ShardStorageOptions};
use crate::error::StorageError;
use crate::flusher::CycleSync;
use crate::inner::LogInner;
use crate::reaper;
use crate::shard::ShardStorage;
use glommio::io::DmaFile;
use glommio::{Latency, Shares};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

impl ShardStorage {
    /// Create the shard's storage and spawn its flusher and background tasks. Must be
    /// called inside a glommio executor.
    pub fn start(opts: ShardStorageOptions) -> Rc<ShardStorage> {
        let shard = ShardStorage::new(opts);
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
        let w = Rc::downgrade(&shard);
        match glommio::spawn_local_into(async move { reaper_loop(w).await }, bg_tq) {
            Ok(t) => {
                t.detach();
            }
            Err(e) => tracing::error!(error = %e, "cannot spawn the segment reaper"),
        }
        if shard.opts.cleaner_enabled {
            let w = Rc::downgrade(&shard);
            match glommio::spawn_local_into(async move { cleaner_loop(w).await }, bg_tq) {
                Ok(t) => {
                    t.detach();
                }
                Err(e) => tracing::error!(error = %e, "cannot spawn the log cleaner"),
            }
        }
        shard
    }

    /// One step of the shard's log cleaner now, as its background task takes them: a
    /// pass over the dirtiest compacted log whose dirty ratio reaches its
    /// `min.cleanable.dirty.ratio` or whose oldest dirty batch is past its
    /// `max.compaction.lag.ms`, with `now_ms` as the time. None if no log needs one.
    pub async fn run_cleaner(
        &self,
        now_ms: i64,
    ) -> Result<Option<crate::cleaner::CleanerPass>, StorageError> {
        let Some(me) = self.me.upgrade() else {
            return Ok(None);
        };
        crate::cleaner::clean_dirtiest(&me, now_ms).await
    }

    /// Flush and fsync every log, write clean-shutdown markers, close files, stop tasks.
    pub async fn shutdown(&self) -> Result<(), StorageError> {
        let logs: Vec<Rc<LogInner>> = self.inner.borrow().logs.values().cloned().collect();
        let (n, t) = (logs.len(), Instant::now());
        let (syncs_before, time_before) = self.group_sync.stats();
        let mut first_err = None;
        if let Some(me) = self.me.upgrade() {
            // what the journal holds goes into the segments first, synced by one syncfs
            // per device rather than by each close's barrier (a failure is logged: the
            // barriers then do it the usual way)
            if let Err(e) = crate::journal_flush::checkpoint_before_close(&me).await {
                tracing::warn!(error = %e, "journal checkpoint before closing the shard's logs failed");
            }
            // one task per log (see flusher_loop), FLUSH_FANOUT of them writing at once;
            // their syncs shared (`recovery::close_logs`)
            if let Err(e) = crate::recovery::close_logs(&me, logs, FLUSH_FANOUT).await {
                first_err = Some(e);
            }
        }
        let (syncs, sync_time) = self.group_sync.stats();
        tracing::info!(
            logs = n,
            ms = t.elapsed().as_millis() as u64,
            syncfs = syncs - syncs_before,
            syncfs_ms = (sync_time - time_before).as_millis() as u64,
            "closed the shard's logs"
        );
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
        // the reaper stops at its next step (it sees `stopping`); what it had not freed
        // goes now, at once: nothing is producing any more
        self.reaper.wake.notify();
        for d in self.reaper.take_all() {
            let (dir, files, remove_dir) = (d.dir.clone(), d.files, d.remove_dir);
            let d = dir.clone();
            let res = crate::blocking::run(&dir, move || {
                reaper::remove_now(&files, remove_dir.then_some(d.as_path()))
            })
            .await;
            if let Err(e) = res {
                tracing::warn!(dir = %dir.display(), error = %e,
                    "cannot remove retired files at shutdown; the next start retries");
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Logs closed concurrently at shutdown.
const FLUSH_FANOUT: usize = 64;
/// Logs writing (and, with `FlushSync::Segment`, syncing) at once in a flusher cycle: a
/// window, not a barrier per chunk, so one slow log holds up only its own slot.
const FLUSH_WINDOW: usize = 64;

async fn flusher_loop(shard: Rc<ShardStorage>) {
    let window = Rc::new(glommio::sync::Semaphore::new(FLUSH_WINDOW as u64));
    if shard.opts.flush_sync == FlushSync::Journal {
        refuse_unreplayed_journal(&shard).await;
        if shard.opts.journal_min_logs <= 1 && !shard.journal_refused.get() {
            // every cycle journals: the journal is opened before the first
            open_journal(shard.clone(), false).await;
        }
    }
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
        let _cycle = Cycle::start(&shard);
        let started = Instant::now();
        if shard.opts.flush_sync == FlushSync::Journal
            && (shard.journal_refused.get()
                || (dirty.len() >= shard.opts.journal_min_logs && journal_ready(&shard)))
        {
            crate::journal_flush::cycle(&shard, dirty).await;
            shard.metrics_add(|m| {
                m.flush_cycles += 1;
                m.flush_cycle_durations.observe(started.elapsed());
            });
            shard.progress.notify();
            continue;
        }
        let cycle = match shard.opts.flush_sync {
            FlushSync::Segment | FlushSync::Journal => None,
            FlushSync::Filesystem => Some(Rc::new(CycleSync::new(dirty.len()))),
        };
        // one glommio task per log: re-polling many pending glommio I/Os from a single
        // task leaks waker references in glommio 0.9 (refcount overflow)
        let tasks: Vec<_> = dirty
            .into_iter()
            .map(|l| {
                let (s, w, c) = (shard.clone(), window.clone(), cycle.clone());
                glommio::spawn_local(async move {
                    // with a cycle sync the slot is held for the writes only: the log
                    // then waits for the sync without holding up the others' writes
                    let slot = crate::permit::acquire(&w, 1).await.ok();
                    crate::flusher::flush_log(&s, &l, c.as_deref(), slot).await
                })
            })
            .collect();
        if let Some(c) = &cycle {
            let (syncs, took) = c.sync().await;
            shard.metrics_add(|m| {
                m.fsyncs += syncs;
                m.fsync_micros_total += took.as_micros() as u64;
                if syncs > 0 {
                    m.fsync_durations.observe(took);
                }
            });
        }
        for t in tasks {
            t.await;
        }
        let took = started.elapsed();
        shard.metrics_add(|m| {
            m.flush_cycles += 1;
            m.flush_cycle_durations.observe(took);
        });
        shard.progress.notify();
    }
    shard.flusher_running.set(false);
    shard.flusher_done.notify();
    // the write-behind task ends once the flusher has (it may sleep until woken)
    if let Some(Ok(ctl)) = &*shard.journal.borrow() {
        ctl.behind_wake.notify();
    }
}

/// Whether a cycle can go through the shard's journal (`FlushSync::Journal`). The
/// journal is opened the first time a cycle would use it, by a task of its own (its files
/// are filled with zeros on first use, `storage.journal.bytes` each, a disk turn at a
/// time): until it is open, and for good if it cannot be (logged), cycles sync segments
/// as `FlushSync::Segment` does, which is as durable.
fn journal_ready(shard: &Rc<ShardStorage>) -> bool {
    if shard.journal_open() {
        return true;
    }
    if shard.journal.borrow().is_some() || shard.journal_opening.get() {
        return false; // failed, or being opened
    }
    shard.journal_opening.set(true);
    glommio::spawn_local(open_journal(shard.clone(), true)).detach();
    false
}

/// This shard's journal still live when the shard starts (a replay did not run: the
/// broker always runs one first) holds entries a later replay would write over anything
/// the segments take meanwhile: every cycle then fails its logs (journal cycles with the
/// journal refused), as opening it would have, rather than lose data.
async fn refuse_unreplayed_journal(shard: &Rc<ShardStorage>) {
    let Some(dir) = shard.opts.journal_dir.clone() else {
        return;
    };
    let (d, id) = (dir.clone(), shard.opts.journal_shard);
    let live = crate::blocking::run(&dir, move || crate::journal::shard_journal_live(&d, id));
    let why = match live.await {
        Ok(false) => return,
        Ok(true) => format!(
            "a live journal under {}: replay it (replay_journals) before the shard starts",
            dir.join(crate::journal::JOURNAL_DIR).display()
        ),
        Err(e) => format!("cannot read the journals' headers: {e}"),
    };
    tracing::error!(
        why,
        "the shard's journal is refused; its logs fail on flush"
    );
    shard.journal_refused.set(true);
    *shard.journal.borrow_mut() = Some(Err(why));
}

/// Opens the shard's journal and starts its write-behind task; `gated`: the zero-fill of
/// new files waits for disk turns (cycles run meanwhile).
async fn open_journal(s: Rc<ShardStorage>, gated: bool) {
    let t = Instant::now();
    let opened = crate::journal_file::JournalCtl::open(
        s.opts.journal_dir.as_deref(),
        s.opts.journal_shard,
        s.opts.journal_bytes,
        gated.then_some(&*s),
    )
    .await;
    s.journal_opening.set(false);
    match opened {
        Ok(c) => {
            let c = Rc::new(c);
            *s.journal.borrow_mut() = Some(Ok(c.clone()));
            tracing::info!(
                ms = t.elapsed().as_millis() as u64,
                "the shard's journal is open"
            );
            glommio::spawn_local(crate::journal_flush::behind_loop(s.clone(), c)).detach();
        }
        Err(e) if s.stopping.get() => {
            tracing::info!(error = %e, "the shard stopped before its journal was open");
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot open the shard's journal; its group commits sync segment files instead");
            *s.journal.borrow_mut() = Some(Err(e.to_string()));
        }
    }
}

/// Marks a flusher cycle under way (`ShardStorage::flushing`) until it drops, then
/// notifies `cycle_done`: the log cleaner's reads and writes wait for it
/// (`cleaner_io::disk_turn`).
struct Cycle<'a>(&'a ShardStorage);

impl<'a> Cycle<'a> {
    fn start(shard: &'a ShardStorage) -> Cycle<'a> {
        shard.flushing.set(true);
        Cycle(shard)
    }
}

impl Drop for Cycle<'_> {
    fn drop(&mut self) {
        self.0.flushing.set(false);
        self.0.cycle_done.notify();
    }
}

/// Sleeps `cleaner_backoff`, then cleans the dirtiest compacted log that needs it, again
/// and again until none does (Kafka's CleanerThread).
async fn cleaner_loop(shard: Weak<ShardStorage>) {
    let Some(s) = shard.upgrade() else { return };
    let backoff = s.opts.cleaner_backoff.max(Duration::from_millis(10));
    drop(s);
    loop {
        glommio::timer::sleep(backoff).await;
        loop {
            let Some(s) = shard.upgrade() else { return };
            if s.stopping.get() {
                return;
            }
            match crate::cleaner::clean_dirtiest(&s, crate::segment::now_ms()).await {
                Ok(Some(_)) => glommio::yield_if_needed().await,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "log cleaner pass failed");
                    break;
                }
            }
        }
    }
}

/// The shard's reaper (`reaper.rs`): frees the retired files one after another, pausing
/// `GAP` and for the flusher's cycle under way after every `STEP` freed.
async fn reaper_loop(shard: Weak<ShardStorage>) {
    let mut freed = 0u64;
    loop {
        let Some(s) = shard.upgrade() else { return };
        if s.stopping.get() {
            return;
        }
        let Some(d) = s.reaper.front() else {
            let w = s.reaper.wake.wait();
            // the wait holds `s` alive only while nothing is queued: shutdown notifies
            if s.reaper.front().is_none() && !s.stopping.get() {
                w.await;
            }
            continue;
        };
        while !d.ready() {
            if s.stopping.get() {
                return;
            }
            glommio::timer::sleep(reaper::WATCH_POLL).await;
        }
        for f in &d.files {
            // each file cut from its end, the calls keyed by the file: no other call
            // touches a retired name, and the log's own calls on its directory (rolls,
            // checkpoints) need not queue behind the cuts
            loop {
                if freed >= reaper::STEP {
                    glommio::timer::sleep(reaper::GAP).await;
                    s.disk_turn().await;
                    freed = 0;
                }
                if s.stopping.get() {
                    return; // shutdown removes the rest at once
                }
                let path = f.clone();
                match crate::blocking::run(f, move || reaper::cut_once(&path)).await {
                    Ok((left, n)) => {
                        freed += n;
                        if left.is_none() {
                            tracing::debug!(file = %f.display(), "retired segment file freed");
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(file = %f.display(), error = %e,
                            "cannot remove a retired segment file; the next open of its log retries");
                        break;
                    }
                }
            }
        }
        if s.stopping.get() {
            return; // shutdown removes the rest
        }
        if d.remove_dir {
            let dir = d.dir.clone();
            if let Err(e) = crate::blocking::run(&d.dir, move || reaper::remove_dir_all(&dir)).await
            {
                tracing::warn!(dir = %d.dir.display(), error = %e,
                    "cannot remove a deleted log's directory; the next start retries");
            }
        }
        s.reaper.finish(&d);
    }
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
            if let Some(mut st) = l.try_state_mut() {
                st.drop_idle_indexes();
            }
        }
        if last_retention.elapsed() >= retention_every {
            last_retention = Instant::now();
            for l in logs {
                if let Err(e) =
                    crate::retention::enforce_retention(&s, &l, Some(crate::segment::now_ms()))
                        .await
                {
                    if !matches!(e, StorageError::Closed) {
                        tracing::warn!(dir = %l.dir.display(), error = %e, "retention failed");
                    }
                }
                glommio::yield_if_needed().await;
            }
        }
    }
}
