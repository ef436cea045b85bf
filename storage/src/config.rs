//! Per-log settings (Kafka topic config names) and per-shard storage options, with their
//! defaults. Plain values; a log reads its config on every append so changes apply at once.

use std::time::Duration;

/// Per-partition log settings; Kafka topic-config names in the comments.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment when it would exceed this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment when it is older than this.
    pub segment_ms: i64,
    /// `retention.ms`: delete segments whose max timestamp is older; -1 = unlimited.
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest segments while the log is larger; -1 = unlimited.
    pub retention_bytes: i64,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: largest batch accepted.
    pub max_message_bytes: u32,
    /// `message.timestamp.before.max.ms`: how far in the past a CreateTime record may be.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far in the future a CreateTime record may be.
    pub timestamp_after_max_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 604_800_000,
            retention_ms: 604_800_000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            // unbounded here; the broker's topic defaults follow Kafka (after: 1 hour)
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
        }
    }
}

/// Options for one shard's storage (cache, file descriptors, background cadence).
#[derive(Clone, Debug)]
pub struct ShardStorageOptions {
    /// Bytes of recent batches kept in the shard cache.
    pub cache_bytes: usize,
    /// Bytes a shard may have in open read-ahead windows for sequential cold readers (held
    /// apart from the cache); 0 turns read-ahead off. 128 MiB lets 16 partitions read with
    /// 1 MiB fetches keep both their 4 MiB windows.
    pub readahead_bytes: usize,
    /// Segment files kept open at once by this shard.
    pub max_open_files: usize,
    /// How often the background task applies retention to every log.
    pub retention_check_interval: Duration,
    /// Segment files unused for this long are closed.
    pub idle_file_timeout: Duration,
    /// At most this many bytes at the end of a log (and at most its two newest segments)
    /// are read, synchronously, to rebuild the idempotent-producer state on first need.
    /// Producers whose last batch lies before that are unknown afterwards.
    pub producer_rebuild_bytes: u64,
}

impl Default for ShardStorageOptions {
    fn default() -> Self {
        ShardStorageOptions {
            cache_bytes: 256 << 20,
            readahead_bytes: 128 << 20,
            max_open_files: 4096,
            retention_check_interval: Duration::from_secs(300),
            idle_file_timeout: Duration::from_secs(60),
            producer_rebuild_bytes: 32 << 20,
        }
    }
}
