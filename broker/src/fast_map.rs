//! Hash maps for what the broker looks up per partition on every request (partition
//! numbers, topic names and ids, fetch-session keys): foldhash, seeded at random per map,
//! instead of std's SipHash (4-5 % of the broker's time in a profile of a consumer
//! fetching 10,000 partitions). Still seeded at random, so a client cannot aim keys at
//! one bucket.

pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
