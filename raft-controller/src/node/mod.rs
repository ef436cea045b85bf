//! A sans-I/O driver around `raft::RawNode`: the caller feeds it ticks, peer messages and
//! proposals, and calls `advance`, which handles raft's `Ready` exactly as raft-rs asks and
//! returns what the caller must do (send messages) and learn (committed entries, leader).
//!
//! ```text
//!  advance: ready() ─► install leader snapshot (storage, then StateMachine::restore)
//!         ─► apply committed entries ─► persist term + vote ─► persist entries ─► commit
//!         ─► RawNode::advance ─► light ready: commit index, messages, committed entries
//!         ─► advance_apply ─► snapshot + compact every `snapshot_interval` applied entries
//! ```
//! Invariants: every message in a `Readiness` leaves after the entries and hard state it
//! depends on are durable (the leader's own are held back too, which raft allows but does
//! not require); entries reach the state machine once each, in index order, from the
//! snapshot index on. A node is owned by one thread; after an error from `advance` it must
//! be dropped and reopened from its storage.

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};

use crate::error::{Error, Result, StateMachineError};
use crate::logger::raft_logger;
use crate::storage::RaftStore;

#[cfg(test)]
mod tests;

/// The replicated state (the metadata image, later) that committed entries build.
pub trait StateMachine {
    /// Applies the committed entry at `index`; called once per entry, in index order.
    fn apply(&mut self, index: u64, data: &[u8]) -> Result<(), StateMachineError>;
    /// The whole state as bytes, as of the last applied index.
    fn snapshot(&self) -> Result<Vec<u8>, StateMachineError>;
    /// Replaces the whole state with a snapshot taken at `index`.
    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), StateMachineError>;
}

/// Settings of one raft node. Ticks are the caller's timer; 100 ms is a typical tick.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's raft id (nonzero, unique in the cluster).
    pub id: u64,
    /// Ticks without a leader before a follower campaigns (randomized in [n, 2n); default 10).
    pub election_tick: usize,
    /// Ticks between leader heartbeats (default 2; must be below `election_tick`).
    pub heartbeat_tick: usize,
    /// Applied entries between snapshots; the log is compacted behind each (default 1024, ≥ 1).
    pub snapshot_interval: u64,
    /// Bytes of entries in one append message (default 1 MiB; at least one entry is sent).
    pub max_size_per_msg: u64,
    /// Append messages in flight to one follower (default 256).
    pub max_inflight_msgs: usize,
    /// Bytes of uncommitted entries a leader accepts before dropping proposals (default 16 MiB).
    pub max_uncommitted_size: u64,
    /// Pre-vote: a partitioned node rejoining does not disrupt the leader (default true).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for an election timeout steps down (default true).
    pub check_quorum: bool,
}

impl NodeConfig {
    /// Defaults for node `id`.
    pub fn new(id: u64) -> Self {
        Self {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            snapshot_interval: 1024,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_uncommitted_size: 16 << 20,
            pre_vote: true,
            check_quorum: true,
        }
    }
}

/// Where a proposal was placed in the log; it took effect if the entry committed at
/// `index` has this `term` (else a new leader overwrote it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    pub index: u64,
    pub term: u64,
}

/// A committed entry, already applied to the state machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub index: u64,
    pub term: u64,
    pub data: Bytes,
}

/// The known leader changed: `leader` is `None` while an election is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderChange {
    pub leader: Option<u64>,
    pub term: u64,
}

/// Where the state machine was restored from a snapshot sent by the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRestored {
    pub index: u64,
    pub term: u64,
}

/// What one `advance` did and what the caller must do next.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Messages to send, in order; everything they depend on is durable.
    pub messages: Vec<Message>,
    /// Entries applied to the state machine, in index order (raft's no-ops and
    /// configuration entries are applied but not listed).
    pub committed: Vec<Committed>,
    /// Set when the leader or the term changed since the last report.
    pub leader: Option<LeaderChange>,
    /// Set when the state machine was replaced by the leader's snapshot; every entry in
    /// `committed` then follows it.
    pub snapshot_restored: Option<SnapshotRestored>,
}

impl Readiness {
    /// True when there is nothing to send or learn.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.committed.is_empty()
            && self.leader.is_none()
            && self.snapshot_restored.is_none()
    }
}

/// A node's view of the group, for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: u64,
    pub term: u64,
    pub role: StateRole,
    pub leader: Option<u64>,
    pub commit: u64,
    pub applied: u64,
    pub snapshot_index: u64,
    pub last_index: u64,
}

/// One member of the metadata quorum: a `RawNode` over a `RaftStore`, and the state
/// machine its committed entries build. Owned by one thread (the controller's shard or
/// its helper thread); never shared.
pub struct Node<S: StateMachine> {
    raw: RawNode<RaftStore>,
    sm: S,
    applied: u64,
    snapshot_interval: u64,
    reported: (u64, u64),
}

impl<S: StateMachine> Node<S> {
    /// Starts a node on its storage. `sm` must be empty: it is restored from the latest
    /// snapshot, and raft then re-delivers the committed entries after it.
    pub fn open(config: &NodeConfig, store: RaftStore, mut sm: S) -> Result<Self> {
        if config.snapshot_interval == 0 {
            return Err(Error::Raft(raft::Error::ConfigInvalid(
                "snapshot_interval must be at least 1".to_string(),
            )));
        }
        let applied = store.snapshot_index();
        if applied > 0 {
            let snap = store.latest_snapshot();
            sm.restore(applied, &snap.data)
                .map_err(Error::StateMachine)?;
        }
        let cfg = raft::Config {
            id: config.id,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            applied,
            max_size_per_msg: config.max_size_per_msg,
            max_inflight_msgs: config.max_inflight_msgs,
            max_uncommitted_size: config.max_uncommitted_size,
            pre_vote: config.pre_vote,
            check_quorum: config.check_quorum,
            ..Default::default()
        };
        let raw = RawNode::new(&cfg, store, &raft_logger(config.id))?;
        Ok(Self {
            raw,
            sm,
            applied,
            snapshot_interval: config.snapshot_interval,
            reported: (0, 0),
        })
    }

    /// This node's raft id.
    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    /// Advances the logical clock one tick; true if `advance` probably has work.
    pub fn tick(&mut self) -> bool {
        self.raw.tick()
    }

    /// Starts an election now instead of waiting for the election timeout.
    pub fn campaign(&mut self) -> Result<()> {
        Ok(self.raw.campaign()?)
    }

    /// Feeds a message from a peer. An error rejects that message only; the node goes on.
    pub fn step(&mut self, mut msg: Message) -> Result<()> {
        self.mend_lost_log(&mut msg);
        Ok(self.raw.step(msg)?)
    }

    /// A voter whose disk was replaced comes back with an empty raft log, while the
    /// leader's progress still says it holds everything up to `matched`. raft-rs (like
    /// etcd) treats that as impossible: the follower panics on a heartbeat whose commit
    /// index is past its last entry, and the leader ignores the follower's rejections as
    /// stale (rejected index <= matched), so it would never resend. Two mends, both safe:
    /// a heartbeat's commit is only a hint, clamped to what this log holds (the entries
    /// come, and commit, with the leader's appends); and a leader that hears a rejection
    /// whose hint lies below `matched` restarts that follower's progress at the hint
    /// (probe), so the next append or snapshot starts where the follower's log ends.
    /// Lowering `matched` un-commits nothing: it only counts toward later commits.
    fn mend_lost_log(&mut self, msg: &mut Message) {
        let raft = &mut self.raw.raft;
        match msg.get_msg_type() {
            MessageType::MsgHeartbeat => {
                let last = raft.raft_log.last_index();
                if msg.commit > last {
                    tracing::warn!(
                        id = raft.id,
                        leader = msg.from,
                        commit = msg.commit,
                        last_index = last,
                        "the leader's heartbeat commits past this node's log (its disk was \
                         replaced?): waiting for its entries"
                    );
                    msg.commit = last;
                }
            }
            MessageType::MsgAppendResponse if msg.reject && raft.state == StateRole::Leader => {
                let id = raft.id;
                if let Some(pr) = raft.mut_prs().get_mut(msg.from) {
                    if msg.reject_hint < pr.matched {
                        tracing::warn!(
                            id,
                            follower = msg.from,
                            matched = pr.matched,
                            follower_last_index = msg.reject_hint,
                            "a follower's log ends before what it had acknowledged (its disk \
                             was replaced?): sending it the log again from there"
                        );
                        pr.matched = msg.reject_hint;
                        pr.become_probe();
                    }
                }
            }
            _ => {}
        }
    }

    /// Appends `data` to the log if this node is the leader. Committed once it appears in
    /// a `Readiness` at the returned index with the returned term.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<Proposal> {
        if data.is_empty() {
            return Err(Error::EmptyProposal);
        }
        self.require_leader()?;
        let before = self.raw.raft.raft_log.last_index();
        self.raw.propose(Vec::new(), data)?;
        self.placed(before)
    }

    /// Proposes a membership change (add or remove voters and learners) if this node is
    /// the leader. It takes effect on each node when its entry is applied, and the new
    /// configuration is written to storage then. One change at a time: raft refuses a
    /// second while the first is unapplied.
    pub fn propose_conf_change(&mut self, cc: ConfChangeV2) -> Result<Proposal> {
        self.require_leader()?;
        let before = self.raw.raft.raft_log.last_index();
        self.raw.propose_conf_change(Vec::new(), cc)?;
        self.placed(before)
    }

    fn require_leader(&self) -> Result<()> {
        if self.raw.raft.state == StateRole::Leader {
            return Ok(());
        }
        let leader = self.raw.raft.leader_id;
        Err(Error::NotLeader {
            leader: (leader != raft::INVALID_ID).then_some(leader),
        })
    }

    /// Where the entry just proposed landed, or `ProposalDropped` if raft dropped it.
    fn placed(&self, before: u64) -> Result<Proposal> {
        let index = self.raw.raft.raft_log.last_index();
        if index != before + 1 {
            return Err(Error::Raft(raft::Error::ProposalDropped));
        }
        Ok(Proposal {
            index,
            term: self.raw.raft.term,
        })
    }

    /// Tells raft a message to `peer` could not be sent; it probes the peer again.
    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    /// Tells raft whether a snapshot message to `peer` was delivered. Without a failure
    /// report a lost snapshot stalls that follower, so the transport must call this.
    pub fn report_snapshot(&mut self, peer: u64, delivered: bool) {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(peer, status);
    }

    /// True when `advance` has work (messages, entries, state changes).
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Handles pending `Ready`s (up to 8 rounds): persists, applies, snapshots, and returns
    /// what to send and what changed. Call after each tick, step and proposal, and again
    /// while `has_ready()` is true. On error, drop the node and reopen it from its storage.
    pub fn advance(&mut self) -> Result<Readiness> {
        let mut out = Readiness::default();
        // Each round can unblock another (e.g. persisted entries let the leader commit);
        // a handful of rounds drains it, and the next call picks up any rest.
        for _ in 0..8 {
            if !self.raw.has_ready() {
                break;
            }
            // A snapshot replaces the state: keep it out of a Readiness that already lists
            // entries applied before it, so every listed entry follows the snapshot.
            let snapshot_next = self.raw.snap().is_some_and(|s| !s.is_empty());
            if snapshot_next && !out.committed.is_empty() {
                break;
            }
            self.advance_once(&mut out)?;
        }
        self.maybe_snapshot()?;
        let now = (self.raw.raft.leader_id, self.raw.raft.term);
        if now != self.reported {
            self.reported = now;
            out.leader = Some(LeaderChange {
                leader: (now.0 != raft::INVALID_ID).then_some(now.0),
                term: now.1,
            });
        }
        Ok(out)
    }

    fn advance_once(&mut self, out: &mut Readiness) -> Result<()> {
        let mut rd = self.raw.ready();
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            let (index, term) = (snap.get_metadata().index, snap.get_metadata().term);
            let data = snap.data.clone();
            self.raw.mut_store().apply_snapshot(snap)?;
            self.sm.restore(index, &data).map_err(Error::StateMachine)?;
            self.applied = index;
            out.snapshot_restored = Some(SnapshotRestored { index, term });
        }
        // Committed entries are durable here already; applying them may overlap the append.
        self.apply(rd.take_committed_entries(), out)?;
        // Term and vote before the entries: a crash between the two must not leave entries
        // of a term the node does not remember (it would answer votes with a stale term).
        // The commit after them: it may cover entries of this very `Ready`.
        let hs = rd.hs().cloned();
        if let Some(hs) = &hs {
            self.raw.mut_store().set_term_vote(hs.term, hs.vote)?;
        }
        self.raw.mut_store().append(rd.entries())?;
        if let Some(hs) = &hs {
            self.raw.mut_store().set_commit(hs.commit)?;
        }
        out.messages.extend(rd.take_messages());
        out.messages.extend(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        out.messages.extend(light.take_messages());
        self.apply(light.take_committed_entries(), out)?;
        self.raw.advance_apply();
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>, out: &mut Readiness) -> Result<()> {
        for e in entries {
            if e.index != self.applied + 1 {
                return Err(Error::ApplyGap {
                    expected: self.applied + 1,
                    got: e.index,
                });
            }
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => {}
                EntryType::EntryNormal => {
                    self.sm
                        .apply(e.index, &e.data)
                        .map_err(Error::StateMachine)?;
                    out.committed.push(Committed {
                        index: e.index,
                        term: e.term,
                        data: e.data.clone(),
                    });
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&e.data).map_err(raft::Error::from)?;
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.raw.mut_store().set_conf_state(cs)?;
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&e.data).map_err(raft::Error::from)?;
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.raw.mut_store().set_conf_state(cs)?;
                }
            }
            self.applied = e.index;
        }
        Ok(())
    }

    /// Every `snapshot_interval` applied entries: snapshot the state machine at the
    /// applied index and compact the log behind it.
    fn maybe_snapshot(&mut self) -> Result<()> {
        let store = self.raw.store();
        if self.applied < store.snapshot_index() + self.snapshot_interval {
            return Ok(());
        }
        let data = self.sm.snapshot().map_err(Error::StateMachine)?;
        let applied = self.applied;
        self.raw
            .mut_store()
            .create_snapshot(applied, Bytes::from(data))?;
        tracing::debug!(
            raft_id = self.id(),
            index = applied,
            "raft: snapshot taken, log compacted"
        );
        Ok(())
    }

    /// The node's view of the group.
    pub fn status(&self) -> NodeStatus {
        let raft = &self.raw.raft;
        NodeStatus {
            id: raft.id,
            term: raft.term,
            role: raft.state,
            leader: (raft.leader_id != raft::INVALID_ID).then_some(raft.leader_id),
            commit: raft.raft_log.committed,
            applied: self.applied,
            snapshot_index: self.raw.store().snapshot_index(),
            last_index: raft.raft_log.last_index(),
        }
    }

    /// True if this node is the leader of its current term.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The state machine, as of the applied index.
    pub fn state_machine(&self) -> &S {
        &self.sm
    }

    /// The node's storage.
    /// Writes the commit index to disk if it moved (see `RaftStore::persist_commit`).
    pub fn persist_commit(&mut self) -> Result<bool> {
        self.raw.mut_store().persist_commit()
    }

    pub fn store(&self) -> &RaftStore {
        self.raw.store()
    }
}
