//! File-system calls that io_uring (glommio 0.9) does not offer as async — opening a
//! directory to fsync it, `syncfs`, removing and renaming files and directories, reading small index
//! and marker files, writing small files atomically — run on glommio's blocking pool: one helper thread per shard, so a slow disk
//! stalls that helper, never the shard's reactor. Callers await the result.

use std::path::{Path, PathBuf};

/// Runs `f` on the shard's blocking helper thread and waits for its result.
pub(crate) async fn run<R, F>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(f).await
}

/// Removes a file; a missing file is not an error.
pub(crate) async fn remove_file(path: PathBuf) -> std::io::Result<()> {
    run(move || match std::fs::remove_file(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    })
    .await
}

/// fsyncs a directory (after files in it were created, renamed or removed).
pub(crate) async fn sync_dir(dir: PathBuf) -> std::io::Result<()> {
    run(move || std::fs::File::open(&dir)?.sync_all()).await
}

/// `syncfs` on the filesystem holding `dir`: every file's written data and metadata on it
/// reach the disk (Linux reports writeback errors since the fd was opened).
pub(crate) async fn syncfs(dir: PathBuf) -> std::io::Result<()> {
    run(move || {
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
/// Blocking: run it on the blocking helper.
pub(crate) fn write_atomic(dir: &Path, tmp: &str, name: &str, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}
