//! Request watchdog: every request read on this shard is registered until its answer is
//! complete (or, for acks=0 produce, its append is done). A shard task logs a warning for
//! any request unanswered past `request.watchdog.ms`, once, with its API, version,
//! correlation id and client, and again when it finally completes. Owned by its shard;
//! never crosses cores.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

struct Entry {
    api: i16,
    version: i16,
    correlation_id: i32,
    /// The connection's peer, shared with it (no copy per request).
    peer: Rc<str>,
    since: Instant,
    warned: bool,
}

/// Owned by its shard; never crosses cores.
pub(crate) struct Watchdog {
    bound: Duration,
    next: Cell<u64>,
    inflight: RefCell<HashMap<u64, Entry>>,
    /// Requests that were ever reported late (an operator's counter).
    late: Cell<u64>,
}

/// Unregisters its request when dropped.
pub(crate) struct Watched {
    id: u64,
    dog: Weak<Watchdog>,
}

impl Watchdog {
    pub(crate) fn new(bound: Duration) -> Rc<Self> {
        Rc::new(Self {
            bound,
            next: Cell::new(0),
            inflight: RefCell::new(HashMap::new()),
            late: Cell::new(0),
        })
    }

    /// Registers the request in `frame` (a frame body: api key, version, correlation id).
    pub(crate) fn track(self: &Rc<Self>, frame: &[u8], peer: &Rc<str>) -> Watched {
        let be16 = |i: usize| {
            frame
                .get(i..i + 2)
                .map_or(-1, |b| i16::from_be_bytes([b[0], b[1]]))
        };
        let correlation_id = frame
            .get(4..8)
            .map_or(-1, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let id = self.next.get();
        self.next.set(id + 1);
        self.inflight.borrow_mut().insert(
            id,
            Entry {
                api: be16(0),
                version: be16(2),
                correlation_id,
                peer: peer.clone(),
                since: Instant::now(),
                warned: false,
            },
        );
        Watched {
            id,
            dog: Rc::downgrade(self),
        }
    }

    /// Requests registered and not yet complete.
    #[cfg(test)]
    fn inflight(&self) -> usize {
        self.inflight.borrow().len()
    }

    /// Requests ever reported late.
    #[cfg(test)]
    fn late(&self) -> u64 {
        self.late.get()
    }

    /// Warns once about each request older than the bound. Returns how many are late now.
    pub(crate) fn check(&self, shard: usize) -> usize {
        let mut late_now = 0;
        for e in self.inflight.borrow_mut().values_mut() {
            let age = e.since.elapsed();
            if age < self.bound {
                continue;
            }
            late_now += 1;
            if !e.warned {
                e.warned = true;
                self.late.set(self.late.get() + 1);
                tracing::warn!(
                    shard,
                    api = e.api,
                    version = e.version,
                    correlation_id = e.correlation_id,
                    peer = %e.peer,
                    age_ms = age.as_millis() as u64,
                    "request unanswered past request.watchdog.ms"
                );
            }
        }
        late_now
    }

    /// Runs `check` every quarter of the bound until the shard goes away.
    pub(crate) async fn run(me: Weak<Self>, shard: usize) {
        let every = match me.upgrade() {
            Some(d) => (d.bound / 4).max(Duration::from_millis(25)),
            None => return,
        };
        loop {
            glommio::timer::sleep(every).await;
            let Some(d) = me.upgrade() else { return };
            d.check(shard);
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let Some(d) = self.dog.upgrade() else { return };
        let Ok(mut map) = d.inflight.try_borrow_mut() else {
            return;
        };
        if let Some(e) = map.remove(&self.id) {
            if e.warned {
                tracing::warn!(
                    api = e.api,
                    correlation_id = e.correlation_id,
                    peer = %e.peer,
                    took_ms = e.since.elapsed().as_millis() as u64,
                    "late request completed"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_requests_are_counted_once_and_forgotten_when_done() {
        let dog = Watchdog::new(Duration::ZERO);
        let frame = [0u8, 1, 0, 12, 0, 0, 0, 7];
        let peer: Rc<str> = Rc::from("peer");
        let a = dog.track(&frame, &peer);
        let _b = dog.track(&frame, &peer);
        assert_eq!(dog.inflight(), 2);
        assert_eq!(dog.check(0), 2);
        assert_eq!(dog.check(0), 2);
        assert_eq!(dog.late(), 2, "each late request is reported once");
        drop(a);
        assert_eq!(dog.inflight(), 1);
        let short = dog.track(&[1], &peer);
        drop(short);
        assert_eq!(dog.inflight(), 1);
    }
}
