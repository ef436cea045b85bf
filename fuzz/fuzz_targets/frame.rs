//! Framing + request header: `take_frame` on a byte stream with a small `max_frame`, taken
//! repeatedly, then `parse_request` (and the broker's body decode) on each frame.
//!
//! Input: `[max_frame selector][chunk selector][stream bytes...]`.
//! Checks: a frame never exceeds `max_frame`; `Ok(None)` leaves the buffer untouched;
//! a frame consumes exactly prefix + body; errors only for negative / oversize sizes;
//! feeding the same stream in small chunks (as socket reads do) gives the same frames.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sluice_proto::frame::{peek_size, take_frame, SIZE_PREFIX};
use sluice_proto::request::{parse_request, peek_api};
use sluice_proto::ProtoError;

#[derive(Debug, PartialEq)]
enum End {
    NeedMore,
    TooLarge(usize),
    Negative(i32),
}

/// Takes frames off `buf` until it needs more bytes or fails.
fn drain(buf: &mut BytesMut, max: usize, out: &mut Vec<Bytes>) -> End {
    loop {
        let before = buf.clone();
        match take_frame(buf, max) {
            Ok(Some(f)) => {
                assert!(f.len() <= max, "frame of {} > max {max}", f.len());
                assert_eq!(before.len(), buf.len() + SIZE_PREFIX + f.len());
                assert_eq!(&before[..SIZE_PREFIX], &(f.len() as i32).to_be_bytes());
                assert_eq!(&before[SIZE_PREFIX..SIZE_PREFIX + f.len()], &f[..]);
                out.push(f);
            }
            Ok(None) => {
                assert_eq!(before, *buf, "Ok(None) must leave the buffer untouched");
                match peek_size(buf).expect("peek_size agrees with take_frame") {
                    None => assert!(buf.len() < SIZE_PREFIX),
                    Some(s) => assert!(s <= max && buf.len() < SIZE_PREFIX + s),
                }
                return End::NeedMore;
            }
            Err(ProtoError::FrameTooLarge { size, max: m }) => {
                assert_eq!(m, max);
                assert!(size > max);
                assert_eq!(before, *buf);
                return End::TooLarge(size);
            }
            Err(ProtoError::NegativeFrameSize(s)) => {
                assert!(s < 0);
                assert_eq!(before, *buf);
                return End::Negative(s);
            }
            Err(e) => panic!("unexpected take_frame error {e:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // 0..=1020 bytes: small, so the oversize path is reached often.
    let max = data[0] as usize * 4;
    let chunk = (data[1] as usize % 64) + 1;
    let stream = &data[2..];

    let mut whole = BytesMut::from(stream);
    let mut frames = Vec::new();
    let end = drain(&mut whole, max, &mut frames);

    // The same stream arriving in `chunk`-byte reads.
    let mut buf = BytesMut::new();
    let mut frames2 = Vec::new();
    let mut end2 = End::NeedMore;
    for c in stream.chunks(chunk) {
        buf.extend_from_slice(c);
        end2 = drain(&mut buf, max, &mut frames2);
        if end2 != End::NeedMore {
            break;
        }
    }
    assert_eq!(frames, frames2, "chunked reads changed the frames");
    assert_eq!(end, end2, "chunked reads changed how the stream ends");

    for f in frames {
        let peeked = peek_api(&f);
        match parse_request(f.clone()) {
            Ok(req) => {
                let (key, version) = peeked.expect("parsed frame has an api");
                assert_eq!(req.api_key as i16, key);
                assert_eq!(req.version(), version);
                assert_eq!(req.header.request_api_key, key);
                assert!(req.body.len() <= f.len());
                assert_eq!(
                    &f[f.len() - req.body.len()..],
                    &req.body[..],
                    "body is the frame's tail"
                );
                if sluice_fuzz::supported(req.api_key, version) {
                    let _ = sluice_fuzz::decode_request(req.api_key, version, &req.body);
                }
            }
            Err(ProtoError::Truncated(_)) => assert!(f.len() < 4),
            Err(ProtoError::UnknownApiKey(k)) => assert_eq!(Some(k), peeked.ok().map(|p| p.0)),
            Err(ProtoError::Decode(_)) => {}
            Err(e) => panic!("unexpected parse_request error {e:?}"),
        }
    }
});
