//! A simulated disk for tests and the raft simulation: an in-memory `Fs` that keeps, apart
//! from what the code sees, what would survive a power cut, and can inject failures.
//!
//! ```text
//!  live names ──sync_dir──► durable names        file data ──sync──► synced data
//!  crash(): names := durable names; data := synced data + a torn prefix of the unsynced
//!           appended tail (how much survives is the caller's choice)
//! ```
//! Invariant: after `crash`, exactly the synced bytes under durable names are guaranteed;
//! everything else is lost or torn. `fail_after(n)` makes the n-th next mutating call and
//! every call after it fail until the next `crash`, so a node dies mid-write.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::Fs;

#[derive(Debug, Default, Clone)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Debug, Default)]
struct Disk {
    live: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// Mutating calls left before the injected failure; `Some(0)` means failing now.
    fail_after: Option<u64>,
    syncs: u64,
}

/// A crashable in-memory disk. Clones share the same disk, so a test keeps one handle to
/// crash it while the storage owns another.
#[derive(Debug, Default, Clone)]
pub struct MemFs {
    disk: Arc<Mutex<Disk>>,
}

fn injected() -> io::Error {
    io::Error::other("injected disk failure")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

impl MemFs {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        // A test that panicked while holding the lock has failed already; keep going.
        self.disk
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the `n`-th next mutating call fail (0 = the next one), and all calls after it.
    pub fn fail_after(&self, n: u64) {
        self.disk().fail_after = Some(n);
    }

    /// Cancels an injected failure that has not fired yet (or stops one that has).
    pub fn clear_fault(&self) {
        self.disk().fail_after = None;
    }

    /// Number of `sync` and `sync_dir` calls so far.
    pub fn syncs(&self) -> u64 {
        self.disk().syncs
    }

    /// Power cut: keeps durable names and synced bytes; of each file's unsynced appended
    /// tail keeps `keep(tail_len)` bytes (clamped). Clears an injected failure.
    pub fn crash(&self, keep: &mut dyn FnMut(usize) -> usize) {
        let mut disk = self.disk();
        disk.live = disk.durable.clone();
        let referenced: Vec<u64> = disk.durable.values().copied().collect();
        let mut inodes = HashMap::new();
        for ino in referenced {
            if let Some(inode) = disk.inodes.get(&ino) {
                let mut data = inode.synced.clone();
                if inode.data.len() > inode.synced.len() && inode.data.starts_with(&inode.synced) {
                    let tail = &inode.data[inode.synced.len()..];
                    let kept = keep(tail.len()).min(tail.len());
                    data.extend_from_slice(&tail[..kept]);
                }
                inodes.insert(
                    ino,
                    Inode {
                        synced: data.clone(),
                        data,
                    },
                );
            }
        }
        disk.inodes = inodes;
        disk.fail_after = None;
    }
}

impl Disk {
    fn check(&mut self, mutating: bool) -> io::Result<()> {
        match self.fail_after {
            Some(0) => Err(injected()),
            Some(n) if mutating => {
                self.fail_after = Some(n - 1);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn inode_mut(&mut self, path: &Path) -> io::Result<&mut Inode> {
        let ino = *self.live.get(path).ok_or_else(|| not_found(path))?;
        self.inodes.get_mut(&ino).ok_or_else(|| not_found(path))
    }
}

impl Fs for MemFs {
    fn create_dir_all(&mut self, _dir: &Path) -> io::Result<()> {
        self.disk().check(false)
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        let mut disk = self.disk();
        disk.check(false)?;
        Ok(disk
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        let mut disk = self.disk();
        disk.check(false)?;
        Ok(disk.inode_mut(path)?.data.clone())
    }

    fn write(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut disk = self.disk();
        disk.check(true)?;
        let ino = disk.next_inode;
        disk.next_inode += 1;
        disk.inodes.insert(
            ino,
            Inode {
                data: data.to_vec(),
                synced: Vec::new(),
            },
        );
        disk.live.insert(path.to_path_buf(), ino);
        Ok(())
    }

    fn append(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut disk = self.disk();
        disk.check(true)?;
        disk.inode_mut(path)?.data.extend_from_slice(data);
        Ok(())
    }

    fn truncate(&mut self, path: &Path, len: u64) -> io::Result<()> {
        let mut disk = self.disk();
        disk.check(true)?;
        let inode = disk.inode_mut(path)?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        inode.data.truncate(len);
        Ok(())
    }

    fn sync(&mut self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.check(true)?;
        disk.syncs += 1;
        let inode = disk.inode_mut(path)?;
        inode.synced = inode.data.clone();
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.check(true)?;
        let ino = disk.live.remove(from).ok_or_else(|| not_found(from))?;
        disk.live.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.check(true)?;
        disk.live.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.check(true)?;
        disk.syncs += 1;
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        disk.durable.retain(|p, _| !in_dir(p));
        let entries: Vec<(PathBuf, u64)> = disk
            .live
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        disk.durable.extend(entries);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_synced_bytes_under_durable_names() {
        let mut fs = MemFs::new();
        let dir = Path::new("/d");
        let a = dir.join("a");
        let b = dir.join("b");
        fs.write(&a, b"hello").unwrap(); // ok: test
        fs.sync(&a).unwrap(); // ok: test
        fs.sync_dir(dir).unwrap(); // ok: test
        fs.append(&a, b" world").unwrap(); // ok: test
        fs.write(&b, b"lost").unwrap(); // ok: test
        fs.sync(&b).unwrap(); // ok: test
        fs.crash(&mut |tail| tail.min(3));
        assert_eq!(fs.read(&a).unwrap(), b"hello wo"); // ok: test
        assert!(fs.read(&b).is_err());
        assert_eq!(fs.list(dir).unwrap(), vec!["a".to_string()]); // ok: test
    }

    #[test]
    fn rename_is_durable_only_after_dir_sync() {
        let mut fs = MemFs::new();
        let dir = Path::new("/d");
        let (tmp, fin) = (dir.join("x.tmp"), dir.join("x"));
        fs.write(&fin, b"old").unwrap(); // ok: test
        fs.sync(&fin).unwrap(); // ok: test
        fs.sync_dir(dir).unwrap(); // ok: test
        fs.write(&tmp, b"new").unwrap(); // ok: test
        fs.sync(&tmp).unwrap(); // ok: test
        fs.rename(&tmp, &fin).unwrap(); // ok: test
        assert_eq!(fs.read(&fin).unwrap(), b"new"); // ok: test
        fs.crash(&mut |_| 0);
        assert_eq!(fs.read(&fin).unwrap(), b"old"); // ok: test
    }

    #[test]
    fn injected_failure_hits_the_nth_mutation() {
        let mut fs = MemFs::new();
        let p = Path::new("/d/f");
        fs.fail_after(1);
        fs.write(p, b"a").unwrap(); // ok: test
        assert!(fs.append(p, b"b").is_err());
        assert!(fs.read(p).is_err());
        fs.crash(&mut |_| 0);
        assert!(fs.write(p, b"c").is_ok());
    }
}
