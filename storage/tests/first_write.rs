//! A new log's first write (issue 18). Open creates a new log's first segment, so the
//! first flush finds the file; a directory fsync after the open (the broker's partition
//! mark, `write_dir_file`) makes its entry durable, and then that flush syncs no
//! directory of its own. Without one, the first flush syncs the directory once (never
//! zero: an acknowledged record's file entry is durable). A log closed before any write
//! leaves no marker and opens again empty; what it takes afterwards survives a reopen.

mod common;
use common::{batch, run, tempdir};
use sluice_storage::*;

const TS: i64 = 1_700_000_000_000;

#[test]
fn first_flush_after_the_mark_syncs_no_directory() {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let mut logs = Vec::new();
        for i in 0..50 {
            let log = PartitionLog::open(&shard, root.join(format!("t-{i}")), LogConfig::default())
                .await
                .unwrap();
            log.write_dir_file("partition.metadata", b"version: 0\n".to_vec())
                .await
                .unwrap();
            // the broker's leader path: the first flush also writes the epoch checkpoint
            log.set_leader_epoch(0);
            logs.push(log);
        }
        let before = shard.metrics().flush_dir_fsyncs;
        let mut acks = Vec::new();
        for log in &logs {
            acks.push(log.append(batch(1, 100, TS, 1), TS).unwrap());
        }
        for (log, a) in logs.iter().zip(&acks) {
            log.wait_durable(a.last_offset).await.unwrap();
        }
        assert_eq!(shard.metrics().flush_dir_fsyncs - before, 0);
        for i in 0..50 {
            let d = root.join(format!("t-{i}"));
            let names: Vec<String> = std::fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert!(
                names.contains(&"partition.metadata".to_string()),
                "{names:?}"
            );
            assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        }
        for log in &logs {
            log.close().await.unwrap();
        }
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn first_flush_without_a_mark_syncs_the_directory_once() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
            .await
            .unwrap();
        assert!(path.join("00000000000000000000.log").exists());
        let a = log.append(batch(1, 100, TS, 1), TS).unwrap();
        log.wait_durable(a.last_offset).await.unwrap();
        assert_eq!(shard.metrics().flush_dir_fsyncs, 1);
        let b = log.append(batch(2, 100, TS, 2), TS).unwrap();
        log.wait_durable(b.last_offset).await.unwrap();
        assert_eq!(shard.metrics().flush_dir_fsyncs, 1);
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn a_log_closed_unwritten_opens_empty_and_keeps_what_it_takes_next() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
            .await
            .unwrap();
        log.close().await.unwrap();
        // nothing written: no indexes, no marker, just the empty first segment
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["00000000000000000000.log".to_string()]);
        let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
            .await
            .unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
        let a = log.append(batch(3, 100, TS, 7), TS).unwrap();
        assert_eq!((a.base_offset, a.last_offset), (0, 2));
        log.wait_durable(2).await.unwrap();
        log.close().await.unwrap();
        let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 3);
        let got = log.read(0, 3, 1 << 20, false).await.unwrap();
        assert_eq!(got.len(), 1);
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn write_dir_file_takes_only_a_plain_name() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
            .await
            .unwrap();
        for bad in ["../x", "a/b", "", ".", "/abs"] {
            assert!(log.write_dir_file(bad, vec![1]).await.is_err(), "{bad:?}");
        }
        log.write_dir_file("ok", b"data".to_vec()).await.unwrap();
        assert_eq!(std::fs::read(path.join("ok")).unwrap(), b"data");
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}
