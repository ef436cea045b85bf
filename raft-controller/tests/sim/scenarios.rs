//! Targeted scenarios on the simulated cluster, each with reliable delivery unless it says
//! otherwise: leader loss and re-election, a minority partition that cannot commit,
//! snapshot install to a node that fell behind compaction, a single-node restart from its
//! snapshot, a crash at every disk write of the leader, and a cluster on real directories.

use bytes::Bytes;
use sluice_controller::{NodeConfig, StoreConfig};

use crate::harness::Cluster;

fn config(snapshot_interval: u64) -> impl Fn(u64) -> NodeConfig {
    move |id| {
        let mut c = NodeConfig::new(id);
        c.election_tick = 6;
        c.heartbeat_tick = 1;
        c.snapshot_interval = snapshot_interval;
        c
    }
}

fn cluster(seed: u64, n: u64, snapshot_interval: u64) -> Cluster {
    let store = StoreConfig { segment_bytes: 256 };
    let mut c = Cluster::new(seed, n, config(snapshot_interval), store);
    assert!(
        c.run_until(200, |c| c.leader().is_some()),
        "a leader is elected"
    );
    c
}

/// Proposes on the leader and runs until every listed node has applied it.
fn commit_on(c: &mut Cluster, nodes: &[u64]) -> Bytes {
    let leader = c.leader().expect("a leader"); // ok: test
    let payload = c.propose(leader).expect("the leader accepts"); // ok: test
    let nodes = nodes.to_vec();
    let want = payload.clone();
    let ok = c.run_until(200, move |c| {
        nodes.iter().all(|&i| {
            c.is_up(i)
                && c.node(i)
                    .state_machine()
                    .applied
                    .iter()
                    .any(|(_, d)| *d == want)
        })
    });
    assert!(ok, "payload {payload:?} commits on {:?}", c.up());
    payload
}

#[test]
fn leader_loss_and_reelection() {
    let mut c = cluster(11, 3, 1000);
    for _ in 0..3 {
        commit_on(&mut c, &[1, 2, 3]);
    }
    let old = c.leader().expect("leader"); // ok: test
    let old_term = c.node(old).status().term;
    c.crash(old);
    assert!(c.run_until(300, |c| c.leader().is_some()), "re-election");
    let new = c.leader().expect("leader"); // ok: test
    assert_ne!(new, old);
    assert!(c.node(new).status().term > old_term);
    let live = c.up();
    for _ in 0..3 {
        commit_on(&mut c, &live);
    }
    c.restart(old);
    c.settle_and_check(300);
    assert_eq!(c.committed_payloads().len(), 6);
}

#[test]
fn minority_partition_cannot_commit() {
    let mut c = cluster(12, 5, 1000);
    commit_on(&mut c, &[1, 2, 3, 4, 5]);
    let old = c.leader().expect("leader"); // ok: test
    let buddy = c
        .ids
        .iter()
        .copied()
        .find(|&i| i != old)
        .expect("a follower"); // ok: test
    c.partition(&[old, buddy]);
    let stranded = c.propose(old).expect("still leader when cut off"); // ok: test
    let stranded_index = c.node(old).status().last_index;
    // The majority side elects a leader of its own and commits.
    let majority: Vec<u64> = c
        .ids
        .iter()
        .copied()
        .filter(|&i| i != old && i != buddy)
        .collect();
    let side = majority.clone();
    assert!(c.run_until(300, move |c| {
        side.iter().any(|&i| c.node(i).is_leader())
    }));
    for _ in 0..3 {
        let leader = *majority
            .iter()
            .find(|&&i| c.node(i).is_leader())
            .expect("majority leader"); // ok: test
        c.propose(leader).expect("majority leader accepts"); // ok: test
        c.run_until(50, |_| false);
    }
    assert!(
        c.node(old).status().commit < stranded_index,
        "the minority never commits"
    );
    assert!(!c.committed_payloads().contains(&stranded));
    assert_eq!(c.committed_payloads().len(), 4);
    c.settle_and_check(300);
    assert!(
        !c.committed_payloads().contains(&stranded),
        "the stranded entry was discarded"
    );
}

/// A follower's disk replaced while the leader stays: the node comes back with an empty
/// log, the leader still believing it holds everything it acknowledged. It must not
/// panic on the leader's heartbeat, and must catch up (by entries, or by snapshot once
/// the leader compacted) and take part in new commits.
#[test]
fn a_voter_with_a_replaced_disk_catches_up() {
    for (seed, interval) in [(17, 1000), (19, 4)] {
        let mut c = cluster(seed, 3, interval);
        for _ in 0..10 {
            commit_on(&mut c, &[1, 2, 3]);
        }
        let leader = c.leader().expect("leader"); // ok: test
        let wiped = c
            .ids
            .iter()
            .copied()
            .find(|&i| i != leader)
            .expect("follower"); // ok: test
        c.replace_disk(wiped);
        for _ in 0..3 {
            commit_on(&mut c, &[1, 2, 3]);
        }
        c.settle_and_check(300);
        assert_eq!(c.committed_payloads().len(), 13, "seed {seed}");
    }
}

#[test]
fn snapshot_install_to_a_node_behind_compaction() {
    let mut c = cluster(13, 3, 4);
    commit_on(&mut c, &[1, 2, 3]);
    let leader = c.leader().expect("leader"); // ok: test
    let behind = c
        .ids
        .iter()
        .copied()
        .find(|&i| i != leader)
        .expect("follower"); // ok: test
    c.crash(behind);
    let live = c.up();
    for _ in 0..20 {
        commit_on(&mut c, &live);
    }
    let lead = c.leader().expect("leader"); // ok: test
    let behind_last = 3; // bootstrap no-op + first payload, well below the compaction point
    assert!(c.node(lead).store().snapshot_index() > behind_last);
    assert!(
        c.node(lead).store().segment_count() <= 3,
        "old segments deleted"
    );
    let installed = c.stats.snapshots_installed;
    c.restart(behind);
    c.settle_and_check(300);
    assert!(
        c.stats.snapshots_installed > installed,
        "caught up by snapshot"
    );
    assert!(c.node(behind).store().first_log_index() > behind_last);
}

#[test]
fn single_node_commits_and_restarts_from_its_snapshot() {
    let mut c = Cluster::new(14, 1, config(3), StoreConfig { segment_bytes: 128 });
    assert!(c.run_until(100, |c| c.leader().is_some()));
    for _ in 0..10 {
        commit_on(&mut c, &[1]);
    }
    assert!(c.node(1).store().snapshot_index() >= 9);
    c.crash(1);
    c.restart(1);
    c.settle_and_check(100);
    assert_eq!(c.committed_payloads().len(), 10);
}

#[test]
fn leader_crash_at_every_disk_write() {
    for fail_at in 0..12 {
        let mut c = cluster(100 + fail_at, 3, 3);
        commit_on(&mut c, &[1, 2, 3]);
        let leader = c.leader().expect("leader"); // ok: test
        c.inject_disk_fault(leader, fail_at);
        for _ in 0..4 {
            if let Some(l) = c.leader() {
                c.propose(l);
            }
            c.run_until(20, |_| false);
        }
        c.settle_and_check(400);
    }
}

#[test]
fn cluster_on_real_directories_survives_restarts() {
    let mut c = Cluster::on_real_disk(15, 3, config(5));
    assert!(c.run_until(200, |c| c.leader().is_some()));
    for _ in 0..8 {
        commit_on(&mut c, &[1, 2, 3]);
    }
    for id in [1, 2, 3] {
        c.crash(id);
        c.restart(id);
        c.run_until(30, |_| false);
    }
    commit_on(&mut c, &[1, 2, 3]);
    c.settle_and_check(300);
    assert_eq!(c.committed_payloads().len(), 9);
}
