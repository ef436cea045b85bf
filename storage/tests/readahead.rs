//! Read-ahead for sequential cold readers: a reader walking a log from disk is served from
//! read-ahead windows (few cache misses) with the same bytes as without read-ahead, and a
//! window in flight across a truncation or a delete never serves replaced or removed data.

mod common;
use bytes::Bytes;
use common::{batch, run, tempdir};
use sluice_proto::batch::RecordBatchHeader;
use sluice_storage::*;
use std::path::PathBuf;
use std::rc::Rc;

const BATCHES: usize = 200;

/// Fills a log with `BATCHES` batches of 16 x 1000-byte records and closes it.
async fn fill(shard: &Rc<ShardStorage>, path: PathBuf) -> i64 {
    let log = PartitionLog::open(shard, path, LogConfig::default())
        .await
        .unwrap();
    let mut last = 0;
    for i in 0..BATCHES {
        last = log
            .append(batch(16, 1000, 1000 + i as i64, i as u8), 1)
            .unwrap()
            .last_offset;
    }
    log.wait_durable(last).await.unwrap();
    log.close().await.unwrap();
    last + 1
}

/// Reads the whole log from the start, `step` bytes per read; returns the batches and the
/// number of reads.
async fn walk(log: &PartitionLog, end: i64, step: usize) -> (Vec<Bytes>, u64) {
    let (mut out, mut reads, mut next) = (Vec::new(), 0, 0);
    while next < end {
        let r = log.read(next, end, step, true).await.unwrap();
        reads += 1;
        let last = r.last().unwrap();
        next = RecordBatchHeader::parse(last).unwrap().last_offset() + 1;
        out.extend(r);
    }
    (out, reads)
}

fn opts(readahead_bytes: usize) -> ShardStorageOptions {
    ShardStorageOptions {
        readahead_bytes,
        ..Default::default()
    }
}

#[test]
fn sequential_cold_reader_is_served_from_read_ahead() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let end = fill(&ShardStorage::start(opts(0)), path.clone()).await;
        let mut walks = Vec::new();
        for ra in [0, 64 << 20] {
            let shard = ShardStorage::start(opts(ra));
            let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
                .await
                .unwrap();
            let before = shard.metrics();
            let (batches, reads) = walk(&log, end, 64 << 10).await;
            let after = shard.metrics();
            let misses = after.cache_misses - before.cache_misses;
            let window_hits = after.readahead_hits - before.readahead_hits;
            assert_eq!(batches.len(), BATCHES);
            // every batch came from disk, a window or memory, and windows only with them on
            assert_eq!(window_hits > 0, ra > 0, "{window_hits} read-ahead hits");
            walks.push((batches, reads, misses));
            shard.shutdown().await.unwrap();
        }
        let (plain, plain_reads, plain_misses) = &walks[0];
        let (ahead, reads, misses) = &walks[1];
        assert_eq!(plain, ahead, "read-ahead changed the bytes read");
        // without read-ahead nearly every 64 KiB read goes to disk; with it only the
        // first does, and later ones find the windows (or wait for them)
        assert!(
            *plain_misses >= plain_reads / 2,
            "{plain_misses} of {plain_reads}"
        );
        assert!(
            *misses <= 2,
            "{misses} misses in {reads} reads with read-ahead"
        );
    });
}

#[test]
fn read_ahead_in_flight_never_outlives_truncate_or_delete() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let end = fill(&ShardStorage::start(opts(0)), path.clone()).await;
        let shard = ShardStorage::start(opts(64 << 20));
        let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
            .await
            .unwrap();
        // a cold read opens a window past it; truncate there while it is in flight
        let first = log.read(0, end, 64 << 10, true).await.unwrap();
        let cut = RecordBatchHeader::parse(first.last().unwrap())
            .unwrap()
            .last_offset()
            + 1;
        log.truncate_to(cut).await.unwrap();
        let mut last = cut;
        for i in 0..20 {
            last = log
                .append(batch(16, 1000, 5000 + i, 0xEE), 2)
                .unwrap()
                .last_offset;
        }
        log.wait_durable(last).await.unwrap();
        let r = log.read(cut, last + 1, 1 << 20, true).await.unwrap();
        assert!(!r.is_empty());
        for b in &r {
            let h = RecordBatchHeader::parse(b).unwrap();
            assert!(h.base_offset >= cut);
            assert!(
                h.base_timestamp >= 5000,
                "stale batch {h:?} after truncation"
            );
        }
        shard.shutdown().await.unwrap();

        // delete with a window in flight: no panic, and the shard shuts down cleanly
        let shard = ShardStorage::start(opts(64 << 20));
        let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
            .await
            .unwrap();
        assert!(!log.read(0, end, 64 << 10, true).await.unwrap().is_empty());
        log.delete().await.unwrap();
        assert!(!path.exists());
        shard.shutdown().await.unwrap();
    });
}
