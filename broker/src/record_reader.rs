//! A bounds-checked cursor over the records coordinators keep in their internal topics
//! (`__consumer_offsets`: `groups/records.rs`; `__transaction_state`: `txn/records.rs`),
//! in Kafka's message encoding: big-endian integers, i16/i32 or (flexible versions)
//! compact varint lengths, tagged-field sections. Nothing it reads can make it panic or
//! allocate more than the input holds: a length past the end is `Truncated` before
//! anything is taken.

use bytes::Bytes;

/// Why a record could not be read; each record module maps these into its own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadError {
    Truncated {
        at: usize,
        needed: usize,
    },
    BadVarint,
    /// A null (negative or compact 0) length for a field that may not be null.
    Null,
    InvalidUtf8,
}

/// The cursor; `flexible` switches strings, bytes and arrays to compact lengths and
/// enables tagged-field sections.
pub(crate) struct RecordReader<'a> {
    buf: &'a [u8],
    pos: usize,
    pub(crate) flexible: bool,
}

impl<'a> RecordReader<'a> {
    pub(crate) fn new(buf: &'a [u8], flexible: bool) -> Self {
        RecordReader {
            buf,
            pos: 0,
            flexible,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        if self.remaining() < n {
            return Err(ReadError::Truncated {
                at: self.pos,
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn i8(&mut self) -> Result<i8, ReadError> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    pub(crate) fn i16(&mut self) -> Result<i16, ReadError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, ReadError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, ReadError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub(crate) fn uvarint(&mut self) -> Result<u64, ReadError> {
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let [b] = self.array::<1>()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ReadError::BadVarint)
    }

    /// A length prefix (i16 for strings, i32 for bytes and arrays; compact varint when
    /// flexible). None for null. A length beyond the remaining bytes is `Truncated`.
    pub(crate) fn length(&mut self, wide: bool) -> Result<Option<usize>, ReadError> {
        let len: i64 = if self.flexible {
            self.uvarint()? as i64 - 1
        } else if wide {
            i64::from(self.i32()?)
        } else {
            i64::from(self.i16()?)
        };
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize; // ok: non-negative and < 2^35
        if len > self.remaining() {
            return Err(ReadError::Truncated {
                at: self.pos,
                needed: len - self.remaining(),
            });
        }
        Ok(Some(len))
    }

    pub(crate) fn nullable_string(&mut self) -> Result<Option<String>, ReadError> {
        match self.length(false)? {
            None => Ok(None),
            Some(n) => {
                let raw = self.take(n)?;
                let s = std::str::from_utf8(raw).map_err(|_| ReadError::InvalidUtf8)?;
                Ok(Some(s.to_owned()))
            }
        }
    }

    pub(crate) fn string(&mut self) -> Result<String, ReadError> {
        self.nullable_string()?.ok_or(ReadError::Null)
    }

    pub(crate) fn bytes(&mut self) -> Result<Bytes, ReadError> {
        let n = self.length(true)?.ok_or(ReadError::Null)?;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }

    pub(crate) fn array_len(&mut self) -> Result<usize, ReadError> {
        self.length(true)?.ok_or(ReadError::Null)
    }

    /// Reads a tagged-field section (flexible versions only), handing each field to `f`.
    pub(crate) fn tagged_fields<E: From<ReadError>>(
        &mut self,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint()?;
        for _ in 0..count {
            let tag = self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).map_err(|_| ReadError::BadVarint)?;
            let data = self.take(size)?;
            f(tag, data)?;
        }
        Ok(())
    }
}
