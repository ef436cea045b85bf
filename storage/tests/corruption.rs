//! Corruption tests: damage the files of a closed or crashed log and reopen. Recovery
//! must cut the tail at the first bad batch or rebuild indexes, never panic, and never
//! lose a durable batch before the damage.

mod common;
use common::{batch, run, tempdir};
use sluice_proto::batch::RecordBatchHeader;
use sluice_storage::*;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 512,
        ..Default::default()
    }
}

/// Write `n` batches (durable); returns (base, bytes) of each. `close` writes the marker.
fn populate(path: PathBuf, n: usize, close: bool) -> Vec<(i64, bytes::Bytes)> {
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path, cfg()).await.unwrap();
        let mut out = Vec::new();
        for i in 0..n {
            let info = log
                .append(
                    batch(1 + i % 5, 700 + i * 13, 1000 + i as i64 * 10, i as u8),
                    0,
                )
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
        // without close: just stop, as a crash would (no marker, tail page padded)
        out
    })
}

fn segments(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Reopen and check: log ends at `expect_end`, every batch below it is byte-identical.
fn verify(path: PathBuf, batches: Vec<(i64, bytes::Bytes)>, expect_end: i64) {
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions {
            cache_bytes: 0,
            ..Default::default()
        });
        let log = PartitionLog::open(&shard, path, cfg()).await.unwrap();
        assert_eq!(log.log_end_offset(), expect_end);
        assert_eq!(log.durable_offset(), expect_end);
        for (base, bytes) in batches.iter().filter(|(b, _)| *b < expect_end) {
            let r = log.read(*base, expect_end, 1, true).await.unwrap();
            assert_eq!(&r[0], bytes, "batch {base} differs after recovery");
        }
        // the ts lookup works off rebuilt indexes too
        let (b0, first) = &batches[0];
        let h = RecordBatchHeader::parse(first).unwrap();
        assert_eq!(
            log.offset_for_timestamp(h.base_timestamp)
                .await
                .unwrap()
                .map(|x| x.0),
            Some(*b0)
        );
        // and the log keeps working: append after the cut
        let info = log.append(batch(2, 50, 5, 9), 0).unwrap();
        assert_eq!(info.base_offset, expect_end);
        log.wait_durable(info.last_offset).await.unwrap();
        shard.shutdown().await.unwrap();
    });
}

fn last_batch_pos(path: &Path) -> (PathBuf, u64, u64) {
    let seg = segments(path, "log").pop().unwrap();
    let data = std::fs::read(&seg).unwrap();
    let mut pos = 0u64;
    let mut last = (0, 0);
    while (pos as usize) < data.len() {
        let Ok(h) = RecordBatchHeader::parse(&data[pos as usize..]) else {
            break;
        }; // zero padding
        last = (pos, h.total_size() as u64);
        pos += h.total_size() as u64;
    }
    (seg, last.0, last.1)
}

#[test]
fn flipped_byte_in_tail_cuts_at_that_batch() {
    let dir = tempdir();
    let path = dir.path().join("p");
    let batches = populate(path.clone(), 120, false);
    let (seg, pos, size) = last_batch_pos(&path);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[0xAA], pos + size / 2).unwrap();
    let cut = batches.last().unwrap().0;
    verify(path, batches, cut);
}

#[test]
fn torn_batch_is_cut() {
    let dir = tempdir();
    let path = dir.path().join("p");
    let batches = populate(path.clone(), 120, true);
    let (seg, pos, size) = last_batch_pos(&path);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(pos + size / 3).unwrap(); // also invalidates the marker (size mismatch)
    let cut = batches.last().unwrap().0;
    verify(path, batches, cut);
}

#[test]
fn zero_filled_pages_are_cut() {
    let dir = tempdir();
    let path = dir.path().join("p");
    let batches = populate(path.clone(), 120, false);
    let (seg, pos, _) = last_batch_pos(&path);
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    // zero the last batch and extend the file with zero pages (as after a torn write)
    f.write_all_at(&vec![0u8; (len - pos) as usize + 8192], pos)
        .unwrap();
    let cut = batches.last().unwrap().0;
    verify(path, batches, cut);
}

#[test]
fn deleted_and_truncated_indexes_are_rebuilt() {
    let dir = tempdir();
    let path = dir.path().join("p");
    let batches = populate(path.clone(), 200, true);
    let idx = segments(&path, "index");
    let tidx = segments(&path, "timeindex");
    assert!(idx.len() >= 3, "expected several segments");
    std::fs::remove_file(&idx[0]).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tidx[1])
        .unwrap()
        .set_len(7)
        .unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&idx[1])
        .unwrap();
    f.write_all_at(&[0xff; 16], 0).unwrap(); // garbage entries
    std::fs::remove_file(idx.last().unwrap()).unwrap(); // active segment: marker no longer trusted
    let end = batches
        .last()
        .map(|(_, x)| RecordBatchHeader::parse(x).unwrap().last_offset() + 1)
        .unwrap();
    verify(path.clone(), batches, end);
    assert!(
        path.join(idx[0].file_name().unwrap()).exists(),
        "index rebuilt"
    );
}

#[test]
fn damaged_marker_forces_a_scan() {
    let dir = tempdir();
    let path = dir.path().join("p");
    let batches = populate(path.clone(), 30, true);
    let m = path.join(".clean_shutdown");
    let f = std::fs::OpenOptions::new().write(true).open(&m).unwrap();
    f.write_all_at(&[0x55], 9).unwrap();
    let (seg, pos, size) = last_batch_pos(&path);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[0x01], pos + size - 1).unwrap();
    let cut = batches.last().unwrap().0;
    verify(path, batches, cut);
}

#[test]
fn stale_segment_after_gap_is_dropped() {
    let dir = tempdir();
    let path = dir.path().join("p");
    let batches = populate(path.clone(), 200, false);
    let logs = segments(&path, "log");
    assert!(logs.len() >= 3);
    // damage the middle of the second-to-last segment and lose its time index (so it is
    // rescanned): it is cut there and every later segment is dropped
    let victim = &logs[logs.len() - 2];
    std::fs::remove_file(victim.with_extension("timeindex")).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(victim)
        .unwrap();
    f.write_all_at(&[0xEE; 4], 100).unwrap();
    let base: i64 = victim
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    verify(path.clone(), batches, base);
    assert_eq!(segments(&path, "log").len(), logs.len() - 1);
}
