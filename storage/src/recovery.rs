//! Opening a log (with crash recovery) and closing it cleanly.
//! Open: list segments; a sealed segment is trusted if its time index ends exactly at the
//! offset before the next segment's base (the final entry seal writes), else it is
//! rescanned; the active segment is trusted only with a valid clean-shutdown marker
//! matching its size, else scanned from its last offset-index entry (if that entry points
//! at a valid batch with the entry's offset; else from the start). Scans check CRCs and
//! that offsets move forward inside the segment's range; gaps between batches are not
//! damage (a compacted log has them). A segment is cut (ftruncate) at its first torn or
//! corrupt batch, or at one whose offsets go backwards or overlap the next segment; when
//! more than the zero padding after the last batch is cut, every later segment is dropped
//! (as Kafka's recovery does). Rescanned indexes are rewritten; the cuts and rewrites
//! (and the bytes the rescan trusted) are made durable by one group sync shared with the
//! other opens (`group_sync.rs`) before the log is registered. The leader-epoch
//! checkpoint is read and repaired against the recovered log (entries from the log end
//! on dropped, entries before the log start folded into it), and a truncation intent left
//! by a crash is carried out. Before any of that, a cleaner's segment swap a crash
//! interrupted is finished or rolled back (`swap::recover`), and the cleaner checkpoint
//! is fitted to the recovered log (rewritten if it claimed offsets past its end). A
//! directory without segments (a new log) gets its empty first segment at open, without
//! a directory fsync: the next one covers it (`LogInner::dir_unsynced`; the broker's
//! mark, else the first flush). Close (`close_logs` in `recovery/close.rs`, many logs at
//! once): flush, write a changed epoch checkpoint, cut the file to its logical end and
//! write indexes, one `syncfs` for all the logs, then the markers (removed again before
//! the files next change), one more `syncfs`; an empty active segment gets neither
//! indexes nor a marker.

use crate::clean_point::CleanPoint;
use crate::config::LogConfig;
use crate::error::StorageError;
use crate::inner::LogInner;
use crate::scan::{scan, ScanOpts};
use crate::segment::{
    align_down, align_up, index_path, list_segments, log_path, marker_path, open_segment_file,
    remove_segments, timeindex_path, write_indexes_unsynced, SegState, Segment, PAGE,
};
use crate::shard::ShardStorage;
use crate::state::LogState;
use crate::txn::{AbortedEntry, SegTxn};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;

mod close;
pub(crate) use close::{close_inner, close_logs};

const MARKER_MAGIC: &[u8; 4] = b"SLC1";
const MARKER_LEN: usize = 4 + 8 * 5 + 4;

/// What the clean-shutdown marker records about the active segment.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Marker {
    base: i64,
    size: u64,
    end: i64,
    max_ts: i64,
    max_ts_offset: i64,
}

impl Marker {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(MARKER_LEN);
        v.extend_from_slice(MARKER_MAGIC);
        for x in [
            self.base,
            self.size as i64,
            self.end,
            self.max_ts,
            self.max_ts_offset,
        ] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        let crc = crc32c::crc32c(&v);
        v.extend_from_slice(&crc.to_be_bytes());
        v
    }
    fn decode(b: &[u8]) -> Option<Marker> {
        if b.len() != MARKER_LEN || &b[..4] != MARKER_MAGIC {
            return None;
        }
        let crc = u32::from_be_bytes([
            b[MARKER_LEN - 4],
            b[MARKER_LEN - 3],
            b[MARKER_LEN - 2],
            b[MARKER_LEN - 1],
        ]);
        if crc32c::crc32c(&b[..MARKER_LEN - 4]) != crc {
            return None;
        }
        let f = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[4 + 8 * i..12 + 8 * i]);
            i64::from_be_bytes(a)
        };
        let m = Marker {
            base: f(0),
            size: f(1) as u64,
            end: f(2),
            max_ts: f(3),
            max_ts_offset: f(4),
        };
        (m.end >= m.base).then_some(m)
    }
}

fn file_created_ms(path: &Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.created().or_else(|_| m.modified()))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(-1, |d| d.as_millis() as i64)
}

/// A sealed segment is trusted when both index files exist and the time index's final
/// entry is exactly the last offset the segment covers, the one before the next
/// segment's base (written last at seal, also when the segment ends in a gap). Its end is
/// then that next base; the offset of its max timestamp is not known without a scan and
/// is taken as its last offset.
fn sealed_from_disk(dir: &Path, base: i64, next_base: i64, file_len: u64) -> Option<Segment> {
    let idx_len = std::fs::metadata(index_path(dir, base)).ok()?.len();
    if idx_len % 8 != 0 || file_len == 0 {
        return None;
    }
    let f = std::fs::File::open(timeindex_path(dir, base)).ok()?;
    let len = f.metadata().ok()?.len();
    if len < 12 || len % 12 != 0 {
        return None;
    }
    let mut last = [0u8; 12];
    f.read_exact_at(&mut last, len - 12).ok()?;
    let (ts, rel) = crate::index::TimeIndex::decode_last(&last)?;
    if base + rel as i64 != next_base - 1 {
        return None;
    }
    let mut s = Segment::new_empty(base, true);
    s.size = file_len;
    s.flushed = file_len;
    s.end_offset = next_base;
    s.max_ts = ts;
    s.max_ts_offset = next_base - 1;
    s.index = None;
    s.tindex = None;
    s.state = SegState::Sealed;
    Some(s)
}

/// Where a scan of the active segment can resume: its last offset-index entry, with the
/// prefix state (max timestamp before it) from the time index. None if either file is
/// missing, empty or does not reach that entry (then the whole segment is scanned).
/// On-disk indexes of the active segment are written only at clean close, at seal, and
/// after recovery or truncation rewrote the file, so an entry that points at a valid batch
/// with the expected offset has a durable, unchanged prefix.
fn index_resume_point(dir: &Path, base: i64, file_len: u64) -> Option<Segment> {
    let buf = std::fs::read(index_path(dir, base)).ok()?;
    let idx = crate::index::OffsetIndex::decode(&buf, u32::MAX as u64, file_len);
    let &(rel, pos) = idx.entries.last()?;
    let tbuf = std::fs::read(timeindex_path(dir, base)).ok()?;
    let t = crate::index::TimeIndex::decode(&tbuf, u32::MAX as u64);
    // a complete time index ends at or past the entry (close and seal write a final one)
    if !t.entries.iter().any(|&(_, r)| r >= rel) {
        return None;
    }
    let (ts, ts_rel) = t.entries.iter().rev().find(|&&(_, r)| r < rel).copied()?;
    let mut s = Segment::new_empty(base, true);
    s.size = pos as u64;
    s.end_offset = base + rel as i64;
    s.max_ts = ts;
    s.max_ts_offset = base + ts_rel as i64;
    s.index = Some(idx);
    s.tindex = Some(crate::index::TimeIndex {
        entries: t.entries.into_iter().filter(|&(_, r)| r < rel).collect(),
    });
    s.bytes_since_index = 0;
    Some(s)
}

/// True if `[from, file_len)` is zero bytes within the page holding `from`: the padding a
/// direct-I/O flush leaves after the last batch, expected after any unclean stop.
async fn is_tail_padding(
    file: &glommio::io::DmaFile,
    from: u64,
    file_len: u64,
) -> Result<bool, StorageError> {
    if from >= file_len || file_len > align_up(from) {
        return Ok(false);
    }
    let page = align_down(from);
    let r = file.read_at_aligned(page, PAGE as usize).await?;
    let lo = (from - page) as usize;
    let hi = ((file_len - page) as usize).min(r.len());
    Ok(lo <= hi && r[lo..hi].iter().all(|&b| b == 0))
}

/// What a rescan kept of a segment file.
struct Rescanned {
    /// The segment up to its last good batch (the file is cut there).
    seg: Segment,
    /// More than the zero padding after the last batch was cut: the log ends here.
    damaged: bool,
}

/// Scan a segment with full validation (offsets below `limit`, the next segment's base)
/// and cut it at the first bad batch. With `resume` (the active segment after an unclean
/// stop) the scan starts at its last index entry if that entry points at a valid batch
/// with the entry's offset, else it falls back to the whole segment.
async fn rescan(
    dir: &Path,
    base: i64,
    file_len: u64,
    interval: u32,
    limit: Option<i64>,
    resume: Option<Segment>,
) -> Result<Rescanned, StorageError> {
    let file = open_segment_file(&log_path(dir, base), false).await?;
    let opts = ScanOpts::recovery(interval, limit);
    let mut res = None;
    if let Some(start) = resume {
        let pos = start.size;
        let r = scan(&file, start, file_len, opts).await?;
        if r.seg.size > pos {
            tracing::debug!(dir = %dir.display(), base, from = pos, "recovering the active segment from its last index entry");
            res = Some(r);
        } else {
            tracing::warn!(dir = %dir.display(), base, pos, "last index entry does not point at a valid batch; scanning the whole segment");
        }
    }
    let r = match res {
        Some(r) => r,
        None => scan(&file, Segment::new_empty(base, true), file_len, opts).await?,
    };
    let valid_end = r.seg.size;
    let mut damaged = false;
    if valid_end < file_len {
        let reason = r.stopped.as_deref().unwrap_or("stale bytes");
        if is_tail_padding(&file, valid_end, file_len).await? {
            tracing::debug!(dir = %dir.display(), base, valid_end, file_len,
                "cutting the zero padding after the last batch");
        } else {
            tracing::warn!(dir = %dir.display(), base, valid_end, file_len,
                reason, "cutting segment at the first bad batch");
            damaged = true;
        }
        file.truncate(valid_end).await?;
    }
    // no fdatasync: `open_log` makes the cut (and the bytes it now trusts) durable with
    // one group sync before the log is registered
    file.close().await?;
    let mut s = r.seg.scanned();
    s.created_ms = if s.size > 0 {
        let p = log_path(dir, base);
        crate::blocking::run(dir, move || file_created_ms(&p)).await
    } else {
        -1
    };
    Ok(Rescanned { seg: s, damaged })
}

/// What `open_log` learns from the directory with plain file-system calls, gathered in one
/// call on a blocking helper so the shard thread never waits on them.
struct Survey {
    dev: u64,
    /// Segment bases in order, with each log file's length.
    segments: Vec<(i64, u64)>,
    /// For each segment but the last: its state if its on-disk indexes say it is sealed.
    sealed: Vec<Option<Segment>>,
    marker_raw: Option<Vec<u8>>,
    /// The last segment: both index files exist, its creation time, and where a scan can
    /// resume (its last index entry).
    last_indexes_exist: bool,
    last_created_ms: i64,
    last_resume: Option<Segment>,
    /// The leader-epoch checkpoint: None if absent, Err if unusable.
    epochs: crate::epoch::CheckpointRead,
    /// A truncation intent: None if absent, Some(None) if unreadable.
    intent: Option<Option<i64>>,
    /// A cleaner's swap interrupted by a crash was finished or rolled back.
    swap_recovered: bool,
    /// The directory held no segment: its first one (base 0, empty) was created now,
    /// without a directory fsync (see `open_log`).
    created_first: bool,
    /// Producer-state snapshot offsets found.
    snapshots: Vec<i64>,
    /// The log start past the first segment's base (`log_start.rs`), if one was saved.
    start_floor: Option<i64>,
    /// Length of every `.txnindex` file, by segment base.
    txn_lens: Vec<(i64, u64)>,
    /// Entries of the `.txnindex` of the last segment and of every sealed segment that
    /// will be rescanned (None: damaged).
    txn_read: Vec<(i64, Option<Vec<AbortedEntry>>)>,
}

fn survey(dir: &Path) -> Result<Survey, StorageError> {
    use std::os::unix::fs::MetadataExt;
    let existed = dir.is_dir();
    std::fs::create_dir_all(dir)?;
    if !existed {
        // the new directory's own entry, durable before anything in it is acknowledged
        if let Some(parent) = dir.parent() {
            crate::blocking::sync_dir_now(parent)?;
        }
    }
    let dev = std::fs::metadata(dir)?.dev();
    // before anything reads the segments: they are the old ones or the cleaned ones
    let swap_recovered = crate::swap::recover(dir)?;
    let bases = list_segments(dir)?;
    // a log without a segment (a new one) gets its first now, here on the helper: the
    // first flush then finds the file and needs no directory fsync of its own when one
    // came in between (`LogInner::sync_dir`, e.g. the broker's partition mark)
    let created_first = bases.is_empty();
    if created_first {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(log_path(dir, 0))?;
    }
    let mut segments = Vec::with_capacity(bases.len());
    for &b in &bases {
        segments.push((b, std::fs::metadata(log_path(dir, b))?.len()));
    }
    let sealed: Vec<Option<Segment>> = segments
        .windows(2)
        .map(|w| sealed_from_disk(dir, w[0].0, w[1].0, w[0].1))
        .collect();
    let marker_raw = match std::fs::read(marker_path(dir)) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let (snapshots, mut txn_lens) = crate::txn::list_txn_files(dir)?;
    // a `.txnindex` without its segment: written ahead of a segment whose batches never
    // reached the disk (a crash); a later segment may get that base
    txn_lens.retain(|&(b, _)| {
        let orphan = !segments.iter().any(|s| s.0 == b);
        if orphan {
            let _ = std::fs::remove_file(crate::txn::txnindex_path(dir, b)); // ok: an orphan
        }
        !orphan
    });
    let mut txn_read = Vec::new();
    for (i, &(b, _)) in segments.iter().enumerate() {
        let rescanned =
            i + 1 == segments.len() || sealed.get(i).is_some_and(|s: &Option<Segment>| s.is_none());
        if rescanned && txn_lens.iter().any(|t| t.0 == b) {
            txn_read.push((b, crate::txn::read_entries(dir, b)?));
        }
    }
    let (mut last_indexes_exist, mut last_created_ms, mut last_resume) = (false, -1, None);
    if let Some(&(b, len)) = segments.last() {
        last_indexes_exist = index_path(dir, b).exists() && timeindex_path(dir, b).exists();
        last_created_ms = file_created_ms(&log_path(dir, b));
        last_resume = index_resume_point(dir, b, len);
    }
    Ok(Survey {
        dev,
        segments,
        sealed,
        marker_raw,
        last_indexes_exist,
        last_created_ms,
        last_resume,
        epochs: crate::epoch::read_checkpoint(dir)?,
        intent: crate::epoch::read_intent(dir)?,
        start_floor: crate::log_start::load(dir)?,
        swap_recovered,
        created_first,
        snapshots,
        txn_lens,
        txn_read,
    })
}

/// Set `seg`'s aborted-transaction entries from what the survey found: a trusted sealed
/// segment's stay in their file (`OnDisk`); a rescanned one's are read, without entries
/// for markers past its recovered end (lost in the crash: the flusher writes the file
/// before the batches). A damaged file makes them unknown (rebuilt by the producer-state
/// replay before open returns).
fn attach_txn(
    seg: &mut Segment,
    trusted: bool,
    lens: &[(i64, u64)],
    read: &[(i64, Option<Vec<AbortedEntry>>)],
) {
    let len = lens.iter().find(|t| t.0 == seg.base).map(|t| t.1);
    seg.txn_file = len.is_some();
    let Some(len) = len.filter(|&l| l > 0) else {
        seg.txn = SegTxn::default();
        return;
    };
    if trusted {
        seg.txn = if (len as usize).is_multiple_of(crate::txn::TXN_ENTRY_LEN) {
            SegTxn::OnDisk(len as usize / crate::txn::TXN_ENTRY_LEN)
        } else {
            SegTxn::Unknown
        };
        return;
    }
    seg.txn = match read
        .iter()
        .find(|r| r.0 == seg.base)
        .and_then(|r| r.1.clone())
    {
        Some(v) => {
            let end = seg.end_offset;
            let kept: Vec<AbortedEntry> =
                v.iter().filter(|a| a.last_offset < end).copied().collect();
            seg.txn_dirty = kept.len() != v.len();
            SegTxn::Loaded(kept)
        }
        None => SegTxn::Unknown,
    };
}

/// Open (creating the directory if missing) and recover the log in `dir`, registered
/// with `shard`.
pub(crate) async fn open_log(
    shard: &Rc<ShardStorage>,
    dir: std::path::PathBuf,
    config: LogConfig,
) -> Result<Rc<LogInner>, StorageError> {
    if shard.inner.borrow().dirs.contains(&dir) {
        return Err(StorageError::Io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("log {} is already open on this shard", dir.display()),
        )));
    }
    // the survey and the rescans read and write: `OPEN_IO` opens at a time do; the wait for
    // the group sync below is outside, so many more opens can share each sync
    let io_slot = crate::permit::acquire(&shard.open_io, 1).await?;
    let Survey {
        dev,
        segments: found,
        mut sealed,
        marker_raw,
        last_indexes_exist,
        last_created_ms,
        mut last_resume,
        epochs: epochs_raw,
        intent,
        swap_recovered,
        created_first,
        snapshots,
        start_floor,
        txn_lens,
        txn_read,
    } = {
        let key = dir.clone();
        let dir = dir.clone();
        crate::blocking::run(&key, move || survey(&dir)).await?
    };
    crate::segment::probe_device(&dir, dev).await?;
    let marker = marker_raw.as_deref().and_then(Marker::decode);
    let interval = config.index_interval_bytes;
    let mut segments: Vec<Segment> = Vec::new();
    let mut marker_used = false;
    let mut changed = false;
    let mut rescanned = false;
    for (i, &(base, file_len)) in found.iter().enumerate() {
        if let Some(&(nb, _)) = found.get(i + 1) {
            if let Some(mut s) = sealed.get_mut(i).and_then(Option::take) {
                attach_txn(&mut s, true, &txn_lens, &txn_read);
                segments.push(s);
                continue;
            }
            rescanned = true;
            let Rescanned { mut seg, damaged } =
                rescan(&dir, base, file_len, interval, Some(nb), None).await?;
            changed |= seg.size != file_len;
            if damaged {
                // the log now ends in this segment: the later ones do not continue it
                tracing::warn!(dir = %dir.display(), base, "dropping the segments after a damaged one");
                // the cut durable before the later segments go: else a crash could leave
                // them gone and this segment whole, its old index resuming past the damage
                shard.group_sync.wait(dev, &dir).await?;
                remove_segments(&dir, found[i + 1..].iter().map(|f| f.0).collect()).await?;
                let (idx, tidx) = seg.encode_indexes();
                write_indexes_unsynced(&dir, base, idx, tidx).await?;
                attach_txn(&mut seg, false, &txn_lens, &txn_read);
                segments.push(seg);
                break;
            }
            // whole (perhaps ending in a gap): it covers the offsets up to the next base
            seg.end_offset = nb;
            seg.state = SegState::Sealed;
            attach_txn(&mut seg, false, &txn_lens, &txn_read);
            if seg.size > 0 {
                let (idx, tidx) = seg.seal_indexes();
                write_indexes_unsynced(&dir, base, idx, tidx).await?;
            }
            segments.push(seg);
        } else {
            let trusted =
                marker.filter(|m| m.base == base && m.size == file_len && last_indexes_exist);
            if let Some(m) = trusted {
                let mut s = Segment::new_empty(base, true);
                s.size = m.size;
                s.flushed = m.size;
                s.end_offset = m.end;
                s.max_ts = m.max_ts;
                s.max_ts_offset = m.max_ts_offset;
                s.index = None;
                s.tindex = None;
                s.created_ms = if m.size > 0 { last_created_ms } else { -1 };
                attach_txn(&mut s, false, &txn_lens, &txn_read);
                segments.push(s);
                marker_used = true;
            } else {
                rescanned = true;
                let resume = last_resume.take();
                let seg = rescan(&dir, base, file_len, interval, None, resume)
                    .await?
                    .seg;
                // replace indexes that may describe bytes that are now cut or rewritten
                // (an empty segment without any, a new log's first, needs none)
                if file_len > 0 || last_indexes_exist {
                    let (idx, tidx) = seg.encode_indexes();
                    write_indexes_unsynced(&dir, base, idx, tidx).await?;
                }
                let mut seg = seg;
                attach_txn(&mut seg, false, &txn_lens, &txn_read);
                segments.push(seg);
            }
        }
    }
    if let Some(last) = segments.last_mut() {
        last.state = SegState::Active;
    }
    drop(io_slot);
    if rescanned {
        // what the rescans trusted (bytes a crashed process wrote, perhaps never synced),
        // cut and rewrote: durable before anything serves or builds on it. One syncfs
        // shared with the other logs opening now instead of 3 fdatasyncs per log.
        shard.group_sync.wait(dev, &dir).await?;
    }
    if marker_raw.is_some() && !marker_used {
        crate::blocking::remove_file(marker_path(&dir)).await?;
        changed = true;
    }
    let log_end = segments.last().map_or(0, |s| s.end_offset);
    let log_start = segments.first().map_or(log_end, |s| s.base);
    let epochs = recover_epochs(&dir, epochs_raw, log_start, log_end);
    let clean = {
        let key = dir.clone();
        let dir = dir.clone();
        crate::blocking::run(&key, move || CleanPoint::load(&dir, log_start, log_end)).await?
    };
    // a clean point past the recovered end must not stay on disk: data appended from
    // the end on is not clean
    let clean_rewrite = clean.snapshot_if_dirty();
    // snapshots past the recovered end describe batches that are gone (and offsets that
    // will hold others); those below the log start are of no use
    let (snapshots, stale): (Vec<i64>, Vec<i64>) = snapshots
        .into_iter()
        .partition(|&o| o >= log_start && o <= log_end);
    if !stale.is_empty() {
        crate::snapshot::remove(&dir, stale).await?;
    }
    let st = LogState::new(
        config,
        segments,
        epochs,
        marker_used,
        crate::pending::PendingQueue::new(shard.totals.clone()),
        clean,
        snapshots,
    );
    let inner = shard.register(|id| Rc::new(LogInner::new(id, dir, dev, st)));
    if created_first {
        // the segment at 0 `LogState::new` made for an empty list: its file is there, its
        // directory entry not yet durable
        inner.state_mut().set_file_exists(0);
        inner.set_dir_unsynced();
    }
    if let Some(floor) = start_floor {
        if inner.state_mut().recovered_start_floor(floor) {
            crate::log_start::write(inner.dir.clone(), log_end).await?;
            inner.state_mut().start_floor_persisted();
        }
    }
    if changed {
        inner.sync_dir().await?;
    }
    if swap_recovered {
        tracing::info!(dir = %inner.dir.display(), "log opened after completing or undoing a cleaner's swap");
    }
    if let Some((gen, data)) = clean_rewrite {
        crate::clean_point::write(inner.dir.clone(), data).await?;
        inner.state_mut().clean_point_persisted(gen);
    }
    // append keeps the active segment's indexes in memory: read them now, off the shard
    let active = inner.state().last_segment().map(|s| s.base);
    if let Some(base) = active {
        inner.load_indexes(base).await;
    }
    if let Some(intent) = intent {
        // a truncation was under way: finish it (the log recovered to a longer prefix)
        if let Err(e) = crate::truncate::finish_intent(shard, &inner, intent).await {
            let _ = close_inner(shard, &inner).await; // ok: reporting `e`
            return Err(e);
        }
    }
    let unknown = inner.state().unknown_txn_segments();
    if !unknown.is_empty() {
        // a damaged transaction index: rebuild it from the producer-state replay now
        tracing::warn!(dir = %inner.dir.display(), segments = ?unknown, "rebuilding damaged transaction indexes");
        if let Err(e) = crate::read::load_producers(shard, &inner).await {
            let _ = close_inner(shard, &inner).await; // ok: reporting `e`
            return Err(e);
        }
    }
    Ok(inner)
}

/// The leader-epoch cache for a log recovered to `[log_start, log_end)`: the checkpoint's
/// entries without those from the log end on (a crash lost that data, or a truncation
/// did not rewrite the file) and with those before the log start folded into it.
/// Batches on disk always have their epochs in the file (the flusher writes it first), so
/// nothing needs to be read from the log. A missing file means no epochs (a log written
/// before epochs were stamped); an unusable one is logged and starts empty.
fn recover_epochs(
    dir: &Path,
    raw: crate::epoch::CheckpointRead,
    log_start: i64,
    log_end: i64,
) -> crate::epoch::EpochCache {
    let mut c = match raw {
        None => crate::epoch::EpochCache::default(),
        Some(Ok(entries)) => crate::epoch::EpochCache::from_entries(entries),
        Some(Err(why)) => {
            tracing::warn!(dir = %dir.display(), why, "unusable leader-epoch checkpoint; starting with no epochs");
            let mut c = crate::epoch::EpochCache::default();
            c.mark_dirty();
            c
        }
    };
    c.truncate_from_end(log_end);
    if log_start < log_end {
        c.truncate_from_start(log_start);
    }
    c
}

#[cfg(test)]
mod tests;
