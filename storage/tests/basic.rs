//! End-to-end behaviour of one log: append/durable/read, reopen (clean and unclean),
//! roll, truncate, retention, offset_for_timestamp, typed errors, delete.

mod common;
use common::{batch, run, tempdir};
use sluice_proto::batch::RecordBatchHeader;
use sluice_storage::*;

fn bases(v: &[bytes::Bytes]) -> Vec<i64> {
    v.iter()
        .map(|b| RecordBatchHeader::parse(b).unwrap().base_offset)
        .collect()
}

#[test]
fn log_append_time_stamps_the_broker_clock() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let config = LogConfig {
            log_append_time: true,
            // a producer clock far off is not refused under LogAppendTime
            timestamp_after_max_ms: 10,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&shard, path.clone(), config.clone())
            .await
            .unwrap();
        let a = log.append(batch(3, 100, 9_000_000, 1), 5000).unwrap();
        assert_eq!(a.log_append_time_ms, 5000);
        log.wait_durable(2).await.unwrap();
        let check = |r: &[bytes::Bytes]| {
            let h = sluice_proto::batch::validate_batch(&r[0]).unwrap();
            assert!(h.timestamp_type_log_append());
            assert_eq!(h.max_timestamp, 5000);
        };
        check(&log.read(0, 3, 1 << 20, false).await.unwrap());
        assert_eq!(log.max_timestamp(), Some((5000, 2)));
        log.close().await.unwrap();
        let log = PartitionLog::open(&shard, path, config).await.unwrap();
        check(&log.read(0, 3, 1 << 20, false).await.unwrap());
        assert_eq!(
            log.offset_for_timestamp(4000).await.unwrap(),
            Some((0, 5000))
        );
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn append_durable_read_reopen() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
            .await
            .unwrap();
        assert_eq!(
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.durable_offset()
            ),
            (0, 0, 0)
        );
        let a = log.append(batch(3, 100, 1000, 1), 5000).unwrap();
        assert_eq!(
            (
                a.base_offset,
                a.last_offset,
                a.log_append_time_ms,
                a.log_start_offset
            ),
            (0, 2, -1, 0)
        );
        let b = log.append(batch(2, 5000, 2000, 2), 5001).unwrap();
        assert_eq!((b.base_offset, b.last_offset), (3, 4));
        log.wait_durable(4).await.unwrap();
        assert_eq!(log.durable_offset(), 5);
        let r = log.read(0, 5, 1 << 20, false).await.unwrap();
        assert_eq!(bases(&r), vec![0, 3]);
        let r = log.read(1, 5, 10, true).await.unwrap();
        assert_eq!(bases(&r), vec![0]);
        assert!(log.read(0, 5, 10, false).await.unwrap().is_empty());
        assert!(log.read(3, 3, 1 << 20, true).await.unwrap().is_empty());
        assert!(log.read(5, 10, 1 << 20, true).await.unwrap().is_empty());
        assert!(matches!(
            log.read(6, 10, 100, true).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.max_timestamp(), Some((2001, 4)));
        assert_eq!(
            log.offset_for_timestamp(1001).await.unwrap(),
            Some((1, 1001))
        );
        assert_eq!(
            log.offset_for_timestamp(1500).await.unwrap(),
            Some((3, 2000))
        );
        assert_eq!(log.offset_for_timestamp(3000).await.unwrap(), None);
        let before = log.read(0, 5, 1 << 20, false).await.unwrap();
        log.close().await.unwrap();
        assert!(matches!(
            log.append(batch(1, 1, 1, 1), 1),
            Err(StorageError::Closed)
        ));

        // clean reopen: same bytes, cold read from disk
        let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
            .await
            .unwrap();
        assert_eq!((log.log_end_offset(), log.durable_offset()), (5, 5));
        assert_eq!(log.max_timestamp(), Some((2001, 4)));
        let after = log.read(0, 5, 1 << 20, false).await.unwrap();
        assert_eq!(before, after);
        let c = log.append(batch(1, 10, 3000, 3), 6000).unwrap();
        assert_eq!(c.base_offset, 5);
        log.wait_durable(5).await.unwrap();
        // no close and no shutdown (shutdown would close the log and write its marker):
        // the old shard is abandoned as a crash would leave it, so the next open scans
        drop(log);
        drop(shard);
        assert!(!path.join(".clean_shutdown").exists());

        let shard = ShardStorage::start(ShardStorageOptions {
            cache_bytes: 0,
            ..Default::default()
        });
        let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 6);
        let r = log.read(0, 6, 1 << 20, false).await.unwrap();
        assert_eq!(bases(&r), vec![0, 3, 5]);
        assert_eq!(&r[..2], &after[..]);
        log.delete().await.unwrap();
        assert!(!path.exists());
        assert!(matches!(log.delete().await, Err(StorageError::Closed)));
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn invalid_input_is_typed_and_writes_nothing() {
    let dir = tempdir();
    let path = dir.path().join("t-1");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let cfg = LogConfig {
            max_message_bytes: 2000,
            ..Default::default()
        };
        let log = PartitionLog::open(&shard, path, cfg).await.unwrap();
        let good = batch(2, 10, 1, 1);
        let mut bad_crc = good.to_vec();
        let n = bad_crc.len();
        bad_crc[n - 1] ^= 1;
        let mut two = good.to_vec();
        two.extend_from_slice(&bad_crc);
        assert!(matches!(
            log.append(bytes::Bytes::from(two), 1),
            Err(StorageError::Corrupt(_))
        ));
        // an old magic is Kafka's InvalidRecordException, an unknown one its
        // CorruptRecordException
        let mut magic = good.to_vec();
        magic[16] = 1;
        assert!(matches!(
            log.append(magic.into(), 1),
            Err(StorageError::InvalidRecord(_))
        ));
        let mut magic = good.to_vec();
        magic[16] = 3;
        assert!(matches!(
            log.append(magic.into(), 1),
            Err(StorageError::Corrupt(_))
        ));
        assert!(matches!(
            log.append(bytes::Bytes::new(), 1),
            Err(StorageError::InvalidRecord(_))
        ));
        assert!(matches!(
            log.append(batch(0, 1, 1, 1), 1),
            Err(StorageError::InvalidRecord(_))
        ));
        assert!(matches!(
            log.append(batch(1, 3000, 1, 1), 1),
            Err(StorageError::MessageTooLarge { max: 2000, .. })
        ));
        // no whole batch: Kafka's "at least one record batch" (INVALID_RECORD)
        assert!(matches!(
            log.append(good.slice(..good.len() - 3), 1),
            Err(StorageError::InvalidRecord(_))
        ));
        assert_eq!(log.log_end_offset(), 0);
        assert_eq!(log.size_bytes(), 0);
        assert_eq!(log.append(good, 1).unwrap().base_offset, 0);
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn read_now_answers_from_memory_only_and_agrees_with_read() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
            .await
            .unwrap();
        log.append(batch(3, 100, 1, 1), 1).unwrap();
        log.append(batch(2, 100, 2, 1), 1).unwrap();
        // pending or cached: in memory, the same batches as `read`
        let now = log
            .read_now(0, 5, 1 << 20, false)
            .expect("in memory")
            .unwrap();
        assert_eq!(bases(&now), vec![0, 3]);
        assert_eq!(now, log.read(0, 5, 1 << 20, false).await.unwrap());
        // bounds as `read`: the max offset, then the byte budget (the first kept whole)
        assert_eq!(
            bases(&log.read_now(0, 3, 1 << 20, false).unwrap().unwrap()),
            vec![0]
        );
        assert_eq!(
            bases(&log.read_now(0, 5, 10, true).unwrap().unwrap()),
            vec![0]
        );
        assert!(log.read_now(0, 5, 10, false).unwrap().unwrap().is_empty());
        assert!(matches!(
            log.read_now(9, 10, 1 << 20, false),
            Some(Err(StorageError::OffsetOutOfRange { .. }))
        ));
        log.wait_durable(4).await.unwrap();
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
        // reopened with no cache: only the disk has the batches
        let shard2 = ShardStorage::start(ShardStorageOptions {
            cache_bytes: 0,
            ..Default::default()
        });
        let log = PartitionLog::open(&shard2, path, LogConfig::default())
            .await
            .unwrap();
        assert!(log.read_now(0, 5, 1 << 20, false).is_none());
        assert_eq!(
            bases(&log.read(0, 5, 1 << 20, false).await.unwrap()),
            vec![0, 3]
        );
        // at the log end nothing is left to read: an empty answer, at once
        assert!(log
            .read_now(5, 5, 1 << 20, false)
            .unwrap()
            .unwrap()
            .is_empty());
        log.close().await.unwrap();
        shard2.shutdown().await.unwrap();
    });
}
