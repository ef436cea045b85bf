//! The simulated cluster: N nodes in one thread, each on its own crashable `MemFs` (or a
//! real temp directory), joined by a seeded network that can drop, delay, reorder and
//! duplicate messages and partition nodes. Every message goes through the wire envelope.
//!
//! ```text
//!  action (seeded) ─► node.tick / step / propose ─► drive: advance ─► Readiness
//!       ─► messages into the network ─► checks: committed bytes == oracle, index order,
//!          one leader per term, restored snapshots == oracle prefix
//! ```
//! Invariant checked after every action: a committed index holds the same bytes on every
//! node that applies it (the oracle is the first applier), entries reach a state machine in
//! increasing index order, no payload commits twice, at most one leader per term. A check
//! that fails panics with the seed in the message.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_controller::envelope::{self, Receiver};
use sluice_controller::{
    Error, MemFs, Node, NodeConfig, RaftMessage, RaftStore, Readiness, StateMachine, StdFs,
    StoreConfig,
};

const CLUSTER: &str = "sim";
const DIR: &str = "/raft";

/// The test state machine: the list of applied (index, payload), checked for order.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) applied: Vec<(u64, Bytes)>,
    /// Index the state covers (last applied entry, no-ops included, or snapshot index).
    pub(crate) index: u64,
}

impl StateMachine for Recorder {
    fn apply(
        &mut self,
        index: u64,
        data: &[u8],
    ) -> Result<(), sluice_controller::StateMachineError> {
        if index <= self.index {
            return Err(format!("apply {index} after {}", self.index).into());
        }
        self.index = index;
        self.applied.push((index, Bytes::copy_from_slice(data)));
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>, sluice_controller::StateMachineError> {
        let mut out = Vec::new();
        for (i, d) in &self.applied {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&(d.len() as u32).to_le_bytes());
            out.extend_from_slice(d);
        }
        Ok(out)
    }

    fn restore(
        &mut self,
        index: u64,
        data: &[u8],
    ) -> Result<(), sluice_controller::StateMachineError> {
        let mut applied = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let (i, tail) = rest.split_at_checked(8).ok_or("short snapshot")?;
            let (len, tail) = tail.split_at_checked(4).ok_or("short snapshot")?;
            let i = u64::from_le_bytes(i.try_into()?);
            let len = u32::from_le_bytes(len.try_into()?) as usize;
            let (d, tail) = tail.split_at_checked(len).ok_or("short snapshot")?;
            applied.push((i, Bytes::copy_from_slice(d)));
            rest = tail;
        }
        if applied.last().is_some_and(|(i, _)| *i > index) {
            return Err("snapshot holds entries past its index".into());
        }
        self.applied = applied;
        self.index = index;
        Ok(())
    }
}

/// Where a node keeps its raft files.
pub(crate) enum Disk {
    Mem(MemFs),
    Dir(tempfile::TempDir),
}

struct Packet {
    from: u64,
    to: u64,
    snapshot: bool,
    wire: Vec<u8>,
}

/// A message stepped into its receiver, not yet followed by `advance`.
struct Stepped {
    from: u64,
    to: u64,
    snapshot: bool,
}

/// Probabilities of network faults, per delivered message.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NetFaults {
    pub(crate) drop: f64,
    pub(crate) duplicate: f64,
}

/// Counters a scenario can assert on.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    pub(crate) delivered: u64,
    pub(crate) dropped: u64,
    pub(crate) crashes: u64,
    pub(crate) disk_faults: u64,
    pub(crate) snapshots_installed: u64,
    pub(crate) elections: u64,
    pub(crate) proposals: u64,
    /// Entries in the committed history when the run settled.
    pub(crate) committed: u64,
}

/// N raft nodes, a network and the oracle of committed entries.
pub(crate) struct Cluster {
    pub(crate) seed: u64,
    pub(crate) rng: StdRng,
    pub(crate) ids: Vec<u64>,
    configs: BTreeMap<u64, NodeConfig>,
    store_config: StoreConfig,
    nodes: BTreeMap<u64, Option<Node<Recorder>>>,
    disks: BTreeMap<u64, Disk>,
    /// Per node: last index seen applied (the order check).
    seen: BTreeMap<u64, u64>,
    net: Vec<Packet>,
    /// Group of each node; nodes talk only within their group.
    group: BTreeMap<u64, u8>,
    pub(crate) faults: NetFaults,
    pub(crate) oracle: BTreeMap<u64, Bytes>,
    payloads: BTreeSet<Bytes>,
    leaders: BTreeMap<u64, u64>,
    pub(crate) stats: Stats,
    next_payload: u64,
}

impl Cluster {
    /// A bootstrapped cluster of `n` nodes (ids 1..=n) on `MemFs` disks.
    pub(crate) fn new(
        seed: u64,
        n: u64,
        config: impl Fn(u64) -> NodeConfig,
        store: StoreConfig,
    ) -> Self {
        Self::build(seed, n, config, store, false)
    }

    /// The same on real temp directories (`StdFs`); `crash` there only drops the node.
    pub(crate) fn on_real_disk(seed: u64, n: u64, config: impl Fn(u64) -> NodeConfig) -> Self {
        Self::build(seed, n, config, StoreConfig::default(), true)
    }

    fn build(
        seed: u64,
        n: u64,
        config: impl Fn(u64) -> NodeConfig,
        store: StoreConfig,
        real: bool,
    ) -> Self {
        let ids: Vec<u64> = (1..=n).collect();
        let mut c = Cluster {
            seed,
            rng: StdRng::seed_from_u64(seed),
            ids: ids.clone(),
            configs: ids.iter().map(|&i| (i, config(i))).collect(),
            store_config: store,
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            seen: BTreeMap::new(),
            net: Vec::new(),
            group: ids.iter().map(|&i| (i, 0)).collect(),
            faults: NetFaults::default(),
            oracle: BTreeMap::new(),
            payloads: BTreeSet::new(),
            leaders: BTreeMap::new(),
            stats: Stats::default(),
            next_payload: 0,
        };
        for &id in &ids {
            let disk = if real {
                Disk::Dir(tempfile::tempdir().expect("temp dir")) // ok: test
            } else {
                Disk::Mem(MemFs::new())
            };
            c.disks.insert(id, disk);
            let mut store = c
                .open_store(id)
                .unwrap_or_else(|e| c.fail(&format!("open {id}: {e}")));
            store
                .bootstrap(&ids)
                .unwrap_or_else(|e| c.fail(&format!("bootstrap {id}: {e}")));
            c.start(id, store);
        }
        c
    }

    /// Panics with the seed: every failed check ends here.
    pub(crate) fn fail(&self, what: &str) -> ! {
        panic!("seed {}: {what}", self.seed)
    }

    fn open_store(&self, id: u64) -> Result<RaftStore, Error> {
        match &self.disks[&id] {
            Disk::Mem(fs) => RaftStore::open(fs.clone(), DIR, self.store_config.clone()),
            Disk::Dir(dir) => RaftStore::open(StdFs, dir.path(), self.store_config.clone()),
        }
    }

    fn start(&mut self, id: u64, store: RaftStore) {
        let node = Node::open(&self.configs[&id], store, Recorder::default())
            .unwrap_or_else(|e| self.fail(&format!("node {id} does not start: {e}")));
        // What a restart restored must be exactly the committed history up to its index.
        let sm = node.state_machine();
        self.check_prefix(id, sm, sm.index);
        self.seen.insert(id, sm.index);
        self.nodes.insert(id, Some(node));
    }

    /// The state machine's entries up to `upto` are exactly the committed history there.
    fn check_prefix(&self, id: u64, sm: &Recorder, upto: u64) {
        let want: Vec<(u64, Bytes)> = self
            .oracle
            .range(..=upto)
            .map(|(i, d)| (*i, d.clone()))
            .collect();
        let have: Vec<(u64, Bytes)> = sm
            .applied
            .iter()
            .filter(|(i, _)| *i <= upto)
            .cloned()
            .collect();
        if have != want {
            self.fail(&format!(
                "node {id}: state at {upto} differs from the committed history\n have {have:?}\n want {want:?}"
            ));
        }
    }

    pub(crate) fn is_up(&self, id: u64) -> bool {
        matches!(self.nodes.get(&id), Some(Some(_)))
    }

    pub(crate) fn up(&self) -> Vec<u64> {
        self.ids
            .iter()
            .copied()
            .filter(|&i| self.is_up(i))
            .collect()
    }

    pub(crate) fn node(&self, id: u64) -> &Node<Recorder> {
        match self.nodes.get(&id) {
            Some(Some(n)) => n,
            _ => self.fail(&format!("node {id} is down")),
        }
    }

    fn node_mut(&mut self, id: u64) -> Option<&mut Node<Recorder>> {
        self.nodes.get_mut(&id).and_then(Option::as_mut)
    }

    /// The live node that leads the highest term, if any.
    pub(crate) fn leader(&self) -> Option<u64> {
        self.up()
            .into_iter()
            .filter(|&i| self.node(i).is_leader())
            .max_by_key(|&i| self.node(i).status().term)
    }

    /// Runs `advance` on a node until it is idle, routing its output and checking it.
    pub(crate) fn drive(&mut self, id: u64) {
        for _ in 0..64 {
            let Some(node) = self.node_mut(id) else {
                return;
            };
            if !node.has_ready() {
                break;
            }
            match node.advance() {
                Ok(r) => self.absorb(id, r),
                Err(e) => {
                    let injected =
                        matches!(&self.disks[&id], Disk::Mem(_)) && matches!(e, Error::Io { .. });
                    if !injected {
                        self.fail(&format!("node {id}: advance failed: {e}"));
                    }
                    self.stats.disk_faults += 1;
                    self.crash(id);
                    return;
                }
            }
        }
        self.check_leaders();
    }

    fn absorb(&mut self, id: u64, r: Readiness) {
        if let Some(s) = r.snapshot_restored {
            self.stats.snapshots_installed += 1;
            let sm = self.node(id).state_machine();
            if sm.index < s.index {
                self.fail(&format!(
                    "node {id}: at {} after a restore to {}",
                    sm.index, s.index
                ));
            }
            self.check_prefix(id, sm, s.index);
            self.seen.insert(id, s.index);
        }
        if r.leader.is_some() {
            self.stats.elections += 1;
        }
        for c in r.committed {
            let seen = self.seen[&id];
            if c.index <= seen {
                self.fail(&format!("node {id}: applied {} after {seen}", c.index));
            }
            self.seen.insert(id, c.index);
            match self.oracle.get(&c.index) {
                Some(d) if *d != c.data => self.fail(&format!(
                    "node {id}: index {} applied as {:?}, committed elsewhere as {:?}",
                    c.index, c.data, d
                )),
                Some(_) => {}
                None => {
                    if !self.payloads.insert(c.data.clone()) {
                        self.fail(&format!("payload {:?} committed twice", c.data));
                    }
                    self.oracle.insert(c.index, c.data);
                }
            }
        }
        for m in r.messages {
            let wire = envelope::encode(CLUSTER, &m)
                .unwrap_or_else(|e| self.fail(&format!("encode: {e}")));
            let snapshot = m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
            self.net.push(Packet {
                from: m.from,
                to: m.to,
                snapshot,
                wire,
            });
        }
    }

    fn check_leaders(&mut self) {
        for id in self.up() {
            let node = self.node(id);
            if node.is_leader() {
                let term = node.status().term;
                if let Some(&other) = self.leaders.get(&term) {
                    if other != id {
                        self.fail(&format!("two leaders in term {term}: {other} and {id}"));
                    }
                } else {
                    self.leaders.insert(term, id);
                }
            }
        }
    }

    /// Ticks one node and drives it.
    pub(crate) fn tick(&mut self, id: u64) {
        if let Some(node) = self.node_mut(id) {
            node.tick();
            self.drive(id);
        }
    }

    /// Makes a node start an election now.
    pub(crate) fn campaign(&mut self, id: u64) {
        if let Some(node) = self.node_mut(id) {
            // Refused when it already leads or knows no voters; either is fine here.
            let _ = node.campaign();
            self.drive(id);
        }
    }

    /// Ticks every live node.
    pub(crate) fn tick_all(&mut self) {
        for id in self.up() {
            self.tick(id);
        }
    }

    /// Proposes a fresh unique payload on `id`; returns the payload if accepted.
    pub(crate) fn propose(&mut self, id: u64) -> Option<Bytes> {
        let payload = Bytes::from(format!("s{}-p{}", self.seed, self.next_payload));
        self.next_payload += 1;
        let node = self.node_mut(id)?;
        match node.propose(payload.to_vec()) {
            Ok(_) => {
                self.stats.proposals += 1;
                self.drive(id);
                Some(payload)
            }
            Err(Error::NotLeader { .. }) | Err(Error::Raft(raft::Error::ProposalDropped)) => None,
            Err(e) => self.fail(&format!("propose on {id}: {e}")),
        }
    }

    fn reachable(&self, from: u64, to: u64) -> bool {
        self.is_up(to) && self.group[&from] == self.group[&to]
    }

    /// Delivers (or drops, or duplicates) the in-flight message at `k`.
    pub(crate) fn deliver(&mut self, k: usize) {
        if let Some(stepped) = self.step_packet(k) {
            self.drive(stepped.to);
            self.finish_delivery(stepped);
        }
    }

    /// Delivers up to `n` random messages before any node runs `advance`, so one `Ready`
    /// holds the effects of several messages (as when a transport batches its reads).
    pub(crate) fn deliver_batch(&mut self, n: usize) {
        let mut stepped = Vec::new();
        for _ in 0..n {
            if self.net.is_empty() {
                break;
            }
            let k = self.rng.random_range(0..self.net.len());
            stepped.extend(self.step_packet(k));
        }
        let mut targets: Vec<u64> = stepped.iter().map(|s| s.to).collect();
        targets.sort_unstable();
        targets.dedup();
        for to in targets {
            self.drive(to);
        }
        for s in stepped {
            self.finish_delivery(s);
        }
    }

    /// After the receiver ran: a delivered snapshot is reported to its sender.
    fn finish_delivery(&mut self, stepped: Stepped) {
        if stepped.snapshot {
            if let Some(sender) = self.node_mut(stepped.from) {
                sender.report_snapshot(stepped.to, true);
                self.drive(stepped.from);
            }
        }
    }

    /// Takes the message at `k` off the network and steps it into its receiver (without
    /// `advance`); `None` if it was lost.
    fn step_packet(&mut self, k: usize) -> Option<Stepped> {
        if k >= self.net.len() {
            return None;
        }
        let p = self.net.swap_remove(k);
        let lost = self.faults.drop > 0.0 && self.rng.random_bool(self.faults.drop);
        if lost || !self.reachable(p.from, p.to) {
            self.stats.dropped += 1;
            self.report_lost(&p);
            return None;
        }
        if self.faults.duplicate > 0.0 && self.rng.random_bool(self.faults.duplicate) {
            self.net.push(Packet {
                wire: p.wire.clone(),
                ..p
            });
        }
        let receiver = Receiver {
            cluster_id: CLUSTER.to_string(),
            local_id: p.to,
            max_bytes: 64 << 20,
        };
        let msg: RaftMessage = envelope::decode(&p.wire, &receiver)
            .unwrap_or_else(|e| self.fail(&format!("decode: {e}")));
        self.stats.delivered += 1;
        let node = self.node_mut(p.to)?;
        // A step error rejects one stale or unknown message; raft goes on.
        let _ = node.step(msg);
        Some(Stepped {
            from: p.from,
            to: p.to,
            snapshot: p.snapshot,
        })
    }

    /// Delivers a random in-flight message.
    pub(crate) fn deliver_random(&mut self) {
        if !self.net.is_empty() {
            let k = self.rng.random_range(0..self.net.len());
            self.deliver(k);
        }
    }

    /// Drops the oldest messages past `max` (a transport's bounded queue), reporting them
    /// to their senders as a transport must: a lost snapshot never reported would leave
    /// the follower waiting for it forever.
    pub(crate) fn bound_network(&mut self, max: usize) {
        if self.net.len() > max {
            let extra = self.net.len() - max;
            let lost: Vec<Packet> = self.net.drain(..extra).collect();
            self.stats.dropped += extra as u64;
            for p in lost {
                self.report_lost(&p);
            }
        }
    }

    fn report_lost(&mut self, p: &Packet) {
        if let Some(sender) = self.node_mut(p.from) {
            sender.report_unreachable(p.to);
            if p.snapshot {
                sender.report_snapshot(p.to, false);
            }
        }
    }

    /// Power cut on one node: it loses everything not durable; a torn tail of random
    /// length survives of each file's unsynced bytes.
    pub(crate) fn crash(&mut self, id: u64) {
        if let Some(slot) = self.nodes.get_mut(&id) {
            if slot.take().is_some() {
                self.stats.crashes += 1;
            }
        }
        if let Disk::Mem(fs) = &self.disks[&id] {
            let fs = fs.clone();
            let rng = &mut self.rng;
            fs.crash(&mut |tail| rng.random_range(0..=tail));
        }
    }

    /// Restarts a crashed node from its disk; recovery must always succeed.
    pub(crate) fn restart(&mut self, id: u64) {
        if self.is_up(id) {
            return;
        }
        let store = self
            .open_store(id)
            .unwrap_or_else(|e| self.fail(&format!("node {id} does not recover: {e}")));
        self.start(id, store);
        self.drive(id);
    }

    /// An operator's disk replacement: the node is stopped, its disk swapped for an empty
    /// one, bootstrapped with the same voters, and started again (deploy/README.md,
    /// "Replacing a failed disk").
    pub(crate) fn replace_disk(&mut self, id: u64) {
        if let Some(slot) = self.nodes.get_mut(&id) {
            slot.take();
        }
        self.disks.insert(id, Disk::Mem(MemFs::new()));
        let mut store = self
            .open_store(id)
            .unwrap_or_else(|e| self.fail(&format!("open {id}: {e}")));
        let ids = self.ids.clone();
        store
            .bootstrap(&ids)
            .unwrap_or_else(|e| self.fail(&format!("bootstrap {id}: {e}")));
        self.start(id, store);
        self.drive(id);
    }

    /// Makes the next `n`-th write of a node's disk fail (the node dies in `advance`).
    pub(crate) fn inject_disk_fault(&mut self, id: u64, n: u64) {
        if let Disk::Mem(fs) = &self.disks[&id] {
            fs.fail_after(n);
        }
    }

    /// Splits the nodes: `side` in one group, the rest in another.
    pub(crate) fn partition(&mut self, side: &[u64]) {
        for (id, g) in self.group.iter_mut() {
            *g = u8::from(side.contains(id));
        }
    }

    pub(crate) fn heal(&mut self) {
        for g in self.group.values_mut() {
            *g = 0;
        }
    }

    /// Runs reliable rounds (every message delivered, then one tick each) until `done`.
    pub(crate) fn run_until(&mut self, max_rounds: usize, done: impl Fn(&Cluster) -> bool) -> bool {
        for _ in 0..max_rounds {
            if done(self) {
                return true;
            }
            let mut budget = 10_000;
            while !self.net.is_empty() && budget > 0 {
                self.deliver_random();
                budget -= 1;
            }
            self.tick_all();
        }
        done(self)
    }

    /// True when every node is up, one leads, and all have applied its whole log.
    pub(crate) fn converged(&self) -> bool {
        let Some(l) = self.leader() else { return false };
        let last = self.node(l).status().last_index;
        self.up().len() == self.ids.len()
            && self.ids.iter().all(|&i| {
                let s = self.node(i).status();
                s.applied == last && s.commit == last
            })
    }

    /// Heals everything, restarts every node, and requires the cluster to converge with
    /// every state machine equal to the committed history: nothing committed was lost.
    pub(crate) fn settle_and_check(&mut self, max_rounds: usize) {
        self.faults = NetFaults::default();
        self.heal();
        for id in self.ids.clone() {
            if let Disk::Mem(fs) = &self.disks[&id] {
                fs.clear_fault();
            }
            if !self.is_up(id) {
                self.restart(id);
            }
        }
        if !self.run_until(max_rounds, Cluster::converged) {
            let status: Vec<_> = self.up().iter().map(|&i| self.node(i).status()).collect();
            self.fail(&format!("no convergence: {status:?}"));
        }
        self.stats.committed = self.oracle.len() as u64;
        let want: Vec<(u64, Bytes)> = self.oracle.iter().map(|(i, d)| (*i, d.clone())).collect();
        for id in self.ids.clone() {
            let sm = self.node(id).state_machine();
            if sm.applied != want {
                self.fail(&format!(
                    "node {id} lost committed entries: {:?} vs {want:?}",
                    sm.applied
                ));
            }
        }
    }

    /// The payloads committed so far, in index order.
    pub(crate) fn committed_payloads(&self) -> Vec<Bytes> {
        self.oracle.values().cloned().collect()
    }
}
