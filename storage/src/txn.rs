//! Transaction bookkeeping of one log that is not producer state: the aborted
//! transactions index (Kafka's `.txnindex`, one per segment) and the public types of the
//! transactional API. An entry is written for every abort marker of a producer that had a
//! transaction under way, into the segment holding the marker (its last offset):
//!
//! ```text
//!  <base:020>.txnindex: entries of 34 bytes, big endian, in marker order
//!    version i16 (0) | producerId i64 | firstOffset i64 | lastOffset i64 | lastStableOffset i64
//! ```
//!
//! The active segment's entries live in memory (`SegTxn::Loaded`) and reach a file at
//! seal and at clean close; a sealed segment's file is read on first need through a
//! blocking helper and kept (entries are rare and small). A segment without aborted
//! transactions has no file. Owned by the partition's shard; never crosses cores.

use std::path::{Path, PathBuf};

/// Bytes of one `.txnindex` entry.
pub(crate) const TXN_ENTRY_LEN: usize = 34;

/// One aborted transaction, as Fetch (read_committed) answers it: the consumer drops the
/// producer's transactional records from `first_offset` up to the abort marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
}

/// One producer as DescribeProducers reports it (`PartitionLog::producers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerInfo {
    pub producer_id: i64,
    pub epoch: i16,
    /// Sequence of the producer's last record in the log (-1 if only markers are known).
    pub last_sequence: i32,
    /// Max timestamp of the producer's last batch or marker (-1 if unknown).
    pub last_timestamp: i64,
    /// Epoch of the coordinator that wrote the producer's last marker (-1 if none).
    pub coordinator_epoch: i32,
    /// First offset of the producer's transaction under way, -1 if none.
    pub current_txn_start_offset: i64,
}

/// One `.txnindex` entry (Kafka's AbortedTxn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AbortedEntry {
    pub(crate) producer_id: i64,
    pub(crate) first_offset: i64,
    /// The abort marker's offset.
    pub(crate) last_offset: i64,
    /// The last stable offset once this transaction ended: the first offset of the
    /// earliest other transaction still under way, else the marker's offset + 1. A fetch
    /// looking for aborted transactions starting below some offset stops at an entry
    /// whose value reaches it (no later abort can start earlier).
    pub(crate) last_stable_offset: i64,
}

impl AbortedEntry {
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&0i16.to_be_bytes());
        for v in [
            self.producer_id,
            self.first_offset,
            self.last_offset,
            self.last_stable_offset,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// A segment's aborted-transaction entries (owned by its `Segment`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SegTxn {
    /// In memory, complete (the active segment's always are).
    Loaded(Vec<AbortedEntry>),
    /// In the segment's `.txnindex` file, this many (> 0), not read yet.
    OnDisk(usize),
    /// Not known: recovery rescanned a segment holding control batches, or its file is
    /// damaged. Open rebuilds them from the producer-state replay before the log is used.
    Unknown,
}

impl Default for SegTxn {
    fn default() -> Self {
        SegTxn::Loaded(Vec::new())
    }
}

impl SegTxn {
    /// The entries, if in memory.
    pub(crate) fn loaded(&self) -> Option<&[AbortedEntry]> {
        match self {
            SegTxn::Loaded(v) => Some(v),
            _ => None,
        }
    }
    /// No entry at all (known).
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, SegTxn::Loaded(v) if v.is_empty())
    }
}

pub(crate) fn txnindex_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.txnindex"))
}

pub(crate) fn encode_entries(entries: &[AbortedEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * TXN_ENTRY_LEN);
    for e in entries {
        e.encode_into(&mut out);
    }
    out
}

/// The entries of a `.txnindex` file's bytes; None if its length is not a whole number
/// of entries or an entry has another version (a damaged file: rebuilt from the log).
pub(crate) fn decode_entries(b: &[u8]) -> Option<Vec<AbortedEntry>> {
    if !b.len().is_multiple_of(TXN_ENTRY_LEN) {
        return None;
    }
    let i64_at = |c: &[u8], at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&c[at..at + 8]);
        i64::from_be_bytes(a)
    };
    b.chunks_exact(TXN_ENTRY_LEN)
        .map(|c| {
            (c[0] == 0 && c[1] == 0).then(|| AbortedEntry {
                producer_id: i64_at(c, 2),
                first_offset: i64_at(c, 10),
                last_offset: i64_at(c, 18),
                last_stable_offset: i64_at(c, 26),
            })
        })
        .collect()
}

/// Reads segment `base`'s `.txnindex` (blocking: run it on a blocking helper). A
/// missing file means no entries.
pub(crate) fn read_entries(dir: &Path, base: i64) -> std::io::Result<Option<Vec<AbortedEntry>>> {
    match std::fs::read(txnindex_path(dir, base)) {
        Ok(b) => Ok(decode_entries(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(Vec::new())),
        Err(e) => Err(e),
    }
}

/// Replace segment `base`'s `.txnindex` by `entries` atomically (temp file, fsync,
/// rename, directory fsync, on a blocking helper), or remove it when there are none:
/// a crash leaves the old file or the new one, never a torn one.
pub(crate) async fn write_file(
    dir: &Path,
    base: i64,
    entries: &[AbortedEntry],
) -> std::io::Result<()> {
    let key = dir;
    let dir = dir.to_path_buf();
    let data = encode_entries(entries);
    crate::blocking::run(key, move || {
        let name = format!("{base:020}.txnindex");
        if data.is_empty() {
            match std::fs::remove_file(dir.join(&name)) {
                Ok(()) => crate::blocking::sync_dir_now(&dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        } else {
            crate::blocking::write_atomic(&dir, ".txnindex.tmp", &name, &data)
        }
    })
    .await
}

/// The producer-state snapshot for offset `offset` (`producer.rs` writes and reads it).
pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

/// What a directory holds besides segments, for open: snapshot offsets (sorted) and the
/// (segment base, length) of every `.txnindex` file.
pub(crate) type TxnFiles = (Vec<i64>, Vec<(i64, u64)>);

/// Lists a log directory's `TxnFiles` (blocking).
pub(crate) fn list_txn_files(dir: &Path) -> std::io::Result<TxnFiles> {
    let mut snaps = Vec::new();
    let mut idx = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let parse = |stem: &str| {
            (stem.len() == 20)
                .then(|| stem.parse::<i64>().ok())
                .flatten()
        };
        if let Some(o) = name.strip_suffix(".snapshot").and_then(parse) {
            snaps.push(o);
        } else if let Some(b) = name.strip_suffix(".txnindex").and_then(parse) {
            idx.push((b, e.metadata()?.len()));
        }
    }
    snaps.sort_unstable();
    idx.sort_unstable();
    Ok((snaps, idx))
}

/// The aborted transactions among `entries` that Fetch returns for `[from, upper)`:
/// marker at or after `from`, first offset before `upper`. Returns true once an entry's
/// last stable offset reaches `upper`: no later abort can start before `upper`.
pub(crate) fn collect(
    entries: &[AbortedEntry],
    from: i64,
    upper: i64,
    out: &mut Vec<AbortedTxn>,
) -> bool {
    let mut done = false;
    for e in entries {
        if e.last_offset >= from && e.first_offset < upper {
            out.push(AbortedTxn {
                producer_id: e.producer_id,
                first_offset: e.first_offset,
            });
        }
        done |= e.last_stable_offset >= upper;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txnindex_entries_are_kafkas_34_bytes() {
        let e = AbortedEntry {
            producer_id: 7,
            first_offset: 10,
            last_offset: 20,
            last_stable_offset: 21,
        };
        let b = encode_entries(&[e, e]);
        assert_eq!(b.len(), 68);
        assert_eq!(&b[..2], &[0, 0]);
        assert_eq!(&b[2..10], &7i64.to_be_bytes());
        assert_eq!(decode_entries(&b), Some(vec![e, e]));
        assert_eq!(decode_entries(&b[..40]), None);
        let mut v1 = b.clone();
        v1[1] = 1;
        assert_eq!(decode_entries(&v1), None);
    }

    #[test]
    fn collection_stops_once_nothing_earlier_can_follow() {
        let e = |pid, first, last, lso| AbortedEntry {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        };
        let mut out = Vec::new();
        let entries = [e(1, 0, 5, 3), e(2, 3, 9, 10), e(3, 12, 14, 15)];
        // the last entry's last stable offset (15) reaches 13: nothing later can matter
        assert!(collect(&entries, 6, 13, &mut out));
        assert_eq!(
            out,
            vec![
                AbortedTxn {
                    producer_id: 2,
                    first_offset: 3
                },
                AbortedTxn {
                    producer_id: 3,
                    first_offset: 12
                }
            ]
        );
        out.clear();
        assert!(!collect(&entries, 6, 16, &mut out));
        assert_eq!(out.len(), 2);
    }
}
