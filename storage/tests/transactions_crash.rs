//! Transactions across kill -9: a child process (this test binary, re-run on the ignored
//! `txn_child` entry) writes transactional batches of five producers, commits, aborts
//! and bulk plain batches (the log grows past 32 MiB, the rebuild window it once had
//! without a snapshot; producer 1's transaction stays open from the first round on),
//! printing the log end once durable;
//! the parent SIGKILLs it at a random moment, reopens the log without a clean shutdown
//! and checks the transaction state against a scan of the recovered log: the last
//! stable offset, the transactions under way, the aborted transactions of many windows
//! and what a read_committed reader sees. Rounds alternate between the `journal` and
//! `segment` flush modes.

mod common;
use common::txn::{read_committed, tx_batch, TxnModel};
use common::{
    batch, child_crash_opts, crash_opts, run, spawn_crash_child, tempdir, xorshift, CRASH_SYNC_ENV,
    CRASH_SYNC_MODES,
};
use sluice_proto::batch::{end_txn_marker, RecordBatchHeader};
use sluice_storage::*;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ROUNDS: u64 = 6;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2 << 20,
        index_interval_bytes: 4096,
        ..Default::default()
    }
}

#[test]
#[ignore = "child process of kill9_keeps_transactions"]
fn txn_child() {
    let Ok(dir) = std::env::var("SLUICE_TXN_DIR") else {
        return;
    };
    let round: u64 = std::env::var("SLUICE_TXN_ROUND")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let dir = PathBuf::from(dir);
    let opts = child_crash_opts(dir.parent().unwrap());
    run(move || async move {
        let shard = ShardStorage::start(opts);
        let log = PartitionLog::open(&shard, dir, config()).await.unwrap();
        log.load_transaction_state().await.unwrap();
        let epoch = round as i16;
        let mut seqs = [0i32; 6];
        let mut rng = 0x2545f4914f6cdd1du64 ^ (round + 1);
        let big = batch(8, 32 << 10, 1000, 3); // 256 KiB
        let mut tag = (round as u32) << 20;
        if round == 0 {
            log.append(tx_batch(1, epoch, 0, &[tag], true), 1).unwrap();
            tag += 1;
        }
        for i in 0u64.. {
            let pid = 2 + (xorshift(&mut rng) % 4) as i64;
            let info = match xorshift(&mut rng) % 8 {
                0..=3 => {
                    let s = seqs[pid as usize];
                    seqs[pid as usize] += 2;
                    let r = log.append(tx_batch(pid, epoch, s, &[tag, tag + 1], true), 1);
                    tag += 2;
                    r.unwrap()
                }
                4 | 5 => log
                    .append_control(pid, epoch, xorshift(&mut rng).is_multiple_of(2), 0, 1)
                    .unwrap(),
                _ => log.append(big.clone(), 1).unwrap(),
            };
            let log = log.clone();
            glommio::spawn_local(async move {
                if log.wait_durable(info.last_offset).await.is_ok() {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "D {}", info.last_offset + 1);
                    let _ = out.flush();
                }
            })
            .detach();
            if i % 8 == 7 {
                glommio::timer::sleep(Duration::from_micros(300)).await;
            }
        }
    });
}

/// The model of a log, from a scan of all its batches.
async fn scan_model(log: &PartitionLog) -> TxnModel {
    let mut m = TxnModel::default();
    for b in common::all_batches(log).await {
        let h = RecordBatchHeader::parse(&b).unwrap();
        if h.is_control() {
            let mk = end_txn_marker(&b).unwrap().unwrap();
            m.marker(h.producer_id, mk.commit, h.base_offset);
            continue;
        }
        let tags: Vec<u32> = common::records_of(&b)
            .iter()
            .map(|r| {
                let v = r.3.as_ref().unwrap();
                if v.len() == 4 {
                    u32::from_be_bytes([v[0], v[1], v[2], v[3]])
                } else {
                    u32::MAX
                }
            })
            .collect();
        m.data(h.producer_id, h.is_transactional(), h.base_offset, &tags);
    }
    m
}

#[test]
fn kill9_keeps_transactions() {
    let dir = tempdir();
    let path = dir.path().join("txn-crash");
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut replayed_sets = 0;
    for round in 0..ROUNDS {
        let mode = CRASH_SYNC_MODES[round as usize % 2];
        let mut child = spawn_crash_child(
            "txn_child",
            &[
                ("SLUICE_TXN_DIR", path.display().to_string()),
                ("SLUICE_TXN_ROUND", round.to_string()),
                (CRASH_SYNC_ENV, mode.to_string()),
            ],
        );
        // at least ~8 MiB more per round: past 32 MiB by round 4
        let want = 8u64 << 20;
        let extra = Duration::from_millis(xorshift(&mut rng) % 60);
        let deadline = Instant::now() + Duration::from_secs(60);
        let start_bytes = dir_bytes(&path);
        let mut durable = 0i64;
        let mut reached = None;
        loop {
            match child.lines.recv_timeout(Duration::from_millis(5)) {
                Ok(l) => durable = durable.max(parse(&l)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
            if reached.is_none() && dir_bytes(&path) >= start_bytes + want {
                reached = Some(Instant::now());
            }
            if reached.is_some_and(|t| t.elapsed() >= extra) || Instant::now() > deadline {
                break;
            }
        }
        for l in child.kill9() {
            durable = durable.max(parse(&l));
        }
        assert!(durable > 0, "child reported nothing (round {round})");
        let p = path.clone();
        let (opts, sets) = crash_opts(dir.path(), mode);
        replayed_sets += sets;
        run(move || async move {
            let shard = ShardStorage::start(opts);
            let log = PartitionLog::open(&shard, p, config()).await.unwrap();
            let end = log.log_end_offset();
            assert!(
                end >= durable,
                "round {round}: durable end {durable} lost ({end})"
            );
            log.load_transaction_state().await.unwrap();
            let mut m = scan_model(&log).await;
            let lso = log.last_stable_offset(end);
            assert_eq!(lso, m.lso(end), "round {round}: last stable offset");
            assert_eq!(lso, 0, "producer 1's transaction is open from offset 0");
            let ongoing: HashMap<i64, i64> = log
                .producers()
                .iter()
                .filter(|p| p.current_txn_start_offset >= 0)
                .map(|p| (p.producer_id, p.current_txn_start_offset))
                .collect();
            assert_eq!(ongoing, m.ongoing_set(), "round {round}: under way");
            let mut points: Vec<i64> = (0..=end).step_by((end as usize / 20).max(1)).collect();
            points.push(end);
            for &from in &points {
                for &upper in &points {
                    let mut got = log.aborted_transactions(from, upper).await.unwrap();
                    got.sort();
                    let want = m.aborted(from, upper);
                    let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).collect();
                    let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).collect();
                    let involved: Vec<_> = m
                        .txns
                        .iter()
                        .filter(|t| {
                            extra
                                .iter()
                                .chain(missing.iter())
                                .any(|a| a.producer_id == t.pid && a.first_offset == t.first)
                        })
                        .collect();
                    assert!(
                        extra.is_empty() && missing.is_empty(),
                        "round {round}: [{from}, {upper}): extra {extra:?}, missing {missing:?}: {involved:?}"
                    );
                }
            }
            // read past the last stable offset, a read_committed reader drops exactly
            // the aborted transactions' records (bulk records left out of the compare)
            let strip = |v: Vec<u32>| v.into_iter().filter(|&t| t != u32::MAX).collect::<Vec<_>>();
            assert_eq!(
                strip(read_committed(&log, 0, end).await),
                strip(m.visible(0, end)),
                "round {round}: read_committed view"
            );
            eprintln!(
                "round {round}: end {end}, {} bytes, {} transactions",
                log.size_bytes(),
                m.txns.len()
            );
            if round % 2 == 1 {
                log.close().await.unwrap();
            }
            shard.shutdown().await.unwrap();
        });
    }
    assert!(
        dir_bytes(&path) > 32 << 20,
        "the log did not grow past 32 MiB"
    );
    assert!(
        replayed_sets > 0,
        "no journal round left anything to replay"
    );
}

fn parse(l: &str) -> i64 {
    l.strip_prefix("D ")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
