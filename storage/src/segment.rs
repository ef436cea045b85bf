//! One segment of a partition log: `<base:020>.log` plus its `.index`, `.timeindex` and
//! (with aborted transactions) `.txnindex`,
//! their file names and small-file helpers, and the in-memory bookkeeping for one segment.
//! A segment covers the offsets from its base up to the next segment's base (the last
//! one up to the log end); its batches have strictly increasing offsets inside that
//! range, but not necessarily contiguous ones: a compacted segment keeps surviving
//! batches at their original offsets, so its first batch may start after its base and
//! gaps may follow any batch. Scanning a segment file is `scan.rs`.

use crate::error::StorageError;
use crate::index::{OffsetIndex, TimeIndex};
use crate::txn::SegTxn;
use glommio::io::{DmaFile, OpenOptions};
use sluice_proto::batch::RecordBatchHeader;
use std::path::{Path, PathBuf};

/// Direct-I/O alignment used for every write.
pub(crate) const PAGE: u64 = 4096;

pub(crate) fn log_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
pub(crate) fn index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}
pub(crate) fn timeindex_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}
/// Suffix of a segment file the cleaner is writing (`<base>.log.cleaned`, and its indexes).
pub(crate) const CLEANED: &str = "cleaned";
/// Suffix of a cleaned segment file committed to replace old ones (`swap.rs`).
pub(crate) const SWAP: &str = "swap";
/// Suffix of a segment file taken out of its log, to be freed (`reaper.rs`); whatever
/// carries it at open is removed.
pub(crate) const DELETED: &str = "deleted";

/// `path` with `.suffix` appended (`00…0.log` → `00…0.log.swap`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// The clean-shutdown marker (`recovery.rs` writes and trusts it).
pub(crate) fn marker_path(dir: &Path) -> PathBuf {
    dir.join(".clean_shutdown")
}

pub(crate) fn align_down(v: u64) -> u64 {
    v & !(PAGE - 1)
}
pub(crate) fn align_up(v: u64) -> u64 {
    (v + PAGE - 1) & !(PAGE - 1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SegState {
    /// The segment appends go to (always the last one).
    Active,
    /// Rolled in memory; the flusher still has to write its tail and seal it on disk.
    Rolled,
    /// Immutable on disk: file cut to its logical size, indexes written and synced.
    Sealed,
}

/// In-memory state of one segment; owned by the partition's shard, never crosses cores.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: i64,
    /// Logical size including appended-but-not-yet-durable bytes.
    pub(crate) size: u64,
    /// Bytes durable on disk (a prefix of `size`).
    pub(crate) flushed: u64,
    /// End of the offsets this segment covers: for the last segment the offset after its
    /// last batch (its base while empty), which is the log end; for any other segment the
    /// next segment's base (>= the offset after its last batch: a compacted segment may
    /// end in a gap).
    pub(crate) end_offset: i64,
    /// Max batch timestamp and the last offset of that batch; -1 when empty.
    pub(crate) max_ts: i64,
    pub(crate) max_ts_offset: i64,
    /// When the segment got its first batch (for segment.ms); -1 while empty.
    pub(crate) created_ms: i64,
    /// Loaded lazily for segments opened from disk; dropped again when idle.
    pub(crate) index: Option<OffsetIndex>,
    pub(crate) tindex: Option<TimeIndex>,
    pub(crate) bytes_since_index: u64,
    pub(crate) state: SegState,
    pub(crate) file_exists: bool,
    /// A cleaned segment just swapped in whose files may still carry the `.swap` suffix
    /// (the cleaner renames them right after; `ShardStorage::segment_file` tries both).
    pub(crate) in_swap: bool,
    /// Its aborted-transaction entries (`txn.rs`).
    pub(crate) txn: SegTxn,
    /// A `.txnindex` file may exist for it (written by the flusher or the cleaner,
    /// found at open).
    pub(crate) txn_file: bool,
    /// Its entries changed since its `.txnindex` was written: the flusher writes the
    /// file before the batches it flushes next (so a durable marker always has its
    /// entry on disk).
    pub(crate) txn_dirty: bool,
}

impl Segment {
    /// A segment as a scan left it: everything scanned is on disk, and the bytes since
    /// the last index entry are counted from that entry.
    pub(crate) fn scanned(mut self) -> Segment {
        self.flushed = self.size;
        let last_pos = self
            .index
            .as_ref()
            .and_then(|i| i.entries.last())
            .map_or(0, |e| e.1 as u64);
        self.bytes_since_index = self.size - last_pos;
        self
    }

    pub(crate) fn new_empty(base: i64, file_exists: bool) -> Segment {
        Segment {
            base,
            size: 0,
            flushed: 0,
            end_offset: base,
            max_ts: -1,
            max_ts_offset: -1,
            created_ms: -1,
            index: Some(OffsetIndex::default()),
            tindex: Some(TimeIndex::default()),
            bytes_since_index: 0,
            state: SegState::Active,
            file_exists,
            in_swap: false,
            txn: SegTxn::default(),
            txn_file: false,
            txn_dirty: false,
        }
    }

    /// Account one batch placed at the current end of the file (its base offset at or
    /// after `end_offset`, checked by the caller); keeps the indexes sparse.
    pub(crate) fn note_batch(&mut self, h: &RecordBatchHeader, interval: u32, now_ms: i64) {
        let pos = self.size;
        let size = h.total_size() as u64;
        let rel = (h.base_offset - self.base) as u32;
        if self.bytes_since_index >= interval as u64 && pos > 0 {
            if let Some(i) = self.index.as_mut() {
                i.push(rel, pos as u32);
            }
            if let Some(t) = self.tindex.as_mut() {
                // max timestamp of everything before this index point, so recovery can
                // resume a scan here knowing the prefix's max timestamp exactly
                t.push(self.max_ts, rel.saturating_sub(1));
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += size;
        if h.max_timestamp > self.max_ts || self.max_ts_offset < 0 {
            self.max_ts = h.max_timestamp.max(self.max_ts);
            self.max_ts_offset = h.last_offset();
        }
        if self.created_ms < 0 {
            self.created_ms = now_ms;
        }
        self.size += size;
        self.end_offset = h.last_offset().saturating_add(1);
    }

    /// Load indexes from disk if not in memory (sync, small files). A missing or damaged
    /// file yields the valid prefix (possibly empty): correct, only sparser. Shard code
    /// calls `load_indexes` first (off the shard thread), so this finds them in memory and
    /// reads nothing.
    pub(crate) fn ensure_indexes(&mut self, dir: &Path) {
        if !self.indexes_missing() {
            return;
        }
        let idx = std::fs::read(index_path(dir, self.base)).unwrap_or_default();
        let tidx = std::fs::read(timeindex_path(dir, self.base)).unwrap_or_default();
        self.install_indexes(&idx, &tidx);
    }

    pub(crate) fn indexes_missing(&self) -> bool {
        self.index.is_none() || self.tindex.is_none()
    }

    /// Installs index file contents read elsewhere, for whichever index is not in memory.
    pub(crate) fn install_indexes(&mut self, idx: &[u8], tidx: &[u8]) {
        let max_rel = (self.end_offset - self.base).max(0) as u64;
        if self.index.is_none() {
            let idx = OffsetIndex::decode(idx, max_rel, self.flushed.max(1));
            let last_pos = idx.entries.last().map_or(0, |e| e.1 as u64);
            self.bytes_since_index = self.flushed.saturating_sub(last_pos);
            self.index = Some(idx);
        }
        if self.tindex.is_none() {
            self.tindex = Some(TimeIndex::decode(tidx, max_rel));
        }
    }

    /// Position to start scanning for `offset` (from the sparse index): (base offset of
    /// the batch there, its file position). The batch holding `offset`, or the first one
    /// after it when `offset` falls in a gap, is at or after that position.
    pub(crate) fn index_lookup(&self, offset: i64) -> (i64, u64) {
        let rel = offset.saturating_sub(self.base).clamp(0, u32::MAX as i64) as u32;
        let (r, p) = self.index.as_ref().map_or((0, 0), |i| i.lookup(rel));
        (self.base + r as i64, p as u64)
    }

    /// The time index as written at seal (and by recovery and truncation): its entries,
    /// then a final (max timestamp, last covered offset) entry, which recovery reads to
    /// trust a sealed segment without a scan. The last covered offset is `end_offset - 1`:
    /// the next segment's base minus one, also when the segment ends in a gap. A segment
    /// without batches that covers offsets (a cleaned one) gets (-1, last covered offset):
    /// a swap interrupted by a crash reads from it which old segments it replaces.
    fn final_time_index(&self) -> TimeIndex {
        let mut t = self.tindex.clone().unwrap_or_default();
        let rel = self.end_offset.saturating_sub(1).saturating_sub(self.base);
        if rel >= 0 && rel <= u32::MAX as i64 {
            t.push_final(self.max_ts, rel as u32);
        }
        t
    }

    /// On-disk form of both indexes (the time index with its final entry).
    pub(crate) fn encode_indexes(&self) -> (Vec<u8>, Vec<u8>) {
        let idx = self.index.as_ref().map(|x| x.encode()).unwrap_or_default();
        (idx, self.final_time_index().encode())
    }

    /// `encode_indexes`, keeping the final time-index entry in memory too (seal).
    pub(crate) fn seal_indexes(&mut self) -> (Vec<u8>, Vec<u8>) {
        let t = self.final_time_index();
        let idx = self.index.as_ref().map(|x| x.encode()).unwrap_or_default();
        let enc = t.encode();
        self.tindex = Some(t);
        (idx, enc)
    }
}

/// Open (or create) a segment file for direct I/O, read + write.
pub(crate) async fn open_segment_file(path: &Path, create: bool) -> Result<DmaFile, StorageError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .dma_open(path)
        .await?;
    Ok(f)
}

/// Write a small file (index, marker) and fdatasync it, through io_uring.
pub(crate) async fn write_small_file(path: &Path, data: Vec<u8>) -> Result<(), StorageError> {
    write_small(path, data, true).await
}

/// `write_small_file` without its `fdatasync`: the caller makes it durable later (a group
/// sync, `group_sync.rs`) and trusts nothing in it until then.
pub(crate) async fn write_small_file_unsynced(
    path: &Path,
    data: Vec<u8>,
) -> Result<(), StorageError> {
    write_small(path, data, false).await
}

async fn write_small(path: &Path, data: Vec<u8>, sync: bool) -> Result<(), StorageError> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(path)
        .await?;
    let len = data.len();
    if len > 0 {
        let n = f.write_at(data, 0).await?;
        if n != len {
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write to {}", path.display()),
            )));
        }
    }
    if sync {
        f.fdatasync().await?;
    }
    f.close().await?;
    Ok(())
}

/// Persist both indexes of a segment.
pub(crate) async fn write_indexes(
    dir: &Path,
    seg_base: i64,
    idx: Vec<u8>,
    tidx: Vec<u8>,
) -> Result<(), StorageError> {
    write_index_pair(dir, seg_base, idx, tidx, true).await
}

/// `write_indexes` without the `fdatasync`s (see `write_small_file_unsynced`).
pub(crate) async fn write_indexes_unsynced(
    dir: &Path,
    seg_base: i64,
    idx: Vec<u8>,
    tidx: Vec<u8>,
) -> Result<(), StorageError> {
    write_index_pair(dir, seg_base, idx, tidx, false).await
}

async fn write_index_pair(
    dir: &Path,
    seg_base: i64,
    idx: Vec<u8>,
    tidx: Vec<u8>,
    sync: bool,
) -> Result<(), StorageError> {
    write_small(&index_path(dir, seg_base), idx, sync).await?;
    write_small(&timeindex_path(dir, seg_base), tidx, sync).await
}

/// Segment files found in a partition directory: their sorted base offsets.
pub(crate) fn list_segments(dir: &Path) -> std::io::Result<Vec<i64>> {
    let mut bases = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 {
                if let Ok(b) = stem.parse::<i64>() {
                    bases.push(b);
                }
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

thread_local! {
    static PROBED_DEVICES: std::cell::RefCell<std::collections::HashSet<u64>> = Default::default();
}

/// glommio decides once per thread and device whether reads may use the iopoll ring, by
/// reading the first DMA file opened there; on an empty file that probe "succeeds" and
/// every later read fails with EOPNOTSUPP on devices without poll queues. Make the first
/// probe read real data: open a 4 KiB scratch file before any segment.
pub(crate) async fn probe_device(dir: &Path, dev: u64) -> Result<(), StorageError> {
    if PROBED_DEVICES.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let path = dir.join(".sluice-io-probe");
    {
        let path = path.clone();
        crate::blocking::run(dir, move || std::fs::write(path, vec![0u8; PAGE as usize])).await?;
    }
    let f = OpenOptions::new().read(true).dma_open(&path).await;
    // ok: a leftover probe file is harmless
    let _ = crate::blocking::remove_file(path).await;
    f?.close().await?;
    PROBED_DEVICES.with(|p| p.borrow_mut().insert(dev));
    Ok(())
}

/// Segment `base`'s files, the log first: log, offset index, `.txnindex`, time index (the
/// swap renames the time index last; see `swap.rs`).
pub(crate) fn files(dir: &Path, base: i64) -> [PathBuf; 4] {
    [
        log_path(dir, base),
        index_path(dir, base),
        crate::txn::txnindex_path(dir, base),
        timeindex_path(dir, base),
    ]
}

/// Takes segment `base`'s files out of the log (blocking): each that exists is renamed
/// `<name>.deleted`, the log file first (as `remove_segment_files` removes it first).
/// Returns the new names, for the reaper to free.
pub(crate) fn retire_segment_files(dir: &Path, base: i64) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in files(dir, base) {
        let to = with_suffix(&p, DELETED);
        match std::fs::rename(&p, &to) {
            Ok(()) => out.push(to),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Takes segments `bases` out of the log (in that order) on a blocking helper
/// (`retire_segment_files`); returns the files' new names.
pub(crate) async fn retire_segments(dir: &Path, bases: Vec<i64>) -> std::io::Result<Vec<PathBuf>> {
    let d = dir.to_path_buf();
    crate::blocking::run(dir, move || {
        let mut out = Vec::new();
        for b in bases {
            out.extend(retire_segment_files(&d, b)?);
        }
        Ok(out)
    })
    .await
}

/// Removes the files of segments `bases` (in that order) on a blocking helper.
pub(crate) async fn remove_segments(dir: &Path, bases: Vec<i64>) -> std::io::Result<()> {
    let key = dir;
    let dir = dir.to_path_buf();
    crate::blocking::run(key, move || {
        for b in bases {
            remove_segment_files(&dir, b)?;
        }
        Ok(())
    })
    .await
}

/// Removes one segment's files (blocking): log, indexes and `.txnindex`; missing files
/// are not an error.
pub(crate) fn remove_segment_files(dir: &Path, base: i64) -> std::io::Result<()> {
    for p in files(dir, base) {
        crate::blocking::remove_if_exists(&p)?;
    }
    Ok(())
}
