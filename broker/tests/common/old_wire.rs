//! The pre-flexible wire, field by field, for the old-version suites: request bodies built
//! and response bodies read one field at a time (big-endian, i16 string lengths, i32 array
//! counts), raw requests with header v1, and message sets (formats v0/v1) written and read
//! from Kafka's spec (https://kafka.apache.org/documentation/#messageset), independently
//! of the broker's own codec. Invariants: every read is checked against what is left; a
//! message's CRC (CRC-32, IEEE, of magic..end) is checked before its fields are trusted.

use anyhow::{bail, ensure, Context as _, Result};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip};

use super::raw::{FrameRead, RawClient};

/// A request body built field by field (non-flexible layout: big-endian, i16 string
/// lengths, i32 array counts).
#[derive(Default, Clone)]
pub(crate) struct Body(pub(crate) Vec<u8>);

impl Body {
    pub(crate) fn i8(mut self, v: i8) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn str(self, s: &str) -> Self {
        let mut b = self.i16(s.len() as i16);
        b.0.extend_from_slice(s.as_bytes());
        b
    }
    pub(crate) fn null_str(self) -> Self {
        self.i16(-1)
    }
    pub(crate) fn bytes(self, b: &[u8]) -> Self {
        let mut s = self.i32(b.len() as i32);
        s.0.extend_from_slice(b);
        s
    }
}

/// A response body read field by field; every read is checked.
pub(crate) struct Fields(pub(crate) Bytes);

impl Fields {
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<Bytes> {
        ensure!(self.0.remaining() >= n, "response truncated at {what}");
        Ok(self.0.split_to(n))
    }
    pub(crate) fn i8(&mut self, what: &str) -> Result<i8> {
        Ok(self.take(1, what)?.get_i8())
    }
    pub(crate) fn i16(&mut self, what: &str) -> Result<i16> {
        Ok(self.take(2, what)?.get_i16())
    }
    pub(crate) fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(self.take(4, what)?.get_i32())
    }
    pub(crate) fn i64(&mut self, what: &str) -> Result<i64> {
        Ok(self.take(8, what)?.get_i64())
    }
    pub(crate) fn count(&mut self, what: &str) -> Result<usize> {
        let n = self.i32(what)?;
        ensure!((0..10_000).contains(&n), "{what}: count {n}");
        Ok(n as usize)
    }
    pub(crate) fn nullable_str(&mut self, what: &str) -> Result<Option<String>> {
        let n = self.i16(what)?;
        if n == -1 {
            return Ok(None);
        }
        ensure!(n >= 0, "{what}: length {n}");
        let b = self.take(n as usize, what)?;
        Ok(Some(
            String::from_utf8(b.to_vec()).context(what.to_string())?,
        ))
    }
    pub(crate) fn str(&mut self, what: &str) -> Result<String> {
        self.nullable_str(what)?
            .with_context(|| format!("{what} is null"))
    }
    pub(crate) fn done(&self, what: &str) -> Result<()> {
        ensure!(
            self.0.is_empty(),
            "{what}: {} bytes left over",
            self.0.len()
        );
        Ok(())
    }
}

/// Sends `body` as `api` v`version` (request header v1) on a raw connection.
pub(crate) fn send_raw(
    c: &mut RawClient,
    api: i16,
    version: i16,
    corr: i32,
    body: &Body,
) -> Result<()> {
    let mut frame = Body::default()
        .i16(api)
        .i16(version)
        .i32(corr)
        .str("old-versions-test");
    frame.0.extend_from_slice(&body.0);
    let mut out = (frame.0.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame.0);
    c.write_raw(&out)
}

/// One request and its response body (response header v0: the correlation id).
pub(crate) fn call_raw(c: &mut RawClient, api: i16, version: i16, body: &Body) -> Result<Fields> {
    let corr = 4000 + i32::from(api) * 100 + i32::from(version);
    send_raw(c, api, version, corr, body)?;
    let mut f = match c.read_frame()? {
        FrameRead::Frame(f) => f,
        other => bail!("api {api} v{version}: want a response, got {other:?}"),
    };
    ensure!(f.len() >= 4, "api {api} v{version}: short frame");
    let got = f.get_i32();
    ensure!(
        got == corr,
        "api {api} v{version}: correlation {got}, want {corr}"
    );
    Ok(Fields(f))
}

/// Produce v`version` of one message set to partition 0 of `topic`: the request
/// (acks, timeout_ms, [topic, [partition, records]]).
pub(crate) fn produce_body(topic: &str, acks: i16, set: &[u8]) -> Body {
    Body::default()
        .i16(acks)
        .i32(10_000)
        .i32(1)
        .str(topic)
        .i32(1)
        .i32(0)
        .bytes(set)
}

/// One partition's answer to Produce v0-2: (error_code, base_offset), after checking the
/// layout: [topic, [partition, error_code, base_offset, (v2) log_append_time]], (v1+)
/// throttle_time_ms. log_append_time is -1 (the topic's timestamps are CreateTime).
pub(crate) fn produce_v0_v2(
    c: &mut RawClient,
    version: i16,
    topic: &str,
    set: &[u8],
) -> Result<(i16, i64)> {
    let mut r = call_raw(c, PRODUCE, version, &produce_body(topic, -1, set))?;
    ensure!(
        r.count("responses")? == 1 && r.str("topic")? == topic,
        "topic echoed"
    );
    ensure!(
        r.count("partitions")? == 1 && r.i32("partition")? == 0,
        "partition echoed"
    );
    let error = r.i16("error_code")?;
    let base = r.i64("base_offset")?;
    if version >= 2 {
        let t = r.i64("log_append_time")?;
        ensure!(t == -1, "Produce v{version}: log_append_time {t}");
    }
    if version >= 1 {
        ensure!(r.i32("throttle_time_ms")? == 0, "throttle");
    }
    r.done(&format!("Produce v{version}"))?;
    Ok((error, base))
}

/// One partition's answer to Fetch v0-3 of partition 0 of `topic` from `offset`:
/// (error_code, high_watermark, records), the layout checked: (v1+) throttle_time_ms,
/// [topic, [partition, error_code, high_watermark, records]]. `max_bytes` is sent at v3.
pub(crate) fn fetch_v0_v3(
    c: &mut RawClient,
    version: i16,
    topic: &str,
    offset: i64,
    partition_max: i32,
    max_bytes: i32,
) -> Result<(i16, i64, Bytes)> {
    let mut body = Body::default().i32(-1).i32(100).i32(1);
    if version >= 3 {
        body = body.i32(max_bytes);
    }
    let body = body
        .i32(1)
        .str(topic)
        .i32(1)
        .i32(0)
        .i64(offset)
        .i32(partition_max);
    let mut r = call_raw(c, FETCH, version, &body)?;
    if version >= 1 {
        ensure!(r.i32("throttle_time_ms")? == 0, "throttle");
    }
    ensure!(
        r.count("responses")? == 1 && r.str("topic")? == topic,
        "topic echoed"
    );
    ensure!(
        r.count("partitions")? == 1 && r.i32("partition")? == 0,
        "partition echoed"
    );
    let error = r.i16("error_code")?;
    let hw = r.i64("high_watermark")?;
    let n = r.i32("records length")?;
    ensure!(n >= 0, "records length {n}");
    let records = r.take(n as usize, "records")?;
    r.done(&format!("Fetch v{version}"))?;
    Ok((error, hw, records))
}

/// Api keys of the requests the helpers above send.
const PRODUCE: i16 = 0;
const FETCH: i16 = 1;

/// Attributes bit 3 of a v1 message: its timestamp is LogAppendTime.
pub(crate) const LOG_APPEND_TIME: i8 = 0x08;
/// Attributes codec bits: gzip.
pub(crate) const GZIP: i8 = 1;

/// One message entry: offset i64, size i32, then crc u32, magic i8, attributes i8,
/// (magic 1) timestamp i64, key and value (i32 length, -1 for null, then the bytes).
pub(crate) fn message(
    offset: i64,
    magic: i8,
    attributes: i8,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Vec<u8> {
    let mut m = vec![magic as u8, attributes as u8];
    if magic >= 1 {
        m.extend_from_slice(&timestamp.to_be_bytes());
    }
    for f in [key, value] {
        match f {
            None => m.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                m.extend_from_slice(&(b.len() as i32).to_be_bytes());
                m.extend_from_slice(b);
            }
        }
    }
    let mut out = offset.to_be_bytes().to_vec();
    out.extend_from_slice(&(m.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&m).to_be_bytes());
    out.extend_from_slice(&m);
    out
}

/// A gzip wrapper message around the inner message set `inner` (key null).
pub(crate) fn gzip_wrapper(
    offset: i64,
    magic: i8,
    attributes: i8,
    timestamp: i64,
    inner: &[u8],
) -> Result<Vec<u8>> {
    let mut z = BytesMut::new();
    Gzip::compress(&mut z, |b: &mut BytesMut| {
        b.extend_from_slice(inner);
        Ok(())
    })?;
    Ok(message(
        offset,
        magic,
        GZIP | attributes,
        timestamp,
        None,
        Some(&z),
    ))
}

/// A message read back, with its offset made absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OldMessage {
    pub(crate) offset: i64,
    pub(crate) magic: i8,
    pub(crate) attributes: i8,
    /// -1 for magic 0.
    pub(crate) timestamp: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
}

/// A compressed wrapper read back: its offset, magic, attributes, timestamp and its inner
/// messages' offsets as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wrapper {
    pub(crate) offset: i64,
    pub(crate) magic: i8,
    pub(crate) attributes: i8,
    pub(crate) timestamp: i64,
    pub(crate) inner_offsets: Vec<i64>,
}

/// The entries of one message set, each CRC-checked; no partial entry may follow.
fn entries(set: &[u8]) -> Result<Vec<OldMessage>> {
    let mut r = Fields(Bytes::copy_from_slice(set));
    let mut out = Vec::new();
    while !r.0.is_empty() {
        let offset = r.i64("offset")?;
        let size = r.i32("message size")?;
        ensure!(size >= 14, "message size {size}");
        let mut m = Fields(r.take(size as usize, "message")?);
        let crc = m.i32("crc")? as u32;
        ensure!(
            crc == crc32fast::hash(&m.0),
            "CRC of the message at {offset}"
        );
        let magic = m.i8("magic")?;
        ensure!(magic == 0 || magic == 1, "magic {magic}");
        let attributes = m.i8("attributes")?;
        let timestamp = if magic == 1 { m.i64("timestamp")? } else { -1 };
        let mut field = |what: &str| -> Result<Option<Vec<u8>>> {
            let n = m.i32(what)?;
            if n == -1 {
                return Ok(None);
            }
            ensure!(n >= 0, "{what} length {n}");
            Ok(Some(m.take(n as usize, what)?.to_vec()))
        };
        let key = field("key")?;
        let value = field("value")?;
        m.done("message")?;
        out.push(OldMessage {
            offset,
            magic,
            attributes,
            timestamp,
            key,
            value,
        });
    }
    Ok(out)
}

/// Reads a message set (a Fetch v0-3 answer's records) with gzip wrappers opened: inner
/// messages get absolute offsets (as written for magic 0; for magic 1 counted back from
/// the wrapper's offset, which is the last inner message's). Returns every message and
/// every wrapper.
pub(crate) fn read_message_set(set: &[u8]) -> Result<(Vec<OldMessage>, Vec<Wrapper>)> {
    let mut flat = Vec::new();
    let mut wrappers = Vec::new();
    for m in entries(set)? {
        match m.attributes & 0x07 {
            0 => flat.push(m),
            1 => {
                let mut z = Bytes::from(m.value.clone().context("wrapper without a value")?);
                let data = Gzip::decompress(&mut z, |b: &mut Bytes| Ok(b.to_vec()))?;
                let inner = entries(&data)?;
                let last = inner.last().context("empty wrapper")?.offset;
                wrappers.push(Wrapper {
                    offset: m.offset,
                    magic: m.magic,
                    attributes: m.attributes,
                    timestamp: m.timestamp,
                    inner_offsets: inner.iter().map(|i| i.offset).collect(),
                });
                for mut i in inner {
                    ensure!(
                        i.magic == m.magic,
                        "inner magic {} in a {} wrapper",
                        i.magic,
                        m.magic
                    );
                    if m.magic == 1 {
                        i.offset += m.offset - last;
                    }
                    flat.push(i);
                }
            }
            codec => bail!("a wrapper in codec {codec}; the tests write gzip only"),
        }
    }
    Ok((flat, wrappers))
}
