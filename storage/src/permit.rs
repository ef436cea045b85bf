//! Cancel-safe waits for a glommio semaphore's permit: the workspace's one way to wait for
//! one (the broker uses it too).
//!
//! glommio 0.9's `Semaphore` hands released units to the first waiters that fit by waking
//! them and unlinking them from its list, without setting the units aside. A waiter
//! dropped after that wake-up and before its next poll (a request cancelled by its
//! timeout or its client going away, an `or` whose other branch won) leaves its units
//! free with nobody woken to take them: the waiters behind it sleep until some later
//! release, which may never come. On a log's I/O permit that is a flush cycle, and so
//! every acknowledgement of the shard, stuck. `acquire` runs the hand-over again
//! (`Semaphore::signal(0)`) when a wait is dropped unfinished, after the dropped waiter
//! has left the list. That can wake a waiter for units another woken waiter is about to
//! take; it then goes back to the end of the list, as after any release in glommio (not
//! a stall: the next release wakes it).
//!
//! ```text
//!  acquire ─► free and nobody waiting? ── yes ─► Permit (no allocation)
//!                  └─ no ─► glommio's wait (boxed) ─► Permit
//!                             dropped unfinished ─► drop the wait, then signal(0)
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use glommio::sync::{Permit, Semaphore};

type Wait<'a> = Pin<Box<dyn Future<Output = glommio::Result<Permit<'a>, ()>> + 'a>>;

/// Waits for `units` of `sem`, as `Semaphore::acquire_permit`, but safe to drop at any
/// point (see the module comment). Err only when the semaphore is closed.
pub fn acquire(sem: &Semaphore, units: u64) -> Acquire<'_> {
    Acquire {
        sem,
        units,
        wait: None,
    }
}

/// The future of `acquire`. Polling it again after it completed waits for a second
/// permit.
#[must_use = "a permit wait does nothing unless awaited"]
pub struct Acquire<'a> {
    sem: &'a Semaphore,
    units: u64,
    /// glommio's wait, once the fast path failed; None again once it finished.
    wait: Option<Wait<'a>>,
}

impl<'a> Future for Acquire<'a> {
    type Output = glommio::Result<Permit<'a>, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.wait.is_none() {
            match this.sem.try_acquire_permit(this.units) {
                Ok(p) => return Poll::Ready(Ok(p)),
                Err(e @ glommio::GlommioError::Closed(_)) => return Poll::Ready(Err(e)),
                Err(_) => {}
            }
        }
        let (sem, units) = (this.sem, this.units);
        let wait = this
            .wait
            .get_or_insert_with(|| Box::pin(sem.acquire_permit(units)));
        let out = wait.as_mut().poll(cx);
        if out.is_ready() {
            this.wait = None;
        }
        out
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        if let Some(wait) = self.wait.take() {
            // first out of the list (glommio's waiter unlinks itself when still linked),
            // then hand any free units to the waiters behind it
            drop(wait);
            self.sem.signal(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    fn on_executor<F, Fut>(f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .expect("executor")
            .join()
            .expect("join");
    }

    /// Waiter A is woken by a release and dropped before it polls again; B, queued
    /// behind it, must still get the permit. Returns whether B got it.
    async fn woken_waiter_dropped(safe: bool) -> bool {
        let sem = Rc::new(Semaphore::new(1));
        let held = sem.try_acquire_permit(1).expect("free");
        let mut a: Pin<Box<dyn Future<Output = bool>>> = if safe {
            let s = sem.clone();
            Box::pin(async move { acquire(&s, 1).await.is_ok() })
        } else {
            let s = sem.clone();
            Box::pin(async move { s.acquire_permit(1).await.is_ok() })
        };
        assert!(future::poll_once(&mut a).await.is_none(), "A waits");
        let got = Rc::new(Cell::new(false));
        let b = {
            let (s, got) = (sem.clone(), got.clone());
            glommio::spawn_local(async move {
                let ok = if safe {
                    acquire(&s, 1).await.is_ok()
                } else {
                    s.acquire_permit(1).await.is_ok()
                };
                got.set(ok);
            })
            .detach()
        };
        glommio::timer::sleep(Duration::from_millis(5)).await;
        assert!(!got.get(), "B waits behind the holder");
        drop(held); // wakes A (unlinked) and only A
        drop(a); // cancelled before it polls
        for _ in 0..50 {
            if got.get() {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
        let out = got.get();
        b.cancel();
        out
    }

    #[test]
    fn a_woken_waiter_dropped_before_its_poll_does_not_strand_the_next() {
        on_executor(|| async {
            // the hazard this module exists for, in glommio's own wait
            assert!(!woken_waiter_dropped(false).await, "glommio strands B");
            assert!(
                woken_waiter_dropped(true).await,
                "acquire hands the unit on"
            );
        });
    }

    #[test]
    fn unwoken_waiter_dropped_keeps_the_queue_and_the_units() {
        on_executor(|| async {
            let sem = Rc::new(Semaphore::new(2));
            let held = sem.try_acquire_permit(2).expect("free");
            let mut a = Box::pin(acquire(&sem, 1));
            assert!(future::poll_once(&mut a).await.is_none());
            drop(a);
            assert_eq!(sem.available(), 0);
            drop(held);
            assert_eq!(sem.available(), 2);
            let p = acquire(&sem, 2).await.expect("open");
            assert_eq!(sem.available(), 0);
            drop(p);
            sem.close();
            assert!(acquire(&sem, 1).await.is_err(), "closed");
        });
    }
}
