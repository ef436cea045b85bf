//! Idempotent producers: duplicate retries answer with the original offsets and are stored
//! once, sequence gaps and fenced epochs are rejected with nothing written, multi-batch
//! requests are checked against the state as it evolves, and the state survives clean and
//! unclean reopen, segment rolls and truncation.

mod common;
use bytes::Bytes;
use common::{batch, pbatch, remove_snapshots, run, tempdir};
use sluice_proto::batch::RecordBatchHeader;
use sluice_storage::*;

fn concat(parts: &[Bytes]) -> Bytes {
    parts.iter().flat_map(|b| b.iter().copied()).collect()
}

fn offsets(a: &AppendInfo) -> (i64, i64, bool) {
    (a.base_offset, a.last_offset, a.duplicate)
}

/// (base offset, producer id, base sequence) of every batch in the log.
async fn contents(log: &PartitionLog) -> Vec<(i64, i64, i32)> {
    let end = log.log_end_offset();
    let start = log.log_start_offset();
    log.read(start, end, usize::MAX, true)
        .await
        .unwrap()
        .iter()
        .map(|b| {
            let h = RecordBatchHeader::parse(b).unwrap();
            (h.base_offset, h.producer_id, h.base_sequence)
        })
        .collect()
}

async fn open(shard: &std::rc::Rc<ShardStorage>, path: &std::path::Path) -> PartitionLog {
    PartitionLog::open(shard, path.to_path_buf(), LogConfig::default())
        .await
        .unwrap()
}

#[test]
fn duplicate_retry_returns_original_offsets_and_is_stored_once() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &path).await;
        let a = log.append(pbatch(1, 0, 0, 3, 1), 10).unwrap();
        assert_eq!(offsets(&a), (0, 2, false));
        assert_eq!(a.log_append_time_ms, -1);
        log.append(batch(1, 10, 1, 9), 11).unwrap(); // a plain producer in between
        let b = log.append(pbatch(1, 0, 3, 2, 2), 12).unwrap();
        assert_eq!(offsets(&b), (4, 5, false));
        let size = log.size_bytes();
        // retries of both batches, before and after they are durable
        let r = log.append(pbatch(1, 0, 0, 3, 1), 13).unwrap();
        assert_eq!(offsets(&r), (0, 2, true));
        assert_eq!(r.log_append_time_ms, -1);
        log.wait_durable(5).await.unwrap();
        let r = log.append(pbatch(1, 0, 3, 2, 2), 14).unwrap();
        assert_eq!(offsets(&r), (4, 5, true));
        assert_eq!((log.log_end_offset(), log.size_bytes()), (6, size));
        assert_eq!(
            contents(&log).await,
            vec![(0, 1, 0), (3, -1, -1), (4, 1, 3)]
        );
        // the producer continues normally
        let c = log.append(pbatch(1, 0, 5, 1, 3), 15).unwrap();
        assert_eq!(offsets(&c), (6, 6, false));
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn sequence_gap_and_old_epoch_are_rejected_and_write_nothing() {
    let dir = tempdir();
    let path = dir.path().join("t-1");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &path).await;
        log.append(pbatch(7, 3, 0, 2, 1), 1).unwrap();
        let size = log.size_bytes();
        let e = log.append(pbatch(7, 3, 5, 1, 2), 1).unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::OutOfOrderSequence {
                    producer_id: 7,
                    expected: 2,
                    got: 5
                }
            ),
            "{e:?}"
        );
        // a sequence going backwards that is not one of the cached batches
        let e = log.append(pbatch(7, 3, 1, 1, 2), 1).unwrap_err();
        assert!(
            matches!(e, StorageError::OutOfOrderSequence { .. }),
            "{e:?}"
        );
        let e = log.append(pbatch(7, 2, 2, 1, 2), 1).unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::InvalidProducerEpoch {
                    producer_id: 7,
                    current: 3,
                    got: 2
                }
            ),
            "{e:?}"
        );
        assert_eq!((log.log_end_offset(), log.size_bytes()), (2, size));
        assert_eq!(log.append(pbatch(7, 3, 2, 1, 2), 1).unwrap().base_offset, 2);
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn epoch_bump_needs_sequence_zero_and_fences_the_old_epoch() {
    let dir = tempdir();
    let path = dir.path().join("t-2");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &path).await;
        log.append(pbatch(3, 0, 0, 4, 1), 1).unwrap();
        let e = log.append(pbatch(3, 1, 4, 1, 2), 1).unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::OutOfOrderSequence {
                    expected: 0,
                    got: 4,
                    ..
                }
            ),
            "{e:?}"
        );
        let a = log.append(pbatch(3, 1, 0, 1, 2), 1).unwrap();
        assert_eq!(offsets(&a), (4, 4, false));
        // a late retry from the old epoch is fenced, not treated as a duplicate
        let e = log.append(pbatch(3, 0, 0, 4, 1), 1).unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::InvalidProducerEpoch {
                    current: 1,
                    got: 0,
                    ..
                }
            ),
            "{e:?}"
        );
        // an unknown producer id starts at any sequence (Kafka >= 2.5 semantics)
        assert_eq!(
            offsets(&log.append(pbatch(9, 0, 42, 1, 3), 1).unwrap()),
            (5, 5, false)
        );
        let e = log.append(pbatch(9, 0, 44, 1, 3), 1).unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::OutOfOrderSequence {
                    expected: 43,
                    got: 44,
                    ..
                }
            ),
            "{e:?}"
        );
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn multi_batch_requests_are_checked_in_order_and_all_or_nothing() {
    let dir = tempdir();
    let path = dir.path().join("t-3");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &path).await;
        // two producers interleaved, each batch following the previous one of the request
        let req = concat(&[
            pbatch(1, 0, 0, 2, 1),
            pbatch(2, 0, 0, 1, 2),
            pbatch(1, 0, 2, 3, 3),
            batch(1, 5, 1, 4),
        ]);
        let a = log.append(req, 1).unwrap();
        assert_eq!(offsets(&a), (0, 6, false));
        let size = log.size_bytes();
        // a gap in the second batch rejects the valid first one too
        let req = concat(&[pbatch(1, 0, 5, 1, 5), pbatch(1, 0, 7, 1, 6)]);
        let e = log.append(req, 1).unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::OutOfOrderSequence {
                    producer_id: 1,
                    expected: 6,
                    got: 7
                }
            ),
            "{e:?}"
        );
        // a duplicate mixed with a new batch is rejected (documented choice)
        let req = concat(&[pbatch(2, 0, 0, 1, 2), pbatch(2, 0, 1, 1, 7)]);
        assert!(matches!(
            log.append(req, 1),
            Err(StorageError::OutOfOrderSequence { producer_id: 2, .. })
        ));
        // the same batch twice in one request: the second is a duplicate of the first
        let req = concat(&[pbatch(2, 0, 1, 1, 7), pbatch(2, 0, 1, 1, 7)]);
        assert!(matches!(
            log.append(req, 1),
            Err(StorageError::OutOfOrderSequence {
                producer_id: 2,
                expected: 2,
                got: 1
            })
        ));
        assert_eq!((log.log_end_offset(), log.size_bytes()), (7, size));
        // nothing of the rejected requests reached the state either
        let a = log.append(pbatch(1, 0, 5, 1, 5), 1).unwrap();
        assert_eq!(offsets(&a), (7, 7, false));
        let a = log.append(pbatch(2, 0, 1, 1, 7), 1).unwrap();
        assert_eq!(offsets(&a), (8, 8, false));
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn state_survives_clean_and_unclean_reopen() {
    let dir = tempdir();
    let path = dir.path().join("t-4");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &path).await;
        for i in 0..7 {
            log.append(pbatch(5, 2, i * 2, 2, i as u8), 1).unwrap();
        }
        log.close().await.unwrap();

        let log = open(&shard, &path).await;
        log.load_producer_state().await.unwrap();
        // the last 5 batches (seq 4..13) are known again, older ones are not
        let r = log.append(pbatch(5, 2, 4, 2, 2), 1).unwrap();
        assert_eq!(offsets(&r), (4, 5, true));
        assert!(matches!(
            log.append(pbatch(5, 2, 2, 2, 1), 1),
            Err(StorageError::OutOfOrderSequence { expected: 14, .. })
        ));
        assert!(matches!(
            log.append(pbatch(5, 1, 14, 1, 1), 1),
            Err(StorageError::InvalidProducerEpoch { current: 2, .. })
        ));
        let a = log.append(pbatch(5, 2, 14, 1, 7), 1).unwrap();
        assert_eq!(offsets(&a), (14, 14, false));
        log.wait_durable(14).await.unwrap();
        // crash: abandon the shard without closing the log (no clean-shutdown marker)
        drop(log);
        drop(shard);
        assert!(!path.join(".clean_shutdown").exists());

        let shard = ShardStorage::start(ShardStorageOptions {
            cache_bytes: 0,
            ..Default::default()
        });
        let log = open(&shard, &path).await;
        log.load_producer_state().await.unwrap();
        let r = log.append(pbatch(5, 2, 14, 1, 7), 1).unwrap();
        assert_eq!(offsets(&r), (14, 14, true));
        let r = log.append(pbatch(5, 2, 12, 2, 6), 1).unwrap();
        assert_eq!(offsets(&r), (12, 13, true));
        assert_eq!(log.log_end_offset(), 15);
        let a = log.append(pbatch(5, 2, 15, 1, 8), 1).unwrap();
        assert_eq!(offsets(&a), (15, 15, false));
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn state_is_rebuilt_across_segments() {
    let dir = tempdir();
    let path = dir.path().join("t-5");
    run(move || async move {
        let cfg = LogConfig {
            segment_bytes: 1, // every batch rolls a new segment
            ..Default::default()
        };
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path.clone(), cfg.clone())
            .await
            .unwrap();
        log.append(pbatch(1, 0, 0, 1, 1), 1).unwrap(); // segment 0: producer 1 only
        for i in 0..3 {
            log.append(pbatch(2, 0, i, 1, 2), 1).unwrap(); // segments 1..3
        }
        log.append(pbatch(1, 0, 1, 1, 1), 1).unwrap(); // segment 4
        log.close().await.unwrap();

        let log = PartitionLog::open(&shard, path.clone(), cfg).await.unwrap();
        log.load_producer_state().await.unwrap();
        // rebuilt from the snapshots written at roll and close: both producers are known
        let r = log.append(pbatch(2, 0, 2, 1, 2), 1).unwrap();
        assert_eq!(offsets(&r), (3, 3, true));
        let r = log.append(pbatch(1, 0, 1, 1, 1), 1).unwrap();
        assert_eq!(offsets(&r), (4, 4, true));
        assert!(matches!(
            log.append(pbatch(2, 0, 4, 1, 2), 1),
            Err(StorageError::OutOfOrderSequence { expected: 3, .. })
        ));
        assert_eq!(log.log_end_offset(), 5);
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn truncate_then_retry_appends_again() {
    let dir = tempdir();
    let path = dir.path().join("t-6");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = open(&shard, &path).await;
        log.append(pbatch(4, 0, 0, 2, 1), 1).unwrap();
        log.append(pbatch(4, 0, 2, 2, 2), 1).unwrap();
        log.append(pbatch(4, 0, 4, 1, 3), 1).unwrap();
        log.wait_durable(4).await.unwrap();
        log.truncate_to(2).await.unwrap();
        assert_eq!(log.log_end_offset(), 2);
        log.load_producer_state().await.unwrap();
        // the truncated batches are new again; the surviving one is still a duplicate
        let r = log.append(pbatch(4, 0, 0, 2, 1), 1).unwrap();
        assert_eq!(offsets(&r), (0, 1, true));
        assert!(matches!(
            log.append(pbatch(4, 0, 4, 1, 3), 1),
            Err(StorageError::OutOfOrderSequence {
                expected: 2,
                got: 4,
                ..
            })
        ));
        let a = log.append(pbatch(4, 0, 2, 2, 2), 1).unwrap();
        assert_eq!(offsets(&a), (2, 3, false));
        let a = log.append(pbatch(4, 0, 4, 1, 3), 1).unwrap();
        assert_eq!(offsets(&a), (4, 4, false));
        let r = log.append(pbatch(4, 0, 2, 2, 2), 1).unwrap();
        assert_eq!(offsets(&r), (2, 3, true));
        assert_eq!(contents(&log).await, vec![(0, 4, 0), (2, 4, 2), (4, 4, 4)]);
        // truncating everything forgets the producer: it may start anywhere
        log.truncate_to(0).await.unwrap();
        log.load_producer_state().await.unwrap();
        let a = log.append(pbatch(4, 0, 4, 1, 3), 1).unwrap();
        assert_eq!(offsets(&a), (0, 0, false));
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn without_a_snapshot_the_rebuild_reads_the_whole_log() {
    let dir = tempdir();
    let path = dir.path().join("t-7");
    run(move || async move {
        let cfg = LogConfig {
            index_interval_bytes: 1, // an index entry at every batch
            ..Default::default()
        };
        let big = |pid, seq, tag| {
            let b = pbatch(pid, 0, seq, 1, tag);
            let mut v = batch(1, 1000, 1000, tag).to_vec();
            v[43..57].copy_from_slice(&b[43..57]);
            let crc = crc32c::crc32c(&v[21..]);
            v[17..21].copy_from_slice(&crc.to_be_bytes());
            Bytes::from(v)
        };
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path.clone(), cfg.clone())
            .await
            .unwrap();
        log.append(big(1, 0, 1), 1).unwrap();
        for seq in 0..10 {
            log.append(big(2, seq, 2), 1).unwrap();
        }
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
        // no snapshot (as after a crash of a log that never rolled a segment)
        remove_snapshots(&path);

        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path.clone(), cfg.clone())
            .await
            .unwrap();
        log.load_producer_state().await.unwrap();
        // producer 2's last five batches are remembered, as Kafka remembers them
        assert_eq!(
            offsets(&log.append(big(2, 9, 2), 1).unwrap()),
            (10, 10, true)
        );
        assert_eq!(offsets(&log.append(big(2, 7, 2), 1).unwrap()), (8, 8, true));
        assert!(matches!(
            log.append(big(2, 4, 2), 1),
            Err(StorageError::OutOfOrderSequence {
                expected: 10,
                got: 4,
                ..
            })
        ));
        // producer 1, whose only batch opens the log, is known: its retry is a duplicate
        assert_eq!(offsets(&log.append(big(1, 0, 1), 1).unwrap()), (0, 0, true));
        assert_eq!(log.log_end_offset(), 11);
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn appends_never_read_the_log_and_the_async_load_builds_the_state() {
    let dir = tempdir();
    let path = dir.path().join("t-8");
    run(move || async move {
        let cfg = LogConfig {
            segment_bytes: 4000, // a few batches per segment: the state spans two
            ..Default::default()
        };
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path.clone(), cfg.clone())
            .await
            .unwrap();
        assert!(
            log.producer_state_loaded(),
            "a new, empty log knows its (empty) state without a load"
        );
        log.append(batch(2, 10, 1, 1), 1).unwrap();
        for i in 0..12 {
            log.append(pbatch(6, 1, i * 3, 3, i as u8), 1).unwrap();
        }
        log.wait_durable(log.log_end_offset() - 1).await.unwrap();
        drop(log); // unclean: no close
        drop(shard);

        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path.clone(), cfg).await.unwrap();
        assert!(
            !log.producer_state_loaded(),
            "open does not build the state"
        );
        log.append(batch(1, 10, 1, 1), 1).unwrap();
        assert!(!log.producer_state_loaded(), "plain appends stay lazy");
        // an idempotent append needs the state: refused, nothing written, no read
        let end = log.log_end_offset();
        assert!(matches!(
            log.append(pbatch(6, 1, 36, 3, 12), 1),
            Err(StorageError::ProducerStateNotLoaded)
        ));
        assert_eq!(log.log_end_offset(), end);
        assert!(!log.producer_state_loaded());
        log.load_producer_state().await.unwrap();
        assert!(log.producer_state_loaded());
        log.load_producer_state().await.unwrap(); // no-op
                                                  // batch 11 (seq 33..35) at offsets 35..37; batch 7 (seq 21..23) at 23..25
        let r = log.append(pbatch(6, 1, 33, 3, 11), 1).unwrap();
        assert_eq!(offsets(&r), (35, 37, true));
        let r = log.append(pbatch(6, 1, 21, 3, 7), 1).unwrap();
        assert_eq!(offsets(&r), (23, 25, true));
        assert!(matches!(
            log.append(pbatch(6, 1, 18, 3, 6), 1),
            Err(StorageError::OutOfOrderSequence { expected: 36, .. })
        ));
        // truncation drops the state; the async load rebuilds it from what remains
        log.truncate_to(26).await.unwrap();
        assert!(!log.producer_state_loaded());
        log.load_producer_state().await.unwrap();
        assert!(log.producer_state_loaded());
        let a = log.append(pbatch(6, 1, 24, 3, 8), 1).unwrap();
        assert_eq!(offsets(&a), (26, 28, false));
        shard.shutdown().await.unwrap();
    });
}
