//! Bounds-checked readers and writers of Kafka's non-flexible primitive types, for the
//! request and response layouts `kafka-protocol` 0.18 no longer models (`legacy`,
//! `unsupported`). Sans-I/O: bytes in, values out. Invariants: a read never goes past the
//! buffer; an array count is checked against the bytes left before anything is allocated,
//! so a peer's length field cannot reserve memory it did not send.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;

/// Why an old-layout body could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("truncated at {0}")]
    Truncated(&'static str),
    #[error("invalid length {len} for {what}")]
    BadLength { what: &'static str, len: i64 },
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("{what} of {len} bytes is too long for its length field")]
    TooLong { what: &'static str, len: usize },
    /// A layout shared with a current version, decoded or encoded by `kafka-protocol`.
    #[error("{0}")]
    Other(String),
}

/// Reads one request body front to back. Owned by the handler decoding it.
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(body: &Bytes) -> Self {
        Reader { buf: body.clone() }
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), WireError> {
        if self.buf.remaining() < n {
            return Err(WireError::Truncated(what));
        }
        Ok(())
    }

    pub(crate) fn i8(&mut self, what: &'static str) -> Result<i8, WireError> {
        self.need(1, what)?;
        Ok(self.buf.get_i8())
    }

    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        Ok(self.i8(what)? != 0)
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, WireError> {
        self.need(2, what)?;
        Ok(self.buf.get_i16())
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        self.need(4, what)?;
        Ok(self.buf.get_i32())
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        self.need(8, what)?;
        Ok(self.buf.get_i64())
    }

    /// A STRING or NULLABLE_STRING (length -1: None).
    pub(crate) fn nullable_string(
        &mut self,
        what: &'static str,
    ) -> Result<Option<StrBytes>, WireError> {
        let len = self.i16(what)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| WireError::BadLength {
            what,
            len: len.into(),
        })?;
        self.need(len, what)?;
        let raw = self.buf.split_to(len);
        StrBytes::from_utf8(raw)
            .map(Some)
            .map_err(|_| WireError::NotUtf8(what))
    }

    /// A non-null STRING.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<StrBytes, WireError> {
        self.nullable_string(what)?
            .ok_or(WireError::BadLength { what, len: -1 })
    }

    /// The element count of an ARRAY (None for a null array). Every element takes at least
    /// `min_element` bytes, so a count the remaining bytes cannot hold is refused here.
    pub(crate) fn array_len(
        &mut self,
        what: &'static str,
        min_element: usize,
    ) -> Result<Option<usize>, WireError> {
        let n = self.i32(what)?;
        if n == -1 {
            return Ok(None);
        }
        let bad = WireError::BadLength {
            what,
            len: n.into(),
        };
        let n = usize::try_from(n).map_err(|_| bad)?;
        if n.saturating_mul(min_element.max(1)) > self.buf.remaining() {
            return Err(WireError::Truncated(what));
        }
        Ok(Some(n))
    }

    /// A non-null ARRAY's element count.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        min_element: usize,
    ) -> Result<usize, WireError> {
        self.array_len(what, min_element)?
            .ok_or(WireError::BadLength { what, len: -1 })
    }

    /// A BYTES / RECORDS field (length -1: None), as a slice of the body (no copy).
    pub(crate) fn nullable_bytes(
        &mut self,
        what: &'static str,
    ) -> Result<Option<Bytes>, WireError> {
        let len = self.i32(what)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| WireError::BadLength {
            what,
            len: len.into(),
        })?;
        self.need(len, what)?;
        Ok(Some(self.buf.split_to(len)))
    }
}

/// Writes one response body. Owned by the handler encoding it.
#[derive(Default)]
pub(crate) struct Writer {
    buf: BytesMut,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Writer::default()
    }

    pub(crate) fn i8(&mut self, v: i8) {
        self.buf.put_i8(v);
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.buf.put_i8(i8::from(v));
    }

    pub(crate) fn i16(&mut self, v: i16) {
        self.buf.put_i16(v);
    }

    pub(crate) fn i32(&mut self, v: i32) {
        self.buf.put_i32(v);
    }

    pub(crate) fn i64(&mut self, v: i64) {
        self.buf.put_i64(v);
    }

    pub(crate) fn nullable_string(
        &mut self,
        what: &'static str,
        s: Option<&str>,
    ) -> Result<(), WireError> {
        match s {
            None => self.buf.put_i16(-1),
            Some(s) => {
                let len = i16::try_from(s.len())
                    .map_err(|_| WireError::TooLong { what, len: s.len() })?;
                self.buf.put_i16(len);
                self.buf.put_slice(s.as_bytes());
            }
        }
        Ok(())
    }

    pub(crate) fn string(&mut self, what: &'static str, s: &str) -> Result<(), WireError> {
        self.nullable_string(what, Some(s))
    }

    /// An ARRAY's element count; the elements follow.
    pub(crate) fn array_len(&mut self, what: &'static str, n: usize) -> Result<(), WireError> {
        let n = i32::try_from(n).map_err(|_| WireError::TooLong { what, len: n })?;
        self.buf.put_i32(n);
        Ok(())
    }

    pub(crate) fn finish(self) -> BytesMut {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let mut w = Writer::new();
        w.i8(-3);
        w.bool(true);
        w.i16(-2);
        w.i32(7);
        w.i64(1 << 40);
        w.string("s", "topic").unwrap(); // ok: test
        w.nullable_string("n", None).unwrap(); // ok: test
        w.array_len("a", 2).unwrap(); // ok: test
        w.i32(0);
        let b = w.finish().freeze();
        let mut r = Reader::new(&b);
        assert_eq!(r.i8("").unwrap(), -3); // ok: test
        assert!(r.bool("").unwrap()); // ok: test
        assert_eq!(r.i16("").unwrap(), -2); // ok: test
        assert_eq!(r.i32("").unwrap(), 7); // ok: test
        assert_eq!(r.i64("").unwrap(), 1 << 40); // ok: test
        assert_eq!(r.string("").unwrap().as_str(), "topic"); // ok: test
        assert!(r.nullable_string("").unwrap().is_none()); // ok: test
                                                           // 2 elements of at least 4 bytes do not fit in the 4 bytes left.
        assert!(matches!(
            r.count("arr", 4),
            Err(WireError::Truncated("arr"))
        ));
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        let huge = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(Reader::new(&huge).count("a", 1).is_err());
        assert!(Reader::new(&huge).nullable_bytes("b").is_err());
        let three = Bytes::from_static(&[0, 0, 0, 3, 1, 2, 3]);
        let mut r = Reader::new(&three);
        assert_eq!(
            r.nullable_bytes("c").unwrap().as_deref(),
            Some(&[1u8, 2, 3][..])
        ); // ok: test
        assert!(r.i8("end").is_err());
        let neg = Bytes::from_static(&[0xff, 0xfe, b'x']);
        assert!(Reader::new(&neg).nullable_string("s").is_err());
        let bad_utf8 = Bytes::from_static(&[0, 1, 0xff]);
        assert!(matches!(
            Reader::new(&bad_utf8).string("s"),
            Err(WireError::NotUtf8("s"))
        ));
        assert!(Reader::new(&Bytes::new()).i32("x").is_err());
    }
}
