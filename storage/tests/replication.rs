//! Replication groundwork of one log: leader epochs stamped by `append`, the leader-epoch
//! cache and its checkpoint across clean and kill-style reopens, `end_offset_for_epoch`,
//! `append_replicated` (byte-identical, rejections, producer state), and `truncate_from`
//! (inside a segment, at a segment boundary, across segments, with pending data, below
//! the log start, and crash states a truncation can leave behind).

mod common;
use bytes::{Bytes, BytesMut};
use common::{batch, pbatch, run, tempdir};
use sluice_proto::batch::{validate_batch, RecordBatchHeader};
use sluice_storage::*;
use std::path::{Path, PathBuf};

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1500,
        index_interval_bytes: 200,
        ..Default::default()
    }
}

fn header(b: &[u8]) -> RecordBatchHeader {
    RecordBatchHeader::parse(b).unwrap()
}

/// Every batch of the log, in order.
async fn all(log: &PartitionLog) -> Vec<Bytes> {
    let end = log.log_end_offset();
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < end {
        let bs = log.read(next, end, 1 << 20, true).await.unwrap();
        assert!(
            !bs.is_empty(),
            "read({next}) below the end {end} gave nothing"
        );
        for b in bs {
            let h = header(&b);
            assert_eq!(h.base_offset, next, "offsets not contiguous");
            next = h.last_offset() + 1;
            out.push(b);
        }
    }
    out
}

fn concat(bs: &[Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    for b in bs {
        out.extend_from_slice(b);
    }
    out.freeze()
}

/// `batch(n, ..)` as a leader stored it: base offset and partitionLeaderEpoch set (both
/// outside the CRC, so it stays valid).
fn rbatch(base: i64, n: usize, epoch: i32, tag: u8) -> Bytes {
    let mut v = batch(n, 20, 1000, tag).to_vec();
    v[0..8].copy_from_slice(&base.to_be_bytes());
    v[12..16].copy_from_slice(&epoch.to_be_bytes());
    Bytes::from(v)
}

/// The cache a log with these batches must have (Kafka's rule: the first offset of each
/// epoch; unstamped batches record nothing).
fn derive_epochs(batches: &[Bytes]) -> Vec<(i32, i64)> {
    let mut out: Vec<(i32, i64)> = Vec::new();
    for b in batches {
        let h = header(b);
        let e = h.partition_leader_epoch;
        if e < 0 || out.last().is_some_and(|&(le, _)| le == e) {
            continue;
        }
        while out
            .last()
            .is_some_and(|&(le, ls)| le >= e || ls >= h.base_offset)
        {
            out.pop();
        }
        out.push((e, h.base_offset));
    }
    out
}

/// (base, length) of every segment file on disk.
fn seg_files(dir: &Path) -> Vec<(i64, u64)> {
    let mut v: Vec<(i64, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let base = name.strip_suffix(".log")?.parse().ok()?;
            Some((base, e.metadata().ok()?.len()))
        })
        .collect();
    v.sort_unstable();
    v
}

fn checkpoint(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("leader-epoch-checkpoint")).ok()
}

fn checkpoint_text(entries: &[(i32, i64)]) -> String {
    let mut s = format!("0\n{}\n", entries.len());
    for (e, o) in entries {
        s.push_str(&format!("{e} {o}\n"));
    }
    s
}

/// The truncation intent file as `truncate_from` writes it (magic, cut, CRC-32C).
fn write_intent(dir: &Path, cut: i64) {
    let mut v = b"SLT1".to_vec();
    v.extend_from_slice(&cut.to_be_bytes());
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_be_bytes());
    std::fs::write(dir.join(".truncate-intent"), v).unwrap();
}

async fn open(shard: &std::rc::Rc<ShardStorage>, path: &Path, cfg: LogConfig) -> PartitionLog {
    PartitionLog::open(shard, path.to_path_buf(), cfg)
        .await
        .unwrap()
}

#[test]
fn epochs_are_stamped_and_cached_across_clean_and_kill_reopen() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    let p = path.clone();
    let (bytes1, end1) = run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &p, LogConfig::default()).await;
        // never set: the client's field is kept (build_batch writes -1), nothing recorded
        assert_eq!((log.leader_epoch(), log.latest_epoch()), (None, None));
        let a = log.append(batch(2, 10, 1000, 1), 1).unwrap();
        log.set_leader_epoch(3);
        assert_eq!(log.leader_epoch(), Some(3));
        let b = log.append(batch(3, 10, 1000, 2), 1).unwrap();
        let c = log.append(batch(1, 10, 1000, 3), 1).unwrap();
        log.set_leader_epoch(5);
        let d = log.append(batch(2, 10, 1000, 4), 1).unwrap();
        assert_eq!(
            log.epoch_entries(),
            vec![(3, b.base_offset), (5, d.base_offset)]
        );
        assert_eq!(log.latest_epoch(), Some(5));
        // an epoch older than the log's latest is fenced; nothing is written
        log.set_leader_epoch(4);
        assert!(matches!(
            log.append(batch(1, 10, 1000, 5), 1),
            Err(StorageError::StaleLeaderEpoch {
                epoch: 4,
                latest: 5
            })
        ));
        assert_eq!(log.log_end_offset(), d.last_offset + 1);
        // a negative epoch turns stamping off again
        log.set_leader_epoch(-1);
        assert_eq!(log.leader_epoch(), None);
        let e = log.append(batch(1, 10, 1000, 6), 1).unwrap();
        log.wait_durable(e.last_offset).await.unwrap();
        let stored = all(&log).await;
        let epochs: Vec<i32> = stored
            .iter()
            .map(|b| validate_batch(b).unwrap().partition_leader_epoch)
            .collect();
        assert_eq!(epochs, vec![-1, 3, 3, 5, -1]);
        assert_eq!(
            stored
                .iter()
                .map(|b| header(b).base_offset)
                .collect::<Vec<_>>(),
            vec![
                a.base_offset,
                b.base_offset,
                c.base_offset,
                d.base_offset,
                e.base_offset
            ]
        );
        assert_eq!(
            checkpoint(&p).unwrap(),
            checkpoint_text(&[(3, b.base_offset), (5, d.base_offset)])
        );
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
        (stored, e.last_offset + 1)
    });

    // clean reopen: same bytes and epochs; the epoch to stamp is not persisted
    let p = path.clone();
    let b1 = bytes1.clone();
    let f = run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &p, LogConfig::default()).await;
        assert_eq!(all(&log).await, b1);
        assert_eq!(log.epoch_entries(), derive_epochs(&b1));
        assert_eq!(log.leader_epoch(), None);
        log.set_leader_epoch(7);
        let f = log.append(batch(2, 10, 1000, 7), 1).unwrap();
        log.wait_durable(f.last_offset).await.unwrap();
        // the executor ends without close: no clean-shutdown marker
        f
    });
    assert_eq!(f.base_offset, end1);

    let p = path.clone();
    let g = run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &p, LogConfig::default()).await;
        let stored = all(&log).await;
        assert_eq!(&stored[..bytes1.len()], &bytes1[..]);
        assert_eq!(log.latest_epoch(), Some(7));
        assert_eq!(log.epoch_entries(), derive_epochs(&stored));
        assert_eq!(log.end_offset_for_epoch(5), Some((5, f.base_offset)));
        // appended, not waited for, executor ends: may or may not survive
        log.set_leader_epoch(8);
        log.append(batch(2, 10, 1000, 8), 1).unwrap()
    });

    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &path, LogConfig::default()).await;
        let stored = all(&log).await;
        let end = log.log_end_offset();
        assert!(
            end == g.base_offset || end == g.last_offset + 1,
            "end {end}"
        );
        assert_eq!(log.epoch_entries(), derive_epochs(&stored));
        assert_eq!(log.latest_epoch() == Some(8), end > g.base_offset);
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn end_offset_for_epoch_answers_like_kafka() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &path, LogConfig::default()).await;
        for e in [-1, 0, 5] {
            assert_eq!(log.end_offset_for_epoch(e), None, "empty log, epoch {e}");
        }
        // epochs 2 @ 0, 4 @ 10, 7 @ 25; log end 30
        let mut next = 0;
        for (epoch, n) in [(2, 4), (2, 6), (4, 5), (4, 10), (7, 5)] {
            log.append_replicated(rbatch(next, n, epoch, 1)).unwrap();
            next += n as i64;
        }
        assert_eq!(log.epoch_entries(), vec![(2, 0), (4, 10), (7, 25)]);
        for (requested, want) in [
            (-1, None),
            (0, Some((0, 0))), // below the first epoch: (requested, first start)
            (1, Some((1, 0))),
            (2, Some((2, 10))),
            (3, Some((2, 10))),
            (4, Some((4, 25))),
            (6, Some((4, 25))),
            (7, Some((7, 30))),  // the latest: the log end
            (12, Some((7, 30))), // above the latest
        ] {
            assert_eq!(
                log.end_offset_for_epoch(requested),
                want,
                "epoch {requested}"
            );
        }
        // the answer follows the log end, and truncation
        log.append_replicated(rbatch(30, 2, 7, 2)).unwrap();
        assert_eq!(log.end_offset_for_epoch(7), Some((7, 32)));
        assert_eq!(log.truncate_from(17).await.unwrap(), 15);
        assert_eq!(log.epoch_entries(), vec![(2, 0), (4, 10)]);
        for (requested, want) in [(3, Some((2, 10))), (4, Some((4, 15))), (7, Some((4, 15)))] {
            assert_eq!(
                log.end_offset_for_epoch(requested),
                want,
                "epoch {requested}"
            );
        }
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn replicated_batches_are_stored_byte_for_byte() {
    let dir = tempdir();
    let (lp, fp) = (dir.path().join("leader-0"), dir.path().join("follower-0"));
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let leader = open(&shard, &lp, small_segments()).await;
        let follower = open(&shard, &fp, small_segments()).await;
        let mut last = 0;
        let mut seq = 0;
        for i in 0..30u8 {
            if i % 10 == 0 {
                leader.set_leader_epoch(i as i32 / 10 + 1);
            }
            let b = if i % 4 == 0 {
                seq += 2;
                pbatch(9, 0, seq - 2, 2, i)
            } else {
                batch(1 + i as usize % 3, 60, 1000 + i as i64, i)
            };
            last = leader.append(b, 1).unwrap().last_offset;
        }
        leader.wait_durable(last).await.unwrap();
        let lb = all(&leader).await;
        // replicate in chunks of 1, 2, 3 batches
        let mut i = 0;
        let mut k = 1;
        while i < lb.len() {
            let chunk = &lb[i..(i + k).min(lb.len())];
            let info = follower.append_replicated(concat(chunk)).unwrap();
            let first = header(&chunk[0]);
            let lastb = header(chunk.last().unwrap());
            assert_eq!(
                (
                    info.base_offset,
                    info.last_offset,
                    info.log_append_time_ms,
                    info.duplicate
                ),
                (first.base_offset, lastb.last_offset(), -1, false)
            );
            i += chunk.len();
            k = k % 3 + 1;
        }
        assert!(shard.unflushed_bytes() > 0);
        follower
            .wait_durable(follower.log_end_offset() - 1)
            .await
            .unwrap();
        assert_eq!(shard.unflushed_bytes(), 0);
        assert_eq!(all(&follower).await, lb);
        assert_eq!(follower.epoch_entries(), leader.epoch_entries());
        assert_eq!(follower.epoch_entries(), derive_epochs(&lb));
        assert_eq!(follower.epoch_entries().len(), 3);
        for e in -1..5 {
            assert_eq!(
                follower.end_offset_for_epoch(e),
                leader.end_offset_for_epoch(e),
                "epoch {e}"
            );
        }
        assert!(
            seg_files(&fp).len() > 3,
            "the follower rolled its segments too"
        );

        // rejections write nothing
        let end = follower.log_end_offset();
        let check = |r: Result<AppendInfo, StorageError>, what: &str| {
            assert!(r.is_err(), "{what} was accepted");
            assert_eq!(follower.log_end_offset(), end, "{what} changed the log");
        };
        let r = follower.append_replicated(rbatch(end - 1, 1, 3, 0));
        assert!(matches!(
            r,
            Err(StorageError::UnexpectedAppendOffset { expected, got }) if expected == end && got == end - 1
        ));
        check(r, "a batch before the end");
        let overlap = concat(&[rbatch(end, 2, 3, 0), rbatch(end + 1, 1, 3, 0)]);
        let r = follower.append_replicated(overlap);
        assert!(matches!(
            r,
            Err(StorageError::UnexpectedAppendOffset { expected, got }) if expected == end + 2 && got == end + 1
        ));
        check(r, "an overlap");
        let mut bad = rbatch(end, 2, 3, 0).to_vec();
        let at = bad.len() - 3;
        bad[at] ^= 0x40;
        let r = follower.append_replicated(Bytes::from(bad.clone()));
        assert!(matches!(r, Err(StorageError::Corrupt(_))), "{r:?}");
        check(r, "a bad CRC");
        let r = follower.append_replicated(concat(&[rbatch(end, 1, 3, 0), Bytes::from(bad)]));
        check(r, "a good batch then a bad CRC");
        let whole = rbatch(end, 2, 3, 0);
        check(
            follower.append_replicated(whole.slice(..whole.len() - 1)),
            "a torn batch",
        );
        let mut magic = whole.to_vec();
        magic[16] = 1;
        check(follower.append_replicated(Bytes::from(magic)), "magic 1");
        check(follower.append_replicated(Bytes::new()), "nothing");
        assert!(follower
            .read(end, end + 10, 1 << 20, true)
            .await
            .unwrap()
            .is_empty());
        // and a good one still goes in
        follower.append_replicated(whole.clone()).unwrap();
        follower.wait_durable(end + 1).await.unwrap();

        // clean reopen keeps it all
        follower.close().await.unwrap();
        let follower = open(&shard, &fp, small_segments()).await;
        let mut want = lb.clone();
        want.push(whole);
        assert_eq!(all(&follower).await, want);
        assert_eq!(follower.epoch_entries(), derive_epochs(&want));
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn replicated_producer_state_catches_retries_after_failover() {
    let dir = tempdir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let leader = open(&shard, &path.join("l-0"), LogConfig::default()).await;
        leader.set_leader_epoch(1);
        leader.append(batch(2, 10, 1000, 1), 1).unwrap();
        leader.append(pbatch(7, 0, 0, 2, 2), 1).unwrap();
        let p2 = leader.append(pbatch(7, 0, 2, 3, 3), 1).unwrap();
        leader.wait_durable(p2.last_offset).await.unwrap();
        let data = concat(&all(&leader).await);
        // one follower had its producer state built before replicating, one had none
        for (name, preload) in [("f-0", true), ("f-1", false)] {
            let f = open(&shard, &path.join(name), LogConfig::default()).await;
            if preload {
                f.load_producer_state().await.unwrap();
                assert!(f.producer_state_loaded());
            }
            f.append_replicated(data.clone()).unwrap();
            // this follower takes over in epoch 2; the producer retries its last batch
            f.set_leader_epoch(2);
            let r = f.append(pbatch(7, 0, 2, 3, 3), 1).unwrap();
            assert!(r.duplicate, "{name}: retry not recognised");
            assert_eq!(
                (r.base_offset, r.last_offset),
                (p2.base_offset, p2.last_offset)
            );
            assert!(matches!(
                f.append(pbatch(7, 0, 9, 1, 4), 1),
                Err(StorageError::OutOfOrderSequence {
                    expected: 5,
                    got: 9,
                    ..
                })
            ));
            let n = f.append(pbatch(7, 0, 5, 1, 4), 1).unwrap();
            assert_eq!(n.base_offset, p2.last_offset + 1);
            assert_eq!(f.epoch_entries(), vec![(1, 0), (2, n.base_offset)]);
        }
        shard.shutdown().await.unwrap();
    });
}

/// A log of 30 batches over epochs 1, 2, 3 (10 batches each) in small segments, durable.
async fn filled(shard: &std::rc::Rc<ShardStorage>, path: &Path) -> (PartitionLog, Vec<Bytes>) {
    let log = open(shard, path, small_segments()).await;
    let mut last = 0;
    for i in 0..30u8 {
        if i % 10 == 0 {
            log.set_leader_epoch(i as i32 / 10 + 1);
        }
        last = log
            .append(batch(1 + i as usize % 3, 60, 1000 + i as i64, i), 1)
            .unwrap()
            .last_offset;
    }
    log.wait_durable(last).await.unwrap();
    let b = all(&log).await;
    (log, b)
}

/// The log holds exactly `want`: bytes, epochs, files (one per segment base, sized to its
/// batches), and every batch can be found from its offsets.
async fn check_log(log: &PartitionLog, dir: &Path, want: &[Bytes], ctx: &str) {
    let got = all(log).await;
    assert!(
        got == want,
        "{ctx}: log bytes differ ({} vs {} batches)",
        got.len(),
        want.len()
    );
    assert_eq!(log.epoch_entries(), derive_epochs(want), "{ctx}: epochs");
    for b in want {
        let h = header(b);
        for off in [h.base_offset, h.last_offset()] {
            let r = log.read(off, i64::MAX, 1, true).await.unwrap();
            assert_eq!(r.first(), Some(b), "{ctx}: read({off})");
        }
    }
    let files = seg_files(dir);
    for (i, &(base, len)) in files.iter().enumerate() {
        let hi = files.get(i + 1).map_or(i64::MAX, |f| f.0);
        let bytes: u64 = want
            .iter()
            .filter(|b| (base..hi).contains(&header(b).base_offset))
            .map(|b| b.len() as u64)
            .sum();
        assert!(
            len >= bytes,
            "{ctx}: segment {base} has {len} bytes, needs {bytes}"
        );
    }
}

#[test]
fn truncation_inside_a_segment_at_a_boundary_and_across_segments() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    let p = path.clone();
    let kept = run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let (log, orig) = filled(&shard, &p).await;
        let files = seg_files(&p);
        assert!(files.len() >= 5, "{files:?}");
        let bases: Vec<i64> = orig.iter().map(|b| header(b).base_offset).collect();

        // 1. inside a batch in the middle of the last-but-one segment
        let seg = files[files.len() - 2].0;
        let k = bases.iter().position(|&b| b > seg).unwrap();
        let b = header(&orig[k]);
        assert!(
            b.last_offset() > b.base_offset,
            "a batch of several records"
        );
        let cut = log.truncate_from(b.base_offset + 1).await.unwrap();
        assert_eq!(cut, b.base_offset);
        assert_eq!((log.log_end_offset(), log.durable_offset()), (cut, cut));
        let mut want = orig[..k].to_vec();
        check_log(&log, &p, &want, "inside a segment").await;
        let disk = seg_files(&p);
        assert_eq!(
            disk.last().map(|f| f.0),
            Some(seg),
            "later segments deleted"
        );
        let in_seg: u64 = want
            .iter()
            .filter(|x| header(x).base_offset >= seg)
            .map(|x| x.len() as u64)
            .sum();
        assert_eq!(
            disk.last().map(|f| f.1),
            Some(in_seg),
            "segment cut to its batches"
        );
        assert!(!p.join(".truncate-intent").exists());

        // 2. then append again (a new epoch) and cut exactly at a segment base
        log.set_leader_epoch(4);
        for i in 0..8u8 {
            let a = log.append(batch(2, 60, 2000, 100 + i), 1).unwrap();
            log.wait_durable(a.last_offset).await.unwrap();
        }
        want = all(&log).await;
        check_log(&log, &p, &want, "appended after the cut").await;
        let disk = seg_files(&p);
        let boundary = disk[disk.len() - 2].0;
        let k = want
            .iter()
            .position(|x| header(x).base_offset == boundary)
            .unwrap();
        assert_eq!(log.truncate_from(boundary).await.unwrap(), boundary);
        want.truncate(k);
        check_log(&log, &p, &want, "at a segment boundary").await;
        assert_eq!(
            seg_files(&p).last(),
            Some(&(boundary, 0)),
            "an empty active segment"
        );

        // 3. across several segments: into the second one
        let second = seg_files(&p)[1].0;
        let k = want
            .iter()
            .position(|x| header(x).base_offset > second)
            .unwrap();
        let cut_at = header(&want[k]).last_offset();
        assert_eq!(
            log.truncate_from(cut_at).await.unwrap(),
            header(&want[k]).base_offset
        );
        want.truncate(k);
        check_log(&log, &p, &want, "across segments").await;
        assert_eq!(seg_files(&p).len(), 2);
        assert_eq!(
            checkpoint(&p).unwrap(),
            checkpoint_text(&derive_epochs(&want)),
            "checkpoint rewritten"
        );

        // 4. append again, close, reopen
        log.set_leader_epoch(5);
        let mut last = 0;
        for i in 0..6u8 {
            last = log
                .append(batch(3, 60, 3000, 200 + i), 1)
                .unwrap()
                .last_offset;
        }
        log.wait_durable(last).await.unwrap();
        want = all(&log).await;
        log.close().await.unwrap();
        let log = open(&shard, &p, small_segments()).await;
        check_log(&log, &p, &want, "clean reopen").await;
        // one more cut, then end without close
        let k = want.len() - 4;
        log.truncate_from(header(&want[k]).base_offset)
            .await
            .unwrap();
        want.truncate(k);
        want
    });
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &path, small_segments()).await;
        check_log(&log, &path, &kept, "reopen without close").await;
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn truncation_of_pending_batches_and_edge_offsets() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &path, small_segments()).await;
        log.set_leader_epoch(1);
        let a = log.append(batch(2, 60, 1000, 1), 1).unwrap();
        log.wait_durable(a.last_offset).await.unwrap();
        log.set_leader_epoch(2);
        let b = log.append(batch(3, 60, 1000, 2), 1).unwrap();
        let c = log.append(batch(2, 60, 1000, 3), 1).unwrap();
        assert!(log.durable_offset() < log.log_end_offset(), "b, c pending");
        let waiter = {
            let log = log.clone();
            glommio::spawn_local(async move { log.wait_durable(c.last_offset).await }).detach()
        };
        // whether or not the flusher got to b and c first, the cut is the same
        assert_eq!(
            log.truncate_from(b.base_offset + 2).await.unwrap(),
            b.base_offset
        );
        assert_eq!(log.log_end_offset(), b.base_offset);
        assert!(waiter.await.is_some(), "the waiter finished");
        assert!(log.wait_durable(c.last_offset).await.is_err());
        assert_eq!(shard.unflushed_bytes(), 0);
        assert_eq!(log.epoch_entries(), vec![(1, 0)]);
        // appends go on at the cut, under the current epoch
        let d = log.append(batch(3, 60, 1000, 4), 1).unwrap();
        assert_eq!(d.base_offset, b.base_offset);
        assert_eq!(log.epoch_entries(), vec![(1, 0), (2, d.base_offset)]);

        // offsets at or past the end change nothing; negative ones are refused
        let end = log.log_end_offset();
        assert_eq!(log.truncate_from(end).await.unwrap(), end);
        assert_eq!(log.truncate_from(end + 100).await.unwrap(), end);
        assert!(matches!(
            log.truncate_from(-1).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // at the log start: the log empties and restarts there
        assert_eq!(log.truncate_from(0).await.unwrap(), 0);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
        assert_eq!((log.epoch_entries(), log.latest_epoch()), (vec![], None));
        assert_eq!(checkpoint(&path).unwrap(), "0\n0\n");

        // below the log start (retention moved it): restart at that offset
        log.set_leader_epoch(3);
        let mut last = 0;
        for i in 0..20u8 {
            last = log.append(batch(2, 60, 1000, i), 1).unwrap().last_offset;
        }
        log.wait_durable(last).await.unwrap();
        let mut cfg = small_segments();
        cfg.retention_bytes = 2000;
        cfg.retention_ms = -1;
        log.set_config(cfg);
        log.enforce_retention(i64::MAX / 2).await.unwrap();
        let start = log.log_start_offset();
        assert!(start > 5, "retention deleted segments (start {start})");
        assert_eq!(
            log.epoch_entries(),
            vec![(3, start)],
            "epoch entry folded into the start"
        );
        assert_eq!(log.truncate_from(start - 5).await.unwrap(), start - 5);
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (start - 5, start - 5)
        );
        assert_eq!(seg_files(&path), vec![(start - 5, 0)]);
        let e = log.append(batch(1, 60, 1000, 9), 1).unwrap();
        assert_eq!(e.base_offset, start - 5);
        log.wait_durable(e.last_offset).await.unwrap();
        log.close().await.unwrap();
        let log = open(&shard, &path, small_segments()).await;
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (start - 5, start - 4)
        );
        assert_eq!(log.epoch_entries(), vec![(3, start - 5)]);
        shard.shutdown().await.unwrap();
    });
}

/// Build a closed log of 30 batches in small segments; returns its batches.
fn closed_log(path: &Path) -> Vec<Bytes> {
    let p = path.to_path_buf();
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let (log, b) = filled(&shard, &p).await;
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
        b
    })
}

fn reopen_check(path: PathBuf, want: Vec<Bytes>, start: i64, ctx: &'static str) {
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &path, small_segments()).await;
        assert_eq!(log.log_start_offset(), start, "{ctx}: log start");
        check_log(&log, &path, &want, ctx).await;
        assert!(
            !path.join(".truncate-intent").exists(),
            "{ctx}: intent left"
        );
        assert_eq!(
            checkpoint(&path).unwrap_or_else(|| "0\n0\n".into()),
            checkpoint_text(&derive_epochs(&want)),
            "{ctx}: checkpoint"
        );
        // and it takes appends at the recovered end
        log.set_leader_epoch(9);
        let a = log.append(batch(1, 10, 1000, 0xEE), 1).unwrap();
        assert_eq!(a.base_offset, log.log_end_offset() - 1);
        log.wait_durable(a.last_offset).await.unwrap();
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn open_finishes_a_truncation_a_crash_interrupted() {
    let dir = tempdir();

    // intent durable, nothing else done yet
    let path = dir.path().join("t-0");
    let orig = closed_log(&path);
    let k = 13;
    write_intent(&path, header(&orig[k]).base_offset);
    reopen_check(path, orig[..k].to_vec(), 0, "intent only");

    // intent, later segments already deleted, the cut segment not yet shortened (and the
    // clean-shutdown marker gone, as truncation removes it first)
    let path = dir.path().join("t-1");
    let orig = closed_log(&path);
    let files = seg_files(&path);
    let seg = files[1].0;
    let k = orig
        .iter()
        .position(|b| header(b).base_offset > seg)
        .unwrap();
    write_intent(&path, header(&orig[k]).base_offset);
    std::fs::remove_file(path.join(".clean_shutdown")).unwrap();
    for &(base, _) in &files[2..] {
        std::fs::remove_file(path.join(format!("{base:020}.log"))).unwrap();
    }
    reopen_check(path, orig[..k].to_vec(), 0, "later segments deleted");

    // an unreadable intent is dropped: the log stays as recovered
    let path = dir.path().join("t-2");
    let orig = closed_log(&path);
    std::fs::write(path.join(".truncate-intent"), b"SLT1\0\0").unwrap();
    reopen_check(path, orig, 0, "torn intent");

    // an emptying truncation (below the start) that had removed every segment
    let path = dir.path().join("t-3");
    closed_log(&path);
    for (base, _) in seg_files(&path) {
        std::fs::remove_file(path.join(format!("{base:020}.log"))).unwrap();
    }
    write_intent(&path, 7);
    reopen_check(path, Vec::new(), 7, "emptied log");
}

/// Retention that expires the last segment (here a sealed one a truncation left last)
/// rolls to an empty segment at the log end: a clean reopen keeps that end (offsets are
/// never reused). Found by `log_matches_model` in CI.
#[test]
fn retention_of_the_active_segment_keeps_the_log_end_across_a_reopen() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions {
            cache_bytes: 0,
            max_open_files: 1,
            ..ShardStorageOptions::default()
        });
        let cfg = LogConfig {
            segment_bytes: 600,
            index_interval_bytes: 64,
            ..LogConfig::default()
        };
        let log = open(&shard, &path, cfg.clone()).await;
        // appended and cut before any flush
        log.append(batch(4, 0, 1000, 0), 1000).unwrap();
        log.append(batch(4, 102, 1000, 0), 1000).unwrap();
        assert_eq!(log.truncate_from(4).await.unwrap(), 4);
        log.set_config(LogConfig {
            retention_ms: 0,
            ..cfg.clone()
        });
        log.enforce_retention(5000).await.unwrap();
        assert_eq!(
            seg_files(&path),
            vec![(4, 0)],
            "the empty last segment has its file"
        );
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (4, 4));
        log.close().await.unwrap();
        let log = open(&shard, &path, cfg).await;
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (4, 4));
        shard.shutdown().await.unwrap();
    });
}

/// A follower whose log ends before its leader's log start restarts its log there
/// (Kafka's truncateFullyAndStartAt), copies on from the leader's first offset, and keeps
/// that across a kill-style reopen; a crash that left the old log (or a prefix) is a log
/// the follower can reset again.
#[test]
fn truncate_fully_and_start_at_beyond_the_end() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    let p = path.clone();
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let (log, _) = filled(&shard, &p).await;
        let end = log.log_end_offset();
        let at = end + 1_000;
        assert_eq!(log.truncate_fully_and_start_at(at).await.unwrap(), at);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (at, at));
        assert!(log.epoch_entries().is_empty());
        let a = log.append_replicated(rbatch(at, 3, 7, 0x51)).unwrap();
        assert_eq!((a.base_offset, a.last_offset), (at, at + 2));
        log.wait_durable(a.last_offset).await.unwrap();
        assert!(matches!(
            log.truncate_fully_and_start_at(-1).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // no close: a kill
        drop(log);
        shard.shutdown().await.unwrap();
    });
    let files = seg_files(&path);
    assert_eq!(files.len(), 1, "old segments left: {files:?}");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &path, small_segments()).await;
        let at = log.log_start_offset();
        assert_eq!(log.log_end_offset(), at + 3);
        assert_eq!(log.epoch_entries(), vec![(7, at)]);
        let bs = all(&log).await;
        assert_eq!(bs.len(), 1);
        assert_eq!(header(&bs[0]).base_offset, at);
        shard.shutdown().await.unwrap();
    });
}
