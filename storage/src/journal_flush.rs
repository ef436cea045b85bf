//! Group commit through the shard's write-ahead journal (`FlushSync::Journal`, for cycles
//! of `journal_min_logs` dirty logs or more; smaller ones sync segments as `Segment`
//! does): a cycle takes every dirty log whose I/O permit is free, puts all their
//! not-yet-journaled pending batches in one record set (one aligned DMA write, one
//! `fdatasync`), then advances each log's durable offset. The batches stay pending
//! (readable, counted in the shard's `behind` total, see `pending.rs`) until the
//! write-behind task has written them into their segments without a sync; a checkpoint
//! (the active journal half full, or a barrier) switches to the next epoch, waits for a
//! write-behind pass that started after the switch, syncs every segment written since the
//! last one (an `fdatasync` each, or one `syncfs` when there are many) and retires the old
//! epoch. A change that rewrites or removes a log's
//! files (truncation, reset, the cleaner's swap, retention, delete, close) first calls
//! `barrier`, so a replay never resurrects cut data or writes into a replaced file.
//! A log whose permit is busy when a cycle starts (written behind, or a file change) goes
//! back on the dirty list for a later cycle; a log outside the data directory is flushed
//! the old way (`flush_log`). Owned by one shard; never crosses cores.
//!
//! ```text
//!  cycle: dirty logs ─► entries (dir, segment, position, bytes) ─► journal set + fdatasync
//!         ─► durable, waiters woken ─► behind list ─► write-behind task: segment writes
//!  checkpoint: switch epoch ─► one write-behind pass ─► sync written segments ─► retire
//! ```

use crate::error::StorageError;
use crate::inner::LogInner;
use crate::journal::{set_len, set_len_of, Entry, FIRST_SET};
use crate::journal_file::{JournalCtl, Written};
use crate::shard::ShardStorage;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

/// Logs written behind at once.
const BEHIND_WINDOW: usize = 64;
/// Segment `fdatasync`s of a checkpoint in flight at once.
const SYNC_WINDOW: usize = 64;
/// A checkpoint with more written segments than this makes them durable with one `syncfs`
/// per filesystem (`sync_filesystems`) rather than an `fdatasync` each: with 10,000
/// partitions written, 10,000 syncs in a second held the cycles' journal syncs behind
/// them for 2-3 s (no ack, no fetch answered meanwhile), where one `syncfs` is one
/// filesystem commit (plus the writeback of any other dirty pages on it).
const BULK_SYNC_MIN: usize = 256;
/// Room a cycle leaves below a quarter of a journal file for its record set's header and
/// its alignment to a page, so its entries go in one set.
const CYCLE_CAP_SLACK: usize = 2 * crate::segment::PAGE as usize;

/// The log's directory name, if the log can be journaled (a directory directly inside
/// the journal's data directory). Worked out on a log's first cycle and kept: at 10,000
/// partitions the path walk and the allocation in every cycle were 1.7 % of the shard.
fn journal_name(shard: &ShardStorage, log: &LogInner) -> Option<Rc<str>> {
    log.journal_name
        .get_or_init(|| {
            let data_dir = shard.opts.journal_dir.as_ref()?;
            if log.dir.parent()? != data_dir.as_path() {
                return None;
            }
            log.dir.file_name()?.to_str().map(Rc::from)
        })
        .clone()
}

/// After a failed journal write, epoch switch or retirement, or a failed sync of the
/// segments a checkpoint covers: the journal takes nothing more in this process and no
/// epoch is retired (a failed `fdatasync` may have lost written pages that a retried one
/// would report synced; a failed append may have left a hole that ends a replay before
/// the sets after it). Every later cycle fails its logs, barriers and checkpoints fail;
/// the journal's live epochs stay for the replay at the next start, as Kafka takes a
/// log directory offline after an I/O error.
fn poison(shard: &ShardStorage, e: &StorageError) {
    if !shard.journal_refused.replace(true) {
        tracing::error!(error = %e, "the shard's journal failed; its logs take no writes until a restart replays it");
    }
    *shard.journal.borrow_mut() = Some(Err(format!(
        "the shard's journal failed ({e}); a restart replays it"
    )));
}

/// One cycle over `dirty` in journal mode.
pub(crate) async fn cycle(shard: &Rc<ShardStorage>, dirty: Vec<Rc<LogInner>>) {
    let ctl = match shard.journal_ctl() {
        Ok(c) => c,
        Err(e) => {
            for l in dirty {
                l.state_mut().fail(&e);
                shard.notify_log(&l);
            }
            return;
        }
    };
    // past three quarters of the active file while the previous epoch is still live: wait
    // for the checkpoint running (or run one: no permits held here, so it cannot wait for
    // this cycle); below that, a cycle's sets (a quarter of a file at most) always fit
    let full =
        |c: &JournalCtl| c.journal.previous_live() && c.journal.used() > c.journal.size() / 4 * 3;
    if full(&ctl) {
        ctl.checkpoints_wanted.set(ctl.checkpoints_wanted.get() + 1);
        let res = async {
            let _one = crate::permit::acquire(&ctl.ckpt, 1).await?;
            if full(&ctl) {
                checkpoint_locked(shard, &ctl, false).await?;
            }
            Ok::<(), StorageError>(())
        }
        .await;
        ctl.checkpoints_wanted.set(ctl.checkpoints_wanted.get() - 1);
        if let Err(e) = res {
            tracing::error!(error = %e, "journal checkpoint failed");
        }
    }
    let mut entries: Vec<Entry> = Vec::new();
    // what a cycle journals fits a quarter of a file in one record set (`full` above
    // left that much room); the rest waits for the next cycle. The broker's admission
    // keeps cycles below it (`storage.journal.bytes` >= 4 x `storage.unflushed.max.bytes`),
    // the library alone bounds nothing
    let cap = ((ctl.journal.size() / 4) as usize).saturating_sub(CYCLE_CAP_SLACK);
    let mut taken = 0usize;
    let mut left_over = Vec::new();
    // (log, its permit, the segment positions of the batches journaled now, the durable
    // end they give)
    let mut logs = Vec::new();
    let mut fallback = Vec::new();
    let mut busy = Vec::new();
    let mut ready = Vec::new();
    for l in dirty.iter() {
        if l.behind_wanted.get() {
            // its write-behind's turn: a log written in every cycle would otherwise keep
            // its permit from the write-behind until a checkpoint stalled the cycles
            busy.push(l.clone());
            continue;
        }
        let Ok(permit) = l.io.try_acquire_permit(1) else {
            // being written behind, or a file change: a later cycle journals it
            busy.push(l.clone());
            continue;
        };
        let Some(name) = journal_name(shard, l) else {
            drop(permit);
            fallback.push(l.clone());
            continue;
        };
        ready.push((l, permit, name));
    }
    // the file work before the batches (after a restart every log has a marker to remove):
    // concurrently, not one log after another (10,000 in turn took 12 s)
    prepare_all(ready.iter().map(|(l, _, _)| *l)).await;
    for (l, permit, name) in ready {
        // checked again with no wait between it and taking the batches below (a log whose
        // leader epoch changed meanwhile writes its checkpoint now)
        if l.state().failure().is_some() {
            // failed (its prepare just above, logged there, or earlier): nothing to take
            shard.notify_log(l);
            continue;
        }
        let prepared = match needs_prepare(l) {
            true => prepare(l).await,
            false => Ok(()),
        };
        if let Err(e) = prepared {
            tracing::error!(dir = %l.dir.display(), error = %e, "log flush failed; log is now failed");
            l.state_mut().fail(&e);
            shard.notify_log(l);
            continue;
        }
        let (positions, end) = {
            let mut st = l.state_mut();
            if !st.begin_flush() {
                continue;
            }
            if taken > 0 && taken >= cap {
                if st.requeue() {
                    left_over.push(l.clone());
                }
                continue;
            }
            let skip = st.pending().journaled();
            // each batch's place: its segment's written size plus the batches before it
            // (the queue is in offset order, so one segment's batches are consecutive),
            // starting after the last journaled batch, which has its own (it may be
            // written already); only the new batches are walked, not the journaled ones
            // still waiting for the write-behind (at 10,000 partitions walking those was
            // a tenth of the shard's time)
            let mut at: Option<(i64, u64)> = skip
                .checked_sub(1)
                .and_then(|i| st.pending().iter().nth(i))
                .and_then(|p| {
                    debug_assert!(p.pos.is_some(), "a journaled batch has its position");
                    Some((p.seg_base, p.pos? + p.data.len() as u64))
                });
            let mut positions = Vec::new();
            let mut end = None;
            for p in st.pending().iter().skip(skip) {
                let pos = match at {
                    Some((base, pos)) if base == p.seg_base => pos,
                    _ => st.write_pos(p),
                };
                at = Some((p.seg_base, pos + p.data.len() as u64));
                let e = Entry {
                    dir: name.clone(),
                    seg_base: p.seg_base,
                    pos,
                    data: p.data.clone(),
                };
                // one batch larger than the cap goes alone (and fails if the file
                // cannot hold it)
                if taken > 0 && taken + e.encoded_len() > cap {
                    if st.requeue() {
                        left_over.push(l.clone());
                    }
                    break;
                }
                taken += e.encoded_len();
                entries.push(e);
                positions.push(pos);
                end = Some(p.last + 1);
            }
            (positions, end)
        };
        if let Some(end) = end {
            logs.push((l, permit, positions, end));
        }
    }
    for l in fallback {
        let s = shard.clone();
        glommio::spawn_local(async move { crate::flusher::flush_log(&s, &l, None, None).await })
            .detach();
    }
    // the next cycle takes them
    shard.inner.borrow_mut().dirty.extend(left_over);
    if !busy.is_empty() {
        // still dirty (no `begin_flush`): back on the list, without a busy loop
        if logs.is_empty() {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        shard.inner.borrow_mut().dirty.extend(busy);
    }
    if logs.is_empty() {
        return;
    }
    let t = std::time::Instant::now();
    let res = append(&ctl, &entries).await;
    let took = t.elapsed();
    let epoch = ctl.journal.epoch();
    let mut snapshots = Vec::new();
    for (l, permit, positions, end) in logs {
        match &res {
            Ok(_) => {
                l.state_mut().journaled(&positions, end);
                l.journal_epoch.set(epoch);
                ctl.behind.borrow_mut().push(l.clone());
                if l.state().has_due_snapshots() {
                    snapshots.push(l.clone());
                }
            }
            Err(e) => {
                tracing::error!(dir = %l.dir.display(), error = %e, "journal write failed; log is now failed");
                l.state_mut().fail(e);
                // its batches may be in a set that reached the file: a change to its
                // files must meet the (poisoned) journal's barrier
                l.journal_epoch.set(epoch);
            }
        }
        drop(permit);
        l.durable_signal.notify();
    }
    if let Err(e) = &res {
        poison(shard, e);
    }
    let (bytes, sets) = res.as_ref().map_or((0, 0), |r| *r);
    shard.metrics_add(|m| {
        m.flushes += 1;
        m.fsyncs += sets;
        m.fsync_micros_total += took.as_micros() as u64;
        m.fsync_durations.observe(took);
        m.journal_bytes_written += bytes;
    });
    for l in snapshots {
        glommio::spawn_local(persist_due_snapshots(shard.clone(), l)).detach();
    }
    ctl.behind_wake.notify();
    if ctl.journal.used() > ctl.journal.size() / 2 && ctl.checkpoints_wanted.get() == 0 {
        let s = shard.clone();
        // counted now, not when the task first runs: later cycles must not queue more
        ctl.checkpoints_wanted.set(1);
        let c = ctl.clone();
        glommio::spawn_local(async move {
            let res = checkpoint_queued(&s, &c).await;
            c.checkpoints_wanted.set(c.checkpoints_wanted.get() - 1);
            if let Err(e) = res {
                tracing::error!(error = %e, "journal checkpoint failed");
            }
        })
        .detach();
    }
}

/// Writes the producer-state snapshots of the segments `log` rolled, now that the
/// batches before them are durable (in the journal: a replay puts them in the segments
/// before any open). Not left to the write-behind, which a log written without a pause
/// can keep waiting for its permit until a checkpoint: a crash meanwhile left a log
/// with no snapshot, whose state was then rebuilt from its tail alone (a transaction
/// open since before it forgotten). A failure fails the log, as in `flush_log`.
async fn persist_due_snapshots(shard: Rc<ShardStorage>, log: Rc<LogInner>) {
    let Ok(_permit) = crate::permit::acquire(&log.io, 1).await else {
        return;
    };
    if log.state().gone().is_some() {
        return;
    }
    let due = log.state_mut().take_due_snapshots();
    for (offset, ps) in due {
        if let Err(e) = crate::flusher::persist_snapshot(&log, offset, &ps).await {
            let e = StorageError::from(e);
            tracing::error!(dir = %log.dir.display(), error = %e, "producer-state snapshot failed; log is now failed");
            log.state_mut().fail(&e);
            shard.notify_log(&log);
            return;
        }
    }
}

/// Whether `prepare` has file work to do for `log` (in most cycles none has).
fn needs_prepare(log: &LogInner) -> bool {
    log.state().has_files_to_prepare()
}

/// Runs `prepare` for each of `logs` that needs it, `BEHIND_WINDOW` at a time, one task
/// each (one task polling many glommio I/Os overflows its waker count); a failure fails
/// its log (the caller sees it).
async fn prepare_all<'a>(logs: impl Iterator<Item = &'a Rc<LogInner>>) {
    let window = Rc::new(glommio::sync::Semaphore::new(BEHIND_WINDOW as u64));
    let tasks: Vec<_> = logs
        .filter(|l| needs_prepare(l))
        .map(|l| {
            let (l, w) = (l.clone(), window.clone());
            glommio::spawn_local(async move {
                let _slot = crate::permit::acquire(&w, 1).await;
                if let Err(e) = prepare(&l).await {
                    tracing::error!(dir = %l.dir.display(), error = %e, "log flush failed; log is now failed");
                    l.state_mut().fail(&e);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
}

/// What must be durable before a log's batches are: its clean-shutdown marker gone, its
/// leader-epoch checkpoint and `.txnindex` files (as `flush_log` does).
async fn prepare(log: &LogInner) -> Result<(), StorageError> {
    log.clear_marker().await?;
    let checkpoint = log.state().epochs_snapshot();
    if let Some((gen, entries)) = checkpoint {
        crate::epoch::write_checkpoint(log.dir.clone(), entries).await?;
        log.state_mut().epochs_persisted(gen);
    }
    crate::flusher::write_txn_files(log).await
}

/// Appends `entries` in sets that fit a quarter of a journal file each, switching epochs
/// when the active file is full. Never waits for a checkpoint (the cycle holds log
/// permits a checkpoint may need): with the previous epoch still live and the active
/// file full it fails — a cycle larger than the quarter of a journal file that `cycle`
/// leaves free, which `storage.journal.bytes` >= 4 x the unflushed budget rules out.
/// Returns (bytes written, record sets: one `fdatasync` each).
async fn append(ctl: &Rc<JournalCtl>, entries: &[Entry]) -> Result<(u64, u64), StorageError> {
    let mut written = 0u64;
    let mut sets = 0u64;
    let limit = (ctl.journal.size() / 4) as usize;
    let mut start = 0;
    while start < entries.len() {
        // the set grows while it fits in `limit` (a running sum: `set_len` of every
        // prefix made this quadratic, 4 % of the shard at 10,000 partitions)
        let mut end = start + 1;
        let mut body = entries[start].encoded_len();
        while end < entries.len() && set_len_of(body + entries[end].encoded_len()) <= limit {
            body += entries[end].encoded_len();
            end += 1;
        }
        let set = &entries[start..end];
        loop {
            let _io = crate::permit::acquire(&ctl.io, 1).await?;
            if ctl.journal.fits(set) {
                ctl.journal.append(set).await?;
                written += set_len(set) as u64;
                sets += 1;
                break;
            }
            if !ctl.journal.previous_live() && set_len(set) as u64 + FIRST_SET <= ctl.journal.size()
            {
                ctl.journal.switch().await?;
                continue;
            }
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "the journal is full and its previous epoch not yet checkpointed",
            )));
        }
        start = end;
    }
    Ok((written, sets))
}

/// The write-behind task's longest sleep with nothing to do: a safety net only, every
/// change that gives it work wakes it.
const BEHIND_IDLE_POLL: Duration = Duration::from_secs(1);

/// The write-behind task: writes the journaled batches of the logs on the behind list
/// into their segments, a window of logs at once, coalescing the cycles since its last
/// pass. Each pass (an empty one too) is counted, so a checkpoint can wait for one that
/// started after its switch. It runs when woken (`behind_wake`: a cycle journaled logs,
/// a checkpoint wants a pass, the flusher stopped), and at most once a second otherwise:
/// an idle shard's heartbeat then sees no work (every 50 ms it made the heartbeat beat
/// at its busy rate, ~1.5 % of a core at 10,000 partitions with no traffic).
pub(crate) async fn behind_loop(shard: Rc<ShardStorage>, ctl: Rc<JournalCtl>) {
    let window = Rc::new(glommio::sync::Semaphore::new(BEHIND_WINDOW as u64));
    loop {
        #[cfg(test)]
        if ctl.behind_paused.get() {
            glommio::timer::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let wait = ctl.behind_wake.wait();
        let mut logs: Vec<Rc<LogInner>> = std::mem::take(&mut *ctl.behind.borrow_mut());
        let pass = ctl.passes_started.get() + 1;
        ctl.passes_started.set(pass);
        if logs.is_empty() {
            ctl.passes_done.set(pass);
            ctl.pass_done.notify();
            if shard.stopping.get() && !shard.flusher_running.get() {
                ctl.passes_done.set(u64::MAX);
                ctl.pass_done.notify();
                return;
            }
            futures_lite::future::or(wait, glommio::timer::sleep(BEHIND_IDLE_POLL)).await;
            continue;
        }
        drop(wait);
        logs.sort_by_key(|l| l.id);
        logs.dedup_by_key(|l| l.id);
        let tasks: Vec<_> = logs
            .into_iter()
            .map(|l| {
                let (s, w, c) = (shard.clone(), window.clone(), ctl.clone());
                glommio::spawn_local(async move {
                    let Ok(_slot) = crate::permit::acquire(&w, 1).await else {
                        return;
                    };
                    // not `acquire_permit().await`: a barrier holds its log's permit while
                    // it waits for a checkpoint, which waits for this pass; it wrote its
                    // log behind first, so nothing is journaled there
                    while l.state().pending().journaled() > 0 && !l.state().is_deleted() {
                        if let Ok(_p) = l.io.try_acquire_permit(1) {
                            l.behind_wanted.set(false);
                            write_behind(&s, &c, &l).await;
                            break;
                        }
                        // taken by a cycle (or a change): the next cycles leave it alone
                        l.behind_wanted.set(true);
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                    l.behind_wanted.set(false);
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        ctl.passes_done.set(pass);
        ctl.pass_done.notify();
        shard.progress.notify();
    }
}

/// Writes `log`'s journaled batches behind (its permit held) and remembers the segments
/// for the next checkpoint; a failure fails the log, whose journaled batches then stay
/// (`stranded`) for the checkpoints to try again.
async fn write_behind(shard: &Rc<ShardStorage>, ctl: &JournalCtl, log: &Rc<LogInner>) {
    let note = |bases: &[i64]| {
        if !bases.is_empty() {
            let mut ts = ctl.to_sync.borrow_mut();
            let e = ts
                .entry(log.id)
                .or_insert_with(|| (log.clone(), BTreeSet::new()));
            e.1.extend(bases.iter().copied());
        }
    };
    match crate::flusher::write_behind_locked(shard, log, &note).await {
        Ok(()) => {}
        Err(e) => {
            tracing::error!(dir = %log.dir.display(), error = %e, "write-behind failed; log is now failed");
            log.state_mut().fail(&e);
            let mut stranded = ctl.stranded.borrow_mut();
            if !stranded.iter().any(|l| l.id == log.id) {
                stranded.push(log.clone());
            }
        }
    }
    shard.notify_log(log);
}

/// Before a checkpoint retires an epoch: each failed log with batches still journaled
/// (acknowledged, durable only in the journal: `LogState::fail` keeps them) is written
/// behind once more. While one is left the checkpoint fails and the epochs stay live, so
/// the replay at the next start writes those batches; with the journal full, cycles then
/// fail their logs, as Kafka takes a log directory offline after an I/O error.
async fn write_behind_stranded(
    shard: &Rc<ShardStorage>,
    ctl: &JournalCtl,
) -> Result<(), StorageError> {
    let mut logs: Vec<Rc<LogInner>> = std::mem::take(&mut *ctl.stranded.borrow_mut());
    logs.extend(
        shard
            .inner
            .borrow()
            .logs
            .values()
            .filter(|l| l.state().stranded_in_journal())
            .cloned(),
    );
    logs.sort_by_key(|l| l.id);
    logs.dedup_by_key(|l| l.id);
    for l in &logs {
        if !l.state().stranded_in_journal() {
            continue;
        }
        // busy (a barrier of its own holds it): counted as left below
        if let Ok(_p) = l.io.try_acquire_permit(1) {
            write_behind(shard, ctl, l).await;
        }
    }
    let mut stranded = ctl.stranded.borrow_mut();
    stranded.clear(); // write_behind put the ones that failed again back: all are below
    logs.retain(|l| l.state().stranded_in_journal());
    let first = logs.first().map(|l| l.dir.display().to_string());
    *stranded = logs;
    match first {
        None => Ok(()),
        Some(dir) => Err(StorageError::Io(std::io::Error::other(format!(
            "{} failed log(s) ({dir}, ...) hold journaled batches not yet in their segments; the journal epoch stays live",
            stranded.len()
        )))),
    }
}

/// Switches to a new epoch (if the active one holds anything), writes behind every
/// journaled batch, syncs every segment written since the last checkpoint and retires
/// every epoch before the active one.
pub(crate) async fn checkpoint(shard: &Rc<ShardStorage>) -> Result<(), StorageError> {
    let ctl = shard.journal_ctl()?;
    ctl.checkpoints_wanted.set(ctl.checkpoints_wanted.get() + 1);
    let res = checkpoint_queued(shard, &ctl).await;
    ctl.checkpoints_wanted.set(ctl.checkpoints_wanted.get() - 1);
    res
}

async fn checkpoint_queued(
    shard: &Rc<ShardStorage>,
    ctl: &Rc<JournalCtl>,
) -> Result<(), StorageError> {
    let _one = crate::permit::acquire(&ctl.ckpt, 1).await?;
    checkpoint_locked(shard, ctl, false).await
}

/// Before the shard closes every log (shutdown): one checkpoint whose segment syncs are
/// one `syncfs` per device (`group_sync.rs`), as the closes' own syncs are, so their
/// barriers find no live epoch. With 10,000 partitions written, the closes' checkpoint
/// made 10,000 `fdatasync`s and a clean stop took 20 s instead of 3. A no-op without an
/// open journal.
pub(crate) async fn checkpoint_before_close(shard: &Rc<ShardStorage>) -> Result<(), StorageError> {
    let Ok(ctl) = shard.journal_ctl() else {
        return Ok(());
    };
    ctl.checkpoints_wanted.set(ctl.checkpoints_wanted.get() + 1);
    let res = async {
        let _one = crate::permit::acquire(&ctl.ckpt, 1).await?;
        checkpoint_locked(shard, &ctl, true).await
    }
    .await;
    ctl.checkpoints_wanted.set(ctl.checkpoints_wanted.get() - 1);
    res
}

/// `bulk`: sync the written segments with one group `syncfs` per device instead of one
/// `fdatasync` each. Without it, more than `BULK_SYNC_MIN` written segments are synced
/// with one `syncfs` per filesystem too, outside the group sync (`sync_filesystems`).
async fn checkpoint_locked(
    shard: &Rc<ShardStorage>,
    ctl: &Rc<JournalCtl>,
    bulk: bool,
) -> Result<(), StorageError> {
    // an epoch a failed checkpoint left live goes first
    if ctl.journal.previous_live() {
        settle(shard, ctl, bulk).await?;
    }
    {
        let _io = crate::permit::acquire(&ctl.io, 1).await?;
        if ctl.journal.used() <= FIRST_SET {
            return Ok(());
        }
        ctl.journal
            .switch()
            .await
            .inspect_err(|e| poison(shard, e))?;
    }
    // cycles go on in the new epoch meanwhile
    settle(shard, ctl, bulk).await
}

/// Waits until every batch journaled before now is written behind (a write-behind pass
/// that starts after this call has ended: it takes every log journaled since the last
/// pass, and a log's batches leave `journaled` only after the segments written are noted
/// in `to_sync`), syncs every segment written since the last checkpoint, then retires the
/// previous epoch.
async fn settle(
    shard: &Rc<ShardStorage>,
    ctl: &Rc<JournalCtl>,
    bulk: bool,
) -> Result<(), StorageError> {
    // poisoned: no epoch is retired in this process
    shard.journal_ctl()?;
    let target = ctl.passes_started.get() + 1;
    loop {
        let wait = ctl.pass_done.wait();
        if ctl.passes_done.get() >= target {
            break;
        }
        ctl.behind_wake.notify();
        wait.await;
    }
    write_behind_stranded(shard, ctl).await?;
    let segs: Vec<Written> = ctl.to_sync.borrow_mut().drain().map(|(_, v)| v).collect();
    let many = segs.iter().map(|(_, bases)| bases.len()).sum::<usize>() > BULK_SYNC_MIN;
    let synced = if bulk {
        sync_devices(shard, &segs).await
    } else if many {
        match sync_filesystems(&segs).await {
            Ok(n) => Ok(n),
            Err(e) => {
                // the error may be another process's writeback on the same filesystem:
                // each segment's own fdatasync says whether ours are durable
                tracing::warn!(error = %e,
                    "syncfs for a journal checkpoint failed; syncing its segments one by one");
                sync_segments(shard, segs).await
            }
        }
    } else {
        sync_segments(shard, segs).await
    };
    let syncs = synced.inspect_err(|e| poison(shard, e))?;
    shard.metrics_add(|m| {
        m.fsyncs += syncs;
        m.journal_checkpoints += 1;
    });
    let _io = crate::permit::acquire(&ctl.io, 1).await?;
    shard.journal_ctl()?;
    ctl.journal
        .retire_previous()
        .await
        .inspect_err(|e| poison(shard, e))
}

/// Makes every segment in `segs` durable with one `syncfs` per device they are on (the
/// group sync of each log's data directory: its parent, which outlives the log). Returns
/// the `syncfs` calls waited for.
async fn sync_devices(shard: &Rc<ShardStorage>, segs: &[Written]) -> Result<u64, StorageError> {
    let mut devices: Vec<(u64, &std::path::Path)> = Vec::new();
    for (l, _) in segs {
        if !devices.iter().any(|(d, _)| *d == l.dev) {
            devices.push((l.dev, l.dir.parent().unwrap_or(&l.dir)));
        }
    }
    // not held back by a close's holds, should one be taken meanwhile: a close's barrier
    // may be waiting for this checkpoint
    for (dev, dir) in &devices {
        shard.group_sync.wait_unheld(*dev, dir).await?;
    }
    Ok(devices.len() as u64)
}

/// Makes every segment in `segs` durable with one `syncfs` per filesystem they are on
/// (a checkpoint with more than `BULK_SYNC_MIN` of them), each through a descriptor of one
/// of its logs' own directories opened for the call: its `st_dev` is the log's, symlinks
/// followed, and an error it reports is not taken from the group sync's descriptor (which
/// the clean close relies on to see its own files' writeback errors). Logs whose
/// directories are gone (deleted) need nothing. Independent of the group sync's holds, so
/// a close's barrier waiting for this checkpoint never waits for itself. Returns the
/// `syncfs` calls made.
async fn sync_filesystems(segs: &[Written]) -> Result<u64, StorageError> {
    let mut dirs: Vec<(u64, Vec<std::path::PathBuf>)> = Vec::new();
    for (l, _) in segs {
        match dirs.iter_mut().find(|(d, _)| *d == l.dev) {
            Some((_, v)) => v.push(l.dir.clone()),
            None => dirs.push((l.dev, vec![l.dir.clone()])),
        }
    }
    let mut calls = 0u64;
    for (dev, candidates) in dirs {
        let key = std::path::PathBuf::from(format!("checkpoint-syncfs-{dev}"));
        let synced = crate::blocking::run(&key, move || -> std::io::Result<bool> {
            for dir in candidates {
                match std::fs::File::open(&dir) {
                    Ok(f) => return crate::group_sync::syncfs_fd(&f).map(|()| true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(false)
        })
        .await?;
        calls += u64::from(synced);
    }
    Ok(calls)
}

/// `fdatasync`s every segment in `segs` that still exists, `SYNC_WINDOW` at a time (one
/// task each: one task polling many glommio I/Os overflows its waker count). Returns the
/// syncs made; the first error once every sync has ended.
async fn sync_segments(shard: &Rc<ShardStorage>, segs: Vec<Written>) -> Result<u64, StorageError> {
    let window = Rc::new(glommio::sync::Semaphore::new(SYNC_WINDOW as u64));
    let tasks: Vec<_> = segs
        .into_iter()
        .flat_map(|(l, bases)| bases.into_iter().map(move |b| (l.clone(), b)))
        .map(|(l, base)| {
            let (s, w) = (shard.clone(), window.clone());
            glommio::spawn_local(async move {
                let _slot = crate::permit::acquire(&w, 1).await?;
                if l.state().segment(base).is_none() {
                    return Ok(false);
                }
                match s.segment_file(&l, base, false).await {
                    Ok(f) => {
                        f.fdatasync().await?;
                        Ok(true)
                    }
                    Err(StorageError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            })
        })
        .collect();
    let mut syncs = 0u64;
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(true) => syncs += 1,
            Ok(false) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(syncs),
    }
}

/// Before a change that rewrites or removes `log`'s files (its I/O permit held): if a
/// live journal epoch holds entries of it, write its journaled batches behind and run a
/// checkpoint, so no replay writes them again.
pub(crate) async fn barrier(shard: &ShardStorage, log: &Rc<LogInner>) -> Result<(), StorageError> {
    let e = log.journal_epoch.get();
    if e == 0 {
        return Ok(());
    }
    let Some(shard) = shard.me.upgrade() else {
        return Ok(());
    };
    let shard = &shard;
    let ctl = shard.journal_ctl()?;
    if e < ctl.oldest_live() {
        return Ok(());
    }
    if log.state().pending().journaled() > 0 {
        write_behind(shard, &ctl, log).await;
        if log.state().pending().journaled() > 0 {
            return Err(log.state().failure().unwrap_or(StorageError::Closed));
        }
    }
    // its segments are among those the checkpoint syncs (kept by `to_sync`, even when
    // the log is closing and leaves the registry)
    checkpoint(shard).await?;
    if log.journal_epoch.get() >= ctl.oldest_live() {
        // journaled again meanwhile cannot happen (the permit is held); be safe
        checkpoint(shard).await?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "journal_flush_tests.rs"]
mod tests;
