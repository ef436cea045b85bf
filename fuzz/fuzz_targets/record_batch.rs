//! RecordBatch parsing: `BatchIter::new` / `BatchIter::headers_only` over concatenated
//! batches, `validate_batch`, `decode_records`, `set_base_offset` and a `build_batch`
//! round trip, on the raw input and on a copy whose batchLength / magic / CRC-32C are fixed
//! up (`sluice_fuzz::fix_up_batches`) so the fuzzer gets past the CRC check.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_proto::batch::{
    build_batch, decode_records, set_base_offset, validate_batch, BatchError, BatchIter,
    RecordBatchHeader, SimpleRecord,
};

type Item = (RecordBatchHeader, std::ops::Range<usize>);

/// Runs an iterator to the end, checking the range invariants. Returns the good batches
/// and whether it stopped on an error.
fn walk(data: &[u8], mut it: BatchIter<'_>) -> (Vec<Item>, Option<BatchError>) {
    let mut good = Vec::new();
    let mut err = None;
    let mut expect_start = 0;
    assert_eq!(it.position(), 0);
    while let Some(item) = it.next() {
        assert!(it.position() <= data.len(), "position past the input");
        match item {
            Ok((h, r)) => {
                assert_eq!(r.start, expect_start, "batches not contiguous");
                assert!(r.end <= data.len(), "range past the input");
                assert!(r.start < r.end);
                assert_eq!(r.len(), h.total_size());
                assert_eq!(it.position(), r.end);
                assert_eq!(RecordBatchHeader::parse(&data[r.clone()]).as_ref(), Ok(&h));
                expect_start = r.end;
                good.push((h, r));
            }
            Err(e) => {
                assert_eq!(
                    it.position(),
                    expect_start,
                    "an error must not move position"
                );
                assert!(
                    expect_start < data.len(),
                    "error with nothing left to parse"
                );
                err = Some(e);
                break;
            }
        }
    }
    assert!(it.next().is_none(), "iterator resumed after its end");
    assert!(it.next().is_none());
    if err.is_none() {
        assert_eq!(
            it.position(),
            data.len(),
            "clean end must consume everything"
        );
    }
    (good, err)
}

fn check(data: &[u8]) {
    let (good, err) = walk(data, BatchIter::new(data));
    let (hdr_good, _) = walk(data, BatchIter::headers_only(data));
    // headers_only accepts a superset: full validation's batches are a prefix of its batches
    assert!(good.len() <= hdr_good.len());
    assert_eq!(&hdr_good[..good.len()], &good[..]);
    if err.is_none() {
        assert_eq!(good.len(), hdr_good.len());
    }

    let whole = Bytes::copy_from_slice(data);
    // decode_records on the whole buffer looks at the first batch only.
    if let Ok(recs) = decode_records(&whole) {
        let (h, r) = good
            .first()
            .expect("decode_records accepted a batch BatchIter rejected");
        assert_eq!(r.start, 0);
        assert_eq!(recs.len() as i64, h.records_count as i64);
    }

    for (h, r) in &good {
        let b = whole.slice(r.clone());
        assert_eq!(validate_batch(&b), Ok(*h));
        // a cleaned batch may hold fewer records than its offset range, down to none
        assert!(h.records_count >= 0);
        assert!(i64::from(h.records_count) <= i64::from(h.last_offset_delta) + 1);
        assert_eq!(
            h.last_offset(),
            h.base_offset.saturating_add(h.last_offset_delta as i64)
        );

        // baseOffset lies outside the CRC: rewriting it keeps the batch valid.
        let mut m = b.to_vec();
        let new_base = h.base_offset.wrapping_add(0x1234_5678_9abc);
        set_base_offset(&mut m, new_base);
        let h2 = validate_batch(&m).expect("set_base_offset broke the batch");
        assert_eq!(h2.base_offset, new_base);

        match decode_records(&b) {
            Ok(recs) if recs.is_empty() => assert_eq!(h.records_count, 0),
            Ok(recs) => {
                assert_eq!(h.compression(), 0);
                assert_eq!(recs.len(), h.records_count as usize);
                // Rebuild with build_batch and decode again: same records (offsets become
                // base + index, which build_batch always writes).
                let hdrs: Vec<Vec<(&[u8], Option<&[u8]>)>> = recs
                    .iter()
                    .map(|r| {
                        r.headers
                            .iter()
                            .map(|(k, v)| (&k[..], v.as_deref()))
                            .collect()
                    })
                    .collect();
                let simple: Vec<SimpleRecord<'_>> = recs
                    .iter()
                    .zip(&hdrs)
                    .map(|(r, hs)| SimpleRecord {
                        key: r.key.as_deref(),
                        value: r.value.as_deref(),
                        timestamp: r.timestamp,
                        headers: hs,
                    })
                    .collect();
                let rebuilt = build_batch(h.base_offset, &simple);
                let rh = validate_batch(&rebuilt).expect("build_batch output does not validate");
                assert_eq!(rh.records_count, h.records_count);
                let again = decode_records(&rebuilt).expect("build_batch output does not decode");
                assert_eq!(again.len(), recs.len());
                for (i, (a, r)) in again.iter().zip(&recs).enumerate() {
                    assert_eq!(a.offset, h.base_offset.wrapping_add(i as i64));
                    assert_eq!(a.timestamp, r.timestamp);
                    assert_eq!(a.key, r.key);
                    assert_eq!(a.value, r.value);
                    assert_eq!(a.headers, r.headers);
                }
            }
            Err(BatchError::Compressed(c)) => assert_eq!(c, h.compression()),
            Err(BatchError::BadRecord(_)) => {}
            Err(e) => panic!("valid batch rejected by decode_records: {e:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    sluice_fuzz::fix_up_batches(&mut fixed);
    check(&fixed);
});
