//! The log cleaner's checkpoint of one log (`CleanPoint`, held in `LogState`): the offset
//! below which the log is clean (Kafka's cleaner-offset-checkpoint entry for the
//! partition) and, for tombstones, when each clean range was first cleaned. Persisted as
//! `cleaner-offset-checkpoint` in the partition directory (temp file, fsync, rename,
//! directory fsync), in a text format of its own:
//!
//! ```text
//!  0                  version
//!  5000               clean offset: every offset below it has been cleaned
//!  2                  number of first-clean entries
//!  3000 1700000000000 offsets below 3000 were first cleaned at this time (ms)
//!  5000 1700000900000 offsets in [3000, 5000) at this one
//!  tombstones 1700086400000   (optional) when the first tombstone kept may go
//! ```
//!
//! Tombstones follow Kafka's KIP-534 rule: one stays for `delete.retention.ms` after the
//! cleaning pass that first passed over it. Kafka writes that deadline into the batch
//! (base timestamp and an attribute bit); here batches keep their header fields, and the
//! deadline comes from the first-clean time of the tombstone's offset. Merging two
//! adjacent entries into the later one only keeps tombstones longer, so the list is kept
//! short that way. Owned by the log's shard; never crosses cores.

use std::path::Path;

pub(crate) const FILE: &str = "cleaner-offset-checkpoint";
const TMP: &str = "cleaner-offset-checkpoint.tmp";
const VERSION: u32 = 0;
/// First-clean entries kept; more are merged (pairs closest in time first).
const MAX_ENTRIES: usize = 64;

/// See the module comment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CleanPoint {
    /// Every offset below this has been cleaned (-1: nothing yet, the log start).
    offset: i64,
    /// (end, time): offsets below `end` (and at or above the previous entry's end) were
    /// first cleaned at `time`. Both increasing; the last end is `offset`.
    first_cleaned: Vec<(i64, i64)>,
    /// When the earliest tombstone the last pass kept may go (KIP-534: a pass then runs
    /// even with nothing dirty).
    tombstones_expire: Option<i64>,
    /// Bumped on every change; `persisted` is what the file holds.
    gen: u64,
    persisted: u64,
}

impl CleanPoint {
    /// The checkpoint of a log never cleaned.
    pub(crate) fn new() -> CleanPoint {
        CleanPoint {
            offset: -1,
            ..Default::default()
        }
    }

    /// Every offset below this is clean (never below `log_start`).
    pub(crate) fn offset(&self, log_start: i64) -> i64 {
        self.offset.max(log_start)
    }

    /// When the cleaner first passed over `offset`; None if it has not.
    pub(crate) fn first_cleaned_at(&self, offset: i64) -> Option<i64> {
        if offset >= self.offset {
            return None;
        }
        let i = self
            .first_cleaned
            .partition_point(|&(end, _)| end <= offset);
        self.first_cleaned.get(i).map(|&(_, t)| t)
    }

    /// When the earliest tombstone kept by the last pass may go.
    pub(crate) fn tombstones_expire(&self) -> Option<i64> {
        self.tombstones_expire
    }

    /// A pass cleaned everything below `to` at `now_ms`, keeping tombstones of which the
    /// first may go at `tombstones_expire`.
    pub(crate) fn advance(&mut self, to: i64, now_ms: i64, tombstones_expire: Option<i64>) {
        if tombstones_expire != self.tombstones_expire {
            self.tombstones_expire = tombstones_expire;
            self.gen += 1;
        }
        if to <= self.offset {
            return;
        }
        let now = self
            .first_cleaned
            .last()
            .map_or(now_ms, |&(_, t)| now_ms.max(t));
        self.first_cleaned.push((to, now));
        self.offset = to;
        while self.first_cleaned.len() > MAX_ENTRIES {
            // ok: more than MAX_ENTRIES >= 2 entries, so a pair exists
            let i = (0..self.first_cleaned.len() - 1)
                .min_by_key(|&i| self.first_cleaned[i + 1].1 - self.first_cleaned[i].1)
                .unwrap_or(0);
            self.first_cleaned.remove(i);
        }
        self.gen += 1;
    }

    /// The log was cut at `end`: nothing at or past it is clean (what stays below it keeps
    /// its first-clean time).
    pub(crate) fn truncate_to(&mut self, end: i64) {
        if self.offset <= end {
            return;
        }
        self.offset = end;
        let keep = self.first_cleaned.partition_point(|&(e, _)| e < end);
        self.first_cleaned.truncate(keep + 1);
        if let Some(last) = self.first_cleaned.last_mut().filter(|l| l.0 > end) {
            last.0 = end;
        }
        self.gen += 1;
    }

    /// Entries wholly below `start` (retention moved the log start) are dropped.
    pub(crate) fn drop_before(&mut self, start: i64) {
        let n = self.first_cleaned.partition_point(|&(e, _)| e <= start);
        if n > 0 {
            self.first_cleaned.drain(..n);
            self.gen += 1;
        }
    }

    /// The file's contents and change counter, if the file is behind.
    pub(crate) fn snapshot_if_dirty(&self) -> Option<(u64, Vec<u8>)> {
        (self.gen != self.persisted).then(|| (self.gen, self.encode()))
    }

    /// The file now reflects change `gen`.
    pub(crate) fn mark_persisted(&mut self, gen: u64) {
        self.persisted = self.persisted.max(gen);
    }

    fn encode(&self) -> Vec<u8> {
        let mut s = format!("{VERSION}\n{}\n{}\n", self.offset, self.first_cleaned.len());
        for (e, t) in &self.first_cleaned {
            s.push_str(&format!("{e} {t}\n"));
        }
        if let Some(t) = self.tombstones_expire {
            s.push_str(&format!("tombstones {t}\n"));
        }
        s.into_bytes()
    }

    /// Parse the file; Err says why it is unusable.
    fn decode(b: &[u8]) -> Result<CleanPoint, String> {
        let text = std::str::from_utf8(b).map_err(|_| "not UTF-8".to_string())?;
        let mut lines = text.lines();
        let mut num = |what: &str| -> Result<i64, String> {
            lines
                .next()
                .and_then(|l| l.trim().parse().ok())
                .ok_or_else(|| format!("missing {what}"))
        };
        if num("version")? != VERSION as i64 {
            return Err("unknown version".into());
        }
        let offset = num("offset")?;
        let n = num("entry count")?;
        let mut first_cleaned: Vec<(i64, i64)> = Vec::new();
        for _ in 0..n.clamp(0, MAX_ENTRIES as i64 + 1) {
            let line = lines.next().ok_or("fewer entries than counted")?;
            let mut it = line.split_whitespace().map(str::parse::<i64>);
            let (Some(Ok(e)), Some(Ok(t)), None) = (it.next(), it.next(), it.next()) else {
                return Err(format!("bad entry line {line:?}"));
            };
            if first_cleaned
                .last()
                .is_some_and(|&(le, lt)| e <= le || t < lt)
            {
                return Err(format!("entry ({e}, {t}) out of order"));
            }
            first_cleaned.push((e, t));
        }
        let mut tombstones_expire = None;
        for line in lines.filter(|l| !l.trim().is_empty()) {
            match line
                .trim()
                .strip_prefix("tombstones ")
                .map(|t| t.trim().parse::<i64>())
            {
                Some(Ok(t)) if tombstones_expire.is_none() => tombstones_expire = Some(t),
                _ => return Err("entry count does not match".into()),
            }
        }
        if n as usize != first_cleaned.len() {
            return Err("entry count does not match".into());
        }
        if first_cleaned.last().is_some_and(|&(e, _)| e != offset) {
            return Err("the last entry does not end at the clean offset".into());
        }
        Ok(CleanPoint {
            offset,
            first_cleaned,
            tombstones_expire,
            gen: 0,
            persisted: 0,
        })
    }

    /// The checkpoint as read at open (blocking), fitted to a log of `[start, end)`: a
    /// clean offset past the end (the log lost data it had cleaned) comes back to the
    /// end and the result is marked for writing. A missing file is a log never cleaned;
    /// an unusable one is logged and dropped (the whole log is cleaned again and
    /// tombstones restart their wait: never earlier than they should go).
    pub(crate) fn load(dir: &Path, start: i64, end: i64) -> std::io::Result<CleanPoint> {
        let mut cp = match std::fs::read(dir.join(FILE)) {
            Ok(b) => CleanPoint::decode(&b).unwrap_or_else(|why| {
                tracing::warn!(dir = %dir.display(), why, "unusable cleaner checkpoint; the log is cleaned from its start");
                let mut cp = CleanPoint::new();
                cp.gen = 1;
                cp
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CleanPoint::new(),
            Err(e) => return Err(e),
        };
        cp.truncate_to(end);
        cp.drop_before(start);
        Ok(cp)
    }
}

/// Persist `data` (from `snapshot_if_dirty`) as the log's checkpoint file, atomically, on
/// a blocking helper.
pub(crate) async fn write(dir: std::path::PathBuf, data: Vec<u8>) -> std::io::Result<()> {
    crate::blocking::run(&dir.clone(), move || {
        crate::blocking::write_atomic(&dir, TMP, FILE, &data)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_clean_times_by_offset_survive_a_round_trip() {
        let mut cp = CleanPoint::new();
        assert_eq!((cp.offset(10), cp.first_cleaned_at(10)), (10, None));
        cp.advance(100, 1000, None);
        cp.advance(250, 2000, None);
        assert_eq!(cp.offset(0), 250);
        assert_eq!(cp.first_cleaned_at(0), Some(1000));
        assert_eq!(cp.first_cleaned_at(99), Some(1000));
        assert_eq!(cp.first_cleaned_at(100), Some(2000));
        assert_eq!(cp.first_cleaned_at(249), Some(2000));
        assert_eq!(cp.first_cleaned_at(250), None);
        let (gen, data) = cp.snapshot_if_dirty().unwrap();
        cp.mark_persisted(gen);
        assert!(cp.snapshot_if_dirty().is_none());
        let back = CleanPoint::decode(&data).unwrap();
        assert_eq!(back.first_cleaned, cp.first_cleaned);
        assert_eq!(back.offset, 250);
        assert!(CleanPoint::decode(b"0\n250\n1\n100 1000\n").is_err());
        assert!(CleanPoint::decode(b"0\n250\n2\n100 1000\n").is_err());
        assert!(CleanPoint::decode(b"7\n").is_err());
        // the tombstone deadline (KIP-534) is kept too
        cp.advance(250, 3000, Some(99_000));
        let (_, data) = cp.snapshot_if_dirty().unwrap();
        let back = CleanPoint::decode(&data).unwrap();
        assert_eq!((back.offset, back.tombstones_expire()), (250, Some(99_000)));
        assert_eq!(back.first_cleaned, cp.first_cleaned);
        assert!(CleanPoint::decode(b"0\n250\n1\n250 1000\ntombstones x\n").is_err());
        assert!(CleanPoint::decode(b"0\n250\n1\n250 1000\ntombstones 1\ntombstones 2\n").is_err());
    }

    #[test]
    fn truncation_and_retention_shrink_the_clean_range() {
        let mut cp = CleanPoint::new();
        cp.advance(100, 1000, None);
        cp.advance(250, 2000, None);
        cp.truncate_to(180);
        assert_eq!(cp.offset(0), 180);
        assert_eq!(cp.first_cleaned_at(150), Some(2000));
        assert_eq!(cp.first_cleaned_at(180), None);
        assert_eq!(cp.first_cleaned_at(50), Some(1000));
        cp.truncate_to(100);
        assert_eq!(cp.first_cleaned, vec![(100, 1000)]);
        cp.truncate_to(40);
        assert_eq!(cp.first_cleaned, vec![(40, 1000)]);
        cp.advance(180, 3000, None);
        cp.drop_before(120);
        assert_eq!(cp.first_cleaned, vec![(180, 3000)]);
        assert_eq!(cp.first_cleaned_at(150), Some(3000));
        assert_eq!(cp.offset(120), 180);
        cp.truncate_to(-1);
        assert_eq!((cp.offset(0), cp.first_cleaned_at(0)), (0, None));
    }

    #[test]
    fn merging_entries_only_delays_tombstones() {
        let mut cp = CleanPoint::new();
        for i in 1..=(MAX_ENTRIES as i64 + 10) {
            cp.advance(i * 10, i * 1000, None);
        }
        assert_eq!(cp.first_cleaned.len(), MAX_ENTRIES);
        for o in 0..cp.offset {
            let t = cp.first_cleaned_at(o).unwrap();
            assert!(t >= (o / 10 + 1) * 1000, "offset {o} first cleaned at {t}");
        }
    }
}
