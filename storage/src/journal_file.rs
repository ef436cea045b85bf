//! `ShardJournal`: one shard's two preallocated, zero-filled journal files, used in turn
//! (format and replay in `journal.rs`). The active file holds the live epoch; `append`
//! writes one record set with one aligned DMA write and one `fdatasync` (the file is
//! written through once when created, so the sync has no metadata to update). `switch`
//! starts the next epoch in the other file (its header written and synced) while the old
//! epoch stays live until a checkpoint has its segments synced and calls
//! `retire_previous`; only then can that file take a later epoch. `JournalCtl` adds what
//! the cycle, write-behind and checkpoints of `journal_flush.rs` share. Epochs only grow: a new one is
//! one past the highest either file's header names, so a reused file's stale record sets
//! never pass as the new epoch's.
//!
//! ```text
//!  file[active]:  | header(epoch E, live) | set | set | ... pos ... zeros |
//!  file[other]:   | header(E-1, live until retire_previous, then retired) | stale |
//! ```

use crate::error::StorageError;
use crate::inner::LogInner;
use crate::journal::{
    encode_set, file_name, set_len, Entry, FileHeader, FIRST_SET, HEADER_LEN, JOURNAL_DIR,
};
use crate::segment::{align_down, PAGE};
use crate::signal::Signal;
use glommio::io::{DmaFile, OpenOptions};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::rc::Rc;

/// Zero-fill writes when a journal file is created (one per disk turn of the shard).
const FILL_CHUNK: u64 = 16 << 20;

fn io_err(kind: std::io::ErrorKind, msg: String) -> StorageError {
    StorageError::Io(std::io::Error::new(kind, msg))
}

/// One shard's journal. Owned by the shard's flusher; never crosses cores. `append` and
/// `switch` are called by one task at a time (the flusher's cycle); `retire_previous` by
/// the checkpoint, which may run beside a cycle's `append`.
pub(crate) struct ShardJournal {
    files: [DmaFile; 2],
    shard: u32,
    /// Bytes of each file.
    size: u64,
    active: Cell<usize>,
    epoch: Cell<u64>,
    /// Where the next record set of the active file goes.
    pos: Cell<u64>,
    /// The other file still holds a live epoch (a checkpoint has not retired it).
    previous_live: Cell<bool>,
}

impl ShardJournal {
    /// Opens (or creates, zero-filled) the shard's two journal files of `size` bytes in
    /// `<data_dir>/__journal` and starts a new epoch in one of them. Call after
    /// `replay_journals`: a live journal found here is an error, never overwritten. With
    /// `gate` (the shard's storage), each zero-fill write waits for the shard's disk turn
    /// (between flusher cycles, as the cleaner's I/O does) and the fill stops with an
    /// error once the shard is stopping (a file left short is filled again next time).
    pub(crate) async fn open(
        data_dir: &Path,
        shard: u32,
        size: u64,
        gate: Option<&crate::shard::ShardStorage>,
    ) -> Result<ShardJournal, StorageError> {
        let size = align_down(size);
        if size < 4 * PAGE {
            return Err(io_err(
                std::io::ErrorKind::InvalidInput,
                format!("journal size {size} is below 4 pages"),
            ));
        }
        let jdir = data_dir.join(JOURNAL_DIR);
        let d = jdir.clone();
        let parent = data_dir.to_path_buf();
        let dev = crate::blocking::run(&jdir, move || -> std::io::Result<u64> {
            use std::os::unix::fs::MetadataExt;
            if !d.is_dir() {
                std::fs::create_dir_all(&d)?;
                // the directory's own entry, before any set in it is acknowledged
                std::fs::File::open(&parent)?.sync_all()?;
            }
            Ok(std::fs::metadata(&d)?.dev())
        })
        .await?;
        // a new journal file is empty when opened: it must not be the first DMA file
        // of this device on this thread (see `probe_device`)
        crate::segment::probe_device(&jdir, dev).await?;
        let mut epoch = 0u64;
        let mut files = Vec::with_capacity(2);
        let mut created = false;
        for slot in 0..2 {
            let path = jdir.join(file_name(shard, slot));
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .dma_open(&path)
                .await?;
            let len = f.file_size().await?;
            if len >= HEADER_LEN as u64 {
                let h = f.read_at_aligned(0, PAGE as usize).await?;
                if let Some(h) = FileHeader::decode(&h) {
                    if h.live {
                        return Err(io_err(
                            std::io::ErrorKind::InvalidData,
                            format!("{} is live: replay it first", path.display()),
                        ));
                    }
                    epoch = epoch.max(h.epoch);
                }
            }
            if len != size {
                // written through with zeros, so a later overwrite needs no extent change
                f.truncate(0).await?;
                let mut at = 0;
                while at < size {
                    if let Some(g) = gate {
                        if g.stopping.get() {
                            return Err(io_err(
                                std::io::ErrorKind::Interrupted,
                                format!("the shard stopped while {} was filled", path.display()),
                            ));
                        }
                        g.disk_turn().await;
                    }
                    let n = (size - at).min(FILL_CHUNK) as usize;
                    let mut buf = f.alloc_dma_buffer(n);
                    buf.as_bytes_mut().fill(0);
                    let w = f.write_at(buf, at).await?;
                    if w != n {
                        return Err(io_err(
                            std::io::ErrorKind::WriteZero,
                            format!("short write filling {}", path.display()),
                        ));
                    }
                    at += n as u64;
                }
                f.fdatasync().await?;
                created = true;
            }
            files.push(f);
        }
        if created {
            crate::blocking::sync_dir(jdir).await?;
        }
        let (Some(b), Some(a)) = (files.pop(), files.pop()) else {
            unreachable!("two journal files were opened");
        };
        let j = ShardJournal {
            files: [a, b],
            shard,
            size,
            active: Cell::new(1),
            epoch: Cell::new(epoch),
            pos: Cell::new(FIRST_SET),
            previous_live: Cell::new(false),
        };
        j.switch().await?;
        Ok(j)
    }

    /// The live epoch new record sets carry.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.get()
    }

    /// Bytes of the active file used by its header and record sets.
    pub(crate) fn used(&self) -> u64 {
        self.pos.get()
    }

    /// Bytes of each journal file.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The previous epoch is still live (its checkpoint has not finished): `switch` must
    /// wait for `retire_previous`.
    pub(crate) fn previous_live(&self) -> bool {
        self.previous_live.get()
    }

    /// True if a record set of `entries` fits in the active file.
    pub(crate) fn fits(&self, entries: &[Entry]) -> bool {
        self.pos.get() + set_len(entries) as u64 <= self.size
    }

    /// Writes `entries` as one record set of the live epoch (one aligned DMA write) and
    /// makes it durable (one `fdatasync`). An error if it does not fit (`fits`; switch
    /// first). Once this returns Ok, a replay after any crash writes these entries.
    pub(crate) async fn append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let len = set_len(entries);
        let at = self.pos.get();
        if at + len as u64 > self.size {
            return Err(io_err(
                std::io::ErrorKind::StorageFull,
                format!("record set of {len} bytes does not fit the journal"),
            ));
        }
        let f = &self.files[self.active.get()];
        let mut buf = f.alloc_dma_buffer(len);
        encode_set(self.epoch.get(), entries, buf.as_bytes_mut());
        self.pos.set(at + len as u64);
        let w = f.write_at(buf, at).await?;
        if w != len {
            return Err(io_err(
                std::io::ErrorKind::WriteZero,
                format!("short journal write: {w} of {len} bytes"),
            ));
        }
        f.fdatasync().await?;
        Ok(())
    }

    /// Starts the next epoch in the other file: its header (live) written and synced,
    /// then new record sets go there. The epoch before stays live until
    /// `retire_previous`. Returns the epoch that ended. An error while the other file
    /// still holds a live epoch.
    pub(crate) async fn switch(&self) -> Result<u64, StorageError> {
        if self.previous_live.get() {
            return Err(io_err(
                std::io::ErrorKind::WouldBlock,
                "the previous journal epoch is not retired yet".into(),
            ));
        }
        let old = self.epoch.get();
        let next = 1 - self.active.get();
        let header = FileHeader {
            shard: self.shard,
            epoch: old + 1,
            live: true,
        };
        self.write_header(next, header).await?;
        // the file that ended is live only if a record set went into it
        self.previous_live.set(self.pos.get() > FIRST_SET);
        self.active.set(next);
        self.epoch.set(old + 1);
        self.pos.set(FIRST_SET);
        if !self.previous_live.get() {
            self.write_header(
                1 - next,
                FileHeader {
                    shard: self.shard,
                    epoch: old,
                    live: false,
                },
            )
            .await?;
        }
        Ok(old)
    }

    /// The previous epoch's entries are all in synced segment files (a checkpoint):
    /// its file's header says retired, synced, and the file is free for a later epoch.
    pub(crate) async fn retire_previous(&self) -> Result<(), StorageError> {
        if !self.previous_live.get() {
            return Ok(());
        }
        let header = FileHeader {
            shard: self.shard,
            epoch: self.epoch.get() - 1,
            live: false,
        };
        self.write_header(1 - self.active.get(), header).await?;
        self.previous_live.set(false);
        Ok(())
    }

    async fn write_header(&self, slot: usize, h: FileHeader) -> Result<(), StorageError> {
        let f = &self.files[slot];
        let mut buf = f.alloc_dma_buffer(PAGE as usize);
        buf.as_bytes_mut().copy_from_slice(&h.encode());
        let w = f.write_at(buf, 0).await?;
        if w != PAGE as usize {
            return Err(io_err(
                std::io::ErrorKind::WriteZero,
                "short journal header write".into(),
            ));
        }
        f.fdatasync().await?;
        Ok(())
    }

    /// Closes both files (the epochs' states stay as their headers say); the shard's files
    /// are dropped with its storage.
    #[cfg(test)]
    pub(crate) async fn close(self) {
        for f in self.files {
            let _ = f.close().await; // ok: everything that matters was synced
        }
    }
}

/// A log's segments written behind since the last checkpoint.
pub(crate) type Written = (Rc<LogInner>, BTreeSet<i64>);

/// The shard's journal and what the cycle, the write-behind task and checkpoints share.
/// Owned by the shard's storage; never crosses cores.
pub(crate) struct JournalCtl {
    pub(crate) journal: ShardJournal,
    /// One append or epoch switch at a time.
    pub(crate) io: glommio::sync::Semaphore,
    /// One checkpoint at a time.
    pub(crate) ckpt: glommio::sync::Semaphore,
    /// Logs with journaled batches to write behind.
    pub(crate) behind: RefCell<Vec<Rc<LogInner>>>,
    pub(crate) behind_wake: Signal,
    /// Segments written behind since the last checkpoint, per log id.
    pub(crate) to_sync: RefCell<HashMap<u64, Written>>,
    /// Failed logs whose journaled batches could not be written behind (a closing one
    /// may have left the shard's registry): no checkpoint retires an epoch while one is.
    pub(crate) stranded: RefCell<Vec<Rc<LogInner>>>,
    /// Tests: the write-behind task starts no pass while set.
    #[cfg(test)]
    pub(crate) behind_paused: Cell<bool>,
    /// Checkpoints running or waiting for their turn (a cycle starts one only at 0).
    pub(crate) checkpoints_wanted: Cell<u32>,
    /// Write-behind passes started and ended (`u64::MAX` once the task ended), and a
    /// signal at each end: a checkpoint waits for a pass that started after its switch.
    pub(crate) passes_started: Cell<u64>,
    pub(crate) passes_done: Cell<u64>,
    pub(crate) pass_done: Signal,
}

impl JournalCtl {
    pub(crate) async fn open(
        dir: Option<&Path>,
        shard: u32,
        bytes: u64,
        gate: Option<&crate::shard::ShardStorage>,
    ) -> Result<JournalCtl, StorageError> {
        let Some(dir) = dir else {
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "storage.flush.sync=journal without a journal directory",
            )));
        };
        let journal = ShardJournal::open(dir, shard, bytes, gate).await?;
        Ok(JournalCtl {
            journal,
            io: glommio::sync::Semaphore::new(1),
            ckpt: glommio::sync::Semaphore::new(1),
            behind: RefCell::new(Vec::new()),
            behind_wake: Signal::default(),
            to_sync: RefCell::new(HashMap::new()),
            stranded: RefCell::new(Vec::new()),
            #[cfg(test)]
            behind_paused: Cell::new(false),
            checkpoints_wanted: Cell::new(0),
            passes_started: Cell::new(0),
            passes_done: Cell::new(0),
            pass_done: Signal::default(),
        })
    }

    /// The oldest epoch whose entries a replay would still write.
    pub(crate) fn oldest_live(&self) -> u64 {
        let e = self.journal.epoch();
        if self.journal.previous_live() {
            e - 1
        } else {
            e
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::replay_journals;
    use crate::segment::log_path;
    use bytes::Bytes;

    fn entry(dir: &str, pos: u64, data: &'static [u8]) -> Entry {
        Entry {
            dir: dir.into(),
            seg_base: 0,
            pos,
            data: Bytes::from_static(data),
        }
    }

    fn run<F, Fut>(f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn appended_sets_replay_until_retired() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        std::fs::create_dir(d.join("t-0")).unwrap();
        let d2 = d.clone();
        run(move || async move {
            let j = ShardJournal::open(&d2, 0, 64 * PAGE, None).await.unwrap();
            assert_eq!((j.epoch(), j.size()), (1, 64 * PAGE));
            j.append(&[entry("t-0", 0, b"abc")]).await.unwrap();
            j.append(&[entry("t-0", 3, b"def")]).await.unwrap();
            assert_eq!(j.used(), FIRST_SET + 2 * PAGE);
            // a new epoch; the old one stays live until its checkpoint
            assert_eq!(j.switch().await.unwrap(), 1);
            assert!(j.previous_live());
            assert!(j.switch().await.is_err());
            j.append(&[entry("t-0", 6, b"ghi")]).await.unwrap();
            j.close().await; // a crash: both epochs live
        });
        let r = replay_journals(&d).unwrap();
        assert_eq!((r.files, r.record_sets, r.entries), (2, 3, 3));
        assert_eq!(
            std::fs::read(log_path(&d.join("t-0"), 0)).unwrap(),
            b"abcdefghi"
        );
        std::fs::write(log_path(&d.join("t-0"), 0), b"abcdefghi-cut").unwrap();
        let d2 = d.clone();
        run(move || async move {
            // replay retired both; the next run starts past their epochs
            let j = ShardJournal::open(&d2, 0, 64 * PAGE, None).await.unwrap();
            assert_eq!(j.epoch(), 3);
            j.append(&[entry("t-0", 0, b"xyz")]).await.unwrap();
            j.switch().await.unwrap();
            j.retire_previous().await.unwrap(); // its checkpoint finished
            assert!(!j.previous_live());
            j.append(&[entry("t-0", 3, b"XYZ")]).await.unwrap();
            j.close().await;
        });
        let r = replay_journals(&d).unwrap();
        // only the live epoch 4 is replayed; the retired epoch 3 is not
        assert_eq!((r.files, r.record_sets, r.entries), (1, 1, 1));
        assert_eq!(
            std::fs::read(log_path(&d.join("t-0"), 0)).unwrap(),
            b"abcXYZghi-cut"
        );
    }

    #[test]
    fn a_live_journal_is_never_overwritten_and_a_full_one_refuses() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        run(move || async move {
            let j = ShardJournal::open(&d, 2, 4 * PAGE, None).await.unwrap();
            j.append(&[entry("t-0", 0, b"a")]).await.unwrap();
            j.append(&[entry("t-0", 1, b"b")]).await.unwrap();
            j.append(&[entry("t-0", 2, b"c")]).await.unwrap();
            assert!(!j.fits(&[entry("t-0", 3, b"d")]));
            assert!(j.append(&[entry("t-0", 3, b"d")]).await.is_err());
            j.close().await;
            assert!(ShardJournal::open(&d, 2, 4 * PAGE, None).await.is_err());
        });
    }
}
