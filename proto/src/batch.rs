//! Kafka v2 RecordBatch, sans I/O: parse and validate the 61-byte header, check the CRC-32C,
//! assign a base offset in place, iterate concatenated batches, build / decode simple
//! uncompressed batches, validate a client's batch (`batch/validate.rs`), build and read
//! transaction markers (`batch/control.rs`), and, for the log cleaner, walk the records
//! of a stored batch (compressed or not) and rebuild it with fewer records, and recompress
//! a client's batch for a topic's `compression.type` (`batch/recompress.rs`). Nothing here
//! panics on peer bytes: every length is bounds-checked.
//!
//! ```text
//!  0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 | 17 crc u32
//!  21 attributes i16 ... 57 recordsCount i32 | 61 records...      CRC-32C covers [21, end)
//! ```

use bytes::{BufMut, Bytes, BytesMut};

mod control;
mod recompress;
mod validate;
pub use control::{
    build_control_batch, end_txn_marker, EndTxnMarker, ATTR_CONTROL, ATTR_TRANSACTIONAL,
};
pub use recompress::recompress_batch;
pub use validate::{
    validate_client_batch, validate_client_batch_with, validate_client_batch_within,
    ClientBatchRules,
};

/// Size of the fixed v2 batch header (baseOffset .. recordsCount).
pub const RECORD_BATCH_OVERHEAD: usize = 61;
/// Bytes before `batchLength` counts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;

/// Why a batch (or a record inside it) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("unsupported record batch magic {0} (only v2 is supported)")]
    BadMagic(i8),
    #[error("bad record batch length {0}")]
    BadLength(i64),
    #[error("record batch CRC mismatch: header says {expected:#010x}, computed {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("records count {count} does not match lastOffsetDelta {last_offset_delta}")]
    CountMismatch { count: i32, last_offset_delta: i32 },
    #[error("compressed record batches cannot be decoded here (codec {0})")]
    Compressed(u8),
    #[error("malformed record: {0}")]
    BadRecord(&'static str),
    #[error("invalid record batch: {0}")]
    Invalid(&'static str),
    #[error("{0}")]
    Decompress(crate::decompress::DecompressError),
    #[error("{0}")]
    Compress(crate::decompress::CompressError),
    #[error("record timestamp {0} is outside the range the topic accepts")]
    Timestamp(i64),
    /// A record without a key in a batch for a compacted topic (Kafka's log validator:
    /// "Compacted topic cannot accept message without key"); the record's index.
    #[error("record {0} has no key: a compacted topic needs one")]
    MissingKey(i32),
    /// A producer's batch with the LogAppendTime type on a LogAppendTime topic, or
    /// without a timestamp (INVALID_TIMESTAMP, as Kafka's validator).
    #[error("Producer should not set timestamp type to LogAppendTime.")]
    LogAppendTimeFromProducer,
}

/// The fixed header of a v2 RecordBatch, decoded by value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordBatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl RecordBatchHeader {
    /// Decode the header only (no CRC check). Needs at least 61 bytes; checks magic and that
    /// `batchLength` covers at least the rest of the header.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < RECORD_BATCH_OVERHEAD {
            return Err(BatchError::Truncated {
                need: RECORD_BATCH_OVERHEAD,
                have: buf.len(),
            });
        }
        let magic = buf[16] as i8;
        if magic != 2 {
            return Err(BatchError::BadMagic(magic));
        }
        let batch_length = be_i32(buf, 8);
        if (batch_length as i64) < (RECORD_BATCH_OVERHEAD - LOG_OVERHEAD) as i64 {
            return Err(BatchError::BadLength(batch_length as i64));
        }
        Ok(RecordBatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length,
            partition_leader_epoch: be_i32(buf, 12),
            magic,
            crc: u32::from_be_bytes([buf[17], buf[18], buf[19], buf[20]]),
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        })
    }

    /// Whole batch size on the wire: 12 + batchLength.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }
    /// Compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & 0x07) as u8
    }
    pub fn timestamp_type_log_append(&self) -> bool {
        self.attributes & 0x08 != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
    /// Offset of the last record: base offset + lastOffsetDelta.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }
}

/// Validate exactly one whole batch: length equals `buf.len()`, magic 2, CRC-32C over
/// attributes..end, and `0 <= records_count <= last_offset_delta + 1`. A batch the log
/// cleaner rewrote keeps its lastOffsetDelta while records went (Kafka keeps it, so the
/// producer's last sequence stays), down to none (the empty batch kept for a producer's
/// state, [`empty_batch_like`]); a client's batch must hold them all
/// ([`validate_client_batch`]).
pub fn validate_batch(buf: &[u8]) -> Result<RecordBatchHeader, BatchError> {
    let h = RecordBatchHeader::parse(buf)?;
    if h.total_size() != buf.len() {
        return Err(BatchError::BadLength(h.batch_length as i64));
    }
    let actual = crc32c::crc32c(&buf[CRC_START..]);
    if actual != h.crc {
        return Err(BatchError::CrcMismatch {
            expected: h.crc,
            actual,
        });
    }
    if h.records_count < 0
        || h.last_offset_delta < 0
        || h.records_count as i64 > h.last_offset_delta as i64 + 1
    {
        return Err(BatchError::CountMismatch {
            count: h.records_count,
            last_offset_delta: h.last_offset_delta,
        });
    }
    Ok(h)
}

/// Write `base_offset` into the header. baseOffset is outside the CRC, so the CRC stays valid.
/// Does nothing if `batch` is shorter than 8 bytes.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    if let Some(dst) = batch.get_mut(0..8) {
        dst.copy_from_slice(&base_offset.to_be_bytes());
    }
}

/// Marks a whole batch's timestamps as LogAppendTime at `now_ms`: attributes bit 3 set,
/// maxTimestamp = `now_ms`, CRC recomputed; what Kafka's log validator does to every batch
/// of a topic with `message.timestamp.type=LogAppendTime` (readers then take `now_ms` as
/// every record's timestamp). Does nothing to a buffer shorter than a batch header.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    if batch.len() < RECORD_BATCH_OVERHEAD {
        return;
    }
    let attributes = be_i16(batch, 21) | 0x08;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Makes a whole batch's header CreateTime with `max_timestamp` and recomputes its CRC,
/// unless the header already is (Kafka's `setMaxTimestamp(CREATE_TIME, ..)`). Returns
/// whether it wrote. Does nothing to a buffer shorter than a batch header.
pub fn set_max_timestamp(batch: &mut [u8], max_timestamp: i64) -> bool {
    if batch.len() < RECORD_BATCH_OVERHEAD {
        return false;
    }
    let attributes = be_i16(batch, 21);
    let create_time = attributes & !0x08;
    if be_i64(batch, 35) == max_timestamp && attributes == create_time {
        return false;
    }
    batch[21..23].copy_from_slice(&create_time.to_be_bytes());
    batch[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    true
}

/// Makes a whole batch a transactional batch of `producer_id` at `producer_epoch`
/// (attributes bit 4 set, producer fields written, base sequence `base_sequence`), CRC
/// recomputed: how a coordinator writes TxnOffsetCommit records (Kafka: sequence -1).
/// Does nothing to a buffer shorter than a batch header.
pub fn set_transactional_producer(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) {
    if batch.len() < RECORD_BATCH_OVERHEAD {
        return;
    }
    let attributes = be_i16(batch, 21) | ATTR_TRANSACTIONAL;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates `(header, byte range)` over concatenated batches. Yields `Err` for the first
/// bad or incomplete batch and then stops. With `check_crc == false` only the header and
/// length are checked (for trusted bytes already validated on append).
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    check_crc: bool,
    done: bool,
}

impl<'a> BatchIter<'a> {
    /// Full validation of every batch (length, magic, CRC, counts).
    pub fn new(buf: &'a [u8]) -> Self {
        BatchIter {
            buf,
            pos: 0,
            check_crc: true,
            done: false,
        }
    }
    /// Header and length checks only.
    pub fn headers_only(buf: &'a [u8]) -> Self {
        BatchIter {
            buf,
            pos: 0,
            check_crc: false,
            done: false,
        }
    }
    /// Byte position of the next batch (== end of the last good one).
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<(RecordBatchHeader, std::ops::Range<usize>), BatchError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let res = RecordBatchHeader::parse(rest).and_then(|h| {
            let size = h.total_size();
            if size > rest.len() {
                return Err(BatchError::Truncated {
                    need: size,
                    have: rest.len(),
                });
            }
            if self.check_crc {
                validate_batch(&rest[..size])
            } else {
                Ok(h)
            }
        });
        match res {
            Ok(h) => {
                let range = self.pos..self.pos + h.total_size();
                self.pos = range.end;
                Some(Ok((h, range)))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// One record to put into [`build_batch`].
#[derive(Debug, Clone, Copy)]
pub struct SimpleRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp: i64,
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// Build an uncompressed v2 batch (CreateTime, producer id -1) with a correct CRC.
/// An empty `records` slice yields a batch with count 0, which `validate_batch` rejects.
pub fn build_batch(base_offset: i64, records: &[SimpleRecord<'_>]) -> Bytes {
    assemble(base_offset, 0, records, &encode_records(records))
}

/// Build a v2 batch (CreateTime, producer id -1) whose records section is compressed with
/// `codec` (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), with a correct CRC.
pub fn build_compressed_batch(
    base_offset: i64,
    records: &[SimpleRecord<'_>],
    codec: u8,
) -> Result<Bytes, crate::decompress::CompressError> {
    let body = crate::decompress::compress(codec, &encode_records(records))?;
    Ok(assemble(base_offset, i16::from(codec), records, &body))
}

/// The records section of a v2 batch holding `records` (offset deltas 0, 1, 2, ...,
/// timestamp deltas from the first record's), uncompressed.
fn encode_records(records: &[SimpleRecord<'_>]) -> Vec<u8> {
    let base_ts = records.first().map_or(-1, |r| r.timestamp);
    let mut body = Vec::new();
    let mut rec = Vec::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0); // record attributes
        put_varint(&mut rec, r.timestamp.wrapping_sub(base_ts));
        put_varint(&mut rec, i as i64);
        put_bytes(&mut rec, r.key);
        put_bytes(&mut rec, r.value);
        put_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in r.headers {
            put_bytes(&mut rec, Some(k));
            put_bytes(&mut rec, *v);
        }
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    body
}

/// The 61-byte header (base timestamp: the first record's; max: the largest, -1 for no
/// records) around `body`.
fn assemble(base_offset: i64, attributes: i16, records: &[SimpleRecord<'_>], body: &[u8]) -> Bytes {
    let base_ts = records.first().map_or(-1, |r| r.timestamp);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(-1);
    let total = RECORD_BATCH_OVERHEAD + body.len();
    let mut b = BytesMut::with_capacity(total);
    b.put_i64(base_offset);
    b.put_i32((total - LOG_OVERHEAD) as i32);
    b.put_i32(-1); // partition leader epoch
    b.put_i8(2);
    b.put_u32(0); // crc placeholder
    b.put_i16(attributes);
    b.put_i32(records.len() as i32 - 1);
    b.put_i64(base_ts);
    b.put_i64(max_ts);
    b.put_i64(-1);
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(records.len() as i32);
    b.extend_from_slice(body);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// A decoded record with absolute offset and timestamp; key/value/headers are slices of
/// the batch `Bytes` (no copies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl Reader<'_> {
    /// A Kafka varint (32 bits, `ByteUtils.readVarint`): at most 5 bytes, or the record
    /// is malformed (INVALID_RECORD, as Kafka's "Varint is too long"); bits past 32 in the
    /// fifth byte are dropped, as Kafka's int arithmetic drops them.
    fn varint(&mut self) -> Result<i64, BatchError> {
        let mut z: u32 = 0;
        for shift in (0..35).step_by(7) {
            if self.pos >= self.end {
                return Err(BatchError::BadRecord("varint runs past the record"));
            }
            let byte = self.buf[self.pos];
            self.pos += 1;
            z |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(i64::from(((z >> 1) as i32) ^ -((z & 1) as i32)));
            }
        }
        Err(BatchError::BadRecord("varint longer than 5 bytes"))
    }

    /// A Kafka varlong (64 bits: a record's timestamp delta): at most 10 bytes.
    fn varlong(&mut self) -> Result<i64, BatchError> {
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            if self.pos >= self.end {
                return Err(BatchError::BadRecord("varint runs past the record"));
            }
            let byte = self.buf[self.pos];
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(BatchError::BadRecord("varint overflow"));
            }
            z |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(BatchError::BadRecord("varint too long"))
    }
    /// A length-prefixed field: its byte range, or None for a null (-1) field.
    fn field(&mut self) -> Result<Option<std::ops::Range<usize>>, BatchError> {
        let len = self.varint()?;
        if len < -1 {
            return Err(BatchError::BadRecord("negative field length"));
        }
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| BatchError::BadRecord("length"))?;
        if len > self.end - self.pos {
            return Err(BatchError::BadRecord("field runs past the record"));
        }
        let r = self.pos..self.pos + len;
        self.pos += len;
        Ok(Some(r))
    }
}

/// One record's fields as byte ranges of the records section.
struct RecordView {
    /// The whole record: its length varint and body.
    raw: std::ops::Range<usize>,
    timestamp_delta: i64,
    offset_delta: i64,
    key: Option<std::ops::Range<usize>>,
    value: Option<std::ops::Range<usize>>,
    headers: Vec<(std::ops::Range<usize>, Option<std::ops::Range<usize>>)>,
}

/// Walks exactly `count` records from `data[pos..]`; each must be well formed and end
/// where its length says, and the last must end at `data.len()`. Headers are parsed either
/// way but collected into `RecordView::headers` only if `collect_headers` (validation on
/// the produce path allocates nothing per record).
fn walk_records(
    data: &[u8],
    pos: usize,
    count: i32,
    collect_headers: bool,
    mut each: impl FnMut(RecordView) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let mut r = Reader {
        buf: data,
        pos,
        end: data.len(),
    };
    for _ in 0..count {
        let start = r.pos;
        let len = r.varint()?;
        let len = usize::try_from(len).map_err(|_| BatchError::BadRecord("negative length"))?;
        if len > r.end - r.pos {
            return Err(BatchError::BadRecord("record runs past the batch"));
        }
        let rec_end = r.pos + len;
        let mut rr = Reader {
            buf: data,
            pos: r.pos,
            end: rec_end,
        };
        if rr.pos >= rr.end {
            return Err(BatchError::BadRecord("empty record"));
        }
        rr.pos += 1; // attributes
        let timestamp_delta = rr.varlong()?;
        let offset_delta = rr.varint()?;
        let key = rr.field()?;
        let value = rr.field()?;
        let n_headers = rr.varint()?;
        if n_headers < 0 || n_headers as usize > len {
            return Err(BatchError::BadRecord("header count"));
        }
        let mut headers = Vec::new();
        for _ in 0..n_headers {
            let k = rr
                .field()?
                .ok_or(BatchError::BadRecord("null header key"))?;
            let v = rr.field()?;
            if collect_headers {
                headers.push((k, v));
            }
        }
        if rr.pos != rec_end {
            return Err(BatchError::BadRecord("record length mismatch"));
        }
        each(RecordView {
            raw: start..rec_end,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        })?;
        r.pos = rec_end;
    }
    if r.pos != r.end {
        return Err(BatchError::BadRecord(
            "trailing bytes after the last record",
        ));
    }
    Ok(())
}

/// Decode every record of one uncompressed batch (CRC is checked first).
pub fn decode_records(batch: &Bytes) -> Result<Vec<OwnedRecord>, BatchError> {
    let h = RecordBatchHeader::parse(batch)?;
    if h.total_size() > batch.len() {
        return Err(BatchError::Truncated {
            need: h.total_size(),
            have: batch.len(),
        });
    }
    let whole = batch.slice(..h.total_size());
    let h = validate_batch(&whole)?;
    if h.compression() != 0 {
        return Err(BatchError::Compressed(h.compression()));
    }
    collect_records(&h, &whole, RECORD_BATCH_OVERHEAD)
}

/// Decode every record of one batch read from the log, compressed or not (decompressed to
/// at most `max_decompressed` bytes). The CRC is not checked (the batch was validated when
/// it was appended; reads check headers only), but every length is. Keys and values are
/// slices of `batch` or of the decompressed records. The records of a LogAppendTime batch
/// carry its max timestamp, as Kafka's `DefaultRecord.timestamp()` gives them.
pub fn decode_stored_records(
    batch: &Bytes,
    max_decompressed: usize,
) -> Result<(RecordBatchHeader, Vec<OwnedRecord>), BatchError> {
    let h = RecordBatchHeader::parse(batch)?;
    if h.total_size() != batch.len() {
        return Err(BatchError::BadLength(h.batch_length as i64));
    }
    if h.records_count < 0 {
        return Err(BatchError::CountMismatch {
            count: h.records_count,
            last_offset_delta: h.last_offset_delta,
        });
    }
    let records = if h.compression() == 0 {
        collect_records(&h, batch, RECORD_BATCH_OVERHEAD)?
    } else {
        let data = crate::decompress::decompress(
            h.compression(),
            &batch[RECORD_BATCH_OVERHEAD..],
            max_decompressed,
        )
        .map_err(BatchError::Decompress)?;
        collect_records(&h, &Bytes::from(data), 0)?
    };
    let records = if h.timestamp_type_log_append() {
        records
            .into_iter()
            .map(|r| OwnedRecord {
                timestamp: h.max_timestamp,
                ..r
            })
            .collect()
    } else {
        records
    };
    Ok((h, records))
}

/// The `h.records_count` records of `data[start..]` (which they must fill exactly), with
/// absolute offsets and timestamps; keys, values and headers are slices of `data`.
fn collect_records(
    h: &RecordBatchHeader,
    data: &Bytes,
    start: usize,
) -> Result<Vec<OwnedRecord>, BatchError> {
    // Each record takes >= 7 bytes, so this bound keeps the allocation proportional to the
    // input whatever the header's count says.
    let cap = usize::try_from(h.records_count)
        .unwrap_or(0)
        .min(data.len() / 7 + 1);
    let mut out = Vec::with_capacity(cap);
    let slice = |r: std::ops::Range<usize>| data.slice(r);
    walk_records(data, start, h.records_count, true, |v| {
        out.push(OwnedRecord {
            offset: h.base_offset.wrapping_add(v.offset_delta),
            timestamp: h.base_timestamp.wrapping_add(v.timestamp_delta),
            key: v.key.map(slice),
            value: v.value.map(slice),
            headers: v
                .headers
                .into_iter()
                .map(|(k, v)| (slice(k), v.map(slice)))
                .collect(),
        });
        Ok(())
    })?;
    Ok(out)
}

/// One record of a stored batch, as the log cleaner reads it (`for_each_record`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    /// False for a tombstone (a null value).
    pub has_value: bool,
    /// The whole record as encoded (its length varint and body): a batch keeping the
    /// base offset and base timestamp can take it byte for byte ([`rebuild_batch`]).
    pub raw: &'a [u8],
}

/// The records section of a stored batch (`batch` holds the whole batch), decompressed to
/// at most `max` bytes if the batch is compressed.
pub fn records_section(batch: &[u8], max: usize) -> Result<std::borrow::Cow<'_, [u8]>, BatchError> {
    let h = RecordBatchHeader::parse(batch)?;
    let body = batch
        .get(RECORD_BATCH_OVERHEAD..h.total_size())
        .ok_or(BatchError::Truncated {
            need: h.total_size(),
            have: batch.len(),
        })?;
    if h.compression() == 0 {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    crate::decompress::decompress(h.compression(), body, max)
        .map(std::borrow::Cow::Owned)
        .map_err(BatchError::Decompress)
}

/// Calls `f` with each of the `h.records_count` records of `section` (the records section
/// of the batch whose header is `h`, from [`records_section`]), in order. Offsets may
/// have gaps (a batch the cleaner rewrote) but must increase and stay within the batch's
/// range; anything else is [`BatchError::BadRecord`].
pub fn for_each_record<'a>(
    h: &RecordBatchHeader,
    section: &'a [u8],
    mut f: impl FnMut(RecordRef<'a>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let mut prev = -1i64;
    walk_records(section, 0, h.records_count, false, |v| {
        if v.offset_delta <= prev || v.offset_delta > h.last_offset_delta as i64 {
            return Err(BatchError::BadRecord(
                "record offsets out of order or past the batch",
            ));
        }
        prev = v.offset_delta;
        f(RecordRef {
            offset: h.base_offset.wrapping_add(v.offset_delta),
            timestamp: h.base_timestamp.wrapping_add(v.timestamp_delta),
            key: v.key.map(|r| &section[r]),
            has_value: v.value.is_some(),
            raw: &section[v.raw],
        })
    })
}

/// The batch the log cleaner writes for `original` (a whole stored v2 batch) keeping
/// only `count` (>= 1) of its records, `records` being their encodings
/// ([`RecordRef::raw`]) in order, as Kafka's `MemoryRecords.filterTo` does: base offset
/// and lastOffsetDelta kept (the producer's last sequence stays the same), producer id,
/// epoch, base sequence, attributes, partition leader epoch and base timestamp kept (so
/// the records' offset and timestamp deltas stay valid byte for byte); recordsCount,
/// the max timestamp (that of the records kept; a LogAppendTime batch keeps its own),
/// the length and the CRC recomputed; the records compressed again with the batch's
/// codec.
pub fn rebuild_batch(
    original: &[u8],
    records: &[u8],
    count: i32,
    max_create_timestamp: i64,
) -> Result<Vec<u8>, BatchError> {
    let h = RecordBatchHeader::parse(original)?;
    if count <= 0 || count as i64 > h.last_offset_delta as i64 + 1 {
        return Err(BatchError::Invalid(
            "a rebuilt batch keeps 1..=lastOffsetDelta+1 records",
        ));
    }
    let body = match h.compression() {
        0 => std::borrow::Cow::Borrowed(records),
        codec => std::borrow::Cow::Owned(
            crate::decompress::compress(codec, records).map_err(BatchError::Compress)?,
        ),
    };
    let mut out = Vec::with_capacity(RECORD_BATCH_OVERHEAD + body.len());
    out.extend_from_slice(&original[..RECORD_BATCH_OVERHEAD]);
    out.extend_from_slice(&body);
    let len = i32::try_from(out.len() - LOG_OVERHEAD)
        .map_err(|_| BatchError::BadLength(out.len() as i64))?;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    let max_ts = if h.timestamp_type_log_append() {
        h.max_timestamp
    } else {
        max_create_timestamp
    };
    out[35..43].copy_from_slice(&max_ts.to_be_bytes());
    out[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// The empty batch the log cleaner keeps in place of `original` (a whole stored v2 batch)
/// when none of its records survive but it is its producer's last batch, so the producer
/// state rebuilt from the log still has its epoch and last sequence (Kafka's
/// `DefaultRecordBatch.writeEmptyHeader`): no records, no compression, base timestamp -1
/// and max timestamp the original's, base offset, lastOffsetDelta, producer id, epoch,
/// base sequence, partition leader epoch, timestamp type and the transactional and
/// control flags kept.
pub fn empty_batch_like(original: &[u8]) -> Result<Vec<u8>, BatchError> {
    let h = RecordBatchHeader::parse(original)?;
    let mut out = original[..RECORD_BATCH_OVERHEAD].to_vec();
    out[8..12].copy_from_slice(&((RECORD_BATCH_OVERHEAD - LOG_OVERHEAD) as i32).to_be_bytes());
    out[21..23].copy_from_slice(&(h.attributes & 0x38).to_be_bytes());
    out[27..35].copy_from_slice(&(-1i64).to_be_bytes());
    out[57..61].copy_from_slice(&0i32.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
