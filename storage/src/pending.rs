//! `PendingQueue`: the batches of one log that are appended but not yet durable, with their
//! bytes counted into the shard's unflushed total (the budget that produce backpressure
//! reads). Owned by the log's shard; never crosses cores. Every way out of the queue
//! (flushed, truncated away, the log failed, closed or dropped) gives the bytes back.

use bytes::Bytes;
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

/// A batch appended but not yet durable; also reachable by reads until it is.
pub(crate) struct Pending {
    pub(crate) seg_base: i64,
    pub(crate) base: i64,
    pub(crate) last: i64,
    pub(crate) data: Bytes,
}

/// The not-yet-durable batches of one log, oldest (lowest offset) first.
pub(crate) struct PendingQueue {
    items: VecDeque<Pending>,
    bytes: usize,
    /// The shard's unflushed-bytes total, shared by every log of the shard.
    shard_total: Rc<Cell<usize>>,
}

impl PendingQueue {
    pub(crate) fn new(shard_total: Rc<Cell<usize>>) -> Self {
        Self {
            items: VecDeque::new(),
            bytes: 0,
            shard_total,
        }
    }

    pub(crate) fn push_back(&mut self, p: Pending) {
        let n = p.data.len();
        self.bytes += n;
        self.shard_total.set(self.shard_total.get() + n);
        self.items.push_back(p);
    }

    pub(crate) fn pop_front(&mut self) -> Option<Pending> {
        let p = self.items.pop_front()?;
        let n = p.data.len();
        self.bytes -= n;
        self.shard_total
            .set(self.shard_total.get().saturating_sub(n));
        Some(p)
    }

    /// Drop the batches with base offset >= `offset` (a truncation), giving their bytes
    /// back. The queue is in offset order, so they are its tail.
    pub(crate) fn truncate_from(&mut self, offset: i64) {
        while self.items.back().is_some_and(|p| p.base >= offset) {
            if let Some(p) = self.items.pop_back() {
                let n = p.data.len();
                self.bytes -= n;
                self.shard_total
                    .set(self.shard_total.get().saturating_sub(n));
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.shard_total
            .set(self.shard_total.get().saturating_sub(self.bytes));
        self.bytes = 0;
    }

    pub(crate) fn iter(&self) -> std::collections::vec_deque::Iter<'_, Pending> {
        self.items.iter()
    }
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub(crate) fn back(&self) -> Option<&Pending> {
        self.items.back()
    }
    /// The first batch whose last offset is >= `offset`: the one holding it, or the next
    /// one when `offset` falls before it.
    pub(crate) fn first_from(&self, offset: i64) -> Option<&Pending> {
        let i = self.items.partition_point(|p| p.last < offset);
        self.items.get(i)
    }
}

impl Drop for PendingQueue {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: usize) -> Pending {
        at(0, n)
    }

    fn at(base: i64, n: usize) -> Pending {
        Pending {
            seg_base: 0,
            base,
            last: base,
            data: Bytes::from(vec![0u8; n]),
        }
    }

    #[test]
    fn every_way_out_returns_the_bytes() {
        let total = Rc::new(Cell::new(0));
        let mut a = PendingQueue::new(total.clone());
        let mut b = PendingQueue::new(total.clone());
        a.push_back(p(10));
        a.push_back(p(5));
        b.push_back(p(7));
        assert_eq!(total.get(), 22);
        a.pop_front();
        assert_eq!(total.get(), 12);
        b.clear();
        assert_eq!(total.get(), 5);
        drop(a);
        assert_eq!(total.get(), 0);
    }

    #[test]
    fn first_from_finds_the_batch_holding_or_after_an_offset() {
        let mut q = PendingQueue::new(Rc::new(Cell::new(0)));
        for (base, last) in [(10, 12), (13, 13), (20, 25)] {
            let mut b = at(base, 1);
            b.last = last;
            q.push_back(b);
        }
        let first = |o: i64| q.first_from(o).map(|p| p.base);
        assert_eq!(first(0), Some(10));
        assert_eq!(first(12), Some(10));
        assert_eq!(first(13), Some(13));
        assert_eq!(first(14), Some(20)); // a gap
        assert_eq!(first(25), Some(20));
        assert_eq!(first(26), None);
    }

    #[test]
    fn truncate_from_drops_the_tail_and_returns_its_bytes() {
        let total = Rc::new(Cell::new(0));
        let mut q = PendingQueue::new(total.clone());
        for (base, n) in [(0, 10), (1, 20), (2, 30)] {
            q.push_back(at(base, n));
        }
        q.truncate_from(5);
        assert_eq!((q.len(), total.get()), (3, 60));
        q.truncate_from(1);
        assert_eq!((q.len(), total.get()), (1, 10));
        q.truncate_from(0);
        assert_eq!((q.len(), total.get()), (0, 0));
    }
}
