//! Idempotent-producer state of one partition (Kafka's ProducerStateManager, without
//! transactions): per producer id its epoch and its last 5 batches' (seq, offset) ranges.
//! `append` checks every idempotent batch against it (fencing, sequence order, duplicate
//! retries) before writing anything. Built lazily from the tail of the log on first need
//! (never at open; `Replayer` takes the batch headers in offset order, gaps included),
//! invalidated by truncation, trimmed by retention, untouched by the log cleaner (which
//! keeps each known producer's last batch, emptied if all its records go, so a rebuild
//! still finds its epoch and last sequence). A follower's
//! `append_replicated` replays the leader's batches into a built state without checks
//! (Kafka's replication origin), so a replica that takes over still recognises retries.

use crate::error::StorageError;
use crate::pending::PendingQueue;
use crate::segment::Segment;
use sluice_proto::batch::{RecordBatchHeader, RECORD_BATCH_OVERHEAD};
use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Batches remembered per producer for duplicate detection (Kafka: 5, the client's
/// max.in.flight.requests.per.connection limit for idempotence).
pub(crate) const BATCHES_PER_PRODUCER: usize = 5;
/// The lazy rebuild reads batch headers of at most this many newest segments (and at most
/// `ShardStorageOptions::producer_rebuild_bytes`). A producer whose last batch is older is
/// unknown afterwards (as after Kafka's producer expiration): its next batch is accepted
/// with any sequence number.
pub(crate) const REBUILD_SEGMENTS: usize = 2;
/// Bytes read at once when hopping over batch headers.
pub(crate) const READ_CHUNK: usize = 256 << 10;

/// Sequence and offset range of one appended batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    pub(crate) first_seq: i32,
    pub(crate) last_seq: i32,
    pub(crate) first_offset: i64,
    pub(crate) last_offset: i64,
}

/// One producer id's state; owned by the partition's shard, never crosses cores.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProducerEntry {
    pub(crate) epoch: i16,
    /// Oldest first; at most `BATCHES_PER_PRODUCER`, all of `epoch`.
    pub(crate) batches: VecDeque<BatchMeta>,
}

impl ProducerEntry {
    fn push(&mut self, epoch: i16, m: BatchMeta) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        if self.batches.len() == BATCHES_PER_PRODUCER {
            self.batches.pop_front();
        }
        self.batches.push_back(m);
    }
    fn last_offset(&self) -> i64 {
        self.batches.back().map_or(-1, |b| b.last_offset)
    }
}

/// Sequence of the last record of a batch: base + delta, wrapping to 0 after i32::MAX.
pub(crate) fn last_seq(base_seq: i32, delta: i32) -> i32 {
    let delta = delta.max(0);
    if base_seq > i32::MAX - delta {
        delta - (i32::MAX - base_seq) - 1
    } else {
        base_seq + delta
    }
}

/// The sequence that must follow `last`.
pub(crate) fn next_seq(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

/// Does this batch take part in idempotence checks?
pub(crate) fn is_idempotent(h: &RecordBatchHeader) -> bool {
    h.producer_id >= 0 && !h.is_control()
}

/// Outcome of checking one batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    New,
    /// A retry of a batch already in the log (same epoch and sequence range).
    Duplicate(BatchMeta),
}

/// All producers of one partition; owned by the partition's shard, never crosses cores.
#[derive(Debug, Default)]
pub(crate) struct ProducerStates {
    map: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    pub(crate) fn get(&self, pid: i64) -> Option<&ProducerEntry> {
        self.map.get(&pid)
    }

    /// Record a batch read back from the log (no checks, like Kafka's log replay).
    /// `h.base_offset` must be the assigned offset.
    pub(crate) fn replay(&mut self, h: &RecordBatchHeader) {
        if !is_idempotent(h) {
            return;
        }
        self.map
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
            })
            .push(h.producer_epoch, meta(h, h.base_offset));
    }

    /// Each producer's last batch in the log: producer id -> that batch's last offset.
    pub(crate) fn last_offsets(&self) -> HashMap<i64, i64> {
        self.map
            .iter()
            .map(|(&pid, e)| (pid, e.last_offset()))
            .collect()
    }

    pub(crate) fn insert(&mut self, pid: i64, e: ProducerEntry) {
        self.map.insert(pid, e);
    }

    /// Forget producers whose every remembered batch is below the new log start.
    pub(crate) fn trim_before(&mut self, log_start: i64) {
        self.map.retain(|_, e| e.last_offset() >= log_start);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

fn meta(h: &RecordBatchHeader, base_offset: i64) -> BatchMeta {
    BatchMeta {
        first_seq: h.base_sequence,
        last_seq: last_seq(h.base_sequence, h.last_offset_delta),
        first_offset: base_offset,
        last_offset: base_offset.saturating_add(h.last_offset_delta as i64),
    }
}

/// Check `h` (to be appended at `base_offset`) against `entry` (None: producer unknown)
/// and, when it is new, record it in `entry`. Kafka's ProducerAppendInfo rules:
/// - epoch below the current one: fenced (`InvalidProducerEpoch`);
/// - same epoch: a batch equal to one of the last 5 is a `Duplicate`; otherwise its first
///   sequence must follow the last one (wrapping after i32::MAX) or `OutOfOrderSequence`;
/// - newer epoch of a known producer: the first sequence must be 0;
/// - unknown producer (never seen, or its state was trimmed by retention or lies beyond
///   the rebuild bound): any sequence is accepted (Kafka >= 2.5, KIP-360), so a producer
///   that was quiet for a while is not fenced by lost state.
pub(crate) fn check_and_apply(
    entry: &mut Option<ProducerEntry>,
    h: &RecordBatchHeader,
    base_offset: i64,
) -> Result<Verdict, StorageError> {
    let pid = h.producer_id;
    let got = h.base_sequence;
    let m = meta(h, base_offset);
    match entry {
        None => {
            let mut e = ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
            };
            e.push(h.producer_epoch, m);
            *entry = Some(e);
            Ok(Verdict::New)
        }
        Some(e) => {
            if h.producer_epoch < e.epoch {
                return Err(StorageError::InvalidProducerEpoch {
                    producer_id: pid,
                    current: e.epoch,
                    got: h.producer_epoch,
                });
            }
            if h.producer_epoch > e.epoch {
                if got != 0 {
                    return Err(StorageError::OutOfOrderSequence {
                        producer_id: pid,
                        expected: 0,
                        got,
                    });
                }
                e.push(h.producer_epoch, m);
                return Ok(Verdict::New);
            }
            // newest first: after lost state a sequence range can be in the log twice
            if let Some(d) = e
                .batches
                .iter()
                .rev()
                .find(|b| b.first_seq == m.first_seq && b.last_seq == m.last_seq)
            {
                return Ok(Verdict::Duplicate(*d));
            }
            match e.batches.back() {
                Some(last) if next_seq(last.last_seq) != got => {
                    Err(StorageError::OutOfOrderSequence {
                        producer_id: pid,
                        expected: next_seq(last.last_seq),
                        got,
                    })
                }
                _ => {
                    e.push(h.producer_epoch, m);
                    Ok(Verdict::New)
                }
            }
        }
    }
}

/// What a rebuild reads: the durable range `[from, to)` of each segment, oldest first,
/// starting at a batch boundary whose batch starts at or after `start_offset` (exactly
/// there when `from` is a sparse-index entry), and the log's durable offset when planned.
pub(crate) struct Plan {
    pub(crate) ranges: Vec<(i64, u64, u64)>,
    pub(crate) start_offset: i64,
    pub(crate) durable: i64,
    /// Segments of `ranges` whose files may still carry the `.swap` suffix (`in_swap`).
    pub(crate) in_swap: Vec<i64>,
}

/// Choose where a rebuild starts: at most `max_bytes` of the newest `REBUILD_SEGMENTS`
/// segments, cut at a sparse-index entry (a batch boundary). Loads the index of the
/// segment it cuts (`ensure_indexes`: the caller loaded it off the shard before).
pub(crate) fn plan(
    dir: &Path,
    segments: &mut [Segment],
    log_end: i64,
    durable: i64,
    max_bytes: u64,
) -> Plan {
    let n = segments.len();
    let first = n.saturating_sub(REBUILD_SEGMENTS);
    // (segment index, file position, offset at or before the batch there)
    let mut start = (n, 0u64, log_end);
    let mut budget = max_bytes;
    for i in (first..n).rev() {
        let seg = &mut segments[i];
        if seg.size <= budget {
            budget -= seg.size;
            start = (i, 0, seg.base);
            continue;
        }
        seg.ensure_indexes(dir);
        let min_pos = seg.size - budget;
        let entry = seg
            .index
            .as_ref()
            .and_then(|x| x.entries.iter().find(|e| e.1 as u64 >= min_pos).copied());
        if let Some((rel, pos)) = entry {
            start = (i, pos as u64, seg.base + rel as i64);
        }
        break;
    }
    let ranges = segments[start.0.min(n)..]
        .iter()
        .enumerate()
        .map(|(k, seg)| {
            let from = if k == 0 { start.1 } else { 0 };
            let to = if seg.file_exists { seg.flushed } else { 0 };
            (seg.base, from, to.max(from))
        })
        .collect();
    let in_swap = segments[start.0.min(n)..]
        .iter()
        .filter(|s| s.in_swap)
        .map(|s| s.base)
        .collect();
    Plan {
        ranges,
        start_offset: start.2,
        durable,
        in_swap,
    }
}

/// Replays batch headers in offset order. Offsets must move forward (gaps are fine: a
/// compacted log has them) and stay below the log end, so a file racing a truncation or a
/// stale index cannot add wrong batches.
pub(crate) struct Replayer {
    pub(crate) ps: ProducerStates,
    /// Offset after the last batch replayed (the plan's start before any).
    pub(crate) next: i64,
    log_end: i64,
    /// Every planned file range was read to its end.
    covered: bool,
}

impl Replayer {
    pub(crate) fn new(plan: &Plan, log_end: i64) -> Replayer {
        Replayer {
            ps: ProducerStates::default(),
            next: plan.start_offset,
            log_end,
            covered: true,
        }
    }
    /// Take the next batch from a segment file; false (stop reading) if it does not
    /// follow the previous one or lies past the log end.
    pub(crate) fn feed(&mut self, h: &RecordBatchHeader) -> bool {
        if h.base_offset < self.next || h.base_offset >= self.log_end || h.last_offset_delta < 0 {
            return false;
        }
        self.ps.replay(h);
        self.next = h.last_offset() + 1;
        true
    }
    /// A planned file range ended at `pos` of `[from, to)`.
    pub(crate) fn range_read(&mut self, pos: u64, to: u64) {
        if pos < to {
            self.covered = false;
        }
    }
    /// Take the not-yet-durable batches (those the files already held are skipped), then
    /// say whether the replay saw every batch from the plan's start to the log end. Files
    /// and pending queue together hold them all when the files were read to the end of
    /// their planned ranges and no batch left the queue since the plan (the durable offset
    /// did not move), or when the files alone reached the durable offset (every batch at
    /// or after it is in the queue). Offsets alone cannot tell: a gap looks like a batch
    /// that went missing.
    pub(crate) fn feed_pending(
        &mut self,
        pending: &PendingQueue,
        log_end: i64,
        plan_durable: i64,
        durable: i64,
    ) -> Result<bool, StorageError> {
        let complete = (self.covered && durable == plan_durable) || self.next >= durable;
        self.log_end = log_end;
        for p in pending.iter() {
            let h = RecordBatchHeader::parse(&p.data)?;
            if h.base_offset < self.next {
                continue;
            }
            if !self.feed(&h) {
                return Ok(false);
            }
        }
        Ok(complete)
    }
}

/// Rebuild synchronously (inside `append`, where the log cannot change meanwhile): batch
/// headers of the planned ranges by plain positional reads, then the batches still in
/// memory.
pub(crate) fn rebuild(
    dir: &Path,
    plan: &Plan,
    pending: &PendingQueue,
    log_end: i64,
    durable: i64,
) -> Result<ProducerStates, StorageError> {
    let mut r = Replayer::new(plan, log_end);
    for &(base, from, to) in &plan.ranges {
        if to > from {
            let path = crate::segment::log_path(dir, base);
            let file = open_segment_sync(&path, plan.in_swap.contains(&base))?;
            let end = match file {
                Some(f) => scan_headers(&f, &path, from, to, |h| r.feed(h))?,
                None => from,
            };
            r.range_read(end, to);
        }
    }
    if !r.feed_pending(pending, log_end, plan.durable, durable)? {
        tracing::warn!(dir = %dir.display(), next = r.next, log_end,
            "producer state rebuilt from a log it could not read whole; older producers may be unknown");
    }
    Ok(r.ps)
}

/// Call `f` with the header of every batch in `[from, len)` of a segment file (`from` is
/// a batch boundary) until it returns false, hopping from header to header: large batches
/// are skipped, small ones come from one chunk read. Stops quietly at a short read or an
/// unparsable header (a file cut concurrently). Returns the position it stopped at (`len`
/// when it read everything).
fn scan_headers(
    file: &std::fs::File,
    path: &Path,
    from: u64,
    len: u64,
    mut f: impl FnMut(&RecordBatchHeader) -> bool,
) -> Result<u64, StorageError> {
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut buf_start, mut buf_len) = (0u64, 0usize);
    let mut pos = from;
    while pos + RECORD_BATCH_OVERHEAD as u64 <= len {
        if pos < buf_start || pos + RECORD_BATCH_OVERHEAD as u64 > buf_start + buf_len as u64 {
            let want = (len - pos).min(READ_CHUNK as u64) as usize;
            let n = read_at_most(file, &mut buf[..want], pos)?;
            if n < RECORD_BATCH_OVERHEAD {
                break;
            }
            (buf_start, buf_len) = (pos, n);
        }
        let off = (pos - buf_start) as usize;
        let Ok(h) = RecordBatchHeader::parse(&buf[off..off + RECORD_BATCH_OVERHEAD]) else {
            tracing::warn!(path = %path.display(), pos, "unparsable batch header while rebuilding producer state");
            break;
        };
        if pos + h.total_size() as u64 > len {
            break;
        }
        if !f(&h) {
            break;
        }
        pos += h.total_size() as u64;
    }
    Ok(pos)
}

/// A segment's log file for plain reads, None if it does not exist. One `in_swap` is at
/// `<path>.swap` until the cleaner renames it (atomically): then at `path`.
fn open_segment_sync(path: &Path, in_swap: bool) -> std::io::Result<Option<std::fs::File>> {
    let open = |p: &Path| match std::fs::File::open(p) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    if in_swap {
        if let Some(f) = open(&crate::segment::with_suffix(path, crate::segment::SWAP))? {
            return Ok(Some(f));
        }
    }
    open(path)
}

fn read_at_most(file: &std::fs::File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], pos + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(pid: i64, epoch: i16, seq: i32, n: i32) -> RecordBatchHeader {
        RecordBatchHeader {
            base_offset: 0,
            batch_length: 49,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: n,
        }
    }

    #[test]
    fn sequence_wraps_after_i32_max() {
        assert_eq!(last_seq(i32::MAX, 0), i32::MAX);
        assert_eq!(last_seq(i32::MAX, 1), 0);
        assert_eq!(last_seq(i32::MAX - 1, 3), 1);
        assert_eq!(next_seq(i32::MAX), 0);
        let mut e = None;
        check_and_apply(&mut e, &hdr(1, 0, i32::MAX - 1, 2), 0).unwrap();
        assert_eq!(
            check_and_apply(&mut e, &hdr(1, 0, 0, 1), 2).unwrap(),
            Verdict::New
        );
    }

    #[test]
    fn only_last_five_batches_are_duplicates() {
        let mut e = None;
        for i in 0..7 {
            check_and_apply(&mut e, &hdr(1, 0, i * 2, 2), i as i64 * 2).unwrap();
        }
        let entry = e.clone().unwrap();
        assert_eq!(entry.batches.len(), BATCHES_PER_PRODUCER);
        assert!(matches!(
            check_and_apply(&mut e, &hdr(1, 0, 4, 2), 99).unwrap(),
            Verdict::Duplicate(BatchMeta {
                first_offset: 4,
                last_offset: 5,
                ..
            })
        ));
        // batch 1 (seq 2..3) fell out of the window: a plain out-of-order error
        assert!(matches!(
            check_and_apply(&mut e, &hdr(1, 0, 2, 2), 99),
            Err(StorageError::OutOfOrderSequence {
                expected: 14,
                got: 2,
                ..
            })
        ));
    }

    #[test]
    fn replay_resets_on_epoch_change_and_trim_forgets() {
        let mut ps = ProducerStates::default();
        let mut h = hdr(7, 0, 0, 3);
        ps.replay(&h);
        h.base_offset = 3;
        h.producer_epoch = 1;
        ps.replay(&h);
        let e = ps.get(7).unwrap();
        assert_eq!((e.epoch, e.batches.len()), (1, 1));
        ps.trim_before(5);
        assert_eq!(ps.len(), 1);
        ps.trim_before(6);
        assert_eq!(ps.len(), 0);
        ps.replay(&hdr(-1, -1, -1, 1));
        assert_eq!(ps.len(), 0);
    }
}
