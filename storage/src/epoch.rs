//! The leader-epoch cache of one partition (Kafka's LeaderEpochFileCache, KIP-101): the
//! ordered list of (leader epoch, start offset), the first offset written under each
//! epoch, strictly increasing in both. Kept in memory in `LogState` and persisted as
//! `leader-epoch-checkpoint` in the partition directory, in Kafka's text format:
//!
//! ```text
//!  0            version
//!  2            number of entries
//!  0 0          epoch start-offset
//!  3 1200
//! ```
//!
//! Durability rule: the flusher writes the checkpoint (temp file, fsync, rename, directory
//! fsync, on a blocking helper) before it writes batches whenever the cache changed since
//! the last write, so every batch on disk has its epoch in the file. The file may hold
//! stale entries (past a crash-shortened or truncated log end, before the log start): open
//! repairs them as Kafka's loader does (`truncate_from_end(log end)`, then
//! `truncate_from_start(log start)`).
//!
//! Also here: the truncation intent file (`.truncate-intent`), written durably before a
//! truncation changes any file and removed after; open finishes a truncation it finds.

use std::path::{Path, PathBuf};

pub(crate) const CHECKPOINT: &str = "leader-epoch-checkpoint";
const CHECKPOINT_TMP: &str = "leader-epoch-checkpoint.tmp";
const CHECKPOINT_VERSION: u32 = 0;
pub(crate) const INTENT: &str = ".truncate-intent";
const INTENT_TMP: &str = ".truncate-intent.tmp";
const INTENT_MAGIC: &[u8; 4] = b"SLT1";
const INTENT_LEN: usize = 4 + 8 + 4;

/// In-memory leader-epoch cache with a change counter for lazy persistence. Owned by the
/// log's shard (inside `LogState`); never crosses cores.
#[derive(Clone, Debug, Default)]
pub(crate) struct EpochCache {
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(i32, i64)>,
    /// Bumped on every change; `persisted` is the value the checkpoint file reflects.
    gen: u64,
    persisted: u64,
}

impl EpochCache {
    /// A cache loaded from the checkpoint file (clean: nothing to write yet).
    pub(crate) fn from_entries(entries: Vec<(i32, i64)>) -> EpochCache {
        EpochCache {
            entries,
            gen: 0,
            persisted: 0,
        }
    }

    pub(crate) fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub(crate) fn latest(&self) -> Option<i32> {
        self.entries.last().map(|e| e.0)
    }

    fn changed(&mut self) {
        self.gen += 1;
    }

    /// Marks the cache as needing a write (e.g. the file on disk could not be read).
    pub(crate) fn mark_dirty(&mut self) {
        self.changed();
    }

    /// Record that `epoch` starts at `start` (Kafka's `assign`): nothing if the latest
    /// entry is this epoch from an offset <= `start`; otherwise entries that would break
    /// monotonicity (epoch >= `epoch` or start >= `start`) are dropped from the end first.
    /// Negative epochs (batches written by a client, never stamped) are not recorded.
    pub(crate) fn assign(&mut self, epoch: i32, start: i64) {
        if epoch < 0 || start < 0 {
            return;
        }
        if let Some(&(e, s)) = self.entries.last() {
            if e == epoch && s <= start {
                return;
            }
        }
        let mut removed = Vec::new();
        while let Some(&(e, s)) = self.entries.last() {
            if e < epoch && s < start {
                break;
            }
            removed.push((e, s));
            self.entries.pop();
        }
        // dropping an entry that starts where the new one does only replaces an epoch that
        // never wrote anything; anything else is a non-monotonic epoch sequence
        if removed.len() > 1 || removed.first().is_some_and(|&(_, s)| s != start) {
            tracing::warn!(
                epoch,
                start,
                ?removed,
                "leader epoch entry out of order: later entries dropped"
            );
        }
        self.entries.push((epoch, start));
        self.changed();
    }

    /// Remove entries with start offset >= `end` (the log was cut at `end`).
    pub(crate) fn truncate_from_end(&mut self, end: i64) {
        let before = self.entries.len();
        while self.entries.last().is_some_and(|&(_, s)| s >= end) {
            self.entries.pop();
        }
        if self.entries.len() != before {
            self.changed();
        }
    }

    /// Drop entries wholly before `start` (retention moved the log start): entries with
    /// start <= `start` go, and the last of them comes back starting at `start`.
    pub(crate) fn truncate_from_start(&mut self, start: i64) {
        let n = self.entries.partition_point(|&(_, s)| s <= start);
        if n == 0 {
            return;
        }
        let epoch = self.entries[n - 1].0;
        if n == 1 && self.entries[0].1 == start {
            return;
        }
        self.entries.drain(..n);
        self.entries.insert(0, (epoch, start));
        self.changed();
    }

    pub(crate) fn clear(&mut self) {
        if !self.entries.is_empty() {
            self.entries.clear();
            self.changed();
        }
    }

    /// Kafka's OffsetsForLeaderEpoch answer for `requested` on a log ending at `log_end`:
    /// (the largest epoch <= `requested`, the start offset of the next higher epoch, or
    /// `log_end` when that epoch is the latest). None is UNDEFINED (-1, -1): `requested`
    /// is negative, or the cache is empty. A `requested` below the first epoch answers
    /// (`requested`, start of the first epoch), as Kafka does (the data before it is gone
    /// or was written before epochs were recorded). A `requested` above the latest epoch
    /// answers (latest, `log_end`): the cache records an epoch at its first write, so a
    /// leader that has not written in its current epoch yet answers what Kafka's leader
    /// (which records the epoch when it takes over) answers for the epochs in between.
    pub(crate) fn end_offset_for(&self, requested: i32, log_end: i64) -> Option<(i32, i64)> {
        if requested < 0 {
            return None;
        }
        let (latest, _) = *self.entries.last()?;
        if requested >= latest {
            return Some((latest, log_end));
        }
        // the first entry with epoch > requested exists (latest > requested)
        let hi = self.entries.partition_point(|&(e, _)| e <= requested);
        let next_start = self.entries[hi].1;
        match hi.checked_sub(1) {
            Some(lo) => Some((self.entries[lo].0, next_start)),
            None => Some((requested, next_start)),
        }
    }

    /// Changed since the file was last written.
    pub(crate) fn is_dirty(&self) -> bool {
        self.gen != self.persisted
    }

    /// The entries and change counter to write, if the file is behind.
    pub(crate) fn snapshot_if_dirty(&self) -> Option<(u64, Vec<(i32, i64)>)> {
        self.is_dirty().then(|| (self.gen, self.entries.clone()))
    }

    /// The file now reflects change `gen`.
    pub(crate) fn mark_persisted(&mut self, gen: u64) {
        if gen > self.persisted {
            self.persisted = gen;
        }
    }
}

/// The checkpoint file's text.
pub(crate) fn encode(entries: &[(i32, i64)]) -> String {
    let mut s = format!("{CHECKPOINT_VERSION}\n{}\n", entries.len());
    for (e, o) in entries {
        s.push_str(&format!("{e} {o}\n"));
    }
    s
}

/// Parse the checkpoint file; Err says why it is unusable. Entries must be non-negative
/// and strictly increasing in epoch and start offset.
pub(crate) fn decode(b: &[u8]) -> Result<Vec<(i32, i64)>, String> {
    let text = std::str::from_utf8(b).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    let version: u32 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("missing version")?;
    if version != CHECKPOINT_VERSION {
        return Err(format!("unknown version {version}"));
    }
    let n: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("missing entry count")?;
    let mut out: Vec<(i32, i64)> = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let line = lines.next().ok_or("fewer entries than counted")?;
        let mut it = line.split_whitespace();
        let (Some(e), Some(o), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!("bad entry line {line:?}"));
        };
        let e: i32 = e.parse().map_err(|_| format!("bad epoch {e:?}"))?;
        let o: i64 = o.parse().map_err(|_| format!("bad offset {o:?}"))?;
        if e < 0 || o < 0 || out.last().is_some_and(|&(le, lo)| e <= le || o <= lo) {
            return Err(format!("entry ({e}, {o}) out of order"));
        }
        out.push((e, o));
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return Err("more entries than counted".into());
    }
    Ok(out)
}

/// Persist the cache as `leader-epoch-checkpoint`, atomically, on a blocking helper.
pub(crate) async fn write_checkpoint(
    dir: PathBuf,
    entries: Vec<(i32, i64)>,
) -> std::io::Result<()> {
    let text = encode(&entries);
    crate::blocking::run(&dir.clone(), move || {
        crate::blocking::write_atomic(&dir, CHECKPOINT_TMP, CHECKPOINT, text.as_bytes())
    })
    .await
}

/// The checkpoint file as read at open: None if absent, Some(Err(why)) if unusable.
pub(crate) type CheckpointRead = Option<Result<Vec<(i32, i64)>, String>>;

/// Read the checkpoint file (blocking).
pub(crate) fn read_checkpoint(dir: &Path) -> std::io::Result<CheckpointRead> {
    match std::fs::read(dir.join(CHECKPOINT)) {
        Ok(b) => Ok(Some(decode(&b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn encode_intent(cut: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(INTENT_LEN);
    v.extend_from_slice(INTENT_MAGIC);
    v.extend_from_slice(&cut.to_be_bytes());
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_be_bytes());
    v
}

pub(crate) fn decode_intent(b: &[u8]) -> Option<i64> {
    if b.len() != INTENT_LEN || &b[..4] != INTENT_MAGIC {
        return None;
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&b[12..16]);
    if crc32c::crc32c(&b[..12]) != u32::from_be_bytes(crc) {
        return None;
    }
    let mut o = [0u8; 8];
    o.copy_from_slice(&b[4..12]);
    Some(i64::from_be_bytes(o)).filter(|&o| o >= 0)
}

/// Durably record that the log is being cut at `cut` (a batch boundary), before any file
/// changes: a crash from here on recovers to the cut log.
pub(crate) async fn write_intent(dir: PathBuf, cut: i64) -> std::io::Result<()> {
    let data = encode_intent(cut);
    crate::blocking::run(&dir.clone(), move || {
        crate::blocking::write_atomic(&dir, INTENT_TMP, INTENT, &data)
    })
    .await
}

/// Durably remove the truncation intent (the truncation is complete on disk).
pub(crate) async fn remove_intent(dir: PathBuf) -> std::io::Result<()> {
    crate::blocking::run(&dir.clone(), move || {
        match std::fs::remove_file(dir.join(INTENT)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        crate::blocking::sync_dir_now(&dir)
    })
    .await
}

/// Read the truncation intent (blocking): None if absent; Some(None) if unreadable.
pub(crate) fn read_intent(dir: &Path) -> std::io::Result<Option<Option<i64>>> {
    match std::fs::read(dir.join(INTENT)) {
        Ok(b) => Ok(Some(decode_intent(&b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(e: &[(i32, i64)]) -> EpochCache {
        EpochCache::from_entries(e.to_vec())
    }

    #[test]
    fn end_offset_for_epoch_table() {
        let c = cache(&[(1, 10), (3, 30), (6, 60)]);
        let leo = 80;
        for (req, want) in [
            (-1, None),          // UNDEFINED requested
            (-5, None),          // any negative epoch
            (0, Some((0, 10))),  // below the first: (requested, first start)
            (1, Some((1, 30))),  // exact, not latest: next epoch's start
            (2, Some((1, 30))),  // gap: largest epoch <= requested
            (3, Some((3, 60))),  // exact
            (5, Some((3, 60))),  // gap below the latest
            (6, Some((6, leo))), // latest: the log end
            (9, Some((6, leo))), // above the latest: latest and the log end
        ] {
            assert_eq!(c.end_offset_for(req, leo), want, "requested {req}");
        }
        assert_eq!(cache(&[]).end_offset_for(0, 5), None);
        assert_eq!(cache(&[]).end_offset_for(-1, 5), None);
        assert_eq!(cache(&[(0, 0)]).end_offset_for(0, 5), Some((0, 5)));
    }

    #[test]
    fn assign_is_monotonic_like_kafka() {
        let mut c = EpochCache::default();
        c.assign(-1, 0); // unstamped client batch: ignored
        assert!(c.entries().is_empty());
        c.assign(0, 0);
        c.assign(0, 5); // same epoch, later batch: no change
        c.assign(2, 10);
        assert_eq!(c.entries(), &[(0, 0), (2, 10)]);
        assert!(c.snapshot_if_dirty().is_some());
        let (g, _) = c.snapshot_if_dirty().unwrap();
        c.mark_persisted(g);
        assert!(c.snapshot_if_dirty().is_none());
        c.assign(2, 10);
        assert!(c.snapshot_if_dirty().is_none());
        // an older epoch at a later offset drops the conflicting entries
        c.assign(1, 20);
        assert_eq!(c.entries(), &[(0, 0), (1, 20)]);
        // the same epoch from an earlier offset replaces its start
        c.assign(1, 15);
        assert_eq!(c.entries(), &[(0, 0), (1, 15)]);
        assert!(c.snapshot_if_dirty().is_some());
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = cache(&[(1, 10), (3, 30), (6, 60)]);
        c.truncate_from_end(61);
        assert_eq!(c.entries().len(), 3);
        assert!(c.snapshot_if_dirty().is_none());
        c.truncate_from_end(60);
        assert_eq!(c.entries(), &[(1, 10), (3, 30)]);
        c.truncate_from_start(10);
        assert_eq!(c.entries(), &[(1, 10), (3, 30)]);
        c.truncate_from_start(35);
        assert_eq!(c.entries(), &[(3, 35)]);
        c.truncate_from_end(0);
        assert!(c.entries().is_empty());
        c.truncate_from_start(100);
        assert!(c.entries().is_empty());
    }

    #[test]
    fn checkpoint_text_roundtrip_and_rejects_damage() {
        let e = vec![(0, 0), (4, 17), (9, 1 << 40)];
        let t = encode(&e);
        assert_eq!(t, "0\n3\n0 0\n4 17\n9 1099511627776\n");
        assert_eq!(decode(t.as_bytes()).unwrap(), e);
        assert_eq!(decode(b"0\n0\n").unwrap(), vec![]);
        for bad in [
            &b""[..],
            b"1\n0\n",
            b"0\n2\n0 0\n",
            b"0\n1\n0 0\n1 1\n",
            b"0\n2\n3 10\n2 20\n",
            b"0\n2\n3 10\n4 10\n",
            b"0\n1\n-1 0\n",
            b"0\n1\n0 x\n",
            b"0\n1\n0 0 0\n",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn intent_roundtrip_and_rejects_damage() {
        let b = encode_intent(12345);
        assert_eq!(decode_intent(&b), Some(12345));
        let mut bad = b.clone();
        bad[6] ^= 1;
        assert_eq!(decode_intent(&bad), None);
        assert_eq!(decode_intent(&b[..10]), None);
        assert_eq!(decode_intent(&encode_intent(-3)), None);
    }
}
