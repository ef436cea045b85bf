//! A single-threaded, cancel-safe "something changed" notification: `wait()` resolves at
//! the next `notify()` after it was created. A waiter keeps one waker slot however often it
//! is polled, and the slot is removed when the waiter drops, so waits that are polled many
//! times or abandoned never accumulate. The workspace's one notify type (the broker uses it
//! too). Owned by one shard; never crosses cores.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// See the module comment.
#[derive(Default)]
pub struct Signal {
    inner: RefCell<Inner>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    next_id: u64,
    waiters: Vec<(u64, Waker)>,
}

impl Signal {
    /// Wakes every waiter created before this call.
    pub fn notify(&self) {
        let wakers = {
            let mut i = self.inner.borrow_mut();
            i.generation += 1;
            std::mem::take(&mut i.waiters)
        };
        for (_, w) in wakers {
            w.wake();
        }
    }

    /// Resolves at the next `notify` after this call.
    pub fn wait(&self) -> SignalWait<'_> {
        let mut i = self.inner.borrow_mut();
        i.next_id += 1;
        SignalWait {
            signal: self,
            generation: i.generation,
            id: i.next_id,
        }
    }
}

/// The future of [`Signal::wait`].
pub struct SignalWait<'a> {
    signal: &'a Signal,
    generation: u64,
    id: u64,
}

impl Future for SignalWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut i = self.signal.inner.borrow_mut();
        if i.generation != self.generation {
            return Poll::Ready(());
        }
        let id = self.id;
        match i.waiters.iter_mut().find(|(wid, _)| *wid == id) {
            Some(slot) => slot.1.clone_from(cx.waker()),
            None => i.waiters.push((id, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for SignalWait<'_> {
    fn drop(&mut self) {
        let id = self.id;
        if let Ok(mut i) = self.signal.inner.try_borrow_mut() {
            i.waiters.retain(|(wid, _)| *wid != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_resolves_after_notify_only() {
        let s = Signal::default();
        let w = futures_lite::future::block_on(async {
            let mut w = Box::pin(s.wait());
            assert!(futures_lite::future::poll_once(&mut w).await.is_none());
            s.notify();
            futures_lite::future::poll_once(&mut w).await
        });
        assert!(w.is_some());
        // a dropped waiter leaves no slot behind
        {
            let mut w = Box::pin(s.wait());
            assert!(
                futures_lite::future::block_on(futures_lite::future::poll_once(&mut w)).is_none()
            );
        }
        assert!(s.inner.borrow().waiters.is_empty());
    }
}
