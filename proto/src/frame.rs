//! Kafka framing: every request and response is a big-endian i32 size followed by that many
//! bytes. The size is checked against a bound before a single byte of the body is buffered,
//! so a peer can never make us allocate more than `max_frame` per connection.
//!
//! ```text
//!  | size: i32 | body: size bytes ........................ |
//! ```

use bytes::{Buf, Bytes, BytesMut};

use crate::ProtoError;

/// Length of the size prefix.
pub const SIZE_PREFIX: usize = 4;

/// Takes one complete frame body off the front of `buf`, if present.
///
/// Returns `Ok(None)` when more bytes are needed (`buf` is left untouched), the frame body
/// (without its size prefix) when complete, and an error when the announced size is negative
/// or above `max_frame`: the caller must then close the connection.
pub fn take_frame(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Bytes>, ProtoError> {
    let Some(size) = peek_size(buf)? else {
        return Ok(None);
    };
    if size > max_frame {
        return Err(ProtoError::FrameTooLarge {
            size,
            max: max_frame,
        });
    }
    if buf.len() < SIZE_PREFIX + size {
        return Ok(None);
    }
    buf.advance(SIZE_PREFIX);
    Ok(Some(buf.split_to(size).freeze()))
}

/// The announced body size of the frame at the front of `buf`, once its prefix has arrived.
pub fn peek_size(buf: &[u8]) -> Result<Option<usize>, ProtoError> {
    let Some(prefix) = buf.get(..SIZE_PREFIX) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    usize::try_from(size)
        .map(Some)
        .map_err(|_| ProtoError::NegativeFrameSize(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_then_complete() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&5i32.to_be_bytes());
        buf.extend_from_slice(b"ab");
        assert_eq!(take_frame(&mut buf, 100).unwrap(), None); // ok: test
        assert_eq!(buf.len(), 6, "an incomplete frame is left in place");
        buf.extend_from_slice(b"cdeX");
        assert_eq!(&take_frame(&mut buf, 100).unwrap().unwrap()[..], b"abcde"); // ok: test
        assert_eq!(&buf[..], b"X");
    }

    #[test]
    fn oversize_and_negative_rejected_before_buffering() {
        let mut buf = BytesMut::from(&0x7fff_ffffi32.to_be_bytes()[..]);
        assert!(matches!(
            take_frame(&mut buf, 1 << 20),
            Err(ProtoError::FrameTooLarge { .. })
        ));
        let mut buf = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert!(matches!(
            take_frame(&mut buf, 1 << 20),
            Err(ProtoError::NegativeFrameSize(-1))
        ));
    }

    #[test]
    fn empty_frame_is_a_frame() {
        let mut buf = BytesMut::from(&0i32.to_be_bytes()[..]);
        assert_eq!(take_frame(&mut buf, 10).unwrap().unwrap().len(), 0); // ok: test
    }
}
