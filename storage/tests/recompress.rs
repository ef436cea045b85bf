//! `LogConfig::compression` (a topic's `compression.type`): client batches are stored in
//! the topic's codec, recompressed when the producer used another, with their records,
//! offsets and producer fields intact, through a reopen; `None` stores them as produced.

mod common;
use bytes::Bytes;
use common::{batch, run, tempdir};
use sluice_proto::batch::{
    build_compressed_batch, decode_stored_records, validate_batch, SimpleRecord,
};
use sluice_storage::*;

fn compressed(n: usize, ts: i64, codec: u8) -> Bytes {
    let vals: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("value {i} {}", "z".repeat(200)).into_bytes())
        .collect();
    let recs: Vec<SimpleRecord<'_>> = vals
        .iter()
        .map(|v| SimpleRecord {
            key: Some(b"key"),
            value: Some(v),
            timestamp: ts,
            headers: &[],
        })
        .collect();
    build_compressed_batch(0, &recs, codec).unwrap() // ok: test
}

/// (base offset, codec, values) of every batch read from `from`.
async fn stored(log: &PartitionLog, from: i64) -> Vec<(i64, u8, Vec<Option<Bytes>>)> {
    let end = log.log_end_offset();
    let read = log.read(from, end, 64 << 20, true).await.unwrap(); // ok: test
    read.iter()
        .map(|b| {
            let h = validate_batch(b).unwrap(); // ok: test
            let (_, recs) = decode_stored_records(b, 64 << 20).unwrap(); // ok: test
            let values = recs.into_iter().map(|r| r.value).collect();
            (h.base_offset, h.compression(), values)
        })
        .collect()
}

fn values_of(b: &Bytes) -> Vec<Option<Bytes>> {
    let (_, recs) = decode_stored_records(b, 64 << 20).unwrap(); // ok: test
    recs.into_iter().map(|r| r.value).collect()
}

#[test]
fn batches_are_stored_in_the_topics_codec_and_survive_a_reopen() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let gzip = LogConfig {
            compression: Some(1),
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&shard, path.clone(), gzip.clone())
            .await
            .unwrap();
        // uncompressed and lz4 in, gzip stored; gzip in stays byte for byte
        let plain = batch(5, 300, 1000, 1);
        let lz4 = compressed(4, 2000, 3);
        let gz = compressed(3, 3000, 1);
        assert_eq!(log.append(plain.clone(), 10).unwrap().base_offset, 0);
        assert_eq!(log.append(lz4.clone(), 10).unwrap().base_offset, 5);
        assert_eq!(log.append(gz.clone(), 10).unwrap().base_offset, 9);
        // the topic changes to uncompressed, then to the producer's codec (snappy kept)
        log.set_config(LogConfig {
            compression: Some(0),
            ..gzip.clone()
        });
        assert_eq!(log.append(gz.clone(), 10).unwrap().base_offset, 12);
        log.set_config(LogConfig::default());
        let snappy = compressed(2, 4000, 2);
        assert_eq!(log.append(snappy.clone(), 10).unwrap().base_offset, 15);
        log.wait_durable(16).await.unwrap();
        let want = vec![
            (0, 1, values_of(&plain)),
            (5, 1, values_of(&lz4)),
            (9, 1, values_of(&gz)),
            (12, 0, values_of(&gz)),
            (15, 2, values_of(&snappy)),
        ];
        assert_eq!(stored(&log, 0).await, want);
        let read = log.read(9, 12, 1 << 20, true).await.unwrap();
        assert_eq!(
            &read[0][16..],
            &gz[16..],
            "a batch in the topic's codec is kept"
        );
        log.close().await.unwrap();
        let log = PartitionLog::open(&shard, path, gzip).await.unwrap();
        assert_eq!(stored(&log, 0).await, want);
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn log_append_time_and_max_message_bytes_apply_to_the_recompressed_batch() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let config = LogConfig {
            compression: Some(4),
            log_append_time: true,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&shard, path, config.clone())
            .await
            .unwrap();
        let a = log.append(batch(3, 100, 1, 1), 7000).unwrap();
        assert_eq!(a.log_append_time_ms, 7000);
        log.wait_durable(2).await.unwrap();
        let read = log.read(0, 3, 1 << 20, true).await.unwrap();
        let h = validate_batch(&read[0]).unwrap();
        assert_eq!(
            (
                h.compression(),
                h.timestamp_type_log_append(),
                h.max_timestamp
            ),
            (4, true, 7000)
        );
        // a well-compressed gzip batch under max.message.bytes that does not fit it once
        // stored uncompressed: refused, the log unchanged
        log.set_config(LogConfig {
            compression: Some(0),
            max_message_bytes: 2000,
            ..config
        });
        let small = compressed(50, 5, 1);
        assert!(small.len() < 2000);
        assert!(matches!(
            log.append(small, 7001),
            Err(StorageError::MessageTooLarge { .. })
        ));
        assert_eq!(log.log_end_offset(), 3);
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}
