//! A log start moved inside a segment (DeleteRecords): reads below it are out of range,
//! it survives a reopen with and without a clean close, retention then deletes the
//! segments wholly below it (under either cleanup policy), truncations below it bring it
//! down with them, and an open transaction it passed holds back no offset below it.

mod common;
use common::{batch, quiet_shard, run, tempdir};
use sluice_proto::batch::RecordBatchHeader;
use sluice_storage::*;

fn cfg(policy: &str) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        cleanup_policy: CleanupPolicy::parse(policy).unwrap(),
        ..LogConfig::default()
    }
}

/// `n` batches of `records` records of `size` bytes each, durable.
async fn append_durable(log: &PartitionLog, n: u8, records: usize, size: usize) {
    for i in 0..n {
        let a = log
            .append(batch(records, size, 1000 + i64::from(i), i), 5000)
            .unwrap();
        log.wait_durable(a.last_offset).await.unwrap();
    }
}

/// 60 batches of 2 records (offsets 0..120), ~300 bytes each: several segments.
async fn fill(log: &PartitionLog) {
    append_durable(log, 60, 2, 100).await;
}

/// A shard without a background cleaner, and the log at `path` under `policy`.
async fn open(path: &std::path::Path, policy: &str) -> (std::rc::Rc<ShardStorage>, PartitionLog) {
    let shard = ShardStorage::start(quiet_shard());
    let log = PartitionLog::open(&shard, path.to_path_buf(), cfg(policy))
        .await
        .unwrap();
    (shard, log)
}

/// Stops as a crash would (no close, no clean-shutdown marker) and opens the log again.
async fn reopen_unclean(
    shard: std::rc::Rc<ShardStorage>,
    log: PartitionLog,
    path: &std::path::Path,
) -> (std::rc::Rc<ShardStorage>, PartitionLog) {
    drop(log);
    shard.shutdown().await.unwrap();
    open(path, "delete").await
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count()
}

fn first_base(r: &[bytes::Bytes]) -> i64 {
    RecordBatchHeader::parse(&r[0]).unwrap().base_offset
}

#[test]
fn reads_below_a_moved_log_start_are_out_of_range_and_it_survives_reopen() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (shard, log) = open(&path, "delete").await;
        fill(&log).await;
        let files = segment_files(&path);
        assert!(files >= 4, "{files} segments");
        // inside a batch (offsets 50, 51): the batch holding it is what a read returns
        assert_eq!(log.advance_log_start(51).await.unwrap(), 51);
        assert_eq!(log.log_start_offset(), 51);
        assert!(matches!(
            log.read(50, 120, 1 << 20, true).await,
            Err(StorageError::OffsetOutOfRange { log_start: 51, .. })
        ));
        assert_eq!(
            first_base(&log.read(51, 120, 1 << 20, true).await.unwrap()),
            50
        );
        // never down; past the end refused
        assert_eq!(log.advance_log_start(10).await.unwrap(), 51);
        assert!(matches!(
            log.advance_log_start(121).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // an appended record's answer carries the log start
        let a = log.append(batch(1, 10, 2000, 9), 5000).unwrap();
        assert_eq!((a.base_offset, a.log_start_offset), (120, 51));
        log.wait_durable(120).await.unwrap();
        // reopened without a close (as after kill -9: no marker), then with one
        let (shard, log) = reopen_unclean(shard, log, &path).await;
        assert_eq!(log.log_start_offset(), 51);
        assert!(log.read(49, 121, 1 << 20, true).await.is_err());
        log.close().await.unwrap();
        let log = PartitionLog::open(&shard, path.clone(), cfg("delete"))
            .await
            .unwrap();
        assert_eq!(log.log_start_offset(), 51);
        // the segments wholly below go (and nothing else: a retention.ms that every
        // record is past is not applied by this call)
        log.set_config(LogConfig {
            retention_ms: 1,
            ..cfg("delete")
        });
        let size = log.size_bytes();
        log.delete_segments_below_start().await.unwrap();
        assert_eq!(log.log_start_offset(), 51);
        assert!(log.size_bytes() < size);
        assert!(segment_files(&path) < files);
        assert_eq!(
            first_base(&log.read(51, 121, 1 << 20, true).await.unwrap()),
            50
        );
        log.set_config(cfg("delete"));
        // to the log end: nothing left to read, appends go on from there
        assert_eq!(log.advance_log_start(121).await.unwrap(), 121);
        assert_eq!(log.log_end_offset(), 121);
        let a = log.append(batch(1, 10, 3000, 1), 5000).unwrap();
        assert_eq!(a.base_offset, 121);
        log.wait_durable(121).await.unwrap();
        assert_eq!(
            first_base(&log.read(121, 122, 1 << 20, true).await.unwrap()),
            121
        );
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn a_compacted_log_loses_only_the_segments_below_its_start() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (shard, log) = open(&path, "compact").await;
        fill(&log).await;
        let files = segment_files(&path);
        log.enforce_retention(i64::MAX / 2).await.unwrap();
        assert_eq!(
            segment_files(&path),
            files,
            "compact only: retention keeps all"
        );
        log.advance_log_start(70).await.unwrap();
        log.enforce_retention(5000).await.unwrap();
        let left = segment_files(&path);
        assert!(left < files, "{left} of {files}");
        assert_eq!(log.log_start_offset(), 70);
        let r = log.read(70, 120, 1 << 20, true).await.unwrap();
        assert!(first_base(&r) <= 70);
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn a_truncation_below_the_log_start_brings_it_down() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (shard, log) = open(&path, "delete").await;
        fill(&log).await;
        log.advance_log_start(80).await.unwrap();
        // a follower cut back below its start empties the log and restarts it there
        log.truncate_to(40).await.unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (40, 40));
        append_durable(&log, 30, 2, 10).await;
        // the old start (80) must not come back once the log grows past it
        assert_eq!(log.log_start_offset(), 40);
        assert_eq!(
            first_base(&log.read(40, 100, 1 << 20, true).await.unwrap()),
            40
        );
        let (shard, log) = reopen_unclean(shard, log, &path).await;
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (40, 100));
        // a reset (truncate_fully_and_start_at) past the end keeps a lower start there
        log.advance_log_start(90).await.unwrap();
        log.truncate_fully_and_start_at(200).await.unwrap();
        assert_eq!(log.log_start_offset(), 200);
        log.close().await.unwrap();
        let log = PartitionLog::open(&shard, path, cfg("delete"))
            .await
            .unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (200, 200));
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn an_open_transaction_below_the_log_start_holds_back_only_what_is_readable() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (shard, log) = open(&path, "delete").await;
        // producer 7's transaction opens at 0 and stays open
        log.append(common::txn::tx_batch(7, 0, 0, &[1, 2], true), 5000)
            .unwrap();
        append_durable(&log, 4, 2, 10).await;
        assert_eq!(log.first_unstable_offset(), Some(0));
        assert_eq!(log.last_stable_offset(10), 0);
        log.advance_log_start(5).await.unwrap();
        assert_eq!(log.first_unstable_offset(), Some(5));
        assert_eq!(log.last_stable_offset(10), 5);
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn a_cut_inside_the_batch_holding_the_log_start_lowers_it_for_good() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (shard, log) = open(&path, "delete").await;
        // batches of 3: ..., [51, 53], [54, 56]
        append_durable(&log, 19, 3, 10).await;
        log.advance_log_start(52).await.unwrap();
        // 53 is past the start, but its batch begins at 51: the cut goes there
        log.truncate_to(53).await.unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (51, 51));
        append_durable(&log, 3, 3, 10).await;
        // records from 51 on are readable, also after a reopen without a close
        assert_eq!(log.log_start_offset(), 51);
        assert_eq!(
            first_base(&log.read(51, 60, 1 << 20, true).await.unwrap()),
            51
        );
        let (shard, log) = reopen_unclean(shard, log, &path).await;
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (51, 60));
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}

/// Retention never moves the log start past the high watermark the broker set (Kafka's
/// deletableSegments: a segment goes only if the high watermark is at or past its end):
/// records no follower has copied stay, and earliest never passes latest.
#[test]
fn retention_stops_at_the_high_watermark() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (shard, log) = open(&path, "delete").await;
        fill(&log).await;
        assert!(segment_files(&path) >= 4);
        // every record is past retention.ms; the followers have copied up to offset 40
        log.set_config(LogConfig {
            retention_ms: 1,
            ..cfg("delete")
        });
        log.set_clean_limit(40);
        log.enforce_retention(i64::MAX / 2).await.unwrap();
        let start = log.log_start_offset();
        assert!(start > 0, "the segments below 40 go");
        assert!(
            start <= 40,
            "the log start {start} passed the high watermark 40"
        );
        assert_eq!(log.log_end_offset(), 120);
        // retention.bytes as well
        log.set_config(LogConfig {
            retention_ms: -1,
            retention_bytes: 1,
            ..cfg("delete")
        });
        log.enforce_retention(i64::MAX / 2).await.unwrap();
        assert!(log.log_start_offset() <= 40);
        // the high watermark reaches the end: everything but the log end may go
        log.set_clean_limit(120);
        log.enforce_retention(i64::MAX / 2).await.unwrap();
        assert!(log.log_start_offset() > 40);
        assert_eq!(log.log_end_offset(), 120);
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}
