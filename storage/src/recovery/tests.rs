//! Unit tests of `recovery.rs`.

use super::Marker;

#[test]
fn marker_roundtrip_and_rejects_damage() {
    let m = Marker {
        base: 10,
        size: 4096,
        end: 99,
        max_ts: 1234,
        max_ts_offset: 98,
    };
    let mut b = m.encode();
    assert_eq!(Marker::decode(&b), Some(m));
    b[7] ^= 1;
    assert_eq!(Marker::decode(&b), None);
    assert_eq!(Marker::decode(&b[..10]), None);
}
