//! Once-a-second samples of a load run, for the plots of `--report DIR`: records acked
//! and received in each second (from the same per-thread counters as the progress line),
//! the broker's CPU and RSS (from `/proc/<pid>`, when its pid is known) and the bench's
//! own CPU.
//!
//! ```text
//!  t0 ── 1 s ── 1 s ── ... ── stop
//!        └ sample: Δacked, Δreceived, Δbroker utime+stime, broker VmRSS, Δself CPU
//! ```
//! A sample covers the second that ends at `t_seconds`; a failed `/proc` read leaves that
//! sample's broker fields `None` (the broker may have exited) rather than inventing one.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::procstat::{self, Target};
use crate::progress::Counters;
use crate::stats::CurvePoint;

/// One second of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct TimelineSample {
    /// End of the sampled second, seconds since the load started (t0: consumers
    /// positioned, producers starting).
    pub t_seconds: f64,
    /// Records acked in this second, all producers.
    pub acked: u64,
    /// Records received in this second, all consumers.
    pub received: u64,
    /// Broker CPU in this second, % of one core.
    pub broker_cpu_percent: Option<f64>,
    /// Broker resident memory at the sample (`VmRSS`), bytes.
    pub broker_rss_bytes: Option<u64>,
    /// This process's CPU in this second, % of one core.
    pub client_cpu_percent: Option<f64>,
}

/// What a run keeps for the HTML report, beside its JSON figures (not serialized: the
/// JSON documents stay as they were).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunCharts {
    /// One sample per second from t0 until the run stopped.
    pub timeline: Vec<TimelineSample>,
    /// Produce-ack latency percentile curve (the histogram behind `produce_latency`).
    pub ack_curve: Vec<CurvePoint>,
    /// End-to-end latency percentile curve.
    pub e2e_curve: Vec<CurvePoint>,
    /// Start and end of the measured window, seconds since t0; `None` for a consume-only
    /// run, which is rated from its first record received to its last.
    pub window_seconds: Option<(f64, f64)>,
}

/// Samples once a second from `t0` (on `start`'s clock) until `stop`, plus the partial
/// second before `stop` when it lasted at least `MIN_LAST_SAMPLE`, then returns the
/// samples (rates must divide by the span since the previous sample's `t_seconds`). `counters` are the (is_producer, counters) pairs of the run's threads.
pub(crate) fn sample_loop(
    counters: Vec<(bool, Arc<Counters>)>,
    stop: Arc<AtomicBool>,
    start: Instant,
    t0: Duration,
    broker_pid: Option<u32>,
) -> Vec<TimelineSample> {
    let totals = || {
        let mut acked = 0;
        let mut received = 0;
        for (_, c) in &counters {
            acked += c.acked.load(Relaxed);
            received += c.received.load(Relaxed);
        }
        (acked, received)
    };
    let broker_cpu = || broker_pid.and_then(|p| procstat::sample(Target::Pid(p)).ok());
    let self_cpu = || procstat::sample(Target::SelfProcess).ok();
    let mut prev = (totals(), broker_cpu(), self_cpu(), start.elapsed());
    let mut out = Vec::new();
    let mut next = t0 + Duration::from_secs(1);
    let mut take = |prev: &mut (_, _, _, Duration), now: Duration| {
        let cur = (totals(), broker_cpu(), self_cpu(), now);
        let secs = (cur.3 - prev.3).as_secs_f64();
        let percent = |a: Option<procstat::ProcSample>, b: Option<procstat::ProcSample>| {
            a.zip(b)
                .filter(|_| secs > 0.0)
                .map(|(a, b)| (b.cpu_seconds - a.cpu_seconds).max(0.0) / secs * 100.0)
        };
        let (acked, received): (u64, u64) = cur.0;
        let (acked0, received0): (u64, u64) = prev.0;
        out.push(TimelineSample {
            t_seconds: now.saturating_sub(t0).as_secs_f64(),
            acked: acked.saturating_sub(acked0),
            received: received.saturating_sub(received0),
            broker_cpu_percent: percent(prev.1, cur.1),
            broker_rss_bytes: broker_pid.and_then(|p| procstat::rss_bytes(p).ok()),
            client_cpu_percent: percent(prev.2, cur.2),
        });
        *prev = cur;
    };
    while !stop.load(Relaxed) {
        let now = start.elapsed();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(100)));
            continue;
        }
        next += Duration::from_secs(1);
        take(&mut prev, now);
    }
    // the last, partial second (a short run may have no other), unless too short to rate
    let now = start.elapsed();
    if now.saturating_sub(prev.3) >= MIN_LAST_SAMPLE {
        take(&mut prev, now);
    }
    out
}

/// The shortest tail that still gets its own sample when the run stops.
const MIN_LAST_SAMPLE: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_counter_deltas_and_own_process_each_second() {
        let c = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let (c2, s2) = (c.clone(), stop.clone());
        let pid = std::process::id();
        let h = std::thread::spawn(move || {
            sample_loop(vec![(true, c2)], s2, start, Duration::ZERO, Some(pid))
        });
        std::thread::sleep(Duration::from_millis(300));
        c.acked.fetch_add(5, Relaxed);
        std::thread::sleep(Duration::from_millis(1000));
        c.acked.fetch_add(7, Relaxed);
        c.received.fetch_add(3, Relaxed);
        std::thread::sleep(Duration::from_millis(1000));
        c.acked.fetch_add(1, Relaxed);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Relaxed);
        let t = h.join().expect("sampler");
        assert_eq!(t.len(), 3, "two whole seconds and the last half: {t:?}");
        assert_eq!(t[2].acked, 1);
        assert!(t[2].t_seconds > 2.3 && t[2].t_seconds < 4.0, "{t:?}");
        assert_eq!((t[0].acked, t[0].received), (5, 0));
        assert_eq!((t[1].acked, t[1].received), (7, 3));
        assert!(t[0].t_seconds >= 1.0 && t[1].t_seconds >= 2.0);
        // the "broker" here is this process: its pid reads like any other
        assert!(t.iter().all(|s| s.broker_rss_bytes.is_some_and(|b| b > 0)));
        assert!(t.iter().all(|s| s.broker_cpu_percent.is_some()));
        assert!(t.iter().all(|s| s.client_cpu_percent.is_some()));
    }
}
