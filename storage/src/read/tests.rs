//! Unit tests of `read.rs`.

use super::producers::{LOADS, LOCKED_REPLAYS};
use crate::{LogConfig, PartitionLog};
use std::time::Duration;

/// A flush that moves the durable offset while the async producer-state load reads
/// the files makes it read again under the log's I/O permit and install the state:
/// `append` is then never left to rebuild it with blocking reads on the shard.
#[test]
fn a_flush_under_the_async_producer_load_does_not_leave_it_unbuilt() {
    let dir = crate::test_dir();
    let path = dir.path().join("t-0");
    crate::on_test_shard(move |shard| async move {
        let value = vec![7u8; 64 << 10];
        let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
            .await
            .unwrap(); // ok: test
        let mut last = 0;
        for i in 0..256 {
            last = log
                .append(crate::test_batch(i, &value), 1)
                .unwrap()
                .last_offset; // ok: test
        }
        log.wait_durable(last).await.unwrap(); // ok: test
        log.close().await.unwrap(); // ok: test
        let mut raced = 0;
        for round in 0..20u64 {
            let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
                .await
                .unwrap(); // ok: test
            assert!(!log.inner.state().producers_loaded());
            // batches pending, not flushed while the permit is held here
            let permit = crate::permit::acquire(&log.inner.io, 1).await.unwrap(); // ok: test
            let end = log.inner.state().log_end();
            for i in 0..4 {
                last = log
                    .append(crate::test_batch(end + i, b"x"), 1)
                    .unwrap()
                    .last_offset; // ok: test
            }
            let before = LOCKED_REPLAYS.with(|n| n.get());
            let l = log.clone();
            let load = glommio::spawn_local(async move { l.load_producer_state().await });
            // let the load plan (with those batches pending), then let them flush
            glommio::timer::sleep(Duration::from_micros(200 * (round + 1))).await;
            drop(permit);
            log.wait_durable(last).await.unwrap(); // ok: test
            load.await.unwrap(); // ok: test
            assert!(
                log.inner.state().producers_loaded(),
                "round {round}: the load left the producer state unbuilt"
            );
            raced += LOCKED_REPLAYS.with(|n| n.get()) - before;
            log.close().await.unwrap(); // ok: test
        }
        assert!(raced > 0, "no round had a flush under the load's read");
        shard.shutdown().await.unwrap(); // ok: test
    });
}

/// A log at `path` with `n` durable 4 KiB batches, closed and opened again: its
/// producer state is not built.
async fn reopened_with_batches(
    shard: &std::rc::Rc<crate::ShardStorage>,
    path: std::path::PathBuf,
    n: i64,
) -> PartitionLog {
    let log = PartitionLog::open(shard, path.clone(), LogConfig::default())
        .await
        .unwrap(); // ok: test
    let mut last = 0;
    for i in 0..n {
        last = log
            .append(crate::test_batch(i, &[1u8; 4096]), 1)
            .unwrap() // ok: test
            .last_offset;
    }
    log.wait_durable(last).await.unwrap(); // ok: test
    log.close().await.unwrap(); // ok: test
    PartitionLog::open(shard, path, LogConfig::default())
        .await
        .unwrap() // ok: test
}

/// A caller that stops waiting (its request timed out) does not stop the load: it
/// finishes in its own task, and the state is built for the next caller.
#[test]
fn a_load_whose_caller_stops_waiting_still_finishes() {
    let dir = crate::test_dir();
    let path = dir.path().join("t-0");
    crate::on_test_shard(move |shard| async move {
        let log = reopened_with_batches(&shard, path, 1).await;
        assert!(!log.producer_state_loaded());
        // another load holds the one-at-a-time permit, so this caller waits
        let other = crate::permit::acquire(&log.inner.producer_load, 1)
            .await
            .unwrap(); // ok: test
        let mut load = Box::pin(log.load_producer_state());
        assert!(futures_lite::future::poll_once(&mut load).await.is_none());
        drop(load); // the caller gives up
        drop(other);
        for _ in 0..200 {
            if log.producer_state_loaded() {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            log.producer_state_loaded(),
            "the dropped load was not finished"
        );
        shard.shutdown().await.unwrap(); // ok: test
    });
}

/// Callers loading the producer state at once (a read_committed fetch, a
/// coordinator's retried write) share one read of the files.
#[test]
fn concurrent_producer_loads_read_the_log_once() {
    let dir = crate::test_dir();
    let path = dir.path().join("t-0");
    crate::on_test_shard(move |shard| async move {
        let log = reopened_with_batches(&shard, path, 64).await;
        assert!(!log.inner.state().producers_loaded());
        let before = LOADS.with(|n| n.get());
        let loads: Vec<_> = (0..8)
            .map(|_| {
                let l = log.clone();
                glommio::spawn_local(async move { l.load_producer_state().await })
            })
            .collect();
        for l in loads {
            l.await.unwrap(); // ok: test
        }
        assert!(log.inner.state().producers_loaded());
        assert_eq!(
            LOADS.with(|n| n.get()) - before,
            1,
            "the log was read more than once"
        );
        shard.shutdown().await.unwrap(); // ok: test
    });
}
