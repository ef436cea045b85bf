//! Idempotence across kill -9: a child process (this test binary, re-run on the ignored
//! `idem_child` entry) appends an idempotent producer's batches (epoch = round) and prints
//! each once durable; the parent SIGKILLs it at a random moment, reopens the log without
//! a clean shutdown and checks: no (epoch, sequence) is stored twice, every durable batch
//! is there, retrying any of the producer's last 5 batches answers its original offsets,
//! the next sequence is accepted and the previous epoch is fenced. Rounds alternate
//! between the `journal` and `segment` flush modes.

mod common;
use common::{
    child_crash_opts, crash_opts, pbatch, run, spawn_crash_child, tempdir, xorshift,
    CRASH_SYNC_ENV, CRASH_SYNC_MODES,
};
use sluice_proto::batch::RecordBatchHeader;
use sluice_storage::*;
use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PID: i64 = 77;
const ROUNDS: i16 = 12;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10, // the producer's last batches span segments
        index_interval_bytes: 512,
        ..Default::default()
    }
}

#[test]
#[ignore = "child process of kill9_keeps_idempotence"]
fn idem_child() {
    let Ok(dir) = std::env::var("SLUICE_IDEM_DIR") else {
        return;
    };
    let epoch: i16 = std::env::var("SLUICE_IDEM_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let dir = PathBuf::from(dir);
    let opts = child_crash_opts(dir.parent().unwrap());
    run(move || async move {
        let shard = ShardStorage::start(opts);
        let log = PartitionLog::open(&shard, dir, config()).await.unwrap();
        log.load_producer_state().await.unwrap();
        let mut seq = 0i32;
        for i in 0u64.. {
            let n = 1 + (i % 5) as usize;
            let b = pbatch(PID, epoch, seq, n, i as u8);
            let info = log.append(b.clone(), 0).unwrap();
            assert!(!info.duplicate);
            // an immediate retry (as after a lost response) is answered, not stored
            let again = log.append(b, 0).unwrap();
            assert_eq!(
                (again.base_offset, again.duplicate),
                (info.base_offset, true)
            );
            seq += n as i32;
            let log = log.clone();
            let s = seq - n as i32;
            glommio::spawn_local(async move {
                if log.wait_durable(info.last_offset).await.is_ok() {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "D {s} {}", info.base_offset);
                    let _ = out.flush();
                }
            })
            .detach();
            if i % 4 == 3 {
                glommio::timer::sleep(Duration::from_micros(200)).await;
            }
        }
    });
}

#[test]
fn kill9_keeps_idempotence() {
    let dir = tempdir();
    let path = dir.path().join("idem-crash");
    let mut rng = 0x2545f4914f6cdd1du64;
    let mut replayed_sets = 0;
    for epoch in 0..ROUNDS {
        let mode = CRASH_SYNC_MODES[epoch as usize % 2];
        let mut child = spawn_crash_child(
            "idem_child",
            &[
                ("SLUICE_IDEM_DIR", path.display().to_string()),
                ("SLUICE_IDEM_EPOCH", epoch.to_string()),
                (CRASH_SYNC_ENV, mode.to_string()),
            ],
        );
        let extra = Duration::from_millis(xorshift(&mut rng) % 80);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut durable: BTreeSet<(i32, i64)> = BTreeSet::new();
        let mut first_seen = None;
        let note = |l: &str, d: &mut BTreeSet<(i32, i64)>| {
            let v: Vec<i64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            if l.starts_with("D ") && v.len() == 2 {
                d.insert((v[0] as i32, v[1]));
            }
        };
        loop {
            match child.lines.recv_timeout(Duration::from_millis(5)) {
                Ok(l) => note(&l, &mut durable),
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
            note(&l, &mut durable);
        }
        assert!(
            !durable.is_empty(),
            "child reported nothing (epoch {epoch})"
        );
        let p = path.clone();
        let (opts, sets) = crash_opts(dir.path(), mode);
        replayed_sets += sets;
        run(move || async move {
            let shard = ShardStorage::start(opts);
            let log = PartitionLog::open(&shard, p, config()).await.unwrap();
            let end = log.log_end_offset();
            // every batch of the log: each (epoch, sequence) at most once
            let mut seen = HashSet::new();
            let mut mine = Vec::new(); // (seq, count, base, last) of this round's epoch
            let mut next = log.log_start_offset();
            while next < end {
                for b in log.read(next, end, 1 << 20, true).await.unwrap() {
                    let h = RecordBatchHeader::parse(&b).unwrap();
                    assert!(
                        seen.insert((h.producer_epoch, h.base_sequence)),
                        "epoch {epoch}: ({}, {}) stored twice",
                        h.producer_epoch,
                        h.base_sequence
                    );
                    if h.producer_epoch == epoch {
                        mine.push((
                            h.base_sequence,
                            h.records_count,
                            h.base_offset,
                            h.last_offset(),
                        ));
                    }
                    next = h.last_offset() + 1;
                }
            }
            for &(s, base) in &durable {
                assert!(
                    mine.iter().any(|m| m.0 == s && m.2 == base),
                    "epoch {epoch}: durable batch seq {s} at {base} lost"
                );
            }
            // retries of the last 5 batches are duplicates with their original offsets
            log.load_producer_state().await.unwrap();
            for &(s, n, base, last) in mine.iter().rev().take(5) {
                let r = log.append(pbatch(PID, epoch, s, n as usize, 0), 0).unwrap();
                assert_eq!(
                    (r.base_offset, r.last_offset, r.duplicate),
                    (base, last, true),
                    "epoch {epoch}: retry of seq {s}"
                );
            }
            assert_eq!(log.log_end_offset(), end);
            eprintln!(
                "epoch {epoch}: {} batches in the log, {} reported durable",
                mine.len(),
                durable.len()
            );
            let &(s, n, _, _) = mine.last().unwrap();
            let a = log.append(pbatch(PID, epoch, s + n, 1, 0), 0).unwrap();
            assert_eq!((a.base_offset, a.duplicate), (end, false));
            if epoch > 0 {
                assert!(matches!(
                    log.append(pbatch(PID, epoch - 1, 0, 1, 0), 0),
                    Err(StorageError::InvalidProducerEpoch { .. })
                ));
            }
            log.wait_durable(end).await.unwrap();
            if epoch % 3 == 0 {
                log.close().await.unwrap();
            }
            shard.shutdown().await.unwrap();
        });
    }
    assert!(
        replayed_sets > 0,
        "no journal round left anything to replay"
    );
}
