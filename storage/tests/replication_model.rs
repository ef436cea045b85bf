//! Property test of the replication groundwork: two logs, a leader L and a follower F,
//! take random sequences of writes under leader epochs (by L, or by F acting as a leader
//! that L never hears from), follower syncs, follower truncations, clean reopens and
//! crashes (no close). A sync is what a follower does: find the divergence point with
//! `end_offset_for_epoch` on both logs (KIP-101 with KIP-279's extra rounds), `truncate_from`
//! it, then copy L's batches with `append_replicated`. Checked after every step: each log
//! is contiguous and its leader-epoch cache equals the one its batches imply; after the
//! truncation of a sync F is a byte-for-byte prefix of L, and after the copy F == L with
//! equal caches; a reopen gives back the log (clean) or a prefix at least as long as what
//! was durable (crash). Cases: 24 (override with PROPTEST_CASES).

mod common;
use bytes::{Bytes, BytesMut};
use common::{batch, run, tempdir};
use proptest::prelude::*;
use sluice_proto::batch::{validate_batch, RecordBatchHeader};
use sluice_storage::*;
use std::path::PathBuf;

#[derive(Clone, Debug)]
enum Op {
    /// Append batches (records per batch) on L or, as a diverging leader, on F; under a
    /// new epoch if asked (always when the writer changes or after a crash).
    Write {
        on_follower: bool,
        new_epoch: bool,
        batches: Vec<u8>,
        wait: bool,
    },
    /// Reconcile F with L and copy L into F, `chunk` batches per `append_replicated`.
    Sync {
        chunk: u8,
    },
    /// F cuts its log at an arbitrary point (as after a high-watermark truncation).
    TruncateFollower {
        at: u16,
    },
    Reopen,
    Crash {
        settle: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::bool::weighted(0.25), prop::bool::weighted(0.3),
              prop::collection::vec(1u8..4, 1..4), any::<bool>())
            .prop_map(|(on_follower, new_epoch, batches, wait)| Op::Write { on_follower, new_epoch, batches, wait }),
        3 => (1u8..4).prop_map(|chunk| Op::Sync { chunk }),
        1 => any::<u16>().prop_map(|at| Op::TruncateFollower { at }),
        1 => Just(Op::Reopen),
        1 => any::<bool>().prop_map(|settle| Op::Crash { settle }),
    ]
}

/// What the test knows across sessions (plain data).
#[derive(Clone, Debug, Default)]
struct World {
    epoch: i32,
    /// Who wrote under `epoch`: Some(true) = F.
    owner: Option<bool>,
    /// A crash happened: the next writer starts a new epoch (a restarted leader).
    force_new_epoch: bool,
    /// Last observed batches of L and F, and how much of each is known durable.
    seen: [Vec<Bytes>; 2],
    durable: [usize; 2],
    tag: u8,
}

fn header(b: &[u8]) -> RecordBatchHeader {
    RecordBatchHeader::parse(b).unwrap()
}

async fn all(log: &PartitionLog) -> Vec<Bytes> {
    let end = log.log_end_offset();
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < end {
        let bs = log.read(next, end, 1 << 20, true).await.unwrap();
        assert!(!bs.is_empty(), "read({next}) below end {end} gave nothing");
        for b in bs {
            let h = validate_batch(&b).unwrap();
            assert_eq!(h.base_offset, next, "offsets not contiguous");
            next = h.last_offset() + 1;
            out.push(b);
        }
    }
    out
}

/// The epoch cache the batches imply (epochs only rise in this test).
fn derive_epochs(batches: &[Bytes]) -> Vec<(i32, i64)> {
    let mut out: Vec<(i32, i64)> = Vec::new();
    for b in batches {
        let h = header(b);
        if out
            .last()
            .is_none_or(|&(e, _)| e != h.partition_leader_epoch)
        {
            out.push((h.partition_leader_epoch, h.base_offset));
        }
    }
    out
}

async fn check(log: &PartitionLog, ctx: &str) -> Vec<Bytes> {
    let b = all(log).await;
    assert_eq!(log.epoch_entries(), derive_epochs(&b), "{ctx}: epoch cache");
    b
}

/// KIP-101/279 follower truncation: returns the offset F must cut at.
fn divergence(l: &PartitionLog, f: &PartitionLog) -> Option<i64> {
    let f_end = f.log_end_offset();
    let fe = f.latest_epoch()?; // no epochs: F is empty here (everything is stamped)
    let Some((le, lo)) = l.end_offset_for_epoch(fe) else {
        return Some(0); // L has no epochs (UNDEFINED): nothing of F can be trusted
    };
    if le == fe {
        return Some(lo.min(f_end));
    }
    // L does not have F's epoch: cut where F's copy of L's epoch `le` ends
    match f.end_offset_for_epoch(le) {
        Some((_, fo)) => Some(lo.min(fo)),
        None => Some(lo.min(f_end)),
    }
}

async fn sync(l: &PartitionLog, f: &PartitionLog, chunk: usize, ctx: &str) {
    // reconcile (KIP-279 may take several rounds)
    for _ in 0..16 {
        let Some(cut) = divergence(l, f) else { break };
        if cut >= f.log_end_offset() {
            break;
        }
        let got = f.truncate_from(cut).await.unwrap();
        assert!(got <= cut, "{ctx}: cut {cut} answered {got}");
    }
    let lb = all(l).await;
    let fb = all(f).await;
    assert!(
        fb.len() <= lb.len() && fb[..] == lb[..fb.len()],
        "{ctx}: after reconciliation F ({} batches) is not a prefix of L ({})",
        fb.len(),
        lb.len()
    );
    for part in lb[fb.len()..].chunks(chunk) {
        let mut buf = BytesMut::new();
        for b in part {
            buf.extend_from_slice(b);
        }
        f.append_replicated(buf.freeze())
            .unwrap_or_else(|e| panic!("{ctx}: append_replicated: {e}"));
    }
    assert!(all(f).await == lb, "{ctx}: F differs from L after the copy");
    assert_eq!(f.epoch_entries(), l.epoch_entries(), "{ctx}: caches differ");
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1200,
        index_interval_bytes: 100,
        ..Default::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Fresh,
    Clean,
    Crash,
}

async fn session(dirs: [PathBuf; 2], mut w: World, prev: End, ops: Vec<Op>) -> (World, End) {
    let shard = ShardStorage::start(ShardStorageOptions {
        retention_check_interval: std::time::Duration::from_secs(3600),
        ..Default::default()
    });
    let mut logs = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let log = PartitionLog::open(&shard, d.clone(), config())
            .await
            .unwrap_or_else(|e| panic!("open after {prev:?}: {e}"));
        let ctx = format!("log {i} reopened after {prev:?}");
        let got = check(&log, &ctx).await;
        let seen = &w.seen[i];
        if prev == End::Crash {
            assert!(
                got.len() >= w.durable[i]
                    && got.len() <= seen.len()
                    && got[..] == seen[..got.len()],
                "{ctx}: recovered {} batches, durable {}, had {}",
                got.len(),
                w.durable[i],
                seen.len()
            );
        } else {
            assert!(got == *seen, "{ctx}: log differs");
        }
        w.seen[i] = got;
        w.durable[i] = w.seen[i].len();
        logs.push(log);
    }
    let (l, f) = (&logs[0], &logs[1]);
    for (n, op) in ops.into_iter().enumerate() {
        let ctx = format!("op {n} {op:?}");
        match op {
            Op::Write {
                on_follower,
                new_epoch,
                batches,
                wait,
            } => {
                if new_epoch || w.force_new_epoch || w.owner != Some(on_follower) {
                    w.epoch += 1;
                    w.owner = Some(on_follower);
                    w.force_new_epoch = false;
                }
                let log = if on_follower { f } else { l };
                log.set_leader_epoch(w.epoch);
                let mut last = -1;
                for n in batches {
                    w.tag = w.tag.wrapping_add(1);
                    last = log
                        .append(batch(n as usize, 30 + w.tag as usize % 90, 1000, w.tag), 1)
                        .unwrap_or_else(|e| panic!("{ctx}: {e}"))
                        .last_offset;
                }
                if wait {
                    log.wait_durable(last).await.unwrap();
                }
            }
            Op::Sync { chunk } => sync(l, f, chunk as usize, &ctx).await,
            Op::TruncateFollower { at } => {
                let end = f.log_end_offset();
                let at = at as i64 % (end + 1);
                let got = f.truncate_from(at).await.unwrap();
                assert!(got <= at.max(f.log_start_offset()), "{ctx}: cut at {got}");
                assert_eq!(f.log_end_offset(), got, "{ctx}");
                assert_eq!(f.durable_offset(), got, "{ctx}: durable after the cut");
            }
            Op::Reopen => {
                for log in &logs {
                    log.close().await.unwrap();
                }
                shard.shutdown().await.unwrap();
                return (w, End::Clean);
            }
            Op::Crash { settle } => {
                for (i, log) in logs.iter().enumerate() {
                    if settle && log.log_end_offset() > log.log_start_offset() {
                        log.wait_durable(log.log_end_offset() - 1).await.unwrap();
                    }
                    let durable = log.durable_offset();
                    w.seen[i] = check(log, &ctx).await;
                    w.durable[i] = w.seen[i]
                        .iter()
                        .take_while(|b| header(b).last_offset() < durable)
                        .count();
                }
                w.force_new_epoch = true;
                return (w, End::Crash);
            }
        }
        for (i, log) in logs.iter().enumerate() {
            let got = check(log, &format!("{ctx}, log {i}")).await;
            let durable = log.durable_offset();
            w.durable[i] = got
                .iter()
                .take_while(|b| header(b).last_offset() < durable)
                .count();
            w.seen[i] = got;
        }
    }
    for log in &logs {
        log.close().await.unwrap();
    }
    shard.shutdown().await.unwrap();
    (w, End::Clean)
}

fn run_case(ops: Vec<Op>) {
    let tmp = tempdir();
    let dirs = [tmp.path().join("leader-0"), tmp.path().join("follower-0")];
    let mut sessions: Vec<Vec<Op>> = vec![Vec::new()];
    for op in ops {
        let ends = matches!(op, Op::Reopen | Op::Crash { .. });
        if let Some(s) = sessions.last_mut() {
            s.push(op);
        }
        if ends {
            sessions.push(Vec::new());
        }
    }
    let mut w = World::default();
    let mut prev = End::Fresh;
    for s in sessions {
        let d = dirs.clone();
        let (w2, end) = run(move || async move { session(d, w, prev, s).await });
        w = w2;
        prev = end;
    }
    // a final sync always converges
    let d = dirs.clone();
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let l = PartitionLog::open(&shard, d[0].clone(), config())
            .await
            .unwrap();
        let f = PartitionLog::open(&shard, d[1].clone(), config())
            .await
            .unwrap();
        sync(&l, &f, 2, "final sync").await;
        shard.shutdown().await.unwrap();
    });
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn follower_converges_to_leader(ops in prop::collection::vec(op(), 1..30)) {
        run_case(ops);
    }
}
