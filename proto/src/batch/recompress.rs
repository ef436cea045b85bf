//! A client's batch recompressed for a topic whose `compression.type` names a codec
//! (Kafka's `LogValidator`, when the producer's codec is not the topic's): the records
//! section decompressed and compressed again with the topic's codec, every other field
//! kept.

use super::{BatchError, RecordBatchHeader, CRC_START, LOG_OVERHEAD, RECORD_BATCH_OVERHEAD};

/// Appends to `out` the batch `batch` (one whole v2 batch, already validated) with its
/// records section in `codec` (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd) at `level`
/// (`compress_at`; None: Kafka's default): the section is
/// inflated to at most `max_decompressed` bytes and compressed again; the attributes'
/// codec bits, the length and the CRC are rewritten. Base offset, partition leader epoch,
/// lastOffsetDelta, timestamps, producer id, epoch and base sequence, the transactional
/// flag and every record's bytes are kept, so offsets, timestamps and idempotence work
/// as for the original. A batch already in `codec` is appended unchanged. Returns the
/// bytes the records section inflated to (0 for a batch kept as it is), for a caller
/// that bounds the work.
pub fn recompress_batch(
    batch: &[u8],
    codec: u8,
    level: Option<i32>,
    max_decompressed: usize,
    out: &mut Vec<u8>,
) -> Result<usize, BatchError> {
    let h = RecordBatchHeader::parse(batch)?;
    if h.compression() == codec {
        out.extend_from_slice(batch);
        return Ok(0);
    }
    if h.is_control() {
        return Err(BatchError::Invalid("control batches are not recompressed"));
    }
    let section = super::records_section(batch, max_decompressed)?;
    let start = out.len();
    out.extend_from_slice(&batch[..RECORD_BATCH_OVERHEAD]);
    if codec == 0 {
        out.extend_from_slice(&section);
    } else {
        let body =
            crate::decompress::compress_at(codec, level, &section).map_err(BatchError::Compress)?;
        out.extend_from_slice(&body);
    }
    let new = &mut out[start..];
    let len = match i32::try_from(new.len() - LOG_OVERHEAD) {
        Ok(len) => len,
        Err(_) => {
            let n = new.len();
            out.truncate(start);
            return Err(BatchError::BadLength(n as i64));
        }
    };
    new[8..12].copy_from_slice(&len.to_be_bytes());
    let attributes = (h.attributes & !0x07) | i16::from(codec & 0x07);
    new[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&new[CRC_START..]);
    new[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(section.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{
        build_compressed_batch, decode_stored_records, set_transactional_producer,
        validate_client_batch, SimpleRecord,
    };
    use bytes::Bytes;

    fn records(n: usize) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
        (0..n)
            .map(|i| {
                (
                    format!("key-{i}").into_bytes(),
                    format!("value {i} {}", "x".repeat(i % 50)).into_bytes(),
                    1_700_000_000_000 + i as i64 * 7,
                )
            })
            .collect()
    }

    fn batch(codec: u8, recs: &[(Vec<u8>, Vec<u8>, i64)]) -> Bytes {
        let simple: Vec<SimpleRecord<'_>> = recs
            .iter()
            .map(|(k, v, ts)| SimpleRecord {
                key: Some(k),
                value: Some(v),
                timestamp: *ts,
                headers: &[],
            })
            .collect();
        build_compressed_batch(0, &simple, codec).unwrap() // ok: test
    }

    #[test]
    fn every_codec_pair_keeps_the_records_and_the_header_fields() {
        let recs = records(200);
        for from in 0..=4u8 {
            let mut original = batch(from, &recs).to_vec();
            // an idempotent, transactional batch: its producer fields must survive
            set_transactional_producer(&mut original, 42, 3, 17);
            let before = RecordBatchHeader::parse(&original).unwrap(); // ok: test
            for to in 0..=4u8 {
                let mut out = vec![0xEE; 3]; // appended after what is there
                recompress_batch(&original, to, Some(1), 64 << 20, &mut out).unwrap(); // ok: test
                assert_eq!(&out[..3], &[0xEE; 3]);
                let new = Bytes::copy_from_slice(&out[3..]);
                validate_client_batch(&new, 64 << 20).unwrap(); // ok: test
                let after = RecordBatchHeader::parse(&new).unwrap(); // ok: test
                assert_eq!(after.compression(), to, "{from} -> {to}");
                assert_eq!(
                    (
                        after.base_offset,
                        after.partition_leader_epoch,
                        after.last_offset_delta,
                        after.base_timestamp,
                        after.max_timestamp,
                        after.producer_id,
                        after.producer_epoch,
                        after.base_sequence,
                        after.records_count,
                        after.is_transactional(),
                    ),
                    (
                        before.base_offset,
                        before.partition_leader_epoch,
                        before.last_offset_delta,
                        before.base_timestamp,
                        before.max_timestamp,
                        before.producer_id,
                        before.producer_epoch,
                        before.base_sequence,
                        before.records_count,
                        before.is_transactional(),
                    ),
                    "{from} -> {to}"
                );
                let got = decode_stored_records(&new, 64 << 20).unwrap().1; // ok: test
                let want = Bytes::from(original.clone());
                let want = decode_stored_records(&want, 64 << 20).unwrap().1; // ok: test
                assert_eq!(got, want, "{from} -> {to}");
                if from == to {
                    assert_eq!(&out[3..], &original[..]);
                }
            }
        }
    }

    #[test]
    fn a_bomb_or_a_control_batch_is_refused_and_out_is_left_as_it_was() {
        let recs = records(3);
        let mut out = b"kept".to_vec();
        let gz = batch(1, &recs);
        assert!(recompress_batch(&gz, 0, None, 10, &mut out).is_err());
        assert_eq!(out, b"kept");
        let marker = crate::batch::build_control_batch(
            5,
            1,
            crate::batch::EndTxnMarker {
                commit: true,
                coordinator_epoch: 0,
            },
            1,
        );
        assert!(recompress_batch(&marker, 1, None, 1 << 20, &mut out).is_err());
        assert_eq!(out, b"kept");
    }
}
