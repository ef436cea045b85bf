//! One segment of a partition log: `<base:020>.log` plus its `.index` and `.timeindex`,
//! the in-memory bookkeeping for it, and the sequential scanner used by recovery and by
//! index rebuilds. A segment's first batch has base offset == the segment base; batches
//! are contiguous in offsets; the logical end is the end of the last valid batch.

use crate::error::StorageError;
use crate::index::{OffsetIndex, TimeIndex};
use glommio::io::{DmaFile, OpenOptions};
use sluice_proto::batch::{validate_batch, RecordBatchHeader, RECORD_BATCH_OVERHEAD};
use std::path::{Path, PathBuf};

/// Direct-I/O alignment used for every write.
pub(crate) const PAGE: u64 = 4096;
const SCAN_CHUNK: usize = 1 << 20;

pub(crate) fn log_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
pub(crate) fn index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}
pub(crate) fn timeindex_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
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
    /// Offset after the last batch assigned to this segment.
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
}

impl Segment {
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
        }
    }

    /// Account one appended batch at the current end; keeps the indexes sparse.
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
                t.push(self.max_ts, rel - 1);
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
    /// calls `load_indexes` first, so this finds them in memory and reads nothing; the
    /// blocking read remains only for the synchronous producer-state rebuild, `append`'s
    /// fallback when the async rebuild raced a change of the log.
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

    /// Position to start scanning for `offset` (from the sparse index).
    pub(crate) fn index_lookup(&self, offset: i64) -> (i64, u64) {
        let rel = (offset - self.base).clamp(0, u32::MAX as i64) as u32;
        let (r, p) = self.index.as_ref().map_or((0, 0), |i| i.lookup(rel));
        (self.base + r as i64, p as u64)
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
    f.fdatasync().await?;
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
    write_small_file(&index_path(dir, seg_base), idx).await?;
    write_small_file(&timeindex_path(dir, seg_base), tidx).await
}

/// Outcome of scanning a segment from its start.
#[derive(Debug)]
pub(crate) struct ScanResult {
    /// End of the last good batch; everything after it is torn, corrupt or stale.
    pub(crate) valid_end: u64,
    pub(crate) next_offset: i64,
    pub(crate) max_ts: i64,
    pub(crate) max_ts_offset: i64,
    pub(crate) index: OffsetIndex,
    pub(crate) tindex: TimeIndex,
    /// Why the scan stopped before the end of the file, if it did.
    pub(crate) stopped: Option<String>,
    /// `scan_until` stopped at the batch holding its stop offset (which starts at
    /// `valid_end`, with base offset `next_offset`).
    pub(crate) reached_stop: bool,
}

/// Scan `[0, file_len)` of a segment: every batch must parse, fit in the file, have
/// base offset == the expected next offset, and (with `validate`) pass the CRC check.
pub(crate) async fn scan_segment(
    file: &DmaFile,
    base: i64,
    file_len: u64,
    interval: u32,
    validate: bool,
) -> Result<ScanResult, StorageError> {
    scan_from(
        file,
        Segment::new_empty(base, true),
        file_len,
        interval,
        validate,
    )
    .await
}

/// Continue a scan from a known-good prefix `seg` (its `size` is the position of the next
/// batch, `end_offset` that batch's expected base offset) up to `file_len`.
pub(crate) async fn scan_from(
    file: &DmaFile,
    seg: Segment,
    file_len: u64,
    interval: u32,
    validate: bool,
) -> Result<ScanResult, StorageError> {
    scan_until(file, seg, file_len, interval, validate, None).await
}

/// `scan_from`, but with `stop` it ends (without error, `reached_stop`) before the batch
/// that continues the offsets and holds offset `stop`; the result then describes the
/// segment cut right before that batch (truncation).
pub(crate) async fn scan_until(
    file: &DmaFile,
    mut seg: Segment,
    file_len: u64,
    interval: u32,
    validate: bool,
    stop: Option<i64>,
) -> Result<ScanResult, StorageError> {
    let mut reached_stop = false;
    let mut cur: u64 = seg.size; // file position of the next batch
    let mut window: Vec<u8> = Vec::new();
    let mut win_start: u64 = cur; // file position of window[0]
    let mut read_pos: u64 = align_down(cur); // next aligned position to read
    let mut stopped = None;
    loop {
        if cur >= file_len {
            break;
        }
        let off = (cur - win_start) as usize;
        let have = window.len() - off;
        let need = if have >= RECORD_BATCH_OVERHEAD {
            match RecordBatchHeader::parse(&window[off..]) {
                Ok(h)
                    if stop.is_some_and(|s| {
                        h.base_offset == seg.end_offset && h.last_offset() >= s
                    }) =>
                {
                    reached_stop = true;
                    break;
                }
                Ok(h) => h.total_size(),
                Err(e) => {
                    stopped = Some(format!("bad header at {cur}: {e}"));
                    break;
                }
            }
        } else {
            RECORD_BATCH_OVERHEAD
        };
        if need as u64 > file_len - cur {
            stopped = Some(format!(
                "torn batch at {cur}: needs {need} bytes, file has {}",
                file_len - cur
            ));
            break;
        }
        if have < need {
            // refill: drop consumed bytes, read the next chunk(s)
            window.drain(..off);
            win_start = cur;
            while (window.len() as u64) < need as u64 && read_pos < file_len {
                let want = SCAN_CHUNK.max(align_up((need - window.len()) as u64) as usize);
                let r = file.read_at_aligned(read_pos, want).await?;
                if r.is_empty() {
                    break;
                }
                let skip = (win_start + window.len() as u64).saturating_sub(read_pos) as usize;
                if skip < r.len() {
                    window.extend_from_slice(&r[skip..]);
                }
                read_pos += r.len() as u64;
            }
            let end = (file_len - win_start) as usize;
            window.truncate(end);
            if window.len() < need {
                stopped = Some(format!("short read at {cur}"));
                break;
            }
            continue;
        }
        if let Err(reason) = accept_batch(&mut seg, &window[off..off + need], validate, interval) {
            stopped = Some(format!("at {cur}: {reason}"));
            break;
        }
        cur += need as u64;
    }
    Ok(ScanResult {
        valid_end: seg.size,
        next_offset: seg.end_offset,
        max_ts: seg.max_ts,
        max_ts_offset: seg.max_ts_offset,
        index: seg.index.unwrap_or_default(),
        tindex: seg.tindex.unwrap_or_default(),
        stopped,
        reached_stop,
    })
}

/// One step of a segment scan, shared by recovery (async, over DMA reads) and
/// [`scan_prefix`] (over a byte slice): the whole batch in `bytes` must be valid and
/// continue `seg`'s offsets within the segment's 32-bit relative range (and below
/// i64::MAX, so the next offset exists); then it is recorded. Err says why the scan stops.
fn accept_batch(
    seg: &mut Segment,
    bytes: &[u8],
    validate: bool,
    interval: u32,
) -> Result<(), String> {
    let h = if validate {
        validate_batch(bytes)
    } else {
        RecordBatchHeader::parse(bytes)
    }
    .map_err(|e| format!("bad batch: {e}"))?;
    let last = h.last_offset();
    if h.base_offset != seg.end_offset || last - seg.base > u32::MAX as i64 || last == i64::MAX {
        return Err(format!(
            "offset gap: batch base {} last {last}, expected base {}",
            h.base_offset, seg.end_offset
        ));
    }
    seg.note_batch(&h, interval, 0);
    Ok(())
}

/// What recovery keeps of a segment whose base offset is `base` and whose bytes are
/// `bytes`: (valid end, next offset) — the run of whole, valid batches from the start that
/// continue the offsets, by the same per-batch check as the recovery scan. Pure (for tests
/// and fuzzing).
pub fn scan_prefix(bytes: &[u8], base: i64) -> (u64, i64) {
    let mut seg = Segment::new_empty(base, true);
    let mut cur = 0usize;
    while let Some(rest) = bytes.get(cur..) {
        let Ok(h) = RecordBatchHeader::parse(rest) else {
            break;
        };
        let need = h.total_size();
        if need > rest.len() || accept_batch(&mut seg, &rest[..need], true, 4096).is_err() {
            break;
        }
        cur += need;
    }
    (seg.size, seg.end_offset)
}

/// Segment files found in a partition directory: sorted log bases, plus which
/// index files exist.
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
        crate::blocking::run(move || std::fs::write(path, vec![0u8; PAGE as usize])).await?;
    }
    let f = OpenOptions::new().read(true).dma_open(&path).await;
    // ok: a leftover probe file is harmless
    let _ = crate::blocking::remove_file(path).await;
    f?.close().await?;
    PROBED_DEVICES.with(|p| p.borrow_mut().insert(dev));
    Ok(())
}

/// Reads the index files of the log's segment `base` on the blocking helper if they are
/// not in memory, so a following `ensure_indexes` reads nothing on the shard thread.
pub(crate) async fn load_indexes(log: &crate::log::LogInner, base: i64) {
    let missing = log
        .st
        .borrow()
        .segments
        .iter()
        .any(|s| s.base == base && s.indexes_missing());
    if !missing {
        return;
    }
    let (ip, tp) = (index_path(&log.dir, base), timeindex_path(&log.dir, base));
    let (idx, tidx) = crate::blocking::run(move || {
        (
            std::fs::read(ip).unwrap_or_default(),
            std::fs::read(tp).unwrap_or_default(),
        )
    })
    .await;
    if let Some(s) = log
        .st
        .borrow_mut()
        .segments
        .iter_mut()
        .find(|s| s.base == base)
    {
        s.install_indexes(&idx, &tidx);
    }
}

#[cfg(test)]
mod scan_tests {
    use super::scan_prefix;
    use sluice_proto::batch::{build_batch, SimpleRecord};

    fn batch(base: i64, n: usize) -> Vec<u8> {
        let recs: Vec<SimpleRecord<'_>> = (0..n)
            .map(|_| SimpleRecord {
                timestamp: 1,
                key: None,
                value: Some(b"v"),
                headers: &[],
            })
            .collect();
        build_batch(base, &recs).to_vec()
    }

    #[test]
    fn the_valid_prefix_stops_at_damage_gaps_and_the_offset_limit() {
        let mut seg = batch(10, 2);
        seg.extend(batch(12, 3));
        let whole = seg.len() as u64;
        assert_eq!(scan_prefix(&seg, 10), (whole, 15));
        let mut torn = seg.clone();
        torn.truncate(seg.len() - 1);
        assert_eq!(scan_prefix(&torn, 10).1, 12);
        let mut gap = batch(10, 2);
        gap.extend(batch(13, 1));
        assert_eq!(scan_prefix(&gap, 10).1, 12);
        // a batch ending at i64::MAX would leave no next offset: not accepted
        let top = batch(i64::MAX - 1, 2);
        assert_eq!(scan_prefix(&top, i64::MAX - 1), (0, i64::MAX - 1));
    }
}
