//! The log cleaner's map from key to the latest offset seen for it in a log's dirty part
//! (Kafka's SkimpyOffsetMap): an open-addressing table of 16-byte key hashes and 8-byte
//! offsets, so a pass's memory is bounded by `cleaner_dedupe_buffer_bytes` whatever the
//! keys' sizes. It starts small and doubles (at half load), old and new table together
//! within that bound (so its largest size is the power of two of slots whose last doubling
//! fits: 2 Mi slots, 48 MiB, for 128 MiB), where it holds at most 90 % of its slots
//! (Kafka's `log.cleaner.io.buffer.load.factor`); once full, the pass cleans only what it
//! mapped. Small passes touch little memory.
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
    /// Entries allowed at the current size (then it grows, or is full at `max_slots`).
    limit: usize,
    max_slots: usize,
}

/// Slots a map starts with (1.5 MiB).
const FIRST_SLOTS: usize = 1 << 16;

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
    /// A map that will use at most `bytes` (at least 64 slots), also while it grows.
    pub(crate) fn with_memory(bytes: usize) -> OffsetMap {
        // growing from n/2 to n slots holds both tables: 1.5 n slots
        let want = (bytes / SLOT_BYTES * 2 / 3).max(64);
        let max_slots = if want.is_power_of_two() {
            want
        } else {
            want.next_power_of_two() / 2
        };
        let mut m = OffsetMap {
            hashes: Vec::new(),
            offsets: Vec::new(),
            mask: 0,
            entries: 0,
            limit: 0,
            max_slots,
        };
        m.resize(max_slots.min(FIRST_SLOTS));
        m
    }

    /// Re-lays the map out over `slots` slots.
    fn resize(&mut self, slots: usize) {
        let hashes = std::mem::replace(&mut self.hashes, vec![0; slots]);
        let offsets = std::mem::replace(&mut self.offsets, vec![0; slots]);
        self.mask = slots - 1;
        self.limit = if slots < self.max_slots {
            slots / 2
        } else {
            ((slots as f64 * LOAD_FACTOR) as usize).max(1)
        };
        for (h, o) in hashes.into_iter().zip(offsets).filter(|(h, _)| *h != 0) {
            let (i, _) = self.slot(h);
            self.hashes[i] = h;
            self.offsets[i] = o;
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
        let (mut i, found) = self.slot(h);
        if !found {
            if self.entries >= self.limit {
                if self.hashes.len() >= self.max_slots {
                    return false;
                }
                self.resize(self.hashes.len() * 2);
                i = self.slot(h).0;
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
        let mut m = OffsetMap::with_memory(96 * SLOT_BYTES);
        assert_eq!(m.limit, 57);
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

    #[test]
    fn stays_within_its_memory_while_growing() {
        for bytes in [0, 1000, 128 << 20, (128 << 20) + 7] {
            let m = OffsetMap::with_memory(bytes);
            assert!(m.max_slots.is_power_of_two() && m.max_slots >= 64);
            assert!(bytes < 96 * SLOT_BYTES || m.max_slots * 3 / 2 * SLOT_BYTES <= bytes);
        }
        assert_eq!(OffsetMap::with_memory(128 << 20).max_slots, 1 << 21);
    }

    #[test]
    fn grows_up_to_its_memory_and_keeps_every_key() {
        let mut m = OffsetMap::with_memory(6 * FIRST_SLOTS * SLOT_BYTES);
        assert_eq!(m.hashes.len(), FIRST_SLOTS);
        let n = (4 * FIRST_SLOTS) * 9 / 10;
        for i in 0..n as u32 {
            assert!(m.put(&i.to_le_bytes(), i as i64), "key {i}");
        }
        assert_eq!(m.hashes.len(), 4 * FIRST_SLOTS);
        assert!(!m.put(b"full", 1));
        for i in (0..n as u32).step_by(997) {
            assert_eq!(m.get(&i.to_le_bytes()), Some(i as i64));
        }
    }
}
