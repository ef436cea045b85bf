//! The shard's table of open segment files, so the descriptor count stays bounded with
//! thousands of partitions: files open lazily, the least recently used one is closed when
//! `max_open` is reached, and an idle sweep closes files unused for `idle_timeout`.
//! A file still in use by an in-flight I/O stays alive through its `Rc` until that ends.
//! Owned by one shard; never crosses cores.

use glommio::io::DmaFile;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

type Key = (u64, i64); // (log id, segment base offset)

pub(crate) struct FileTable {
    max_open: usize,
    tick: u64,
    files: HashMap<Key, (Rc<DmaFile>, u64, Instant)>,
    lru: BTreeMap<u64, Key>,
}

impl FileTable {
    pub(crate) fn new(max_open: usize) -> Self {
        FileTable {
            max_open: max_open.max(1),
            tick: 0,
            files: HashMap::new(),
            lru: BTreeMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    pub(crate) fn get(&mut self, log: u64, base: i64) -> Option<Rc<DmaFile>> {
        self.tick += 1;
        let tick = self.tick;
        let (f, t, used) = self.files.get_mut(&(log, base))?;
        self.lru.remove(t);
        *t = tick;
        *used = Instant::now();
        self.lru.insert(tick, (log, base));
        Some(f.clone())
    }

    /// Register a newly opened file; returns files evicted to stay under the limit.
    pub(crate) fn insert(&mut self, log: u64, base: i64, f: Rc<DmaFile>) -> Vec<Rc<DmaFile>> {
        let mut evicted = Vec::new();
        if let Some(old) = self.remove(log, base) {
            evicted.push(old);
        }
        while self.files.len() >= self.max_open {
            let Some((_, key)) = self.lru.pop_first() else {
                break;
            };
            if let Some((f, _, _)) = self.files.remove(&key) {
                evicted.push(f);
            }
        }
        self.tick += 1;
        self.lru.insert(self.tick, (log, base));
        self.files
            .insert((log, base), (f, self.tick, Instant::now()));
        evicted
    }

    pub(crate) fn remove(&mut self, log: u64, base: i64) -> Option<Rc<DmaFile>> {
        let (f, t, _) = self.files.remove(&(log, base))?;
        self.lru.remove(&t);
        Some(f)
    }

    pub(crate) fn remove_log(&mut self, log: u64) -> Vec<Rc<DmaFile>> {
        let keys: Vec<Key> = self.files.keys().filter(|k| k.0 == log).copied().collect();
        keys.into_iter()
            .filter_map(|(l, b)| self.remove(l, b))
            .collect()
    }

    /// Files unused for at least `idle` (removed from the table).
    pub(crate) fn take_idle(&mut self, idle: Duration) -> Vec<Rc<DmaFile>> {
        let now = Instant::now();
        let keys: Vec<Key> = self
            .files
            .iter()
            .filter(|(_, (_, _, used))| now.duration_since(*used) >= idle)
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|(l, b)| self.remove(l, b))
            .collect()
    }
}

/// Close files asynchronously; an `Rc` still held elsewhere just drops our reference.
pub(crate) async fn close_files(files: Vec<Rc<DmaFile>>) {
    for f in files {
        let _ = f.close_rc().await; // ok: a failed close of a read/flushed file loses nothing
    }
}
