//! Message sets (formats v0/v1, Produce v0-2): `message_set::to_record_batch` on the raw
//! input and on a copy whose message sizes and CRCs are fixed up
//! (`sluice_fuzz::fix_up_message_set`) so the fuzzer gets past the CRC check. A set it
//! accepts becomes a batch the log's validator accepts, and that batch down-converted to
//! magic 0 and 1 (`from_record_batch`, as Fetch v0-3 answer) and up-converted again gives
//! the same keys and values (and, for magic 1, timestamps).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_proto::batch::{decode_stored_records, validate_client_batch, OwnedRecord};
use sluice_proto::message_set::{from_record_batch, to_record_batch, MAGIC_V0, MAGIC_V1};

const MAX: usize = 1 << 20;

fn records(batch: &Bytes) -> Vec<OwnedRecord> {
    decode_stored_records(batch, MAX)
        .expect("a converted batch decodes")
        .1
}

fn check(data: &[u8]) {
    let Ok(Some(batch)) = to_record_batch(data, MAX) else {
        return;
    };
    validate_client_batch(&batch, MAX).expect("a converted batch passes the log's validator");
    let want = records(&batch);
    for magic in [MAGIC_V0, MAGIC_V1] {
        let set =
            from_record_batch(&batch, magic, 0, MAX).expect("a converted batch converts back");
        let again = to_record_batch(&set, MAX)
            .expect("a down-converted set converts up")
            .expect("a message set, not a v2 batch");
        let got = records(&again);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((&g.key, &g.value), (&w.key, &w.value));
            let ts = if magic == MAGIC_V0 { -1 } else { w.timestamp };
            assert_eq!(g.timestamp, ts);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    sluice_fuzz::fix_up_message_set(&mut fixed);
    check(&fixed);
});
