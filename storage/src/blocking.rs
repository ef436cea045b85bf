//! File-system calls that io_uring (glommio 0.9) does not offer as async — opening a
//! directory to fsync it, `syncfs`, removing and renaming files and directories, reading small index
//! and marker files, writing small files atomically — run on glommio's blocking pool, so a
//! slow disk stalls a helper thread, never the shard's reactor. Callers await the result.
//! The pool has `storage.blocking.threads` helpers per shard (the broker sizes it; a bare
//! glommio executor has one). Calls are keyed by the directory they touch: one
//! directory's calls run one at a time, in the order issued (a FIFO lock per directory),
//! so two writes of one temp file never overlap and a read never sees a file another
//! helper is half-way through; different directories' calls run in parallel, so many new
//! partitions' directory fsyncs share the file system's journal commits instead of
//! queueing behind one another.
//!
//! ```text
//!  run(dir a) ─► lock a ─┐                   ┌─► helper 1: fsync(a)
//!  run(dir b) ─► lock b ─┼─► blocking pool ──┼─► helper 2: fsync(b)
//!  run(dir a) ─► waits for lock a ...        └─► ...
//! ```

use glommio::sync::Semaphore;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

thread_local! {
    /// The shard's per-directory locks, kept while a call holds or awaits one.
    static DIR_LOCKS: RefCell<HashMap<PathBuf, Rc<Semaphore>>> = RefCell::new(HashMap::new());
}

/// Runs `f`, which touches files in `dir` (or `dir` itself), on one of the shard's
/// blocking helper threads, after every call about `dir` issued before it, and waits for
/// its result. The lock is held until `f` returns even if the caller stops waiting (a
/// detached task owns it), so a dropped caller never lets the next call on `dir` overlap
/// its `f`.
pub async fn run<R, F>(dir: &Path, f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let key = dir.to_path_buf();
    let lock = DIR_LOCKS.with(|m| {
        m.borrow_mut()
            .entry(key.clone())
            .or_insert_with(|| Rc::new(Semaphore::new(1)))
            .clone()
    });
    let task = glommio::spawn_local(async move {
        // the semaphore is never closed: the permit always comes
        let permit = crate::permit::acquire(&lock, 1).await;
        let out = glommio::executor().spawn_blocking(f).await;
        drop(permit);
        drop(lock);
        DIR_LOCKS.with(|m| {
            let mut m = m.borrow_mut();
            if m.get(&key).is_some_and(|l| Rc::strong_count(l) == 1) {
                m.remove(&key);
            }
        });
        out
    })
    .detach();
    match task.await {
        Some(out) => out,
        // a detached task ends without its output only if its executor is torn down
        // (then no task awaits here any more) or its call panicked on the helper
        None => panic!(
            "a blocking call on {} ended without a result",
            dir.display()
        ),
    }
}

/// Removes a file; a missing file is not an error.
pub(crate) async fn remove_file(path: PathBuf) -> std::io::Result<()> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    run(&dir, move || remove_if_exists(&path)).await
}

/// Removes a file, a missing one not being an error (blocking: call it inside `run`).
pub(crate) fn remove_if_exists(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// fsyncs a directory (after files in it were created, renamed or removed).
pub(crate) async fn sync_dir(dir: PathBuf) -> std::io::Result<()> {
    run(&dir.clone(), move || sync_dir_now(&dir)).await
}

/// `sync_dir` in place (blocking: call it inside `run`).
pub(crate) fn sync_dir_now(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// `syncfs` on the filesystem holding `dir`: every file's written data and metadata on it
/// reach the disk (Linux reports writeback errors since the fd was opened).
pub(crate) async fn syncfs(dir: PathBuf) -> std::io::Result<()> {
    run(&dir.clone(), move || {
        use std::os::fd::AsRawFd;
        let d = std::fs::File::open(&dir)?;
        // SAFETY: syncfs takes a file descriptor we own and keep open for the call.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::syncfs(d.as_raw_fd()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
    .await
}

/// Write `data` to `dir/name` atomically: temp file, fsync, rename, directory fsync.
/// Blocking: call it inside `run` keyed by `dir`.
pub(crate) fn write_atomic(dir: &Path, tmp: &str, name: &str, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir_now(dir)
}

#[cfg(test)]
mod tests {
    use super::run;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    fn on_executor_with_helpers<T: Send + 'static>(
        helpers: usize,
        f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
    ) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(helpers))
            .spawn(f)
            .expect("spawn executor") // ok: test
            .join()
            .expect("executor panicked") // ok: test
    }

    /// One directory's calls run one at a time in the order issued, whatever the helpers.
    #[test]
    fn one_directory_runs_in_order_one_at_a_time() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        on_executor_with_helpers(4, move || {
            Box::pin(async move {
                let dir = PathBuf::from("/nonexistent/a");
                let tasks: Vec<_> = (0..8u32)
                    .map(|i| {
                        let (l, dir) = (l.clone(), dir.clone());
                        glommio::spawn_local(async move {
                            run(&dir, move || {
                                l.lock().unwrap().push(("start", i)); // ok: test
                                                                      // later calls would overtake this one if they ran at once
                                std::thread::sleep(Duration::from_millis(u64::from(8 - i) * 3));
                                l.lock().unwrap().push(("end", i)); // ok: test
                            })
                            .await
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await;
                }
            })
        });
        let got = log.lock().unwrap().clone(); // ok: test
        let want: Vec<_> = (0..8u32).flat_map(|i| [("start", i), ("end", i)]).collect();
        assert_eq!(got, want);
    }

    /// Different directories' calls run on several helpers at once.
    #[test]
    fn different_directories_run_in_parallel() {
        let took = on_executor_with_helpers(4, || {
            Box::pin(async {
                let t = Instant::now();
                let tasks: Vec<_> = (0..4)
                    .map(|i| {
                        glommio::spawn_local(async move {
                            let dir = PathBuf::from(format!("/nonexistent/{i}"));
                            run(&dir, || std::thread::sleep(Duration::from_millis(200))).await
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await;
                }
                t.elapsed()
            })
        });
        // one at a time would take 800 ms
        assert!(took < Duration::from_millis(600), "took {took:?}");
    }

    /// A caller that stops waiting does not release its directory early: the next call
    /// starts only after the abandoned one's function returned.
    #[test]
    fn an_abandoned_call_keeps_its_directory_until_done() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        on_executor_with_helpers(4, move || {
            Box::pin(async move {
                let dir = PathBuf::from("/nonexistent/x");
                let (l1, d1) = (l.clone(), dir.clone());
                let first = glommio::spawn_local(async move {
                    run(&d1, move || {
                        std::thread::sleep(Duration::from_millis(100));
                        l1.lock().unwrap().push("first done"); // ok: test
                    })
                    .await
                });
                glommio::timer::sleep(Duration::from_millis(20)).await;
                drop(first); // cancels the waiting task, not the call
                let l2 = l.clone();
                run(&dir, move || l2.lock().unwrap().push("second")).await; // ok: test
            })
        });
        assert_eq!(*log.lock().unwrap(), vec!["first done", "second"]); // ok: test
    }
}
