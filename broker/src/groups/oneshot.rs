//! A single-threaded, waker-based oneshot channel: how a parked JoinGroup/SyncGroup request
//! task receives its answer from whichever task completes the rebalance.
//!
//! Sender and receiver live on the same shard (`Rc`, not `Send`). Dropping the sender without
//! sending resolves the receiver to `None`; sending to a dropped receiver is a no-op.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_gone: bool,
}

/// Sending half; owned by the coordinator state of one shard; never crosses cores.
pub(crate) struct Sender<T>(Rc<RefCell<Slot<T>>>);

/// Receiving half; awaited by the request task that parked.
pub(crate) struct Receiver<T>(Rc<RefCell<Slot<T>>>);

pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Rc::new(RefCell::new(Slot {
        value: None,
        waker: None,
        sender_gone: false,
    }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    /// Delivers the value and wakes the receiver (consumes the sender).
    pub(crate) fn send(self, value: T) {
        let waker = {
            let mut slot = self.0.borrow_mut();
            slot.value = Some(value);
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.0.borrow_mut();
            slot.sender_gone = true;
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = self.0.borrow_mut();
        if let Some(v) = slot.value.take() {
            return Poll::Ready(Some(v));
        }
        if slot.sender_gone {
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_then_receive_and_drop_resolves_none() {
        let (tx, rx) = channel::<u32>();
        tx.send(7);
        assert_eq!(futures_lite::future::block_on(rx), Some(7));
        let (tx, rx) = channel::<u32>();
        drop(tx);
        assert_eq!(futures_lite::future::block_on(rx), None);
        let (tx, rx) = channel::<u32>();
        drop(rx);
        tx.send(1); // no panic
    }
}
