//! ListOffsets by time and MAX_TIMESTAMP answers (`offset_for_timestamp`,
//! `offset_of_max_timestamp`) as Kafka's: the exact record inside compressed batches,
//! nothing below the log start, and the record that holds the largest timestamp.

mod common;
use bytes::Bytes;
use common::{run, tempdir};
use sluice_proto::batch::{build_compressed_batch, SimpleRecord};
use sluice_storage::*;

/// One batch (codec 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd) with a record per timestamp.
fn batch_at(timestamps: &[i64], codec: u8) -> Bytes {
    let vals: Vec<Vec<u8>> = (0..timestamps.len())
        .map(|i| format!("v{i}").into_bytes())
        .collect();
    let recs: Vec<SimpleRecord<'_>> = vals
        .iter()
        .zip(timestamps)
        .map(|(v, &timestamp)| SimpleRecord {
            key: None,
            value: Some(v),
            timestamp,
            headers: &[],
        })
        .collect();
    build_compressed_batch(0, &recs, codec).unwrap() // ok: test
}

#[test]
fn lookups_by_time_find_the_record_inside_every_codec() {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        for codec in 0..=4u8 {
            let log = PartitionLog::open(
                &shard,
                root.join(format!("t-{codec}")),
                LogConfig::default(),
            )
            .await
            .unwrap();
            // ten records a second apart, then a second batch
            let ts: Vec<i64> = (0..10).map(|i| 1_000_000 + i * 1000).collect();
            log.append(batch_at(&ts, codec), 1).unwrap();
            log.append(batch_at(&[2_000_000, 2_000_001], codec), 1)
                .unwrap();
            log.wait_durable(11).await.unwrap();
            let at = |t| log.offset_for_timestamp(t);
            assert_eq!(
                at(1_005_000).await.unwrap(),
                Some((5, 1_005_000)),
                "codec {codec}"
            );
            assert_eq!(
                at(1_004_500).await.unwrap(),
                Some((5, 1_005_000)),
                "codec {codec}"
            );
            assert_eq!(at(0).await.unwrap(), Some((0, 1_000_000)), "codec {codec}");
            assert_eq!(
                at(1_500_000).await.unwrap(),
                Some((10, 2_000_000)),
                "codec {codec}"
            );
            assert_eq!(at(3_000_000).await.unwrap(), None, "codec {codec}");
            // DeleteRecords put the start inside the first batch: nothing below it
            log.advance_log_start(7).await.unwrap();
            assert_eq!(at(0).await.unwrap(), Some((7, 1_007_000)), "codec {codec}");
            assert_eq!(
                at(1_003_000).await.unwrap(),
                Some((7, 1_007_000)),
                "codec {codec}"
            );
            assert_eq!(
                at(1_008_000).await.unwrap(),
                Some((8, 1_008_000)),
                "codec {codec}"
            );
            log.close().await.unwrap();
        }
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn max_timestamp_answers_the_record_that_has_it() {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        for codec in [0u8, 1, 4] {
            let path = root.join(format!("m-{codec}"));
            let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
                .await
                .unwrap();
            assert_eq!(log.offset_of_max_timestamp().await.unwrap(), None);
            log.append(batch_at(&[50, 60], codec), 1).unwrap();
            // the largest timestamp is the second record of the batch at 2..=6
            log.append(batch_at(&[100, 5000, 200, 300, 400], codec), 1)
                .unwrap();
            log.append(batch_at(&[900], codec), 1).unwrap();
            log.wait_durable(7).await.unwrap();
            assert_eq!(log.max_timestamp(), Some((5000, 6)));
            assert_eq!(
                log.offset_of_max_timestamp().await.unwrap(),
                Some((5000, 3))
            );
            // the same from disk after a reopen
            log.close().await.unwrap();
            let log = PartitionLog::open(&shard, path, LogConfig::default())
                .await
                .unwrap();
            assert_eq!(
                log.offset_of_max_timestamp().await.unwrap(),
                Some((5000, 3))
            );
            // a DeleteRecords past that batch (its segment still there): still an answer
            log.advance_log_start(7).await.unwrap();
            assert_eq!(
                log.offset_of_max_timestamp().await.unwrap(),
                Some((5000, 6))
            );
            log.close().await.unwrap();
        }
        // LogAppendTime: every record of a batch has its time, so its first record
        let config = LogConfig {
            log_append_time: true,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&shard, root.join("lat"), config)
            .await
            .unwrap();
        log.append(batch_at(&[1, 2, 3], 0), 7000).unwrap();
        log.append(batch_at(&[4, 5, 6], 1), 8000).unwrap();
        log.wait_durable(5).await.unwrap();
        assert_eq!(
            log.offset_of_max_timestamp().await.unwrap(),
            Some((8000, 3))
        );
        assert_eq!(
            log.offset_for_timestamp(7500).await.unwrap(),
            Some((3, 8000))
        );
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}

/// A client that leaves the batch header's maxTimestamp at -1 (sarama before 1.23, every
/// codec): the log writes the records' largest timestamp there with a valid CRC, as
/// Kafka's validator does, so the batch neither expires at the first retention pass nor
/// hides from lookups by time.
#[test]
fn a_header_without_max_timestamp_gets_the_records_largest() {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        for codec in 0..=4u8 {
            let cfg = LogConfig {
                retention_ms: 3_600_000,
                ..LogConfig::default()
            };
            let log = PartitionLog::open(&shard, root.join(format!("m-{codec}")), cfg)
                .await
                .unwrap();
            let mut sent = batch_at(&[5_000_000, 5_002_000, 5_001_000], codec).to_vec();
            assert!(sluice_proto::batch::set_max_timestamp(&mut sent, -1));
            log.append(Bytes::from(sent), 1).unwrap();
            log.wait_durable(2).await.unwrap();
            let stored = log.read(0, 3, 1 << 20, true).await.unwrap();
            let h = sluice_proto::batch::validate_batch(&stored[0]).unwrap();
            assert_eq!(h.max_timestamp, 5_002_000, "codec {codec}");
            assert_eq!(
                log.offset_for_timestamp(0).await.unwrap(),
                Some((0, 5_000_000)),
                "codec {codec}"
            );
            // within retention.ms of the records' time: kept (the active segment too)
            log.enforce_retention(5_002_000 + 60_000).await.unwrap();
            assert_eq!(log.log_start_offset(), 0, "codec {codec}");
            assert_eq!(log.log_end_offset(), 3, "codec {codec}");
            // a producer's LogAppendTime bit on this CreateTime log: stored CreateTime,
            // at the header's maxTimestamp (Kafka's validator)
            let mut lat = batch_at(&[6_000_000], codec).to_vec();
            sluice_proto::batch::set_log_append_time(&mut lat, 6_000_500);
            log.append(Bytes::from(lat), 1).unwrap();
            log.wait_durable(3).await.unwrap();
            let stored = log.read(3, 4, 1 << 20, true).await.unwrap();
            let h = sluice_proto::batch::validate_batch(&stored[0]).unwrap();
            assert!(!h.timestamp_type_log_append(), "codec {codec}");
            assert_eq!(h.max_timestamp, 6_000_500, "codec {codec}");
            log.close().await.unwrap();
        }
    });
}

/// The maximum in the first batch of a sealed segment, later batches older: the answer
/// is that record before and after a reopen, clean or not (a segment recovered from its
/// indexes knows its maximum but not where it is; it answered the segment's last offset).
/// Found by an exploratory run with confluent-kafka's MAX_TIMESTAMP offsets.
#[test]
fn max_timestamp_keeps_its_record_across_reopens() {
    let dir = tempdir();
    let path = dir.path().join("r-0");
    let cfg = LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..LogConfig::default()
    };
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path.clone(), cfg.clone())
            .await
            .unwrap();
        log.append(batch_at(&[9_000_000], 0), 1).unwrap();
        for i in 1..40i64 {
            log.append(common::batch(1, 60, 1_000_000 + i, i as u8), 1)
                .unwrap();
        }
        log.wait_durable(39).await.unwrap();
        let segments = std::fs::read_dir(&path)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("log".as_ref()))
            .count();
        assert!(segments >= 3, "{segments} segments");
        let want = Some((9_000_000, 0));
        assert_eq!(log.offset_of_max_timestamp().await.unwrap(), want);
        log.close().await.unwrap();
        let log = PartitionLog::open(&shard, path.clone(), cfg.clone())
            .await
            .unwrap();
        assert_eq!(log.offset_of_max_timestamp().await.unwrap(), want, "clean");
        drop(log);
        shard.shutdown().await.unwrap();
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path.clone(), cfg).await.unwrap();
        assert_eq!(
            log.offset_of_max_timestamp().await.unwrap(),
            want,
            "unclean"
        );
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}
