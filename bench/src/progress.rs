//! The once-a-second progress line of long runs, fed by per-thread counters.
//!
//! Each producer and consumer thread owns one `Counters` (relaxed atomics, written only by
//! that thread and its librdkafka callbacks); the progress thread sums them every second
//! and prints deltas to stderr, so stdout stays clean for tables and JSON.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats::group_thousands;

/// Per-thread counters read by the progress line.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// Prints one line per second to stderr until `stop`: per-second rates of sent, acked
/// and consumed records, records in flight and the error count.
pub(crate) fn progress_loop(
    counters: Vec<(bool, Arc<Counters>)>,
    stop: Arc<AtomicBool>,
    start: Instant,
    t0: Duration,
    message_size: usize,
) {
    let sum = |f: &dyn Fn(&Counters) -> u64| -> u64 { counters.iter().map(|(_, c)| f(c)).sum() };
    let mut prev = (0u64, 0u64, 0u64);
    let mut next = t0 + Duration::from_secs(1);
    while !stop.load(Relaxed) {
        let now = start.elapsed();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(100)));
            continue;
        }
        next += Duration::from_secs(1);
        let cur = (
            sum(&|c| c.sent.load(Relaxed)),
            sum(&|c| c.acked.load(Relaxed)),
            sum(&|c| c.received.load(Relaxed)),
        );
        let errors = sum(&|c| c.errors.load(Relaxed));
        let acked = cur.1 - prev.1;
        let consumed = cur.2 - prev.2;
        let mb = |n: u64| (n * message_size as u64) as f64 / 1e6;
        eprintln!(
            "[{:>4}s] sent {:>9}/s | acked {:>9}/s {:>7.1} MB/s | consumed {:>9}/s {:>7.1} MB/s | in flight {:>7} | errors {}",
            (now - t0).as_secs(),
            group_thousands((cur.0 - prev.0) as f64),
            group_thousands(acked as f64),
            mb(acked),
            group_thousands(consumed as f64),
            mb(consumed),
            cur.0.saturating_sub(cur.1),
            errors
        );
        prev = cur;
    }
}
