//! Request bodies: `sluice_proto::request::decode_body::<T>(body, version)` for every
//! request type the broker decodes, at the versions it serves (`SUPPORTED`).
//!
//! Input: `[api selector][version selector][body bytes...]`; the selectors index
//! `sluice_fuzz::SUPPORTED` and the version range of that entry. A body that decodes is
//! also re-encoded at the same version and must decode to an equal value.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_fuzz::{decode_request, SUPPORTED};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (api, min, max) = SUPPORTED[data[0] as usize % SUPPORTED.len()];
    let span = (max - min + 1) as u8;
    let version = min + (data[1] % span) as i16;
    let body = Bytes::copy_from_slice(&data[2..]);
    let res = decode_request(api, version, &body);
    assert!(res.is_some(), "{api:?} is in SUPPORTED but has no decoder");
});
