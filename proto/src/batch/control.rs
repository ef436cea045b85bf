//! Control batches: the transaction markers (Kafka's EndTransactionMarker, COMMIT or ABORT
//! with the coordinator's epoch) a transaction coordinator writes, built and read.

use bytes::{Bytes, BytesMut};

use super::{
    assemble, be_i32, encode_records, BatchError, Reader, RecordBatchHeader, SimpleRecord,
    CRC_START, RECORD_BATCH_OVERHEAD,
};

/// Attribute bit of a batch from a transactional producer.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit of a control batch (transaction markers and other broker records).
pub const ATTR_CONTROL: i16 = 0x20;

/// What a transaction marker (Kafka's EndTransactionMarker) says: commit or abort, and
/// the epoch of the transaction coordinator that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndTxnMarker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// A control batch holding one transaction marker, as Kafka's coordinator has a leader
/// write it (`MemoryRecords.withEndTransactionMarker`): attributes control and
/// transactional, producer id and epoch in the header, base sequence -1, one record at
/// offset delta 0 with timestamp `timestamp`, key = version 0 (i16) and type (i16: 0
/// abort, 1 commit), value = version 0 (i16) and `coordinator_epoch` (i32). Base offset 0
/// and partition leader epoch -1 (the log writes both, outside the CRC).
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
    timestamp: i64,
) -> Bytes {
    let mut key = [0u8; 4];
    key[2..4].copy_from_slice(&i16::from(marker.commit).to_be_bytes());
    let mut value = [0u8; 6];
    value[2..6].copy_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let recs = [SimpleRecord {
        key: Some(&key),
        value: Some(&value),
        timestamp,
        headers: &[],
    }];
    let plain = assemble(
        0,
        ATTR_CONTROL | ATTR_TRANSACTIONAL,
        &recs,
        &encode_records(&recs),
    );
    let mut b = BytesMut::from(&plain[..]);
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// The transaction marker in `batch` (a whole v2 batch), if it is a control batch whose
/// first record's key has type 0 (abort) or 1 (commit); None for any other batch or
/// control type (KRaft's leader-change and snapshot records, future types), as Kafka's
/// `ControlRecordType.parse` treats unknown types. A marker without a readable value
/// has coordinator epoch -1. Control batches are never compressed; a compressed one is
/// not read (None).
pub fn end_txn_marker(batch: &[u8]) -> Result<Option<EndTxnMarker>, BatchError> {
    let h = RecordBatchHeader::parse(batch)?;
    if !h.is_control() || h.records_count < 1 || h.compression() != 0 {
        return Ok(None);
    }
    let end = h.total_size().min(batch.len());
    let mut found = None;
    let body = &batch[..end];
    // only the first record matters; walk exactly one
    let mut r = Reader {
        buf: body,
        pos: RECORD_BATCH_OVERHEAD,
        end,
    };
    let len = r.varint()?;
    let len = usize::try_from(len).map_err(|_| BatchError::BadRecord("negative length"))?;
    if len > r.end - r.pos || len == 0 {
        return Err(BatchError::BadRecord("record runs past the batch"));
    }
    let mut rr = Reader {
        buf: body,
        pos: r.pos + 1, // attributes
        end: r.pos + len,
    };
    rr.varint()?; // timestamp delta
    rr.varint()?; // offset delta
    let key = rr.field()?;
    let value = rr.field()?;
    if let Some(k) = key.filter(|k| k.len() >= 4) {
        let kind = i16::from_be_bytes([body[k.start + 2], body[k.start + 3]]);
        let coordinator_epoch = match value.filter(|v| v.len() >= 6) {
            Some(v) => be_i32(body, v.start + 2),
            None => -1,
        };
        if kind == 0 || kind == 1 {
            found = Some(EndTxnMarker {
                commit: kind == 1,
                coordinator_epoch,
            });
        }
    }
    Ok(found)
}
