//! A compacted log as its other users see it: readers while a swap happens (cold reads,
//! read-ahead windows, an open-file table too small to keep the files), reads by offset
//! and by timestamp across the gaps cleaning leaves, the idempotent-producer state after
//! cleaning (a retry is still a duplicate, after a reopen too), truncation of a cleaned
//! log, and what is never cleaned: the active segment and whatever lies at or above the
//! clean limit.

mod common;
use common::{
    all_batches, all_records, compact_cfg, fill, kv_batch, latest_of, quiet_shard, records_of,
    remove_snapshots, run, tempdir, Rec,
};
use sluice_proto::batch::RecordBatchHeader;
use sluice_storage::*;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// The bases of the segment files in `dir`.
fn segment_bases(dir: &std::path::Path) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_suffix(".log").and_then(|s| s.parse().ok())
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn readers_during_a_swap_get_the_old_or_the_new_records() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions {
            cleaner_enabled: false,
            cache_bytes: 0,
            max_open_files: 3, // files are evicted and reopened by name mid-swap
            ..Default::default()
        });
        let log = PartitionLog::open(&shard, path.clone(), compact_cfg())
            .await
            .unwrap();
        let mut next = 0;
        fill(&log, &mut next, 300, 8).await;
        log.compact(10_000).await.unwrap().expect("first pass");
        fill(&log, &mut next, 400, 8).await;
        let before: BTreeMap<i64, Rec> = all_records(&log)
            .await
            .into_iter()
            .map(|r| (r.0, r))
            .collect();
        let latest = latest_of(&before.values().cloned().collect::<Vec<_>>());
        let stop = Rc::new(Cell::new(false));
        let in_swap = Rc::new(Cell::new(0u32));
        let mut readers = Vec::new();
        for max_bytes in [200usize, 1500, 1 << 20] {
            let (log, stop, in_swap, before, latest) = (
                log.clone(),
                stop.clone(),
                in_swap.clone(),
                before.clone(),
                latest.clone(),
            );
            readers.push(glommio::spawn_local(async move {
                let mut rounds = 0u32;
                let mut during = 0u32;
                while !stop.get() {
                    let swapping = in_swap.get();
                    let end = log.log_end_offset();
                    let mut next = 0;
                    let mut got = Vec::new();
                    while next < end {
                        let batches = log.read(next, end, max_bytes, true).await.unwrap();
                        for b in batches {
                            let h = RecordBatchHeader::parse(&b).unwrap();
                            assert!(h.last_offset() >= next);
                            next = h.last_offset() + 1;
                            got.extend(records_of(&b));
                        }
                        glommio::yield_if_needed().await;
                    }
                    let mut prev = -1;
                    for r in &got {
                        assert!(r.0 > prev, "offsets out of order");
                        prev = r.0;
                        assert_eq!(Some(r), before.get(&r.0), "a record not in the log");
                    }
                    assert_eq!(latest_of(&got), latest);
                    rounds += 1;
                    if swapping > 0 && in_swap.get() > 0 {
                        during += 1;
                    }
                    glommio::timer::sleep(Duration::from_micros(200)).await;
                }
                (rounds, during)
            }));
        }
        let flag = in_swap.clone();
        let hook: CleanerHook = Rc::new(move |_, _| {
            let flag = flag.clone();
            Box::pin(async move {
                flag.set(flag.get() + 1);
                glommio::timer::sleep(Duration::from_millis(15)).await;
                true
            })
        });
        log.set_cleaner_hook(Some(hook));
        let p = log.compact(10_000).await.unwrap().expect("second pass");
        assert!(p.segments_after < p.segments_before, "{p:?}");
        in_swap.set(0);
        glommio::timer::sleep(Duration::from_millis(20)).await;
        stop.set(true);
        let mut during = 0;
        for r in readers {
            let (rounds, d) = r.await;
            assert!(rounds > 2);
            during += d;
        }
        assert!(during > 0, "no read ran inside the swap");
        // nothing stale is left in the cache, the windows or the file table
        let after = all_records(&log).await;
        log.close().await.unwrap();
        let log = PartitionLog::open(&shard, path.clone(), compact_cfg())
            .await
            .unwrap();
        assert_eq!(all_records(&log).await, after);
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn gaps_left_by_cleaning_are_read_by_offset_and_by_timestamp() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(quiet_shard());
        let log = PartitionLog::open(&shard, path.clone(), compact_cfg())
            .await
            .unwrap();
        // uncompressed records, timestamps rising with offsets; an idempotent producer
        // whose last batch loses all its records (an empty batch stays for it)
        let mut ts = 1000;
        let mut put = |log: &PartitionLog, recs: &[(&[u8], Option<&[u8]>)], p| {
            let info = log.append(kv_batch(recs, ts, 0, p), ts).unwrap();
            ts += recs.len() as i64;
            info
        };
        for i in 0..60 {
            let k = format!("k{}", i % 4).into_bytes();
            put(&log, &[(&k, Some(b"v"))], None);
        }
        let empty = put(
            &log,
            &[(b"k1", Some(b"p")), (b"k2", Some(b"p"))],
            Some((9, 0, 0)),
        );
        for i in 0..80 {
            let k = format!("k{}", i % 4).into_bytes();
            put(&log, &[(&k, Some(b"w")), (b"x", None)], None);
        }
        log.wait_durable(log.log_end_offset() - 1).await.unwrap();
        let p = log.compact(10_000).await.unwrap().expect("pass");
        let end = log.log_end_offset();
        for cold in [false, true] {
            if cold {
                log.close().await.unwrap();
            }
            let log = if cold {
                PartitionLog::open(&shard, path.clone(), compact_cfg())
                    .await
                    .unwrap()
            } else {
                log.clone()
            };
            let batches = all_batches(&log).await;
            let heads: Vec<RecordBatchHeader> = batches
                .iter()
                .map(|b| RecordBatchHeader::parse(b).unwrap())
                .collect();
            assert!(heads.len() < 100, "{} batches left", heads.len());
            let e = heads
                .iter()
                .find(|h| h.producer_id == 9)
                .expect("the producer's last batch");
            assert_eq!(
                (e.base_offset, e.last_offset(), e.records_count),
                (empty.base_offset, empty.last_offset, 0)
            );
            // by offset: the batch holding it, or the next one past a gap
            for o in 0..end {
                let got = log.read(o, end, 1, true).await.unwrap();
                let want = heads.iter().find(|h| h.last_offset() >= o);
                let got = got.first().map(|b| RecordBatchHeader::parse(b).unwrap());
                assert_eq!(
                    got.map(|h| h.base_offset),
                    want.map(|h| h.base_offset),
                    "offset {o}"
                );
            }
            // by timestamp: the first record at or after it (empty batches have none)
            let recs: Vec<Rec> = batches.iter().flat_map(|b| records_of(b)).collect();
            for t in 990..ts + 2 {
                let want = recs.iter().find(|r| r.1 >= t).map(|r| (r.0, r.1));
                assert_eq!(log.offset_for_timestamp(t).await.unwrap(), want, "ts {t}");
            }
        }
        assert!(p.clean_offset > empty.last_offset);
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn an_idempotent_retry_after_cleaning_is_still_a_duplicate() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    let cfg = LogConfig {
        segment_bytes: 4096,
        ..compact_cfg()
    };
    let pid = 77;
    let batch = move |seq: i32| {
        let k = [
            format!("p-{seq}").into_bytes(),
            format!("p-{}", seq + 1).into_bytes(),
        ];
        kv_batch(
            &[(&k[0], Some(b"v")), (&k[1], Some(b"v"))],
            1000,
            3,
            Some((pid, 0, seq)),
        )
    };
    let c = cfg.clone();
    let p = path.clone();
    let last = run(move || async move {
        let shard = ShardStorage::start(quiet_shard());
        let log = PartitionLog::open(&shard, p, c).await.unwrap();
        let mut infos = Vec::new();
        for i in 0..5 {
            infos.push(log.append(batch(2 * i), 1000).unwrap());
        }
        // every record of the producer is overwritten by another writer
        for k in 0..10 {
            let k = format!("p-{k}").into_bytes();
            log.append(kv_batch(&[(&k, Some(b"over"))], 1000, 0, None), 1000)
                .unwrap();
        }
        let mut next = log.log_end_offset();
        fill(&log, &mut next, 45, 1000).await; // rolls: the producer's batches are sealed
        let pass = log.compact(10_000).await.unwrap().expect("pass");
        assert!(pass.clean_offset > infos[4].last_offset);
        let heads: Vec<RecordBatchHeader> = all_batches(&log)
            .await
            .iter()
            .map(|b| RecordBatchHeader::parse(b).unwrap())
            .collect();
        let mine: Vec<&RecordBatchHeader> = heads.iter().filter(|h| h.producer_id == pid).collect();
        // only the last batch stays, empty, with its offsets and sequence
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(
            (
                mine[0].base_offset,
                mine[0].last_offset(),
                mine[0].base_sequence,
                mine[0].records_count
            ),
            (infos[4].base_offset, infos[4].last_offset, 8, 0)
        );
        // the producer state in memory still has all five
        let again = log.append(batch(8), 1000).unwrap();
        assert!(again.duplicate);
        assert_eq!(
            (again.base_offset, again.last_offset),
            (infos[4].base_offset, infos[4].last_offset)
        );
        let again = log.append(batch(6), 1000).unwrap();
        assert!(again.duplicate && again.base_offset == infos[3].base_offset);
        // a crash: no close
        infos[4]
    });
    // without producer-state snapshots (a log written before them) the state is rebuilt
    // from the log's tail: the empty batch must carry the producer's last sequence
    remove_snapshots(&path);
    run(move || async move {
        let shard = ShardStorage::start(quiet_shard());
        let log = PartitionLog::open(&shard, path.clone(), cfg.clone())
            .await
            .unwrap();
        log.load_producer_state().await.unwrap();
        // rebuilt from the log: the empty batch carries the producer's last sequence
        let again = log.append(batch(8), 1000).unwrap();
        assert!(again.duplicate);
        assert_eq!(
            (again.base_offset, again.last_offset),
            (last.base_offset, last.last_offset)
        );
        assert!(matches!(
            log.append(batch(6), 1000),
            Err(StorageError::OutOfOrderSequence {
                expected: 10,
                got: 6,
                ..
            })
        ));
        let new = log.append(batch(10), 1000).unwrap();
        assert!(!new.duplicate);
        // no longer the producer's last: the next pass drops the empty batch
        let mut next = log.log_end_offset();
        fill(&log, &mut next, 45, 1000).await;
        log.compact(20_000).await.unwrap().expect("pass");
        let heads: Vec<(i64, i64)> = all_batches(&log)
            .await
            .iter()
            .map(|b| RecordBatchHeader::parse(b).unwrap())
            .filter(|h| h.producer_id == pid)
            .map(|h| (h.base_offset, h.last_offset()))
            .collect();
        assert_eq!(heads, vec![(new.base_offset, new.last_offset)]);
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn truncating_a_cleaned_log_lowers_its_clean_point_durably() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    let p = path.clone();
    let (cut_end, kept) = run(move || async move {
        let shard = ShardStorage::start(quiet_shard());
        let log = PartitionLog::open(&shard, p, compact_cfg()).await.unwrap();
        let mut next = 0;
        fill(&log, &mut next, 100, 1000).await; // keys 6.. of these stay
        fill(&log, &mut next, 200, 6).await;
        let pass = log.compact(10_000).await.unwrap().expect("pass");
        let recs = all_records(&log).await;
        // a cut in a gap of the cleaned part: the end falls back to the batch before it
        let gap = (1..pass.clean_offset)
            .rev()
            .find(|o| recs.iter().all(|r| r.0 != *o) && recs.iter().any(|r| r.0 < *o))
            .expect("a gap");
        let end = log.truncate_from(gap).await.unwrap();
        assert!(end <= gap);
        let kept: Vec<Rec> = recs.into_iter().filter(|r| r.0 < end).collect();
        assert_eq!(all_records(&log).await, kept);
        assert!(log.clean_offset() <= end);
        // no close: the lowered checkpoint must already be on disk
        (end, kept)
    });
    run(move || async move {
        let shard = ShardStorage::start(quiet_shard());
        let log = PartitionLog::open(&shard, path.clone(), compact_cfg())
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), cut_end);
        assert!(log.clean_offset() <= cut_end);
        assert_eq!(all_records(&log).await, kept);
        // the log grows again from the cut and is cleaned from the right place
        let mut next = cut_end;
        fill(&log, &mut next, 200, 6).await;
        let before = all_records(&log).await;
        let pass = log.compact(20_000).await.unwrap().expect("pass");
        assert!(pass.first_dirty <= cut_end);
        let after = all_records(&log).await;
        assert_eq!(latest_of(&after), latest_of(&before));
        let clean: Vec<&Rec> = after.iter().filter(|r| r.0 < pass.clean_offset).collect();
        let keys: std::collections::BTreeSet<&Option<Vec<u8>>> =
            clean.iter().map(|r| &r.2).collect();
        assert_eq!(
            keys.len(),
            clean.len(),
            "one record per key below the clean point"
        );
        // a cut above the clean point leaves it alone
        let at = log.clean_offset();
        log.truncate_from(log.log_end_offset() - 3).await.unwrap();
        assert_eq!(log.clean_offset(), at);
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn the_active_segment_and_records_at_or_above_the_clean_limit_are_never_cleaned() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(quiet_shard());
        let log = PartitionLog::open(&shard, path.clone(), compact_cfg())
            .await
            .unwrap();
        let mut next = 0;
        fill(&log, &mut next, 300, 3).await;
        let bases = segment_bases(&path);
        let active = *bases.last().unwrap();
        assert!(bases.len() > 8);
        // a limit inside a sealed segment: that segment and everything after stay
        let seg = bases[5];
        log.set_clean_limit(seg + 3);
        let before = all_batches(&log).await;
        let pass = log.compact(10_000).await.unwrap().expect("pass");
        assert_eq!(pass.clean_offset, seg);
        let at_or_after = |v: &[bytes::Bytes]| -> Vec<bytes::Bytes> {
            v.iter()
                .filter(|b| RecordBatchHeader::parse(b).unwrap().base_offset >= seg)
                .cloned()
                .collect()
        };
        let after = all_batches(&log).await;
        assert_eq!(at_or_after(&after), at_or_after(&before), "byte for byte");
        assert!(after.len() < before.len());
        // no limit past the durable offset, and never the active segment
        log.set_clean_limit(i64::MAX);
        let pass = log.compact(10_000).await.unwrap().expect("pass");
        assert_eq!(pass.clean_offset, active);
        let recs = all_records(&log).await;
        let in_active = recs.iter().filter(|r| r.0 >= active).count() as i64;
        assert_eq!(
            in_active,
            next - active,
            "every record of the active segment"
        );
        assert!(log.compact(10_000).await.unwrap().is_none());
        // a limit below the clean point: nothing more to do
        log.set_clean_limit(1);
        assert!(log.compact(10_000).await.unwrap().is_none());
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn a_follower_copies_a_cleaned_leader_gaps_and_all() {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let shard = ShardStorage::start(quiet_shard());
        let leader = PartitionLog::open(&shard, root.join("l-0"), compact_cfg())
            .await
            .unwrap();
        let mut next = 0;
        fill(&leader, &mut next, 150, 7).await;
        leader
            .append(kv_batch(&[(b"p", Some(b"1"))], 1, 2, Some((5, 0, 0))), 1)
            .unwrap();
        next += 1;
        fill(&leader, &mut next, 150, 7).await;
        leader.compact(10_000).await.unwrap().expect("pass");
        let want = all_batches(&leader).await;
        // a new follower fetches from 0: each fetch answer starts with the batch holding
        // (or following) its log end
        let follower = PartitionLog::open(&shard, root.join("f-0"), compact_cfg())
            .await
            .unwrap();
        let end = leader.log_end_offset();
        while follower.log_end_offset() < end {
            let from = follower.log_end_offset();
            let got = leader.read(from, end, 1500, true).await.unwrap();
            let mut data = Vec::new();
            for b in &got {
                data.extend_from_slice(b);
            }
            follower.append_replicated(data.into()).unwrap();
        }
        follower.wait_durable(end - 1).await.unwrap();
        assert_eq!(all_batches(&follower).await, want);
        follower.close().await.unwrap();
        let follower = PartitionLog::open(&shard, root.join("f-0"), compact_cfg())
            .await
            .unwrap();
        assert_eq!(all_batches(&follower).await, want);
        assert_eq!(follower.log_end_offset(), end);
        shard.shutdown().await.unwrap();
    });
}
