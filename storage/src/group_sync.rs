//! Group sync: the writes of many logs made durable by one `syncfs` per filesystem instead
//! of an `fdatasync` per file. Used where many logs write a few small files at once: a
//! recovering open (the cut segment, its rewritten indexes) and the clean close (the
//! segment cut, the indexes, then the marker). A caller writes (no fsync), then
//! `wait(dev)`: it returns once a `syncfs` that *started after the call* finished, so
//! everything the caller wrote before is on the disk. Callers arriving while one runs share
//! the next one (a group commit). Owned by the shard's `ShardStorage`; never crosses cores.
//!
//! ```text
//!  log a: write ─► wait ─┐ syncfs #1 ──────┐
//!  log b: write ──► wait ─┼────────────────┴─► syncfs #2 (a's, b's, c's writes) ─► all wake
//!  log c: write ───► wait ┘
//! ```
//!
//! A caller that knows many writers are coming (the close of every log at shutdown) holds
//! the syncs (`hold`) until each writer released its hold: then one `syncfs` covers them
//! all, however slow the filesystem's syncs are (they also write back other processes'
//! dirty pages).
//!
//! Errors: the `syncfs` runs on a descriptor opened once per device, so Linux reports every
//! writeback error on the filesystem since then (an error not yet seen by anyone is
//! reported to a new descriptor too). A failure is sticky: every later wait on that device
//! fails, since a write that was in flight during the failed call may be the one lost.

use crate::error::StorageError;
use crate::signal::Signal;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shard's group syncs, one per device (`st_dev`) its logs live on.
#[derive(Default)]
pub(crate) struct GroupSync {
    devices: RefCell<HashMap<u64, Rc<DeviceSync>>>,
    /// Holds taken (`hold`) and not yet released: while any is, no `wait` starts a new
    /// `syncfs` (a `wait_unheld` may) and waiters gather for one after the last release
    /// (the close of many logs writes every log's files first, so their syncs do not each
    /// cost a `syncfs` of a busy filesystem).
    holds: Cell<usize>,
}

struct DeviceSync {
    /// A directory on the device, open for the life of the shard (the `syncfs` target).
    fd: Arc<std::fs::File>,
    /// Key of the blocking calls (one `syncfs` at a time per device).
    key: PathBuf,
    started: Cell<u64>,
    finished: Cell<u64>,
    running: Cell<bool>,
    failed: RefCell<Option<(std::io::ErrorKind, String)>>,
    done: Signal,
    /// Time the finished calls took.
    sync_time: Cell<Duration>,
}

impl GroupSync {
    /// `syncfs` calls made so far and their total time.
    pub(crate) fn stats(&self) -> (u64, Duration) {
        self.devices
            .borrow()
            .values()
            .fold((0, Duration::ZERO), |(n, t), d| {
                (n + d.finished.get(), t + d.sync_time.get())
            })
    }

    /// Makes everything written on device `dev` before this call durable: waits for a
    /// `syncfs` of the filesystem holding `dir` (on `dev`) that starts after it.
    pub(crate) async fn wait(&self, dev: u64, dir: &Path) -> Result<(), StorageError> {
        self.wait_for(dev, dir, false).await
    }

    /// `wait`, but starting its `syncfs` even while holds are taken: for a journal
    /// checkpoint, which the close of a log held by `close_logs` may itself be waiting for
    /// (its barrier), so waiting for the holds' release would never end. Safe for the
    /// held callers: a `syncfs` that starts after a caller's `wait` covers its writes
    /// whoever starts it; the holds only save calls.
    pub(crate) async fn wait_unheld(&self, dev: u64, dir: &Path) -> Result<(), StorageError> {
        self.wait_for(dev, dir, true).await
    }

    async fn wait_for(&self, dev: u64, dir: &Path, unheld: bool) -> Result<(), StorageError> {
        let d = self.device(dev, dir).await?;
        let ticket = d.started.get() + 1;
        loop {
            if let Some((kind, why)) = d.failed.borrow().clone() {
                return Err(StorageError::Io(std::io::Error::new(kind, why)));
            }
            if d.finished.get() >= ticket {
                return Ok(());
            }
            let w = d.done.wait();
            if !d.running.get() && (unheld || self.holds.get() == 0) {
                self.start(&d);
                continue;
            }
            w.await;
        }
    }

    /// Takes `n` holds (see `holds`); give each back with `release`.
    pub(crate) fn hold(&self, n: usize) {
        self.holds.set(self.holds.get() + n);
    }

    /// Gives one hold back; the last one lets the waiters start a `syncfs`.
    pub(crate) fn release(&self) {
        let n = self.holds.get().saturating_sub(1);
        self.holds.set(n);
        if n == 0 {
            for d in self.devices.borrow().values() {
                d.done.notify();
            }
        }
    }

    /// Starts the next `syncfs` of `d` in a detached task (it completes, and wakes its
    /// waiters, even if the caller that started it is dropped).
    fn start(&self, d: &Rc<DeviceSync>) {
        d.running.set(true);
        let n = d.started.get() + 1;
        d.started.set(n);
        let d = d.clone();
        glommio::spawn_local(async move {
            let fd = d.fd.clone();
            let t = Instant::now();
            let res = crate::blocking::run(&d.key, move || syncfs_fd(&fd)).await;
            d.sync_time.set(d.sync_time.get() + t.elapsed());
            if let Err(e) = res {
                tracing::error!(error = %e, "syncfs failed; the logs waiting for it fail");
                *d.failed.borrow_mut() = Some((e.kind(), format!("syncfs: {e}")));
            }
            d.finished.set(n);
            d.running.set(false);
            d.done.notify();
        })
        .detach();
    }

    async fn device(&self, dev: u64, dir: &Path) -> Result<Rc<DeviceSync>, StorageError> {
        if let Some(d) = self.devices.borrow().get(&dev) {
            return Ok(d.clone());
        }
        let path = dir.to_path_buf();
        let fd = crate::blocking::run(dir, move || std::fs::File::open(&path)).await?;
        let d = Rc::new(DeviceSync {
            fd: Arc::new(fd),
            key: PathBuf::from(format!("group-sync-{dev}")),
            started: Cell::new(0),
            finished: Cell::new(0),
            running: Cell::new(false),
            failed: RefCell::new(None),
            done: Signal::default(),
            sync_time: Cell::new(Duration::ZERO),
        });
        // another caller may have opened it meanwhile: keep the first
        Ok(self.devices.borrow_mut().entry(dev).or_insert(d).clone())
    }
}

pub(crate) fn syncfs_fd(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs takes a file descriptor the caller owns and keeps open for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::GroupSync;
    use std::future::Future;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::rc::Rc;

    /// Runs `f` (a temporary directory and its device) on an executor with blocking helpers.
    fn on_executor<F, Fut>(f: F)
    where
        F: FnOnce(PathBuf, u64) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let dir = tempfile::tempdir().expect("tempdir"); // ok: test
        let path = dir.path().to_path_buf();
        let dev = std::fs::metadata(&path).expect("stat").dev(); // ok: test
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(2))
            .spawn(move || f(path, dev))
            .expect("spawn executor") // ok: test
            .join()
            .expect("executor panicked"); // ok: test
    }

    /// A wait that arrives while a `syncfs` runs is not covered by it (its writes may have
    /// come after that call began): it waits for the next one.
    #[test]
    fn a_wait_returns_only_after_a_sync_that_started_after_it() {
        on_executor(|path, dev| async move {
            let gs = Rc::new(GroupSync::default());
            gs.wait(dev, &path).await.expect("first sync"); // ok: test
            assert_eq!(gs.stats().0, 1);
            let (g, p) = (gs.clone(), path.clone());
            let a = glommio::spawn_local(async move { g.wait(dev, &p).await });
            // `a` starts sync 2 and waits for it
            futures_lite::future::yield_now().await;
            gs.wait(dev, &path).await.expect("third sync"); // ok: test
            assert_eq!(gs.stats().0, 3, "a wait during sync 2 needs sync 3");
            a.await.expect("second sync"); // ok: test
            gs.wait(dev, &path)
                .await
                .expect("a fourth sync, nothing running"); // ok: test
            assert_eq!(gs.stats().0, 4);
        });
    }

    /// Holds delay `wait` until their release, not `wait_unheld`, whose `syncfs` also
    /// serves a held waiter that came before it.
    #[test]
    fn an_unheld_wait_syncs_while_holds_are_taken() {
        on_executor(|path, dev| async move {
            let gs = Rc::new(GroupSync::default());
            gs.hold(1);
            let (g, p) = (gs.clone(), path.clone());
            let held = glommio::spawn_local(async move { g.wait(dev, &p).await });
            futures_lite::future::yield_now().await;
            assert_eq!(gs.stats().0, 0, "a held wait starts no sync");
            gs.wait_unheld(dev, &path).await.expect("unheld sync"); // ok: test
            assert_eq!(gs.stats().0, 1);
            held.await.expect("served by the unheld sync"); // ok: test
            assert_eq!(gs.stats().0, 1);
            gs.release();
        });
    }
}
