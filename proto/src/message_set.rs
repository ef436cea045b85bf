//! Message sets: Kafka's message formats v0 and v1 (before 0.11), sans I/O. Produce v0-2
//! carries them and Fetch v0-3 answers with them, but the log stores only v2 record
//! batches, so they are converted at the edge, both ways, and never stored:
//! [`to_record_batch`] turns one produced message set into one v2 batch (Kafka's
//! `LogValidator` conversion), [`from_record_batch`] turns one stored batch into messages
//! of magic 0 or 1 (Kafka's `RecordsUtil.downConvert`).
//!
//! ```text
//!  entry:   offset i64 | size i32 | message (size bytes)
//!  message: crc u32 | magic i8 | attributes i8 | (v1) timestamp i64 | key i32+bytes | value i32+bytes
//!           crc: CRC-32 (IEEE) of magic..end; attributes: codec (bits 0-2), v1 LogAppendTime (bit 3)
//!  compressed: one wrapper message, key null, value = an inner message set in the codec;
//!              inner offsets absolute (v0) or 0, 1, ... (v1, the wrapper at the last offset)
//! ```
//! Every length is bounds-checked before it is used and decompression is bounded, so no
//! input makes this module panic or allocate more than the input and the bound allow.

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{
    build_batch, build_compressed_batch, decode_stored_records, RecordBatchHeader, SimpleRecord,
};
use crate::decompress::{compress, decompress};

pub const MAGIC_V0: i8 = 0;
pub const MAGIC_V1: i8 = 1;
/// Byte 16 of an entry is its magic in every format: after offset, size and CRC (v0/v1),
/// after baseOffset, batchLength and partitionLeaderEpoch (v2).
const MAGIC_AT: usize = 16;
/// offset + size, before every message.
const LOG_OVERHEAD: usize = 12;
/// crc, magic, attributes, key length, value length.
const RECORD_OVERHEAD_V0: usize = 14;
/// The same plus a timestamp.
const RECORD_OVERHEAD_V1: usize = 22;
const CODEC_MASK: i8 = 0x07;
const LOG_APPEND_TIME: i8 = 0x08;
const LZ4: u8 = 3;
const ZSTD: u8 = 4;
const LZ4_MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];

/// Why a message set (or a stored batch, for down-conversion) could not be converted. The
/// broker answers each with the error Kafka gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageSetError {
    /// Not a message set: lengths, CRC, magic, or compressed bytes that do not inflate
    /// (Kafka's `CorruptRecordException`, CORRUPT_MESSAGE).
    #[error("corrupt message set: {0}")]
    Corrupt(String),
    /// Well-formed messages Kafka refuses (`InvalidRecordException`, INVALID_RECORD).
    #[error("invalid message set: {0}")]
    Invalid(String),
    /// A timestamp Kafka refuses (INVALID_TIMESTAMP).
    #[error("invalid timestamp: {0}")]
    Timestamp(String),
    /// A stored batch in a codec formats v0/v1 do not have (zstd):
    /// UNSUPPORTED_COMPRESSION_TYPE.
    #[error("a batch compressed with codec {0} cannot be down-converted")]
    UnsupportedCompression(u8),
}

fn corrupt(what: impl Into<String>) -> MessageSetError {
    MessageSetError::Corrupt(what.into())
}

fn invalid(what: impl Into<String>) -> MessageSetError {
    MessageSetError::Invalid(what.into())
}

/// One message of a message set, borrowed from the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub offset: i64,
    pub magic: i8,
    pub attributes: i8,
    /// The message's own timestamp; -1 for magic 0.
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

impl Message<'_> {
    /// Compression codec of a wrapper message (0 for a plain one).
    pub fn codec(&self) -> u8 {
        (self.attributes & CODEC_MASK) as u8
    }
    /// A v1 message whose timestamp type is LogAppendTime.
    pub fn log_append_time(&self) -> bool {
        self.magic >= MAGIC_V1 && self.attributes & LOG_APPEND_TIME != 0
    }
}

/// Iterates the messages of a message set front to back, checking each one's lengths and
/// CRC. The first bad or truncated entry is yielded as an error and ends the iteration (a
/// fetch answer may end in a partial message; a produced set may not).
pub struct Messages<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

/// The messages of `set`.
pub fn messages(set: &[u8]) -> Messages<'_> {
    Messages {
        buf: set,
        pos: 0,
        done: false,
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, MessageSetError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        let res = entry(&self.buf[self.pos..]);
        match res {
            Ok((m, len)) => {
                self.pos += len;
                Some(Ok(m))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

/// The message at the start of `rest` and the bytes its entry takes.
fn entry(rest: &[u8]) -> Result<(Message<'_>, usize), MessageSetError> {
    if rest.len() < LOG_OVERHEAD {
        return Err(corrupt(format!(
            "{} bytes left, less than an entry header",
            rest.len()
        )));
    }
    let offset = be_i64(rest);
    let size = be_i32(&rest[8..]);
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s >= RECORD_OVERHEAD_V0)
        .ok_or_else(|| corrupt(format!("message size {size} is below the minimum 14")))?;
    let end = LOG_OVERHEAD
        .checked_add(size)
        .filter(|&e| e <= rest.len())
        .ok_or_else(|| corrupt(format!("message of {size} bytes runs past the set")))?;
    let m = message(offset, &rest[LOG_OVERHEAD..end])?;
    Ok((m, end))
}

/// Reads one message (`m` is exactly its bytes) and checks its CRC.
fn message(offset: i64, m: &[u8]) -> Result<Message<'_>, MessageSetError> {
    let magic = m[4] as i8;
    let header = match magic {
        MAGIC_V0 => RECORD_OVERHEAD_V0 - 8,
        MAGIC_V1 => RECORD_OVERHEAD_V1 - 8,
        other => return Err(corrupt(format!("message magic {other}"))),
    };
    if m.len() < header + 8 {
        return Err(corrupt(format!(
            "a magic {magic} message of {} bytes",
            m.len()
        )));
    }
    let stored = u32::from_be_bytes([m[0], m[1], m[2], m[3]]);
    let computed = crc32fast::hash(&m[4..]);
    if stored != computed {
        return Err(corrupt(format!(
            "message CRC {stored:#010x}, computed {computed:#010x}"
        )));
    }
    let timestamp = if magic == MAGIC_V1 {
        be_i64(&m[6..])
    } else {
        -1
    };
    let mut pos = header;
    let key = field(m, &mut pos, "key")?;
    let value = field(m, &mut pos, "value")?;
    if pos != m.len() {
        return Err(corrupt(format!("{} bytes after the value", m.len() - pos)));
    }
    Ok(Message {
        offset,
        magic,
        attributes: m[5] as i8,
        timestamp,
        key,
        value,
    })
}

/// A length-prefixed key or value at `m[*pos..]` (-1: null).
fn field<'a>(
    m: &'a [u8],
    pos: &mut usize,
    what: &str,
) -> Result<Option<&'a [u8]>, MessageSetError> {
    let Some(len) = m.get(*pos..*pos + 4) else {
        return Err(corrupt(format!("{what} length runs past the message")));
    };
    let len = be_i32(len);
    *pos += 4;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= m.len() - *pos)
        .ok_or_else(|| corrupt(format!("{what} length {len} does not fit the message")))?;
    let b = &m[*pos..*pos + len];
    *pos += len;
    Ok(Some(b))
}

/// Appends one message entry to `out`, with its CRC.
fn put_message(
    out: &mut BytesMut,
    offset: i64,
    magic: i8,
    attributes: i8,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let overhead = if magic == MAGIC_V0 {
        RECORD_OVERHEAD_V0
    } else {
        RECORD_OVERHEAD_V1
    };
    let size = overhead + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
    out.reserve(LOG_OVERHEAD + size);
    out.put_i64(offset);
    out.put_i32(size as i32);
    let crc_at = out.len();
    out.put_u32(0);
    out.put_i8(magic);
    out.put_i8(attributes);
    if magic != MAGIC_V0 {
        out.put_i64(timestamp);
    }
    for f in [key, value] {
        match f {
            None => out.put_i32(-1),
            Some(b) => {
                out.put_i32(b.len() as i32);
                out.put_slice(b);
            }
        }
    }
    let crc = crc32fast::hash(&out[crc_at + 4..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Converts the records of one partition of a Produce v0-2 request to what the log
/// stores, as Kafka's `LogValidator` did before appending: `None` if they already are v2
/// record batches (their magic is 2; they go to the log as they are), else one v2 batch
/// (base offset 0, producer id -1, CreateTime) holding every message in order, compressed
/// with the wrapper's codec if the set was compressed.
///
/// Checked, with Kafka's errors: every message's lengths and CRC, inner ones included
/// (CORRUPT_MESSAGE); one magic throughout, at most one wrapper if compressed, no
/// compressed or zstd inner messages, no empty or null wrapper, a v1 wrapper offset not
/// below its last inner offset (INVALID_RECORD); no timestamp below -1, and no missing
/// timestamp with the LogAppendTime type (INVALID_TIMESTAMP). A v0 message has no
/// timestamp: its record gets -1 (NO_TIMESTAMP), as in Kafka; the records of a v1 wrapper
/// with LogAppendTime get the wrapper's timestamp. The timestamp range and the batch size
/// are checked by the log, on the converted batch, as for any batch.
pub fn to_record_batch(
    set: &[u8],
    max_decompressed: usize,
) -> Result<Option<Bytes>, MessageSetError> {
    if set.get(MAGIC_AT) == Some(&2) {
        return Ok(None);
    }
    let shallow = messages(set).collect::<Result<Vec<_>, _>>()?;
    let Some(first) = shallow.first() else {
        return Err(invalid("no messages at all"));
    };
    if let Some(m) = shallow.iter().find(|m| m.magic != first.magic) {
        return Err(invalid(format!(
            "message magic {} is not the first message's {}",
            m.magic, first.magic
        )));
    }
    if !shallow.iter().any(|m| m.codec() != 0) {
        let records = shallow
            .iter()
            .map(|m| record(m, m.timestamp, m.log_append_time()))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Some(build_batch(0, &records)));
    }
    if shallow.len() > 1 {
        return Err(invalid(
            "a compressed message set has more than one wrapper",
        ));
    }
    let wrapper = first;
    let codec = wrapper.codec();
    if codec >= ZSTD {
        return Err(invalid(format!(
            "wrapper compression codec {codec} (message formats v0/v1 have none 0-3)"
        )));
    }
    let Some(value) = wrapper.value else {
        return Err(invalid("a compressed wrapper with a null value"));
    };
    let data = if codec == LZ4 && wrapper.magic == MAGIC_V0 {
        // Magic 0 frames carry Kafka's broken header checksum (or a right one, from other
        // clients): Kafka skips it there, so put the right one in before liblz4 checks it.
        let mut frame = value.to_vec();
        lz4_set_header_checksum(&mut frame, false);
        decompress(codec, &frame, max_decompressed)
    } else {
        decompress(codec, value, max_decompressed)
    }
    .map_err(|e| corrupt(e.to_string()))?;
    let inner = messages(&data).collect::<Result<Vec<_>, _>>()?;
    let Some(last) = inner.last() else {
        return Err(invalid("a compressed wrapper with no inner messages"));
    };
    if let Some(m) = inner.iter().find(|m| m.magic != wrapper.magic) {
        return Err(invalid(format!(
            "inner message magic {} does not match the wrapper's {}",
            m.magic, wrapper.magic
        )));
    }
    if inner.iter().any(|m| m.codec() != 0) {
        return Err(invalid("a compressed wrapper holds a compressed message"));
    }
    if wrapper.magic == MAGIC_V1 && wrapper.offset != 0 && wrapper.offset < last.offset {
        return Err(invalid(format!(
            "wrapper offset {} is below its last inner offset {}",
            wrapper.offset, last.offset
        )));
    }
    let log_append = wrapper.log_append_time();
    let records = inner
        .iter()
        .map(|m| {
            let ts = if log_append {
                wrapper.timestamp
            } else {
                m.timestamp
            };
            record(m, ts, log_append)
        })
        .collect::<Result<Vec<_>, _>>()?;
    build_compressed_batch(0, &records, codec)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

/// The v2 record of `m` with timestamp `ts`, checked as Kafka's `validateTimestamp` does
/// for a CreateTime topic.
fn record<'a>(
    m: &Message<'a>,
    ts: i64,
    log_append_type: bool,
) -> Result<SimpleRecord<'a>, MessageSetError> {
    if ts < -1 {
        return Err(MessageSetError::Timestamp(format!(
            "negative timestamp {ts} at offset {}",
            m.offset
        )));
    }
    if ts == -1 && log_append_type {
        return Err(MessageSetError::Timestamp(
            "the producer should not set the timestamp type to LogAppendTime".into(),
        ));
    }
    Ok(SimpleRecord {
        key: m.key,
        value: m.value,
        timestamp: ts,
        headers: &[],
    })
}

/// The messages of `magic` (0 or 1) that one stored v2 batch becomes for a reader at
/// `fetch_offset`, as Kafka's `RecordsUtil.downConvert`: nothing for a control batch; an
/// uncompressed batch gives one message per record at or past `fetch_offset`, at its
/// offset; a compressed batch gives one wrapper message in the same codec (its offset the
/// last record's, its timestamp the largest) around all its records (inner offsets
/// absolute for magic 0, relative for magic 1); a zstd batch cannot be converted. Headers
/// are dropped (formats v0/v1 have none); magic 0 drops timestamps too. A LogAppendTime
/// batch gives v1 messages of that type with the batch's time.
pub fn from_record_batch(
    batch: &Bytes,
    magic: i8,
    fetch_offset: i64,
    max_decompressed: usize,
) -> Result<Bytes, MessageSetError> {
    let h = RecordBatchHeader::parse(batch).map_err(|e| corrupt(e.to_string()))?;
    if h.is_control() {
        return Ok(Bytes::new());
    }
    if h.compression() == ZSTD {
        return Err(MessageSetError::UnsupportedCompression(ZSTD));
    }
    let (h, records) =
        decode_stored_records(batch, max_decompressed).map_err(|e| corrupt(e.to_string()))?;
    let type_bit = if magic != MAGIC_V0 && h.timestamp_type_log_append() {
        LOG_APPEND_TIME
    } else {
        0
    };
    let mut out = BytesMut::new();
    let codec = h.compression();
    if codec == 0 {
        for r in records.iter().filter(|r| r.offset >= fetch_offset) {
            put_message(
                &mut out,
                r.offset,
                magic,
                type_bit,
                r.timestamp,
                r.key.as_deref(),
                r.value.as_deref(),
            );
        }
        return Ok(out.freeze());
    }
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(Bytes::new());
    };
    let mut inner = BytesMut::new();
    for r in &records {
        let offset = if magic == MAGIC_V0 {
            r.offset
        } else {
            r.offset.wrapping_sub(first.offset)
        };
        put_message(
            &mut inner,
            offset,
            magic,
            type_bit,
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
        );
    }
    let mut value = compress(codec, &inner).map_err(|e| corrupt(e.to_string()))?;
    if codec == LZ4 && magic == MAGIC_V0 {
        // What Kafka's magic-0 readers and writers expect (KafkaLZ4BlockOutputStream).
        lz4_set_header_checksum(&mut value, true);
    }
    let max_ts = if type_bit != 0 {
        h.max_timestamp
    } else {
        records.iter().map(|r| r.timestamp).fold(-1, i64::max)
    };
    put_message(
        &mut out,
        last.offset,
        magic,
        type_bit | codec as i8,
        max_ts,
        None,
        Some(&value),
    );
    Ok(out.freeze())
}

/// Rewrites the header checksum byte (HC) of an lz4 frame: the second byte of the xxh32 of
/// the frame descriptor (the frame format), or with `kafka_magic0` of the magic number and
/// descriptor (what Kafka wrote for magic 0 before KAFKA-3160). Not an lz4 frame: left as
/// it is, for the decompressor to refuse.
fn lz4_set_header_checksum(frame: &mut [u8], kafka_magic0: bool) {
    if frame.len() < 7 || frame[..4] != LZ4_MAGIC {
        return;
    }
    let flg = frame[4];
    let hc = 6 + if flg & 0x08 != 0 { 8 } else { 0 } + if flg & 0x01 != 0 { 4 } else { 0 };
    if hc >= frame.len() {
        return;
    }
    let from = if kafka_magic0 { 0 } else { 4 };
    frame[hc] = (xxh32(&frame[from..hc]) >> 8) as u8;
}

/// XXH32 with seed 0, the hash of the lz4 frame header checksum.
fn xxh32(input: &[u8]) -> u32 {
    const P1: u32 = 0x9E37_79B1;
    const P2: u32 = 0x85EB_CA77;
    const P3: u32 = 0xC2B2_AE3D;
    const P4: u32 = 0x27D4_EB2F;
    const P5: u32 = 0x1656_67B1;
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let round = |acc: u32, lane: u32| {
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(13)
            .wrapping_mul(P1)
    };
    let mut rest = input;
    let mut h = if input.len() >= 16 {
        let mut v = [P1.wrapping_add(P2), P2, 0, 0u32.wrapping_sub(P1)];
        while rest.len() >= 16 {
            for (i, lane) in v.iter_mut().enumerate() {
                *lane = round(*lane, word(&rest[i * 4..]));
            }
            rest = &rest[16..];
        }
        v[0].rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18))
    } else {
        P5
    };
    h = h.wrapping_add(input.len() as u32);
    while rest.len() >= 4 {
        h = h
            .wrapping_add(word(rest).wrapping_mul(P3))
            .rotate_left(17)
            .wrapping_mul(P4);
        rest = &rest[4..];
    }
    for &b in rest {
        h = h
            .wrapping_add(u32::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(P2);
    h ^= h >> 13;
    h = h.wrapping_mul(P3);
    h ^ (h >> 16)
}

#[cfg(test)]
#[path = "message_set_tests.rs"]
mod tests;
