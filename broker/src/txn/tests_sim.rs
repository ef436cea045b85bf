//! Randomised simulation of the transaction state machine: producers of three
//! transactional ids init, add partitions, commit and abort in a seeded random order, as
//! concurrent tasks, while markers fail, log writes fail and transactions time out. After
//! every step and at the end the invariants are checked:
//! - producer (id, epoch) of a transactional id never goes backwards;
//! - a request issued after a newer InitProducerId was answered never succeeds with the
//!   older epoch (zombies are fenced);
//! - the records of an id follow Kafka's transitions (one transaction at a time: Ongoing
//!   sets only grow, Prepare* carries the last Ongoing set, only Complete* follows it);
//! - every Prepare* is followed by its Complete*, with markers of its producer id, epoch
//!   and decision written for exactly its partitions in between.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::ResponseError;

use super::records::TxnState;
use super::test_support::*;
use super::{TxnConfig, TxnLogError};

const IDS: [&str; 3] = ["s0", "s1", "s2"];
const TOPICS: [(&str, i32); 4] = [("a", 0), ("a", 1), ("b", 0), ("c", 2)];

#[derive(Default)]
struct Observed {
    /// id -> the (producer id, epoch) of the latest successful InitProducerId
    latest_init: HashMap<String, (i64, i16)>,
    /// id -> the highest (producer id, epoch) seen in the coordinator
    highest: HashMap<String, (i64, i16)>,
    commits: usize,
    aborts: usize,
    fenced: usize,
}

fn check_state(h: &Harness, observed: &RefCell<Observed>) {
    let txns = h.c.txns.borrow();
    let mut obs = observed.borrow_mut();
    for (id, md) in txns.iter() {
        let now = (md.producer_id, md.producer_epoch);
        let seen = obs.highest.entry(id.clone()).or_insert(now);
        assert!(
            now >= *seen,
            "{id}: producer epoch went backwards: {seen:?} -> {now:?}"
        );
        *seen = now;
        if md.state == TxnState::Empty {
            assert!(md.partitions.is_empty(), "{id}: Empty with partitions");
        }
        assert!(
            !matches!(md.state, TxnState::Dead | TxnState::PrepareEpochFence),
            "{id}: in {:?}",
            md.state
        );
    }
}

/// The transitions of every id's records, and the markers between Prepare* and Complete*.
fn check_log_and_markers(h: &Harness) {
    let recs = h.log.decoded();
    let calls = h.markers.calls.borrow();
    let mut by_id: HashMap<String, Vec<_>> = HashMap::new();
    for (seq, id, v) in recs {
        by_id
            .entry(id)
            .or_default()
            .push((seq, v.expect("no tombstones in the simulation")));
    }
    let mut checked_prepares = 0;
    let mut marker_calls_covered = 0;
    for (id, list) in &by_id {
        let mut prev: Option<&super::records::TxnLogValue> = None;
        for (i, (seq, v)) in list.iter().enumerate() {
            if let Some(p) = prev {
                let legal = match p.state {
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                        matches!(v.state, TxnState::Empty | TxnState::Ongoing)
                    }
                    TxnState::Ongoing => matches!(
                        v.state,
                        TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
                    ),
                    TxnState::PrepareCommit => v.state == TxnState::CompleteCommit,
                    TxnState::PrepareAbort => v.state == TxnState::CompleteAbort,
                    _ => false,
                };
                assert!(legal, "{id}: {:?} -> {:?}", p.state, v.state);
                assert!(
                    (v.producer_id, v.producer_epoch) >= (p.producer_id, p.producer_epoch),
                    "{id}: record epochs went backwards"
                );
                if p.state == TxnState::Ongoing {
                    assert!(
                        p.partitions.is_subset(&v.partitions)
                            || v.state.is_prepare() && p.partitions == v.partitions,
                        "{id}: partitions lost"
                    );
                    if v.state.is_prepare() {
                        assert_eq!(p.partitions, v.partitions, "{id}: Prepare* set differs");
                    }
                }
            } else {
                assert_eq!(v.state, TxnState::Empty, "{id}: first record");
            }
            if v.state.is_prepare() {
                let (end_seq, end) = list.get(i + 1).expect("every Prepare* has a successor");
                let commit = v.state == TxnState::PrepareCommit;
                let mut written = BTreeSet::new();
                for (n, m, answer) in calls.iter() {
                    if *n <= *seq || *n >= *end_seq || m.producer_id != v.producer_id {
                        continue;
                    }
                    assert_eq!(m.producer_epoch, v.producer_epoch, "{id}: marker epoch");
                    assert_eq!(m.commit, commit, "{id}: marker decision");
                    assert_eq!(m.coordinator_epoch, COORDINATOR_EPOCH);
                    marker_calls_covered += 1;
                    for (t, p, e) in answer {
                        assert!(
                            v.partitions.contains(&(t.clone(), *p)),
                            "{id}: marker for a foreign partition"
                        );
                        if *e == 0 {
                            written.insert((t.clone(), *p));
                        }
                    }
                }
                assert_eq!(
                    written, v.partitions,
                    "{id}: markers at seq {seq}..{end_seq}"
                );
                assert!(end.partitions.is_empty());
                checked_prepares += 1;
            }
            prev = Some(v);
        }
    }
    assert_eq!(
        marker_calls_covered,
        calls.len(),
        "a marker call outside any Prepare*..Complete*"
    );
    assert!(checked_prepares > 0);
}

/// InitProducerId as a client does it: retried while the previous transaction completes.
async fn init_producer(h: &Harness, obs: &RefCell<Observed>, id: &str) {
    for _ in 0..50 {
        let (e, pid, epoch) = h.init_v(id, 150, (-1, -1), 4).await;
        if e == 0 {
            let mut o = obs.borrow_mut();
            let prev = o.latest_init.insert(id.to_owned(), (pid, epoch));
            assert!(
                prev.is_none_or(|p| p < (pid, epoch)),
                "{id}: init went backwards"
            );
            return;
        }
        if e != ResponseError::ConcurrentTransactions.code() {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn random_transactions_keep_invariants() {
    for seed in [3u64, 11, 2024] {
        run(move || async move {
            let cfg = TxnConfig {
                marker_retry_backoff_ms: 1,
                ..config()
            };
            let h = Rc::new(Harness::load(Vec::new(), cfg));
            let observed = Rc::new(RefCell::new(Observed::default()));
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut tasks = Vec::new();
            for _ in 0..500 {
                let id = IDS[(next() % 3) as usize];
                let action = next() % 12;
                // a producer uses the latest epoch it was given, sometimes an older one
                let latest = observed.borrow().latest_init.get(id).copied();
                let stale = next() % 6 == 0;
                let (h2, obs) = (h.clone(), observed.clone());
                match action {
                    0 => tasks.push(glommio::spawn_local(async move {
                        init_producer(&h2, &obs, id).await;
                    })),
                    1..=5 => {
                        let Some((pid, epoch)) = latest else { continue };
                        let epoch = if stale && epoch > 0 { epoch - 1 } else { epoch };
                        let mut ps: Vec<(&str, i32)> = Vec::new();
                        for _ in 0..(1 + next() % 2) {
                            ps.push(TOPICS[(next() % 4) as usize]);
                        }
                        ps.sort();
                        ps.dedup();
                        tasks.push(glommio::spawn_local(async move {
                            let e = h2.add(id, pid, epoch, &ps).await;
                            if e == 0 {
                                assert!(
                                    latest.is_none_or(|l| l <= (pid, epoch)),
                                    "{id}: zombie add succeeded at {epoch}"
                                );
                            } else if e == ResponseError::ProducerFenced.code() {
                                obs.borrow_mut().fenced += 1;
                                if !stale {
                                    // a fenced producer is replaced by a new instance
                                    init_producer(&h2, &obs, id).await;
                                }
                            }
                        }));
                    }
                    6 | 7 => {
                        let Some((pid, epoch)) = latest else { continue };
                        let epoch = if stale && epoch > 0 { epoch - 1 } else { epoch };
                        let commit = next() % 3 != 0;
                        tasks.push(glommio::spawn_local(async move {
                            let e = h2.end(id, pid, epoch, commit).await;
                            if e == 0 {
                                assert!(
                                    latest.is_none_or(|l| l <= (pid, epoch)),
                                    "{id}: stale EndTxn succeeded"
                                );
                                let mut o = obs.borrow_mut();
                                if commit {
                                    o.commits += 1;
                                } else {
                                    o.aborts += 1;
                                }
                            } else if e == ResponseError::ProducerFenced.code() {
                                obs.borrow_mut().fenced += 1;
                            }
                        }));
                    }
                    8 => {
                        let now = h.clock.0.get() + 5 + (next() % 25) as i64;
                        h.clock.0.set(now);
                        tasks.push(glommio::spawn_local(async move {
                            h2.c.abort_timed_out_transactions(now).await;
                        }));
                    }
                    9 => {
                        let (t, p) = TOPICS[(next() % 4) as usize];
                        let errs = [
                            ResponseError::NotLeaderOrFollower.code(),
                            ResponseError::RequestTimedOut.code(),
                            ResponseError::NotEnoughReplicas.code(),
                        ];
                        h.markers.fail(t, p, &[errs[(next() % 3) as usize]]);
                    }
                    10 => h
                        .log
                        .fail
                        .borrow_mut()
                        .push_back(TxnLogError::Unavailable("not enough replicas".into())),
                    _ => glommio::timer::sleep(Duration::from_millis(next() % 3)).await,
                }
                if next() % 2 == 0 {
                    glommio::timer::sleep(Duration::from_millis(next() % 2)).await;
                }
                check_state(&h, &observed);
            }
            for t in tasks {
                t.await;
                check_state(&h, &observed);
            }
            // quiesce: no more faults; every Prepare* must complete
            h.log.fail.borrow_mut().clear();
            h.markers.errors.borrow_mut().clear();
            for _ in 0..2000 {
                let busy =
                    h.c.txns
                        .borrow()
                        .values()
                        .any(|m| m.state.is_prepare() || m.pending.is_some());
                if !busy {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            for (id, md) in h.c.txns.borrow().iter() {
                assert!(!md.state.is_prepare(), "{id} stuck in {:?}", md.state);
            }
            check_state(&h, &observed);
            check_log_and_markers(&h);
            let o = observed.borrow();
            eprintln!(
                "seed {seed}: {} commits, {} aborts, {} fenced, {} marker calls, {} records",
                o.commits,
                o.aborts,
                o.fenced,
                h.markers.calls.borrow().len(),
                h.log.records.borrow().len()
            );
            // Liveness, not timing: the interleaving depends on timers, so only require that
            // both outcomes happened at all (aborts include fences and timeouts).
            let completed: BTreeSet<TxnState> = h
                .log
                .decoded()
                .into_iter()
                .filter_map(|(_, _, v)| v.map(|v| v.state))
                .collect();
            assert!(
                o.commits > 0
                    && completed.contains(&TxnState::CompleteCommit)
                    && completed.contains(&TxnState::CompleteAbort),
                "seed {seed}: no commit or no abort completed"
            );
        });
    }
}
