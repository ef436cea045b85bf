//! Kafka's transaction coordinator (KIP-98, with KIP-360's epoch recovery and KIP-890
//! part 1's verification): one `TransactionCoordinator` per `__transaction_state`
//! partition, owned by the shard that owns that partition. Sans networking, sans storage:
//! requests come in as kafka-protocol structs, durability goes through `TxnLog`, markers
//! through `MarkerWriter`, producer ids from `ProducerIds`; the glue implements all three.
//!
//! ```text
//!  InitProducerId ─┐                 ┌─append(key, value)─▶ TxnLog (one batch, replicated)
//!  AddPartitions  ─┼─▶ Transaction ──┤
//!  AddOffsets     ─┤   Coordinator   └─write_markers─▶ MarkerWriter (WriteTxnMarkers)
//!  EndTxn         ─┘   (RefCell map)        ▲ retried with backoff per partition
//!  replay ─(key, value)*─▶ load ─▶ start(): complete Prepare*, abort/expire timers
//!
//!  Empty/Complete* ─AddPartitions─▶ Ongoing ─EndTxn─▶ Prepare{Commit,Abort} ─markers─▶
//!  Complete{Commit,Abort};  Ongoing ─InitProducerId / timeout─▶ epoch+1, PrepareAbort
//! ```
//! Invariants: the in-memory state of an id changes only after its record is replicated
//! (a `pending` state blocks other transitions meanwhile); records reach the log in the
//! order the coordinator issued them; a transaction in Prepare* leaves it only through a
//! Complete* record written after markers for all its partitions; producer epochs of an id
//! never go backwards; no RefCell borrow is held across an `.await`.

mod coordinator;
mod describe;
mod end;
mod init;
mod load;
mod partitions;
pub(crate) mod records;
mod state;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_load;
#[cfg(test)]
mod tests_sim;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;

pub(crate) use coordinator::TransactionCoordinator;

/// Name of the internal topic that stores transaction state.
pub(crate) const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Why an append to the `__transaction_state` partition failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxnLogError {
    /// This broker no longer leads the partition at the coordinator's epoch (Kafka's
    /// NOT_LEADER_OR_FOLLOWER, KAFKA_STORAGE_ERROR): the coordinator answers NOT_COORDINATOR
    /// and stops all its work; a new leadership loads a new coordinator.
    NotLeader(String),
    /// The write may not be replicated (Kafka's NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT,
    /// …): the request gets COORDINATOR_NOT_AVAILABLE and the client retries; a Complete*
    /// write is retried after the marker backoff.
    Unavailable(String),
}

/// One `__transaction_state` partition, as its coordinator sees it; implemented by the glue
/// over the partition log; owned by the partition's shard; never crosses cores.
pub(crate) trait TxnLog {
    /// Appends records (key, value-or-tombstone) as one batch; resolves when the batch is on
    /// every in-sync replica (acks=all). Implementations must order batches by the time of
    /// the *call*, not of the first poll: the coordinator relies on call order = log order.
    fn append(
        &self,
        records: Vec<(Bytes, Option<Bytes>)>,
    ) -> Pin<Box<dyn Future<Output = Result<(), TxnLogError>>>>;
}

/// One WriteTxnMarkers entry: a COMMIT or ABORT control record for `partitions`, written
/// by the partitions' leaders for `producer_id` at `producer_epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MarkerRequest {
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    pub(crate) commit: bool,
    /// The leader epoch of the coordinator's `__transaction_state` partition; partition
    /// leaders refuse markers of an older coordinator epoch (TRANSACTION_COORDINATOR_FENCED).
    pub(crate) coordinator_epoch: i32,
    pub(crate) partitions: Vec<(String, i32)>,
}

/// Per partition of a `MarkerRequest`: (topic, partition, error code).
pub(crate) type MarkerResults = Vec<(String, i32, i16)>;

/// Delivers transaction markers to partition leaders (the glue: WriteTxnMarkers to the
/// leader of each partition, local or remote). Owned by the coordinator's shard.
pub(crate) trait MarkerWriter {
    /// Writes the markers; resolves with one error code per partition of the request
    /// (0 = written and replicated as the leader's acks require). The coordinator retries
    /// a partition after the marker backoff when its code is anything but:
    /// 0; UNKNOWN_TOPIC_OR_PARTITION, which the glue must answer only when the topic no
    /// longer exists in the metadata (Kafka's "no leader endpoint": the partition is
    /// dropped, its producer could not have written there); UNSUPPORTED_VERSION or
    /// UNSUPPORTED_FOR_MESSAGE_FORMAT (dropped as Kafka does); INVALID_PRODUCER_EPOCH or
    /// TRANSACTION_COORDINATOR_FENCED (a newer producer or coordinator owns the
    /// transaction: the coordinator stops sending markers for it). A partition missing
    /// from the answer is retried. A leader that is moving should answer
    /// NOT_LEADER_OR_FOLLOWER, which is retried.
    fn write_markers(&self, m: MarkerRequest) -> Pin<Box<dyn Future<Output = MarkerResults>>>;
}

/// Cluster-unique producer ids (the glue asks the controller, as Kafka's
/// ProducerIdManager does with AllocateProducerIds blocks).
pub(crate) trait ProducerIds {
    /// A fresh producer id, or the Kafka error code to answer InitProducerId with (for
    /// example COORDINATOR_LOAD_IN_PROGRESS while a block is being fetched).
    fn allocate(&self) -> Pin<Box<dyn Future<Output = Result<i64, i16>>>>;
}

/// Wall-clock milliseconds, as written in the records and compared with timeouts. The
/// glue passes `SystemClock`; tests pass a manual clock.
pub(crate) trait Clock {
    fn now_ms(&self) -> i64;
}

/// The broker's clock (`crate::errors::now_ms`).
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::errors::now_ms()
    }
}

/// What a coordinator talks to, all implemented by the glue (tests pass fakes); owned by
/// the coordinator's shard.
#[derive(Clone)]
pub(crate) struct TxnIo {
    pub(crate) log: Rc<dyn TxnLog>,
    pub(crate) markers: Rc<dyn MarkerWriter>,
    pub(crate) producer_ids: Rc<dyn ProducerIds>,
    pub(crate) clock: Rc<dyn Clock>,
}

/// Transaction coordinator settings (Kafka names in the docs of each field).
#[derive(Debug, Clone)]
pub(crate) struct TxnConfig {
    /// `transaction.max.timeout.ms` (default 900000): InitProducerId with a larger
    /// `transaction_timeout_ms` gets INVALID_TRANSACTION_TIMEOUT.
    pub(crate) max_timeout_ms: i32,
    /// `transactional.id.expiration.ms` (default 604800000, 7 days): an id idle this long
    /// in Empty/CompleteCommit/CompleteAbort is deleted (a tombstone is written).
    pub(crate) id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms` (default 10000): how
    /// often Ongoing transactions past their timeout are looked for and aborted.
    pub(crate) abort_timed_out_interval_ms: u64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms` (default 3600000): how
    /// often expired transactional ids are looked for.
    pub(crate) remove_expired_interval_ms: u64,
    /// Backoff before a failed marker partition, or a failed Complete* write, is retried
    /// (Kafka's marker sender retries on its next poll; 100 ms here, not a Kafka setting).
    pub(crate) marker_retry_backoff_ms: u64,
    /// How long AddPartitionsToTxn/AddOffsetsToTxn waits for the id's previous transaction
    /// to complete (markers written, Complete* replicated) before answering
    /// CONCURRENT_TRANSACTIONS. Kafka answers at once (0) and the client retries after its
    /// backoff (librdkafka: 100 ms), a pause at every transaction boundary; the broker
    /// waits up to 1 s, as Redpanda does, and answers as soon as the transaction is done.
    pub(crate) concurrent_wait_ms: u64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            max_timeout_ms: 900_000,
            id_expiration_ms: 7 * 24 * 60 * 60 * 1000,
            abort_timed_out_interval_ms: 10_000,
            remove_expired_interval_ms: 3_600_000,
            marker_retry_backoff_ms: 100,
            concurrent_wait_ms: 0,
        }
    }
}
