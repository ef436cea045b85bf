//! Compacted logs (`cleanup.policy` compact): the policy's effect on retention, the
//! produce-path key check, and the log cleaner.

mod common;
use common::{batch, kv_batch, records_of, run, tempdir, Rec};
use sluice_proto::batch::RecordBatchHeader;
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

/// Every batch of the log, in order (read from its start to its end).
async fn all_batches(log: &PartitionLog) -> Vec<bytes::Bytes> {
    let end = log.log_end_offset();
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < end {
        let got = log.read(next, end, 1 << 20, true).await.unwrap();
        if got.is_empty() {
            break;
        }
        for b in got {
            next = RecordBatchHeader::parse(&b).unwrap().last_offset() + 1;
            out.push(b);
        }
    }
    out
}

async fn all_records(log: &PartitionLog) -> Vec<Rec> {
    all_batches(log)
        .await
        .iter()
        .flat_map(|b| records_of(b))
        .collect()
}

fn compact_cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        cleanup_policy: CleanupPolicy::parse("compact").unwrap(),
        delete_retention_ms: 1000,
        ..Default::default()
    }
}

fn quiet_shard() -> ShardStorageOptions {
    ShardStorageOptions {
        cleaner_enabled: false,
        ..Default::default()
    }
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

/// Appends `n` single-record batches of keys `key-0..key-{keys}` from `*next`, durable.
async fn fill(log: &PartitionLog, next: &mut i64, n: i64, keys: i64) {
    for _ in 0..n {
        let i = *next;
        let k = format!("key-{}", i % keys).into_bytes();
        let v = format!("value-{i}").into_bytes();
        log.append(
            kv_batch(&[(&k, Some(&v))], 1000 + i, (i % 5) as u8, None),
            5000,
        )
        .unwrap();
        *next += 1;
    }
    log.wait_durable(*next - 1).await.unwrap();
}

/// The latest (offset, value) of every key among `recs`.
fn latest_of(recs: &[Rec]) -> BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    for r in recs {
        out.insert(r.2.clone().unwrap(), (r.0, r.3.clone()));
    }
    out
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
