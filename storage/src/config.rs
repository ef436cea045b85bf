//! Per-log settings (Kafka topic config names) and per-shard storage options, with their
//! defaults. Plain values; a log reads its config on every append so changes apply at once.

use std::time::Duration;

pub(crate) use sluice_proto::decompress::MAX_DECOMPRESSED;

/// `cleanup.policy`: what removes old data from a log. Kafka's values are `delete`,
/// `compact` and `compact,delete` (both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Delete whole old segments by `retention.ms` and `retention.bytes` (`retention.rs`).
    pub delete: bool,
    /// Keep the latest record of every key (the log cleaner, `cleaner.rs`); appends of
    /// records without a key are refused.
    pub compact: bool,
}

impl Default for CleanupPolicy {
    fn default() -> Self {
        CleanupPolicy {
            delete: true,
            compact: false,
        }
    }
}

impl CleanupPolicy {
    /// Parses Kafka's list form: `delete`, `compact`, `compact,delete` (either order,
    /// spaces allowed), or the empty list: neither (Kafka's: no segment is ever deleted
    /// or compacted). None for anything else.
    pub fn parse(s: &str) -> Option<CleanupPolicy> {
        let mut p = CleanupPolicy {
            delete: false,
            compact: false,
        };
        if s.trim().is_empty() {
            return Some(p);
        }
        for part in s.split(',') {
            match part.trim() {
                "delete" => p.delete = true,
                "compact" => p.compact = true,
                _ => return None,
            }
        }
        Some(p)
    }
}

impl std::fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.compact, self.delete) {
            (true, true) => f.write_str("compact,delete"),
            (true, false) => f.write_str("compact"),
            (false, true) => f.write_str("delete"),
            (false, false) => f.write_str(""),
        }
    }
}

/// Per-partition log settings; Kafka topic-config names in the comments.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment when it would exceed this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment when it is older than this.
    pub segment_ms: i64,
    /// `retention.ms`: delete segments whose max timestamp is older; -1 = unlimited.
    /// Applies only with `cleanup_policy.delete`.
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest segments while the log is larger; -1 = unlimited.
    /// Applies only with `cleanup_policy.delete`.
    pub retention_bytes: i64,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: largest batch accepted.
    pub max_message_bytes: u32,
    /// `message.timestamp.before.max.ms`: how far in the past a CreateTime record may be.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far in the future a CreateTime record may be.
    pub timestamp_after_max_ms: i64,
    /// `message.timestamp.type=LogAppendTime`: `append` stamps every batch with the
    /// broker's clock (Kafka's LogAppendTime); false is CreateTime (the producer's).
    pub log_append_time: bool,
    /// `cleanup.policy`: delete (default), compact, or both.
    pub cleanup_policy: CleanupPolicy,
    /// `min.cleanable.dirty.ratio`: the cleaner takes a compacted log once the bytes after
    /// its clean point are at least this share of its cleanable bytes.
    pub min_cleanable_dirty_ratio: f64,
    /// `delete.retention.ms`: how long a tombstone (a record with a null value) stays in a
    /// compacted log after the cleaner first passed over it.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: a segment holding a record newer than this is not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log whose oldest uncleaned record is older than this is
    /// cleaned whatever its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `compression.type`: the codec `append` stores client batches in (0 none, 1 gzip,
    /// 2 snappy, 3 lz4, 4 zstd; a batch in another codec is recompressed), or `None`
    /// (`producer`): batches are stored as the producer compressed them.
    pub compression: Option<u8>,
    /// The level `compression` is applied at (`compression.<codec>.level`, KIP-390;
    /// `sluice_proto::decompress::compress_at`), None for Kafka's default.
    pub compression_level: Option<i32>,
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
            log_append_time: false,
            cleanup_policy: CleanupPolicy::default(),
            min_cleanable_dirty_ratio: 0.5,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            compression: None,
            compression_level: None,
        }
    }
}

/// How a flusher cycle makes the segment data it wrote durable (`storage.flush.sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushSync {
    /// One `fdatasync` per segment the cycle wrote (io_uring), logs flushed in a window of
    /// `FLUSH_WINDOW` at a time: the cost grows with the partitions a cycle touches.
    Segment,
    /// Every log's batches written first, then one `syncfs` per filesystem the cycle
    /// touched (on a blocking helper), then every log's durable signal: a bounded
    /// number of syncs per cycle, but each also writes back whatever other processes
    /// left dirty in the page cache of that filesystem.
    Filesystem,
    /// One record set per cycle in the shard's write-ahead journal (`journal.rs`): one
    /// aligned DMA write and one `fdatasync` whatever the number of logs, then every log
    /// of the cycle is durable; segments are written behind without a sync and synced at
    /// checkpoints (`journal_flush.rs`). Needs `ShardStorageOptions::journal_dir`.
    Journal,
}

impl FlushSync {
    /// `segment`, `filesystem` or `journal`.
    pub fn parse(s: &str) -> Option<FlushSync> {
        match s {
            "segment" => Some(FlushSync::Segment),
            "filesystem" => Some(FlushSync::Filesystem),
            "journal" => Some(FlushSync::Journal),
            _ => None,
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
    /// `log.cleaner.enable`: the shard's log cleaner compacts its logs with
    /// `cleanup.policy` compact in the background.
    pub cleaner_enabled: bool,
    /// `log.cleaner.dedupe.buffer.size` (for this shard): memory of the cleaner's
    /// key-to-offset map (24 bytes a slot, growing by doubling within this; 128 MiB maps
    /// about 1.9 million keys); a pass whose dirty keys do not fit cleans less and leaves
    /// the rest to the next pass.
    pub cleaner_dedupe_buffer_bytes: usize,
    /// `log.cleaner.backoff.ms`: how long the cleaner sleeps when no log needs cleaning.
    pub cleaner_backoff: Duration,
    /// `log.cleaner.io.max.bytes.per.second`: bytes the cleaner reads and writes per
    /// second at most; u64::MAX is unthrottled.
    pub cleaner_io_bytes_per_sec: u64,
    /// `log.cleaner.io.buffer.size` (Kafka's): memory of a pass's I/O buffers, half for
    /// each read of a segment and half gathered before each write of a cleaned one.
    /// Smaller reads share the disk better with produce (each flush cycle waits behind one
    /// at most, see `cleaner_io.rs`).
    pub cleaner_io_buffer_bytes: usize,
    /// `storage.flush.sync`: how a group commit makes the data it wrote durable.
    pub flush_sync: FlushSync,
    /// With `FlushSync::Journal`: the data directory (its `__journal` holds the shard's
    /// journal files; journaled logs must be directories directly inside it — a log
    /// elsewhere is flushed with per-segment syncs) and this shard's number.
    pub journal_dir: Option<std::path::PathBuf>,
    pub journal_shard: u32,
    /// `storage.journal.bytes`: size of each of the shard's two journal files (written
    /// through with zeros when created); a checkpoint starts when the active one is half
    /// full.
    pub journal_bytes: u64,
    /// `storage.journal.behind.max.bytes`: journaled bytes a shard may hold in memory
    /// before they are written behind into their segments; beyond it they count against
    /// produce admission (`ShardStorage::admission_bytes`) as unflushed bytes do.
    pub journal_behind_bytes: usize,
    /// `storage.journal.min.partitions`: with `FlushSync::Journal`, a cycle with fewer
    /// dirty logs than this syncs their segments as `Segment` does (a log's journaled
    /// batches are written with its new ones): with few logs a cycle's syncs are few, and
    /// the journal's second copy of every byte (and its CRC) costs more CPU than they do
    /// (`benches/group_commit.rs`: 12 and 100 logs; a 16-partition RF 3 cluster journaling
    /// every cycle fell from ~100 to 40–67 MB/s). 1: every cycle is journaled.
    pub journal_min_logs: usize,
}

impl Default for ShardStorageOptions {
    fn default() -> Self {
        ShardStorageOptions {
            cache_bytes: 256 << 20,
            readahead_bytes: 128 << 20,
            max_open_files: 4096,
            retention_check_interval: Duration::from_secs(300),
            idle_file_timeout: Duration::from_secs(60),
            cleaner_enabled: true,
            cleaner_dedupe_buffer_bytes: 128 << 20,
            cleaner_backoff: Duration::from_secs(15),
            cleaner_io_bytes_per_sec: u64::MAX,
            cleaner_io_buffer_bytes: 512 << 10,
            flush_sync: FlushSync::Segment,
            journal_dir: None,
            journal_shard: 0,
            journal_bytes: 1 << 30,
            journal_behind_bytes: 256 << 20,
            journal_min_logs: 32,
        }
    }
}

impl ShardStorageOptions {
    /// Bytes a cleaner pass reads from a segment at once: half its I/O buffer, whole
    /// pages, at least one.
    pub(crate) fn cleaner_read_chunk(&self) -> usize {
        let half = (self.cleaner_io_buffer_bytes / 2) as u64;
        crate::segment::align_down(half).max(crate::segment::PAGE) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::CleanupPolicy;

    #[test]
    fn cleanup_policy_parses_kafka_values() {
        let p = |s| CleanupPolicy::parse(s).map(|p| (p.compact, p.delete));
        assert_eq!(p("delete"), Some((false, true)));
        assert_eq!(p("compact"), Some((true, false)));
        assert_eq!(p("compact,delete"), Some((true, true)));
        assert_eq!(p("delete, compact"), Some((true, true)));
        assert_eq!(p("compact,nope"), None);
        assert_eq!(p("compact,,delete"), None);
        assert_eq!(p(""), Some((false, false)));
        assert_eq!(p(" "), Some((false, false)));
        for s in ["delete", "compact", "compact,delete"] {
            assert_eq!(
                CleanupPolicy::parse(s).map(|p| p.to_string()),
                Some(s.into())
            );
        }
    }
}
