//! Faults: the seeded schedule (`schedule`) and how each fault is injected and healed
//! (`inject`, `Active::heal`). The schedule depends only on the seed, the fault kinds, the
//! broker count and the duration, so a seed replays the same sequence of faults; targets
//! that depend on the cluster's state (a partition's leader, the active controller) are
//! resolved when the fault starts, from a pick number that is part of the schedule.
//! Invariants: every fault is healed by its `Active` (the run heals everything at the end
//! as well); every wait is bounded.

use std::time::Duration;

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::cluster::Cluster;
use crate::history::{HistoryWriter, Kind, Phase};
use crate::proxy::NodeId;

/// Bound for a restarted broker to answer Metadata again.
pub const RESTART_READY: Duration = Duration::from_secs(45);

/// The fault groups `--nemesis` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Kill,
    Pause,
    Partition,
    Slow,
    Disk,
    Restart,
}

impl Group {
    pub const ALL: [Group; 6] = [
        Group::Kill,
        Group::Pause,
        Group::Partition,
        Group::Slow,
        Group::Disk,
        Group::Restart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Group::Kill => "kill",
            Group::Pause => "pause",
            Group::Partition => "partition",
            Group::Slow => "slow",
            Group::Disk => "disk",
            Group::Restart => "restart",
        }
    }

    pub fn parse(s: &str) -> Result<Vec<Group>> {
        let mut out = Vec::new();
        for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "all" => out.extend(Group::ALL),
                "none" => {}
                _ => match Group::ALL.iter().find(|g| g.name() == w) {
                    Some(g) => out.push(*g),
                    None => bail!(
                        "unknown fault kind {w:?} (kinds: kill, pause, partition, slow, disk, restart, all, none)"
                    ),
                },
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 a minority of the brokers (a partition leader or random), restart them.
    Kill,
    /// SIGSTOP a minority of the brokers, SIGCONT them.
    Pause,
    /// Cut a partition's leader off from every other broker (clients still reach it).
    IsolateLeader,
    /// Cut the active controller off from every other broker.
    IsolateController,
    /// Split the brokers into a minority and a majority.
    MajorityMinority,
    /// Two halves that cannot talk, and one broker that talks to both.
    Bridge,
    /// One broker's bytes to every other broker held (or every other's bytes to it).
    OneWay,
    /// Every link of one broker (or of all) delayed.
    Slow,
    /// Fill the tmpfs data dir of the disk node, then free it and kill -9 / restart it.
    DiskFull,
    /// SIGTERM and restart every broker in turn.
    RollingRestart,
    /// kill -9 the node coordinating one of the workloads' transactional ids (the leader
    /// of its `__transaction_state` partition, asked with FindCoordinator when the fault
    /// starts); restart it.
    KillTxnCoordinator,
    /// SIGSTOP that node, SIGCONT it.
    PauseTxnCoordinator,
    /// Cut that node off from every other broker (clients still reach it).
    IsolateTxnCoordinator,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::IsolateLeader => "partition-leader",
            Fault::IsolateController => "partition-controller",
            Fault::MajorityMinority => "partition-majority",
            Fault::Bridge => "partition-bridge",
            Fault::OneWay => "partition-one-way",
            Fault::Slow => "slow",
            Fault::DiskFull => "disk",
            Fault::RollingRestart => "rolling-restart",
            Fault::KillTxnCoordinator => "kill-txn-coordinator",
            Fault::PauseTxnCoordinator => "pause-txn-coordinator",
            Fault::IsolateTxnCoordinator => "partition-txn-coordinator",
        }
    }

    fn group(self) -> Group {
        match self {
            Fault::Kill | Fault::KillTxnCoordinator => Group::Kill,
            Fault::Pause | Fault::PauseTxnCoordinator => Group::Pause,
            Fault::IsolateTxnCoordinator
            | Fault::IsolateLeader
            | Fault::IsolateController
            | Fault::MajorityMinority
            | Fault::Bridge
            | Fault::OneWay => Group::Partition,
            Fault::Slow => Group::Slow,
            Fault::DiskFull => Group::Disk,
            Fault::RollingRestart => Group::Restart,
        }
    }

    const ALL: [Fault; 13] = [
        Fault::Kill,
        Fault::Pause,
        Fault::IsolateLeader,
        Fault::IsolateController,
        Fault::MajorityMinority,
        Fault::Bridge,
        Fault::OneWay,
        Fault::Slow,
        Fault::DiskFull,
        Fault::RollingRestart,
        Fault::KillTxnCoordinator,
        Fault::PauseTxnCoordinator,
        Fault::IsolateTxnCoordinator,
    ];

    /// Aimed at a transactional id's coordinator.
    fn at_txn_coordinator(self) -> bool {
        matches!(
            self,
            Fault::KillTxnCoordinator | Fault::PauseTxnCoordinator | Fault::IsolateTxnCoordinator
        )
    }
}

/// One step of the schedule: the fault, a pick number for its targets, how long it holds
/// and how long the cluster is left alone after healing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub fault: Fault,
    pub pick: u64,
    pub hold: Duration,
    pub quiet: Duration,
}

impl Step {
    pub fn describe(&self) -> String {
        format!(
            "{} pick={} hold={}ms quiet={}ms",
            self.fault.name(),
            self.pick,
            self.hold.as_millis(),
            self.quiet.as_millis()
        )
    }
}

/// The faults a run of `brokers` can inject from `groups`: partitions need two brokers,
/// a bridge three; the coordinator faults need transactional workloads (`with_txn`) and
/// two brokers (on one, they are `kill` and `pause`).
pub fn available(groups: &[Group], brokers: u32, with_txn: bool) -> Vec<Fault> {
    Fault::ALL
        .iter()
        .copied()
        .filter(|f| groups.contains(&f.group()))
        .filter(|f| !f.at_txn_coordinator() || (with_txn && brokers >= 2))
        .filter(|f| match f {
            Fault::IsolateLeader
            | Fault::IsolateController
            | Fault::MajorityMinority
            | Fault::OneWay => brokers >= 2,
            Fault::Bridge => brokers >= 3,
            _ => true,
        })
        .collect()
}

/// The schedule for `seed`: steps until their holds and quiet times fill `duration`
/// (at least one step when any fault is available).
pub fn schedule(seed: u64, faults: &[Fault], duration: Duration) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    if faults.is_empty() {
        return out;
    }
    // a warm-up before the first fault, so the workloads have started
    let mut used = Duration::from_secs(3);
    // bounded: each step takes at least 4 s
    while used < duration || out.is_empty() {
        let fault = faults[rng.random_range(0..faults.len())];
        let hold = Duration::from_millis(rng.random_range(2_000..8_000));
        let quiet = Duration::from_millis(rng.random_range(2_000..5_000));
        let pick = rng.random::<u32>() as u64;
        used += hold + quiet;
        out.push(Step {
            fault,
            pick,
            hold,
            quiet,
        });
    }
    out
}

/// `--kill-cycles`: `cycles` kill -9 steps, each node down for 0.2–0.6 s and left alone
/// for 0.8–1.5 s after it answers again (its restart and readiness wait come between),
/// so that a thousand cycles take well under an hour.
pub fn kill_cycles(seed: u64, cycles: u32) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..cycles)
        .map(|_| Step {
            fault: Fault::Kill,
            hold: Duration::from_millis(rng.random_range(200..600)),
            quiet: Duration::from_millis(rng.random_range(800..1_500)),
            pick: rng.random::<u32>() as u64,
        })
        .collect()
}

/// A fault in force, and how to heal it.
#[derive(Debug)]
pub enum Active {
    Killed(Vec<NodeId>),
    Paused(Vec<NodeId>),
    Links,
    Disk(NodeId),
    /// Nothing to heal (a rolling restart heals as it goes; a fault that had no target).
    Nothing,
}

/// Injects `step`'s fault; returns what it did (for the history) and how to heal it.
pub fn inject(
    cluster: &mut Cluster,
    step: &Step,
    topic: &str,
    partitions: i32,
    txn_ids: &[String],
    hist: &HistoryWriter,
) -> Result<(String, Active)> {
    let n = cluster.brokers();
    let mut rng = StdRng::seed_from_u64(step.pick);
    let ids = cluster.ids();
    let leader_of = |cluster: &Cluster, p: i32| -> Option<NodeId> {
        let (_, v) = cluster.any_metadata(topic).ok()?;
        let l = v.partitions.get(&p)?.leader;
        (l > 0).then_some(l as NodeId)
    };
    let minority = ((n - 1) / 2).max(1) as usize;
    match step.fault {
        Fault::Kill | Fault::Pause => {
            // half the time the leader of a partition, else random brokers
            let mut targets: Vec<NodeId> = Vec::new();
            if step.pick % 2 == 1 {
                if let Some(l) = leader_of(cluster, (step.pick / 2) as i32 % partitions) {
                    targets.push(l);
                }
            }
            let mut rest = ids.clone();
            rest.shuffle(&mut rng);
            let want = rng.random_range(1..=minority);
            for id in rest {
                if targets.len() >= want {
                    break;
                }
                if !targets.contains(&id) {
                    targets.push(id);
                }
            }
            targets.retain(|id| cluster.is_running(*id));
            for id in &targets {
                if step.fault == Fault::Kill {
                    cluster.kill9(*id)?;
                } else {
                    cluster.pause(*id)?;
                }
            }
            let what = format!("{} nodes {targets:?}", step.fault.name());
            Ok(match step.fault {
                Fault::Kill => (what, Active::Killed(targets)),
                _ => (what, Active::Paused(targets)),
            })
        }
        Fault::KillTxnCoordinator | Fault::PauseTxnCoordinator | Fault::IsolateTxnCoordinator => {
            let Some(txn_id) = txn_ids.get(step.pick as usize % txn_ids.len().max(1)) else {
                return Ok(("no transactional id: nothing done".into(), Active::Nothing));
            };
            let t = match cluster.txn_coordinator(txn_id) {
                Ok(t) => t,
                Err(e) => return Ok((format!("{e:#}: nothing done"), Active::Nothing)),
            };
            let whose = format!("node {t}, coordinator of {txn_id}");
            match step.fault {
                Fault::KillTxnCoordinator => {
                    cluster.kill9(t)?;
                    Ok((format!("kill {whose}"), Active::Killed(vec![t])))
                }
                Fault::PauseTxnCoordinator => {
                    cluster.pause(t)?;
                    Ok((format!("pause {whose}"), Active::Paused(vec![t])))
                }
                _ => {
                    let others: Vec<NodeId> = ids.iter().copied().filter(|i| *i != t).collect();
                    cluster.links.cut_groups(&[t], &others);
                    Ok((format!("{whose}, cut off from {others:?}"), Active::Links))
                }
            }
        }
        Fault::IsolateLeader | Fault::IsolateController => {
            let target = if step.fault == Fault::IsolateLeader {
                leader_of(cluster, step.pick as i32 % partitions)
            } else {
                cluster.active_controller()
            };
            let Some(t) = target else {
                return Ok(("no target found: nothing done".into(), Active::Nothing));
            };
            let others: Vec<NodeId> = ids.iter().copied().filter(|i| *i != t).collect();
            cluster.links.cut_groups(&[t], &others);
            Ok((format!("node {t} cut off from {others:?}"), Active::Links))
        }
        Fault::MajorityMinority => {
            let mut s = ids.clone();
            s.shuffle(&mut rng);
            let (small, big) = s.split_at(n as usize / 2);
            cluster.links.cut_groups(small, big);
            Ok((format!("{small:?} | {big:?}"), Active::Links))
        }
        Fault::Bridge => {
            let mut s = ids.clone();
            s.shuffle(&mut rng);
            let bridge = s[0];
            let rest = &s[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            cluster.links.cut_groups(a, b);
            Ok((format!("{a:?} | {b:?}, bridged by {bridge}"), Active::Links))
        }
        Fault::OneWay => {
            let x = ids[rng.random_range(0..ids.len())];
            let outbound = rng.random_bool(0.5);
            for y in ids.iter().copied().filter(|y| *y != x) {
                let (from, to) = if outbound { (x, y) } else { (y, x) };
                cluster.links.update(from, to, |l| l.blocked = true);
            }
            let what = if outbound {
                format!("bytes from node {x} to every other broker held")
            } else {
                format!("bytes from every other broker to node {x} held")
            };
            Ok((what, Active::Links))
        }
        Fault::Slow => {
            let delay = rng.random_range(20..250u64);
            let everyone = rng.random_bool(0.3);
            let x = ids[rng.random_range(0..ids.len())];
            let all: Vec<NodeId> = std::iter::once(crate::proxy::CLIENT)
                .chain(ids.iter().copied())
                .collect();
            for a in &all {
                for b in &all {
                    if everyone || *a == x || *b == x {
                        cluster.links.update(*a, *b, |l| l.delay_ms = delay);
                    }
                }
            }
            let what = if everyone {
                format!("every link delayed {delay} ms")
            } else {
                format!("every link of node {x} delayed {delay} ms")
            };
            Ok((what, Active::Links))
        }
        Fault::DiskFull => {
            let Some(d) = cluster.disk_node() else {
                return Ok(("no tmpfs data dir: nothing done".into(), Active::Nothing));
            };
            // the partition the full node leads, if any: probed before and after filling
            let led = cluster.any_metadata(topic).ok().and_then(|(_, v)| {
                v.partitions
                    .iter()
                    .find(|(_, pv)| pv.leader == d as i32)
                    .map(|(p, _)| *p)
            });
            let before = led.map(|p| probe(cluster, hist, d, topic, p, BASELINE_PROBE));
            let bytes = cluster.fill_disk()?;
            let after = led.map(|p| probe(cluster, hist, d, topic, p, DISK_FULL_PROBE));
            let probes = match (led, before, after) {
                (Some(p), Some(b), Some(a)) => {
                    format!("; acks=all probes to partition {p}: before {b}, full {a}")
                }
                _ => format!("; node {d} leads no partition of {topic}: no probe"),
            };
            Ok((
                format!("node {d}'s data dir filled ({bytes} bytes of filler){probes}"),
                Active::Disk(d),
            ))
        }
        Fault::RollingRestart => {
            let mut done = Vec::new();
            for id in ids {
                if !cluster.is_running(id) {
                    continue;
                }
                let clean = cluster.stop(id)?;
                cluster.spawn(id)?;
                let ready = cluster.wait_ready(id, &[id as i32], RESTART_READY);
                hist.write(
                    &hist
                        .entry(Kind::Info, Phase::Info)
                        .fault("rolling-restart")
                        .detail(format!(
                            "node {id} restarted ({}); ready: {}",
                            if clean {
                                "clean stop"
                            } else {
                                "SIGKILL after timeout"
                            },
                            match &ready {
                                Ok(()) => "yes".to_string(),
                                Err(e) => format!("no: {e:#}"),
                            }
                        )),
                );
                done.push(id);
                // let it rejoin ISRs before the next one goes
                std::thread::sleep(Duration::from_secs(2));
            }
            Ok((format!("restarted {done:?} in turn"), Active::Nothing))
        }
    }
}

/// `detail` of a probe produce sent while the node's disk is not full / full.
pub const BASELINE_PROBE: &str = "disk probe: before filling";
pub const DISK_FULL_PROBE: &str = "disk probe: disk full";

/// One acks=all produce straight to node `d` (its real port), recorded in the history as
/// a produce of worker `probe.0`; returns the answer's error code (as text).
fn probe(
    cluster: &Cluster,
    hist: &HistoryWriter,
    d: NodeId,
    topic: &str,
    partition: i32,
    detail: &str,
) -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let value = format!("probe.0-{seq}");
    let id = hist.next_id();
    hist.write(
        &hist
            .entry(Kind::Produce, Phase::Invoke)
            .id(id)
            .worker("probe.0")
            .partition(partition)
            .value(&value)
            .detail(detail),
    );
    // a 256 KiB key: more than a partly written page, so the write needs fresh pages
    let answer = crate::probe::produce(
        cluster.kafka_port(d),
        topic,
        partition,
        256 << 10,
        &value,
        -1,
        Duration::from_secs(5),
    );
    let e = hist
        .entry(Kind::Produce, Phase::Ok)
        .id(id)
        .worker("probe.0")
        .partition(partition)
        .detail(detail);
    match answer {
        Ok((0, offset)) => {
            hist.write(&e.offset(offset));
            "ok".into()
        }
        Ok((code, _)) => {
            let mut e = e.error(format!("error code {code}"));
            e.phase = Phase::Fail;
            hist.write(&e);
            format!("error code {code}")
        }
        Err(err) => {
            let mut e = e.error(format!("no answer: {err:#}"));
            e.phase = Phase::Fail;
            hist.write(&e);
            format!("no answer: {err:#}")
        }
    }
}

impl Active {
    /// Heals the fault; returns what was done.
    pub fn heal(self, cluster: &mut Cluster) -> Result<String> {
        match self {
            Active::Killed(ids) => {
                let mut out = Vec::new();
                for id in ids {
                    if !cluster.is_running(id) {
                        cluster.spawn(id)?;
                    }
                    out.push(id);
                }
                for id in &out {
                    cluster.wait_ready(*id, &[*id as i32], RESTART_READY)?;
                }
                Ok(format!("restarted {out:?}"))
            }
            Active::Paused(ids) => {
                for id in &ids {
                    cluster.resume(*id);
                }
                Ok(format!("resumed {ids:?}"))
            }
            Active::Links => {
                cluster.links.heal_all();
                Ok("links healed".into())
            }
            Active::Disk(id) => {
                cluster.free_disk();
                // the recovery check: a log written up to ENOSPC must open cleanly
                if cluster.is_running(id) {
                    cluster.kill9(id)?;
                }
                cluster.spawn(id)?;
                cluster.wait_ready(id, &[id as i32], RESTART_READY)?;
                Ok(format!("disk freed; node {id} killed and restarted"))
            }
            Active::Nothing => Ok("nothing to heal".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_and_another_seed_another() {
        let faults = available(&Group::ALL, 3, true);
        assert!(faults.contains(&Fault::KillTxnCoordinator));
        assert!(!available(&Group::ALL, 3, false).contains(&Fault::PauseTxnCoordinator));
        let a = schedule(7, &faults, Duration::from_secs(120));
        let b = schedule(7, &faults, Duration::from_secs(120));
        let c = schedule(8, &faults, Duration::from_secs(120));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let total: Duration = a.iter().map(|s| s.hold + s.quiet).sum();
        assert!(total >= Duration::from_secs(110), "{total:?}");
    }

    #[test]
    fn single_broker_runs_have_no_partitions() {
        let f = available(&Group::ALL, 1, true);
        assert!(!f.iter().any(|f| f.at_txn_coordinator()));
        assert!(f.contains(&Fault::Kill));
        assert!(!f.iter().any(|f| f.group() == Group::Partition));
        assert_eq!(
            Group::parse("kill,pause").expect("ok"),
            vec![Group::Kill, Group::Pause]
        );
        assert!(Group::parse("kil").is_err());
    }

    #[test]
    fn kill_cycles_are_kills_and_a_thousand_fit_in_well_under_an_hour() {
        let steps = kill_cycles(3, 1000);
        assert_eq!(steps.len(), 1000);
        assert!(steps.iter().all(|s| s.fault == Fault::Kill));
        let total: Duration = steps.iter().map(|s| s.hold + s.quiet).sum();
        // the rest of a cycle is the restart and its readiness wait
        assert!(total < Duration::from_secs(40 * 60), "{total:?}");
        assert_eq!(steps, kill_cycles(3, 1000));
    }
}
