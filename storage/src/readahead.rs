//! Read-ahead for sequential cold readers. A read served from disk opens a window: the next
//! chunk of the same log is read in the background into the shard cache, so the reader's
//! next fetch finds it in memory while the current answer is still on the wire. One window
//! per log; open windows are bounded in bytes per shard (finished windows left unread for
//! `STALE` give way to new ones); a reader that arrives while the window holding its offset
//! is still being read waits for it instead of reading the same bytes twice. Owned by one
//! shard; never crosses cores.
//!
//! ```text
//!  read [a,b) from disk ─► window [b, ..) in flight ─► done: cache holds [b, e)
//!  read [b,c) hits ─► c past the window's middle ─► next window [e, ..)
//! ```

use crate::log::PartitionLog;
use crate::signal::Signal;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Smallest and largest window; between them a window is as large as the read that led to it.
const MIN_WINDOW: usize = 256 << 10;
const MAX_WINDOW: usize = 8 << 20;
/// A finished window nobody read for this long no longer holds budget.
const STALE: Duration = Duration::from_secs(5);

struct Window {
    id: u64,
    from: i64,
    /// One past the last offset read; `None` while the read is in flight.
    end: Option<i64>,
    bytes: usize,
    opened: Instant,
    done: Rc<Signal>,
}

/// The shard's open read-ahead windows, keyed by log id.
pub(crate) struct ReadAheads {
    budget: usize,
    bytes: usize,
    next_id: u64,
    windows: HashMap<u64, Window>,
}

impl ReadAheads {
    pub(crate) fn new(budget: usize) -> Self {
        ReadAheads {
            budget,
            bytes: 0,
            next_id: 0,
            windows: HashMap::new(),
        }
    }

    pub(crate) fn drop_log(&mut self, log: u64) {
        self.close(log);
    }

    fn close(&mut self, log: u64) {
        if let Some(w) = self.windows.remove(&log) {
            self.bytes -= w.bytes;
        }
    }

    /// Room for `len` more bytes, giving up stale finished windows if needed.
    fn make_room(&mut self, len: usize) -> bool {
        if self.bytes + len > self.budget {
            let stale: Vec<u64> = self
                .windows
                .iter()
                .filter(|(_, w)| w.end.is_some() && w.opened.elapsed() >= STALE)
                .map(|(&l, _)| l)
                .collect();
            for l in stale {
                self.close(l);
            }
        }
        self.bytes + len <= self.budget
    }

    fn finish(&mut self, log: u64, id: u64, end: Option<i64>) {
        match self.windows.get_mut(&log) {
            Some(w) if w.id == id => match end {
                Some(e) => w.end = Some(e),
                None => self.close(log),
            },
            _ => {}
        }
    }
}

/// If the window of `log` starting at `offset` is still being read, waits for it and
/// returns true (the caller looks in the cache again).
pub(crate) async fn wait_in_flight(log: &PartitionLog, offset: i64) -> bool {
    let done = {
        let sh = log.shard.inner.borrow();
        match sh.readahead.windows.get(&log.inner.id) {
            Some(w) if w.end.is_none() && w.from == offset => w.done.clone(),
            _ => return false,
        }
    };
    done.wait().await;
    true
}

/// Whether `offset` lies in a finished window of `log`: a cache hit there is a
/// sequential cold reader keeping up with its read-ahead.
pub(crate) fn in_window(log: &PartitionLog, offset: i64) -> bool {
    let sh = log.shard.inner.borrow();
    sh.readahead
        .windows
        .get(&log.inner.id)
        .is_some_and(|w| w.end.is_some_and(|e| w.from <= offset && offset < e))
}

/// After a cold read of `[from, next)` that returned `got` bytes: keep one window ahead of
/// the reader. Opens the next window when the reader has passed the middle of the current
/// one (or left it), if the shard's budget allows.
pub(crate) fn advance(log: &PartitionLog, from: i64, next: i64, got: usize) {
    let id = log.inner.id;
    let durable = {
        let st = log.inner.st.borrow();
        if st.closed || st.deleted {
            return;
        }
        st.durable
    };
    let mut sh = log.shard.inner.borrow_mut();
    let start = match sh.readahead.windows.get(&id) {
        None => next,
        Some(w) => match w.end {
            None => return,
            Some(end) if from < w.from || from > end || next >= end => next,
            Some(end) if next - w.from >= (end - w.from) / 2 => end,
            Some(_) => return,
        },
    };
    sh.readahead.close(id);
    // the disk read that served this one usually cached a batch or two past it
    let mut start = start;
    for _ in 0..64 {
        match sh.cache.get(id, start) {
            Some((_, last, _)) => start = last + 1,
            None => break,
        }
    }
    if start >= durable || sh.cache.get(id, start).is_some() {
        return;
    }
    let len = (got * 4).clamp(MIN_WINDOW, MAX_WINDOW);
    let ra = &mut sh.readahead;
    if !ra.make_room(len) {
        return;
    }
    ra.next_id += 1;
    let wid = ra.next_id;
    let done = Rc::new(Signal::default());
    ra.bytes += len;
    ra.windows.insert(
        id,
        Window {
            id: wid,
            from: start,
            end: None,
            bytes: len,
            opened: Instant::now(),
            done: done.clone(),
        },
    );
    drop(sh);
    let log = log.clone();
    glommio::spawn_local(async move {
        let open = {
            let st = log.inner.st.borrow();
            !(st.closed || st.deleted)
        };
        let read = if open {
            crate::read::read_disk(&log, start, len).await
        } else {
            Ok(Vec::new())
        };
        let end = match read {
            Ok(batches) => batches.last().map(|(_, last, _)| last + 1),
            Err(e) => {
                tracing::debug!(dir = %log.inner.dir.display(), offset = start, error = %e, "read-ahead failed");
                None
            }
        };
        log.shard.inner.borrow_mut().readahead.finish(id, wid, end);
        done.notify();
    })
    .detach();
}
