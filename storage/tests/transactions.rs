//! Transactions in storage: transactional appends and markers (`append_control`), the
//! last stable offset, the aborted-transactions index, restarts (clean and not) with a
//! transaction open across segments and 40 MiB of log, or begun before any snapshot,
//! truncation, retention and the cleaner around transactions, and a follower replaying
//! the leader's batches. Each step is checked against `common::txn::TxnModel`.

mod common;
use common::txn::{check_txns, tx_batch, TxnModel};
use common::{batch, run, tempdir, xorshift};
use sluice_proto::batch::RecordBatchHeader;
use sluice_storage::*;
use std::path::PathBuf;

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        ..Default::default()
    }
}

/// A transactional producer in a test: its id, epoch and next sequence.
struct Producer {
    pid: i64,
    epoch: i16,
    seq: i32,
}

impl Producer {
    fn new(pid: i64) -> Producer {
        Producer {
            pid,
            epoch: 0,
            seq: 0,
        }
    }
    /// Appends `n` records (tags from `tag`) transactionally (or not) and notes them.
    fn send(&mut self, log: &PartitionLog, m: &mut TxnModel, n: u32, tag: u32, txn: bool) {
        let tags: Vec<u32> = (tag..tag + n).collect();
        let b = tx_batch(self.pid, self.epoch, self.seq, &tags, txn);
        let info = log.append(b, 1000).unwrap();
        m.data(self.pid, txn, info.base_offset, &tags);
        self.seq += n as i32;
    }
    fn end(&mut self, log: &PartitionLog, m: &mut TxnModel, commit: bool) {
        let info = log
            .append_control(self.pid, self.epoch, commit, 0, 2000)
            .unwrap();
        m.marker(self.pid, commit, info.base_offset);
    }
}

async fn durable(log: &PartitionLog) -> i64 {
    let end = log.log_end_offset();
    if end > log.log_start_offset() {
        log.wait_durable(end - 1).await.unwrap();
    }
    log.durable_offset()
}

#[test]
fn commits_and_aborts_of_interleaved_producers() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path, small_segments())
            .await
            .unwrap();
        log.set_leader_epoch(3);
        let mut m = TxnModel::default();
        let mut ps: Vec<Producer> = (1..=4).map(Producer::new).collect();
        let mut in_txn = [false; 4];
        let mut rng = 0x9e3779b97f4a7c15u64;
        let mut tag = 0u32;
        for step in 0..120 {
            let i = (xorshift(&mut rng) % 4) as usize;
            match xorshift(&mut rng) % 6 {
                0..=2 => {
                    let n = 1 + (xorshift(&mut rng) % 3) as u32;
                    ps[i].send(&log, &mut m, n, tag, true);
                    in_txn[i] = true;
                    tag += n;
                }
                3 => {
                    // plain records, from nobody
                    let info = log
                        .append(tx_batch(-1, -1, -1, &[tag], false), 1000)
                        .unwrap();
                    m.data(-1, false, info.base_offset, &[tag]);
                    tag += 1;
                }
                c => {
                    ps[i].end(&log, &mut m, c == 4);
                    in_txn[i] = false;
                }
            }
            if step % 7 == 0 {
                // the marker below the high watermark is what makes it stable
                let end = log.log_end_offset();
                let hw = durable(&log).await.min(end);
                check_txns(&log, &mut m, hw, &format!("step {step}")).await;
            }
        }
        let hw = durable(&log).await;
        check_txns(&log, &mut m, hw, "end").await;
        // the markers are control batches as Kafka writes them, stamped with the epoch
        let all = common::all_batches(&log).await;
        let markers: Vec<RecordBatchHeader> = all
            .iter()
            .map(|b| RecordBatchHeader::parse(b).unwrap())
            .filter(|h| h.is_control())
            .collect();
        assert!(!markers.is_empty());
        for h in markers {
            assert!(h.is_transactional() && h.base_sequence == -1 && h.records_count == 1);
            assert_eq!(h.partition_leader_epoch, 3);
        }
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn the_last_stable_offset_waits_for_the_marker_to_be_below_the_high_watermark() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path, LogConfig::default())
            .await
            .unwrap();
        let mut m = TxnModel::default();
        let mut a = Producer::new(1);
        let mut b = Producer::new(2);
        a.send(&log, &mut m, 2, 0, true); // 0..=1
        b.send(&log, &mut m, 1, 2, true); // 2
        assert_eq!(log.first_unstable_offset(), Some(0));
        a.end(&log, &mut m, false); // abort at 3
        assert_eq!(
            log.last_stable_offset(3),
            0,
            "A's marker is not replicated yet"
        );
        assert_eq!(log.last_stable_offset(4), 2, "now it is; B is still open");
        // the high watermark never goes down: A stays stable
        assert_eq!(log.last_stable_offset(3), 2);
        b.end(&log, &mut m, true); // commit at 4
        assert_eq!(log.last_stable_offset(4), 2);
        assert_eq!(log.last_stable_offset(5), 5);
        assert_eq!(log.first_unstable_offset(), None);
        let got = log.aborted_transactions(0, 5).await.unwrap();
        assert_eq!(
            got,
            vec![AbortedTxn {
                producer_id: 1,
                first_offset: 0
            }]
        );
        assert!(log.aborted_transactions(4, 5).await.unwrap().is_empty());
        let hw = durable(&log).await;
        check_txns(&log, &mut m, hw, "end").await;
        let infos = log.producers();
        let a_info = infos.iter().find(|p| p.producer_id == 1).unwrap();
        assert_eq!(
            (
                a_info.epoch,
                a_info.coordinator_epoch,
                a_info.current_txn_start_offset
            ),
            (0, 0, -1)
        );
        assert_eq!(a_info.last_sequence, 1);
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn producer_and_coordinator_fencing() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path, LogConfig::default())
            .await
            .unwrap();
        log.append(tx_batch(5, 1, 0, &[1], true), 1).unwrap();
        // a plain batch of a producer inside its transaction
        let plain = log.append(tx_batch(5, 1, 1, &[2], false), 1);
        assert!(matches!(
            plain,
            Err(StorageError::InvalidTxnState { producer_id: 5, .. })
        ));
        // an older epoch, for data and for a marker
        assert!(matches!(
            log.append(tx_batch(5, 0, 0, &[3], true), 1),
            Err(StorageError::InvalidProducerEpoch {
                current: 1,
                got: 0,
                ..
            })
        ));
        assert!(matches!(
            log.append_control(5, 0, true, 0, 1),
            Err(StorageError::InvalidProducerEpoch {
                current: 1,
                got: 0,
                ..
            })
        ));
        let end = log.log_end_offset();
        // a marker bumps the epoch and sets the coordinator epoch
        log.append_control(5, 2, false, 7, 1).unwrap();
        assert!(matches!(
            log.append_control(5, 2, true, 6, 1),
            Err(StorageError::TransactionCoordinatorFenced {
                current: 7,
                got: 6,
                ..
            })
        ));
        assert_eq!(log.log_end_offset(), end + 1);
        let p = log.producers()[0];
        assert_eq!(
            (p.epoch, p.coordinator_epoch, p.current_txn_start_offset),
            (2, 7, -1)
        );
        // a marker for a producer with no transaction here is written, and records nothing
        let info = log.append_control(8, 0, false, 1, 1).unwrap();
        assert_eq!(info.base_offset, end + 1);
        assert_eq!(
            log.aborted_transactions(0, i64::MAX).await.unwrap(),
            vec![AbortedTxn {
                producer_id: 5,
                first_offset: 0
            }]
        );
        // the producer goes on at the new epoch; once the abort is below the high
        // watermark only the new transaction is unstable
        log.append(tx_batch(5, 2, 0, &[4], true), 1).unwrap();
        assert_eq!(log.first_unstable_offset(), Some(0));
        assert_eq!(log.last_stable_offset(end + 2), end + 2);
        assert_eq!(log.first_unstable_offset(), Some(end + 2));
        shard.shutdown().await.unwrap();
    });
}

/// Writes a long transaction (producer 1, open from offset 0) across many segments and
/// more than 32 MiB (the rebuild window the log once had without a snapshot), with aborts
/// and commits of others in between.
async fn long_transaction(log: &PartitionLog, m: &mut TxnModel, rounds: u32) {
    let mut a = Producer::new(1);
    let mut b = Producer::new(2);
    let mut c = Producer::new(3);
    a.send(log, m, 1, 0, true);
    let big = batch(16, 16 << 10, 1000, 7); // 256 KiB
    let mut tag = 100;
    for r in 0..rounds {
        for _ in 0..8 {
            let info = log.append(big.clone(), 1000).unwrap();
            // plain records, not tracked by tag (the model only knows their offsets)
            for o in info.base_offset..=info.last_offset {
                m.records.insert(o, (u32::MAX, None));
            }
            m.batches.push((info.base_offset, info.last_offset));
            m.end = info.last_offset + 1;
        }
        b.send(log, m, 2, tag, true);
        c.send(log, m, 1, tag + 2, true);
        b.end(log, m, r % 2 == 0);
        c.end(log, m, r % 3 != 0);
        tag += 3;
        durable(log).await;
    }
    a.send(log, m, 1, tag, true);
}

fn big_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4 << 20,
        ..Default::default()
    }
}

/// The read_committed view ignores the untracked bulk records (tag u32::MAX).
fn drop_bulk(v: Vec<u32>) -> Vec<u32> {
    v.into_iter().filter(|&t| t != u32::MAX).collect()
}

#[test]
fn a_long_transaction_survives_a_clean_restart_and_a_crash() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    let p = path.clone();
    let m = run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, p, big_segments()).await.unwrap();
        let mut m = TxnModel::default();
        long_transaction(&log, &mut m, 20).await; // 40 MiB
        assert!(log.size_bytes() > 40 << 20);
        let hw = durable(&log).await;
        assert_eq!(log.last_stable_offset(hw), 0);
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
        m
    });
    let n_snapshots = std::fs::read_dir(&path)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "snapshot")
        })
        .count();
    assert!((1..=4).contains(&n_snapshots), "{n_snapshots} snapshots");
    let p = path.clone();
    let m = run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, p, big_segments()).await.unwrap();
        // before the state is loaded the answer is conservative
        assert_eq!(log.last_stable_offset(log.log_end_offset()), 0);
        log.load_transaction_state().await.unwrap();
        let mut m = m;
        let hw = log.durable_offset();
        check_small(&log, &mut m, hw, "clean restart").await;
        // more of it, then a crash (no close): recovery rescans the active segment
        long_transaction_more(&log, &mut m).await;
        m
    });
    let p = path.clone();
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, p, big_segments()).await.unwrap();
        log.load_transaction_state().await.unwrap();
        let mut m = m;
        let hw = log.durable_offset();
        assert_eq!(hw, m.end);
        check_small(&log, &mut m, hw, "after a crash").await;
        shard.shutdown().await.unwrap();
    });
}

async fn long_transaction_more(log: &PartitionLog, m: &mut TxnModel) {
    let mut d = Producer::new(4);
    let big = batch(16, 16 << 10, 1000, 9);
    d.send(log, m, 1, 5000, true);
    for _ in 0..20 {
        let info = log.append(big.clone(), 1000).unwrap();
        for o in info.base_offset..=info.last_offset {
            m.records.insert(o, (u32::MAX, None));
        }
        m.batches.push((info.base_offset, info.last_offset));
        m.end = info.last_offset + 1;
    }
    d.end(log, m, false);
    durable(log).await;
}

/// `check_txns` on a log with untracked bulk records: aborted transactions of a few
/// windows, the last stable offset, the transactions under way and the read_committed
/// view (bulk records left out).
async fn check_small(log: &PartitionLog, m: &mut TxnModel, hw: i64, ctx: &str) {
    let lso = log.last_stable_offset(hw);
    assert_eq!(lso, m.lso(hw), "{ctx}: last stable offset");
    assert_eq!(log.first_unstable_offset(), m.first_unstable(), "{ctx}");
    let ongoing: std::collections::HashMap<i64, i64> = log
        .producers()
        .iter()
        .filter(|p| p.current_txn_start_offset >= 0)
        .map(|p| (p.producer_id, p.current_txn_start_offset))
        .collect();
    assert_eq!(ongoing, m.ongoing_set(), "{ctx}: transactions under way");
    let end = log.log_end_offset();
    for (from, upper) in [
        (0, end),
        (0, 1),
        (end / 2, end),
        (end / 3, end / 2),
        (end, end + 1),
    ] {
        let mut got = log.aborted_transactions(from, upper).await.unwrap();
        got.sort();
        assert_eq!(
            got,
            m.aborted(from, upper),
            "{ctx}: aborted in [{from}, {upper})"
        );
    }
    let view = drop_bulk(common::txn::read_committed(log, 0, lso).await);
    assert_eq!(
        view,
        drop_bulk(m.visible(0, lso)),
        "{ctx}: read_committed view"
    );
}

#[test]
fn truncation_into_a_transaction_and_past_a_marker() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    let p = path.clone();
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, p.clone(), small_segments())
            .await
            .unwrap();
        let mut m = TxnModel::default();
        let mut a = Producer::new(1);
        let mut b = Producer::new(2);
        let mut tag = 0;
        for round in 0..6 {
            a.send(&log, &mut m, 3, tag, true);
            b.send(&log, &mut m, 2, tag + 3, true);
            a.send(&log, &mut m, 1, tag + 5, true);
            b.end(&log, &mut m, round % 2 == 1);
            a.end(&log, &mut m, round % 3 == 1);
            tag += 6;
        }
        a.send(&log, &mut m, 2, tag, true);
        a.send(&log, &mut m, 2, tag + 2, true);
        let hw = durable(&log).await;
        check_txns(&log, &mut m, hw, "before").await;
        // into the middle of A's open transaction: it stays open from its first offset
        let cut = m.end - 2;
        let got = log.truncate_from(cut).await.unwrap();
        assert_eq!(got, m.boundary(cut));
        m.truncate(got);
        log.load_transaction_state().await.unwrap();
        check_txns(
            &log,
            &mut m,
            log.durable_offset(),
            "cut inside a transaction",
        )
        .await;
        // past the last two markers: those transactions are open again
        let markers: Vec<i64> = m.txns.iter().filter_map(|t| t.end.map(|e| e.0)).collect();
        let cut = markers[markers.len() - 2];
        let got = log.truncate_from(cut).await.unwrap();
        assert_eq!(got, cut);
        m.truncate(got);
        log.load_transaction_state().await.unwrap();
        check_txns(&log, &mut m, log.durable_offset(), "cut at a marker").await;
        // the log goes on: a new abort lands in the cut segment's index
        b.epoch += 1;
        b.seq = 0;
        b.end(&log, &mut m, false);
        let hw = durable(&log).await;
        check_txns(&log, &mut m, hw, "after the cut").await;
        log.close().await.unwrap();
        let log = PartitionLog::open(&shard, p, small_segments())
            .await
            .unwrap();
        log.load_transaction_state().await.unwrap();
        check_txns(&log, &mut m, hw, "reopened").await;
        // no snapshot past the end survives a cut
        let end = log.log_end_offset();
        for e in std::fs::read_dir(dir.path().join("t-0")).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if let Some(o) = name.strip_suffix(".snapshot") {
                assert!(o.parse::<i64>().unwrap() <= end, "{name}");
            }
        }
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn retention_stops_at_the_first_unstable_offset() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let cfg = LogConfig {
            segment_bytes: 4096,
            retention_bytes: 8192,
            ..Default::default()
        };
        let log = PartitionLog::open(&shard, path, cfg).await.unwrap();
        let mut m = TxnModel::default();
        for i in 0..20u32 {
            let info = log
                .append(tx_batch(-1, -1, -1, &[i; 20], false), 1000)
                .unwrap();
            m.data(-1, false, info.base_offset, &[i; 20]);
        }
        let mut a = Producer::new(1);
        a.send(&log, &mut m, 1, 1000, true);
        let first = m.txns[0].first;
        for i in 0..60u32 {
            let info = log
                .append(tx_batch(-1, -1, -1, &[i; 20], false), 1000)
                .unwrap();
            m.data(-1, false, info.base_offset, &[i; 20]);
        }
        let hw = durable(&log).await;
        log.enforce_retention(10_000).await.unwrap();
        let start = log.log_start_offset();
        assert!(
            start > 0 && start <= first,
            "start {start}, transaction at {first}"
        );
        m.set_start(start);
        check_txns(&log, &mut m, hw, "open transaction").await;
        a.end(&log, &mut m, true);
        let hw = durable(&log).await;
        // the marker is not below the high watermark yet: still unstable
        assert_eq!(log.last_stable_offset(hw - 1), first);
        log.enforce_retention(10_000).await.unwrap();
        assert_eq!(log.log_start_offset(), start);
        assert_eq!(log.last_stable_offset(hw), hw);
        log.enforce_retention(10_000).await.unwrap();
        let start = log.log_start_offset();
        assert!(start > first);
        m.set_start(start);
        check_txns(&log, &mut m, hw, "committed").await;
        shard.shutdown().await.unwrap();
    });
}

#[test]
fn the_cleaner_drops_aborted_records_and_keeps_committed_ones_and_markers() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    let p = path.clone();
    let cfg = LogConfig {
        segment_bytes: 1024,
        cleanup_policy: CleanupPolicy::parse("compact").unwrap(),
        ..Default::default()
    };
    let c = cfg.clone();
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions {
            cleaner_enabled: false,
            ..Default::default()
        });
        let log = PartitionLog::open(&shard, p.clone(), c.clone())
            .await
            .unwrap();
        let kv = |pid: i64, seq: i32, key: &[u8], val: &[u8]| {
            common::kv_batch(
                &[(key, Some(val))],
                1000,
                0,
                (pid >= 0).then_some((pid, 0, seq)),
            )
            .to_vec()
        };
        let set_txn = |mut v: Vec<u8>, txn: bool| {
            if txn {
                v[22] |= 0x10;
                let crc = crc32c::crc32c(&v[21..]);
                v[17..21].copy_from_slice(&crc.to_be_bytes());
            }
            bytes::Bytes::from(v)
        };
        // A commits a=1; B aborts a=2 (later); C stays open with c=3, later still
        log.append(set_txn(kv(1, 0, b"a", b"1"), true), 1000)
            .unwrap();
        log.append_control(1, 0, true, 0, 1000).unwrap();
        let aborted = log
            .append(set_txn(kv(2, 0, b"a", b"2"), true), 1000)
            .unwrap();
        log.append(set_txn(kv(2, 1, b"b", b"2"), true), 1000)
            .unwrap();
        log.append_control(2, 0, false, 0, 1000).unwrap();
        for i in 0..40 {
            log.append(
                set_txn(kv(-1, 0, b"z", format!("{i}").as_bytes()), false),
                1000,
            )
            .unwrap();
        }
        let open = log
            .append(set_txn(kv(3, 0, b"c", b"3"), true), 1000)
            .unwrap();
        for i in 0..40 {
            log.append(
                set_txn(kv(-1, 0, b"y", format!("{i}").as_bytes()), false),
                1000,
            )
            .unwrap();
        }
        let hw = durable(&log).await;
        let pass = log.compact(100_000).await.unwrap().expect("pass");
        // nothing at or past C's open transaction is cleaned
        assert!(pass.clean_offset <= open.base_offset, "{pass:?}");
        let recs: Vec<(i64, Vec<u8>, Vec<u8>)> = common::all_batches(&log)
            .await
            .iter()
            .filter(|b| !RecordBatchHeader::parse(b).unwrap().is_control())
            .flat_map(|b| common::records_of(b))
            .map(|r| (r.0, r.2.unwrap(), r.3.unwrap()))
            .collect();
        // a=1 (committed) survives although the aborted a=2 came later; b=2 is gone
        assert!(recs.iter().any(|r| r.1 == b"a" && r.2 == b"1"), "{recs:?}");
        assert!(!recs.iter().any(|r| r.0 == aborted.base_offset), "{recs:?}");
        assert!(!recs.iter().any(|r| r.1 == b"b"), "{recs:?}");
        assert!(recs.iter().any(|r| r.1 == b"c"), "{recs:?}");
        let markers = common::all_batches(&log)
            .await
            .iter()
            .filter(|b| RecordBatchHeader::parse(b).unwrap().is_control())
            .count();
        assert_eq!(markers, 2, "markers are kept");
        // the cleaned segment carries the aborted transaction, also after a reopen
        let want = vec![AbortedTxn {
            producer_id: 2,
            first_offset: aborted.base_offset,
        }];
        assert_eq!(log.aborted_transactions(0, hw).await.unwrap(), want);
        log.close().await.unwrap();
        let log = PartitionLog::open(&shard, p, c).await.unwrap();
        assert_eq!(log.aborted_transactions(0, hw).await.unwrap(), want);
        log.load_transaction_state().await.unwrap();
        assert_eq!(log.last_stable_offset(hw), open.base_offset);
        shard.shutdown().await.unwrap();
    });
    assert!(path.join(format!("{:020}.txnindex", 0)).exists());
}

#[test]
fn a_follower_replays_transactions_as_the_leader_did() {
    let dir = tempdir();
    let (lp, fp): (PathBuf, PathBuf) = (dir.path().join("l-0"), dir.path().join("f-0"));
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let leader = PartitionLog::open(&shard, lp, small_segments())
            .await
            .unwrap();
        let follower = PartitionLog::open(&shard, fp.clone(), small_segments())
            .await
            .unwrap();
        leader.set_leader_epoch(1);
        let mut m = TxnModel::default();
        let mut ps: Vec<Producer> = (1..=3).map(Producer::new).collect();
        let mut rng = 7u64;
        let mut tag = 0;
        let mut copied = 0;
        for step in 0..60 {
            let i = (xorshift(&mut rng) % 3) as usize;
            match xorshift(&mut rng) % 4 {
                0 | 1 => {
                    ps[i].send(&leader, &mut m, 2, tag, true);
                    tag += 2;
                }
                c => ps[i].end(&leader, &mut m, c == 2),
            }
            if step % 5 == 4 {
                durable(&leader).await;
                for b in leader.read(copied, i64::MAX, 1 << 20, true).await.unwrap() {
                    copied = RecordBatchHeader::parse(&b).unwrap().last_offset() + 1;
                    follower.append_replicated(b).unwrap();
                }
                let hw = durable(&follower).await;
                let mut fm = m.clone();
                check_txns(&follower, &mut fm, hw, &format!("follower at {step}")).await;
                assert_eq!(follower.producers(), leader.producers());
            }
        }
        // the follower takes over after a restart: same state
        follower.close().await.unwrap();
        let follower = PartitionLog::open(&shard, fp, small_segments())
            .await
            .unwrap();
        follower.load_transaction_state().await.unwrap();
        let hw = follower.log_end_offset();
        m.truncate(hw);
        check_txns(&follower, &mut m, hw, "follower reopened").await;
        shard.shutdown().await.unwrap();
    });
}

/// A log with no producer-state snapshot (one that never rolled a segment nor stopped
/// cleanly, or whose snapshots are gone) is rebuilt from its start after a crash, as
/// Kafka's is: a transaction begun before any later window stays open (the last stable
/// offset holds at its first offset), and its abort is indexed. Read from only the newest
/// segments, the transaction was forgotten: read_committed consumers saw its records, and
/// still did after the abort.
#[test]
fn an_open_transaction_is_remembered_after_a_crash_without_a_snapshot() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    let p = path.clone();
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, p, small_segments())
            .await
            .unwrap();
        let mut m = TxnModel::default();
        Producer::new(7).send(&log, &mut m, 3, 0, true); // offsets 0..=2, left open
        for tag in 0..30u8 {
            log.append(batch(2, 500, 1000, tag), 1000).unwrap(); // rolls many segments
        }
        let hw = durable(&log).await;
        assert_eq!(log.last_stable_offset(hw), 0);
        // a crash: no close, so no shutdown snapshot
    });
    common::remove_snapshots(&path);
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path, small_segments())
            .await
            .unwrap();
        log.load_transaction_state().await.unwrap();
        let hw = log.durable_offset();
        assert_eq!(hw, 63);
        assert_eq!(
            log.last_stable_offset(hw),
            0,
            "the open transaction was forgotten"
        );
        let abort = log.append_control(7, 0, false, 0, 2000).unwrap();
        let end = durable(&log).await;
        assert_eq!(log.last_stable_offset(end), end);
        let aborted = log.aborted_transactions(0, end).await.unwrap();
        assert_eq!(
            aborted
                .iter()
                .map(|a| (a.producer_id, a.first_offset))
                .collect::<Vec<_>>(),
            vec![(7, 0)],
            "the abort at {} indexed nothing",
            abort.base_offset
        );
        shard.shutdown().await.unwrap();
    });
}
