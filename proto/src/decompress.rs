//! Bounded decompression of a record batch's records section, for validation and the log
//! cleaner: gzip, snappy (raw, and the xerial framing the Java client writes), lz4 (frame
//! format) and zstd. The output is capped, so a small batch that inflates without limit
//! (a "zip bomb") is an error, never unbounded memory. And `compress`, the other way, for
//! the batches the cleaner rewrites (Kafka's framings). zstd keeps one context per thread
//! each way: creating one costs more than a small batch.

use std::io::Read;

/// Why the records could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    #[error("records decompress to more than {0} bytes")]
    TooLarge(usize),
    #[error("cannot decompress ({codec}): {reason}")]
    Corrupt { codec: &'static str, reason: String },
    #[error("cannot compress ({codec}): {reason}")]
    Compress { codec: &'static str, reason: String },
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
    /// One zstd compressor per thread (level 3, Kafka's default), for `compress`.
    static ZSTD_CCTX: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses `input` (a records section) with `codec` as Kafka's producers and broker
/// write it: gzip, snappy in the xerial framing, lz4 frames with independent blocks (the
/// `kafka-protocol` crate's codecs), zstd at level 3 (through a per-thread context); 0
/// copies it.
pub fn compress(codec: u8, input: &[u8]) -> Result<Vec<u8>, DecompressError> {
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy};
    fn with<C: Compressor<Vec<u8>>>(
        codec: &'static str,
        input: &[u8],
    ) -> Result<Vec<u8>, DecompressError> {
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        C::compress(&mut out, |buf| {
            bytes::BufMut::put_slice(buf, input);
            Ok(())
        })
        .map_err(|e| DecompressError::Compress {
            codec,
            reason: format!("{e:#}"),
        })?;
        Ok(out)
    }
    match codec {
        0 => Ok(input.to_vec()),
        1 => with::<Gzip>("gzip", input),
        2 => with::<Snappy>("snappy", input),
        3 => with::<Lz4>("lz4", input),
        4 => ZSTD_CCTX.with(|c| {
            let mut c = c.borrow_mut();
            let c = match c.as_mut() {
                Some(c) => c,
                None => c.insert(zstd::bulk::Compressor::new(3).map_err(|e| {
                    DecompressError::Compress {
                        codec: "zstd",
                        reason: e.to_string(),
                    }
                })?),
            };
            c.compress(input).map_err(|e| DecompressError::Compress {
                codec: "zstd",
                reason: e.to_string(),
            })
        }),
        other => Err(DecompressError::UnknownCodec(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap(); // ok: test
        e.finish().unwrap() // ok: test
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
    fn compress_writes_what_decompress_reads_for_every_codec() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 97).to_be_bytes())
            .collect();
        for codec in 0..=4 {
            let c = compress(codec, &data).unwrap(); // ok: test
            assert_eq!(
                decompress(codec, &c, 1 << 20).unwrap(),
                data,
                "codec {codec}"
            ); // ok: test
            if codec == 2 {
                assert!(c.starts_with(XERIAL_MAGIC), "Kafka's snappy framing");
            }
        }
        assert_eq!(compress(5, b"x"), Err(DecompressError::UnknownCodec(5)));
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
