//! `LatencyHistogram`: a fixed-bucket histogram of durations, 100 µs to 10 s, for the
//! broker's metrics (fsync latency here; request latency and scheduling lag in the broker).
//! Plain counters, no allocation: each shard keeps its own, and the broker adds them up on
//! scrape (`merge`). Buckets are fixed so histograms of every shard and every broker can be
//! summed, as Prometheus does with `_bucket{le}` series.

use std::time::Duration;

/// Upper bounds of the finite buckets, in nanoseconds (1-2.5-5 steps).
const BOUNDS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The same bounds in seconds, as Prometheus writes them in `le`.
const BOUNDS_TEXT: [&str; 16] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "10",
];

/// Counts of durations per bucket (not cumulative; the last slot is over 10 s) and their
/// sum. Owned by one shard; copies of it cross cores inside metric snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u64; BOUNDS_NS.len() + 1],
    sum_ns: u64,
}

impl LatencyHistogram {
    pub fn observe(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|b| *b < ns);
        self.counts[i] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Adds `other`'s observations to these.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of the observed durations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// (upper bound as Prometheus writes it, observations at or below it) for each finite
    /// bucket, cumulative as in the exposition format; `+Inf` is `count()`.
    pub fn cumulative(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let mut total = 0;
        BOUNDS_TEXT
            .iter()
            .zip(self.counts.iter())
            .map(move |(le, n)| {
                total += n;
                (*le, total)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree_with_their_text() {
        for (ns, text) in BOUNDS_NS.iter().zip(BOUNDS_TEXT) {
            let secs: f64 = text.parse().unwrap();
            assert!((secs * 1e9 - *ns as f64).abs() < 1.0, "{text} vs {ns}");
        }
    }

    #[test]
    fn observations_land_in_their_bucket_and_merge() {
        let mut h = LatencyHistogram::default();
        h.observe(Duration::from_micros(100)); // on the bound: le="0.0001"
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(11)); // only in +Inf
        let c: Vec<_> = h.cumulative().collect();
        assert_eq!(c[0], ("0.0001", 1));
        assert_eq!(c[1], ("0.00025", 2));
        assert_eq!(c[4], ("0.0025", 2));
        assert_eq!(c[5], ("0.005", 3));
        assert_eq!(c[15], ("10", 3));
        assert_eq!(h.count(), 4);
        let mut m = h.clone();
        m.merge(&h);
        assert_eq!(m.count(), 8);
        assert!((m.sum_seconds() - 2.0 * h.sum_seconds()).abs() < 1e-9);
    }
}
