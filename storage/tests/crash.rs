//! Crash test: a child process (this test binary, re-run on the ignored `crash_child`
//! entry) appends from several tasks and prints every offset once it is durable; the
//! parent SIGKILLs it at random moments, reopens the log and checks that every batch ever
//! reported durable is intact (same last offset, same CRC-32C over the whole batch) and
//! that offsets are contiguous. Repeats 50 times, alternating between the `journal` and
//! `segment` flush modes (every start replays the journals first, as the broker does);
//! `SLUICE_TEST_FLUSH_SYNC` runs every round in one mode instead.

mod common;
use common::{
    batch, child_crash_opts, crash_opts, run, spawn_crash_child, tempdir, xorshift, CRASH_SYNC_ENV,
    CRASH_SYNC_MODES,
};
use sluice_proto::batch::RecordBatchHeader;
use sluice_storage::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Round `round`'s flush mode.
fn mode(round: u64) -> String {
    std::env::var("SLUICE_TEST_FLUSH_SYNC")
        .unwrap_or_else(|_| CRASH_SYNC_MODES[round as usize % 2].to_string())
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 10,
        index_interval_bytes: 1024,
        ..Default::default()
    }
}

#[test]
#[ignore = "child process of kill9_recovery_keeps_every_durable_batch"]
fn crash_child() {
    let Ok(dir) = std::env::var("SLUICE_CRASH_DIR") else {
        return;
    };
    let seed: u64 = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let opts = child_crash_opts(std::path::Path::new(&dir).parent().unwrap());
    run(move || async move {
        let shard = ShardStorage::start(opts);
        let log = PartitionLog::open(&shard, PathBuf::from(dir), small_segments())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut x = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(t * 7919 + 1);
                loop {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let n = 1 + (x >> 33) as usize % 8;
                    let size = 10 + (x >> 45) as usize % 3000;
                    let b = batch(
                        n,
                        size,
                        1_700_000_000_000 + (x >> 50) as i64,
                        (x >> 20) as u8,
                    );
                    let info = log.append(b, 0).unwrap();
                    log.wait_durable(info.last_offset).await.unwrap();
                    let stored = log
                        .read(info.base_offset, info.last_offset + 1, 1, true)
                        .await
                        .unwrap();
                    let crc = crc32c::crc32c(&stored[0]);
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "D {} {} {}", info.base_offset, info.last_offset, crc).unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}

#[test]
fn kill9_recovery_keeps_every_durable_batch() {
    let dir = tempdir();
    let path = dir.path().join("crash-0");
    let mut durable: BTreeMap<i64, (i64, u32)> = BTreeMap::new();
    let started = Instant::now();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut replayed_sets = 0;
    for round in 0..50u64 {
        let mode = mode(round);
        let mut child = spawn_crash_child(
            "crash_child",
            &[
                ("SLUICE_CRASH_DIR", path.display().to_string()),
                ("SLUICE_CRASH_SEED", round.to_string()),
                (CRASH_SYNC_ENV, mode.clone()),
            ],
        );
        // wait for the child to make progress, then kill it at a random moment
        let extra = Duration::from_millis(xorshift(&mut rng) % 60);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut first_seen = None;
        loop {
            match child.lines.recv_timeout(Duration::from_millis(5)) {
                Ok(l) => record(&mut durable, &l),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
            if first_seen.is_none() && !durable.is_empty() {
                first_seen = Some(Instant::now());
            }
            if first_seen.is_some_and(|t| t.elapsed() >= extra) || Instant::now() > deadline {
                break;
            }
        }
        // SIGKILL: the child gets no chance to flush or write a marker
        for l in child.kill9() {
            record(&mut durable, &l);
        }
        assert!(
            !durable.is_empty(),
            "child never reported a durable batch (round {round})"
        );
        let (opts, sets) = crash_opts(dir.path(), &mode);
        replayed_sets += sets;
        let expect = durable.clone();
        let p = path.clone();
        let clean = round % 3 == 0;
        run(move || async move {
            let shard = ShardStorage::start(opts);
            let log = PartitionLog::open(&shard, p, small_segments())
                .await
                .unwrap();
            let end = log.log_end_offset();
            let max_reported = expect.values().map(|v| v.0).max().unwrap();
            assert!(
                end > max_reported,
                "round {round}: log end {end} lost durable offset {max_reported}"
            );
            for (&base, &(last, crc)) in &expect {
                let b = log.read(base, end, 1, true).await.unwrap();
                let h = RecordBatchHeader::parse(&b[0]).unwrap();
                assert_eq!(
                    (h.base_offset, h.last_offset()),
                    (base, last),
                    "round {round}"
                );
                assert_eq!(
                    crc32c::crc32c(&b[0]),
                    crc,
                    "round {round}: batch {base} changed"
                );
            }
            // offsets are contiguous from start to end
            let mut next = log.log_start_offset();
            while next < end {
                let bs = log.read(next, end, 1 << 20, true).await.unwrap();
                for b in bs {
                    let h = sluice_proto::batch::validate_batch(&b).unwrap();
                    assert_eq!(h.base_offset, next, "round {round}: gap");
                    next = h.last_offset() + 1;
                }
            }
            if clean {
                log.close().await.unwrap();
            }
            shard.shutdown().await.unwrap();
        });
    }
    eprintln!(
        "50 kill -9 rounds, {} durable batches checked, {replayed_sets} journal record sets replayed, {:?}",
        durable.len(),
        started.elapsed()
    );
    if (0..50).any(|r| mode(r) == "journal") {
        assert!(replayed_sets > 0, "journal mode replayed nothing");
    }
}

fn record(durable: &mut BTreeMap<i64, (i64, u32)>, line: &str) {
    let mut it = line.split_whitespace();
    if it.next() != Some("D") {
        return;
    }
    let v: Vec<i64> = it.filter_map(|x| x.parse().ok()).collect();
    if v.len() == 3 {
        durable.insert(v[0], (v[1], v[2] as u32));
    }
}
