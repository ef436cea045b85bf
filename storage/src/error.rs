//! The storage error enum. glommio errors are mapped into `Io`; batch validation errors
//! into `Corrupt` (bad magic/CRC/length) or `InvalidRecord` (count mismatch, empty);
//! idempotent-producer violations into `OutOfOrderSequence` / `InvalidProducerEpoch`.

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
    /// An idempotent batch carries an epoch older than the producer's current one
    /// (Kafka INVALID_PRODUCER_EPOCH, 47). Nothing of the request was written.
    #[error("producer {producer_id} is fenced: epoch {got} is older than the current {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
}

impl From<BatchError> for StorageError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::CountMismatch { .. } | BatchError::Invalid(_) => {
                StorageError::InvalidRecord(e.to_string())
            }
            BatchError::Timestamp(_) => StorageError::InvalidTimestamp(e.to_string()),
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
