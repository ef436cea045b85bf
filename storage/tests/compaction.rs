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
