//! Sparse per-segment indexes, in memory and on disk. `.index`: (relative offset u32,
//! position u32) big-endian, strictly increasing in both; `.timeindex`: (max timestamp i64,
//! relative offset u32), timestamps non-decreasing. A sparse index with entries missing is
//! still correct (lookups fall back to an earlier position), so decoding keeps the longest
//! valid prefix and the log can always rebuild both files by scanning the segment.

/// Offset index of one segment: largest entry <= target gives a scan start position.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct OffsetIndex {
    pub(crate) entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Append an entry if it keeps the index strictly increasing.
    pub(crate) fn push(&mut self, rel: u32, pos: u32) {
        if self.entries.last().is_none_or(|&(r, p)| rel > r && pos > p) {
            self.entries.push((rel, pos));
        }
    }

    /// (relative offset, position) of the last entry with rel <= target; (0, 0) if none.
    pub(crate) fn lookup(&self, rel: u32) -> (u32, u32) {
        let i = self.entries.partition_point(|&(r, _)| r <= rel);
        if i == 0 {
            (0, 0)
        } else {
            self.entries[i - 1]
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 8);
        for &(r, p) in &self.entries {
            out.extend_from_slice(&r.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Decode, keeping the longest valid prefix (increasing, rel < max_rel, pos < max_pos).
    pub(crate) fn decode(buf: &[u8], max_rel: u64, max_pos: u64) -> OffsetIndex {
        let mut idx = OffsetIndex::default();
        for c in buf.chunks_exact(8) {
            let r = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            let p = u32::from_be_bytes([c[4], c[5], c[6], c[7]]);
            let ok = (r as u64) < max_rel
                && (p as u64) < max_pos
                && idx.entries.last().is_none_or(|&(lr, lp)| r > lr && p > lp);
            if !ok {
                break;
            }
            idx.entries.push((r, p));
        }
        idx
    }
}

/// Time index of one segment: running max timestamp at some batch ends.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TimeIndex {
    pub(crate) entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Record that the max timestamp up to the batch ending at `rel` is `ts`, if it grew.
    pub(crate) fn push(&mut self, ts: i64, rel: u32) {
        match self.entries.last_mut() {
            Some(&mut (lt, lr)) if ts <= lt || rel < lr => {}
            _ => self.entries.push((ts, rel)),
        }
    }

    /// Force a final entry (segment seal): always ends with (max ts, last rel offset).
    pub(crate) fn push_final(&mut self, ts: i64, rel: u32) {
        match self.entries.last() {
            Some(&(lt, lr)) if lt == ts && lr == rel => {}
            Some(&(lt, lr)) if ts < lt || rel < lr => {}
            _ => self.entries.push((ts, rel)),
        }
    }

    /// Relative offset after which to start scanning for the first record with
    /// timestamp >= ts: the last entry whose max ts is < ts (None = segment start).
    pub(crate) fn scan_start(&self, ts: i64) -> Option<u32> {
        let i = self.entries.partition_point(|&(t, _)| t < ts);
        if i == 0 {
            None
        } else {
            Some(self.entries[i - 1].1)
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 12);
        for &(t, r) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&r.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(buf: &[u8], max_rel: u64) -> TimeIndex {
        let mut idx = TimeIndex::default();
        for c in buf.chunks_exact(12) {
            let mut t = [0u8; 8];
            t.copy_from_slice(&c[..8]);
            let t = i64::from_be_bytes(t);
            let r = u32::from_be_bytes([c[8], c[9], c[10], c[11]]);
            let ok = (r as u64) < max_rel
                && idx
                    .entries
                    .last()
                    .is_none_or(|&(lt, lr)| t >= lt && r >= lr);
            if !ok {
                break;
            }
            idx.entries.push((t, r));
        }
        idx
    }

    /// Decode only the last entry of an encoded time index.
    pub(crate) fn decode_last(buf: &[u8]) -> Option<(i64, u32)> {
        if buf.len() < 12 || !buf.len().is_multiple_of(12) {
            return None;
        }
        let c = &buf[buf.len() - 12..];
        let mut t = [0u8; 8];
        t.copy_from_slice(&c[..8]);
        Some((
            i64::from_be_bytes(t),
            u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_and_roundtrip() {
        let mut i = OffsetIndex::default();
        i.push(10, 4096);
        i.push(20, 8192);
        i.push(15, 9000); // not increasing in rel: ignored
        assert_eq!(i.lookup(5), (0, 0));
        assert_eq!(i.lookup(10), (10, 4096));
        assert_eq!(i.lookup(19), (10, 4096));
        assert_eq!(i.lookup(1000), (20, 8192));
        let enc = i.encode();
        assert_eq!(OffsetIndex::decode(&enc, 100, 1 << 20), i);
        // stale entry past the segment end is dropped with everything after it
        assert_eq!(
            OffsetIndex::decode(&enc, 100, 5000).entries,
            vec![(10, 4096)]
        );
        // garbage tail (non-increasing) is cut
        let mut bad = enc.clone();
        bad.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        bad.extend_from_slice(&[1, 2, 3]);
        assert_eq!(OffsetIndex::decode(&bad, 100, 1 << 20), i);
    }

    #[test]
    fn time_index_scan_start() {
        let mut t = TimeIndex::default();
        t.push(100, 3);
        t.push(90, 5); // not growing: ignored
        t.push(200, 9);
        t.push_final(200, 12);
        assert_eq!(t.entries, vec![(100, 3), (200, 9), (200, 12)]);
        assert_eq!(t.scan_start(50), None);
        assert_eq!(t.scan_start(100), None);
        assert_eq!(t.scan_start(101), Some(3));
        assert_eq!(t.scan_start(201), Some(12));
        let enc = t.encode();
        assert_eq!(TimeIndex::decode(&enc, 13), t);
        assert_eq!(TimeIndex::decode_last(&enc), Some((200, 12)));
        assert_eq!(TimeIndex::decode_last(&enc[..20]), None);
    }
}
