//! A raw Produce v3 (one record, one partition) straight to a broker's real port: the
//! disk nemesis uses it to see the error code a leader with a full disk answers, which
//! librdkafka hides (it retries KAFKA_STORAGE_ERROR until the message times out).
//! Invariants: every socket operation has a timeout; nothing here retries.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{ensure, Result};

/// KAFKA_STORAGE_ERROR.
pub const KAFKA_STORAGE_ERROR: i16 = 56;

/// Zigzag varint, as v2 records use.
fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A v2 record batch of one record holding `key` (if any) and `value` (no producer id).
pub fn record_batch(key: Option<&[u8]>, value: &[u8], timestamp_ms: i64) -> Vec<u8> {
    let mut rec = Vec::new();
    rec.push(0); // attributes
    varint(&mut rec, 0); // timestamp delta
    varint(&mut rec, 0); // offset delta
    match key {
        Some(k) => {
            varint(&mut rec, k.len() as i64);
            rec.extend_from_slice(k);
        }
        None => varint(&mut rec, -1),
    }
    varint(&mut rec, value.len() as i64);
    rec.extend_from_slice(value);
    varint(&mut rec, 0); // no headers
    let mut records = Vec::new();
    varint(&mut records, rec.len() as i64);
    records.extend_from_slice(&rec);

    // from attributes to the end: what the CRC covers
    let mut tail = Vec::new();
    tail.extend_from_slice(&0i16.to_be_bytes()); // attributes
    tail.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    tail.extend_from_slice(&timestamp_ms.to_be_bytes()); // first timestamp
    tail.extend_from_slice(&timestamp_ms.to_be_bytes()); // max timestamp
    tail.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    tail.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    tail.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    tail.extend_from_slice(&1i32.to_be_bytes()); // records
    tail.extend_from_slice(&records);
    let crc = crc32c::crc32c(&tail);

    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    let length = 4 + 1 + 4 + tail.len(); // leader epoch, magic, crc, rest
    batch.extend_from_slice(&(length as i32).to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc.to_be_bytes());
    batch.extend_from_slice(&tail);
    batch
}

/// Produce v3 of one record to `topic`/`partition` at 127.0.0.1:`port` with `acks`;
/// returns the partition's (error code, base offset). `key_bytes` of zeros make the record
/// big enough to need fresh disk pages.
#[allow(clippy::too_many_arguments)]
pub fn produce(
    port: u16,
    topic: &str,
    partition: i32,
    key_bytes: usize,
    value: &str,
    acks: i16,
    timeout: Duration,
) -> Result<(i16, i64)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let key = vec![0u8; key_bytes];
    let batch = record_batch((key_bytes > 0).then_some(&key[..]), value.as_bytes(), now);
    let client_id = b"sluice-chaos-probe";
    let mut req = Vec::new();
    req.extend_from_slice(&0i16.to_be_bytes()); // Produce
    req.extend_from_slice(&3i16.to_be_bytes()); // v3
    req.extend_from_slice(&11i32.to_be_bytes()); // correlation id
    req.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    req.extend_from_slice(client_id);
    req.extend_from_slice(&(-1i16).to_be_bytes()); // no transactional id
    req.extend_from_slice(&acks.to_be_bytes());
    req.extend_from_slice(&(timeout.as_millis() as i32).to_be_bytes());
    req.extend_from_slice(&1i32.to_be_bytes()); // one topic
    req.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    req.extend_from_slice(topic.as_bytes());
    req.extend_from_slice(&1i32.to_be_bytes()); // one partition
    req.extend_from_slice(&partition.to_be_bytes());
    req.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    req.extend_from_slice(&batch);

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(timeout + Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut frame = (req.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&req);
    s.write_all(&frame)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    ensure!((4..1 << 20).contains(&len), "bad answer size {len}");
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body)?;
    // correlation id, topics [name, partitions [index, error, base offset, append time]]
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        ensure!(pos + n <= body.len(), "truncated produce answer");
        pos += n;
        Ok(&body[pos - n..pos])
    };
    let be32 = |b: &[u8]| i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    ensure!(be32(take(4)?) == 11, "wrong correlation id");
    ensure!(be32(take(4)?) == 1, "expected one topic in the answer");
    let name_len = i16::from_be_bytes(take(2)?.try_into()?);
    take(name_len.max(0) as usize)?;
    ensure!(be32(take(4)?) == 1, "expected one partition in the answer");
    take(4)?; // partition index
    let error = i16::from_be_bytes(take(2)?.try_into()?);
    let base = i64::from_be_bytes(take(8)?.try_into()?);
    Ok((error, base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_zigzag() {
        let enc = |v| {
            let mut o = Vec::new();
            varint(&mut o, v);
            o
        };
        assert_eq!(enc(0), vec![0]);
        assert_eq!(enc(-1), vec![1]);
        assert_eq!(enc(1), vec![2]);
        assert_eq!(enc(64), vec![0x80, 0x01]);
    }

    #[test]
    fn the_batch_header_is_consistent() {
        let b = record_batch(Some(b"k"), b"hello", 1_700_000_000_000);
        let length = i32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize;
        assert_eq!(length + 12, b.len());
        assert_eq!(b[16], 2, "magic");
        let crc = u32::from_be_bytes([b[17], b[18], b[19], b[20]]);
        assert_eq!(crc, crc32c::crc32c(&b[21..]));
        assert!(b.ends_with(b"hello\x00"));
    }
}
