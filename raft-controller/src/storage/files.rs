//! On-disk formats of the raft storage: file names, log frames, and the sealed state and
//! snapshot files, plus the one atomic-replace helper.
//!
//! ```text
//!  <gen:010>-<first_index:020>.log    frames: [len u32 LE][crc32c(entry) u32 LE][entry (protobuf)]
//!  raft-state                         "SLRS" [crc32c(body)] prost StateRecord
//!  snapshot-<index:020>-<term:020>.snap  "SLSN" [crc32c(body)] raft Snapshot (protobuf)
//!  *.tmp                              a replace in progress; removed when the storage opens
//! ```
//! A frame is trusted only if its length fits the bytes that follow, its CRC matches and the
//! entry decodes; nothing is allocated from a length before that check. Sealed files are only
//! ever replaced whole through `write_atomic` (temp file, fsync, rename, fsync directory).

use std::path::Path;

use protobuf::Message as _;
use raft::eraftpb::Entry;

use crate::error::{Error, Result};
use crate::fs::Fs;

/// Name of the hard state / conf state / snapshot pointer file.
pub(crate) const STATE_FILE: &str = "raft-state";
const TMP_SUFFIX: &str = ".tmp";
pub(crate) const STATE_MAGIC: &[u8; 4] = b"SLRS";
pub(crate) const SNAPSHOT_MAGIC: &[u8; 4] = b"SLSN";
const FRAME_HEADER: usize = 8;

/// What a file in the raft directory is, judged by its name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    State,
    Segment { generation: u64, first_index: u64 },
    Snapshot { index: u64, term: u64 },
    Temp,
    Unknown,
}

pub(crate) fn segment_name(generation: u64, first_index: u64) -> String {
    format!("{generation:010}-{first_index:020}.log")
}

pub(crate) fn snapshot_name(index: u64, term: u64) -> String {
    format!("snapshot-{index:020}-{term:020}.snap")
}

pub(crate) fn classify(name: &str) -> FileKind {
    if name == STATE_FILE {
        return FileKind::State;
    }
    if name.ends_with(TMP_SUFFIX) {
        return FileKind::Temp;
    }
    if let Some(stem) = name.strip_suffix(".log") {
        if let Some((g, f)) = stem.split_once('-') {
            if let (Ok(generation), Ok(first_index @ 1..)) = (g.parse(), f.parse::<u64>()) {
                return FileKind::Segment {
                    generation,
                    first_index,
                };
            }
        }
    }
    if let Some(stem) = name
        .strip_prefix("snapshot-")
        .and_then(|s| s.strip_suffix(".snap"))
    {
        if let Some((i, t)) = stem.split_once('-') {
            if let (Ok(index), Ok(term)) = (i.parse(), t.parse()) {
                return FileKind::Snapshot { index, term };
            }
        }
    }
    FileKind::Unknown
}

/// The hard state, the conf state and which snapshot and log generation are current.
/// Replaced whole, atomically; the rename of this file is the commit point of a snapshot.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StateRecord {
    #[prost(uint64, tag = "1")]
    pub term: u64,
    #[prost(uint64, tag = "2")]
    pub vote: u64,
    #[prost(uint64, tag = "3")]
    pub commit: u64,
    /// raft's `ConfState`, protobuf-encoded (raft's own types are rust-protobuf).
    #[prost(bytes = "vec", tag = "4")]
    pub conf_state: Vec<u8>,
    #[prost(uint64, tag = "5")]
    pub snapshot_index: u64,
    #[prost(uint64, tag = "6")]
    pub snapshot_term: u64,
    /// Log segments of any other generation are stale (replaced by an installed snapshot).
    #[prost(uint64, tag = "7")]
    pub generation: u64,
}

/// Appends one frame for `entry` to `out`.
pub(crate) fn encode_frame(entry: &Entry, out: &mut Vec<u8>) -> Result<()> {
    let body = entry
        .write_to_bytes()
        .map_err(|e| Error::Refused(format!("cannot encode entry {}: {e}", entry.index)))?;
    let len = u32::try_from(body.len())
        .map_err(|_| Error::Refused(format!("entry {} too large", entry.index)))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Decodes the frame at the start of `data`: `Ok(None)` at a clean end, `Err(reason)` for a
/// torn or corrupt frame, else the entry and the frame's length.
pub(crate) fn decode_frame(data: &[u8]) -> Result<Option<(Entry, usize)>, String> {
    if data.is_empty() {
        return Ok(None);
    }
    let Some((header, rest)) = data.split_first_chunk::<FRAME_HEADER>() else {
        return Err(format!("{} bytes: a torn frame header", data.len()));
    };
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    let crc = u32::from_le_bytes([c0, c1, c2, c3]);
    let Some(body) = rest.get(..len) else {
        return Err(format!(
            "frame of {len} bytes, {} bytes left: torn",
            rest.len()
        ));
    };
    if crc32c::crc32c(body) != crc {
        return Err("frame CRC mismatch".to_string());
    }
    let entry = Entry::parse_from_bytes(body).map_err(|e| format!("entry does not decode: {e}"))?;
    Ok(Some((entry, FRAME_HEADER + len)))
}

/// `magic`, CRC-32C of `body`, `body`.
pub(crate) fn seal(magic: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of a sealed file, or why it is not one.
pub(crate) fn unseal<'a>(magic: &[u8; 4], data: &'a [u8]) -> Result<&'a [u8], String> {
    let Some((head, body)) = data.split_first_chunk::<8>() else {
        return Err(format!("{} bytes: too short", data.len()));
    };
    let [m0, m1, m2, m3, c0, c1, c2, c3] = *head;
    if [m0, m1, m2, m3] != *magic {
        return Err("bad magic".to_string());
    }
    if crc32c::crc32c(body) != u32::from_le_bytes([c0, c1, c2, c3]) {
        return Err("CRC mismatch".to_string());
    }
    Ok(body)
}

/// Replaces `dir/name` with `data` so that a crash leaves either the old or the new file:
/// write `name.tmp`, fsync it, rename over `name`, fsync the directory.
pub(crate) fn write_atomic(fs: &mut dyn Fs, dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let path = dir.join(name);
    fs.write(&tmp, data)
        .map_err(|e| Error::io("write", &tmp, e))?;
    fs.sync(&tmp).map_err(|e| Error::io("sync", &tmp, e))?;
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &path, e))?;
    fs.sync_dir(dir).map_err(|e| Error::io("sync_dir", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(
            classify(&segment_name(3, 17)),
            FileKind::Segment {
                generation: 3,
                first_index: 17
            }
        );
        assert_eq!(
            classify(&snapshot_name(9, 2)),
            FileKind::Snapshot { index: 9, term: 2 }
        );
        assert_eq!(classify("raft-state"), FileKind::State);
        assert_eq!(classify("raft-state.tmp"), FileKind::Temp);
        assert_eq!(classify("x-y.log"), FileKind::Unknown);
        assert_eq!(
            classify(&segment_name(1, 0)),
            FileKind::Unknown,
            "logs start at 1"
        );
    }

    #[test]
    fn frames_reject_torn_and_corrupt_input() {
        let e = Entry {
            index: 7,
            term: 2,
            data: bytes::Bytes::from_static(b"abc"),
            ..Default::default()
        };
        let mut buf = Vec::new();
        encode_frame(&e, &mut buf).unwrap(); // ok: test
        let (back, len) = decode_frame(&buf).unwrap().unwrap(); // ok: test
        assert_eq!((back.index, back.term, len), (7, 2, buf.len()));
        for cut in 1..buf.len() {
            assert!(decode_frame(&buf[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(!matches!(decode_frame(&bad), Ok(Some((ref x, _))) if *x != e));
        }
        let huge = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert!(decode_frame(&huge).is_err());
    }

    #[test]
    fn sealed_files_detect_damage() {
        let sealed = seal(STATE_MAGIC, b"body");
        assert_eq!(unseal(STATE_MAGIC, &sealed).unwrap(), b"body"); // ok: test
        assert!(unseal(SNAPSHOT_MAGIC, &sealed).is_err());
        let mut bad = sealed.clone();
        bad[9] ^= 1;
        assert!(unseal(STATE_MAGIC, &bad).is_err());
        assert!(unseal(STATE_MAGIC, &sealed[..5]).is_err());
    }
}
