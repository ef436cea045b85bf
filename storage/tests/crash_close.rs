//! Crash test of the batched close and the batched recovery (issue 18): a child process
//! (this test binary, re-run on the ignored `close_child` entry) opens `LOGS` logs all at
//! once, as the broker does after a restart (recovering them when the last run did not
//! close them; their rescans share group syncs), appends a few batches to each, prints
//! every batch once it is durable, then closes the shard (`ShardStorage::shutdown`: every
//! log's cut and indexes, one shared sync, every marker, one more sync). The parent
//! SIGKILLs it at a random moment: while it opens, while it writes, or while it closes
//! (markers written for some logs and not others, indexes written and not yet synced).
//! Then it opens every log itself and checks that each batch ever reported durable reads
//! back intact through the log's indexes (same offsets, same CRC-32C; a marker trusted
//! with indexes that do not match the segment would misplace a read) and that every log's
//! offsets are contiguous; every other check closes the logs cleanly, so the next child
//! starts from markers, the others leave them for the next child to recover. Rounds
//! alternate two at a time between the `journal` and `segment` flush modes.

mod common;
use common::{
    batch, check_durable_batches, child_crash_opts, crash_opts, record_durable, run,
    spawn_crash_child, tempdir, xorshift, Durable, CRASH_SYNC_ENV, CRASH_SYNC_MODES,
};
use sluice_storage::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

const LOGS: usize = 300;
const ROUNDS: u64 = 16;

fn log_dir(root: &Path, i: usize) -> PathBuf {
    root.join(format!("t-{i}"))
}

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 512,
        ..Default::default()
    }
}

/// Opens every log of `root` at once, each in its own task (as the broker's
/// `open_new_replicas`), in log order.
async fn open_all(shard: &Rc<ShardStorage>, root: &Path) -> Vec<PartitionLog> {
    let tasks: Vec<_> = (0..LOGS)
        .map(|i| {
            let (shard, dir) = (shard.clone(), log_dir(root, i));
            glommio::spawn_local(async move { PartitionLog::open(&shard, dir, cfg()).await })
        })
        .collect();
    let mut logs = Vec::with_capacity(LOGS);
    for t in tasks {
        logs.push(t.await.unwrap());
    }
    logs
}

#[test]
#[ignore = "child process of kill9_mid_close_and_mid_recovery_keeps_every_durable_batch"]
fn close_child() {
    let Ok(root) = std::env::var("SLUICE_CRASH_DIR") else {
        return;
    };
    let seed: u64 = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let root = PathBuf::from(root);
    std::fs::create_dir_all(&root).unwrap();
    let opts = child_crash_opts(&root);
    run(move || async move {
        let shard = ShardStorage::start(opts);
        let logs = open_all(&shard, &root).await;
        println!("OPEN");
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(7);
        // a few batches to most logs (some stay untouched: their markers, if any, stay)
        let mut waits = Vec::new();
        for (i, log) in logs.iter().enumerate() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            for k in 0..(x >> 60) as usize % 5 {
                let size = 10 + (x >> (20 + k)) as usize % 700;
                let b = batch(1 + k % 3, size, 1_700_000_000_000, (x >> 8) as u8);
                waits.push((i, log.append(b, 0).unwrap()));
            }
        }
        for (i, info) in waits {
            logs[i].wait_durable(info.last_offset).await.unwrap();
            let stored = logs[i]
                .read(info.base_offset, info.last_offset + 1, 1, true)
                .await
                .unwrap();
            let crc = crc32c::crc32c(&stored[0]);
            let mut out = std::io::stdout().lock();
            writeln!(out, "D {i} {} {} {crc}", info.base_offset, info.last_offset).unwrap();
            out.flush().unwrap();
        }
        println!("CLOSING");
        shard.shutdown().await.unwrap();
        println!("CLOSED");
    });
}

#[test]
fn kill9_mid_close_and_mid_recovery_keeps_every_durable_batch() {
    let dir = tempdir();
    let root = dir.path().join("close");
    let mut durable: Durable = vec![BTreeMap::new(); LOGS];
    let started = Instant::now();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut killed = BTreeMap::<&str, u32>::new();
    let mut replayed_sets = 0;
    for round in 0..ROUNDS {
        // two rounds in each mode, so clean closes (odd rounds) see both
        let mode = CRASH_SYNC_MODES[(round / 2 % 2) as usize];
        let mut child = spawn_crash_child(
            "close_child",
            &[
                ("SLUICE_CRASH_DIR", root.display().to_string()),
                ("SLUICE_CRASH_SEED", round.to_string()),
                (CRASH_SYNC_ENV, mode.to_string()),
            ],
        );
        // where to kill: 0 while opening, 1 while writing, 2 and 3 while closing
        let phase = xorshift(&mut rng) % 4;
        let delay = Duration::from_millis(xorshift(&mut rng) % 120);
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut opened, mut closing, mut closed) = (None, None, false);
        let spawned = Instant::now();
        loop {
            match child.lines.recv_timeout(Duration::from_millis(1)) {
                Ok(l) => {
                    record_durable(&mut durable, &l);
                    match l.as_str() {
                        "OPEN" => opened = Some(Instant::now()),
                        "CLOSING" => closing = Some(Instant::now()),
                        "CLOSED" => closed = true,
                        _ => {}
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
            let due = match phase {
                0 => spawned.elapsed() >= delay * 3,
                1 => opened.is_some_and(|t| t.elapsed() >= delay / 4),
                _ => closing.is_some_and(|t| t.elapsed() >= delay),
            };
            if due || closed || Instant::now() > deadline {
                break;
            }
        }
        let moment = if closed {
            "after the close"
        } else if closing.is_some() {
            "while closing"
        } else if opened.is_some() {
            "while writing"
        } else {
            "while opening"
        };
        *killed.entry(moment).or_default() += 1;
        for l in child.kill9() {
            record_durable(&mut durable, &l);
        }
        let expect = durable.clone();
        let r = root.clone();
        let clean = round % 2 == 1;
        let (opts, sets) = crash_opts(&root, mode);
        replayed_sets += sets;
        run(move || async move {
            let shard = ShardStorage::start(opts);
            let logs = open_all(&shard, &r).await;
            for (i, (log, exp)) in logs.iter().zip(&expect).enumerate() {
                check_durable_batches(log, exp, &format!("round {round} ({moment}), log {i}"))
                    .await;
            }
            if clean {
                shard.shutdown().await.unwrap();
            }
        });
        eprintln!(
            "round {round} ({mode}): killed {moment}, {sets} journal record sets replayed, {:?}",
            started.elapsed()
        );
    }
    let total: usize = durable.iter().map(BTreeMap::len).sum();
    assert!(total > 0, "no child reported a durable batch");
    assert!(
        replayed_sets > 0,
        "no journal round left anything to replay"
    );
    eprintln!(
        "{ROUNDS} rounds over {LOGS} logs ({killed:?}), {total} durable batches checked, {:?}",
        started.elapsed()
    );
}
