//! What the quorum thread publishes about itself for metrics and probes: written by that
//! thread after every pass of its loop, read by metric scrapes on any thread (shard 0's
//! endpoint, or a controller-only node's own endpoint). Relaxed atomics: each value is
//! read on its own, and a scrape may see one pass's term with the next pass's index.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use sluice_controller::{NodeStatus, StateRole};

/// The metadata quorum as this node sees it. Shared (`Arc`) between the quorum thread and
/// the scrapers.
#[derive(Debug)]
pub(crate) struct QuorumStatus {
    /// This node is a voter (a controller), not only a learner following the log.
    voter: AtomicBool,
    /// This node is the active controller (the raft leader of the current term).
    active: AtomicBool,
    /// The leader this node knows, -1 for none.
    leader: AtomicI64,
    term: AtomicU64,
    commit: AtomicU64,
    applied: AtomicU64,
}

/// One reading of a `QuorumStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuorumReading {
    pub(crate) voter: bool,
    pub(crate) active: bool,
    pub(crate) leader: i64,
    pub(crate) term: u64,
    pub(crate) commit: u64,
    pub(crate) applied: u64,
}

impl QuorumStatus {
    pub(crate) fn new(voter: bool) -> QuorumStatus {
        QuorumStatus {
            voter: AtomicBool::new(voter),
            active: AtomicBool::new(false),
            leader: AtomicI64::new(-1),
            term: AtomicU64::new(0),
            commit: AtomicU64::new(0),
            applied: AtomicU64::new(0),
        }
    }

    /// The quorum thread, after a pass of its loop.
    pub(crate) fn publish(&self, s: &NodeStatus) {
        self.active
            .store(s.role == StateRole::Leader, Ordering::Relaxed);
        let leader = s.leader.and_then(|l| i64::try_from(l).ok()).unwrap_or(-1);
        self.leader.store(leader, Ordering::Relaxed);
        self.term.store(s.term, Ordering::Relaxed);
        self.commit.store(s.commit, Ordering::Relaxed);
        self.applied.store(s.applied, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> QuorumReading {
        QuorumReading {
            voter: self.voter.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            leader: self.leader.load(Ordering::Relaxed),
            term: self.term.load(Ordering::Relaxed),
            commit: self.commit.load(Ordering::Relaxed),
            applied: self.applied.load(Ordering::Relaxed),
        }
    }
}
