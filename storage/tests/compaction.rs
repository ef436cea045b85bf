//! Compacted logs (`cleanup.policy` compact): the policy's effect on retention, the
//! produce-path key check, and the log cleaner.

mod common;
use common::{batch, run, tempdir};
use sluice_storage::*;

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
