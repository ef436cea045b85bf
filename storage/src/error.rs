//! The storage error enum. glommio errors are mapped into `Io`; batch validation errors
//! into `Corrupt` (bad magic/CRC/length) or `InvalidRecord` (count mismatch, empty);
//! idempotent-producer violations into `OutOfOrderSequence` / `InvalidProducerEpoch`;
//! transactions: `InvalidTxnState`, `TransactionCoordinatorFenced`;
//! replication: `UnexpectedAppendOffset`, `StaleLeaderEpoch`, `Truncating`; a keyless
//! record for a compacted log: `RecordWithoutKey`.

use sluice_proto::batch::BatchError;

/// Everything a log operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("corrupt record batch: {0}")]
    Corrupt(BatchError),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: usize },
    #[error("{0}")]
    InvalidTimestamp(String),
    #[error("offset {offset} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("log is closed")]
    Closed,
    /// An idempotent batch's first sequence does not follow the producer's last one
    /// (Kafka OUT_OF_ORDER_SEQUENCE_NUMBER, 45). Nothing of the request was written.
    #[error("out of order sequence for producer {producer_id}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    /// An idempotent or transactional batch, or a transaction marker
    /// (`append_control`), carries an epoch older than the producer's current one
    /// (Kafka INVALID_PRODUCER_EPOCH, 47). Nothing of the request was written.
    #[error("producer {producer_id} is fenced: epoch {got} is older than the current {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    /// `append_replicated`: a batch starts before the offset the log expects next (the log
    /// end offset for the first batch, the end of the previous one for the others; gaps
    /// are fine). Kafka's follower raises UnexpectedAppendOffsetException. Nothing was
    /// written.
    #[error("replicated batch starts at offset {got}, before {expected}")]
    UnexpectedAppendOffset { expected: i64, got: i64 },
    /// `append` on a log whose leader epoch (`set_leader_epoch`) is older than the latest
    /// epoch already in the log: this replica is not the current leader (Kafka
    /// FENCED_LEADER_EPOCH, 74, is the closest answer). Nothing was written.
    #[error("leader epoch {epoch} is older than the log's latest epoch {latest}")]
    StaleLeaderEpoch { epoch: i32, latest: i32 },
    /// The log is in the middle of `truncate_from`/`truncate_to` and takes no appends until
    /// the cut is in place (a short window); retry. Nothing was written.
    #[error("log is being truncated")]
    Truncating,
    /// `wait_durable`: an offset waited for was cut from the log (a follower truncating
    /// to its leader) after the wait's mark was taken, before it became durable. Whatever
    /// the log holds there now is other data.
    #[error("offset {offset} was cut from the log before it became durable")]
    Truncated { offset: i64 },
    /// An append that checks or replays into the idempotent-producer state (idempotent or
    /// transactional batches, markers) found it not built: the log is never read inside
    /// an append. Await `PartitionLog::load_producer_state` and retry (the broker does
    /// before appending, and answers a retriable error if loading failed). Nothing was
    /// written.
    #[error("the log's producer state is not loaded")]
    ProducerStateNotLoaded,
    /// `append` on a compacted log (`cleanup.policy` compact): record `index` of a batch
    /// has no key, which compaction needs (Kafka INVALID_RECORD, 87: "Compacted topic
    /// cannot accept message without key"). Nothing of the request was written.
    #[error("record {index} of a batch has no key: a compacted log needs one")]
    RecordWithoutKey { index: i32 },
    /// A batch that does not fit the producer's transaction state: a non-transactional
    /// batch from a producer whose transaction is under way (Kafka's
    /// ProducerAppendInfo; the broker answers INVALID_TXN_STATE, 48). Nothing of the
    /// request was written.
    #[error("invalid transaction state for producer {producer_id}: {reason}")]
    InvalidTxnState { producer_id: i64, reason: String },
    /// `append_control`: the marker's coordinator epoch is older than that of the
    /// producer's last marker, so a newer transaction coordinator has taken over (the
    /// broker answers TRANSACTION_COORDINATOR_FENCED, 52). Nothing was written.
    #[error("transaction coordinator fenced for producer {producer_id}: coordinator epoch {got} is older than {current}")]
    TransactionCoordinatorFenced {
        producer_id: i64,
        current: i32,
        got: i32,
    },
}

impl From<BatchError> for StorageError {
    fn from(e: BatchError) -> Self {
        match e {
            // Kafka's InvalidRecordException (INVALID_RECORD, not retried by clients):
            // malformed records, an old magic in a v2 request, no whole batch; its
            // CorruptRecordException (CORRUPT_MESSAGE) stays for a CRC mismatch, an
            // unknown magic, a batch smaller than its header, an undecodable section
            BatchError::CountMismatch { .. }
            | BatchError::Invalid(_)
            | BatchError::BadRecord(_)
            | BatchError::BadMagic(0 | 1)
            | BatchError::Truncated { .. } => StorageError::InvalidRecord(e.to_string()),
            BatchError::Timestamp(_) | BatchError::LogAppendTimeFromProducer => {
                StorageError::InvalidTimestamp(e.to_string())
            }
            BatchError::MissingKey(index) => StorageError::RecordWithoutKey { index },
            other => StorageError::Corrupt(other),
        }
    }
}

impl<T> From<glommio::GlommioError<T>> for StorageError {
    fn from(e: glommio::GlommioError<T>) -> Self {
        StorageError::Io(std::io::Error::from(e))
    }
}

/// A recorded flush failure, replayed to every waiter (io::Error is not Clone).
#[derive(Clone, Debug)]
pub(crate) struct FlushFailure {
    pub(crate) kind: std::io::ErrorKind,
    pub(crate) msg: String,
}

impl FlushFailure {
    pub(crate) fn from_err(e: &StorageError) -> Self {
        match e {
            StorageError::Io(io) => FlushFailure {
                kind: io.kind(),
                msg: io.to_string(),
            },
            other => FlushFailure {
                kind: std::io::ErrorKind::Other,
                msg: other.to_string(),
            },
        }
    }
    pub(crate) fn to_error(&self) -> StorageError {
        StorageError::Io(std::io::Error::new(
            self.kind,
            format!("log flush failed: {}", self.msg),
        ))
    }
}

/// Damage found in a segment (not a client error).
pub(crate) fn corrupt(msg: String) -> StorageError {
    StorageError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, msg))
}
