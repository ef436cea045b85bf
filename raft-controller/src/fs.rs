//! The few file operations the raft storage needs, behind a trait so the same storage code
//! runs on a real directory (`StdFs`) and on the crashable simulated disk (`MemFs`).
//!
//! Durability contract (what the storage relies on, what `MemFs` models): written bytes
//! are durable only after `sync` of that file; a created, renamed or removed name is durable
//! only after `sync_dir` of its directory. `StdFs` blocks the calling thread on every call
//! (std::fs, `File::sync_data`): the broker must call the storage from a helper thread,
//! never from a shard's executor.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// File operations on one directory tree. Implementations are owned by one raft storage.
pub trait Fs: Send {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&mut self, dir: &Path) -> io::Result<()>;
    /// Names of the regular files directly in `dir`.
    fn list(&mut self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates or replaces `path` with `data` (not yet durable).
    fn write(&mut self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Appends `data` to an existing file (not yet durable).
    fn append(&mut self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Cuts a file to `len` bytes (not yet durable).
    fn truncate(&mut self, path: &Path, len: u64) -> io::Result<()>;
    /// Makes a file's content durable (fdatasync).
    fn sync(&mut self, path: &Path) -> io::Result<()>;
    /// Renames a file within its directory (durable after `sync_dir`).
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file (durable after `sync_dir`).
    fn remove(&mut self, path: &Path) -> io::Result<()>;
    /// Makes the names in `dir` durable (fsync of the directory).
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
}

/// The real file system through std::fs. Every call blocks; see the module comment.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

impl Fs for StdFs {
    fn create_dir_all(&mut self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn write(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(data)
    }

    fn append(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut file = OpenOptions::new().append(true).open(path)?;
        file.write_all(data)
    }

    fn truncate(&mut self, path: &Path, len: u64) -> io::Result<()> {
        OpenOptions::new().write(true).open(path)?.set_len(len)
    }

    fn sync(&mut self, path: &Path) -> io::Result<()> {
        // fdatasync through any descriptor of the inode flushes its dirty pages.
        File::open(path)?.sync_data()
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
