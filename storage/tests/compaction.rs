//! Compacted logs (`cleanup.policy` compact): the policy's effect on retention, the
//! produce-path key check, and the log cleaner.

mod common;
use common::{
    all_records, batch, compact_cfg, fill, kv_batch, latest_of, quiet_shard, run, tempdir, Rec,
};
use sluice_storage::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

#[test]
fn time_and_size_retention_apply_only_with_the_delete_policy() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let cfg = LogConfig {
            segment_bytes: 1024,
            retention_ms: 10,
            retention_bytes: 0,
            cleanup_policy: CleanupPolicy::parse("compact").unwrap(),
            ..Default::default()
        };
        let log = PartitionLog::open(&shard, path.clone(), cfg.clone())
            .await
            .unwrap();
        for i in 0..6 {
            let info = log.append(batch(2, 300, 1000, i), 2000).unwrap();
            log.wait_durable(info.last_offset).await.unwrap();
        }
        let size = log.size_bytes();
        log.enforce_retention(1_000_000).await.unwrap();
        assert_eq!((log.log_start_offset(), log.size_bytes()), (0, size));
        log.set_config(LogConfig {
            cleanup_policy: CleanupPolicy::parse("compact,delete").unwrap(),
            ..cfg
        });
        log.enforce_retention(1_000_000).await.unwrap();
        assert_eq!(log.log_start_offset(), log.log_end_offset());
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn a_compacted_log_refuses_records_without_a_key_from_clients_only() {
    use sluice_proto::batch::{build_batch, SimpleRecord};
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let cfg = LogConfig {
            cleanup_policy: CleanupPolicy::parse("compact").unwrap(),
            ..Default::default()
        };
        let log = PartitionLog::open(&shard, path.clone(), cfg).await.unwrap();
        let rec = |key: Option<&'static [u8]>| SimpleRecord {
            key,
            value: Some(b"v"),
            timestamp: 1000,
            headers: &[],
        };
        let keyless = build_batch(0, &[rec(Some(b"a")), rec(None)]);
        assert!(matches!(
            log.append(keyless.clone(), 1000),
            Err(StorageError::RecordWithoutKey { index: 1 })
        ));
        assert_eq!(log.log_end_offset(), 0);
        log.append(build_batch(0, &[rec(Some(b"a"))]), 1000)
            .unwrap();
        // a follower stores what its leader accepted
        let mut replicated = keyless.to_vec();
        replicated[..8].copy_from_slice(&1i64.to_be_bytes());
        log.append_replicated(replicated.into()).unwrap();
        assert_eq!(log.log_end_offset(), 3);
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn a_pass_keeps_the_latest_record_of_every_key_at_its_offset() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(quiet_shard());
        let log = PartitionLog::open(&shard, path.clone(), compact_cfg())
            .await
            .unwrap();
        let mut latest: BTreeMap<Vec<u8>, (i64, Vec<u8>)> = BTreeMap::new();
        for i in 0..300i64 {
            let k = format!("k{}", i % 10).into_bytes();
            let v = format!("value-{i}").into_bytes();
            let info = log
                .append(
                    kv_batch(&[(&k, Some(&v))], 1000 + i, (i % 5) as u8, None),
                    5000,
                )
                .unwrap();
            latest.insert(k, (info.base_offset, v));
        }
        log.wait_durable(299).await.unwrap();
        let before = all_records(&log).await;
        let active_base = log.log_end_offset() - 1;
        let pass = log.compact(10_000).await.unwrap().expect("a pass");
        // full segments are rewritten one by one (Kafka groups by their size before)
        assert_eq!(pass.segments_after, pass.segments_before, "{pass:?}");
        assert!(pass.bytes_after * 10 < pass.bytes_before, "{pass:?}");
        assert!(pass.records_removed > 200, "{pass:?}");
        assert_eq!(log.clean_offset(), pass.clean_offset);
        let after = all_records(&log).await;
        // every surviving record is an original one, at its offset
        for r in &after {
            assert!(before.contains(r), "{r:?} was not in the log");
        }
        // below the clean offset: one record per key
        let clean: Vec<&Rec> = after.iter().filter(|r| r.0 < pass.clean_offset).collect();
        for r in &clean {
            let again = clean.iter().any(|x| x.2 == r.2 && x.0 > r.0);
            assert!(!again, "{r:?} is superseded below the clean offset");
        }
        assert_eq!(clean.len(), 10);
        // from the clean offset on: untouched
        let tail = |v: &[Rec]| -> Vec<Rec> {
            v.iter()
                .filter(|r| r.0 >= pass.clean_offset)
                .cloned()
                .collect()
        };
        assert_eq!(tail(&after), tail(&before));
        for (k, (o, v)) in &latest {
            assert!(after
                .iter()
                .any(|r| r.0 == *o && r.2.as_ref() == Some(k) && r.3.as_ref() == Some(v)));
        }
        assert!(after.iter().any(|r| r.0 >= active_base));
        // a second pass has nothing to do; a reopen reads the same
        assert!(log.compact(10_000).await.unwrap().is_none());
        let m = shard.metrics();
        assert_eq!(m.cleaner_passes, 1);
        assert_eq!(
            m.cleaner_bytes_reclaimed,
            pass.bytes_before - pass.bytes_after
        );
        assert_eq!(m.cleaner_records_removed, pass.records_removed);
        log.close().await.unwrap();
        let log = PartitionLog::open(&shard, path.clone(), compact_cfg())
            .await
            .unwrap();
        assert_eq!(all_records(&log).await, after);
        assert_eq!(log.clean_offset(), pass.clean_offset);
        // more of the same keys: the next pass merges the small cleaned segments
        for i in 300..400i64 {
            let k = format!("k{}", i % 10).into_bytes();
            log.append(kv_batch(&[(&k, Some(b"x"))], 1000 + i, 0, None), 5000)
                .unwrap();
        }
        log.wait_durable(399).await.unwrap();
        let second = log.compact(10_000).await.unwrap().expect("a pass");
        assert!(
            second.segments_after * 3 < second.segments_before,
            "{second:?}"
        );
        let recs = all_records(&log).await;
        let clean: Vec<&Rec> = recs.iter().filter(|r| r.0 < second.clean_offset).collect();
        assert!(clean.len() <= 10, "{clean:?}");
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn a_crash_at_any_step_of_a_swap_leaves_the_old_or_the_new_segments() {
    let steps = [
        SwapStep::Cleaned,
        SwapStep::HalfCommitted,
        SwapStep::Committed,
        SwapStep::Switched,
        SwapStep::HalfRemoved,
        SwapStep::Removed,
        SwapStep::HalfInstalled,
        SwapStep::Installed,
    ];
    for step in steps {
        let dir = tempdir();
        let path = dir.path().join("t-0");
        let p = path.clone();
        // session 1: a first pass shrinks the segments; more data; a second pass, whose
        // groups merge several small segments, stops at `step` as a crash would
        let (before, bound) = run(move || async move {
            let shard = ShardStorage::start(quiet_shard());
            let log = PartitionLog::open(&shard, p, compact_cfg()).await.unwrap();
            let mut next = 0;
            fill(&log, &mut next, 200, 8).await;
            log.compact(10_000).await.unwrap().expect("first pass");
            fill(&log, &mut next, 200, 8).await;
            let before = all_records(&log).await;
            let seen = Rc::new(RefCell::new(0i64));
            let s2 = seen.clone();
            let hook: CleanerHook = Rc::new(move |at, bound| {
                *s2.borrow_mut() = bound;
                Box::pin(async move { at != step })
            });
            log.set_cleaner_hook(Some(hook));
            assert!(log.compact(10_000).await.is_err(), "{step:?}");
            let bound = *seen.borrow();
            // no close, no shutdown: the files stay as the crash left them
            (before, bound)
        });
        let p = path.clone();
        run(move || async move {
            let shard = ShardStorage::start(quiet_shard());
            let log = PartitionLog::open(&shard, p.clone(), compact_cfg())
                .await
                .unwrap();
            let after = all_records(&log).await;
            let left: Vec<String> = std::fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
                .collect();
            assert!(left.is_empty(), "{step:?}: {left:?}");
            assert_eq!(latest_of(&after), latest_of(&before), "{step:?}");
            for r in &after {
                assert!(before.contains(r), "{step:?}: {r:?}");
            }
            if step >= SwapStep::Committed {
                // the swap was finished at open: below its end one record per key
                let clean = after.iter().filter(|r| r.0 < bound).count();
                assert_eq!(clean, 8, "{step:?}");
            } else {
                assert_eq!(after, before, "{step:?}: rolled back");
            }
            // the log goes on: another pass, appends, a clean reopen
            log.compact(10_000).await.unwrap();
            let mut next = log.log_end_offset();
            fill(&log, &mut next, 10, 8).await;
            let now = all_records(&log).await;
            log.close().await.unwrap();
            let log = PartitionLog::open(&shard, p, compact_cfg()).await.unwrap();
            assert_eq!(all_records(&log).await, now);
            shard.shutdown().await.unwrap();
        });
    }
}

/// A log with `key` records appended: (offset, value or tombstone), durable.
async fn put(log: &PartitionLog, key: &[u8], value: Option<&[u8]>, ts: i64) -> i64 {
    let info = log
        .append(kv_batch(&[(key, value)], ts, 0, None), ts)
        .unwrap();
    log.wait_durable(info.last_offset).await.unwrap();
    info.base_offset
}

#[test]
fn a_tombstone_stays_delete_retention_ms_after_the_first_pass_past_it() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(quiet_shard());
        let cfg = compact_cfg(); // delete.retention.ms 1000
        let log = PartitionLog::open(&shard, path.clone(), cfg.clone())
            .await
            .unwrap();
        put(&log, b"a", Some(b"1"), 1000).await;
        let tomb = put(&log, b"a", None, 1001).await;
        let b2 = put(&log, b"b", Some(b"2"), 1002).await;
        let mut next = log.log_end_offset();
        let has = |recs: &[Rec], o: i64| recs.iter().any(|r| r.0 == o);
        // the first pass past the tombstone is late: it still keeps it
        let t0 = 50_000_000;
        fill(&log, &mut next, 60, 3).await;
        let p = log.compact(t0).await.unwrap().expect("pass");
        assert!(p.clean_offset > tomb);
        let recs = all_records(&log).await;
        assert!(has(&recs, tomb) && has(&recs, b2) && !has(&recs, 0));
        fill(&log, &mut next, 60, 3).await;
        log.compact(t0 + 999).await.unwrap().expect("pass");
        assert!(has(&all_records(&log).await, tomb));
        // the first-clean time survives a reopen (the checkpoint file)
        log.close().await.unwrap();
        let log = PartitionLog::open(&shard, path.clone(), cfg.clone())
            .await
            .unwrap();
        fill(&log, &mut next, 60, 3).await;
        log.compact(t0 + 1000).await.unwrap().expect("pass");
        let recs = all_records(&log).await;
        assert!(!has(&recs, tomb) && has(&recs, b2), "{recs:?}");
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn a_full_offset_map_cleans_up_to_where_it_filled_and_later_passes_go_on() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions {
            cleaner_enabled: false,
            cleaner_dedupe_buffer_bytes: 24 * 64, // 57 keys
            ..Default::default()
        });
        let log = PartitionLog::open(&shard, path.clone(), compact_cfg())
            .await
            .unwrap();
        let mut next = 0;
        fill(&log, &mut next, 400, 150).await;
        let before = all_records(&log).await;
        let mut ends = Vec::new();
        while let Some(p) = log.compact(10_000).await.unwrap() {
            assert!(p.clean_offset > p.first_dirty, "{p:?}");
            ends.push(p.clean_offset);
            assert!(ends.len() < 20, "{ends:?}");
        }
        assert!(ends.len() >= 3, "the map held 57 of 150 keys: {ends:?}");
        let after = all_records(&log).await;
        assert_eq!(latest_of(&after), latest_of(&before));
        let clean: Vec<&Rec> = after.iter().filter(|r| r.0 < log.clean_offset()).collect();
        let keys: std::collections::BTreeSet<&Option<Vec<u8>>> =
            clean.iter().map(|r| &r.2).collect();
        assert_eq!(
            keys.len(),
            clean.len(),
            "one record per key below the clean offset"
        );
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn the_shard_cleans_the_dirtiest_due_log_and_honours_the_ratio_and_the_lags() {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let shard = ShardStorage::start(quiet_shard());
        let open = |name: &str, cfg: LogConfig| {
            let (shard, p) = (shard.clone(), root.join(name));
            async move { PartitionLog::open(&shard, p, cfg).await.unwrap() }
        };
        let a = open("a-0", compact_cfg()).await;
        let b = open(
            "b-0",
            LogConfig {
                max_compaction_lag_ms: 60_000,
                ..compact_cfg()
            },
        )
        .await;
        let c = open(
            "c-0",
            LogConfig {
                min_compaction_lag_ms: 50_000,
                ..compact_cfg()
            },
        )
        .await;
        let d = open("d-0", compact_cfg()).await;
        let (mut na, mut nb, mut nc) = (0, 0, 0);
        // a and b: 200 distinct keys, so what is clean stays big
        fill(&a, &mut na, 200, 200).await;
        fill(&b, &mut nb, 200, 200).await;
        fill(&c, &mut nc, 200, 5).await; // timestamps ~1000: older than any lag below
        let mut nd = 0;
        fill(&d, &mut nd, 3, 5).await; // never rolls: nothing cleanable
                                       // never cleaned: all dirty (ratio 1) in a, b and c
        let mut cleaned = Vec::new();
        while let Some(p) = shard.run_cleaner(20_000).await.unwrap() {
            cleaned.push(p.dir.file_name().unwrap().to_string_lossy().into_owned());
        }
        cleaned.sort();
        // c's segments have records newer than now - 50 s
        assert_eq!(cleaned, vec!["a-0", "b-0"]);
        assert_eq!(c.clean_offset(), 0);
        assert!(c.compact(20_000).await.unwrap().is_none());
        assert!(shard.run_cleaner(60_000).await.unwrap().is_some());
        assert!(c.clean_offset() > 0);
        // a little more in a and b: their ratio stays below 0.5 ...
        fill(&a, &mut na, 25, 200).await;
        fill(&b, &mut nb, 25, 200).await;
        assert!(shard.run_cleaner(60_000).await.unwrap().is_none());
        // ... until b's oldest dirty batch is older than its max.compaction.lag.ms
        let p = shard
            .run_cleaner(1000 + 225 + 60_001)
            .await
            .unwrap()
            .expect("b is due");
        assert_eq!(p.dir.file_name().unwrap(), "b-0");
        assert!(shard
            .run_cleaner(1000 + 225 + 60_001)
            .await
            .unwrap()
            .is_none());
        // much more in a: the dirtiest log goes first (b is overdue again, less dirty)
        fill(&a, &mut na, 300, 200).await;
        fill(&b, &mut nb, 30, 200).await;
        let p = shard.run_cleaner(70_000).await.unwrap().expect("a is due");
        assert_eq!(p.dir.file_name().unwrap(), "a-0");
        assert_eq!(d.clean_offset(), 0);
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn the_background_cleaner_compacts_a_dirty_log() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions {
            cleaner_backoff: std::time::Duration::from_millis(20),
            ..Default::default()
        });
        let log = PartitionLog::open(&shard, path.clone(), compact_cfg())
            .await
            .unwrap();
        let mut next = 0;
        fill(&log, &mut next, 300, 4).await;
        let size = log.size_bytes();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while shard.metrics().cleaner_passes == 0 {
            assert!(std::time::Instant::now() < deadline, "no pass within 10 s");
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(log.clean_offset() > 0);
        assert!(
            log.size_bytes() < size / 4,
            "{} of {size}",
            log.size_bytes()
        );
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn retention_and_the_cleaner_share_a_compact_delete_log() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(quiet_shard());
        let cfg = LogConfig {
            cleanup_policy: CleanupPolicy::parse("compact,delete").unwrap(),
            retention_ms: 100_000,
            ..compact_cfg()
        };
        let log = PartitionLog::open(&shard, path.clone(), cfg.clone())
            .await
            .unwrap();
        let mut next = 0;
        fill(&log, &mut next, 300, 6).await; // timestamps 1000..1300
        let p = log.compact(10_000).await.unwrap().expect("pass");
        // retention by time: segments whose newest record is older than now - 100 s go
        log.enforce_retention(1150 + 100_000).await.unwrap();
        let start = log.log_start_offset();
        assert!(
            start > 0 && start < p.clean_offset,
            "start {start}, clean {}",
            p.clean_offset
        );
        assert!(log.clean_offset() >= start);
        let recs = all_records(&log).await;
        assert!(recs.iter().all(|r| r.0 >= start && r.1 > 1150 - 200));
        fill(&log, &mut next, 100, 6).await;
        let q = log.compact(20_000).await.unwrap().expect("pass");
        assert_eq!(q.first_dirty, p.clean_offset);
        let after = all_records(&log).await;
        log.close().await.unwrap();
        let log = PartitionLog::open(&shard, path.clone(), cfg).await.unwrap();
        assert_eq!(all_records(&log).await, after);
        assert_eq!(log.log_start_offset(), start);
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn records_without_a_key_written_before_compaction_are_dropped_by_it() {
    use sluice_proto::batch::{build_batch, SimpleRecord};
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(quiet_shard());
        let delete = LogConfig {
            cleanup_policy: CleanupPolicy::default(),
            ..compact_cfg()
        };
        let log = PartitionLog::open(&shard, path.clone(), delete)
            .await
            .unwrap();
        let keyless = |ts| {
            build_batch(
                0,
                &[SimpleRecord {
                    key: None,
                    value: Some(b"no key"),
                    timestamp: ts,
                    headers: &[],
                }],
            )
        };
        for i in 0..30 {
            log.append(keyless(1000 + i), 1000).unwrap();
        }
        let mut next = 30;
        fill(&log, &mut next, 100, 100).await;
        assert!(
            log.compact(10_000).await.unwrap().is_none(),
            "not compacted yet"
        );
        log.set_config(compact_cfg());
        let p = log.compact(10_000).await.unwrap().expect("pass");
        assert_eq!(p.records_removed, 30);
        let recs = all_records(&log).await;
        assert!(recs.iter().all(|r| r.2.is_some()));
        assert_eq!(recs.len(), 100);
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn passes_asked_for_at_once_run_one_after_the_other() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions {
            cleaner_backoff: std::time::Duration::from_millis(1),
            ..Default::default()
        });
        let log = PartitionLog::open(&shard, path.clone(), compact_cfg())
            .await
            .unwrap();
        let mut next = 0;
        fill(&log, &mut next, 300, 4).await;
        let before = all_records(&log).await;
        // the background cleaner is after the same log
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let log = log.clone();
                glommio::spawn_local(async move { log.compact(10_000).await })
            })
            .collect();
        let mut passes = 0;
        for t in tasks {
            passes += usize::from(t.await.unwrap().is_some());
        }
        assert!(passes <= 1);
        assert!(log.clean_offset() > 0);
        assert_eq!(latest_of(&all_records(&log).await), latest_of(&before));
        assert!(log.compact(10_000).await.unwrap().is_none());
        shard.shutdown().await.unwrap();
    });
}
