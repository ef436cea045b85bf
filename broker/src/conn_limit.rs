//! Broker-wide connection limits (`max.connections`, `max.connections.per.ip`). The only
//! state shared between shards: one mutex taken once when a connection is accepted and
//! once when it closes, never on the request path. A connection past a limit is closed
//! at once; rejections are logged at most once a second per shard, with their count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Shared by every shard (the one cross-shard structure outside the mesh; see above).
pub(crate) struct ConnectionLimiter {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

/// A counted connection; uncounts itself when dropped.
pub(crate) struct Admitted {
    ip: IpAddr,
    limiter: Arc<ConnectionLimiter>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Total(usize),
    PerIp(usize),
}

impl ConnectionLimiter {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            counts: Mutex::new(Counts::default()),
        })
    }

    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.max_total {
            return Err(Refused::Total(self.max_total));
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refused::PerIp(self.max_per_ip));
        }
        *n += 1;
        c.total += 1;
        Ok(Admitted {
            ip,
            limiter: self.clone(),
        })
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Logs a repeated event at most once a second, with how many happened since the last line.
/// Owned by one shard.
pub(crate) struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    pub(crate) fn new() -> Self {
        Self {
            last: None,
            suppressed: 0,
        }
    }

    /// Returns Some(count since the last line, this one included) when a line is due.
    pub(crate) fn hit(&mut self) -> Option<u64> {
        self.suppressed += 1;
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if !due {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_total_and_per_ip_and_release_on_drop() {
        let l = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap(); // ok: test
        let b: IpAddr = "127.0.0.2".parse().unwrap(); // ok: test
        let a1 = l.admit(a).unwrap(); // ok: test
        let _a2 = l.admit(a).unwrap(); // ok: test
        assert_eq!(l.admit(a).err(), Some(Refused::PerIp(2)));
        let _b1 = l.admit(b).unwrap(); // ok: test
        assert_eq!(l.admit(b).err(), Some(Refused::Total(3)));
        drop(a1);
        assert_eq!(l.open(), 2);
        assert!(l.admit(a).is_ok());
    }

    #[test]
    fn rate_limited_log_counts_suppressed() {
        let mut r = RateLimitedLog::new();
        assert_eq!(r.hit(), Some(1));
        assert_eq!(r.hit(), None);
        assert_eq!(r.hit(), None);
        r.last = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(r.hit(), Some(3));
    }
}
