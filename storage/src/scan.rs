//! Scanning a segment file batch by batch: recovery (with CRC checks, cutting at the
//! first bad batch), truncation (finding a cut point) and index rebuilds use it; so does
//! [`scan_prefix`], its pure twin over a byte slice. A batch is accepted when it parses,
//! fits in the file, (when validating) passes its CRC and record-count checks, and its
//! offsets move forward: its base offset is at or after the end of the previous batch
//! (the segment's base for the first one) — a gap is fine, a compacted segment has them —
//! and it ends inside the segment's range. A scan resumed at a sparse-index entry also
//! requires the batch there to start exactly at the entry's offset. The first batch that
//! fails ends the scan; everything from it on is torn, corrupt or stale.
//!
//! ```text
//!  file:  [batch][batch]   gap   [batch][batch][torn ...]
//!          ^start                               ^valid_end (the scan stops here)
//! ```

use crate::error::StorageError;
use crate::segment::{align_down, align_up, Segment};
use glommio::io::DmaFile;
use sluice_proto::batch::{validate_batch, RecordBatchHeader, RECORD_BATCH_OVERHEAD};

const SCAN_CHUNK: usize = 1 << 20;

/// How a scan checks and where it stops.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScanOpts {
    /// `index.interval.bytes`, for the sparse indexes the scan rebuilds.
    pub(crate) interval: u32,
    /// Check every batch's CRC and record count (recovery); false trusts bytes the log
    /// validated when it appended them.
    pub(crate) validate: bool,
    /// End (without error, `reached_stop`) before the first acceptable batch whose last
    /// offset is >= this (truncation).
    pub(crate) stop: Option<i64>,
    /// Offsets must stay below this: the next segment's base, for a segment that is not
    /// the last. A batch reaching it overlaps the next segment and ends the scan.
    pub(crate) limit: Option<i64>,
}

impl ScanOpts {
    /// A recovery scan: CRC checks, offsets below `limit`.
    pub(crate) fn recovery(interval: u32, limit: Option<i64>) -> ScanOpts {
        ScanOpts {
            interval,
            validate: true,
            stop: None,
            limit,
        }
    }
}

/// Outcome of a scan.
#[derive(Debug)]
pub(crate) struct ScanResult {
    /// The segment as far as the scan accepted it: `size` is the end of the last good
    /// batch (everything after it is torn, corrupt or stale), `end_offset` the offset
    /// after that batch (the base while no batch was accepted), indexes rebuilt.
    pub(crate) seg: Segment,
    /// Why the scan stopped before the end of the file, if it did.
    pub(crate) stopped: Option<String>,
    /// The scan ended at the batch holding (or first after) its `stop` offset, which
    /// starts at `seg.size`.
    pub(crate) reached_stop: bool,
}

/// Scans `[seg.size, file_len)` of a segment file: `seg` is a known-good prefix (empty
/// for a scan from the start, or rebuilt from a sparse-index entry: then `size` is the
/// entry's position and `end_offset` its offset, which the batch there must start at).
pub(crate) async fn scan(
    file: &DmaFile,
    mut seg: Segment,
    file_len: u64,
    opts: ScanOpts,
) -> Result<ScanResult, StorageError> {
    let mut reached_stop = false;
    let start = seg.size;
    let mut cur: u64 = start; // file position of the next batch
    let mut window: Vec<u8> = Vec::new();
    let mut win_start: u64 = cur; // file position of window[0]
    let mut read_pos: u64 = align_down(cur); // next aligned position to read
    let mut stopped = None;
    loop {
        if cur >= file_len {
            break;
        }
        let exact = cur == start && start > 0;
        let off = (cur - win_start) as usize;
        let have = window.len() - off;
        let need = if have >= RECORD_BATCH_OVERHEAD {
            match RecordBatchHeader::parse(&window[off..]) {
                Ok(h)
                    if opts.stop.is_some_and(|s| {
                        h.last_offset() >= s && check_offsets(&seg, &h, exact, opts.limit).is_ok()
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
        let bytes = &window[off..off + need];
        if let Err(reason) = accept_batch(
            &mut seg,
            bytes,
            opts.validate,
            opts.interval,
            exact,
            opts.limit,
        ) {
            stopped = Some(format!("at {cur}: {reason}"));
            break;
        }
        cur += need as u64;
    }
    Ok(ScanResult {
        seg,
        stopped,
        reached_stop,
    })
}

/// Whether batch `h` may follow the batches `seg` holds: at or after their end (exactly
/// there when `exact`), a non-negative offset delta, inside the segment's 32-bit relative
/// range, below `limit`, and below i64::MAX (so the next offset exists).
pub(crate) fn check_offsets(
    seg: &Segment,
    h: &RecordBatchHeader,
    exact: bool,
    limit: Option<i64>,
) -> Result<(), String> {
    let (base, last) = (h.base_offset, h.last_offset());
    if exact && base != seg.end_offset {
        return Err(format!(
            "batch base {base} where the index entry says {}",
            seg.end_offset
        ));
    }
    if base < seg.end_offset {
        return Err(format!(
            "offsets go backwards: batch base {base} after offset {}",
            seg.end_offset - 1
        ));
    }
    if h.last_offset_delta < 0 {
        return Err(format!("batch base {base} has a negative offset delta"));
    }
    if last
        .checked_sub(seg.base)
        .is_none_or(|r| r > u32::MAX as i64)
        || last == i64::MAX
    {
        return Err(format!(
            "batch last offset {last} is out of the range of segment {}",
            seg.base
        ));
    }
    if let Some(l) = limit.filter(|&l| last >= l) {
        return Err(format!(
            "batch {base}..={last} overlaps the next segment, which starts at {l}"
        ));
    }
    Ok(())
}

/// One step of a scan, shared by [`scan`] (async, over DMA reads) and [`scan_prefix`]
/// (over a byte slice): the whole batch in `bytes` must be valid (with `validate`) and
/// pass `check_offsets`; then it is recorded. Err says why the scan stops.
fn accept_batch(
    seg: &mut Segment,
    bytes: &[u8],
    validate: bool,
    interval: u32,
    exact: bool,
    limit: Option<i64>,
) -> Result<(), String> {
    let h = if validate {
        validate_batch(bytes)
    } else {
        RecordBatchHeader::parse(bytes)
    }
    .map_err(|e| format!("bad batch: {e}"))?;
    check_offsets(seg, &h, exact, limit)?;
    seg.note_batch(&h, interval, 0);
    Ok(())
}

/// What recovery keeps of a segment whose base offset is `base` and whose bytes are
/// `bytes`: (valid end, offset after the last kept batch) — the run of whole, valid
/// batches from the start whose offsets move forward (gaps allowed), by the same
/// per-batch check as the recovery scan. Pure (for tests and fuzzing).
pub fn scan_prefix(bytes: &[u8], base: i64) -> (u64, i64) {
    let mut seg = Segment::new_empty(base, true);
    let mut cur = 0usize;
    while let Some(rest) = bytes.get(cur..) {
        let Ok(h) = RecordBatchHeader::parse(rest) else {
            break;
        };
        let need = h.total_size();
        if need > rest.len()
            || accept_batch(&mut seg, &rest[..need], true, 4096, false, None).is_err()
        {
            break;
        }
        cur += need;
    }
    (seg.size, seg.end_offset)
}

#[cfg(test)]
mod tests {
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
    fn the_valid_prefix_keeps_gaps_and_stops_at_damage_overlaps_and_the_offset_limit() {
        let mut seg = batch(10, 2);
        seg.extend(batch(12, 3));
        let whole = seg.len() as u64;
        assert_eq!(scan_prefix(&seg, 10), (whole, 15));
        let mut torn = seg.clone();
        torn.truncate(seg.len() - 1);
        assert_eq!(scan_prefix(&torn, 10).1, 12);
        // a gap (offset 12 missing) and a first batch after the base: both kept
        let mut gap = batch(11, 1);
        gap.extend(batch(13, 1));
        assert_eq!(scan_prefix(&gap, 10), (gap.len() as u64, 14));
        // offsets going backwards or overlapping end the prefix
        let mut back = batch(10, 2);
        let first = back.len() as u64;
        back.extend(batch(11, 1));
        assert_eq!(scan_prefix(&back, 10), (first, 12));
        // a batch below the segment base is not in this segment
        assert_eq!(scan_prefix(&batch(9, 1), 10), (0, 10));
        // a batch ending at i64::MAX would leave no next offset: not accepted
        let top = batch(i64::MAX - 1, 2);
        assert_eq!(scan_prefix(&top, i64::MAX - 1), (0, i64::MAX - 1));
        // a batch more than u32::MAX past the base does not fit the relative index
        let far = batch(10 + u32::MAX as i64 + 1, 1);
        assert_eq!(scan_prefix(&far, 10), (0, 10));
        // a negative segment base does not overflow the range check
        assert_eq!(scan_prefix(&batch(5, 1), i64::MIN), (0, i64::MIN));
    }
}
