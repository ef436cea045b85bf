//! `SegmentWriter`: writes one whole segment from record batches that keep their offsets,
//! the form a compacted segment has (its first batch may start after its base, gaps may
//! follow any batch), with its sparse offset and time indexes and the final time-index
//! entry that lets recovery trust it without a scan. Tests and tools use it to build a
//! log with offset gaps before the log is opened; the log cleaner writes cleaned
//! segments the same way, under temporary names (`<base>.log.cleaned`, `create_cleaned`),
//! which `swap.rs` renames into place.
//!
//! ```text
//!  create(dir, base) ─► append(batch)*  (CRC + record count checked, offsets increasing
//!                                        inside the segment, gaps allowed; 1 MiB DMA writes,
//!                                        cleaned segments: half the cleaner's I/O buffer)
//!      ─► finish(end): last page padded and written, file cut to size + fdatasync,
//!                      .index and .timeindex written + fdatasync, directory fsync
//! ```
//!
//! Async over io_uring (glommio `DmaFile`); the directory calls run on a
//! blocking helper. Owned by the task that writes; never crosses cores.

use crate::error::StorageError;
use crate::scan::check_offsets;
use crate::segment::{
    align_down, align_up, index_path, log_path, timeindex_path, with_suffix, write_small_file,
    SegState, Segment, CLEANED, PAGE,
};
use glommio::io::{DmaFile, OpenOptions};
use sluice_proto::batch::validate_batch;
use std::path::PathBuf;

/// Bytes gathered before one DMA write (cleaned segments: half the cleaner's I/O buffer).
const WRITE_CHUNK: usize = 1 << 20;

/// A cleaned segment's blocks are allocated this far ahead of its writes (within its
/// reserve), so the cut at `finish_cleaned` gives back at most this much at once.
pub(crate) const RESERVE_AHEAD: u64 = 8 << 20;

/// Writes one segment file and its indexes; see the module comment.
pub struct SegmentWriter {
    dir: PathBuf,
    file: DmaFile,
    seg: Segment,
    interval: u32,
    /// Bytes not written yet; they start at file position `written` (page aligned).
    buf: Vec<u8>,
    written: u64,
    /// `.cleaned` files for the log cleaner (`create_cleaned`); None: the final names.
    suffix: Option<&'static str>,
    /// Bytes gathered before a write.
    chunk: usize,
    /// Cleaned segments: the upper bound of their size (the segments they replace), and
    /// how much of the file's blocks are allocated so far (`RESERVE_AHEAD` at a time).
    reserve: u64,
    reserved: u64,
}

impl SegmentWriter {
    /// Starts segment `base` in the log directory `dir` (created if missing), with a
    /// sparse-index entry every `index_interval_bytes` (the log's
    /// `LogConfig::index_interval_bytes`). The segment's log file must not exist yet, and
    /// the directory must not belong to an open log (it would not see the segment; the
    /// next open takes it as part of the log). Nothing is durable, or trusted by
    /// recovery, before `finish`.
    pub async fn create(
        dir: impl Into<PathBuf>,
        base: i64,
        index_interval_bytes: u32,
    ) -> Result<SegmentWriter, StorageError> {
        let dir = dir.into();
        let dev = {
            let key = dir.clone();
            let dir = dir.clone();
            crate::blocking::run(&key, move || -> std::io::Result<u64> {
                use std::os::unix::fs::MetadataExt;
                std::fs::create_dir_all(&dir)?;
                Ok(std::fs::metadata(&dir)?.dev())
            })
            .await?
        };
        // the first DMA file of a device must not be an empty one (see `probe_device`)
        crate::segment::probe_device(&dir, dev).await?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(log_path(&dir, base))
            .await?;
        Ok(SegmentWriter {
            dir,
            file,
            seg: Segment::new_empty(base, true),
            interval: index_interval_bytes,
            buf: Vec::new(),
            written: 0,
            suffix: None,
            chunk: WRITE_CHUNK,
            reserve: 0,
            reserved: 0,
        })
    }

    /// Starts a cleaned segment `base` for an open log in `dir`: `<base>.log.cleaned` and,
    /// at `finish_cleaned`, `<base>.index.cleaned` and `<base>.timeindex.cleaned`. The
    /// directory is not created (a log deleted meanwhile makes this fail) and nothing
    /// replaces the log's files until `swap.rs` renames them. Writes `chunk` bytes at
    /// once (whole pages, at least one).
    ///
    /// The file's blocks are allocated `RESERVE_AHEAD` bytes at a time ahead of its writes,
    /// as unwritten extents, up to `reserve` (the segments it replaces: an upper bound);
    /// `finish_cleaned` cuts the file to what was written. The whole reserve at once made
    /// that cut free gigabytes in one truncate when most records were dropped (every
    /// `fdatasync` then waits for the freed blocks' discards on a disk mounted
    /// `discard`). Allocating them write by write instead put the allocations into
    /// the journal commits of the produce path's `fdatasync`s: with a cleaner-like
    /// writer at 200 MB/s on this machine's ext4, a 64 KiB append + `fdatasync` loop had a
    /// p99.9 of 11.3 ms, 1.1 ms with the file preallocated (idle 0.7–1.3 ms; bench/README.md,
    /// "Cleaner I/O between flush cycles"). A file system without `fallocate` just
    /// allocates as it writes.
    pub(crate) async fn create_cleaned(
        dir: PathBuf,
        base: i64,
        index_interval_bytes: u32,
        chunk: usize,
        reserve: u64,
    ) -> Result<SegmentWriter, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(with_suffix(&log_path(&dir, base), CLEANED))
            .await?;
        let mut w = SegmentWriter {
            dir,
            file,
            seg: Segment::new_empty(base, true),
            interval: index_interval_bytes,
            buf: Vec::new(),
            written: 0,
            suffix: Some(CLEANED),
            chunk: align_down(chunk as u64).max(PAGE) as usize,
            reserve: align_up(reserve),
            reserved: 0,
        };
        w.reserve_for(0).await;
        Ok(w)
    }

    /// Allocates the cleaned file's blocks through `end` and `RESERVE_AHEAD` further,
    /// within its reserve, unless they are already. A file system without `fallocate`
    /// allocates as it writes (logged once per segment).
    async fn reserve_for(&mut self, end: u64) {
        if self.reserved >= self.reserve || end < self.reserved {
            return;
        }
        let want = (end + RESERVE_AHEAD).min(self.reserve);
        match self.file.pre_allocate(want, false).await {
            Ok(()) => self.reserved = want,
            Err(e) => {
                tracing::debug!(dir = %self.dir.display(), base = self.seg.base, error = %e,
                    "cleaned segment not preallocated; its blocks are allocated as it is written");
                self.reserved = self.reserve;
            }
        }
    }

    /// Adds one whole v2 batch, byte for byte at the base offset in its header. Refused
    /// (and nothing added) unless its length, CRC and record count are valid and its
    /// offsets move forward: base offset at or after `next_offset`, last offset within
    /// 2^32 of the segment's base.
    pub async fn append(&mut self, batch: &[u8]) -> Result<(), StorageError> {
        let h = validate_batch(batch)?;
        check_offsets(&self.seg, &h, false, None).map_err(StorageError::InvalidRecord)?;
        self.seg.note_batch(&h, self.interval, -1);
        self.buf.extend_from_slice(batch);
        if self.buf.len() >= self.chunk {
            let n = align_down(self.buf.len() as u64) as usize;
            self.write(n).await?;
        }
        Ok(())
    }

    /// Whether `append` of a batch of `len` bytes writes to the file.
    pub(crate) fn writes_on(&self, len: usize) -> bool {
        self.buf.len() + len >= self.chunk
    }

    /// The offset after the last batch added (the segment's base while empty).
    pub fn next_offset(&self) -> i64 {
        self.seg.end_offset
    }

    /// Bytes added so far.
    pub fn size(&self) -> u64 {
        self.seg.size
    }

    /// Makes the segment durable. `end` is the end of the offsets it covers: the next
    /// segment's base when one follows (it may lie past `next_offset`: the segment then
    /// ends in a gap), else `next_offset` (the log end). Needs `next_offset` <= `end` <=
    /// base + 2^32.
    pub async fn finish(self, end: i64) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        self.finish_files(end).await?;
        crate::blocking::sync_dir(dir).await?;
        Ok(())
    }

    /// `finish` for `create_cleaned`, without the directory fsync (the swap's renames
    /// come with their own): the segment as the log holds it in memory, sealed, indexes
    /// loaded.
    pub(crate) async fn finish_cleaned(self, end: i64) -> Result<Segment, StorageError> {
        let mut seg = self.finish_files(end).await?;
        seg.state = SegState::Sealed;
        seg.flushed = seg.size;
        Ok(seg)
    }

    async fn finish_files(mut self, end: i64) -> Result<Segment, StorageError> {
        let base = self.seg.base;
        if end < self.seg.end_offset || end.saturating_sub(base) > u32::MAX as i64 + 1 {
            return Err(StorageError::InvalidRecord(format!(
                "segment {base} cannot end at {end}: its batches end at {}",
                self.seg.end_offset
            )));
        }
        if !self.buf.is_empty() {
            let n = align_up(self.buf.len() as u64) as usize;
            self.buf.resize(n, 0);
            self.write(n).await?;
        }
        self.file.truncate(self.seg.size).await?;
        self.file.fdatasync().await?;
        self.file.close().await?;
        self.seg.end_offset = end;
        let (idx, tidx) = self.seg.seal_indexes();
        let name = |p: PathBuf| match self.suffix {
            Some(s) => with_suffix(&p, s),
            None => p,
        };
        write_small_file(&name(index_path(&self.dir, base)), idx).await?;
        write_small_file(&name(timeindex_path(&self.dir, base)), tidx).await?;
        Ok(self.seg)
    }

    /// Writes the first `n` buffered bytes (a multiple of the page size) at `written`.
    async fn write(&mut self, n: usize) -> Result<(), StorageError> {
        debug_assert!((n as u64).is_multiple_of(PAGE));
        self.reserve_for(self.written + n as u64).await;
        let mut dma = self.file.alloc_dma_buffer(n);
        dma.as_bytes_mut().copy_from_slice(&self.buf[..n]);
        let wrote = self.file.write_at(dma, self.written).await?;
        if wrote != n {
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short DMA write: {wrote} of {n} bytes"),
            )));
        }
        self.written += n as u64;
        self.buf.drain(..n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{SegmentWriter, RESERVE_AHEAD};
    use crate::segment::{log_path, with_suffix, CLEANED};

    /// A cleaned segment's file is preallocated `RESERVE_AHEAD` ahead of its writes within
    /// its reserve, and cut to the batches written when finished (the rest of the reserve
    /// is given back).
    #[test]
    fn cleaned_segment_is_preallocated_ahead_then_cut_to_its_batches() {
        let dir = crate::test_dir();
        let path = dir.path().join("t-0");
        std::fs::create_dir_all(&path).unwrap(); // ok: test setup
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let len = |p: &std::path::Path| {
                    std::fs::metadata(p).unwrap().len() // ok: test
                };
                // a small reserve is allocated whole
                let small = with_suffix(&log_path(&path, 0), CLEANED);
                let mut w = SegmentWriter::create_cleaned(path.clone(), 0, 4096, 8192, 1 << 20)
                    .await
                    .unwrap(); // ok: test
                assert_eq!(len(&small), 1 << 20);
                let mut want = Vec::new();
                for i in 0..5u8 {
                    let b = crate::test_batch(i64::from(i), &[i; 3000]);
                    w.append(&b).await.unwrap(); // ok: test
                    want.extend_from_slice(&b);
                }
                let seg = w.finish_cleaned(5).await.unwrap(); // ok: test
                assert_eq!(seg.size, want.len() as u64);
                assert_eq!(std::fs::read(&small).unwrap(), want); // ok: test

                // a large one a window ahead of the writes
                let large = with_suffix(&log_path(&path, 100), CLEANED);
                let mut w = SegmentWriter::create_cleaned(path.clone(), 100, 4096, 8192, 64 << 20)
                    .await
                    .unwrap(); // ok: test
                assert_eq!(len(&large), RESERVE_AHEAD);
                let mut want = Vec::new();
                for i in 0..12u8 {
                    let b = crate::test_batch(100 + i64::from(i), &vec![i; 1 << 20]);
                    w.append(&b).await.unwrap(); // ok: test
                    want.extend_from_slice(&b);
                    let l = len(&large);
                    assert!(
                        l >= w.written && l <= w.written + RESERVE_AHEAD + 8192,
                        "{l}"
                    );
                }
                assert!(len(&large) < 64 << 20);
                let seg = w.finish_cleaned(112).await.unwrap(); // ok: test
                assert_eq!(seg.size, want.len() as u64);
                assert_eq!(std::fs::read(&large).unwrap(), want); // ok: test
            })
            .unwrap() // ok: test
            .join()
            .unwrap(); // ok: test
    }
}
