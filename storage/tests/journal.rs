//! `storage.flush.sync=journal` in one process: batches durable through the journal are
//! read back before and after a stop without close (the executor dropped: no flush, no
//! marker, the write-behind maybe not done), after the journals are replayed as the
//! broker does at start; and the changes that rewrite or remove files (truncation, delete)
//! leave nothing in a live journal that a replay could bring back.

mod common;
use common::{batch, run, tempdir};
use sluice_storage::*;
use std::path::Path;

fn opts(root: &Path, journal_bytes: u64) -> ShardStorageOptions {
    replay_journals(root).unwrap();
    ShardStorageOptions {
        flush_sync: FlushSync::parse(&std::env::var("JT_MODE").unwrap_or("journal".into()))
            .unwrap(),
        journal_dir: Some(root.to_path_buf()),
        journal_bytes,
        journal_min_logs: 1,
        ..Default::default()
    }
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 32 << 10,
        index_interval_bytes: 1024,
        ..Default::default()
    }
}

/// Every batch of `log` from its start, as bytes.
async fn all(log: &PartitionLog) -> Vec<bytes::Bytes> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    let end = log.log_end_offset();
    while next < end {
        for b in log.read(next, end, 1 << 20, true).await.unwrap() {
            let h = sluice_proto::batch::validate_batch(&b).unwrap();
            assert_eq!(h.base_offset, next, "gap");
            next = h.last_offset() + 1;
            out.push(b);
        }
    }
    out
}

/// Opens logs `t-0` .. `t-{n-1}` under `root`.
async fn open_logs(shard: &std::rc::Rc<ShardStorage>, root: &Path, n: usize) -> Vec<PartitionLog> {
    let mut logs = Vec::new();
    for i in 0..n {
        logs.push(
            PartitionLog::open(shard, root.join(format!("t-{i}")), small_segments())
                .await
                .unwrap(),
        );
    }
    logs
}

/// Appends one batch of `size`-byte records (tag `round`) to each log, then waits until
/// each is durable.
async fn append_round(logs: &[PartitionLog], size: usize, round: u8) {
    let mut waits = Vec::new();
    for l in logs {
        let info = l
            .append(batch(1, size, 1_700_000_000_000, round), 0)
            .unwrap();
        waits.push((l, info.last_offset));
    }
    for (l, last) in waits {
        l.wait_durable(last).await.unwrap();
    }
}

/// Reopens logs `t-0` .. under `root` after replaying the journals, with segment syncs,
/// and checks each holds exactly `written[i]`.
fn check_reopened(root: &Path, written: Vec<Vec<bytes::Bytes>>) {
    let r = root.to_path_buf();
    run(move || async move {
        replay_journals(&r).unwrap();
        let shard = ShardStorage::start(ShardStorageOptions::default());
        for (i, want) in written.iter().enumerate() {
            let l = PartitionLog::open(&shard, r.join(format!("t-{i}")), small_segments())
                .await
                .unwrap();
            assert_eq!(&all(&l).await, want, "log {i}");
        }
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn journaled_batches_survive_a_stop_without_close_across_rolls_and_checkpoints() {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let r = root.clone();
    // 256 KiB journal files: many epoch switches and checkpoints; 32 KiB segments: rolls
    let written = run(move || async move {
        let shard = ShardStorage::start(opts(&r, 256 << 10));
        let mut logs = Vec::new();
        for i in 0..20 {
            logs.push(
                PartitionLog::open(&shard, r.join(format!("t-{i}")), small_segments())
                    .await
                    .unwrap(),
            );
        }
        for round in 0..40u8 {
            let mut waits = Vec::new();
            for (i, l) in logs.iter().enumerate() {
                let info = l
                    .append(batch(2, 300 + i * 7, 1_700_000_000_000, round), 0)
                    .unwrap();
                waits.push((i, info.last_offset));
            }
            for (i, last) in waits {
                logs[i].wait_durable(last).await.unwrap();
            }
        }
        let mut written = Vec::new();
        for l in &logs {
            written.push(all(l).await);
        }
        let m = shard.metrics();
        assert!(m.journal_checkpoints > 0, "{m:?}");
        // a stop without close or shutdown
        written
    });
    // reopened the old way: what the journal held is in the segments after replay
    check_reopened(&root, written);
}

#[test]
fn a_truncation_and_a_delete_leave_nothing_to_resurrect() {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let r = root.clone();
    let kept = run(move || async move {
        let shard = ShardStorage::start(opts(&r, 1 << 20));
        let a = PartitionLog::open(&shard, r.join("a-0"), small_segments())
            .await
            .unwrap();
        let b = PartitionLog::open(&shard, r.join("b-0"), small_segments())
            .await
            .unwrap();
        for round in 0..10u8 {
            let x = a
                .append(batch(1, 500, 1_700_000_000_000, round), 0)
                .unwrap();
            let y = b
                .append(batch(1, 500, 1_700_000_000_000, round), 0)
                .unwrap();
            a.wait_durable(x.last_offset).await.unwrap();
            b.wait_durable(y.last_offset).await.unwrap();
        }
        // a divergent suffix cut, then other batches at the same offsets
        assert_eq!(a.truncate_from(4).await.unwrap(), 4);
        let x = a.append(batch(1, 500, 1_700_000_000_000, 99), 0).unwrap();
        a.wait_durable(x.last_offset).await.unwrap();
        // b deleted, and a new, empty log of the same name
        b.delete().await.unwrap();
        let b2 = PartitionLog::open(&shard, r.join("b-0"), small_segments())
            .await
            .unwrap();
        assert_eq!(b2.log_end_offset(), 0);
        all(&a).await
    });
    let r = root.clone();
    run(move || async move {
        let replayed = replay_journals(&r).unwrap();
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let a = PartitionLog::open(&shard, r.join("a-0"), small_segments())
            .await
            .unwrap();
        assert_eq!(all(&a).await, kept, "replayed {replayed:?}");
        assert_eq!(a.log_end_offset(), 5);
        let b = PartitionLog::open(&shard, r.join("b-0"), small_segments())
            .await
            .unwrap();
        assert_eq!(b.log_end_offset(), 0, "replayed {replayed:?}");
        shard.shutdown().await.unwrap();
    });
}

/// With `journal_min_logs` above 1 the journal's files are created only when a cycle first
/// has that many dirty logs (zero-filled a disk turn at a time, cycles syncing segments
/// meanwhile): a shard that never writes that many at once has no journal files. Once
/// open, cycles are journaled, and what they made durable survives a stop without close.
#[test]
fn the_journal_is_created_when_a_cycle_first_needs_it() {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let r = root.clone();
    let jnl_files = |root: &Path| -> Vec<(String, u64)> {
        match std::fs::read_dir(root.join(JOURNAL_DIR)) {
            Ok(d) => d
                .map(|e| e.unwrap())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".jnl"))
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, e.metadata().unwrap().len())
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    };
    let written = run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions {
            journal_min_logs: 8,
            ..opts(&r, 1 << 20)
        });
        let logs = open_logs(&shard, &r, 16).await;
        // two logs at a time: below the threshold, segments are synced, no journal
        for round in 0..20u8 {
            for l in &logs[..2] {
                let info = l
                    .append(batch(1, 200, 1_700_000_000_000, round), 0)
                    .unwrap();
                l.wait_durable(info.last_offset).await.unwrap();
            }
        }
        assert_eq!(jnl_files(&r), vec![], "no cycle needed the journal");
        assert_eq!(shard.metrics().journal_bytes_written, 0);
        // all sixteen at once: the first such cycle opens the journal, later ones use it
        let mut rounds = 0u32;
        while shard.metrics().journal_bytes_written == 0 {
            rounds += 1;
            assert!(rounds < 2_000, "the journal never took a cycle");
            append_round(&logs, 200, rounds as u8).await;
        }
        eprintln!("journal took a cycle after {rounds} rounds");
        let files = jnl_files(&r);
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files.iter().all(|(_, len)| *len == 1 << 20), "{files:?}");
        let mut written = Vec::new();
        for l in &logs {
            written.push(all(l).await);
        }
        // a stop without close or shutdown
        written
    });
    check_reopened(&root, written);
}

/// A clean shutdown with many logs journaled (one checkpoint before the closes, its
/// segments synced by one syncfs per device) leaves every batch in its segment files and
/// no live journal epoch: a start reads them back without replaying anything.
#[test]
fn a_clean_shutdown_leaves_everything_in_the_segments_and_no_live_epoch() {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let r = root.clone();
    let written = run(move || async move {
        let shard = ShardStorage::start(opts(&r, 4 << 20));
        let logs = open_logs(&shard, &r, 200).await;
        for round in 0..5u8 {
            append_round(&logs, 300, round).await;
        }
        assert!(shard.metrics().journal_bytes_written > 0);
        let mut written = Vec::new();
        for l in &logs {
            written.push(all(l).await);
        }
        drop(logs);
        shard.shutdown().await.unwrap();
        written
    });
    let replayed = replay_journals(&root).unwrap();
    assert_eq!(
        replayed.record_sets, 0,
        "a live epoch after shutdown: {replayed:?}"
    );
    check_reopened(&root, written);
}

/// A shard started in journal mode over a journal that is still live (no replay ran)
/// refuses it: appends are not made durable (the log fails) rather than written into
/// segments that a later replay would write the old entries over.
#[test]
fn a_live_journal_not_replayed_fails_the_logs() {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let r = root.clone();
    run(move || async move {
        let shard = ShardStorage::start(opts(&r, 1 << 20));
        let logs = open_logs(&shard, &r, 2).await;
        append_round(&logs, 200, 1).await;
        assert!(shard.metrics().journal_bytes_written > 0);
        // a stop without close or shutdown: the epoch stays live
    });
    let r = root.clone();
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions {
            flush_sync: FlushSync::Journal,
            journal_dir: Some(r.clone()),
            journal_bytes: 1 << 20,
            ..Default::default()
        });
        let log = PartitionLog::open(&shard, r.join("t-0"), small_segments())
            .await
            .unwrap();
        let info = log.append(batch(1, 200, 1_700_000_000_000, 2), 0).unwrap();
        assert!(
            log.wait_durable(info.last_offset).await.is_err(),
            "a live, unreplayed journal must not let writes through"
        );
    });
    // the replay still has what the live epoch held
    assert!(replay_journals(&root).unwrap().record_sets > 0);
}

/// A checkpoint over many written segments makes them durable with one `syncfs` rather
/// than an `fdatasync` each (10,000 of them held every cycle's journal sync for seconds),
/// and what it retired is still read back after a stop without close and a replay.
#[test]
fn a_checkpoint_over_many_segments_syncs_them_at_once() {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let r = root.clone();
    let written = run(move || async move {
        // 1 MiB journal files: a checkpoint (half full) after a few rounds of 300 logs
        let shard = ShardStorage::start(opts(&r, 1 << 20));
        let logs = open_logs(&shard, &r, 300).await;
        let before = shard.metrics();
        let mut round = 0u8;
        while shard.metrics().journal_checkpoints == before.journal_checkpoints {
            assert!(round < 60, "no checkpoint after {round} rounds");
            append_round(&logs, 300, round).await;
            round += 1;
        }
        let m = shard.metrics();
        // every round's record sets count too (a few each); 300 segment syncs would not fit
        let syncs = m.fsyncs - before.fsyncs;
        assert!(syncs < 300, "{syncs} syncs for {round} rounds: {m:?}");
        let mut written = Vec::new();
        for l in &logs {
            written.push(all(l).await);
        }
        // a stop without close or shutdown
        written
    });
    check_reopened(&root, written);
}
