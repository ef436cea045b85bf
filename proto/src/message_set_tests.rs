//! Tests of `message_set.rs` against Kafka's message layouts. The hex vectors were written
//! by kafka-python 3.0's `LegacyRecordBatchBuilder` (an independent implementation of
//! https://kafka.apache.org/documentation/#messageset): two messages, key "k0" value "v0"
//! and null key value "v1", at timestamps 1700000000000 and +5 for magic 1.
use super::*;
use crate::batch::{decode_records, validate_client_batch, OwnedRecord};
use proptest::prelude::*;

const MAX: usize = 1 << 20;
const TS: i64 = 1_700_000_000_000;

/// magic 0, uncompressed: [offset 0, size 18, crc, 0, 0, key "k0", value "v0"], [offset 1 ...].
const V0: &str = "0000000000000000000000128697724c0000000000026b300000000276300000000000000001000000104c9f5bc20000ffffffff000000027631";
/// magic 1, uncompressed, CreateTime.
const V1: &str = "00000000000000000000001a74aa514001000000018bcfe56800000000026b300000000276300000000000000001000000181b02acb901000000018bcfe56805ffffffff000000027631";
/// magic 1, one gzip wrapper (offset 0, timestamp 0, CreateTime) around the V1 messages.
const GZIP_V1: &str = "000000000000000000000055000ec0cb01010000000000000000ffffffff0000003f1f8b08004e11106b02ff63608003a99255810e8c400663f7f9a7192011a66c03105966005501929490665ab313ae8af53f1080d5180200e79d7c734a000000";
/// magic 0, one gzip wrapper around the V0 messages.
const GZIP_V0: &str = "000000000000000000000044ea8ff2c40001ffffffff000000361f8b08004e11106b02ff63608003a1b6e9453e601653b601882c3380ca3002b180cffce8430c0cff81002c670800ac8c49483a000000";

/// (key, value, timestamp) of a record as the tests compare it.
type Rec = (Option<Vec<u8>>, Option<Vec<u8>>, i64);
/// A message to write: (offset, magic, attributes, timestamp, key, value).
type Msg<'a> = (i64, i8, i8, i64, Option<&'a [u8]>, Option<&'a [u8]>);
/// A record to store: (key, value, timestamp).
type In<'a> = (Option<&'a [u8]>, &'a [u8], i64);

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()) // ok: test
        .collect()
}

/// (key, value, timestamp) of every record of a v2 batch, checked by the log's validator.
fn records_of(batch: &Bytes) -> Vec<Rec> {
    validate_client_batch(batch, MAX).unwrap(); // ok: test
    let (_, recs) = decode_stored_records(batch, MAX).unwrap(); // ok: test
    recs.iter()
        .map(|r: &OwnedRecord| {
            (
                r.key.as_ref().map(|k| k.to_vec()),
                r.value.as_ref().map(|v| v.to_vec()),
                r.timestamp,
            )
        })
        .collect()
}

fn kv(k: Option<&[u8]>, v: &[u8], ts: i64) -> Rec {
    (k.map(<[u8]>::to_vec), Some(v.to_vec()), ts)
}

fn up(set: &[u8]) -> Result<Bytes, MessageSetError> {
    to_record_batch(set, MAX).map(|b| b.unwrap()) // ok: test
}

fn the_two(ts0: i64, ts1: i64) -> Vec<Rec> {
    vec![kv(Some(b"k0"), b"v0", ts0), kv(None, b"v1", ts1)]
}

fn set_of(msgs: &[Msg<'_>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for &(offset, magic, attrs, ts, k, v) in msgs {
        put_message(&mut out, offset, magic, attrs, ts, k, v);
    }
    out.to_vec()
}

#[test]
fn kafka_python_vectors_parse_field_by_field() {
    let v0 = hex(V0);
    let m: Vec<_> = messages(&v0).collect::<Result<_, _>>().unwrap(); // ok: test
    assert_eq!(m.len(), 2);
    assert_eq!(
        m[0],
        Message {
            offset: 0,
            magic: 0,
            attributes: 0,
            timestamp: -1,
            key: Some(b"k0"),
            value: Some(b"v0"),
        }
    );
    assert_eq!(
        (m[1].offset, m[1].key, m[1].value),
        (1, None, Some(&b"v1"[..]))
    );
    let v1 = hex(V1);
    let m: Vec<_> = messages(&v1).collect::<Result<_, _>>().unwrap(); // ok: test
    assert_eq!(
        (m[0].magic, m[0].timestamp, m[1].timestamp),
        (1, TS, TS + 5)
    );
    let g = hex(GZIP_V1);
    let m: Vec<_> = messages(&g).collect::<Result<_, _>>().unwrap(); // ok: test
    assert_eq!((m.len(), m[0].codec(), m[0].key), (1, 1, None));
}

#[test]
fn uncompressed_sets_become_one_v2_batch() {
    let b = up(&hex(V0)).unwrap(); // ok: test
    let h = RecordBatchHeader::parse(&b).unwrap(); // ok: test
                                                   // A v0 message has no timestamp: NO_TIMESTAMP in the record and the batch, as Kafka.
    assert_eq!((h.base_offset, h.records_count, h.compression()), (0, 2, 0));
    assert_eq!((h.base_timestamp, h.max_timestamp), (-1, -1));
    assert_eq!((h.producer_id, h.base_sequence), (-1, -1));
    assert!(!h.timestamp_type_log_append());
    assert_eq!(records_of(&b), the_two(-1, -1));

    let b = up(&hex(V1)).unwrap(); // ok: test
    let h = RecordBatchHeader::parse(&b).unwrap(); // ok: test
    assert_eq!((h.base_timestamp, h.max_timestamp), (TS, TS + 5));
    assert_eq!(records_of(&b), the_two(TS, TS + 5));
}

#[test]
fn compressed_sets_keep_their_codec() {
    let b = up(&hex(GZIP_V1)).unwrap(); // ok: test
    let h = RecordBatchHeader::parse(&b).unwrap(); // ok: test
    assert_eq!((h.compression(), h.records_count), (1, 2));
    // The inner messages keep their own CreateTime timestamps (the wrapper's is 0).
    assert_eq!(records_of(&b), the_two(TS, TS + 5));
    let b = up(&hex(GZIP_V0)).unwrap(); // ok: test
    assert_eq!(RecordBatchHeader::parse(&b).unwrap().compression(), 1); // ok: test
    assert_eq!(records_of(&b), the_two(-1, -1));

    // snappy (raw and xerial-framed), lz4: the same records come out in the same codec.
    let inner = hex(V1);
    let raw_snappy = snap::raw::Encoder::new().compress_vec(&inner).unwrap(); // ok: test
    for (codec, value) in [
        (2u8, raw_snappy),
        (2, compress(2, &inner).unwrap()), // ok: test
        (3, compress(3, &inner).unwrap()), // ok: test
    ] {
        let set = set_of(&[(1, 1, codec as i8, TS, None, Some(&value))]);
        let b = up(&set).unwrap(); // ok: test
        assert_eq!(RecordBatchHeader::parse(&b).unwrap().compression(), codec); // ok: test
        assert_eq!(records_of(&b), the_two(TS, TS + 5), "codec {codec}");
    }
}

#[test]
fn lz4_magic0_accepts_kafkas_broken_header_checksum() {
    let inner = hex(V0);
    let mut frame = compress(3, &inner).unwrap(); // ok: test
    let good = frame[6];
    lz4_set_header_checksum(&mut frame, true);
    let broken = frame[6];
    assert_ne!(good, broken);
    // magic 0: Kafka ignores the descriptor checksum, broken (as Kafka wrote) or not
    for hc in [good, broken] {
        frame[6] = hc;
        let set = set_of(&[(0, 0, 3, -1, None, Some(&frame))]);
        assert_eq!(records_of(&up(&set).unwrap()), the_two(-1, -1)); // ok: test
    }
    // magic 1: Kafka checks it, and so does the decompressor
    let inner = hex(V1);
    let mut frame = compress(3, &inner).unwrap(); // ok: test
    lz4_set_header_checksum(&mut frame, true);
    let set = set_of(&[(1, 1, 3, TS, None, Some(&frame))]);
    assert!(matches!(up(&set), Err(MessageSetError::Corrupt(_))));
}

#[test]
fn xxh32_matches_known_values() {
    assert_eq!(xxh32(b""), 0x02CC_5D05);
    assert_eq!(xxh32(b"abc"), 0x32D1_53FF);
    // liblz4's own header checksum of the descriptor 0x60 0x40 is 0x82
    assert_eq!((xxh32(&[0x60, 0x40]) >> 8) as u8, 0x82);
}

/// The reference: liblz4's XXH32 (linked through lz4-sys), for inputs of every length
/// through the 16-byte stripes.
#[test]
#[allow(unsafe_code)]
fn xxh32_matches_liblz4() {
    extern "C" {
        fn XXH32(input: *const u8, len: usize, seed: u32) -> u32;
    }
    let data: Vec<u8> = (0..100u32).map(|i| (i * 37 + 11) as u8).collect();
    for n in 0..data.len() {
        // SAFETY: a pure function reading exactly `n` bytes of a live slice.
        let want = unsafe { XXH32(data.as_ptr(), n, 0) };
        assert_eq!(xxh32(&data[..n]), want, "{n} bytes");
    }
}

#[test]
fn log_append_time_takes_the_wrappers_timestamp() {
    let inner = hex(V1);
    let value = compress(1, &inner).unwrap(); // ok: test
    let set = set_of(&[(1, 1, 1 | LOG_APPEND_TIME, TS + 99, None, Some(&value))]);
    assert_eq!(records_of(&up(&set).unwrap()), the_two(TS + 99, TS + 99)); // ok: test
                                                                           // a LogAppendTime type with no timestamp: INVALID_TIMESTAMP, as Kafka
    let set = set_of(&[(1, 1, 1 | LOG_APPEND_TIME, -1, None, Some(&value))]);
    assert!(matches!(up(&set), Err(MessageSetError::Timestamp(_))));
    let set = set_of(&[(0, 1, LOG_APPEND_TIME, -1, None, Some(b"x"))]);
    assert!(matches!(up(&set), Err(MessageSetError::Timestamp(_))));
    let set = set_of(&[(0, 1, 0, -7, None, Some(b"x"))]);
    assert!(matches!(up(&set), Err(MessageSetError::Timestamp(_))));
    // uncompressed with the type bit and a timestamp: kept, as a CreateTime record
    let set = set_of(&[(0, 1, LOG_APPEND_TIME, TS, None, Some(b"x"))]);
    assert_eq!(records_of(&up(&set).unwrap()), vec![kv(None, b"x", TS)]); // ok: test
}

#[test]
fn v2_batches_pass_through() {
    let b = build_batch(
        0,
        &[SimpleRecord {
            key: None,
            value: Some(b"v"),
            timestamp: TS,
            headers: &[],
        }],
    );
    assert_eq!(to_record_batch(&b, MAX), Ok(None));
}

#[test]
fn bad_sets_get_kafkas_errors() {
    let corrupt = |set: &[u8]| matches!(up(set), Err(MessageSetError::Corrupt(_)));
    let invalid = |set: &[u8]| matches!(up(set), Err(MessageSetError::Invalid(_)));
    let v0 = hex(V0);
    let mut bad_crc = v0.clone();
    bad_crc[29] ^= 1; // in the first message's value
    assert!(corrupt(&bad_crc));
    assert!(corrupt(&v0[..v0.len() - 1]), "truncated");
    assert!(corrupt(&v0[..5]), "shorter than an entry header");
    let mut short = v0.clone();
    short[11] = 13; // size below the minimum message
    assert!(corrupt(&short));
    let mut long = v0.clone();
    long[8] = 0x7f; // size past the end
    assert!(corrupt(&long));
    let mut magic = v0.clone();
    magic[16] = 7;
    assert!(corrupt(&magic));
    // a key length past the message, CRC made right
    let mut key = set_of(&[(0, 0, 0, -1, Some(b"k"), None)]);
    key[21] = 9;
    let crc = crc32fast::hash(&key[16..]);
    key[12..16].copy_from_slice(&crc.to_be_bytes());
    assert!(corrupt(&key));
    assert!(invalid(b""), "no messages");

    // mixed magics; two wrappers; nested compression; zstd; null or empty wrapper
    let mut mixed = hex(V0);
    mixed.extend_from_slice(&hex(V1));
    assert!(invalid(&mixed));
    let g = hex(GZIP_V1);
    let mut two = g.clone();
    two.extend_from_slice(&g);
    assert!(invalid(&two));
    let nested = compress(1, &g).unwrap(); // ok: test
    assert!(invalid(&set_of(&[(0, 1, 1, 0, None, Some(&nested))])));
    let z = compress(4, &hex(V1)).unwrap(); // ok: test
    assert!(invalid(&set_of(&[(0, 1, 4, 0, None, Some(&z))])));
    assert!(invalid(&set_of(&[(0, 1, 1, 0, None, None)])));
    let empty = compress(1, b"").unwrap(); // ok: test
    assert!(invalid(&set_of(&[(0, 1, 1, 0, None, Some(&empty))])));
    // inner magic differs from the wrapper's
    let v0_in_v1 = compress(1, &hex(V0)).unwrap(); // ok: test
    assert!(invalid(&set_of(&[(1, 1, 1, 0, None, Some(&v0_in_v1))])));
    // v1 wrapper offset (0 is allowed: some librdkafka versions) below the last inner one
    let v1_inner = set_of(&[
        (0, 1, 0, TS, None, Some(b"a")),
        (5, 1, 0, TS, None, Some(b"b")),
    ]);
    let value = compress(1, &v1_inner).unwrap(); // ok: test
    assert!(invalid(&set_of(&[(3, 1, 1, TS, None, Some(&value))])));
    assert!(up(&set_of(&[(0, 1, 1, TS, None, Some(&value))])).is_ok());
    // garbage that claims gzip
    assert!(corrupt(&set_of(&[(0, 1, 1, 0, None, Some(b"not gzip"))])));
    // a bomb past the bound
    let bomb = compress(1, &vec![0u8; 2 * MAX]).unwrap(); // ok: test
    assert!(corrupt(&set_of(&[(0, 1, 1, 0, None, Some(&bomb))])));
}

const HEADERS: &[(&[u8], Option<&[u8]>)] = &[(b"h", Some(b"x"))];

fn stored(base: i64, codec: u8, recs: &[In<'_>]) -> Bytes {
    let simple: Vec<_> = recs
        .iter()
        .map(|&(k, v, ts)| SimpleRecord {
            key: k,
            value: Some(v),
            timestamp: ts,
            headers: HEADERS,
        })
        .collect();
    let b = build_compressed_batch(0, &simple, codec).unwrap(); // ok: test
    let mut m = b.to_vec();
    crate::batch::set_base_offset(&mut m, base);
    Bytes::from(m)
}

#[test]
fn down_conversion_writes_kafka_python_bytes() {
    // The stored batch of the two records becomes, byte for byte, what kafka-python
    // builds for magic 0 and magic 1 (headers dropped).
    let b = stored(0, 0, &[(Some(b"k0"), b"v0", TS), (None, b"v1", TS + 5)]);
    assert_eq!(from_record_batch(&b, 0, 0, MAX).unwrap()[..], hex(V0)[..]); // ok: test
    assert_eq!(from_record_batch(&b, 1, 0, MAX).unwrap()[..], hex(V1)[..]); // ok: test
                                                                            // Records before the fetch offset are left out of an uncompressed batch.
    let one = from_record_batch(&b, 1, 1, MAX).unwrap(); // ok: test
    assert_eq!(one[..], hex(V1)[38..]);
}

#[test]
fn compressed_batches_become_one_wrapper() {
    let recs = [
        (Some(&b"k0"[..]), &b"v0"[..], TS),
        (None, &b"v1"[..], TS + 5),
    ];
    for codec in 1..=3u8 {
        for magic in [0i8, 1] {
            let b = stored(40, codec, &recs);
            // all records, even those before the fetch offset: the wrapper is one message
            let set = from_record_batch(&b, magic, 41, MAX).unwrap(); // ok: test
            let outer: Vec<_> = messages(&set).collect::<Result<_, _>>().unwrap(); // ok: test
            assert_eq!(outer.len(), 1);
            let w = outer[0];
            assert_eq!(
                (w.offset, w.magic, w.codec(), w.key),
                (41, magic, codec, None)
            );
            let want_ts = if magic == 0 { -1 } else { TS + 5 };
            assert_eq!(w.timestamp, want_ts, "wrapper carries the max timestamp");
            let mut value = w.value.unwrap().to_vec(); // ok: test
            if codec == 3 && magic == 0 {
                // Kafka's magic-0 header checksum: over the magic number and descriptor
                let hc = value[6];
                lz4_set_header_checksum(&mut value, true);
                assert_eq!(value[6], hc);
                lz4_set_header_checksum(&mut value, false);
            }
            let data = decompress(codec, &value, MAX).unwrap(); // ok: test
            let inner: Vec<_> = messages(&data).collect::<Result<_, _>>().unwrap(); // ok: test
            let offsets: Vec<i64> = inner.iter().map(|m| m.offset).collect();
            // v0: absolute inner offsets; v1: relative
            assert_eq!(offsets, if magic == 0 { vec![40, 41] } else { vec![0, 1] });
            // and it converts back to the same records
            let back = up(&set).unwrap(); // ok: test
            let ts = |t| if magic == 0 { -1 } else { t };
            assert_eq!(records_of(&back), the_two(ts(TS), ts(TS + 5)));
        }
    }
}

#[test]
fn control_zstd_and_log_append_time_batches() {
    let b = stored(0, 0, &[(None, b"x", TS)]);
    let mut control = b.to_vec();
    control[22] |= 0x20; // attributes: control (outside nothing the reader checks)
    assert!(from_record_batch(&Bytes::from(control), 1, 0, MAX)
        .unwrap()
        .is_empty()); // ok: test
    let z = stored(0, 4, &[(None, b"x", TS)]);
    assert_eq!(
        from_record_batch(&z, 1, 0, MAX),
        Err(MessageSetError::UnsupportedCompression(4))
    );
    // LogAppendTime: the batch's max timestamp, and the type bit (v1 only)
    let mut lat = stored(0, 0, &[(None, b"x", TS), (None, b"y", TS + 1)]).to_vec();
    lat[22] |= 0x08;
    lat[35..43].copy_from_slice(&(TS + 500).to_be_bytes()); // maxTimestamp
    let lat = Bytes::from(lat);
    let set = from_record_batch(&lat, 1, 0, MAX).unwrap(); // ok: test
    for m in messages(&set) {
        let m = m.unwrap(); // ok: test
        assert!(m.log_append_time());
        assert_eq!(m.timestamp, TS + 500);
    }
    let set = from_record_batch(&lat, 0, 0, MAX).unwrap(); // ok: test
    assert!(messages(&set).all(|m| m.is_ok_and(|m| m.attributes == 0)));
    // garbage is an error, never a panic
    assert!(from_record_batch(&Bytes::from_static(&[0; 70]), 1, 0, MAX).is_err());
}

proptest! {
    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = to_record_batch(&data, MAX);
        let _ = messages(&data).count();
        let _ = from_record_batch(&Bytes::from(data), 1, 0, MAX);
    }

    #[test]
    fn corrupted_sets_never_panic(pos in 0usize..120, byte in any::<u8>(), which in 0usize..4) {
        let mut set = hex([V0, V1, GZIP_V1, GZIP_V0][which]);
        let at = pos % set.len();
        set[at] = byte;
        let _ = to_record_batch(&set, MAX);
    }

    /// stored batch -> messages -> produced again: the same records (magic 0 drops the
    /// timestamps), in every codec formats v0/v1 have.
    #[test]
    fn round_trip(
        vals in proptest::collection::vec(
            (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)),
             proptest::collection::vec(any::<u8>(), 0..40), 0i64..1_000_000), 1..12),
        codec in 0u8..4,
        magic in 0i8..2,
        base in 0i64..1_000_000,
    ) {
        let recs: Vec<_> = vals.iter().map(|(k, v, ts)| (k.as_deref(), &v[..], *ts)).collect();
        let b = stored(base, codec, &recs);
        let set = from_record_batch(&b, magic, base, MAX).unwrap(); // ok: test
        let back = up(&set).unwrap(); // ok: test
        prop_assert_eq!(RecordBatchHeader::parse(&back).unwrap().compression(), codec); // ok: test
        let want: Vec<_> = vals.iter().map(|(k, v, ts)| {
            (k.clone(), Some(v.clone()), if magic == 0 { -1 } else { *ts })
        }).collect();
        prop_assert_eq!(records_of(&back), want);
        if codec == 0 {
            prop_assert_eq!(decode_records(&back).unwrap().len(), vals.len()); // ok: test
        }
    }
}
