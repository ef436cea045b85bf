//! `PendingQueue`: the batches of one log that are appended but not yet in their segment
//! files, with their bytes counted into the shard's totals that produce backpressure
//! reads: not yet durable (`unflushed`), or (journal mode) durable in the shard's journal
//! but not yet written behind (`behind`). Owned by the log's shard; never crosses cores.
//! Every way out of the queue (flushed, written behind, truncated away, the log failed,
//! closed or dropped) gives the bytes back to the total they were counted in.

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
    /// Where in its segment file the journal put it (set when journaled): it is written
    /// there, so writing it again after a write that failed partway (some segments
    /// written and their sizes advanced, the batches still journaled) puts the same
    /// bytes in the same place instead of appending them a second time.
    pub(crate) pos: Option<u64>,
}

/// The not-yet-durable batches of one log, oldest (lowest offset) first.
pub(crate) struct PendingQueue {
    items: VecDeque<Pending>,
    /// The first `journaled` items are durable in the shard's journal (not yet written
    /// to their segment files); always 0 without `FlushSync::Journal`.
    journaled: usize,
    bytes: usize,
    /// Bytes of the first `journaled` items.
    journaled_bytes: usize,
    /// The shard's totals, shared by every log of the shard.
    totals: Totals,
}

/// A shard's byte totals of its pending queues.
#[derive(Clone, Default)]
pub(crate) struct Totals {
    /// Not yet durable.
    pub(crate) unflushed: Rc<Cell<usize>>,
    /// Durable in the journal, not yet in their segments.
    pub(crate) behind: Rc<Cell<usize>>,
}

fn sub(c: &Cell<usize>, n: usize) {
    c.set(c.get().saturating_sub(n));
}

impl PendingQueue {
    pub(crate) fn new(totals: Totals) -> Self {
        Self {
            items: VecDeque::new(),
            journaled: 0,
            bytes: 0,
            journaled_bytes: 0,
            totals,
        }
    }

    pub(crate) fn push_back(&mut self, p: Pending) {
        let n = p.data.len();
        self.bytes += n;
        self.totals.unflushed.set(self.totals.unflushed.get() + n);
        self.items.push_back(p);
    }

    /// Gives back the bytes of item `i` (its index before it left the queue).
    fn release(&mut self, i: usize, n: usize) {
        self.bytes -= n;
        if i < self.journaled {
            self.journaled -= 1;
            self.journaled_bytes -= n;
            sub(&self.totals.behind, n);
        } else {
            sub(&self.totals.unflushed, n);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<Pending> {
        let p = self.items.pop_front()?;
        self.release(0, p.data.len());
        Some(p)
    }

    /// Drop the batches with base offset >= `offset` (a truncation), giving their bytes
    /// back. The queue is in offset order, so they are its tail.
    pub(crate) fn truncate_from(&mut self, offset: i64) {
        while self.items.back().is_some_and(|p| p.base >= offset) {
            if let Some(p) = self.items.pop_back() {
                self.release(self.items.len(), p.data.len());
            }
        }
    }

    /// Drop the batches not yet in the journal, giving their bytes back; the journaled
    /// ones stay (acknowledged: until they are written behind, the journal holds them).
    pub(crate) fn clear_unjournaled(&mut self) {
        while self.items.len() > self.journaled {
            if let Some(p) = self.items.pop_back() {
                self.release(self.items.len(), p.data.len());
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.items.clear();
        sub(&self.totals.behind, self.journaled_bytes);
        sub(&self.totals.unflushed, self.bytes - self.journaled_bytes);
        self.journaled = 0;
        self.journaled_bytes = 0;
        self.bytes = 0;
    }

    pub(crate) fn iter(&self) -> std::collections::vec_deque::Iter<'_, Pending> {
        self.items.iter()
    }
    /// How many of the first batches are in the journal, not yet in their segments.
    pub(crate) fn journaled(&self) -> usize {
        self.journaled
    }
    /// The next `positions.len()` batches after the journaled ones are in the journal
    /// now, at those positions of their segments: their bytes move from the shard's
    /// unflushed total to its behind total.
    pub(crate) fn mark_journaled(&mut self, positions: &[u64]) {
        let end = (self.journaled + positions.len()).min(self.items.len());
        let mut moved = 0;
        for (p, &pos) in self.items.range_mut(self.journaled..end).zip(positions) {
            p.pos = Some(pos);
            moved += p.data.len();
        }
        self.journaled = end;
        self.journaled_bytes += moved;
        sub(&self.totals.unflushed, moved);
        self.totals.behind.set(self.totals.behind.get() + moved);
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
            pos: None,
        }
    }

    #[test]
    fn every_way_out_returns_the_bytes() {
        let totals = Totals::default();
        let total = totals.unflushed.clone();
        let mut a = PendingQueue::new(totals.clone());
        let mut b = PendingQueue::new(totals.clone());
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
        let mut q = PendingQueue::new(Totals::default());
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
        let totals = Totals::default();
        let total = totals.unflushed.clone();
        let mut q = PendingQueue::new(totals);
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

    #[test]
    fn journaled_bytes_move_to_the_behind_total_and_leave_from_it() {
        let totals = Totals::default();
        let (u, b) = (totals.unflushed.clone(), totals.behind.clone());
        let mut q = PendingQueue::new(totals.clone());
        for (base, n) in [(0, 10), (1, 20), (2, 30), (3, 40)] {
            q.push_back(at(base, n));
        }
        assert_eq!((u.get(), b.get()), (100, 0));
        q.mark_journaled(&[0, 0]);
        assert_eq!((u.get(), b.get()), (70, 30));
        q.mark_journaled(&[0]);
        assert_eq!((u.get(), b.get()), (40, 60));
        // written behind: leaves the behind total
        q.pop_front();
        assert_eq!((u.get(), b.get()), (40, 50));
        // truncation of an unjournaled, then a journaled batch
        q.truncate_from(3);
        assert_eq!((u.get(), b.get()), (0, 50));
        q.truncate_from(2);
        assert_eq!((u.get(), b.get(), q.journaled()), (0, 20, 1));
        q.push_back(at(2, 5));
        q.clear();
        assert_eq!((u.get(), b.get(), q.journaled()), (0, 0, 0));
        let mut r = PendingQueue::new(totals);
        r.push_back(at(0, 7));
        r.push_back(at(1, 8));
        r.mark_journaled(&[0]);
        drop(r);
        assert_eq!((u.get(), b.get()), (0, 0));
    }
}
