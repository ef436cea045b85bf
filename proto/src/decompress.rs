//! The record codecs, in one place: bounded decompression of a records section (gzip,
//! snappy raw or in the xerial framing the Java client writes, lz4 frames, zstd), for
//! validation, conversion and the log cleaner, and compression for the batches and message
//! sets the broker builds itself (the cleaner's rewrites, message-format conversion).
//! Decompressed output is capped, so a small batch that inflates without limit (a "zip
//! bomb") is an error, never unbounded memory. zstd keeps one context per thread each way:
//! creating one costs more than a small batch.

use std::io::{Read, Write};

use bytes::BytesMut;
use kafka_protocol::compression::{Compressor, Gzip, Snappy};

/// Largest records section the broker inflates one compressed batch (or message set) to,
/// when it validates or converts it (Kafka validates without such a bound).
pub const MAX_DECOMPRESSED: usize = 64 << 20;

/// Why the records could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    #[error("records decompress to more than {0} bytes")]
    TooLarge(usize),
    #[error("cannot decompress ({codec}): {reason}")]
    Corrupt { codec: &'static str, reason: String },
}

/// Why records could not be compressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressError {
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    #[error("cannot compress ({codec}): {reason}")]
    Failed { codec: &'static str, reason: String },
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER: usize = 16;

fn corrupt(codec: &'static str, e: impl std::fmt::Display) -> DecompressError {
    DecompressError::Corrupt {
        codec,
        reason: e.to_string(),
    }
}

/// Reads all of `r`, failing once more than `max` bytes come out.
fn read_capped(r: impl Read, max: usize, codec: &'static str) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    r.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, e))?;
    if out.len() > max {
        return Err(DecompressError::TooLarge(max));
    }
    Ok(out)
}

fn snappy_block(block: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), DecompressError> {
    let n = snap::raw::decompress_len(block).map_err(|e| corrupt("snappy", e))?;
    if n > max.saturating_sub(out.len()) {
        return Err(DecompressError::TooLarge(max));
    }
    let start = out.len();
    out.resize(start + n, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt("snappy", e))?;
    Ok(())
}

/// Decompresses `input` (a batch's records section) written with `codec` (the batch
/// attributes' low three bits), producing at most `max` bytes.
pub fn decompress(codec: u8, input: &[u8], max: usize) -> Result<Vec<u8>, DecompressError> {
    match codec {
        0 => {
            if input.len() > max {
                return Err(DecompressError::TooLarge(max));
            }
            Ok(input.to_vec())
        }
        1 => read_capped(flate2::read::GzDecoder::new(input), max, "gzip"),
        2 => {
            let mut out = Vec::new();
            if input.len() >= XERIAL_HEADER && input.starts_with(XERIAL_MAGIC) {
                let mut rest = &input[XERIAL_HEADER..];
                while !rest.is_empty() {
                    let Some(len) = rest.get(..4) else {
                        return Err(corrupt("snappy", "truncated block length"));
                    };
                    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                    let Some(block) = rest.get(4..4 + len) else {
                        return Err(corrupt("snappy", "block runs past the input"));
                    };
                    snappy_block(block, &mut out, max)?;
                    rest = &rest[4 + len..];
                }
            } else {
                snappy_block(input, &mut out, max)?;
            }
            Ok(out)
        }
        3 => {
            let d = lz4::Decoder::new(input).map_err(|e| corrupt("lz4", e))?;
            read_capped(d, max, "lz4")
        }
        4 => ZSTD_DCTX.with(|ctx| {
            // creating a context costs more than decompressing a small batch
            let mut ctx = ctx.borrow_mut();
            let d = zstd::stream::read::Decoder::with_context(input, &mut ctx);
            read_capped(d, max, "zstd")
        }),
        other => Err(DecompressError::UnknownCodec(other)),
    }
}

thread_local! {
    /// One zstd decompression context per thread, reset for each batch.
    static ZSTD_DCTX: std::cell::RefCell<zstd::zstd_safe::DCtx<'static>> =
        std::cell::RefCell::new(zstd::zstd_safe::DCtx::create());
    /// One zstd compressor per thread, with its level (3, Kafka's default, unless a topic
    /// names another), for `compress_at`.
    static ZSTD_CCTX: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Kafka's default levels (KIP-390): gzip -1 (zlib's default, 6), lz4 9 (LZ4's fast
/// compressor), zstd 3.
pub const DEFAULT_LEVELS: [(u8, i32); 3] = [(1, -1), (3, 9), (4, 3)];

/// `compress` at `level`, a topic's `compression.<codec>.level` (KIP-390; None or the
/// codec's default level: as `compress`): gzip 1-9 (-1: zlib's default, 6), lz4 1-17
/// (Kafka's default 9 is LZ4's fast compressor, as in Kafka's `Lz4BlockOutputStream`;
/// any other level LZ4's high-compression mode, whose levels run from 3 to 12), zstd
/// -131072-22. Snappy has no levels.
pub fn compress_at(codec: u8, level: Option<i32>, input: &[u8]) -> Result<Vec<u8>, CompressError> {
    let level = level.filter(|l| !DEFAULT_LEVELS.contains(&(codec, *l)));
    match (codec, level) {
        (1, Some(l)) => {
            let failed = |e: std::io::Error| CompressError::Failed {
                codec: "gzip",
                reason: e.to_string(),
            };
            let level = flate2::Compression::new(l.clamp(1, 9) as u32);
            let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(input.len() / 2), level);
            enc.write_all(input).map_err(failed)?;
            enc.finish().map_err(failed)
        }
        // LZ4's frame API takes levels below 3 as its fast compressor: Kafka's 1 and 2
        // are high-compression levels, so they get its lowest, 3
        (3, Some(l)) => lz4_frame(input, l.clamp(3, 12) as u32),
        (4, Some(l)) => zstd_compress(input, l),
        _ => compress(codec, input),
    }
}

/// Compresses `input` with `codec` as Kafka's Java producer does: gzip (default level),
/// snappy in the xerial framing (32 KiB blocks), lz4 frames with Kafka's frame descriptor
/// (64 KiB independent blocks, no block or content checksum: what `Lz4BlockOutputStream`
/// writes, and all that pre-0.10 Java readers accept), zstd. Codec 0 returns the input.
pub fn compress(codec: u8, input: &[u8]) -> Result<Vec<u8>, CompressError> {
    let mut out = BytesMut::new();
    let fill = |buf: &mut BytesMut| {
        buf.extend_from_slice(input);
        Ok(())
    };
    let (name, done) = match codec {
        0 => return Ok(input.to_vec()),
        1 => ("gzip", Gzip::compress(&mut out, fill)),
        2 => ("snappy", Snappy::compress(&mut out, fill)),
        3 => return lz4_frame(input, 0),
        4 => return zstd_compress(input, 3),
        other => return Err(CompressError::UnknownCodec(other)),
    };
    done.map_err(|e| CompressError::Failed {
        codec: name,
        reason: e.to_string(),
    })?;
    Ok(out.to_vec())
}

/// zstd at `level` through this thread's context (made again when the level changes).
fn zstd_compress(input: &[u8], level: i32) -> Result<Vec<u8>, CompressError> {
    let failed = |e: std::io::Error| CompressError::Failed {
        codec: "zstd",
        reason: e.to_string(),
    };
    ZSTD_CCTX.with(|c| {
        let mut c = c.borrow_mut();
        let c = match c.as_mut() {
            Some((l, c)) if *l == level => c,
            _ => {
                &mut c
                    .insert((level, zstd::bulk::Compressor::new(level).map_err(failed)?))
                    .1
            }
        };
        c.compress(input).map_err(failed)
    })
}

/// An lz4 frame of `input` with the descriptor Kafka writes (`kafka-protocol`'s `Lz4` adds
/// block and content checksums, which Kafka's own writer never set); `level` 0 is LZ4's
/// fast compressor, 3-12 its high-compression mode.
fn lz4_frame(input: &[u8], level: u32) -> Result<Vec<u8>, CompressError> {
    let failed = |e: std::io::Error| CompressError::Failed {
        codec: "lz4",
        reason: e.to_string(),
    };
    let mut enc = lz4::EncoderBuilder::new()
        .level(level)
        .block_size(lz4::BlockSize::Max64KB)
        .block_mode(lz4::BlockMode::Independent)
        .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
        .checksum(lz4::ContentChecksum::NoChecksum)
        .build(Vec::with_capacity(input.len() / 2 + 64))
        .map_err(failed)?;
    enc.write_all(input).map_err(failed)?;
    let (out, done) = enc.finish();
    done.map_err(failed)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap(); // ok: test
        e.finish().unwrap() // ok: test
    }

    #[test]
    fn levels_round_trip_and_trade_speed_for_size() {
        let data: Vec<u8> = (0..40_000u32)
            .flat_map(|i| format!("{{\"id\":{},\"v\":\"{}\"}}", i % 5000, i % 37).into_bytes())
            .collect();
        for (codec, low, high) in [(1u8, 1, 9), (3, 1, 12), (4, 1, 12)] {
            let mut sizes = Vec::new();
            for level in [Some(low), None, Some(high)] {
                let c = compress_at(codec, level, &data).unwrap(); // ok: test
                let back = decompress(codec, &c, data.len()).unwrap(); // ok: test
                assert!(back == data, "codec {codec} level {level:?} round trip");
                sizes.push(c.len());
            }
            assert!(
                sizes[2] < sizes[0],
                "codec {codec}: level {high} not smaller than {low}: {sizes:?}"
            );
        }
        // Kafka's default levels are `compress` itself
        for (codec, level) in DEFAULT_LEVELS {
            assert_eq!(
                compress_at(codec, Some(level), &data).unwrap(), // ok: test
                compress(codec, &data).unwrap()                  // ok: test
            );
        }
    }

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        assert_eq!(decompress(1, &gzip(&data), 1 << 20).unwrap(), data); // ok: test
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap(); // ok: test
        assert_eq!(decompress(2, &raw, 1 << 20).unwrap(), data); // ok: test
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        for chunk in data.chunks(7000) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap(); // ok: test
            xerial.extend_from_slice(&(block.len() as u32).to_be_bytes());
            xerial.extend_from_slice(&block);
        }
        assert_eq!(decompress(2, &xerial, 1 << 20).unwrap(), data); // ok: test
        let mut lz = lz4::EncoderBuilder::new().build(Vec::new()).unwrap(); // ok: test
        lz.write_all(&data).unwrap(); // ok: test
        let (lz, r) = lz.finish();
        r.unwrap(); // ok: test
        assert_eq!(decompress(3, &lz, 1 << 20).unwrap(), data); // ok: test
        let z = zstd::encode_all(&data[..], 3).unwrap(); // ok: test
        assert_eq!(decompress(4, &z, 1 << 20).unwrap(), data); // ok: test
    }

    #[test]
    fn compress_round_trips_and_writes_kafkas_framing() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
        for codec in 0..=4 {
            let c = compress(codec, &data).unwrap(); // ok: test
            assert_eq!(
                decompress(codec, &c, 1 << 20).unwrap(),
                data,
                "codec {codec}"
            ); // ok: test
        }
        // xerial snappy header, as the Java client's SnappyOutputStream writes it
        assert!(compress(2, &data).unwrap().starts_with(XERIAL_MAGIC)); // ok: test
                                                                        // lz4: magic, FLG 0x60 (version 1, independent blocks, no checksums), BD 0x40
                                                                        // (64 KiB blocks), header checksum 0x82: Kafka's Lz4BlockOutputStream descriptor
        let lz = compress(3, &data).unwrap(); // ok: test
        assert_eq!(&lz[..7], &[0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82]);
        assert_eq!(compress(5, b""), Err(CompressError::UnknownCodec(5)));
    }

    #[test]
    fn bombs_and_garbage_are_errors() {
        let zeros = vec![0u8; 4 << 20];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 10_000);
        assert_eq!(
            decompress(1, &bomb, 1 << 20),
            Err(DecompressError::TooLarge(1 << 20))
        );
        let z = zstd::encode_all(&zeros[..], 3).unwrap(); // ok: test
        assert_eq!(
            decompress(4, &z, 1 << 20),
            Err(DecompressError::TooLarge(1 << 20))
        );
        // the thread's zstd context is reset after a stream stopped half way
        assert_eq!(decompress(4, &z, 8 << 20).unwrap().len(), 4 << 20); // ok: test
        let raw = snap::raw::Encoder::new().compress_vec(&zeros).unwrap(); // ok: test
        assert_eq!(
            decompress(2, &raw, 1 << 20),
            Err(DecompressError::TooLarge(1 << 20))
        );
        for codec in 1..=4 {
            assert!(decompress(codec, b"not compressed at all", 1 << 20).is_err());
        }
        assert_eq!(
            decompress(5, b"", 10),
            Err(DecompressError::UnknownCodec(5))
        );
    }
}
