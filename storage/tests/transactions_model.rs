//! Property test of the transaction state: random sequences of transactional appends,
//! commits, aborts, plain appends, truncations, retention, clean reopens and crashes (a
//! session that ends without closing) on a real log with small segments, checked after
//! every step against `common::txn::TxnModel`: the last stable offset, the first
//! unstable offset, the transactions under way, the aborted transactions of every
//! window and what a read_committed reader sees. Retention must never pass the first
//! unstable offset.

mod common;
use common::txn::{check_txns, tx_batch, TxnModel};
use common::{run, tempdir};
use proptest::prelude::*;
use sluice_storage::*;
use std::path::PathBuf;

#[derive(Clone, Debug)]
enum Op {
    /// A transactional batch of producer 1..=3 with this many records.
    Txn(i64, u32),
    /// A plain batch.
    Plain(u32),
    /// A marker of producer 1..=3.
    End(i64, bool),
    /// Cut at this fraction (per mille) of the log.
    Truncate(u16),
    Retention,
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1i64..=3, 1u32..4).prop_map(|(p, n)| Op::Txn(p, n)),
        3 => (1u32..6).prop_map(Op::Plain),
        4 => (1i64..=3, any::<bool>()).prop_map(|(p, c)| Op::End(p, c)),
        1 => (1u16..1000).prop_map(Op::Truncate),
        1 => Just(Op::Retention),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 700,
        index_interval_bytes: 128,
        retention_bytes: 2000,
        ..Default::default()
    }
}

/// The model and the epoch the next batch uses (each batch bumps it, so its sequence
/// is always 0 whatever the producer state remembers).
struct State {
    m: TxnModel,
    epoch: i16,
    tag: u32,
}

async fn check(log: &PartitionLog, s: &mut State, ctx: &str) {
    let end = log.log_end_offset();
    if end > log.log_start_offset() {
        log.wait_durable(end - 1).await.unwrap();
    }
    let hw = log.durable_offset();
    check_txns(log, &mut s.m, hw, ctx).await;
}

async fn session(dir: PathBuf, mut s: State, ops: Vec<Op>, n0: usize) -> State {
    let shard = ShardStorage::start(ShardStorageOptions {
        cleaner_enabled: false,
        ..Default::default()
    });
    let log = PartitionLog::open(&shard, dir, config()).await.unwrap();
    log.load_transaction_state().await.unwrap();
    check(&log, &mut s, &format!("open before op {n0}")).await;
    for (k, op) in ops.into_iter().enumerate() {
        let ctx = format!("op {} {op:?}", n0 + k);
        match op {
            Op::Txn(pid, n) => {
                s.epoch += 1;
                let tags: Vec<u32> = (s.tag..s.tag + n).collect();
                s.tag += n;
                let info = log
                    .append(tx_batch(pid, s.epoch, 0, &tags, true), 1000)
                    .unwrap();
                s.m.data(pid, true, info.base_offset, &tags);
            }
            Op::Plain(n) => {
                let tags: Vec<u32> = (s.tag..s.tag + n).collect();
                s.tag += n;
                let info = log
                    .append(tx_batch(-1, -1, -1, &tags, false), 1000)
                    .unwrap();
                s.m.data(-1, false, info.base_offset, &tags);
            }
            Op::End(pid, commit) => {
                let info = log.append_control(pid, s.epoch, commit, 0, 1000).unwrap();
                s.m.marker(pid, commit, info.base_offset);
            }
            Op::Truncate(f) => {
                let (start, end) = (log.log_start_offset(), log.log_end_offset());
                if end - start < 2 {
                    continue;
                }
                let at = start + 1 + (end - start - 1) * f as i64 / 1000;
                // a cut that reopens a transaction whose start retention deleted cannot
                // bring it back as under way (nor can Kafka's): not generated
                let b = s.m.boundary(at);
                let reopens_lost =
                    s.m.txns
                        .iter()
                        .any(|t| t.first < start && t.end.is_some_and(|(m, _)| m >= b));
                if reopens_lost {
                    continue;
                }
                let cut = log.truncate_from(at).await.unwrap();
                assert_eq!(cut, s.m.boundary(at), "{ctx}");
                s.m.truncate(cut);
                log.load_transaction_state().await.unwrap();
            }
            Op::Retention => {
                let fu = log.first_unstable_offset();
                log.enforce_retention(1000).await.unwrap();
                let start = log.log_start_offset();
                if let Some(fu) = fu {
                    assert!(start <= fu, "{ctx}: retention passed {fu} to {start}");
                }
                s.m.set_start(start);
            }
            Op::Reopen => {
                log.close().await.unwrap();
                shard.shutdown().await.unwrap();
                return s;
            }
            Op::Crash => return s, // nothing is closed
        }
        check(&log, &mut s, &ctx).await;
    }
    log.close().await.unwrap();
    shard.shutdown().await.unwrap();
    s
}

fn run_case(ops: Vec<Op>) {
    let tmp = tempdir();
    let dir = tmp.path().join("txn-0");
    let mut s = State {
        m: TxnModel::default(),
        epoch: 0,
        tag: 0,
    };
    // one executor per session: a crash ends it without closing anything
    let mut sessions: Vec<Vec<Op>> = vec![Vec::new()];
    for op in ops {
        let ends = matches!(op, Op::Reopen | Op::Crash);
        if let Some(last) = sessions.last_mut() {
            last.push(op);
        }
        if ends {
            sessions.push(Vec::new());
        }
    }
    let mut n0 = 0;
    for ops in sessions {
        let (d, len) = (dir.clone(), ops.len());
        s = run(move || async move { session(d, s, ops, n0).await });
        n0 += len;
    }
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
    fn transactions_match_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run_case(ops);
    }
}
