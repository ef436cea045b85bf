//! Crash test with many logs on one shard (issue 18): a child process (this test binary,
//! re-run on the ignored `many_logs_child` entry) opens `LOGS` logs and appends small
//! batches to them round-robin from several tasks, so each flusher cycle touches hundreds
//! of logs; it prints every batch once `wait_durable` says it is durable. The parent
//! SIGKILLs it at random moments (mid-cycle: writes, syncs and durable signals of
//! different logs interleave), reopens every log and checks that each batch ever reported
//! durable is intact (same offsets, same CRC-32C) and that every log's offsets are
//! contiguous. Rounds rotate `FlushSync::Journal` (a small journal, so checkpoints and
//! epoch switches happen within a round; every start replays the journals first, as the
//! broker does), the journal with `journal_min_logs` 200 (small cycles sync segments,
//! large ones are journaled), `FlushSync::Filesystem` and `FlushSync::Segment`. The
//! first round's logs are new (their first writes are in it); half of them are marked
//! like the broker's partitions (`write_dir_file`). The executor has 4 blocking helpers.

mod common;
use common::{
    batch, check_durable_batches, crash_opts, record_durable, run, spawn_crash_child, tempdir,
    xorshift, Durable,
};
use sluice_storage::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LOGS: usize = 1000;
const ROUNDS: u64 = 8;

fn log_dir(root: &Path, i: usize) -> PathBuf {
    root.join(format!("t-{i}"))
}

fn opts(mode: &str, root: &Path) -> ShardStorageOptions {
    // "journal-mixed": cycles with fewer than 200 dirty logs sync their segments, larger
    // ones are journaled, so a log's batches go both ways within a round
    let (sync, min_logs) = match mode {
        "journal-mixed" => ("journal", 200),
        m => (m, 1),
    };
    ShardStorageOptions {
        journal_min_logs: min_logs,
        ..crash_opts(root, sync).0
    }
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 1024,
        ..Default::default()
    }
}

#[test]
#[ignore = "child process of kill9_mid_cycle_keeps_every_durable_batch_of_many_logs"]
fn many_logs_child() {
    let Ok(root) = std::env::var("SLUICE_CRASH_DIR") else {
        return;
    };
    let mode = std::env::var("SLUICE_CRASH_MODE").unwrap_or_else(|_| "segment".into());
    let seed: u64 = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    run(move || async move {
        let root = PathBuf::from(root);
        std::fs::create_dir_all(&root).unwrap();
        let shard = ShardStorage::start(opts(&mode, &root));
        let mut logs = Vec::with_capacity(LOGS);
        for i in 0..LOGS {
            let log = PartitionLog::open(&shard, log_dir(&root, i), small_segments())
                .await
                .unwrap();
            // half the logs marked as the broker marks a partition (the mark's directory
            // fsync covers a new log's first segment), half not (the first flush syncs it)
            if i % 2 == 0 {
                log.write_dir_file("partition.metadata", b"version: 0\n".to_vec())
                    .await
                    .unwrap();
            }
            logs.push(log);
        }
        println!("OPEN");
        let logs = std::rc::Rc::new(logs);
        let mut tasks = Vec::new();
        for t in 0..16u64 {
            let logs = logs.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut x = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(t * 7919 + 1);
                loop {
                    // a burst over many logs, then wait for all of it: cycles touch many logs
                    let mut waits = Vec::new();
                    for _ in 0..64 {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let i = (x >> 33) as usize % LOGS;
                        let n = 1 + (x >> 40) as usize % 3;
                        let size = 10 + (x >> 45) as usize % 1500;
                        let b = batch(n, size, 1_700_000_000_000, (x >> 20) as u8);
                        let info = logs[i].append(b, 0).unwrap();
                        waits.push((i, info));
                    }
                    for (i, info) in waits {
                        logs[i].wait_durable(info.last_offset).await.unwrap();
                        let stored = logs[i]
                            .read(info.base_offset, info.last_offset + 1, 1, true)
                            .await
                            .unwrap();
                        let crc = crc32c::crc32c(&stored[0]);
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "D {i} {} {} {crc}", info.base_offset, info.last_offset)
                            .unwrap();
                        out.flush().unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}

#[test]
fn kill9_mid_cycle_keeps_every_durable_batch_of_many_logs() {
    let dir = tempdir();
    let root = dir.path().join("many");
    let mut durable: Durable = vec![BTreeMap::new(); LOGS];
    let started = Instant::now();
    let mut rng = 0x2545f4914f6cdd1du64;
    for round in 0..ROUNDS {
        let mode = ["journal", "journal-mixed", "filesystem", "segment"][round as usize % 4];
        let mut child = spawn_crash_child(
            "many_logs_child",
            &[
                ("SLUICE_CRASH_DIR", root.display().to_string()),
                ("SLUICE_CRASH_MODE", mode.to_string()),
                ("SLUICE_CRASH_SEED", round.to_string()),
            ],
        );
        let extra = Duration::from_millis(50 + xorshift(&mut rng) % 400);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut first_seen = None;
        let before: usize = durable.iter().map(BTreeMap::len).sum();
        loop {
            match child.lines.recv_timeout(Duration::from_millis(2)) {
                Ok(l) => record_durable(&mut durable, &l),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
            let now: usize = durable.iter().map(BTreeMap::len).sum();
            if first_seen.is_none() && now > before {
                first_seen = Some(Instant::now());
            }
            if first_seen.is_some_and(|t| t.elapsed() >= extra) || Instant::now() > deadline {
                break;
            }
        }
        // SIGKILL mid-run: no flush, no marker
        for l in child.kill9() {
            record_durable(&mut durable, &l);
        }
        let now: usize = durable.iter().map(BTreeMap::len).sum();
        assert!(
            now > before,
            "round {round}: the child reported nothing durable"
        );
        // the child was killed mid-run: in journal mode its live epoch holds record sets
        let replayed = replay_journals(&root).unwrap();
        if mode == "journal" {
            assert!(
                replayed.record_sets > 0,
                "round {round}: nothing journaled: {replayed:?}"
            );
        }
        eprintln!(
            "round {round} ({mode}): {} durable batches, replayed {replayed:?}, {:?}",
            now - before,
            started.elapsed()
        );
        let expect = durable.clone();
        let r = root.clone();
        let clean = round % 3 == 2;
        run(move || async move {
            let shard = ShardStorage::start(opts(mode, &r));
            for (i, exp) in expect.iter().enumerate() {
                let log = PartitionLog::open(&shard, log_dir(&r, i), small_segments())
                    .await
                    .unwrap();
                check_durable_batches(&log, exp, &format!("round {round} ({mode}), log {i}")).await;
                if clean {
                    log.close().await.unwrap();
                }
            }
            shard.shutdown().await.unwrap();
        });
    }
    let total: usize = durable.iter().map(BTreeMap::len).sum();
    eprintln!(
        "{ROUNDS} kill -9 rounds over {LOGS} logs, {total} durable batches checked, {:?}",
        started.elapsed()
    );
}
