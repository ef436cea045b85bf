//! Producer-state snapshots (Kafka's `<offset:020>.snapshot` idea, our own format): the
//! producer state of every batch below `offset`, so a rebuild replays only the batch
//! headers after it, however long a transaction has been under way. Written by the
//! flusher for a rolled segment's base once everything below it is durable, and at
//! clean close for the log end; read by the producer-state load (`read.rs`,
//! `load_producers`). A file is only trusted whole (CRC) and only at or
//! below the log end and at or above the log start; open deletes those past the
//! recovered end, truncation those past the cut, retention those below the new log
//! start, and at most `KEEP` newest stay.
//!
//! ```text
//!  "SLPS" | version u16 (1) | offset i64 | producers u32
//!    per producer: id i64 | epoch i16 | coordinator epoch i32 | last timestamp i64 |
//!                  transaction first offset i64 (-1: none) | batches u8 |
//!                  per batch: first seq i32 | last seq i32 | first offset i64 | last offset i64
//!  | completed, maybe unstable transactions u32 | per one: id i64 | first i64 | marker i64
//!  | crc32c u32 of everything before it
//! ```

use crate::producer::{BatchMeta, ProducerEntry, ProducerStates, BATCHES_PER_PRODUCER};
use std::collections::HashMap;

const MAGIC: &[u8; 4] = b"SLPS";
const VERSION: u16 = 1;
/// Snapshots kept per log: the newest this many, and the oldest.
pub(crate) const KEEP: usize = 3;

/// The snapshot file's bytes for `ps`, the state of every batch below `offset`.
pub(crate) fn encode(offset: i64, ps: &ProducerStates) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&VERSION.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    let mut entries: Vec<(i64, &ProducerEntry)> = ps.entries().collect();
    entries.sort_by_key(|e| e.0);
    v.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (pid, e) in entries {
        v.extend_from_slice(&pid.to_be_bytes());
        v.extend_from_slice(&e.epoch.to_be_bytes());
        v.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
        v.extend_from_slice(&e.last_timestamp.to_be_bytes());
        v.extend_from_slice(&e.txn_first.unwrap_or(-1).to_be_bytes());
        v.push(e.batches.len() as u8);
        for b in &e.batches {
            v.extend_from_slice(&b.first_seq.to_be_bytes());
            v.extend_from_slice(&b.last_seq.to_be_bytes());
            v.extend_from_slice(&b.first_offset.to_be_bytes());
            v.extend_from_slice(&b.last_offset.to_be_bytes());
        }
    }
    let unstable: Vec<(i64, i64, i64)> = ps.unstable().collect();
    v.extend_from_slice(&(unstable.len() as u32).to_be_bytes());
    for (pid, first, last) in unstable {
        for x in [pid, first, last] {
            v.extend_from_slice(&x.to_be_bytes());
        }
    }
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_be_bytes());
    v
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let s = self.b.get(self.pos..self.pos + N)?;
        self.pos += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Some(a)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take::<8>().map(i64::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take::<4>().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_be_bytes)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take::<2>().map(i16::from_be_bytes)
    }
}

/// (offset, state) of a snapshot file's bytes; None unless whole and intact.
pub(crate) fn decode(b: &[u8]) -> Option<(i64, ProducerStates)> {
    let body_len = b.len().checked_sub(4)?;
    let (body, crc) = b.split_at(body_len);
    if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut c = Cursor { b: body, pos: 0 };
    if &c.take::<4>()? != MAGIC || u16::from_be_bytes(c.take::<2>()?) != VERSION {
        return None;
    }
    let offset = c.i64()?;
    let n = c.u32()? as usize;
    let mut map = HashMap::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let pid = c.i64()?;
        let mut e = ProducerEntry::new(c.i16()?);
        e.coordinator_epoch = c.i32()?;
        e.last_timestamp = c.i64()?;
        let first = c.i64()?;
        e.txn_first = (first >= 0).then_some(first);
        let nb = c.take::<1>()?[0] as usize;
        if nb > BATCHES_PER_PRODUCER {
            return None;
        }
        for _ in 0..nb {
            e.batches.push_back(BatchMeta {
                first_seq: c.i32()?,
                last_seq: c.i32()?,
                first_offset: c.i64()?,
                last_offset: c.i64()?,
            });
        }
        map.insert(pid, e);
    }
    let m = c.u32()? as usize;
    let mut unstable = Vec::with_capacity(m.min(1 << 16));
    for _ in 0..m {
        unstable.push((c.i64()?, c.i64()?, c.i64()?));
    }
    if c.pos != body.len() {
        return None;
    }
    Some((offset, ProducerStates::from_parts(map, unstable)))
}

/// Reads and decodes the snapshot for `offset` (blocking: run it on a blocking helper).
/// None if missing, damaged or for another offset.
pub(crate) fn read(dir: &std::path::Path, offset: i64) -> Option<ProducerStates> {
    let b = std::fs::read(crate::txn::snapshot_path(dir, offset)).ok()?;
    decode(&b).filter(|(o, _)| *o == offset).map(|(_, ps)| ps)
}

/// Writes the snapshot of `ps` for `offset` atomically (temp file, fsync, rename,
/// directory fsync) on a blocking helper.
pub(crate) async fn write(
    dir: &std::path::Path,
    offset: i64,
    ps: &ProducerStates,
) -> std::io::Result<()> {
    let data = encode(offset, ps);
    let key = dir;
    let dir = dir.to_path_buf();
    crate::blocking::run(key, move || {
        let name = format!("{offset:020}.snapshot");
        crate::blocking::write_atomic(&dir, ".snapshot.tmp", &name, &data)
    })
    .await
}

/// Removes the snapshots for `offsets` on a blocking helper (missing ones are fine),
/// then fsyncs the directory.
pub(crate) async fn remove(dir: &std::path::Path, offsets: Vec<i64>) -> std::io::Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let key = dir;
    let dir = dir.to_path_buf();
    crate::blocking::run(key, move || {
        for o in offsets {
            match std::fs::remove_file(crate::txn::snapshot_path(&dir, o)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        crate::blocking::sync_dir_now(&dir)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::batch::{EndTxnMarker, RecordBatchHeader};

    fn hdr(pid: i64, base: i64, n: i32, attributes: i16) -> RecordBatchHeader {
        RecordBatchHeader {
            base_offset: base,
            batch_length: 49,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,
            attributes,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: base * 10,
            producer_id: pid,
            producer_epoch: 2,
            base_sequence: base as i32,
            records_count: n,
        }
    }

    #[test]
    fn a_snapshot_keeps_transactions_and_rejects_damage() {
        let mut ps = ProducerStates::default();
        ps.replay(&hdr(1, 0, 3, 0x10), None);
        ps.replay(&hdr(2, 3, 2, 0x10), None);
        ps.replay(&hdr(3, 5, 1, 0), None);
        let m = EndTxnMarker {
            commit: false,
            coordinator_epoch: 9,
        };
        assert!(ps.replay(&hdr(2, 6, 1, 0x30), Some(m)).is_some());
        let b = encode(7, &ps);
        let (o, back) = decode(&b).unwrap();
        assert_eq!(o, 7);
        assert_eq!(back.infos(), ps.infos());
        assert_eq!(back.first_unstable(i64::MIN), Some(0));
        assert_eq!(back.first_unstable(7), Some(0));
        assert_eq!(back.unstable().collect::<Vec<_>>(), vec![(2, 3, 6)]);
        assert_eq!(back.get(2).unwrap().coordinator_epoch, 9);
        for cut in [0, 5, b.len() - 1] {
            assert!(decode(&b[..cut]).is_none());
        }
        let mut bad = b.clone();
        bad[20] ^= 1;
        assert!(decode(&bad).is_none());
    }
}
