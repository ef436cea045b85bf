//! Produce admission: the shard's budget of unflushed bytes (`storage.unflushed.max.bytes`).
//! When the shard is under budget and nobody waits, a produce request appends at once.
//! Otherwise it takes a ticket in its connection's queue; the shard grants tickets one at a
//! time while under budget, taking connections in turn (round robin) and each connection's
//! tickets in arrival order. So one connection's appends keep their order, and a quiet
//! producer waits behind at most one request of each busy connection, not behind all
//! their queued bytes. Owned by its shard; never crosses cores.
//!
//! ```text
//!  start(Produce) ─► nobody waiting and unflushed < budget ? append now
//!                     └─ no: ticket into queue[conn] ─► pump: conn ring ─► grant ─► append
//!  flusher progress (Admission::run) / finish / abandon ─► pump again
//! ```
//! `run` ticks (every 10 ms, a backstop to the flusher's progress) only while a ticket
//! waits; with none it sleeps until one is queued.
//! A grant wakes only the granted ticket, so thousands of waiting requests cost nothing
//! per grant.
//! A request waiting here holds its connection's in-flight bytes, so the connection stops
//! reading and TCP pushes back on the client.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::future;
use sluice_storage::{ShardStorage, Signal};

/// Identifies the connection a produce came from: (its shard << 48) | its connection id.
pub(crate) type ConnKey = u64;

pub(crate) fn conn_key(shard: usize, conn_id: u64) -> ConnKey {
    ((shard as u64) << 48) | (conn_id & ((1 << 48) - 1))
}

/// Waiting tickets: per connection oldest first, connections in turn. Owned by one shard.
#[derive(Default)]
struct TurnQueue {
    queues: HashMap<ConnKey, VecDeque<u64>>,
    /// Connections with waiting tickets, in the order they get their next turn.
    ring: VecDeque<ConnKey>,
}

impl TurnQueue {
    fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    fn push(&mut self, conn: ConnKey, n: u64) {
        let q = self.queues.entry(conn).or_default();
        if q.is_empty() {
            self.ring.push_back(conn);
        }
        q.push_back(n);
    }

    /// Takes the oldest ticket of the first connection in turn whose oldest ticket is
    /// `ready` (its request is waiting for the grant, not still preparing): a connection
    /// whose head is not ready keeps its place in the ring and is passed over this time.
    fn next_in_turn(&mut self, ready: impl Fn(u64) -> bool) -> Option<u64> {
        for _ in 0..self.ring.len() {
            let conn = self.ring.pop_front()?;
            let Some(q) = self.queues.get_mut(&conn) else {
                continue;
            };
            let Some(&n) = q.front() else {
                self.queues.remove(&conn);
                continue;
            };
            if !ready(n) {
                self.ring.push_back(conn);
                continue;
            }
            q.pop_front();
            if q.is_empty() {
                self.queues.remove(&conn);
            } else {
                self.ring.push_back(conn);
            }
            return Some(n);
        }
        None
    }

    /// Forgets a ticket that is still waiting (its request went away). A connection left
    /// with none leaves the ring too: a stale entry kept the queue looking busy (every
    /// produce then took the ticket path) and, once the connection queued again, gave it
    /// two turns per round.
    fn remove(&mut self, conn: ConnKey, n: u64) {
        if let Some(q) = self.queues.get_mut(&conn) {
            q.retain(|&t| t != n);
            if q.is_empty() {
                self.queues.remove(&conn);
                self.ring.retain(|&c| c != conn);
            }
        }
    }
}

/// Owned by its shard; never crosses cores.
pub(crate) struct Admission {
    budget: usize,
    storage: Rc<ShardStorage>,
    next: Cell<u64>,
    waiting: RefCell<TurnQueue>,
    /// The ticket allowed to append now (one at a time, so the budget is read afresh).
    granted: Cell<Option<u64>>,
    /// The waker of each waiting ticket: a grant wakes only its own ticket.
    wakers: RefCell<HashMap<u64, Waker>>,
    /// Notified when a ticket is queued: `run` sleeps on it, with no timer, while nobody
    /// waits.
    queued: Rc<Signal>,
}

/// One produce request's place. It can be granted only while its request waits in
/// `wait` (a request still loading producer state is passed over, keeping its place).
/// Dropping it unserved gives up the place.
pub(crate) struct Ticket {
    n: u64,
    conn: ConnKey,
    done: bool,
    admission: Rc<Admission>,
}

impl Admission {
    pub(crate) fn new(budget: usize, storage: Rc<ShardStorage>) -> Rc<Self> {
        Rc::new(Self {
            budget: budget.max(1),
            storage,
            next: Cell::new(0),
            waiting: RefCell::new(TurnQueue::default()),
            granted: Cell::new(None),
            wakers: RefCell::new(HashMap::new()),
            queued: Rc::default(),
        })
    }

    /// Grants waiting tickets as the flusher frees budget. Runs for the life of the shard.
    pub(crate) async fn run(me: Weak<Self>) {
        loop {
            let Some(a) = me.upgrade() else { return };
            let (storage, queued) = (a.storage.clone(), a.queued.clone());
            let nobody_waits = a.waiting.borrow().is_empty();
            drop(a);
            if nobody_waits {
                // an idle shard is not woken every 10 ms: a grant is only ever for a
                // queued ticket, and the ticket's own wait tries one first
                queued.wait().await;
                continue;
            }
            // The flusher's progress frees budget; the 10 ms tick is a backstop.
            future::or(
                storage.wait_progress(),
                glommio::timer::sleep(Duration::from_millis(10)),
            )
            .await;
            let Some(a) = me.upgrade() else { return };
            a.pump();
        }
    }

    /// True when a request may append right now without a ticket: nobody is waiting or
    /// appending, and the shard is under its budget.
    pub(crate) fn may_append_now(&self) -> bool {
        self.granted.get().is_none()
            && self.waiting.borrow().is_empty()
            && self.storage.admission_bytes() < self.budget
    }

    /// Queues a ticket for `conn`.
    pub(crate) fn ticket(self: &Rc<Self>, conn: ConnKey) -> Ticket {
        let n = self.next.get();
        self.next.set(n + 1);
        self.waiting.borrow_mut().push(conn, n);
        self.queued.notify();
        Ticket {
            n,
            conn,
            done: false,
            admission: self.clone(),
        }
    }

    /// Grants the next ticket if none is granted and the shard is under budget.
    fn pump(&self) {
        if self.granted.get().is_some() || self.storage.admission_bytes() >= self.budget {
            return;
        }
        let next = {
            let wakers = self.wakers.borrow();
            self.waiting
                .borrow_mut()
                .next_in_turn(|n| wakers.contains_key(&n))
        };
        if let Some(n) = next {
            self.granted.set(Some(n));
            if let Some(w) = self.wakers.borrow_mut().remove(&n) {
                w.wake();
            }
        }
    }

    fn release(&self, n: u64) {
        self.wakers.borrow_mut().remove(&n);
        if self.granted.get() == Some(n) {
            self.granted.set(None);
            self.pump();
        }
    }
}

impl Ticket {
    /// Resolves when this ticket is granted: its turn came and the shard is under budget.
    pub(crate) async fn wait(&self) {
        let a = &self.admission;
        std::future::poll_fn(|cx| {
            if a.granted.get() == Some(self.n) {
                return Poll::Ready(());
            }
            // registered = ready for a grant; then try to grant (maybe this one)
            a.wakers.borrow_mut().insert(self.n, cx.waker().clone());
            a.pump();
            if a.granted.get() == Some(self.n) {
                a.wakers.borrow_mut().remove(&self.n);
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await
    }

    /// The append is done: the next ticket may be granted.
    pub(crate) fn finish(mut self) {
        self.done = true;
        self.admission.release(self.n);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let a = &self.admission;
        a.waiting.borrow_mut().remove(self.conn, self.n);
        a.release(self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_take_turns_and_keep_their_own_order() {
        let (busy, quiet) = (conn_key(0, 1), conn_key(1, 1));
        let mut q = TurnQueue::default();
        for (c, n) in [(busy, 0), (busy, 1), (busy, 2), (quiet, 3), (busy, 4)] {
            q.push(c, n);
        }
        q.remove(busy, 2);
        let got: Vec<u64> = std::iter::from_fn(|| q.next_in_turn(|_| true)).collect();
        // the quiet connection waits for one turn of the busy one, not for all it queued
        assert_eq!(got, vec![0, 3, 1, 4]);
        assert!(q.is_empty() && q.queues.is_empty());
    }

    #[test]
    fn a_connection_whose_head_is_not_ready_is_passed_over_not_reordered() {
        let (a, b) = (conn_key(0, 1), conn_key(0, 2));
        let mut q = TurnQueue::default();
        for (c, n) in [(a, 0), (a, 1), (b, 2)] {
            q.push(c, n);
        }
        // a's head (0) is still preparing: b goes first, and a's 1 never overtakes its 0
        assert_eq!(q.next_in_turn(|n| n != 0), Some(2));
        assert_eq!(q.next_in_turn(|n| n != 0), None);
        assert_eq!(q.next_in_turn(|_| true), Some(0));
        assert_eq!(q.next_in_turn(|_| true), Some(1));
    }

    #[test]
    fn a_removed_last_ticket_takes_its_connection_out_of_the_ring() {
        let (a, b) = (conn_key(0, 1), conn_key(0, 2));
        let mut q = TurnQueue::default();
        q.push(a, 1);
        q.remove(a, 1);
        assert!(q.is_empty(), "nobody waits");
        q.push(a, 2);
        q.push(a, 3);
        q.push(b, 4);
        let order: Vec<u64> = std::iter::from_fn(|| q.next_in_turn(|_| true)).collect();
        assert_eq!(order, vec![2, 4, 3], "one turn per connection per round");
        assert!(q.is_empty());
    }

    #[test]
    fn conn_keys_separate_shards_and_connections() {
        assert_ne!(conn_key(0, 1), conn_key(1, 1));
        assert_ne!(conn_key(0, 1), conn_key(0, 2));
    }
}
