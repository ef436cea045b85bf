//! The controller crate's error enum. Disk failures carry the operation and path (`Io`);
//! a file that fails its checks where no torn write can explain it is `Corrupt` (the node
//! refuses to start rather than forget a vote or an acknowledged entry); raft-rs errors pass
//! through as `Raft`; bad peer input is `Envelope`. After any error from `Node::advance` the
//! node must be dropped and reopened from disk: raft's in-memory state may be ahead of it.

use std::path::PathBuf;

/// An error from the state machine plugged into a node (the metadata image, later).
pub type StateMachineError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything the controller crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed; `op` names it (`append`, `sync`, `rename`, ...).
    #[error("raft storage I/O error: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A durable file fails a check that a torn write cannot explain.
    #[error("raft storage is corrupt: {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// A call that breaks the storage's contract (an append that leaves a gap, a snapshot
    /// older than the one held). Nothing was written.
    #[error("raft storage refused: {0}")]
    Refused(String),
    /// raft-rs refused a step, a proposal or a configuration.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// This node is not the leader; `leader` is the one it knows of, if any.
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// Empty data is reserved for raft's own no-op entries.
    #[error("empty proposal")]
    EmptyProposal,
    /// The state machine failed to apply, snapshot or restore.
    #[error("state machine: {0}")]
    StateMachine(#[source] StateMachineError),
    /// Committed entries did not follow the applied index (an internal invariant).
    #[error("apply gap: expected index {expected}, got {got}")]
    ApplyGap { expected: u64, got: u64 },
    /// A transport envelope was malformed, oversized or misaddressed.
    #[error("bad raft envelope: {0}")]
    Envelope(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
