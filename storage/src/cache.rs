//! The shard's bounded cache of recent batches, so tail reads never touch disk.
//! Entries are whole batches as refcounted `Bytes`, keyed by (log id, base offset) and
//! evicted in insertion order (FIFO, "LRU-ish") once `capacity` bytes are exceeded.
//! Owned by one shard; never crosses cores.

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// One whole batch: (base offset, last offset, bytes).
pub(crate) type Batch = (i64, i64, Bytes);

struct Entry {
    last: i64,
    data: Bytes,
    seq: u64,
}

#[derive(Default)]
pub(crate) struct BatchCache {
    capacity: usize,
    bytes: usize,
    live: usize,
    seq: u64,
    logs: HashMap<u64, BTreeMap<i64, Entry>>,
    fifo: VecDeque<(u64, i64, u64)>,
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
        let map = self.logs.entry(log).or_default();
        if let Some(old) = map.insert(
            base,
            Entry {
                last,
                data,
                seq: self.seq,
            },
        ) {
            self.bytes -= old.data.len();
            self.live -= 1;
        }
        self.bytes += len;
        self.live += 1;
        self.fifo.push_back((log, base, self.seq));
        while self.bytes > self.capacity {
            let Some((l, b, s)) = self.fifo.pop_front() else {
                break;
            };
            self.remove_if_seq(l, b, s);
        }
        if self.fifo.len() > 2 * self.live + 1024 {
            let logs = &self.logs;
            self.fifo.retain(|(l, b, s)| {
                logs.get(l)
                    .and_then(|m| m.get(b))
                    .is_some_and(|e| e.seq == *s)
            });
        }
    }

    fn remove_if_seq(&mut self, log: u64, base: i64, seq: u64) {
        if let Some(map) = self.logs.get_mut(&log) {
            if map.get(&base).is_some_and(|e| e.seq == seq) {
                if let Some(e) = map.remove(&base) {
                    self.bytes -= e.data.len();
                    self.live -= 1;
                }
                if map.is_empty() {
                    self.logs.remove(&log);
                }
            }
        }
    }

    /// The cached batch containing `offset`, as (base, last, bytes).
    pub(crate) fn get(&self, log: u64, offset: i64) -> Option<Batch> {
        let map = self.logs.get(&log)?;
        let (&base, e) = map.range(..=offset).next_back()?;
        (e.last >= offset).then(|| (base, e.last, e.data.clone()))
    }

    /// Drop entries of `log` with base >= `from` (truncation).
    pub(crate) fn remove_from(&mut self, log: u64, from: i64) {
        if let Some(map) = self.logs.get_mut(&log) {
            let tail = map.split_off(&from);
            for e in tail.values() {
                self.bytes -= e.data.len();
                self.live -= 1;
            }
        }
    }

    /// Drop entries of `log` whose last offset < `before` (retention).
    pub(crate) fn remove_before(&mut self, log: u64, before: i64) {
        if let Some(map) = self.logs.get_mut(&log) {
            let keep = map.split_off(&before);
            let gone = std::mem::replace(map, keep);
            for (b, e) in gone {
                if e.last >= before {
                    map.insert(b, e);
                } else {
                    self.bytes -= e.data.len();
                    self.live -= 1;
                }
            }
        }
    }

    pub(crate) fn drop_log(&mut self, log: u64) {
        if let Some(map) = self.logs.remove(&log) {
            for e in map.values() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
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
}
