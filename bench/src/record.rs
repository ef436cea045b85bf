//! Benchmark record layout and key distribution.
//!
//! ```text
//!  payload: | "SLCB" magic (4) | version 1 (u32 LE) | intended send, ns since UNIX epoch (u64 LE) | random filler |
//! ```
//! The intended send time (not the actual one) is stamped so end-to-end latency is
//! corrected for coordinated omission. Payloads shorter than `HEADER_LEN` carry no stamp.

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

/// Bytes taken by the header at the start of every payload.
pub const HEADER_LEN: usize = 16;
const MAGIC: &[u8; 4] = b"SLCB";
const VERSION: u32 = 1;

/// A reusable payload buffer: random filler (incompressible, as OMB's payload files are
/// meant to be) with a header rewritten per message. Owned by one producer thread.
#[derive(Clone, Debug)]
pub struct Payload {
    buf: Vec<u8>,
}

impl Payload {
    /// A payload of exactly `size` bytes filled with random bytes.
    pub fn new(size: usize, rng: &mut impl RngCore) -> Self {
        let mut buf = vec![0u8; size];
        rng.fill_bytes(&mut buf);
        if size >= HEADER_LEN {
            buf[..4].copy_from_slice(MAGIC);
            buf[4..8].copy_from_slice(&VERSION.to_le_bytes());
        }
        Self { buf }
    }

    /// Stamps the intended send time and returns the bytes to send.
    pub fn stamp(&mut self, intended_unix_ns: u64) -> &[u8] {
        if self.buf.len() >= HEADER_LEN {
            self.buf[8..16].copy_from_slice(&intended_unix_ns.to_le_bytes());
        }
        &self.buf
    }

    /// True when the payload is large enough to carry a timestamp.
    pub fn carries_timestamp(&self) -> bool {
        self.buf.len() >= HEADER_LEN
    }
}

/// The intended send time stamped in `payload`, or `None` if it is not a bench record.
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    let header = payload.get(..HEADER_LEN)?;
    if &header[..4] != MAGIC || header[4..8] != VERSION.to_le_bytes() {
        return None;
    }
    let mut ns = [0u8; 8];
    ns.copy_from_slice(&header[8..16]);
    Some(u64::from_le_bytes(ns))
}

/// How record keys are chosen (OpenMessaging Benchmark `keyDistributor` names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyDistributor {
    /// No key: librdkafka spreads records over partitions (sticky partitioning).
    #[default]
    #[value(name = "none", alias = "NO_KEY")]
    NoKey,
    /// Keys cycle through a fixed set, so every partition gets keyed traffic.
    #[value(name = "round-robin", alias = "KEY_ROUND_ROBIN")]
    KeyRoundRobin,
    /// A random key per record (murmur2 then spreads them over partitions).
    #[value(name = "random", alias = "RANDOM_NANO")]
    RandomNano,
}

/// Produces keys for one producer thread. Owned by that thread.
#[derive(Debug)]
pub struct KeyGen {
    mode: KeyDistributor,
    counter: u64,
    buf: String,
}

/// Distinct keys cycled by `KeyRoundRobin`.
const ROUND_ROBIN_KEYS: u64 = 10_000;

impl KeyGen {
    /// A key generator for `mode`; `seed` offsets the round-robin cycle per producer.
    pub fn new(mode: KeyDistributor, seed: u64) -> Self {
        Self {
            mode,
            counter: seed,
            buf: String::with_capacity(24),
        }
    }

    /// The next key, or `None` for `NoKey`.
    pub fn next_key(&mut self, rng: &mut impl Rng) -> Option<&[u8]> {
        use std::fmt::Write;
        self.buf.clear();
        let n = match self.mode {
            KeyDistributor::NoKey => return None,
            KeyDistributor::KeyRoundRobin => {
                self.counter = self.counter.wrapping_add(1);
                self.counter % ROUND_ROBIN_KEYS
            }
            KeyDistributor::RandomNano => rng.random::<u64>(),
        };
        // ok: writing to a String cannot fail.
        write!(self.buf, "{n}").expect("write to String");
        Some(self.buf.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn stamp_round_trips_and_filler_is_preserved() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut p = Payload::new(1024, &mut rng);
        assert!(p.carries_timestamp());
        let filler = p.stamp(0)[HEADER_LEN..].to_vec();
        let bytes = p.stamp(1_700_000_000_123_456_789).to_vec();
        assert_eq!(bytes.len(), 1024);
        assert_eq!(read_stamp(&bytes), Some(1_700_000_000_123_456_789));
        assert_eq!(&bytes[HEADER_LEN..], &filler[..]);
    }

    #[test]
    fn foreign_or_short_payloads_have_no_stamp() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut short = Payload::new(8, &mut rng);
        assert!(!short.carries_timestamp());
        assert_eq!(read_stamp(short.stamp(5)), None);
        assert_eq!(read_stamp(&[0u8; 64]), None);
        let mut other_version = Payload::new(32, &mut rng).stamp(5).to_vec();
        other_version[4] = 9;
        assert_eq!(read_stamp(&other_version), None);
    }

    #[test]
    fn key_distributions() {
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(
            KeyGen::new(KeyDistributor::NoKey, 0).next_key(&mut rng),
            None
        );
        let mut rr = KeyGen::new(KeyDistributor::KeyRoundRobin, ROUND_ROBIN_KEYS - 2);
        let keys: Vec<Vec<u8>> = (0..3)
            .map(|_| rr.next_key(&mut rng).expect("keyed").to_vec())
            .collect();
        assert_eq!(keys, vec![b"9999".to_vec(), b"0".to_vec(), b"1".to_vec()]);
        let mut random = KeyGen::new(KeyDistributor::RandomNano, 0);
        let a = random.next_key(&mut rng).expect("keyed").to_vec();
        let b = random.next_key(&mut rng).expect("keyed").to_vec();
        assert_ne!(a, b);
    }
}
