//! Metadata log records (`sluice_proto::metadata::MetadataRecord`, prost): decode from
//! arbitrary bytes; whatever decodes must re-encode and decode to an equal value, and the
//! re-encoding must be stable. The input is also read the way the controller replays the
//! metadata log: batches (BatchIter) -> decode_records -> MetadataRecord::decode(value).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use sluice_proto::batch::{decode_records, BatchIter};
use sluice_proto::metadata::MetadataRecord;

fn roundtrip(bytes: &[u8]) {
    let Ok(m) = MetadataRecord::decode(bytes) else {
        return;
    };
    let enc = m.encode_to_vec();
    assert_eq!(enc.len(), m.encoded_len());
    let m2 = MetadataRecord::decode(&enc[..]).expect("re-encoded record does not decode");
    assert_eq!(m2, m, "decode(encode(x)) != x");
    assert_eq!(m2.encode_to_vec(), enc, "encoding is not stable");
    // also through Bytes (zero-copy path the controller uses)
    let m3 = MetadataRecord::decode(Bytes::from(enc)).expect("decode from Bytes");
    assert_eq!(m3, m);
}

fuzz_target!(|data: &[u8]| {
    roundtrip(data);
    let whole = Bytes::copy_from_slice(data);
    for item in BatchIter::new(data) {
        let Ok((_, r)) = item else { break };
        if let Ok(recs) = decode_records(&whole.slice(r)) {
            for rec in recs {
                if let Some(v) = rec.value {
                    roundtrip(&v);
                }
            }
        }
    }
});
