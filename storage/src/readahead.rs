//! Read-ahead for sequential cold readers. A read served from disk opens a window: the next
//! chunk of the same log is read in the background and held by the window (not the shard
//! cache, so other traffic cannot evict it before it is read), and the reader's next fetch
//! finds it in memory while the current answer is still on the wire. A log has at most two
//! windows: when the reader enters the last one, the next one opens at its end; a window
//! the reader has passed (or left by seeking) is dropped. Window bytes are
//! bounded per shard (finished windows left unread for `STALE` give way to new ones), a
//! reader that arrives while its window is still being read waits for it instead of
//! reading the same bytes twice, and truncation drops a log's windows. A window holds the
//! batches of `[from, end)` as they lie on disk, so an offset in it that no batch holds
//! is a gap (a compacted log): the window answers with the next batch. This module keeps
//! the windows; `read.rs` reads them from disk. Owned by one shard; never crosses cores.
//!
//! ```text
//!  read [a,b) from disk ─► window [b, ..) in flight ─► done: holds [b, e)
//!  read [b,c) from the window ─► the reader is in it ─► next window [e, ..)
//! ```

use crate::cache::{Batch, BatchCache};
use crate::signal::Signal;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Smallest and largest window; between them a window is `AHEAD` times the read that
/// opened it (or 1x when the budget is short).
const MIN_WINDOW: usize = 256 << 10;
const MAX_WINDOW: usize = 8 << 20;
const AHEAD: usize = 4;
/// A finished window nobody read for this long no longer holds budget.
const STALE: Duration = Duration::from_secs(5);
/// Windows per log: the one being read and the next.
const PER_LOG: usize = 2;

struct Window {
    id: u64,
    from: i64,
    /// The batches read, in offset order; `None` while the read is in flight.
    batches: Option<Vec<Batch>>,
    /// Bytes held against the budget (the planned length while in flight).
    bytes: usize,
    opened: Instant,
    done: Rc<Signal>,
}

impl Window {
    /// One past the last offset held; `None` while in flight.
    fn end(&self) -> Option<i64> {
        let b = self.batches.as_ref()?;
        Some(b.last().map_or(self.from, |(_, last, _)| last + 1))
    }

    /// The batch holding `offset`, or the next one if `offset` is in a gap inside the
    /// window's span.
    fn get(&self, offset: i64) -> Option<Batch> {
        let b = self.batches.as_ref()?;
        if offset < self.from {
            return None;
        }
        let i = b.partition_point(|(_, last, _)| *last < offset);
        let (base, last, data) = b.get(i)?;
        Some((*base, *last, data.clone()))
    }
}

/// The shard's read-ahead windows, keyed by log id.
pub(crate) struct ReadAheads {
    budget: usize,
    bytes: usize,
    next_id: u64,
    windows: HashMap<u64, VecDeque<Window>>,
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

    /// Forget every window of `log` (closed, deleted or truncated).
    pub(crate) fn drop_log(&mut self, log: u64) {
        if let Some(ws) = self.windows.remove(&log) {
            self.bytes -= ws.iter().map(|w| w.bytes).sum::<usize>();
        }
    }

    /// Drops the windows of `log` that `keep` rejects.
    fn retain(&mut self, log: u64, mut keep: impl FnMut(&Window) -> bool) {
        let Some(ws) = self.windows.get_mut(&log) else {
            return;
        };
        let mut freed = 0;
        ws.retain(|w| {
            let k = keep(w);
            if !k {
                freed += w.bytes;
            }
            k
        });
        self.bytes -= freed;
        if ws.is_empty() {
            self.windows.remove(&log);
        }
    }

    /// Room for `len` more bytes, giving up stale finished windows if needed.
    fn make_room(&mut self, len: usize) -> bool {
        if self.bytes + len > self.budget {
            let logs: Vec<u64> = self.windows.keys().copied().collect();
            for l in logs {
                self.retain(l, |w| w.batches.is_none() || w.opened.elapsed() < STALE);
            }
        }
        self.bytes + len <= self.budget
    }

    /// The batch for `offset` (holding it, or the next one past a gap) if a finished
    /// window of `log` spans it.
    pub(crate) fn lookup(&self, log: u64, offset: i64) -> Option<Batch> {
        if self.windows.is_empty() {
            return None; // no cold readers: skip the hash on every miss
        }
        let ws = self.windows.get(&log)?;
        ws.iter().find_map(|w| w.get(offset))
    }

    /// The completion signal of a window of `log` starting at `offset` that is still
    /// being read (a reader waits for it rather than reading the same bytes).
    pub(crate) fn in_flight(&self, log: u64, offset: i64) -> Option<Rc<Signal>> {
        self.windows.get(&log).and_then(|ws| {
            ws.iter()
                .find(|w| w.batches.is_none() && w.from == offset)
                .map(|w| w.done.clone())
        })
    }

    /// Whether `offset` lies in a window of `log`: a reader there is sequential and cold.
    pub(crate) fn in_window(&self, log: u64, offset: i64) -> bool {
        if self.windows.is_empty() {
            return false; // tail readers hit the cache on every batch: keep that path cheap
        }
        self.windows.get(&log).is_some_and(|ws| {
            ws.iter()
                .any(|w| w.end().is_some_and(|e| w.from <= offset && offset < e))
        })
    }

    /// The read of window `id` of `log` ended with `batches` (empty: it failed or found
    /// nothing, and the window goes).
    pub(crate) fn finish(&mut self, log: u64, id: u64, batches: Vec<Batch>) {
        let held: usize = batches.iter().map(|(_, _, b)| b.len()).sum();
        let Some(w) = self
            .windows
            .get_mut(&log)
            .and_then(|ws| ws.iter_mut().find(|w| w.id == id))
        else {
            return;
        };
        if batches.is_empty() {
            self.retain(log, |w| w.id != id);
            return;
        }
        self.bytes = self.bytes - w.bytes + held;
        w.bytes = held;
        w.batches = Some(batches);
    }
}

/// A window `advance` opened: the caller reads `len` bytes of the log from `start` and
/// hands them to `ReadAheads::finish(log, window, ..)`, then notifies `done`.
pub(crate) struct Planned {
    pub(crate) window: u64,
    pub(crate) start: i64,
    pub(crate) len: usize,
    pub(crate) done: Rc<Signal>,
}

/// After a cold read of `[from, next)` of `log` that returned `got` bytes: drop the
/// windows the reader has passed (all of them if it read elsewhere), and open the next
/// window when the reader has entered the last one (or has none), if the shard's budget
/// allows and it starts below `durable`.
pub(crate) fn advance(
    ra: &mut ReadAheads,
    cache: &BatchCache,
    id: u64,
    from: i64,
    next: i64,
    got: usize,
    durable: i64,
) -> Option<Planned> {
    // sequential: this read touches the windows' span (it may start just before it)
    let seeked = ra.windows.get(&id).is_some_and(|ws| {
        let lo = ws.front().map_or(from, |w| w.from);
        let hi = ws.back().map_or(Some(from), |w| w.end());
        next < lo || hi.is_some_and(|hi| from > hi)
    });
    if seeked {
        ra.drop_log(id);
    } else {
        ra.retain(id, |w| w.end().is_none_or(|e| e > next));
    }
    let start = match ra.windows.get(&id).and_then(|ws| ws.back()) {
        None => next,
        Some(w) => match w.end() {
            Some(end) if next > w.from => end,
            _ => return None, // still in flight, or the reader has not reached it
        },
    };
    if ra.windows.get(&id).is_some_and(|ws| ws.len() >= PER_LOG) {
        return None;
    }
    // the disk read that served this one usually cached a batch or two past it
    let mut start = start.max(next);
    for _ in 0..64 {
        match cache.get(id, start) {
            Some((_, last, _)) => start = last + 1,
            None => break,
        }
    }
    if start >= durable {
        return None;
    }
    // 4x the read keeps a reader's next fetches off the disk; when many readers share
    // the budget, 1x still overlaps the next read with this answer
    let len = [AHEAD, 1]
        .into_iter()
        .map(|k| (got * k).clamp(MIN_WINDOW, MAX_WINDOW))
        .find(|&len| ra.make_room(len))?;
    ra.next_id += 1;
    let window = ra.next_id;
    let done = Rc::new(Signal::default());
    ra.bytes += len;
    ra.windows.entry(id).or_default().push_back(Window {
        id: window,
        from: start,
        batches: None,
        bytes: len,
        opened: Instant::now(),
        done: done.clone(),
    });
    Some(Planned {
        window,
        start,
        len,
        done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_window_answers_an_offset_in_a_gap_with_the_next_batch() {
        let b = |base: i64, last: i64| (base, last, Bytes::from_static(b"x"));
        let w = Window {
            id: 1,
            from: 5,
            batches: Some(vec![b(7, 9), b(12, 12), b(20, 24)]),
            bytes: 3,
            opened: Instant::now(),
            done: Rc::new(Signal::default()),
        };
        assert_eq!(w.end(), Some(25));
        let base = |o: i64| w.get(o).map(|x| x.0);
        assert_eq!(base(4), None); // before the window
        assert_eq!(base(5), Some(7)); // the gap the window starts in
        assert_eq!(base(8), Some(7));
        assert_eq!(base(10), Some(12));
        assert_eq!(base(13), Some(20));
        assert_eq!(base(24), Some(20));
        assert_eq!(base(25), None); // past the window
    }
}
