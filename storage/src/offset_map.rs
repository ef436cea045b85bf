//! The log cleaner's map from key to the latest offset seen for it in a log's dirty part
//! (Kafka's SkimpyOffsetMap): a fixed-memory open-addressing table of 16-byte key hashes
//! and 8-byte offsets, so a pass's memory is bounded by `cleaner_dedupe_buffer_bytes`
//! whatever the keys' sizes. It holds at most 90 % of its slots (Kafka's
//! `log.cleaner.io.buffer.load.factor`); once full, the pass cleans only what it mapped.
//! A hash collision (two keys, one 128-bit hash: never in practice) would make the older
//! key's record look superseded. Owned by the pass that builds it; never crosses cores.

use std::hash::{DefaultHasher, Hasher};

/// Bytes one slot takes (hash + offset).
const SLOT_BYTES: usize = 24;
const LOAD_FACTOR: f64 = 0.9;

/// See the module comment.
pub(crate) struct OffsetMap {
    /// 0 marks a free slot (a hash of 0 is stored as 1).
    hashes: Vec<u128>,
    offsets: Vec<i64>,
    mask: usize,
    entries: usize,
    max_entries: usize,
}

/// The 128-bit hash of a key: two SipHash-1-3 of it (with different prefixes).
fn digest(key: &[u8]) -> u128 {
    let mut a = DefaultHasher::new();
    a.write(key);
    let mut b = DefaultHasher::new();
    b.write_u8(0x5c);
    b.write(key);
    (((a.finish() as u128) << 64) | b.finish() as u128).max(1)
}

impl OffsetMap {
    /// A map using at most `bytes` (a power of two of slots, at least 64).
    pub(crate) fn with_memory(bytes: usize) -> OffsetMap {
        let want = (bytes / SLOT_BYTES).max(64);
        let slots = if want.is_power_of_two() {
            want
        } else {
            want.next_power_of_two() / 2
        };
        OffsetMap {
            // zeroed allocations: pages are touched only as slots fill
            hashes: vec![0; slots],
            offsets: vec![0; slots],
            mask: slots - 1,
            entries: 0,
            max_entries: ((slots as f64 * LOAD_FACTOR) as usize).max(1),
        }
    }

    fn slot(&self, h: u128) -> (usize, bool) {
        let mut i = (h as usize) & self.mask;
        loop {
            match self.hashes[i] {
                0 => return (i, false),
                x if x == h => return (i, true),
                _ => i = (i + 1) & self.mask,
            }
        }
    }

    /// Records `offset` as the latest for `key` (offsets come in increasing order). False,
    /// and nothing recorded, if `key` is new and the map is full.
    pub(crate) fn put(&mut self, key: &[u8], offset: i64) -> bool {
        let h = digest(key);
        let (i, found) = self.slot(h);
        if !found {
            if self.entries >= self.max_entries {
                return false;
            }
            self.hashes[i] = h;
            self.entries += 1;
        }
        self.offsets[i] = offset;
        true
    }

    /// The latest offset recorded for `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<i64> {
        let (i, found) = self.slot(digest(key));
        found.then(|| self.offsets[i])
    }

    pub(crate) fn len(&self) -> usize {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_offset_and_fills_up() {
        let mut m = OffsetMap::with_memory(64 * SLOT_BYTES);
        assert_eq!(m.max_entries, 57);
        assert!(m.put(b"a", 1));
        assert!(m.put(b"b", 2));
        assert!(m.put(b"a", 3));
        assert_eq!(
            (m.get(b"a"), m.get(b"b"), m.get(b"c")),
            (Some(3), Some(2), None)
        );
        assert_eq!(m.len(), 2);
        for i in 0..55u32 {
            assert!(m.put(&i.to_be_bytes(), 10 + i as i64));
        }
        assert!(!m.put(b"one too many", 99));
        assert!(m.put(b"a", 100), "a known key is updated when full");
        assert_eq!(m.get(b"a"), Some(100));
        assert_eq!(m.get(b"one too many"), None);
        // an empty key is a key
        let mut m = OffsetMap::with_memory(0);
        assert!(m.put(b"", 5));
        assert_eq!(m.get(b""), Some(5));
    }
}
