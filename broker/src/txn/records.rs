//! Kafka's `__transaction_state` record formats, byte for byte (TransactionLogKey.json,
//! TransactionLogValue.json): key = i16 version 0 + transactional id; value = i16 version +
//! the value struct; a tombstone (no value) deletes the transactional id.
//!
//! We write value version 0 (what Kafka writes until `transaction.version` 1 is finalized,
//! readable by every broker since 0.11); decoding accepts versions 0 and 1 (v1 is flexible,
//! with PreviousProducerId, NextProducerId and ClientTransactionVersion as tagged fields).
//! Decoding is bounds-checked: malformed input yields a `TxnRecordError`, never a panic.

use crate::record_reader::{ReadError, RecordReader};
use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

/// Why a `__transaction_state` record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum TxnRecordError {
    #[error("record truncated: needed {needed} more bytes at offset {at}")]
    Truncated { at: usize, needed: usize },
    #[error("unknown TransactionLogKey version {0}")]
    UnknownKeyVersion(i16),
    #[error("unknown TransactionLogValue version {0}")]
    UnknownValueVersion(i16),
    #[error("unknown transaction state id {0}")]
    UnknownState(i8),
    #[error("null or negative length for a non-nullable field")]
    NegativeLength,
    #[error("string field is not valid UTF-8")]
    InvalidUtf8,
    #[error("varint too long")]
    BadVarint,
    #[error("tagged field {0} has the wrong size")]
    BadTaggedField(u64),
    #[error("{0} trailing bytes after the record")]
    TrailingBytes(usize),
}

/// Kafka's TransactionState, with its log ids (TransactionMetadata.scala `fromId`) and its
/// names (what DescribeTransactions and ListTransactions show).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub(crate) const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    pub(crate) fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub(crate) fn from_id(id: i8) -> Result<TxnState, TxnRecordError> {
        TxnState::ALL
            .into_iter()
            .find(|s| s.id() == id)
            .ok_or(TxnRecordError::UnknownState(id))
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// PrepareCommit or PrepareAbort: markers are (to be) written.
    pub(crate) fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }

    /// Kafka's `isExpirationAllowed`: an id idle in these states may be expired.
    pub(crate) fn expiration_allowed(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }
}

/// The value of a `__transaction_state` record (TransactionLogValue v0/v1). `partitions` is
/// empty for Empty (written as a null array, as Kafka does) and for Complete* records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnLogValue {
    pub(crate) producer_id: i64,
    /// v1 tagged field 0; -1 when absent.
    pub(crate) previous_producer_id: i64,
    /// v1 tagged field 1; -1 when absent.
    pub(crate) next_producer_id: i64,
    pub(crate) producer_epoch: i16,
    pub(crate) timeout_ms: i32,
    pub(crate) state: TxnState,
    pub(crate) partitions: BTreeSet<(String, i32)>,
    pub(crate) last_update_ms: i64,
    pub(crate) start_ms: i64,
    /// v1 tagged field 2; 0 when absent.
    pub(crate) client_txn_version: i16,
}

/// The value version this coordinator writes.
pub(crate) const WRITTEN_VALUE_VERSION: i16 = 0;

/// Encodes the key of `transactional_id` (version 0).
pub(crate) fn encode_key(transactional_id: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + transactional_id.len());
    buf.put_i16(0);
    put_str(&mut buf, transactional_id, false);
    buf.freeze()
}

/// Decodes a key; the transactional id.
pub(crate) fn decode_key(bytes: &[u8]) -> Result<String, TxnRecordError> {
    let mut r = Reader::new(bytes, false);
    match r.i16()? {
        0 => {
            let id = r.string()?;
            finish(&r)?;
            Ok(id)
        }
        v => Err(TxnRecordError::UnknownKeyVersion(v)),
    }
}

fn put_str(buf: &mut BytesMut, s: &str, compact: bool) {
    // Kafka strings hold at most i16::MAX bytes; transactional ids and topic names are far
    // shorter (the request decoder enforces the same limit), so this only guards the cast.
    let mut end = s.len().min(i16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if compact {
        put_uvarint(buf, end as u64 + 1);
    } else {
        buf.put_i16(end as i16); // ok: end <= i16::MAX
    }
    buf.put_slice(&s.as_bytes()[..end]);
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_len(buf: &mut BytesMut, n: usize, compact: bool) {
    if compact {
        put_uvarint(buf, n as u64 + 1);
    } else {
        buf.put_i32(n as i32); // ok: partition sets are far below i32::MAX
    }
}

impl TxnLogValue {
    /// Topics with their partitions, in name order.
    fn by_topic(&self) -> Vec<(&str, Vec<i32>)> {
        let mut out: Vec<(&str, Vec<i32>)> = Vec::new();
        for (t, p) in &self.partitions {
            match out.last_mut() {
                Some((last, ps)) if *last == t.as_str() => ps.push(*p),
                _ => out.push((t.as_str(), vec![*p])),
            }
        }
        out
    }

    /// Encodes as `version` (0 or 1; anything else is written as 0).
    pub(crate) fn encode(&self, version: i16) -> Bytes {
        let flexible = version == 1;
        let mut buf = BytesMut::with_capacity(64 + 16 * self.partitions.len());
        buf.put_i16(if flexible { 1 } else { 0 });
        buf.put_i64(self.producer_id);
        buf.put_i16(self.producer_epoch);
        buf.put_i32(self.timeout_ms);
        buf.put_i8(self.state.id());
        if self.state == TxnState::Empty {
            // null array
            if flexible {
                put_uvarint(&mut buf, 0);
            } else {
                buf.put_i32(-1);
            }
        } else {
            let topics = self.by_topic();
            put_len(&mut buf, topics.len(), flexible);
            for (topic, parts) in topics {
                put_str(&mut buf, topic, flexible);
                put_len(&mut buf, parts.len(), flexible);
                for p in parts {
                    buf.put_i32(p);
                }
                if flexible {
                    put_uvarint(&mut buf, 0); // no tagged fields
                }
            }
        }
        buf.put_i64(self.last_update_ms);
        buf.put_i64(self.start_ms);
        if flexible {
            let mut tags: Vec<(u64, Vec<u8>)> = Vec::new();
            if self.previous_producer_id != -1 {
                tags.push((0, self.previous_producer_id.to_be_bytes().to_vec()));
            }
            if self.next_producer_id != -1 {
                tags.push((1, self.next_producer_id.to_be_bytes().to_vec()));
            }
            if self.client_txn_version != 0 {
                tags.push((2, self.client_txn_version.to_be_bytes().to_vec()));
            }
            put_uvarint(&mut buf, tags.len() as u64);
            for (tag, data) in tags {
                put_uvarint(&mut buf, tag);
                put_uvarint(&mut buf, data.len() as u64);
                buf.put_slice(&data);
            }
        }
        buf.freeze()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<TxnLogValue, TxnRecordError> {
        let mut r = Reader::new(bytes, false);
        let version = r.i16()?;
        if !(0..=1).contains(&version) {
            return Err(TxnRecordError::UnknownValueVersion(version));
        }
        r.flexible = version >= 1;
        let producer_id = r.i64()?;
        let producer_epoch = r.i16()?;
        let timeout_ms = r.i32()?;
        let state = TxnState::from_id(r.i8()?)?;
        let mut partitions = BTreeSet::new();
        if let Some(topics) = r.length(true)? {
            for _ in 0..topics {
                let topic = r.string()?;
                let count = r.length(true)?.ok_or(TxnRecordError::NegativeLength)?;
                for _ in 0..count {
                    partitions.insert((topic.clone(), r.i32()?));
                }
                r.tagged_fields(|_, _| Ok::<(), TxnRecordError>(()))?;
            }
        }
        if state == TxnState::Empty {
            // Kafka ignores partitions of an Empty record.
            partitions.clear();
        }
        let last_update_ms = r.i64()?;
        let start_ms = r.i64()?;
        let mut v = TxnLogValue {
            producer_id,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            last_update_ms,
            start_ms,
            client_txn_version: 0,
        };
        r.tagged_fields(|tag, data| {
            match (tag, data.len()) {
                (0, 8) => v.previous_producer_id = be_i64(data),
                (1, 8) => v.next_producer_id = be_i64(data),
                (2, 2) => v.client_txn_version = i16::from_be_bytes([data[0], data[1]]),
                (0..=2, _) => return Err(TxnRecordError::BadTaggedField(tag)),
                _ => {}
            }
            Ok(())
        })?;
        finish(&r)?;
        Ok(v)
    }
}

fn be_i64(data: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&data[..8]);
    i64::from_be_bytes(a)
}

type Reader<'a> = RecordReader<'a>;

impl From<ReadError> for TxnRecordError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Truncated { at, needed } => TxnRecordError::Truncated { at, needed },
            ReadError::BadVarint => TxnRecordError::BadVarint,
            ReadError::Null => TxnRecordError::NegativeLength,
            ReadError::InvalidUtf8 => TxnRecordError::InvalidUtf8,
        }
    }
}

/// No bytes may follow a record.
fn finish(r: &Reader<'_>) -> Result<(), TxnRecordError> {
    match r.remaining() {
        0 => Ok(()),
        n => Err(TxnRecordError::TrailingBytes(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[(&str, i32)]) -> BTreeSet<(String, i32)> {
        list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    fn sample(state: TxnState) -> TxnLogValue {
        TxnLogValue {
            producer_id: 1000,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state,
            partitions: if state == TxnState::Empty {
                BTreeSet::new()
            } else {
                parts(&[("a", 0), ("a", 2), ("b", 1)])
            },
            last_update_ms: 1_700_000_000_123,
            start_ms: 1_700_000_000_000,
            client_txn_version: 0,
        }
    }

    #[test]
    fn key_bytes_match_schema() {
        // TransactionLogKey v0: i16 version, string TransactionalId
        assert_eq!(&encode_key("tx")[..], &[0, 0, 0, 2, b't', b'x'][..]);
        assert_eq!(decode_key(&[0, 0, 0, 2, b't', b'x']), Ok("tx".to_string()));
        assert_eq!(
            decode_key(&[0, 1, 0, 0]),
            Err(TxnRecordError::UnknownKeyVersion(1))
        );
        assert!(decode_key(&[0, 0, 0, 5, b'a']).is_err());
        assert_eq!(
            decode_key(&[0, 0, 0, 1, b'a', 9]),
            Err(TxnRecordError::TrailingBytes(1))
        );
    }

    /// The v0 layout, written out field by field from TransactionLogValue.json.
    fn v0_bytes_ongoing() -> Vec<u8> {
        let mut b = vec![0, 0]; // version 0
        b.extend_from_slice(&1000i64.to_be_bytes()); // ProducerId
        b.extend_from_slice(&3i16.to_be_bytes()); // ProducerEpoch
        b.extend_from_slice(&60_000i32.to_be_bytes()); // TransactionTimeoutMs
        b.push(1); // TransactionStatus = Ongoing
        b.extend_from_slice(&2i32.to_be_bytes()); // TransactionPartitions: 2 topics
        b.extend_from_slice(&[0, 1, b'a']); // Topic "a"
        b.extend_from_slice(&2i32.to_be_bytes()); // PartitionIds: 2
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&[0, 1, b'b']); // Topic "b"
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&1_700_000_000_123i64.to_be_bytes()); // LastUpdateTimestampMs
        b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // StartTimestampMs
        b
    }

    #[test]
    fn value_v0_matches_hand_built_bytes() {
        let want = v0_bytes_ongoing();
        let v = sample(TxnState::Ongoing);
        assert_eq!(&v.encode(0)[..], &want[..]);
        assert_eq!(TxnLogValue::decode(&want), Ok(v));
    }

    #[test]
    fn value_v0_empty_has_null_partitions() {
        let v = sample(TxnState::Empty);
        let enc = v.encode(0);
        // 2 + 8 + 2 + 4 + 1 = 17: the array length sits at 17..21
        assert_eq!(&enc[16..21], &[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(enc.len(), 21 + 16);
        assert_eq!(TxnLogValue::decode(&enc), Ok(v));
    }

    #[test]
    fn value_v1_hand_built_with_tagged_fields() {
        let mut b = vec![0, 1]; // version 1 (flexible)
        b.extend_from_slice(&77i64.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&1000i32.to_be_bytes());
        b.push(2); // PrepareCommit
        b.push(2); // compact array: 1 topic
        b.extend_from_slice(&[4, b'f', b'o', b'o']); // compact string "foo"
        b.push(3); // compact array: 2 partitions
        b.extend_from_slice(&5i32.to_be_bytes());
        b.extend_from_slice(&7i32.to_be_bytes());
        b.push(0); // PartitionsSchema tagged fields: none
        b.extend_from_slice(&20i64.to_be_bytes());
        b.extend_from_slice(&10i64.to_be_bytes());
        b.push(3); // three tagged fields
        b.extend_from_slice(&[0, 8]);
        b.extend_from_slice(&66i64.to_be_bytes()); // PreviousProducerId
        b.extend_from_slice(&[1, 8]);
        b.extend_from_slice(&88i64.to_be_bytes()); // NextProducerId
        b.extend_from_slice(&[2, 2, 0, 2]); // ClientTransactionVersion = 2
        let v = TxnLogValue::decode(&b).expect("valid v1"); // ok: test
        assert_eq!(v.producer_id, 77);
        assert_eq!(v.previous_producer_id, 66);
        assert_eq!(v.next_producer_id, 88);
        assert_eq!(v.client_txn_version, 2);
        assert_eq!(v.state, TxnState::PrepareCommit);
        assert_eq!(v.partitions, parts(&[("foo", 5), ("foo", 7)]));
        assert_eq!((v.last_update_ms, v.start_ms), (20, 10));
        // our v1 encoder produces the same bytes
        assert_eq!(&v.encode(1)[..], &b[..]);
        // v1 with no tagged fields: defaults
        let mut w = sample(TxnState::CompleteAbort);
        w.partitions.clear();
        assert_eq!(TxnLogValue::decode(&w.encode(1)), Ok(w.clone()));
        let enc = w.encode(1);
        assert_eq!(
            enc[enc.len() - 1],
            0,
            "no tagged fields written for defaults"
        );
    }

    #[test]
    fn every_state_round_trips_in_both_versions() {
        for s in TxnState::ALL {
            let v = sample(s);
            assert_eq!(TxnLogValue::decode(&v.encode(0)), Ok(v.clone()), "{s:?} v0");
            assert_eq!(TxnLogValue::decode(&v.encode(1)), Ok(v.clone()), "{s:?} v1");
            assert_eq!(TxnState::from_id(s.id()), Ok(s));
            assert_eq!(TxnState::from_name(s.name()), Some(s));
        }
        assert_eq!(TxnState::from_id(8), Err(TxnRecordError::UnknownState(8)));
    }

    #[test]
    fn garbage_never_panics() {
        let good = v0_bytes_ongoing();
        // every truncation fails cleanly
        for n in 0..good.len() {
            assert!(TxnLogValue::decode(&good[..n]).is_err(), "prefix {n}");
        }
        // bad version, bad state, huge array length
        let mut bad = good.clone();
        bad[1] = 9;
        assert_eq!(
            TxnLogValue::decode(&bad),
            Err(TxnRecordError::UnknownValueVersion(9))
        );
        let mut bad = good.clone();
        bad[16] = 42;
        assert_eq!(
            TxnLogValue::decode(&bad),
            Err(TxnRecordError::UnknownState(42))
        );
        let mut bad = good.clone();
        bad[17..21].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(TxnLogValue::decode(&bad).is_err());
        // a deterministic pseudo-random byte soup, and every single-byte corruption
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in 0..400 {
            let soup: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = TxnLogValue::decode(&soup);
            let _ = decode_key(&soup);
            let mut v1 = vec![0, 1];
            v1.extend_from_slice(&soup);
            let _ = TxnLogValue::decode(&v1);
        }
        for i in 0..good.len() {
            for b in [0u8, 0x7f, 0x80, 0xff] {
                let mut c = good.clone();
                c[i] = b;
                let _ = TxnLogValue::decode(&c);
            }
        }
    }
}
