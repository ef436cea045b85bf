//! Tests of `batch.rs`: header parsing, CRC, iteration, record decoding and the client
//! batch validator.
use super::*;
use proptest::prelude::*;

fn rec<'a>(k: &'a [u8], v: &'a [u8], ts: i64) -> SimpleRecord<'a> {
    SimpleRecord {
        key: Some(k),
        value: Some(v),
        timestamp: ts,
        headers: &[],
    }
}

#[test]
fn build_validate_decode_roundtrip() {
    let hdrs: [(&[u8], Option<&[u8]>); 2] = [(b"h1", Some(b"x")), (b"h2", None)];
    let recs = [
        rec(b"k0", b"v0", 1000),
        SimpleRecord {
            key: None,
            value: Some(b"v1"),
            timestamp: 1005,
            headers: &hdrs,
        },
        SimpleRecord {
            key: Some(b"k2"),
            value: None,
            timestamp: 999,
            headers: &[],
        },
    ];
    let b = build_batch(42, &recs);
    let h = validate_batch(&b).unwrap(); // ok: test
    assert_eq!(h.base_offset, 42);
    assert_eq!(h.records_count, 3);
    assert_eq!(h.last_offset(), 44);
    assert_eq!(h.max_timestamp, 1005);
    assert_eq!(h.total_size(), b.len());
    let d = decode_records(&b).unwrap(); // ok: test
    assert_eq!(d.len(), 3);
    assert_eq!(d[1].offset, 43);
    assert_eq!(d[1].timestamp, 1005);
    assert_eq!(d[1].key, None);
    assert_eq!(
        d[1].headers[0],
        (Bytes::from_static(b"h1"), Some(Bytes::from_static(b"x")))
    );
    assert_eq!(d[1].headers[1].1, None);
    assert_eq!(d[2].value, None);
    assert_eq!(d[2].timestamp, 999);
}

#[test]
fn set_base_offset_keeps_crc() {
    let b = build_batch(0, &[rec(b"a", b"b", 5)]);
    let mut m = b.to_vec();
    set_base_offset(&mut m, 1 << 40);
    let h = validate_batch(&m).unwrap(); // ok: test
    assert_eq!(h.base_offset, 1 << 40);
}

#[test]
fn set_log_append_time_marks_the_batch_and_keeps_it_valid() {
    let b = build_batch(7, &[rec(b"a", b"b", 5), rec(b"c", b"d", 9)]);
    let mut m = b.to_vec();
    set_log_append_time(&mut m, 1_700_000_000_000);
    let h = validate_batch(&m).unwrap(); // ok: test
    assert!(h.timestamp_type_log_append());
    assert_eq!(h.max_timestamp, 1_700_000_000_000);
    assert_eq!(h.base_timestamp, 5);
    assert_eq!(h.compression(), 0);
    assert_eq!(decode_records(&Bytes::from(m)).unwrap().len(), 2); // ok: test
}

#[test]
fn typed_errors() {
    let b = build_batch(0, &[rec(b"a", b"b", 5)]);
    let mut m = b.to_vec();
    m[16] = 1;
    assert_eq!(validate_batch(&m), Err(BatchError::BadMagic(1)));
    let mut m = b.to_vec();
    let last = m.len() - 1;
    m[last] ^= 0xff;
    assert!(matches!(
        validate_batch(&m),
        Err(BatchError::CrcMismatch { .. })
    ));
    assert!(matches!(
        validate_batch(&b[..30]),
        Err(BatchError::Truncated { .. })
    ));
    assert!(matches!(
        validate_batch(&b[..b.len() - 1]),
        Err(BatchError::BadLength(_))
    ));
    let empty = build_batch(0, &[]);
    assert!(matches!(
        validate_batch(&empty),
        Err(BatchError::CountMismatch { .. })
    ));
    // count says 2, delta says 0: recompute the CRC so only the count is wrong
    let mut m = b.to_vec();
    m[57..61].copy_from_slice(&2i32.to_be_bytes());
    let crc = crc32c::crc32c(&m[21..]);
    m[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        validate_batch(&m),
        Err(BatchError::CountMismatch { .. })
    ));
    let mut m = b.to_vec();
    m[8..12].copy_from_slice(&(-5i32).to_be_bytes());
    assert!(matches!(
        RecordBatchHeader::parse(&m),
        Err(BatchError::BadLength(-5))
    ));
}

#[test]
fn iter_stops_at_first_bad() {
    let a = build_batch(0, &[rec(b"a", b"1", 1)]);
    let b = build_batch(1, &[rec(b"b", b"2", 2), rec(b"c", b"3", 3)]);
    let mut all = a.to_vec();
    all.extend_from_slice(&b);
    let n = all.len();
    all.extend_from_slice(&b[..20]);
    let mut it = BatchIter::new(&all);
    assert_eq!(it.next().unwrap().unwrap().1, 0..a.len()); // ok: test
    assert_eq!(it.next().unwrap().unwrap().1, a.len()..n); // ok: test
    assert!(it.next().unwrap().is_err()); // ok: test
    assert!(it.next().is_none());
    assert_eq!(it.position(), n);
}

#[test]
fn compressed_is_rejected_by_decode() {
    let b = build_batch(0, &[rec(b"a", b"b", 5)]);
    let mut m = b.to_vec();
    m[22] |= 1; // gzip
    let crc = crc32c::crc32c(&m[21..]);
    m[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        decode_records(&Bytes::from(m)),
        Err(BatchError::Compressed(1))
    );
}

proptest! {
    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let b = Bytes::from(data.clone());
        let _ = decode_records(&b);
        let _ = validate_batch(&data);
        for _ in BatchIter::new(&data) {}
        for _ in BatchIter::headers_only(&data) {}
    }

    #[test]
    fn corrupted_records_never_panic(pos in 61usize..200, byte in any::<u8>()) {
        let recs = [rec(b"key", b"value-value", 7), rec(b"", b"", 9), rec(b"kk", b"vv", 8)];
        let b = build_batch(3, &recs);
        let mut m = b.to_vec();
        if pos < m.len() {
            m[pos] = byte;
            let crc = crc32c::crc32c(&m[21..]);
            m[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        let _ = decode_records(&Bytes::from(m));
    }

    #[test]
    fn roundtrip(vals in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..20), -5i64..5), 1..20)) {
        let recs: Vec<SimpleRecord<'_>> = vals.iter().enumerate()
            .map(|(i, (v, d))| SimpleRecord { key: None, value: Some(v), timestamp: 1000 + i as i64 * 3 + d, headers: &[] })
            .collect();
        let b = build_batch(10, &recs);
        let d = decode_records(&b).unwrap(); // ok: test
        prop_assert_eq!(d.len(), recs.len());
        for (i, r) in d.iter().enumerate() {
            prop_assert_eq!(r.offset, 10 + i as i64);
            prop_assert_eq!(r.timestamp, recs[i].timestamp);
            prop_assert_eq!(r.value.as_deref(), recs[i].value);
        }
    }
}

/// Rewrites header fields of a built batch and fixes its CRC.
fn tamper(batch: &Bytes, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = batch.to_vec();
    f(&mut b);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn client_batches_are_checked_like_kafka() {
    let recs: Vec<SimpleRecord<'_>> = (0..3)
        .map(|i| SimpleRecord {
            timestamp: 1000 + i,
            key: Some(b"k"),
            value: Some(b"value"),
            headers: &[],
        })
        .collect();
    let good = build_batch(0, &recs);
    validate_client_batch(&good, 1 << 20).unwrap(); // ok: test
                                                    // one record present, 2^31 claimed (count and lastOffsetDelta agreeing)
    let one = build_batch(0, &recs[..1]);
    let huge = tamper(&one, |b| {
        b[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    });
    assert!(
        validate_batch(&huge).is_ok(),
        "the header alone is consistent"
    );
    assert!(matches!(
        validate_client_batch(&huge, 1 << 20),
        Err(BatchError::BadRecord(_))
    ));
    // fewer claimed than present
    let fewer = tamper(&good, |b| {
        b[23..27].copy_from_slice(&1i32.to_be_bytes());
        b[57..61].copy_from_slice(&2i32.to_be_bytes());
    });
    assert!(validate_client_batch(&fewer, 1 << 20).is_err());
    let control = tamper(&good, |b| b[22] |= 0x20);
    assert!(matches!(
        validate_client_batch(&control, 1 << 20),
        Err(BatchError::Invalid(_))
    ));
    let codec = tamper(&good, |b| b[22] |= 0x07);
    assert!(matches!(
        validate_client_batch(&codec, 1 << 20),
        Err(BatchError::Invalid(_))
    ));
    let no_seq = tamper(&good, |b| b[43..51].copy_from_slice(&7i64.to_be_bytes()));
    assert!(matches!(
        validate_client_batch(&no_seq, 1 << 20),
        Err(BatchError::Invalid(_))
    ));
    // the second record's offset delta (byte after its attributes and ts delta) is 1;
    // make it 0: records 0 and 1 would share an offset
    let mut dup = good.to_vec();
    let first_len = dup[RECORD_BATCH_OVERHEAD] as usize / 2; // zigzag varint, < 64
    let second = RECORD_BATCH_OVERHEAD + 1 + first_len;
    assert_eq!(dup[second + 3], 2, "zigzag(1)");
    dup[second + 3] = 0;
    let dup = tamper(&Bytes::from(dup), |_| {});
    assert!(matches!(
        validate_client_batch(&dup, 1 << 20),
        Err(BatchError::BadRecord(_))
    ));
}

#[test]
fn create_time_timestamps_must_be_within_bounds() {
    let recs: Vec<SimpleRecord<'_>> = [1000, 5000]
        .iter()
        .map(|&t| SimpleRecord {
            timestamp: t,
            key: None,
            value: Some(b"v"),
            headers: &[],
        })
        .collect();
    let b = build_batch(0, &recs);
    validate_client_batch_within(&b, 1 << 20, 1000..=5000).unwrap(); // ok: test
    assert_eq!(
        validate_client_batch_within(&b, 1 << 20, 0..=4999),
        Err(BatchError::Timestamp(5000))
    );
    // a producer's LogAppendTime bit does not skip the check (Kafka's validateTimestamp):
    // its records count as the header's maxTimestamp
    let append_time = tamper(&b, |b| b[22] |= 0x08);
    assert_eq!(
        validate_client_batch_within(&append_time, 1 << 20, 0..=1),
        Err(BatchError::Timestamp(5000))
    );
}

#[test]
fn compressed_client_batches_are_counted_after_decompression() {
    let recs: Vec<SimpleRecord<'_>> = (0..5)
        .map(|_| SimpleRecord {
            timestamp: 7,
            key: None,
            value: Some(&[b'x'; 100]),
            headers: &[],
        })
        .collect();
    let plain = build_batch(0, &recs);
    let records = &plain[RECORD_BATCH_OVERHEAD..];
    let z = zstd::encode_all(records, 3).unwrap(); // ok: test
    let mut b = plain[..RECORD_BATCH_OVERHEAD].to_vec();
    b.extend_from_slice(&z);
    let len = (b.len() - LOG_OVERHEAD) as i32;
    let good = tamper(&Bytes::from(b), |b| {
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[22] |= 4;
    });
    validate_client_batch(&good, 1 << 20).unwrap(); // ok: test
    let lying = tamper(&Bytes::from(good.clone()), |b| {
        b[23..27].copy_from_slice(&999i32.to_be_bytes());
        b[57..61].copy_from_slice(&1000i32.to_be_bytes());
    });
    assert!(validate_client_batch(&lying, 1 << 20).is_err());
    assert!(matches!(
        validate_client_batch(&good, 100),
        Err(BatchError::Decompress(_))
    ));
}

#[test]
fn a_compacted_topic_needs_a_key_on_every_record_compressed_or_not() {
    let recs = [
        rec(b"k0", b"v0", 1000),
        SimpleRecord {
            key: None,
            value: Some(b"v1"),
            timestamp: 1001,
            headers: &[],
        },
    ];
    let rules = |require_keys| ClientBatchRules {
        max_decompressed: 1 << 20,
        timestamps: i64::MIN..=i64::MAX,
        require_keys,
        log_append_time: false,
    };
    let plain = build_batch(0, &recs);
    validate_client_batch_with(&plain, &rules(false)).unwrap(); // ok: test
    assert_eq!(
        validate_client_batch_with(&plain, &rules(true)),
        Err(BatchError::MissingKey(1))
    );
    let keyed = build_batch(0, &recs[..1]);
    validate_client_batch_with(&keyed, &rules(true)).unwrap(); // ok: test
                                                               // the same records gzip-compressed: the key is found after decompression
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &plain[RECORD_BATCH_OVERHEAD..]).unwrap(); // ok: test
    let mut b = plain[..RECORD_BATCH_OVERHEAD].to_vec();
    b.extend_from_slice(&gz.finish().unwrap()); // ok: test
    let len = (b.len() - LOG_OVERHEAD) as i32;
    let compressed = tamper(&Bytes::from(b), |b| {
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[22] |= 1;
    });
    validate_client_batch_with(&compressed, &rules(false)).unwrap(); // ok: test
    assert_eq!(
        validate_client_batch_with(&compressed, &rules(true)),
        Err(BatchError::MissingKey(1))
    );
}

/// `plain` (an uncompressed batch) with its records section compressed by `codec`.
fn compressed(plain: &[u8], codec: u8) -> Vec<u8> {
    let body = crate::decompress::compress(codec, &plain[RECORD_BATCH_OVERHEAD..]).unwrap(); // ok: test
    let mut b = plain[..RECORD_BATCH_OVERHEAD].to_vec();
    b.extend_from_slice(&body);
    let len = (b.len() - LOG_OVERHEAD) as i32;
    tamper(&Bytes::from(b), |b| {
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[22] |= codec;
    })
}

/// (offset, timestamp, key, value) of every record of a stored batch, any codec.
fn records_of(batch: &[u8]) -> Vec<(i64, i64, Option<Vec<u8>>, bool)> {
    let h = validate_batch(batch).unwrap(); // ok: test
    let section = records_section(batch, 1 << 20).unwrap(); // ok: test
    let mut out = Vec::new();
    for_each_record(&h, &section, |r| {
        out.push((
            r.offset,
            r.timestamp,
            r.key.map(<[u8]>::to_vec),
            r.has_value,
        ));
        Ok(())
    })
    .unwrap(); // ok: test
    out
}

#[test]
fn the_cleaner_rebuilds_a_batch_with_fewer_records_in_its_codec() {
    let hdrs: [(&[u8], Option<&[u8]>); 1] = [(b"h", Some(b"x"))];
    let recs = [
        rec(b"a", b"1", 1000),
        SimpleRecord {
            key: Some(b"b"),
            value: None,
            timestamp: 1003,
            headers: &[],
        },
        SimpleRecord {
            key: Some(b"c"),
            value: Some(b"3"),
            timestamp: 990,
            headers: &hdrs,
        },
        rec(b"d", b"4", 1001),
    ];
    // an idempotent batch at base 100, leader epoch 7
    let plain = tamper(&build_batch(100, &recs), |b| {
        b[12..16].copy_from_slice(&7i32.to_be_bytes());
        b[43..51].copy_from_slice(&42i64.to_be_bytes());
        b[51..53].copy_from_slice(&3i16.to_be_bytes());
        b[53..57].copy_from_slice(&10i32.to_be_bytes());
    });
    for codec in 0..=4u8 {
        let original = if codec == 0 {
            plain.clone()
        } else {
            compressed(&plain, codec)
        };
        let h = validate_batch(&original).unwrap(); // ok: test
        let section = records_section(&original, 1 << 20).unwrap(); // ok: test
        let mut kept = Vec::new();
        let mut max_ts = i64::MIN;
        let mut n = 0;
        for_each_record(&h, &section, |r| {
            // keep b (a tombstone) and c (with a header): not the last record
            if matches!(r.key, Some(b"b") | Some(b"c")) {
                kept.extend_from_slice(r.raw);
                max_ts = max_ts.max(r.timestamp);
                n += 1;
            }
            Ok(())
        })
        .unwrap(); // ok: test
        let rebuilt = rebuild_batch(&original, &kept, n, max_ts).unwrap(); // ok: test
        let r = validate_batch(&rebuilt).unwrap(); // ok: test
        assert_eq!(r.compression(), codec);
        assert_eq!(
            (r.base_offset, r.last_offset_delta, r.records_count),
            (100, 3, 2)
        );
        assert_eq!(
            (r.producer_id, r.producer_epoch, r.base_sequence),
            (42, 3, 10)
        );
        assert_eq!(
            (r.partition_leader_epoch, r.base_timestamp, r.max_timestamp),
            (7, 1000, 1003)
        );
        assert_eq!(
            records_of(&rebuilt),
            vec![
                (101, 1003, Some(b"b".to_vec()), false),
                (102, 990, Some(b"c".to_vec()), true)
            ]
        );
        if codec == 0 {
            let d = decode_records(&Bytes::from(rebuilt)).unwrap(); // ok: test
            assert_eq!(d[1].headers[0].0, Bytes::from_static(b"h"));
        }
        // nothing left: the empty batch a producer's last batch becomes
        let empty = empty_batch_like(&original).unwrap(); // ok: test
        let e = validate_batch(&empty).unwrap(); // ok: test
        assert_eq!(empty.len(), RECORD_BATCH_OVERHEAD);
        assert_eq!(
            (
                e.base_offset,
                e.last_offset(),
                e.records_count,
                e.compression()
            ),
            (100, 103, 0, 0)
        );
        assert_eq!(
            (e.producer_id, e.producer_epoch, e.base_sequence),
            (42, 3, 10)
        );
        assert_eq!((e.base_timestamp, e.max_timestamp), (-1, 1003));
        assert!(records_of(&empty).is_empty());
    }
    assert!(rebuild_batch(&plain, &[], 0, 0).is_err());
    // a LogAppendTime batch keeps its max timestamp (the append time)
    let append_time = tamper(&Bytes::from(plain.clone()), |b| b[22] |= 0x08);
    let h = validate_batch(&append_time).unwrap(); // ok: test
    let section = records_section(&append_time, 1 << 20).unwrap(); // ok: test
    let mut first = Vec::new();
    for_each_record(&h, &section, |r| {
        if first.is_empty() {
            first = r.raw.to_vec();
        }
        Ok(())
    })
    .unwrap(); // ok: test
    let r = validate_batch(&rebuild_batch(&append_time, &first, 1, 5).unwrap()).unwrap(); // ok: test
    assert_eq!(r.max_timestamp, h.max_timestamp);
}

#[test]
fn stored_batches_may_hold_fewer_records_than_their_offset_range() {
    let recs = [rec(b"a", b"1", 1000), rec(b"b", b"2", 1001)];
    let b = build_batch(0, &recs);
    // one record dropped from the end, lastOffsetDelta kept
    let h = validate_batch(&b).unwrap(); // ok: test
    let section = records_section(&b, 1 << 20).unwrap(); // ok: test
    let mut raws = Vec::new();
    for_each_record(&h, &section, |r| {
        raws.push(r.raw.to_vec());
        Ok(())
    })
    .unwrap(); // ok: test
    let one = rebuild_batch(&b, &raws[0], 1, 1000).unwrap(); // ok: test
    assert_eq!(validate_batch(&one).unwrap().records_count, 1); // ok: test
    assert!(matches!(
        validate_client_batch(&one, 1 << 20),
        Err(BatchError::CountMismatch { .. })
    ));
    // records out of order inside a batch are refused by the cleaner's walk
    let mut swapped = raws[1].clone();
    swapped.extend_from_slice(&raws[0]);
    let bad = rebuild_batch(&b, &swapped, 2, 1001).unwrap(); // ok: test
    let h = validate_batch(&bad).unwrap(); // ok: test
    let section = records_section(&bad, 1 << 20).unwrap(); // ok: test
    assert!(for_each_record(&h, &section, |_| Ok(())).is_err());
}

#[test]
fn control_batches_carry_kafkas_end_txn_marker() {
    for (commit, epoch) in [(true, 7), (false, 0), (true, i32::MAX)] {
        let m = EndTxnMarker {
            commit,
            coordinator_epoch: epoch,
        };
        let b = build_control_batch(42, 3, m, 1234);
        let h = validate_batch(&b).unwrap(); // ok: test
        assert!(h.is_control() && h.is_transactional());
        assert_eq!(
            (
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.records_count
            ),
            (42, 3, -1, 1)
        );
        assert_eq!((h.base_timestamp, h.max_timestamp), (1234, 1234));
        assert_eq!(end_txn_marker(&b).unwrap(), Some(m)); // ok: test
                                                          // Kafka's bytes: key = version 0, type; value = version 0, coordinator epoch
        let recs = decode_records(&b).unwrap(); // ok: test
        let key = recs[0].key.clone().unwrap(); // ok: test
        assert_eq!(&key[..], &[0, 0, 0, u8::from(commit)]);
        let value = recs[0].value.clone().unwrap(); // ok: test
        assert_eq!(&value[2..], &epoch.to_be_bytes());
        // clients may not write them
        assert!(validate_client_batch(&b, 1 << 20).is_err());
    }
    // a data batch, and a control record of another type, are no markers
    let data = build_batch(0, &[rec(b"a", b"1", 1)]);
    assert_eq!(end_txn_marker(&data).unwrap(), None); // ok: test
    let mut other = build_control_batch(
        1,
        0,
        EndTxnMarker {
            commit: true,
            coordinator_epoch: 0,
        },
        1,
    )
    .to_vec();
    // from the end: header count (1), value (6), value length (1), then the type's low byte
    let key_type_at = other.len() - 9;
    assert_eq!(other[key_type_at], 1);
    other[key_type_at] = 3; // LEADER_CHANGE
    assert_eq!(end_txn_marker(&other).unwrap(), None); // ok: test
}

#[test]
fn a_batch_made_transactional_keeps_a_valid_crc_and_its_records() {
    let recs = [rec(b"k", b"v", 1000), rec(b"k2", b"v2", 1001)];
    let mut b = build_batch(0, &recs).to_vec();
    set_transactional_producer(&mut b, 42, 7, -1);
    let h = validate_batch(&b).unwrap(); // ok: test
    assert!(h.is_transactional() && !h.is_control());
    assert_eq!(
        (h.producer_id, h.producer_epoch, h.base_sequence),
        (42, 7, -1)
    );
    assert_eq!(decode_records(&Bytes::from(b)).unwrap().len(), 2); // ok: test
}

/// Kafka's validateTimestamp for a producer's LogAppendTime bit: refused on a
/// LogAppendTime topic (and without a timestamp); on a CreateTime topic its records
/// count as the header's maxTimestamp, range-checked, and the log's rewrite
/// (`set_max_timestamp`) makes the header CreateTime again.
#[test]
fn a_producers_log_append_time_bit() {
    let recs = [SimpleRecord {
        key: None,
        value: Some(b"v"),
        timestamp: 1000,
        headers: &[],
    }];
    let mut lat = build_batch(0, &recs).to_vec();
    set_log_append_time(&mut lat, 5000);
    let rules = |log_append_time, timestamps| ClientBatchRules {
        max_decompressed: 1 << 20,
        timestamps,
        require_keys: false,
        log_append_time,
    };
    assert_eq!(
        validate_client_batch_with(&lat, &rules(true, i64::MIN..=i64::MAX)),
        Err(BatchError::LogAppendTimeFromProducer)
    );
    assert_eq!(
        validate_client_batch_with(&lat, &rules(false, 0..=10_000)),
        Ok(5000)
    );
    assert_eq!(
        validate_client_batch_with(&lat, &rules(false, 0..=4_000)),
        Err(BatchError::Timestamp(5000))
    );
    assert!(set_max_timestamp(&mut lat, 5000));
    let h = validate_batch(&lat).unwrap(); // ok: test
    assert!(!h.timestamp_type_log_append());
    assert_eq!(h.max_timestamp, 5000);
    assert!(!set_max_timestamp(&mut lat, 5000));
}

/// Kafka's `ByteUtils.readVarint`: a record's varint may take up to 5 bytes (an
/// over-long but valid encoding is taken), never 6 (INVALID_RECORD).
#[test]
fn record_varints_longer_than_five_bytes_are_malformed() {
    let recs = [SimpleRecord {
        key: None,
        value: Some(b"v"),
        timestamp: 1000,
        headers: &[],
    }];
    let b = build_batch(0, &recs);
    // record: length, attributes, timestamp delta 0, offset delta 0, key length -1
    assert_eq!(&b[62..66], &[0, 0, 0, 1]);
    let with_key_length = |encoding: &[u8]| {
        let extra = encoding.len() - 1;
        let mut out = b[..61].to_vec();
        out.push(b[61] + 2 * extra as u8); // the record's length (zigzag)
        out.extend_from_slice(&b[62..65]);
        out.extend_from_slice(encoding);
        out.extend_from_slice(&b[66..]);
        let len = i32::from_be_bytes([out[8], out[9], out[10], out[11]]) + extra as i32;
        out[8..12].copy_from_slice(&len.to_be_bytes());
        out
    };
    let five = with_key_length(&[0x81, 0x80, 0x80, 0x80, 0x00]);
    validate_client_batch(&five, 1 << 20).unwrap(); // ok: test
    let six = with_key_length(&[0x81, 0x80, 0x80, 0x80, 0x80, 0x00]);
    assert!(matches!(
        validate_client_batch(&six, 1 << 20),
        Err(BatchError::BadRecord(_))
    ));
}
