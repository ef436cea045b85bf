//! Sluice's metadata quorum: a raft group (tikv `raft`, raft-rs) whose committed log is
//! the cluster metadata, as KRaft's controller quorum is for Kafka.
//!
//! ```text
//!  peer bytes ─► envelope::decode ─► Node::step ─┐        Node::propose(bytes)
//!                         Node::tick (timer) ───►│ RawNode ◄──┘
//!                                                ▼
//!  Node::advance: persist (RaftStore on an Fs) ─► apply committed entries to the
//!                 StateMachine, snapshot every N ─► Readiness { messages, committed,
//!                 leader, snapshot_restored } ─► envelope::encode ─► peers
//! ```
//! The crate is sans-I/O above `Fs`: it knows nothing of shards or sockets. The caller
//! owns the timer, the transport and the thread; storage calls block (see `fs`).

pub mod envelope;
mod error;
mod fs;
mod logger;
mod memfs;
mod node;
pub mod storage;

pub use error::{Error, Result, StateMachineError};
pub use fs::{Fs, StdFs};
pub use memfs::MemFs;
pub use node::{
    Committed, LeaderChange, Node, NodeConfig, NodeStatus, Proposal, Readiness, SnapshotRestored,
    StateMachine,
};
pub use raft::eraftpb::Message as RaftMessage;
pub use raft::StateRole;
pub use storage::{RaftStore, StoreConfig};
