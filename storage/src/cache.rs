//! The shard's bounded cache of recent batches, so tail reads never touch disk.
//! Entries are whole batches as refcounted `Bytes`, per log in offset order (a deque: a
//! log's batches arrive in offset order, so an insert is a push at the back and the
//! oldest is at the front), evicted in insertion order (FIFO, "LRU-ish") once `capacity`
//! bytes are exceeded. An insert that does not come after the log's last cached batch
//! (the log was truncated and written again) first drops the batches it overlaps or
//! precedes, so the cache never holds two versions of an offset. Owned by one shard;
//! never crosses cores.
//!
//! (A `BTreeMap` per log and std's SipHash before: with 10,000 partitions of one-record
//! batches the inserts and evictions were a tenth of the shard's time.)

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};

/// One whole batch: (base offset, last offset, bytes).
pub(crate) type Batch = (i64, i64, Bytes);

struct Entry {
    base: i64,
    last: i64,
    data: Bytes,
    seq: u64,
}

/// Log ids are the storage's own counter, never a client's: a fixed fast hash is fine.
type Logs = HashMap<u64, VecDeque<Entry>, std::hash::BuildHasherDefault<IdHasher>>;

/// Multiplicative hash of a log id (ids are small consecutive numbers).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default)]
pub(crate) struct BatchCache {
    capacity: usize,
    bytes: usize,
    live: usize,
    seq: u64,
    /// A log keeps its (possibly empty) deque until `drop_log`: no allocation per batch
    /// for a log whose only cached batch keeps being evicted.
    logs: Logs,
    fifo: VecDeque<(u64, u64)>,
}

impl BatchCache {
    pub(crate) fn new(capacity: usize) -> Self {
        BatchCache {
            capacity,
            ..Default::default()
        }
    }

    pub(crate) fn insert(&mut self, log: u64, base: i64, last: i64, data: Bytes) {
        if data.len() > self.capacity {
            return;
        }
        self.seq += 1;
        let len = data.len();
        let q = self.logs.entry(log).or_default();
        while q.back().is_some_and(|e| e.last >= base) {
            if let Some(old) = q.pop_back() {
                self.bytes -= old.data.len();
                self.live -= 1;
            }
        }
        q.push_back(Entry {
            base,
            last,
            data,
            seq: self.seq,
        });
        self.bytes += len;
        self.live += 1;
        self.fifo.push_back((log, self.seq));
        while self.bytes > self.capacity {
            let Some((l, s)) = self.fifo.pop_front() else {
                break;
            };
            self.evict(l, s);
        }
        if self.fifo.len() > 2 * self.live + 1024 {
            let logs = &self.logs;
            // a deque's seqs rise from front to back
            self.fifo.retain(|(l, s)| {
                logs.get(l)
                    .is_some_and(|q| q.binary_search_by_key(s, |e| e.seq).is_ok())
            });
        }
    }

    /// Evicts the entry of `log` inserted as `seq`, if it is still cached: the log's
    /// oldest (the FIFO is in insertion order, and so is each log's deque).
    fn evict(&mut self, log: u64, seq: u64) {
        if let Some(q) = self.logs.get_mut(&log) {
            if q.front().is_some_and(|e| e.seq == seq) {
                if let Some(e) = q.pop_front() {
                    self.bytes -= e.data.len();
                    self.live -= 1;
                }
            }
        }
    }

    /// The cached batch containing `offset`, as (base, last, bytes).
    pub(crate) fn get(&self, log: u64, offset: i64) -> Option<Batch> {
        let q = self.logs.get(&log)?;
        let e = q.get(first_ending_at_or_after(q, offset))?;
        (e.base <= offset).then(|| (e.base, e.last, e.data.clone()))
    }

    /// Drop entries of `log` with base >= `from` (truncation).
    pub(crate) fn remove_from(&mut self, log: u64, from: i64) {
        if let Some(q) = self.logs.get_mut(&log) {
            while q.back().is_some_and(|e| e.base >= from) {
                if let Some(e) = q.pop_back() {
                    self.bytes -= e.data.len();
                    self.live -= 1;
                }
            }
        }
    }

    /// Drop entries of `log` whose last offset < `before` (retention).
    pub(crate) fn remove_before(&mut self, log: u64, before: i64) {
        if let Some(q) = self.logs.get_mut(&log) {
            while q.front().is_some_and(|e| e.last < before) {
                if let Some(e) = q.pop_front() {
                    self.bytes -= e.data.len();
                    self.live -= 1;
                }
            }
        }
    }

    pub(crate) fn drop_log(&mut self, log: u64) {
        if let Some(q) = self.logs.remove(&log) {
            for e in &q {
                self.bytes -= e.data.len();
                self.live -= 1;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Entries a lookup reads from the back of a log's deque before it searches the rest.
const TAIL_PROBES: usize = 4;

/// The index of the first entry of `q` whose last offset is >= `offset` (`q.len()` if
/// none): `partition_point`, but looking at the last `TAIL_PROBES` entries first. Readers
/// mostly follow a log's tail, so the batch wanted is nearly always one of the last; a
/// binary search over a deque of 100 batches touched ~7 entries spread over kilobytes, a
/// cache miss each, for each of the 10,000 partitions a Fetch round reads.
fn first_ending_at_or_after(q: &VecDeque<Entry>, offset: i64) -> usize {
    let floor = q.len().saturating_sub(TAIL_PROBES);
    let mut i = q.len();
    while i > floor {
        if q[i - 1].last < offset {
            return i;
        }
        i -= 1;
    }
    // entries floor.. all end at or after `offset`: the answer is at or before floor
    let (mut lo, mut hi) = (0, floor);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if q[mid].last < offset {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn the_tail_first_lookup_agrees_with_a_binary_search() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for len in 0..40usize {
            // entries with gaps between them (a compacted log), in offset order
            let mut q = VecDeque::new();
            let mut at = (next() % 5) as i64;
            for seq in 0..len {
                let base = at + (next() % 3) as i64;
                let last = base + (next() % 4) as i64;
                q.push_back(Entry {
                    base,
                    last,
                    data: Bytes::new(),
                    seq: seq as u64,
                });
                at = last + 1;
            }
            for offset in -1..=at + 1 {
                assert_eq!(
                    first_ending_at_or_after(&q, offset),
                    q.partition_point(|e| e.last < offset),
                    "len {len}, offset {offset}"
                );
            }
        }
    }

    #[test]
    fn bounded_fifo_and_lookup() {
        let mut c = BatchCache::new(300);
        c.insert(1, 0, 9, b(100));
        c.insert(1, 10, 19, b(100));
        c.insert(2, 0, 4, b(100));
        assert_eq!(c.get(1, 15).map(|x| x.0), Some(10));
        assert!(c.get(1, 20).is_none());
        c.insert(1, 20, 29, b(100)); // evicts (1, 0)
        assert!(c.get(1, 5).is_none());
        assert_eq!(c.bytes(), 300);
        c.remove_from(1, 20);
        assert!(c.get(1, 25).is_none());
        c.remove_before(1, 15);
        assert_eq!(c.get(1, 12).map(|x| x.0), Some(10)); // 10..=19 still holds 15
        c.remove_before(1, 20);
        assert!(c.get(1, 12).is_none());
        c.drop_log(2);
        assert_eq!(c.bytes(), 0);
        c.insert(3, 0, 0, b(1000)); // larger than the whole cache: not cached
        assert!(c.get(3, 0).is_none());
    }

    #[test]
    fn a_rewritten_offset_replaces_what_it_overlaps_and_eviction_skips_gone_entries() {
        let mut c = BatchCache::new(1000);
        c.insert(1, 0, 9, b(100));
        c.insert(1, 10, 19, b(100));
        c.insert(1, 20, 29, b(100));
        // written again from 10 (truncated without remove_from): 10.. and 20.. go
        c.insert(1, 10, 14, Bytes::from(vec![1u8; 50]));
        assert_eq!(c.bytes(), 150);
        assert_eq!(
            c.get(1, 12).map(|x| (x.0, x.1, x.2.len())),
            Some((10, 14, 50))
        );
        assert!(c.get(1, 20).is_none());
        assert_eq!(c.get(1, 3).map(|x| x.0), Some(0));
        // a gap (a compacted log): the offset in it is not cached
        c.insert(1, 30, 39, b(100));
        assert!(c.get(1, 20).is_none());
        assert_eq!(c.get(1, 35).map(|x| x.0), Some(30));
        // eviction in insertion order passes over the entries already gone
        for i in 0..10 {
            c.insert(2, i * 10, i * 10 + 9, b(100));
        }
        assert!(c.bytes() <= 1000);
        assert!(c.get(1, 3).is_none() && c.get(1, 12).is_none());
        assert_eq!(c.get(2, 95).map(|x| x.0), Some(90));
    }
}
