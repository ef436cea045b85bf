//! Zero-copy FetchResponse encoder (v4..=12). Every field except record data is written into
//! small header buffers; record batches are appended as the `Bytes` the storage cache or
//! read returned, so the connection writes them to the socket without copying.
//!
//! ```text
//!  [size|hdr|throttle,err,session,topics..,partition hdr] [batch][batch] [partition hdr] ...
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use sluice_proto::request::put_response_header;

use crate::shard_msg::FetchPartResult;

/// One topic's partitions as they go into the response.
pub(crate) struct TopicOut {
    pub(crate) name: String,
    pub(crate) partitions: Vec<(i32, FetchPartResult)>,
}

/// Writes body pieces, switching between compact (flexible, v12+) and classic encodings.
struct Writer {
    flexible: bool,
    cur: BytesMut,
    pieces: Vec<Bytes>,
    len: usize,
}

impl Writer {
    fn uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.cur.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.cur.put_u8(v as u8);
    }
    fn array_len(&mut self, n: usize) {
        if self.flexible {
            self.uvarint(n as u64 + 1);
        } else {
            self.cur.put_i32(n as i32);
        }
    }
    fn null_array(&mut self) {
        if self.flexible {
            self.uvarint(0);
        } else {
            self.cur.put_i32(-1);
        }
    }
    fn string(&mut self, s: &str) {
        if self.flexible {
            self.uvarint(s.len() as u64 + 1);
        } else {
            self.cur.put_i16(s.len() as i16);
        }
        self.cur.put_slice(s.as_bytes());
    }
    fn tags(&mut self) {
        if self.flexible {
            self.cur.put_u8(0);
        }
    }
    fn data(&mut self, b: &Bytes) {
        if !self.cur.is_empty() {
            let piece = self.cur.split().freeze();
            self.len += piece.len();
            self.pieces.push(piece);
        }
        self.len += b.len();
        self.pieces.push(b.clone());
    }
    fn finish(mut self) -> (Vec<Bytes>, usize) {
        if !self.cur.is_empty() {
            let piece = self.cur.split().freeze();
            self.len += piece.len();
            self.pieces.push(piece);
        }
        (self.pieces, self.len)
    }
}

/// Encodes a complete Fetch response frame as pieces.
pub(crate) fn encode(
    version: i16,
    correlation_id: i32,
    error_code: i16,
    session_id: i32,
    topics: &[TopicOut],
) -> Result<Vec<Bytes>, String> {
    let mut w = Writer {
        flexible: version >= 12,
        cur: BytesMut::with_capacity(256),
        pieces: Vec::new(),
        len: 0,
    };
    w.cur.put_i32(0); // throttle_time_ms
    if version >= 7 {
        w.cur.put_i16(error_code);
        w.cur.put_i32(session_id);
    }
    w.array_len(topics.len());
    for t in topics {
        w.string(&t.name);
        w.array_len(t.partitions.len());
        for (index, p) in &t.partitions {
            w.cur.put_i32(*index);
            w.cur.put_i16(p.error);
            w.cur.put_i64(p.high_watermark);
            w.cur.put_i64(p.high_watermark); // last_stable_offset: no open transactions
            if version >= 5 {
                w.cur.put_i64(p.log_start_offset);
            }
            w.null_array(); // aborted_transactions
            if version >= 11 {
                w.cur.put_i32(-1); // preferred_read_replica
            }
            let size: usize = p.bytes();
            if w.flexible {
                w.uvarint(size as u64 + 1);
            } else {
                w.cur.put_i32(size as i32);
            }
            for b in &p.batches {
                w.data(b);
            }
            w.tags();
        }
        w.tags();
    }
    w.tags();
    let (mut pieces, len) = w.finish();
    let mut head = BytesMut::with_capacity(9);
    put_response_header(&mut head, ApiKey::Fetch, version, correlation_id, len)
        .map_err(|e| e.to_string())?;
    pieces.insert(0, head.freeze());
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;

    /// Our pieces, concatenated, decode with the reference decoder at every version.
    #[test]
    fn matches_reference_decoder() {
        let batch = sluice_proto::batch::build_batch(
            5,
            &[sluice_proto::batch::SimpleRecord {
                key: Some(b"k"),
                value: Some(b"v"),
                timestamp: 1,
                headers: &[],
            }],
        );
        let topics = vec![TopicOut {
            name: "t".into(),
            partitions: vec![
                (
                    0,
                    FetchPartResult {
                        error: 0,
                        high_watermark: 6,
                        log_start_offset: 0,
                        batches: vec![batch.clone(), batch.clone()],
                    },
                ),
                (
                    1,
                    FetchPartResult {
                        error: 1,
                        high_watermark: -1,
                        log_start_offset: -1,
                        batches: vec![],
                    },
                ),
            ],
        }];
        for v in 4..=12 {
            let pieces = encode(v, 9, 0, 77, &topics).unwrap(); // ok: test
            let mut all = BytesMut::new();
            for p in &pieces {
                all.extend_from_slice(p);
            }
            let size = i32::from_be_bytes([all[0], all[1], all[2], all[3]]) as usize;
            assert_eq!(size + 4, all.len(), "v{v}");
            let hdr = if v >= 12 { 9 } else { 8 };
            let mut body = all.freeze().slice(hdr..);
            let r = FetchResponse::decode(&mut body, v).unwrap(); // ok: test
            assert_eq!(r.responses.len(), 1);
            let p = &r.responses[0].partitions;
            assert_eq!(p[0].high_watermark, 6);
            assert_eq!(p[0].records.as_ref().unwrap().len(), batch.len() * 2); // ok: test
            assert_eq!(p[1].error_code, 1);
            if v >= 7 {
                assert_eq!(r.session_id, 77);
            }
            assert!(body.is_empty(), "v{v}: trailing bytes");
        }
    }
}
