//! Freeing the disk space of removed segments without stalling produce. Retention, the
//! cleaner's swap and deleted logs first take files out of the log's name space by a
//! rename (`<base>.log` → `<base>.log.deleted`, a deleted log's directory → `…-delete`),
//! which is cheap and is what crash safety needs; the space itself is given back here,
//! in the background, a little at a time.
//!
//! Why: this file system is mounted with online `discard`, so the blocks an unlink frees
//! are trimmed inside the next journal commit, and every `fdatasync` on the file system
//! waits for that commit. Unlinking 1 GiB (the default `segment.bytes`) in 16 files at
//! once stalled a concurrent append + `fdatasync` loop for 23–28 ms (its p99.9 idle:
//! 0.9–1.4 ms). A file is instead cut from its end in
//! `STEP` pieces, with `GAP` and the flusher's cycle under way (as the cleaner's I/O,
//! `ShardStorage::disk_turn`) after every `STEP` freed, then unlinked when it is small
//! (small files go one after another until they add up to `STEP`); a commit then frees
//! about `STEP`.
//!
//! ```text
//!  retire(dir, files, watch) ─► queue ─► tasks::reaper_loop (queue "sluice-storage-bg"):
//!     wait GRACE and until no reader holds a watched file,
//!     per file: [ftruncate(size - STEP) ─► GAP ─► disk_turn]* ─► unlink;  then the directory
//!  shutdown: the rest unlinked at once;  open (`swap::recover`): leftovers removed
//! ```
//!
//! A read of a retired segment that is still under way must not see the file shrink: a
//! swap's readers start again on the new layout whatever they read, but a retention
//! reader would fail. Entries wait until every watched file (`Weak` of the shard's open
//! files they replaced) is closed, and at least `GRACE` (a read that opened the file by
//! name just before the rename holds no watched handle). Owned by one shard. This module
//! is the queue and the blocking file steps; the task that paces them needs the shard
//! (its flusher's cycles) and lives with the other background loops in `tasks.rs`.

use glommio::io::DmaFile;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::rc::Weak;
use std::time::{Duration, Instant};

/// Bytes freed by one truncation: cutting 1 GiB by 4 MiB after each sync of a concurrent
/// append + `fdatasync` loop held it at p99.9 1.2–1.3 ms, unlinking it at once at 23 ms
/// (bench/README.md, "Freeing replaced segments").
pub(crate) const STEP: u64 = 4 << 20;

/// Pause after every `STEP` freed: the flusher can be idle between two produce cycles,
/// and cuts made back to back there would all land in the next cycle's journal commit.
/// At most `STEP` per `GAP` (800 MiB/s) is freed.
pub(crate) const GAP: Duration = Duration::from_millis(5);

/// Least time between a retirement and the first cut of its files.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// How often an entry checks again whether its watched files are closed.
pub(crate) const WATCH_POLL: Duration = Duration::from_millis(50);

/// One retirement: files to free, in order.
#[derive(Clone)]
pub(crate) struct Doomed {
    /// Tells a queue's front apart from one queued after a shutdown drained the queue.
    id: u64,
    /// The directory the files are in.
    pub(crate) dir: PathBuf,
    pub(crate) files: Vec<PathBuf>,
    /// Open files of the shard these replaced: cut only once none is alive.
    watch: Vec<Weak<DmaFile>>,
    since: Instant,
    /// Remove `dir` itself once its files are gone (a deleted log).
    pub(crate) remove_dir: bool,
}

impl Doomed {
    /// Whether its files may be cut now: `GRACE` passed and no watched file is open.
    pub(crate) fn ready(&self) -> bool {
        self.since.elapsed() >= GRACE && self.watch.iter().all(|w| w.strong_count() == 0)
    }
}

/// Removes `files` and then, with `dir`, that directory, at once (blocking; shutdown).
pub(crate) fn remove_now(files: &[PathBuf], dir: Option<&Path>) -> std::io::Result<()> {
    for f in files {
        crate::blocking::remove_if_exists(f)?;
    }
    dir.map_or(Ok(()), remove_dir_all)
}

/// The shard's queue of retired files.
#[derive(Default)]
pub(crate) struct Reaper {
    queue: RefCell<VecDeque<Doomed>>,
    next_id: Cell<u64>,
    pub(crate) wake: crate::signal::Signal,
}

impl Reaper {
    /// Queues renamed `files` in `dir` (missing ones are skipped) to be freed.
    pub(crate) fn retire(&self, dir: &Path, files: Vec<PathBuf>, watch: Vec<Weak<DmaFile>>) {
        self.push(dir.to_path_buf(), files, watch, false);
    }

    /// Queues a deleted log's renamed directory: every file in it, then the directory.
    pub(crate) fn retire_dir(&self, dir: PathBuf, files: Vec<PathBuf>) {
        self.push(dir, files, Vec::new(), true);
    }

    fn push(&self, dir: PathBuf, files: Vec<PathBuf>, watch: Vec<Weak<DmaFile>>, remove_dir: bool) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.queue.borrow_mut().push_back(Doomed {
            id,
            dir,
            files,
            watch,
            since: Instant::now(),
            remove_dir,
        });
        self.wake.notify();
    }

    /// The entry to work on (it stays queued until `finish`).
    pub(crate) fn front(&self) -> Option<Doomed> {
        self.queue.borrow().front().cloned()
    }

    /// `d` is done: out of the queue, unless a shutdown took it meanwhile.
    pub(crate) fn finish(&self, d: &Doomed) {
        let mut q = self.queue.borrow_mut();
        if q.front().is_some_and(|f| f.id == d.id) {
            q.pop_front();
        }
    }

    /// Everything queued, the entry under way included (shutdown).
    pub(crate) fn take_all(&self) -> Vec<Doomed> {
        self.queue.borrow_mut().drain(..).collect()
    }

    /// Files of the entries not finished yet (those of the entry under way that are
    /// already freed included).
    pub(crate) fn queued_files(&self) -> usize {
        self.queue.borrow().iter().map(|d| d.files.len()).sum()
    }
}

/// One step of freeing `file` (blocking): cuts `STEP` from its end, or removes it when
/// no more than that is left. Returns the size left (None once the file is gone, also
/// when it was already) and the bytes freed.
pub(crate) fn cut_once(file: &Path) -> std::io::Result<(Option<u64>, u64)> {
    let h = match std::fs::OpenOptions::new().write(true).open(file) {
        Ok(h) => h,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok((None, 0)),
        Err(e) => return Err(e),
    };
    let len = h.metadata()?.len();
    if len <= STEP {
        drop(h);
        crate::blocking::remove_if_exists(file)?;
        return Ok((None, len));
    }
    h.set_len(len - STEP)?;
    Ok((Some(len - STEP), STEP))
}

/// Removes a directory and what is in it (blocking); a missing one is not an error.
pub(crate) fn remove_dir_all(d: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(d) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The files directly under `dir` (blocking), for `Reaper::retire_dir`.
pub(crate) fn list_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            out.push(e.path());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn a_file_is_cut_from_its_end_then_removed() {
        let d = crate::test_dir();
        let f = d.path().join("x.log.deleted");
        std::fs::write(&f, vec![7u8; (2 * STEP + 100) as usize]).unwrap(); // ok: test
        assert_eq!(cut_once(&f).unwrap(), (Some(STEP + 100), STEP)); // ok: test
        assert_eq!(std::fs::metadata(&f).unwrap().len(), STEP + 100); // ok: test
        assert_eq!(cut_once(&f).unwrap(), (Some(100), STEP)); // ok: test
        assert_eq!(cut_once(&f).unwrap(), (None, 100)); // ok: test
        assert!(!f.exists());
        assert_eq!(cut_once(&f).unwrap(), (None, 0), "a missing file is done"); // ok: test
    }

    /// Retired files wait for readers holding the replaced files, then go; a deleted
    /// log's directory goes with its files; shutdown removes what is still queued.
    #[test]
    fn retired_files_go_after_their_readers_and_at_shutdown() {
        let d = crate::test_dir();
        let root = d.path().to_path_buf();
        crate::on_test_shard(move |shard| async move {
            let held = root.join("held.log.deleted");
            std::fs::write(&held, vec![1u8; (3 * STEP) as usize]).unwrap(); // ok: test
            let reader = Rc::new(
                crate::segment::open_segment_file(&root.join("r.log"), true)
                    .await
                    .unwrap(), // ok: test
            );
            shard
                .reaper
                .retire(&root, vec![held.clone()], vec![Rc::downgrade(&reader)]);
            let gone = root.join("gone-delete");
            std::fs::create_dir(&gone).unwrap(); // ok: test
            std::fs::write(gone.join("a.log"), vec![2u8; (STEP + 1) as usize]).unwrap(); // ok: test
            std::fs::write(gone.join("b.index"), b"i").unwrap(); // ok: test
            shard
                .reaper
                .retire_dir(gone.clone(), list_files(&gone).unwrap()); // ok: test
            glommio::timer::sleep(GRACE * 2).await;
            assert_eq!(
                std::fs::metadata(&held).unwrap().len(), // ok: test
                3 * STEP,
                "untouched while a reader holds the file it replaced"
            );
            assert!(gone.exists(), "queued behind the held file");
            drop(reader);
            // an entry leaves the queue when the reaper task resumes after its removal
            // on the helper thread, a moment after the files are gone
            for _ in 0..200 {
                if !held.exists() && !gone.exists() && shard.reaper.queued_files() == 0 {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            assert!(!held.exists() && !gone.exists());
            assert_eq!(shard.reaper.queued_files(), 0);
            let late = root.join("late.log.deleted");
            std::fs::write(&late, vec![3u8; (3 * STEP) as usize]).unwrap(); // ok: test
            shard.reaper.retire(&root, vec![late.clone()], Vec::new());
            shard.shutdown().await.unwrap(); // ok: test
            assert!(!late.exists(), "shutdown removes what is still queued");
        });
    }
}
