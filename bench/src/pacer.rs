//! Send schedule for one producer thread: constant rate with coordinated-omission
//! correction, or max throughput.
//!
//! At a constant rate `r`, message `k` has the intended send time `start + k / r`,
//! fixed in advance. Latency is measured from that intended time, so a stall in the
//! client or the broker shows up in every message that should have been sent during it
//! (the backlog is then sent as a burst), instead of being hidden by a late send.
//! In max mode the intended time is simply "now", i.e. no schedule.

use std::time::Duration;

/// Send schedule. Owned by one producer thread.
#[derive(Clone, Debug)]
pub struct Pacer {
    /// Nanoseconds between intended sends; `None` means max throughput.
    interval_ns: Option<f64>,
    /// Index of the next message to send.
    next: u64,
}

/// What the producer should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send message number `index`, whose intended send time is `intended` after start.
    Send { index: u64, intended: Duration },
    /// Nothing is due yet; wait this long before asking again.
    Wait(Duration),
}

impl Pacer {
    /// A pacer sending `rate` messages per second, or as fast as possible when `rate` is
    /// `None` (a non-positive or non-finite rate also means max).
    pub fn new(rate: Option<f64>) -> Self {
        let interval_ns = rate.filter(|r| r.is_finite() && *r > 0.0).map(|r| 1e9 / r);
        Self {
            interval_ns,
            next: 0,
        }
    }

    /// True when the pacer follows a constant-rate schedule.
    pub fn is_paced(&self) -> bool {
        self.interval_ns.is_some()
    }

    /// Messages handed out so far.
    pub fn sent(&self) -> u64 {
        self.next
    }

    /// Intended send time of message `index`, relative to the start.
    pub fn intended(&self, index: u64) -> Option<Duration> {
        self.interval_ns
            .map(|ns| Duration::from_nanos((index as f64 * ns).round() as u64))
    }

    /// Number of messages whose intended time is at or before `elapsed` but that have not
    /// been handed out yet (the backlog after a stall). Zero in max mode.
    pub fn backlog(&self, elapsed: Duration) -> u64 {
        match self.interval_ns {
            None => 0,
            Some(ns) => {
                let due = (elapsed.as_nanos() as f64 / ns).floor() as u64 + 1;
                due.saturating_sub(self.next)
            }
        }
    }

    /// The next step at `elapsed` since the start. `Send` advances the schedule.
    pub fn step(&mut self, elapsed: Duration) -> Step {
        let index = self.next;
        let intended = match self.intended(index) {
            None => elapsed,
            Some(at) if at <= elapsed => at,
            Some(at) => return Step::Wait(at - elapsed),
        };
        self.next += 1;
        Step::Send { index, intended }
    }
}

/// Coordinated-omission-corrected latency: completion time minus intended send time,
/// both relative to the same start. Never negative.
pub fn corrected_latency(intended: Duration, completed: Duration) -> Duration {
    completed.saturating_sub(intended)
}

/// Splits a total rate over `producers` threads; `None` (max) stays `None`.
pub fn per_producer_rate(total: Option<f64>, producers: usize) -> Option<f64> {
    total
        .filter(|r| r.is_finite() && *r > 0.0)
        .map(|r| r / producers.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn constant_rate_schedule_is_fixed_in_advance() {
        let mut p = Pacer::new(Some(1000.0)); // one message per ms
        assert!(p.is_paced());
        assert_eq!(
            p.step(Duration::ZERO),
            Step::Send {
                index: 0,
                intended: Duration::ZERO
            }
        );
        // Message 1 is due at 1 ms; at 0.4 ms the pacer asks to wait 0.6 ms.
        assert_eq!(
            p.step(Duration::from_micros(400)),
            Step::Wait(Duration::from_micros(600))
        );
        assert_eq!(
            p.step(MS),
            Step::Send {
                index: 1,
                intended: MS
            }
        );
    }

    #[test]
    fn stall_produces_a_backlog_with_original_intended_times() {
        let mut p = Pacer::new(Some(1000.0));
        let _ = p.step(Duration::ZERO);
        // The thread stalls for 100 ms: messages 1..=100 are all due now.
        let now = 100 * MS;
        assert_eq!(p.backlog(now), 100);
        let mut latencies = Vec::new();
        while let Step::Send { index, intended } = p.step(now) {
            assert_eq!(intended, index as u32 * MS);
            // Each completes 1 ms after the (late) send.
            latencies.push(corrected_latency(intended, now + MS));
        }
        assert_eq!(latencies.len(), 100);
        // Coordinated omission correction: the first delayed message waited the whole
        // stall, the last one only its own 1 ms service time.
        assert_eq!(latencies[0], 100 * MS);
        assert_eq!(*latencies.last().expect("non-empty"), MS);
        assert_eq!(p.backlog(now), 0);
        assert_eq!(p.sent(), 101);
    }

    #[test]
    fn max_mode_sends_immediately_at_now() {
        let mut p = Pacer::new(None);
        assert!(!p.is_paced());
        let now = Duration::from_millis(42);
        assert_eq!(
            p.step(now),
            Step::Send {
                index: 0,
                intended: now
            }
        );
        assert_eq!(p.backlog(now), 0);
        assert!(!Pacer::new(Some(0.0)).is_paced());
        assert!(!Pacer::new(Some(f64::NAN)).is_paced());
    }

    #[test]
    fn rate_split_and_latency_never_negative() {
        assert_eq!(per_producer_rate(Some(1000.0), 4), Some(250.0));
        assert_eq!(per_producer_rate(Some(1000.0), 0), Some(1000.0));
        assert_eq!(per_producer_rate(None, 4), None);
        assert_eq!(per_producer_rate(Some(-1.0), 4), None);
        assert_eq!(corrected_latency(2 * MS, MS), Duration::ZERO);
    }
}
