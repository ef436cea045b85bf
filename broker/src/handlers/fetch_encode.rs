//! Zero-copy FetchResponse encoder (v0..=12). Every field except record data is written into
//! small header buffers; record batches are appended as the `Bytes` the storage cache or
//! read returned, so the connection writes them to the socket without copying. Fetch v0-3
//! answer in message formats v0/v1: `down_convert` first replaces each partition's batches
//! with message sets built from them (a copy, the only one in the fetch path).
//!
//! ```text
//!  [size|hdr|throttle,err,session,topics..,partition hdr] [batch][batch] [partition hdr] ...
//!  v0-3: stored v2 batch ─► message_set::from_record_batch ─► message set (magic 0 / 1)
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use sluice_proto::batch::BatchIter;
use sluice_proto::decompress::MAX_DECOMPRESSED;
use sluice_proto::message_set::{self, MAGIC_V0, MAGIC_V1};
use sluice_proto::request::put_response_header;

use super::fetch_session::PlanPart;
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

/// Bytes of one partition's fields without aborted transactions (the largest version's:
/// index, error, three offsets, aborted, preferred replica, records size, tags).
const PARTITION_FIELDS: usize = 4 + 2 + 8 + 8 + 8 + 4 + 4 + 4 + 1;

/// Encodes a complete Fetch response frame as pieces.
pub(crate) fn encode(
    version: i16,
    correlation_id: i32,
    error_code: i16,
    session_id: i32,
    topics: &[TopicOut],
) -> Result<Vec<Bytes>, String> {
    // every field but the records, in one buffer sized up front (a 10,000-partition
    // answer is ~450 KB of them; growing it by doubling copied it over and over)
    let fields: usize = topics
        .iter()
        .map(|t| t.name.len() + 8 + t.partitions.len() * PARTITION_FIELDS)
        .sum();
    let mut w = Writer {
        flexible: version >= 12,
        cur: BytesMut::with_capacity(64 + fields),
        pieces: Vec::new(),
        len: 0,
    };
    if version >= 1 {
        w.cur.put_i32(0); // throttle_time_ms
    }
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
            if version >= 4 {
                w.cur.put_i64(p.last_stable_offset);
                if version >= 5 {
                    w.cur.put_i64(p.log_start_offset);
                }
                match &p.aborted {
                    None => w.null_array(),
                    Some(list) => {
                        w.array_len(list.len());
                        for (producer_id, first_offset) in list {
                            w.cur.put_i64(*producer_id);
                            w.cur.put_i64(*first_offset);
                            w.tags();
                        }
                    }
                }
            }
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

/// Fetch v0-3: replaces each partition's stored batches (`parts`: partition, fetch offset
/// and max bytes, in the order of `results`) with the message sets they become, of magic 0
/// for Fetch v0-1 and 1 for v2-3 (message format v1 came with Fetch v2; v1 only added
/// throttle_time_ms), as Kafka's down-conversion did:
///
/// - a partition keeps whole converted batches while they fit its max_bytes and what is
///   left of the response's `max_bytes`; its first converted batch is kept whole even past
///   its max_bytes (as the stored read keeps the first batch whole), and the first
///   partition with data always keeps one. Kafka cut v0-2 answers at the byte limits,
///   leaving a partial message the client skipped (or, for a first message larger than the
///   limit, never got past); returning that message whole lets old clients progress.
/// - a zstd batch cannot be converted: UNSUPPORTED_COMPRESSION_TYPE if it comes first,
///   else the partition ends before it. Stored bytes that do not convert end it the same
///   way, CORRUPT_MESSAGE if nothing came before.
///
/// The conversion runs on the connection's shard and yields between batches.
pub(crate) async fn down_convert(
    results: &mut [FetchPartResult],
    parts: &[PlanPart],
    max_bytes: usize,
    version: i16,
) {
    let magic = if version <= 1 { MAGIC_V0 } else { MAGIC_V1 };
    let mut used = 0usize;
    for (r, p) in results.iter_mut().zip(parts) {
        let (fetch_offset, part_max) = (&p.fetch_offset, &p.max_bytes);
        if r.error != 0 || r.batches.is_empty() {
            continue;
        }
        let budget = max_bytes.saturating_sub(used);
        let limit = usize::try_from(*part_max).unwrap_or(0).min(budget);
        let mut sets: Vec<Bytes> = Vec::new();
        let mut size = 0usize;
        let mut failed = None;
        'read: for chunk in &r.batches {
            for item in BatchIter::headers_only(chunk) {
                let converted = item
                    .map_err(|e| message_set::MessageSetError::Corrupt(e.to_string()))
                    .and_then(|(_, range)| {
                        message_set::from_record_batch(
                            &chunk.slice(range),
                            magic,
                            *fetch_offset,
                            MAX_DECOMPRESSED,
                        )
                    });
                glommio::yield_if_needed().await;
                let set = match converted {
                    Ok(set) if set.is_empty() => continue,
                    Ok(set) => set,
                    Err(e) => {
                        if !matches!(e, message_set::MessageSetError::UnsupportedCompression(_)) {
                            tracing::warn!(topic = %p.topic, partition = p.partition, error = %e, "stored batch not down-converted");
                        }
                        failed = Some(e);
                        break 'read;
                    }
                };
                let first = sets.is_empty();
                let fits = size + set.len() <= limit;
                let forced = first && (used == 0 || set.len() <= budget);
                if !fits && !forced {
                    break 'read;
                }
                size += set.len();
                sets.push(set);
            }
        }
        match failed {
            Some(e) if sets.is_empty() => {
                *r = FetchPartResult::failed(crate::errors::message_set_error_code(&e));
            }
            _ => r.batches = sets,
        }
        used += size;
    }
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
                        last_stable_offset: 6,
                        aborted: None,
                        log_start_offset: 0,
                        batches: vec![batch.clone(), batch.clone()],
                    },
                ),
                (1, FetchPartResult::failed(1)),
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

    fn body_of(pieces: &[Bytes], header: usize) -> Vec<u8> {
        let all: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let size = i32::from_be_bytes([all[0], all[1], all[2], all[3]]) as usize;
        assert_eq!(size + 4, all.len());
        all[4 + header..].to_vec()
    }

    /// Fetch v0-3 layouts, field by field: (v1+) throttle_time_ms, [topic, [partition,
    /// error_code, high_watermark, records]].
    #[test]
    fn old_layouts_field_by_field() {
        let set = Bytes::from_static(b"message-set");
        let topics = vec![TopicOut {
            name: "t".into(),
            partitions: vec![(
                3,
                FetchPartResult {
                    error: 0,
                    high_watermark: 9,
                    last_stable_offset: 9,
                    aborted: None,
                    log_start_offset: 0,
                    batches: vec![set.clone()],
                },
            )],
        }];
        for v in 0..=3 {
            let pieces = encode(v, 7, 0, 0, &topics).unwrap(); // ok: test
            let body = body_of(&pieces, 4);
            let mut want = Vec::new();
            if v >= 1 {
                want.extend_from_slice(&0i32.to_be_bytes());
            }
            want.extend_from_slice(&1i32.to_be_bytes());
            want.extend_from_slice(&1i16.to_be_bytes());
            want.push(b't');
            want.extend_from_slice(&1i32.to_be_bytes());
            want.extend_from_slice(&3i32.to_be_bytes());
            want.extend_from_slice(&0i16.to_be_bytes());
            want.extend_from_slice(&9i64.to_be_bytes());
            want.extend_from_slice(&(set.len() as i32).to_be_bytes());
            want.extend_from_slice(&set);
            assert_eq!(body, want, "v{v}");
            // the message set is sent as its own piece, not copied into a header
            assert!(pieces.iter().any(|p| p == &set));
        }
    }

    fn stored(base: i64, n: usize, codec: u8) -> Bytes {
        let value = [b'x'; 100];
        let recs: Vec<_> = (0..n)
            .map(|i| sluice_proto::batch::SimpleRecord {
                key: None,
                value: Some(&value),
                timestamp: 1000 + i as i64,
                headers: &[],
            })
            .collect();
        let b = sluice_proto::batch::build_compressed_batch(0, &recs, codec).unwrap(); // ok: test
        let mut m = b.to_vec();
        sluice_proto::batch::set_base_offset(&mut m, base);
        Bytes::from(m)
    }

    fn part(batches: Vec<Bytes>) -> FetchPartResult {
        FetchPartResult {
            error: 0,
            high_watermark: 100,
            last_stable_offset: 100,
            log_start_offset: 0,
            aborted: None,
            batches,
        }
    }

    fn tp(p: i32, offset: i64, max: i32) -> PlanPart {
        PlanPart {
            topic: "t".into(),
            partition: p,
            fetch_offset: offset,
            max_bytes: max,
            epoch: -1,
            log_start: -1,
            told_log_start: -1,
        }
    }

    fn offsets(r: &FetchPartResult) -> Vec<i64> {
        r.batches
            .iter()
            .flat_map(|s| {
                message_set::messages(s)
                    .map(|m| m.unwrap().offset)
                    .collect::<Vec<_>>()
            }) // ok: test
            .collect()
    }

    /// Runs `f` on a glommio executor (`down_convert` yields to it).
    fn run<F, Fut>(f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(f)
            .expect("spawn executor") // ok: test setup
            .join()
            .expect("executor panicked"); // ok: test
    }

    #[test]
    fn down_convert_limits_and_errors() {
        run(|| async {
            // two stored batches in one chunk and one in another; every message is 134 bytes
            // (12 + 22 + 100) at v1, 126 at v0
            let chunk: Vec<u8> = [stored(0, 2, 0), stored(2, 1, 0)].concat();
            let batches = vec![Bytes::from(chunk), stored(3, 2, 0)];
            // no limit to speak of: everything, records below the fetch offset left out
            let mut r = vec![part(batches.clone())];
            down_convert(&mut r, &[tp(0, 1, 1 << 20)], 1 << 20, 1).await;
            assert_eq!(offsets(&r[0]), vec![1, 2, 3, 4]);
            // partition max_bytes of one message: the first converted batch only, whole
            let mut r = vec![part(batches.clone())];
            down_convert(&mut r, &[tp(0, 0, 10)], 1 << 20, 3).await;
            assert_eq!(offsets(&r[0]), vec![0, 1]);
            // v0: magic 0
            let m = message_set::messages(&r[0].batches[0])
                .next()
                .unwrap()
                .unwrap(); // ok: test
            assert_eq!(m.magic, 1);
            let mut r = vec![part(batches.clone())];
            down_convert(&mut r, &[tp(0, 0, 1 << 20)], 1 << 20, 0).await;
            assert!(message_set::messages(&r[0].batches[0]).all(|m| m.unwrap().magic == 0)); // ok: test
                                                                                             // the response budget: the first partition gets its first batch, the second
                                                                                             // none past the budget (but its first batch when the budget holds it)
            let mut r = vec![part(batches.clone()), part(batches.clone())];
            down_convert(&mut r, &[tp(0, 0, 1 << 20), tp(1, 0, 1 << 20)], 410, 3).await;
            assert_eq!(offsets(&r[0]), vec![0, 1, 2]);
            assert!(r[1].batches.is_empty());
            let mut r = vec![part(batches.clone()), part(batches)];
            down_convert(&mut r, &[tp(0, 0, 10), tp(1, 0, 10)], 600, 3).await;
            assert_eq!((offsets(&r[0]), offsets(&r[1])), (vec![0, 1], vec![0, 1]));
        });
    }

    #[test]
    fn zstd_cannot_be_down_converted() {
        run(|| async {
            // zstd first: UNSUPPORTED_COMPRESSION_TYPE, as Kafka below Fetch v10
            let mut r = vec![part(vec![stored(0, 2, 4)])];
            down_convert(&mut r, &[tp(0, 0, 1 << 20)], 1 << 20, 3).await;
            assert_eq!((r[0].error, r[0].high_watermark), (76, -1));
            assert!(r[0].batches.is_empty());
            // after convertible batches: those, then the partition ends
            let mut r = vec![part(vec![
                stored(0, 1, 1),
                stored(1, 2, 4),
                stored(3, 1, 0),
            ])];
            down_convert(&mut r, &[tp(0, 0, 1 << 20)], 1 << 20, 1).await;
            assert_eq!((r[0].error, offsets(&r[0])), (0, vec![0]));
            // unreadable stored bytes: CORRUPT_MESSAGE
            let mut r = vec![part(vec![Bytes::from_static(&[0u8; 80])])];
            down_convert(&mut r, &[tp(0, 0, 1 << 20)], 1 << 20, 1).await;
            assert_eq!(r[0].error, 2);
        });
    }
}
