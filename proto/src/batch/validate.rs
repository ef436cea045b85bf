//! A client's batch checked as Kafka's log validator checks it before an append: codec,
//! control bit, sequence, and every record (decompressed, within a bound) well formed,
//! with offset deltas 0, 1, 2, ... and timestamps within the topic's bounds.

use super::{walk_records, BatchError, RecordBatchHeader, RecordView, RECORD_BATCH_OVERHEAD};

/// Checks a batch a client produced, as Kafka's log validator does before an append (the
/// batch's length, magic and CRC are already checked by [`BatchIter`]): a known codec,
/// no control batch, a sequence for idempotent batches, and exactly `recordsCount` well
/// formed records whose offset deltas run 0, 1, 2, ... (compressed batches are
/// decompressed, to at most `max_decompressed` bytes, to count them).
pub fn validate_client_batch(batch: &[u8], max_decompressed: usize) -> Result<(), BatchError> {
    validate_client_batch_within(batch, max_decompressed, i64::MIN..=i64::MAX).map(|_| ())
}

/// [`validate_client_batch`], and every record of a CreateTime batch has its timestamp in
/// `timestamps` or none (-1), as Kafka's `message.timestamp.{before,after}.max.ms` check.
pub fn validate_client_batch_within(
    batch: &[u8],
    max_decompressed: usize,
    timestamps: std::ops::RangeInclusive<i64>,
) -> Result<i64, BatchError> {
    validate_client_batch_with(
        batch,
        &ClientBatchRules {
            max_decompressed,
            timestamps,
            require_keys: false,
            log_append_time: false,
        },
    )
}

/// The topic-dependent rules of [`validate_client_batch_with`].
#[derive(Clone, Debug)]
pub struct ClientBatchRules {
    /// Largest records section a compressed batch may inflate to.
    pub max_decompressed: usize,
    /// CreateTime timestamps accepted (a record without one, -1, always is).
    pub timestamps: std::ops::RangeInclusive<i64>,
    /// Every record must have a key (a compacted topic): else [`BatchError::MissingKey`].
    pub require_keys: bool,
    /// The topic stamps LogAppendTime: a batch that sets that timestamp type itself is
    /// [`BatchError::LogAppendTimeFromProducer`], as in Kafka.
    pub log_append_time: bool,
}

/// [`validate_client_batch`] under `rules`: timestamps in `rules.timestamps`, and with
/// `rules.require_keys` a key on every record, checked in the same pass over the records
/// (a compressed batch is decompressed once). Returns the largest record timestamp (-1
/// when no record has one), which Kafka's validator writes into the header's
/// maxTimestamp of a CreateTime batch whatever the client put there.
pub fn validate_client_batch_with(
    batch: &[u8],
    rules: &ClientBatchRules,
) -> Result<i64, BatchError> {
    let h = RecordBatchHeader::parse(batch)?;
    if h.total_size() != batch.len() {
        return Err(BatchError::BadLength(h.batch_length as i64));
    }
    if h.records_count <= 0 || h.records_count as i64 != h.last_offset_delta as i64 + 1 {
        return Err(BatchError::CountMismatch {
            count: h.records_count,
            last_offset_delta: h.last_offset_delta,
        });
    }
    if h.compression() > 4 {
        return Err(BatchError::Invalid("unknown compression codec"));
    }
    if h.is_control() {
        return Err(BatchError::Invalid("clients may not write control records"));
    }
    if h.producer_id >= 0 && h.base_sequence < 0 {
        return Err(BatchError::Invalid(
            "an idempotent batch needs a base sequence",
        ));
    }
    // Kafka's validateTimestamp: a producer may not set LogAppendTime on such a topic, nor
    // without a timestamp; on a CreateTime topic its batch's records read as the header's
    // maxTimestamp (DefaultRecordBatch), which is checked as theirs
    let producer_lat = h.timestamp_type_log_append();
    if producer_lat && (rules.log_append_time || h.max_timestamp == -1) {
        return Err(BatchError::LogAppendTimeFromProducer);
    }
    let mut expected = 0i64;
    let mut max_ts = -1i64;
    let mut check = |v: RecordView| {
        if v.offset_delta != expected {
            return Err(BatchError::BadRecord(
                "record offset deltas are not 0, 1, 2, ...",
            ));
        }
        if rules.require_keys && v.key.is_none() {
            return Err(BatchError::MissingKey(expected as i32));
        }
        expected += 1;
        let ts = if producer_lat {
            h.max_timestamp
        } else {
            h.base_timestamp.wrapping_add(v.timestamp_delta)
        };
        if ts != -1 && !rules.timestamps.contains(&ts) {
            return Err(BatchError::Timestamp(ts));
        }
        max_ts = max_ts.max(ts);
        Ok(())
    };
    if h.compression() == 0 {
        walk_records(
            batch,
            RECORD_BATCH_OVERHEAD,
            h.records_count,
            false,
            &mut check,
        )?;
    } else {
        let records = crate::decompress::decompress(
            h.compression(),
            &batch[RECORD_BATCH_OVERHEAD..],
            rules.max_decompressed,
        )
        .map_err(BatchError::Decompress)?;
        walk_records(&records, 0, h.records_count, false, &mut check)?;
    }
    Ok(max_ts)
}
