//! Random schedules: each seed picks a cluster size (3 or 5), raft and storage settings,
//! network fault rates, then runs a few hundred seeded actions (deliver, tick, propose,
//! campaign, partition, heal, crash, restart, disk fault) with the harness's safety checks
//! after every action, and ends by healing and requiring convergence with nothing lost.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use sluice_controller::{NodeConfig, StoreConfig};

use crate::harness::{Cluster, NetFaults, Stats};

const STEPS: usize = 1000;

fn pick<T: Copy>(rng: &mut StdRng, from: &[T]) -> T {
    *from.choose(rng).expect("non-empty choice") // ok: test
}

/// Runs one schedule; panics (naming the seed) on any safety or liveness failure.
pub(crate) fn run_schedule(seed: u64) -> Stats {
    let mut knobs = StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xa5a5);
    let n = match seed % 3 {
        0 => 5,
        _ => 3,
    };
    let election = knobs.random_range(5..=10);
    let mut template = NodeConfig::new(1);
    template.election_tick = election;
    template.heartbeat_tick = knobs.random_range(1..=2);
    template.snapshot_interval = pick(&mut knobs, &[2, 3, 5, 8, 20, 1000]);
    template.max_size_per_msg = pick(&mut knobs, &[0, 200, 1 << 20]);
    template.max_inflight_msgs = pick(&mut knobs, &[1, 4, 256]);
    template.pre_vote = knobs.random_bool(0.5);
    template.check_quorum = knobs.random_bool(0.5);
    let store = StoreConfig {
        segment_bytes: pick(&mut knobs, &[64, 300, 4096]),
    };
    let mut c = Cluster::new(
        seed,
        n,
        |id| NodeConfig {
            id,
            ..template.clone()
        },
        store,
    );
    c.faults = NetFaults {
        drop: pick(&mut knobs, &[0.0, 0.05, 0.2]),
        duplicate: pick(&mut knobs, &[0.0, 0.05, 0.2]),
    };
    let max_down = (n as usize - 1) / 2;
    for _ in 0..STEPS {
        let roll = c.rng.random_range(0..1000);
        let up = c.up();
        let down: Vec<u64> = c.ids.iter().copied().filter(|&i| !c.is_up(i)).collect();
        let any_up = up.choose(&mut c.rng).copied();
        match roll {
            0..450 => c.deliver_random(),
            450..520 => {
                let n = c.rng.random_range(2..8);
                c.deliver_batch(n);
            }
            520..720 => {
                if c.rng.random_bool(0.5) {
                    c.tick_all();
                } else if let Some(id) = any_up {
                    c.tick(id);
                }
            }
            720..880 => {
                let target = match c.leader() {
                    Some(l) if c.rng.random_bool(0.8) => Some(l),
                    _ => any_up,
                };
                if let Some(id) = target {
                    c.propose(id);
                }
            }
            880..900 => {
                let k = c.rng.random_range(1..n);
                let mut ids = c.ids.clone();
                ids.sort_by_key(|_| c.rng.random::<u32>());
                ids.truncate(k as usize);
                c.partition(&ids);
            }
            900..930 => c.heal(),
            930..945 => {
                if down.len() < max_down {
                    if let Some(id) = any_up {
                        c.crash(id);
                    }
                }
            }
            945..970 => {
                if let Some(&id) = down.choose(&mut c.rng) {
                    c.restart(id);
                }
            }
            970..980 => {
                if down.len() < max_down {
                    if let Some(id) = any_up {
                        let n = c.rng.random_range(0..8);
                        c.inject_disk_fault(id, n);
                    }
                }
            }
            _ => {
                if let Some(id) = any_up {
                    c.campaign(id);
                }
            }
        }
        c.bound_network(400);
    }
    c.settle_and_check(300);
    c.stats.clone()
}

fn schedules_from_env() -> Vec<u64> {
    if let Ok(seed) = std::env::var("SLUICE_SIM_SEED") {
        return vec![seed.parse().expect("SLUICE_SIM_SEED is a number")]; // ok: test
    }
    let count = std::env::var("SLUICE_SIM_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000u64);
    let first = std::env::var("SLUICE_SIM_FIRST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0u64);
    (first..first + count).collect()
}

#[test]
fn seeded_schedules_keep_raft_safe() {
    let seeds = schedules_from_env();
    let mut total = Stats::default();
    let started = std::time::Instant::now();
    for &seed in &seeds {
        // raft-rs asserts its own invariants with panics; name the seed for those too.
        let s = match std::panic::catch_unwind(|| run_schedule(seed)) {
            Ok(s) => s,
            Err(e) => {
                let what = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("schedule with seed {seed} failed: {what}");
            }
        };
        total.delivered += s.delivered;
        total.dropped += s.dropped;
        total.crashes += s.crashes;
        total.disk_faults += s.disk_faults;
        total.snapshots_installed += s.snapshots_installed;
        total.elections += s.elections;
        total.proposals += s.proposals;
        total.committed += s.committed;
    }
    eprintln!(
        "{} schedules in {:.1?}: {total:?}",
        seeds.len(),
        started.elapsed()
    );
    if seeds.len() >= 100 {
        // The schedules must actually exercise the faults they claim to.
        assert!(total.crashes > 0 && total.disk_faults > 0 && total.snapshots_installed > 0);
        assert!(total.dropped > 0 && total.proposals > 0);
    }
}
