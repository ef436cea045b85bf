//! The one place where library errors become Kafka error codes on the wire, plus the clock.

use kafka_protocol::ResponseError;
use sluice_proto::message_set::MessageSetError;
use sluice_storage::StorageError;

/// Kafka error code for a storage failure.
pub(crate) fn storage_error_code(e: &StorageError) -> i16 {
    match e {
        StorageError::Corrupt(_) => ResponseError::CorruptMessage.code(),
        StorageError::InvalidRecord(_) => ResponseError::InvalidRecord.code(),
        // "Compacted topic cannot accept message without key"
        StorageError::RecordWithoutKey { .. } => ResponseError::InvalidRecord.code(),
        StorageError::MessageTooLarge { .. } => ResponseError::MessageTooLarge.code(),
        StorageError::InvalidTimestamp(_) => ResponseError::InvalidTimestamp.code(),
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.code(),
        StorageError::Closed => ResponseError::UnknownTopicOrPartition.code(),
        StorageError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber.code(),
        StorageError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch.code(),
        // this replica's leadership is older than data in its log: a newer leader exists
        StorageError::StaleLeaderEpoch { .. } => ResponseError::NotLeaderOrFollower.code(),
        // a follower cutting its log for a moment: retriable
        StorageError::Truncating => ResponseError::NotLeaderOrFollower.code(),
        // records cut by a follower's truncation before they were durable: this broker
        // is no longer their leader, and a retry goes to the one that is
        StorageError::Truncated { .. } => ResponseError::NotLeaderOrFollower.code(),
        // the producer state could not be loaded (the load failed, logged) or was
        // unloaded by a truncation meanwhile: a retriable storage error
        StorageError::ProducerStateNotLoaded => ResponseError::KafkaStorageError.code(),
        StorageError::InvalidTxnState { .. } => ResponseError::InvalidTxnState.code(),
        StorageError::TransactionCoordinatorFenced { .. } => {
            ResponseError::TransactionCoordinatorFenced.code()
        }
        _ => ResponseError::KafkaStorageError.code(),
    }
}

/// Kafka error code for a message set (formats v0/v1) that could not be converted.
pub(crate) fn message_set_error_code(e: &MessageSetError) -> i16 {
    match e {
        MessageSetError::Corrupt(_) => ResponseError::CorruptMessage.code(),
        MessageSetError::Invalid(_) => ResponseError::InvalidRecord.code(),
        MessageSetError::Timestamp(_) => ResponseError::InvalidTimestamp.code(),
        MessageSetError::UnsupportedCompression(_) => {
            ResponseError::UnsupportedCompressionType.code()
        }
    }
}

pub(crate) fn code(e: ResponseError) -> i16 {
    e.code()
}

/// Wall-clock milliseconds since the epoch (also the admin verbs' clock, through the
/// crate root).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
