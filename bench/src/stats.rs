//! Latency histograms and throughput figures, and their JSON-ready summaries.
//!
//! Latencies are recorded in microseconds into an `hdrhistogram` with 3 significant
//! digits (1 µs .. 1 h, values above saturate); summaries are reported in milliseconds.
//! Throughput uses MB = 10^6 bytes of record payload (keys and protocol overhead excluded).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histogram tracks exactly (1 hour, in microseconds).
const MAX_TRACKED_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds. Owned by one client thread; merged at the end.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        // ok: constant bounds (1, 1h, 3) are valid for hdrhistogram.
        let hist = Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("valid bounds");
        Self { hist }
    }

    /// Records one latency; sub-microsecond values count as 1 µs, huge ones saturate.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.clamp(1, MAX_TRACKED_US));
    }

    /// Records a latency given in nanoseconds (negative values, from clock skew, count as 1 µs).
    pub fn record_nanos(&mut self, nanos: i64) {
        let us = u64::try_from(nanos / 1000).unwrap_or(0);
        self.hist.saturating_record(us.clamp(1, MAX_TRACKED_US));
    }

    /// Adds every sample of `other` into `self`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // ok: both histograms have identical bounds, so addition cannot fail.
        self.hist.add(&other.hist).expect("same bounds");
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The summary, or `None` when no sample was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.hist.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencySummary {
            count: self.hist.len(),
            mean_ms: self.hist.mean() / 1000.0,
            p50_ms: ms(self.hist.value_at_quantile(0.50)),
            p90_ms: ms(self.hist.value_at_quantile(0.90)),
            p99_ms: ms(self.hist.value_at_quantile(0.99)),
            p999_ms: ms(self.hist.value_at_quantile(0.999)),
            max_ms: ms(self.hist.max()),
        })
    }

    /// The percentile curve as OMB and Redpanda plot it: points evenly spaced on the
    /// log scale of 1 / (1 - p) (50, 90, 99, 99.9 % ... are equidistant), up to the
    /// percentile the sample count still resolves (1 - 1/count), then the maximum at that
    /// same position. Empty when no sample was recorded.
    pub fn percentile_curve(&self) -> Vec<CurvePoint> {
        let count = self.hist.len();
        if count == 0 {
            return Vec::new();
        }
        // x = log10(1 / (1 - p)); the last resolvable p is 1 - 1/count (x = log10(count))
        let x_max = (count as f64).log10();
        let steps = (x_max / CURVE_STEP + 1e-9).floor() as u64;
        let mut out = Vec::with_capacity(steps as usize + 2);
        for i in 0..=steps {
            let x = i as f64 * CURVE_STEP;
            let q = 1.0 - 10f64.powf(-x);
            out.push(CurvePoint {
                percentile: q * 100.0,
                ms: self.hist.value_at_quantile(q) as f64 / 1000.0,
            });
        }
        out.push(CurvePoint {
            percentile: (1.0 - 1.0 / count as f64) * 100.0,
            ms: self.hist.max() as f64 / 1000.0,
        });
        out
    }
}

/// Spacing of `percentile_curve` points in decades of 1 / (1 - p).
const CURVE_STEP: f64 = 0.05;

/// One point of a latency percentile curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CurvePoint {
    /// Percentile, 0 ..< 100.
    pub percentile: f64,
    /// Latency at that percentile, ms.
    pub ms: f64,
}

/// Percentiles of one latency distribution, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

/// Messages and payload bytes moved in a measured window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Throughput {
    /// Messages counted in the window.
    pub messages: u64,
    /// Payload bytes counted in the window.
    pub bytes: u64,
    /// Window length in seconds.
    pub seconds: f64,
    /// Messages per second.
    pub msg_per_sec: f64,
    /// Payload megabytes (10^6 bytes) per second.
    pub mb_per_sec: f64,
}

impl Throughput {
    /// Computes rates; a zero-length window yields zero rates instead of infinities.
    pub fn new(messages: u64, bytes: u64, window: Duration) -> Self {
        let seconds = window.as_secs_f64();
        let (msg_per_sec, mb_per_sec) = if seconds > 0.0 {
            (messages as f64 / seconds, bytes as f64 / seconds / 1e6)
        } else {
            (0.0, 0.0)
        };
        Self {
            messages,
            bytes,
            seconds,
            msg_per_sec,
            mb_per_sec,
        }
    }
}

/// Formats a count with thousands separators: 1234567 -> "1,234,567".
pub fn group_thousands(value: f64) -> String {
    let rounded = value.round().max(0.0) as u64;
    let digits = rounded.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = LatencyHistogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary().expect("samples recorded");
        assert_eq!(s.count, 10_000);
        // 3 significant digits: each quantile within 0.1% of the exact value.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(s.p50_ms, 5.0), "p50 {}", s.p50_ms);
        assert!(close(s.p90_ms, 9.0), "p90 {}", s.p90_ms);
        assert!(close(s.p99_ms, 9.9), "p99 {}", s.p99_ms);
        assert!(close(s.p999_ms, 9.99), "p99.9 {}", s.p999_ms);
        assert!(close(s.max_ms, 10.0), "max {}", s.max_ms);
        assert!(close(s.mean_ms, 5.0005), "mean {}", s.mean_ms);
    }

    #[test]
    fn empty_histogram_has_no_summary_and_merge_adds_counts() {
        let mut a = LatencyHistogram::new();
        assert!(a.summary().is_none());
        let mut b = LatencyHistogram::new();
        b.record(Duration::from_millis(7));
        b.record_nanos(-5); // clock skew clamps to 1 µs
        a.merge(&b);
        a.merge(&b);
        assert_eq!(a.count(), 4);
        let s = a.summary().expect("samples");
        assert!((s.max_ms - 7.0).abs() < 0.01);
        assert!((s.p50_ms - 0.001).abs() < 1e-9);
    }

    #[test]
    fn percentile_curve_spans_the_resolvable_decades() {
        let mut h = LatencyHistogram::new();
        assert!(h.percentile_curve().is_empty());
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let c = h.percentile_curve();
        // 10,000 samples resolve 4 decades: p0 .. p99.99, 0.05 apart, plus the max
        assert_eq!(c.len(), 4 * 20 + 2);
        assert_eq!(c[0].percentile, 0.0);
        let at = |p: f64| {
            c.iter()
                .find(|pt| (pt.percentile - p).abs() < 1e-9)
                .map(|pt| pt.ms)
        };
        let close = |got: Option<f64>, want: f64| {
            got.is_some_and(|g| (g - want).abs() <= want * 0.002 + 0.001)
        };
        assert!(close(at(90.0), 9.0), "{:?}", at(90.0));
        assert!(close(at(99.0), 9.9), "{:?}", at(99.0));
        let last = c.last().expect("points");
        assert!((last.percentile - 99.99).abs() < 1e-9 && (last.ms - 10.0).abs() < 0.01);
        assert!(c.windows(2).all(|w| w[0].ms <= w[1].ms), "monotonic");
    }

    #[test]
    fn throughput_rates_and_zero_window() {
        let t = Throughput::new(2_000, 2_048_000, Duration::from_secs(2));
        assert_eq!(t.msg_per_sec, 1_000.0);
        assert!((t.mb_per_sec - 1.024).abs() < 1e-12);
        let z = Throughput::new(5, 5, Duration::ZERO);
        assert_eq!((z.msg_per_sec, z.mb_per_sec), (0.0, 0.0));
    }

    #[test]
    fn thousands_grouping() {
        assert_eq!(group_thousands(0.0), "0");
        assert_eq!(group_thousands(999.4), "999");
        assert_eq!(group_thousands(1000.0), "1,000");
        assert_eq!(group_thousands(1_234_567.0), "1,234,567");
    }
}
