//! `PendingQueue`: the batches of one log that are appended but not yet durable, with their
//! bytes counted into the shard's unflushed total (the budget that produce backpressure
//! reads). Owned by the log's shard; never crosses cores. Every way out of the queue
//! (flushed, truncated away, the log failed, closed or dropped) gives the bytes back.

use crate::log::Pending;
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

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
    pub(crate) fn get(&self, i: usize) -> Option<&Pending> {
        self.items.get(i)
    }
    pub(crate) fn partition_point(&self, pred: impl FnMut(&Pending) -> bool) -> usize {
        self.items.partition_point(pred)
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
    use bytes::Bytes;

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
