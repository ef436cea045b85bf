//! Unclean-shutdown recovery of the active segment: the scan resumes at the last
//! offset-index entry when that entry points at a valid batch (so a damaged byte before it
//! goes unnoticed, which shows where the scan started), and falls back to a full scan when
//! it does not. Also: the zero padding of the last page after kill -9 is cut without a
//! WARN, while real damage still logs one.

mod common;
use bytes::Bytes;
use common::{batch, run, tempdir};
use sluice_proto::batch::RecordBatchHeader;
use sluice_storage::*;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

fn cfg() -> LogConfig {
    LogConfig {
        index_interval_bytes: 1024,
        ..Default::default() // 1 GiB segments: everything stays in the active segment
    }
}

const FUTURE_TS: i64 = 4_000_000_000_000;

/// Append `n` durable batches (batch 5 carries the largest timestamp, FUTURE_TS + 1); with `close`, close
/// cleanly (indexes + marker), else stop as a crash would.
fn append_batches(path: PathBuf, from: usize, n: usize, close: bool) -> Vec<(i64, Bytes)> {
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path, cfg()).await.unwrap();
        let mut out = Vec::new();
        for i in from..from + n {
            let ts = if i == 5 { FUTURE_TS } else { 1_000 + i as i64 };
            let info = log
                .append(batch(1 + i % 4, 600 + i % 7 * 50, ts, i as u8), 0)
                .unwrap();
            log.wait_durable(info.last_offset).await.unwrap();
            let b = log
                .read(info.base_offset, info.last_offset + 1, 1, true)
                .await
                .unwrap();
            out.push((info.base_offset, b[0].clone()));
        }
        if close {
            log.close().await.unwrap();
            shard.shutdown().await.unwrap();
        }
        out
    })
}

/// A log closed cleanly with 300 batches, then 40 more appended and the process "killed".
fn populate(path: &Path) -> Vec<(i64, Bytes)> {
    let mut all = append_batches(path.to_path_buf(), 0, 300, true);
    all.extend(append_batches(path.to_path_buf(), 300, 40, false));
    all
}

fn seg_path(path: &Path) -> PathBuf {
    path.join(format!("{:020}.log", 0))
}

/// File positions of every batch in the segment.
fn batch_positions(path: &Path) -> Vec<u64> {
    let data = std::fs::read(seg_path(path)).unwrap();
    let mut pos = 0usize;
    let mut out = Vec::new();
    while pos < data.len() {
        let Ok(h) = RecordBatchHeader::parse(&data[pos..]) else {
            break; // zero padding
        };
        out.push(pos as u64);
        pos += h.total_size();
    }
    out
}

/// Last (relative offset, position) entry of the on-disk offset index.
fn last_index_entry(path: &Path) -> (u32, u32) {
    let idx = std::fs::read(path.join(format!("{:020}.index", 0))).unwrap();
    assert!(idx.len() >= 16, "expected a populated index");
    let e = &idx[idx.len() - 8..];
    (
        u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
        u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
    )
}

/// Flip the last byte of batch `i` (inside its records: the CRC no longer matches).
fn damage_batch(path: &Path, positions: &[u64], i: usize) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(seg_path(path))
        .unwrap();
    let end = positions
        .get(i + 1)
        .copied()
        .unwrap_or_else(|| panic!("batch {i} is the last one"));
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, end - 1).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], end - 1).unwrap();
}

/// Reopen (no marker: recovery scans), read every batch, append one more; then close
/// cleanly or (`close` false) stop as a crash would. Returns (recovered log end, max ts
/// after the append, every batch that was there after recovery).
fn reopen(path: PathBuf, close: bool) -> (i64, Option<(i64, i64)>, Vec<Bytes>) {
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions {
            cache_bytes: 0,
            ..Default::default()
        });
        let log = PartitionLog::open(&shard, path, cfg()).await.unwrap();
        let end = log.log_end_offset();
        let mut all = Vec::new();
        let mut next = 0;
        while next < end {
            let bs = log.read(next, end, 1 << 20, true).await.unwrap();
            for b in bs {
                next = RecordBatchHeader::parse(&b).unwrap().last_offset() + 1;
                all.push(b);
            }
        }
        // the log keeps working after recovery
        let info = log.append(batch(1, 10, 1, 1), 0).unwrap();
        assert_eq!(info.base_offset, end);
        log.wait_durable(info.last_offset).await.unwrap();
        let mt = log.max_timestamp();
        if close {
            log.close().await.unwrap();
            shard.shutdown().await.unwrap();
        }
        (end, mt, all)
    })
}

#[test]
fn active_segment_recovers_from_its_last_index_entry() {
    let dir = tempdir();
    let path = dir.path().join("p");
    let batches = populate(&path);
    let positions = batch_positions(&path);
    assert_eq!(positions.len(), batches.len());
    let (rel, pos) = last_index_entry(&path);
    let entry = positions.iter().position(|&p| p == pos as u64).unwrap();
    assert!(entry > 100, "index entry should be deep in the segment");
    assert_eq!(batches[entry].0, rel as i64);
    // damage before the entry: not rescanned, so not noticed; damage after it: cut there
    damage_batch(&path, &positions, 20);
    damage_batch(&path, &positions, 320);
    let (end, max_ts, got) = reopen(path.clone(), true);
    assert_eq!(
        end, batches[320].0,
        "cut at the damaged batch after the entry"
    );
    assert_eq!(
        got.len(),
        320,
        "batches before the entry kept (prefix trusted)"
    );
    for (i, (b, want)) in got.iter().zip(&batches).enumerate() {
        if i != 20 {
            assert_eq!(b, &want.1, "batch {i} differs after recovery");
        }
    }
    assert_eq!(got[20].len(), batches[20].1.len());
    assert_ne!(
        got[20], batches[20].1,
        "the damaged prefix byte is still there"
    );
    // the prefix max timestamp (batch 5) came from the time index
    assert_eq!(max_ts.map(|m| m.0), Some(FUTURE_TS + 1));
}

#[test]
fn bad_last_index_entry_falls_back_to_a_full_scan() {
    let dir = tempdir();
    let path = dir.path().join("p");
    let batches = populate(&path);
    let positions = batch_positions(&path);
    let (_, pos) = last_index_entry(&path);
    // the last entry now points one byte into a batch
    let idx_path = path.join(format!("{:020}.index", 0));
    let len = std::fs::metadata(&idx_path).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&idx_path)
        .unwrap();
    f.write_all_at(&(pos + 1).to_be_bytes(), len - 4).unwrap();
    damage_batch(&path, &positions, 20);
    let (end, max_ts, got) = reopen(path.clone(), true);
    assert_eq!(
        end, batches[20].0,
        "full scan cuts at the damaged prefix batch"
    );
    assert_eq!(got.len(), 20);
    for (b, want) in got.iter().zip(&batches) {
        assert_eq!(b, &want.1);
    }
    assert_eq!(max_ts.map(|m| m.0), Some(FUTURE_TS + 1));
}

#[test]
fn recovery_rewrites_the_index_and_the_next_crash_resumes_from_it() {
    let dir = tempdir();
    let path = dir.path().join("p");
    let batches = populate(&path);
    let (close_rel, _) = last_index_entry(&path);
    let (end, max_ts, got) = reopen(path.clone(), false);
    assert_eq!(end, end_of(&batches));
    assert_eq!(got, batches.iter().map(|b| b.1.clone()).collect::<Vec<_>>());
    assert_eq!(max_ts.map(|m| m.0), Some(FUTURE_TS + 1));
    // recovery rewrote the index to cover the 40 batches appended after the clean close
    let positions = batch_positions(&path);
    let (rel, pos) = last_index_entry(&path);
    assert!(rel > close_rel, "index extended past the close-time entry");
    let entry = positions.iter().position(|&p| p == pos as u64).unwrap();
    assert!(entry > 310, "entry {entry}");
    // damage between the old and the new last entry: the next recovery does not rescan it
    damage_batch(&path, &positions, 305);
    let (end2, _, got) = reopen(path.clone(), true);
    assert_eq!(end2, end + 1, "nothing cut");
    assert_eq!(got.len(), batches.len() + 1);
    assert_ne!(got[305], batches[305].1);
}

fn end_of(b: &[(i64, Bytes)]) -> i64 {
    RecordBatchHeader::parse(&b.last().unwrap().1)
        .unwrap()
        .last_offset()
        + 1
}

// ---- log level of the tail cut ------------------------------------------------------

static EVENTS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

struct Capture;
struct Fields(String);
impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}
impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, ev: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut f = Fields(format!("{}", ev.metadata().level()));
        ev.record(&mut f);
        if let Some(m) = EVENTS.get() {
            m.lock().unwrap().push(f.0);
        }
    }
}

/// Every WARN event mentioning `dir` since the capture was installed.
fn warnings_for(dir: &Path) -> Vec<String> {
    use tracing_subscriber::layer::SubscriberExt;
    let events = EVENTS.get_or_init(|| {
        let _ =
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Capture));
        Mutex::new(Vec::new())
    });
    let d = dir.display().to_string();
    events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with("WARN") && e.contains(&d))
        .cloned()
        .collect()
}

#[test]
fn zero_padding_after_kill9_is_cut_without_a_warning() {
    warnings_for(Path::new("/")); // install the capture before anything logs
    let dir = tempdir();
    let path = dir.path().join("p");
    let batches = append_batches(path.clone(), 0, 50, false);
    let len = std::fs::metadata(seg_path(&path)).unwrap().len();
    let data_end: u64 = batches.iter().map(|b| b.1.len() as u64).sum();
    assert!(
        len > data_end && len.is_multiple_of(4096),
        "the last page is padded"
    );
    let (end, _, _) = reopen(path.clone(), true);
    assert_eq!(end, end_of(&batches));
    assert_eq!(warnings_for(&path), Vec::<String>::new());

    // real damage in the last batch still warns
    let dir2 = tempdir();
    let path2 = dir2.path().join("p");
    let batches = append_batches(path2.clone(), 0, 50, false);
    let positions = batch_positions(&path2);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(seg_path(&path2))
        .unwrap();
    f.write_all_at(&[0xEE], positions[49] + 70).unwrap();
    let (end, _, _) = reopen(path2.clone(), true);
    assert_eq!(end, batches[49].0);
    let w = warnings_for(&path2);
    assert!(
        w.iter()
            .any(|e| e.contains("cutting segment at the first bad batch")),
        "expected a WARN for real damage, got {w:?}"
    );
}
