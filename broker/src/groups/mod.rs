//! Kafka's classic group protocol: one `GroupCoordinator` per `__consumer_offsets`
//! partition, owned by the shard that owns that partition. Sans networking, sans storage:
//! requests come in as kafka-protocol structs, durability goes through `OffsetsLog`.
//!
//! ```text
//!  handlers (lead) ──JoinGroup/SyncGroup/...──▶ GroupCoordinator ──append(key,value)──▶ OffsetsLog
//!                                                   ▲  state in RefCell, timers are local tasks
//!  partition replay at start ──(key, value)*──▶ GroupCoordinator::load
//! ```
//! Invariants: the in-memory state equals the replay of the partition's records plus the
//! live membership of the current generation; records reach the log in the order the
//! coordinator issued them; no RefCell borrow is held across an `.await`.

mod coordinator;
mod load;
mod membership;
mod offsets;
mod oneshot;
pub(crate) mod records;
mod state;
mod txn_offsets;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_joins;
#[cfg(test)]
mod tests_offsets;
#[cfg(test)]
mod tests_sim;
#[cfg(test)]
mod tests_static;
#[cfg(test)]
mod tests_txn;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

pub(crate) use coordinator::GroupCoordinator;
pub(crate) use offsets::GroupOffsets;
pub(crate) use records::coordinator_partition;

/// Name of the internal topic that stores group metadata and committed offsets.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// One `__consumer_offsets` partition, as the coordinator sees it; implemented by the broker
/// over the partition log; owned by the partition's shard; never crosses cores.
pub(crate) trait OffsetsLog {
    /// Appends records (key, value-or-tombstone) as one batch; resolves when durable.
    /// Err((the storage's Kafka error code, message)) when not written; the coordinator
    /// answers it through `write_error` or `commit_error`. Implementations must order
    /// batches by the time of the *call* (not of the first poll): the coordinator relies
    /// on call order being log order.
    fn append(
        &self,
        records: Vec<(Bytes, Option<Bytes>)>,
    ) -> Pin<Box<dyn Future<Output = Result<(), WriteFailed>>>>;

    /// Appends TxnOffsetCommit records as one transactional batch of `producer_id` at
    /// `producer_epoch` (the partition's producer state fences an older epoch; a batch
    /// that would start the producer's transaction there needs `verification`, KIP-890);
    /// resolves when durable and replicated like `append`. Err(Kafka error code) when
    /// refused or not written. Same call-order rule as `append`.
    fn append_txn(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        records: Vec<(Bytes, Option<Bytes>)>,
        verification: sluice_storage::TxnVerification,
    ) -> Pin<Box<dyn Future<Output = Result<(), i16>>>>;
}

/// Why an `OffsetsLog` write failed: the Kafka error code of the append, produce-style
/// (NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT, ...), and a message.
pub(crate) type WriteFailed = (i16, String);

/// What a group operation answers when its write failed (JoinGroup of a static member,
/// SyncGroup's assignment, DeleteGroups, OffsetDelete): Kafka's
/// `CoordinatorOperationExceptionHelper.handleOperationException`. A lost leadership
/// sends the client to find the coordinator again; too few replicas or a timeout is
/// COORDINATOR_NOT_AVAILABLE.
pub(crate) fn write_error(code: i16) -> i16 {
    use kafka_protocol::ResponseError as E;
    match code {
        c if c == E::UnknownTopicOrPartition.code()
            || c == E::NotEnoughReplicas.code()
            || c == E::NotEnoughReplicasAfterAppend.code()
            || c == E::RequestTimedOut.code() =>
        {
            E::CoordinatorNotAvailable.code()
        }
        c if c == E::NotLeaderOrFollower.code() || c == E::KafkaStorageError.code() => {
            E::NotCoordinator.code()
        }
        c if c == E::MessageTooLarge.code()
            || c == E::RecordListTooLarge.code()
            || c == E::InvalidFetchSize.code() =>
        {
            E::UnknownServerError.code()
        }
        c => c,
    }
}

/// What an offset commit answers for a failed write (Kafka's
/// GroupMetadataManager.storeOffsets): as `write_error`, but a write too large is
/// INVALID_COMMIT_OFFSET_SIZE, and INVALID_PRODUCER_EPOCH (a transactional commit of an
/// older producer) is PRODUCER_FENCED.
pub(crate) fn commit_error(code: i16) -> i16 {
    use kafka_protocol::ResponseError as E;
    match code {
        c if c == E::MessageTooLarge.code()
            || c == E::RecordListTooLarge.code()
            || c == E::InvalidFetchSize.code() =>
        {
            E::InvalidCommitOffsetSize.code()
        }
        // a newer producer owns the transactional id
        c if c == E::InvalidProducerEpoch.code() => E::ProducerFenced.code(),
        c => write_error(c),
    }
}

/// One item of a `__consumer_offsets` partition replayed at load, in log order.
#[derive(Debug, Clone)]
pub(crate) enum Replay {
    /// A record; `txn_producer` is the producer id of a transactional batch (a
    /// TxnOffsetCommit, pending until its marker).
    Record {
        key: Bytes,
        value: Option<Bytes>,
        txn_producer: Option<i64>,
    },
    /// A transaction marker (control batch) of `producer_id`.
    Marker { producer_id: i64, commit: bool },
}

impl From<(Bytes, Option<Bytes>)> for Replay {
    fn from((key, value): (Bytes, Option<Bytes>)) -> Replay {
        Replay::Record {
            key,
            value,
            txn_producer: None,
        }
    }
}

/// Group coordinator settings (Kafka names in the docs of each field).
#[derive(Debug, Clone)]
pub(crate) struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members (extended while members keep arriving, up to the rebalance
    /// timeout).
    pub(crate) initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`
    pub(crate) min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub(crate) max_session_timeout_ms: i32,
    /// `group.max.size`
    pub(crate) max_group_size: usize,
    /// `offsets.retention.minutes`, in milliseconds.
    pub(crate) offsets_retention_ms: i64,
    /// `offset.metadata.max.bytes`
    pub(crate) offset_metadata_max_bytes: usize,
    /// How long a new member may wait in JoinGroup before it is dropped (Kafka's
    /// `NewMemberJoinTimeoutMs`, 5 minutes).
    pub(crate) new_member_join_timeout_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            max_group_size: i32::MAX as usize,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offset_metadata_max_bytes: 4096,
            new_member_join_timeout_ms: 5 * 60 * 1000,
        }
    }
}
