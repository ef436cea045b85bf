//! Kafka's `__consumer_offsets` record formats, byte for byte, and the group-to-partition hash.
//!
//! Keys: i16 key version, then the key struct (0/1 = OffsetCommitKey, 2 = GroupMetadataKey).
//! Values: i16 value version, then the value struct; a tombstone (no value) deletes the key.
//! We write OffsetCommitValue v3 (v1 when an explicit expire timestamp exists) and
//! GroupMetadataValue v3, as Kafka 3.x does; decoding accepts v0-v4 (v4 is flexible) and is
//! bounds-checked: malformed input yields a `RecordError`, never a panic.

use crate::record_reader::{ReadError, RecordReader};
use bytes::{BufMut, Bytes, BytesMut};

/// Why a `__consumer_offsets` record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum RecordError {
    #[error("record truncated: needed {needed} more bytes at offset {at}")]
    Truncated { at: usize, needed: usize },
    #[error("unknown __consumer_offsets key version {0}")]
    UnknownKeyVersion(i16),
    #[error("unknown {record} value version {version}")]
    UnknownValueVersion { record: &'static str, version: i16 },
    #[error("negative length {0} for a non-nullable field")]
    NegativeLength(i64),
    #[error("string field is not valid UTF-8")]
    InvalidUtf8,
    #[error("varint too long")]
    BadVarint,
}

/// The key of a `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum RecordKey {
    /// Key versions 0 and 1: a committed offset of one partition for one group.
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
    },
    /// Key version 2: a group's membership and assignment.
    GroupMetadata { group: String },
}

/// OffsetCommitValue (versions 0-4). `leader_epoch` is -1 when absent, `expire_timestamp`
/// is -1 unless the commit carried an explicit retention (written as version 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OffsetCommitValue {
    pub(crate) offset: i64,
    pub(crate) leader_epoch: i32,
    pub(crate) metadata: String,
    pub(crate) commit_timestamp: i64,
    pub(crate) expire_timestamp: i64,
}

/// One member inside GroupMetadataValue; `subscription` is the metadata of the group's
/// selected protocol only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberMetadataValue {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) rebalance_timeout: i32,
    pub(crate) session_timeout: i32,
    pub(crate) subscription: Bytes,
    pub(crate) assignment: Bytes,
}

/// GroupMetadataValue (versions 0-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupMetadataValue {
    pub(crate) protocol_type: String,
    pub(crate) generation: i32,
    pub(crate) protocol: Option<String>,
    pub(crate) leader: Option<String>,
    pub(crate) current_state_timestamp: i64,
    pub(crate) members: Vec<MemberMetadataValue>,
}

/// Kafka's `Utils.abs(groupId.hashCode()) % partitions`, with Java's `String.hashCode`
/// over UTF-16 code units and `Utils.abs(Integer.MIN_VALUE) == 0`. `partitions` must be > 0.
pub(crate) fn coordinator_partition(group_id: &str, partitions: i32) -> i32 {
    let hash = group_id.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

// ---------------------------------------------------------------- encoding

fn put_str(buf: &mut BytesMut, s: &str) {
    // Kafka strings are limited to i16::MAX bytes; longer ones are truncated at a char
    // boundary rather than producing an unreadable record.
    let mut end = s.len().min(i16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.put_i16(end as i16); // ok: end <= i16::MAX
    buf.put_slice(&s.as_bytes()[..end]);
}

fn put_nullable_str(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    let len = b.len().min(i32::MAX as usize);
    buf.put_i32(len as i32); // ok: len <= i32::MAX
    buf.put_slice(&b[..len]);
}

impl RecordKey {
    /// Encodes as Kafka 3.x does: offset keys with version 1, group keys with version 2.
    pub(crate) fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        match self {
            RecordKey::OffsetCommit {
                group,
                topic,
                partition,
            } => {
                buf.put_i16(1);
                put_str(&mut buf, group);
                put_str(&mut buf, topic);
                buf.put_i32(*partition);
            }
            RecordKey::GroupMetadata { group } => {
                buf.put_i16(2);
                put_str(&mut buf, group);
            }
        }
        buf.freeze()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<RecordKey, RecordError> {
        let mut r = Reader::new(bytes, false);
        match r.i16()? {
            0 | 1 => Ok(RecordKey::OffsetCommit {
                group: r.string()?,
                topic: r.string()?,
                partition: r.i32()?,
            }),
            2 => Ok(RecordKey::GroupMetadata { group: r.string()? }),
            v => Err(RecordError::UnknownKeyVersion(v)),
        }
    }
}

impl OffsetCommitValue {
    /// Version 1 when an explicit expire timestamp is set (it has no leader epoch), else 3.
    pub(crate) fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(32 + self.metadata.len());
        if self.expire_timestamp >= 0 {
            buf.put_i16(1);
            buf.put_i64(self.offset);
            put_str(&mut buf, &self.metadata);
            buf.put_i64(self.commit_timestamp);
            buf.put_i64(self.expire_timestamp);
        } else {
            buf.put_i16(3);
            buf.put_i64(self.offset);
            buf.put_i32(self.leader_epoch);
            put_str(&mut buf, &self.metadata);
            buf.put_i64(self.commit_timestamp);
        }
        buf.freeze()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<OffsetCommitValue, RecordError> {
        let mut r = Reader::new(bytes, false);
        let version = r.i16()?;
        if !(0..=4).contains(&version) {
            return Err(RecordError::UnknownValueVersion {
                record: "OffsetCommitValue",
                version,
            });
        }
        r.flexible = version >= 4;
        let offset = r.i64()?;
        let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
        let metadata = r.string()?;
        let commit_timestamp = r.i64()?;
        let expire_timestamp = if version == 1 { r.i64()? } else { -1 };
        r.tagged_fields(|_, _| Ok::<(), RecordError>(()))?;
        Ok(OffsetCommitValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
            expire_timestamp,
        })
    }
}

impl GroupMetadataValue {
    /// Encodes as version 3 (Kafka 2.3+ writes this until KIP-915's flexible version 4).
    pub(crate) fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(128);
        buf.put_i16(3);
        put_str(&mut buf, &self.protocol_type);
        buf.put_i32(self.generation);
        put_nullable_str(&mut buf, self.protocol.as_deref());
        put_nullable_str(&mut buf, self.leader.as_deref());
        buf.put_i64(self.current_state_timestamp);
        buf.put_i32(self.members.len() as i32); // ok: groups are far below i32::MAX members
        for m in &self.members {
            put_str(&mut buf, &m.member_id);
            put_nullable_str(&mut buf, m.group_instance_id.as_deref());
            put_str(&mut buf, &m.client_id);
            put_str(&mut buf, &m.client_host);
            buf.put_i32(m.rebalance_timeout);
            buf.put_i32(m.session_timeout);
            put_bytes(&mut buf, &m.subscription);
            put_bytes(&mut buf, &m.assignment);
        }
        buf.freeze()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<GroupMetadataValue, RecordError> {
        let mut r = Reader::new(bytes, false);
        let version = r.i16()?;
        if !(0..=4).contains(&version) {
            return Err(RecordError::UnknownValueVersion {
                record: "GroupMetadataValue",
                version,
            });
        }
        r.flexible = version >= 4;
        let protocol_type = r.string()?;
        let generation = r.i32()?;
        let protocol = r.nullable_string()?;
        let leader = r.nullable_string()?;
        let current_state_timestamp = if version >= 2 { r.i64()? } else { -1 };
        let count = r.array_len()?;
        // Each member takes at least 4 bytes, so a count beyond the remaining bytes is bogus.
        let mut members = Vec::with_capacity(count.min(r.remaining() / 4));
        for _ in 0..count {
            let member_id = r.string()?;
            let group_instance_id = if version >= 3 {
                r.nullable_string()?
            } else {
                None
            };
            let client_id = r.string()?;
            let client_host = r.string()?;
            let rebalance_timeout = if version >= 1 { r.i32()? } else { 0 };
            let session_timeout = r.i32()?;
            let subscription = r.bytes()?;
            let assignment = r.bytes()?;
            r.tagged_fields(|_, _| Ok::<(), RecordError>(()))?;
            members.push(MemberMetadataValue {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout: if version >= 1 {
                    rebalance_timeout
                } else {
                    session_timeout
                },
                session_timeout,
                subscription,
                assignment,
            });
        }
        r.tagged_fields(|_, _| Ok::<(), RecordError>(()))?;
        Ok(GroupMetadataValue {
            protocol_type,
            generation,
            protocol,
            leader,
            current_state_timestamp,
            members,
        })
    }
}

/// Decodes the topic list at the head of a ConsumerProtocolSubscription (any version: every
/// version starts with `version: i16, topics: [string]`, non-flexible). None if malformed.
pub(crate) fn subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut r = Reader::new(metadata, false);
    let version = r.i16().ok()?;
    if version < 0 {
        return None;
    }
    let count = r.array_len().ok()?;
    let mut topics = Vec::with_capacity(count.min(r.remaining() / 2));
    for _ in 0..count {
        topics.push(r.string().ok()?);
    }
    Some(topics)
}

// ---------------------------------------------------------------- decoding

type Reader<'a> = RecordReader<'a>;

impl From<ReadError> for RecordError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Truncated { at, needed } => RecordError::Truncated { at, needed },
            ReadError::BadVarint => RecordError::BadVarint,
            ReadError::Null => RecordError::NegativeLength(-1),
            ReadError::InvalidUtf8 => RecordError::InvalidUtf8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_code_vectors() {
        // Values of java.lang.String#hashCode.
        assert_eq!(coordinator_partition("", 50), 0);
        assert_eq!(coordinator_partition("a", 1000), 97);
        // "hello".hashCode() == 99162322
        assert_eq!(coordinator_partition("hello", i32::MAX), 99162322);
        assert_eq!(coordinator_partition("hello", 50), 99162322 % 50);
        // "Aa" and "BB" collide (2112) in Java.
        assert_eq!(coordinator_partition("Aa", 10_000), 2112);
        assert_eq!(coordinator_partition("BB", 10_000), 2112);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE; Utils.abs maps it to 0.
        assert_eq!(coordinator_partition("polygenelubricants", 50), 0);
        // Non-BMP char U+1F600 is two UTF-16 units 0xD83D 0xDE00: 0xD83D*31 + 0xDE00.
        assert_eq!(
            coordinator_partition("\u{1F600}", i32::MAX),
            0xD83D * 31 + 0xDE00
        );
        // Cross-check against an independent i64 evaluation of the same polynomial.
        let s = "consumer-group-with-a-long-name";
        let mut h: i64 = 0;
        for u in s.encode_utf16() {
            h = (h * 31 + i64::from(u)) & 0xffff_ffff;
        }
        let h32 = h as u32 as i32;
        let expected = if h32 == i32::MIN { 0 } else { h32.abs() } % 50;
        assert_eq!(coordinator_partition(s, 50), expected);
    }

    #[test]
    fn offset_key_bytes_match_kafka() {
        let key = RecordKey::OffsetCommit {
            group: "g".into(),
            topic: "t".into(),
            partition: 7,
        };
        let enc = key.encode();
        assert_eq!(&enc[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7][..]);
        assert_eq!(RecordKey::decode(&enc), Ok(key));
        // version 0 has the same layout
        let v0 = [0, 0, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7];
        assert!(matches!(
            RecordKey::decode(&v0),
            Ok(RecordKey::OffsetCommit { partition: 7, .. })
        ));
        let gkey = RecordKey::GroupMetadata {
            group: "grp".into(),
        };
        assert_eq!(&gkey.encode()[..], &[0, 2, 0, 3, b'g', b'r', b'p'][..]);
        assert_eq!(RecordKey::decode(&gkey.encode()), Ok(gkey));
        assert_eq!(
            RecordKey::decode(&[0, 3, 0, 0]),
            Err(RecordError::UnknownKeyVersion(3))
        );
    }

    #[test]
    fn offset_value_v3_and_v1_layouts() {
        let v = OffsetCommitValue {
            offset: 42,
            leader_epoch: 5,
            metadata: "m".into(),
            commit_timestamp: 1000,
            expire_timestamp: -1,
        };
        let enc = v.encode();
        let mut want = vec![0, 3];
        want.extend_from_slice(&42i64.to_be_bytes());
        want.extend_from_slice(&5i32.to_be_bytes());
        want.extend_from_slice(&[0, 1, b'm']);
        want.extend_from_slice(&1000i64.to_be_bytes());
        assert_eq!(&enc[..], &want[..]);
        assert_eq!(OffsetCommitValue::decode(&enc), Ok(v.clone()));

        let v1 = OffsetCommitValue {
            leader_epoch: -1,
            expire_timestamp: 5000,
            ..v
        };
        let enc1 = v1.encode();
        assert_eq!(&enc1[..2], &[0, 1]);
        assert_eq!(enc1.len(), 2 + 8 + 3 + 8 + 8);
        assert_eq!(OffsetCommitValue::decode(&enc1), Ok(v1));
    }

    #[test]
    fn offset_value_v4_flexible_decodes() {
        let mut b = vec![0, 4];
        b.extend_from_slice(&9i64.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&[3, b'a', b'b']); // compact string "ab"
        b.extend_from_slice(&77i64.to_be_bytes());
        b.extend_from_slice(&[1, 0, 2, 0xaa, 0xbb]); // one tagged field, tag 0, 2 bytes
        let v = OffsetCommitValue::decode(&b).unwrap(); // ok: test
        assert_eq!(v.offset, 9);
        assert_eq!(v.metadata, "ab");
        assert_eq!(v.commit_timestamp, 77);
    }

    fn sample_group() -> GroupMetadataValue {
        GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp: 123,
            members: vec![
                MemberMetadataValue {
                    member_id: "m1".into(),
                    group_instance_id: Some("i1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout: 300_000,
                    session_timeout: 10_000,
                    subscription: Bytes::from_static(&[0, 1, 2]),
                    assignment: Bytes::from_static(&[9]),
                },
                MemberMetadataValue {
                    member_id: "m2".into(),
                    group_instance_id: None,
                    client_id: "c2".into(),
                    client_host: "h".into(),
                    rebalance_timeout: 1,
                    session_timeout: 2,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        }
    }

    #[test]
    fn group_value_round_trip_and_layout() {
        let g = sample_group();
        let enc = g.encode();
        assert_eq!(GroupMetadataValue::decode(&enc), Ok(g.clone()));
        // Hand-check the head: version 3, "consumer", generation 3, "range", "m1", ts, count 2.
        let mut want = vec![0, 3, 0, 8];
        want.extend_from_slice(b"consumer");
        want.extend_from_slice(&3i32.to_be_bytes());
        want.extend_from_slice(&[0, 5]);
        want.extend_from_slice(b"range");
        want.extend_from_slice(&[0, 2, b'm', b'1']);
        want.extend_from_slice(&123i64.to_be_bytes());
        want.extend_from_slice(&2i32.to_be_bytes());
        want.extend_from_slice(&[0, 2, b'm', b'1', 0, 2, b'i', b'1']);
        assert_eq!(&enc[..want.len()], &want[..]);
        // An empty group has null protocol and leader.
        let empty = GroupMetadataValue {
            protocol: None,
            leader: None,
            members: vec![],
            ..g
        };
        let e = empty.encode();
        assert_eq!(GroupMetadataValue::decode(&e), Ok(empty));
    }

    #[test]
    fn group_value_v0_decodes() {
        // v0: protocolType, generation, protocol, leader, members[memberId, clientId,
        // clientHost, sessionTimeout, subscription, assignment]
        let mut b = vec![0, 0, 0, 1, b'x'];
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // null protocol, null leader
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&[0, 1, b'm', 0, 1, b'c', 0, 1, b'h']);
        b.extend_from_slice(&500i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        b.push(7);
        let g = GroupMetadataValue::decode(&b).unwrap(); // ok: test
        assert_eq!(g.protocol, None);
        assert_eq!(g.members[0].session_timeout, 500);
        assert_eq!(g.members[0].rebalance_timeout, 500);
        assert_eq!(&g.members[0].assignment[..], &[7]);
    }

    #[test]
    fn truncated_and_garbage_input_never_panics() {
        let enc = sample_group().encode();
        for cut in 0..enc.len() {
            assert!(
                GroupMetadataValue::decode(&enc[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let off = OffsetCommitValue {
            offset: 1,
            leader_epoch: 1,
            metadata: "meta".into(),
            commit_timestamp: 1,
            expire_timestamp: -1,
        }
        .encode();
        for cut in 0..off.len() {
            assert!(OffsetCommitValue::decode(&off[..cut]).is_err());
        }
        // Huge member count with no data: error, no huge allocation.
        let mut b = vec![0, 3, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(GroupMetadataValue::decode(&b).is_err());
        // Pseudo-random garbage.
        let mut x: u32 = 0x1234_5678;
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x & 0xff) as u8
                })
                .collect();
            let _ = RecordKey::decode(&bytes);
            let _ = OffsetCommitValue::decode(&bytes);
            let _ = GroupMetadataValue::decode(&bytes);
            let _ = subscription_topics(&bytes);
        }
        assert_eq!(
            OffsetCommitValue::decode(&[0, 9]),
            Err(RecordError::UnknownValueVersion {
                record: "OffsetCommitValue",
                version: 9
            })
        );
    }

    #[test]
    fn subscription_topics_decodes_consumer_protocol() {
        // ConsumerProtocolSubscription v1: version, topics ["a","bc"], user_data null, owned [].
        let mut b = vec![0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            subscription_topics(&b),
            Some(vec!["a".to_string(), "bc".to_string()])
        );
        assert_eq!(subscription_topics(&[0, 1, 0, 0, 0, 2, 0, 1]), None);
    }
}
