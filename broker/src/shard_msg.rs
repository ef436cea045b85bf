//! Messages between shards. Everything here is `Send` and owns its data (`Bytes` slices of
//! record data move without copying); nothing refers to shard-local state.

use bytes::Bytes;
use sluice_proto::metadata::MetadataRecord;
use sluice_storage::TxnVerification;

use crate::metadata::controller::{MetadataOp, MetadataOpResult};

/// A partition named by topic and index; the topic is shared by every partition of it
/// in a request (no `String` per partition).
#[derive(Debug, Clone)]
pub(crate) struct Tp {
    pub(crate) topic: std::sync::Arc<str>,
    pub(crate) partition: i32,
}

/// A long poll's partition: (topic, partition, offset seen, log start seen).
pub(crate) type WaitPart = (std::sync::Arc<str>, i32, i64, i64);

/// A partition to read; its topic is shared by every partition of it in the request.
#[derive(Debug, Clone)]
pub(crate) struct FetchPart {
    pub(crate) topic: std::sync::Arc<str>,
    pub(crate) partition: i32,
    pub(crate) fetch_offset: i64,
    pub(crate) max_bytes: usize,
    /// A follower's log start (-1 from consumers).
    pub(crate) log_start: i64,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct FetchPartResult {
    pub(crate) error: i16,
    pub(crate) high_watermark: i64,
    /// The last stable offset (below it every transaction is decided), -1 when unknown.
    pub(crate) last_stable_offset: i64,
    pub(crate) log_start_offset: i64,
    /// read_committed: (producer id, first offset) of the aborted transactions in the
    /// range read; None for read_uncommitted (sent as a null array).
    pub(crate) aborted: Option<Vec<(i64, i64)>>,
    pub(crate) batches: Vec<Bytes>,
}

impl FetchPartResult {
    /// A partition answered with `error` only.
    pub(crate) fn failed(error: i16) -> FetchPartResult {
        FetchPartResult {
            error,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted: None,
            batches: Vec::new(),
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ProducePartResult {
    pub(crate) error: i16,
    pub(crate) message: Option<String>,
    pub(crate) base_offset: i64,
    /// The broker time stamped on the batches (LogAppendTime topics), else -1.
    pub(crate) log_append_time: i64,
    pub(crate) log_start_offset: i64,
}

impl ProducePartResult {
    /// A part that was not appended (or whose acknowledgement failed).
    pub(crate) fn failed(error: i16, message: Option<String>) -> Self {
        ProducePartResult {
            error,
            message,
            base_offset: -1,
            log_append_time: -1,
            log_start_offset: -1,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct OffsetAnswer {
    pub(crate) error: i16,
    pub(crate) timestamp: i64,
    pub(crate) offset: i64,
}

/// Request parts grouped by owning shard: where each answer goes in the response
/// (topic index, partition index), and what the owner gets.
pub(crate) type ByShard<T> = std::collections::BTreeMap<usize, (Vec<(usize, usize)>, Vec<T>)>;

/// Adds partition `partition` of `topic`, answered at `slot`, to what `shard` gets.
pub(crate) fn add_routed<T>(
    by_shard: &mut ByShard<(Tp, T)>,
    shard: usize,
    slot: (usize, usize),
    topic: &str,
    partition: i32,
    value: T,
) {
    let e = by_shard.entry(shard).or_default();
    e.0.push(slot);
    e.1.push((
        Tp {
            topic: topic.into(),
            partition,
        },
        value,
    ));
}

/// A request to the shard that owns the data.
#[derive(Debug)]
pub(crate) enum ShardRequest {
    /// Apply the records of the committed metadata entry at `index` (broadcast by shard 0).
    Apply {
        index: u64,
        records: Vec<MetadataRecord>,
    },
    /// Replace the image with these records (a snapshot as of `index`).
    Reset {
        index: u64,
        records: Vec<MetadataRecord>,
    },
    /// Every shard has the metadata snapshot: start accepting connections.
    StartServing,
    /// A change for the controller (shard 0 only: it talks to the quorum thread).
    Metadata(MetadataOp),
    /// Append records; answer after append (acks 0/1) or once durable (acks -1, waiting
    /// at most `timeout_ms`).
    Produce {
        acks: i16,
        timeout_ms: i32,
        /// The connection it came on (`admission::conn_key`): admission takes turns by it.
        conn: u64,
        /// Each partition's records, and how a transactional batch that would start its
        /// producer's transaction there is checked (KIP-890, `txn_verify.rs`).
        parts: Vec<(Tp, Bytes, TxnVerification)>,
    },
    /// KIP-890: start the verification of the transactional batches of `producer` (id,
    /// epoch) in each partition this node leads, each with its batch's first sequence
    /// (`txn_verify.rs`); a `TxnGuards` answer.
    StartTxnVerification {
        producer: (i64, i16),
        parts: Vec<(Tp, i32)>,
    },
    /// Read from each partition, at most `max_bytes` in all (the first batch always whole).
    /// A follower's fetch (`replica` = its node id) reads up to the leader's durable
    /// offset and reports the follower's position; a consumer's (`replica` < 0) up to the
    /// high watermark.
    Fetch {
        parts: Vec<FetchPart>,
        max_bytes: usize,
        replica: i32,
        /// A consumer's isolation level 1: up to the last stable offset, with the aborted
        /// transactions of the range read.
        read_committed: bool,
    },
    /// Resolve once any partition has data past its offset (for a follower: durable data;
    /// for a consumer: below the high watermark), or after `wait_ms`.
    WaitData {
        parts: Vec<WaitPart>,
        wait_ms: u64,
        replica: i32,
    },
    /// For each partition and leader epoch: (error, epoch, end offset) from the log's
    /// leader-epoch cache (OffsetForLeaderEpoch).
    EpochEnds { parts: Vec<(Tp, i32)> },
    /// Offsets for timestamps (-2 earliest, -1 latest, -3 max timestamp); latest is the
    /// last stable offset for a `read_committed` client.
    ListOffsets {
        parts: Vec<(Tp, i64)>,
        read_committed: bool,
    },
    /// A consumer-group call for the coordinator of `__consumer_offsets` partition
    /// `partition` (-1: every coordinator of the shard, for ListGroups).
    Group {
        partition: i32,
        call: Box<crate::groups_glue::GroupCall>,
    },
    /// This shard's counters, committed offsets and high watermarks, for a scrape.
    Metrics,
    /// Transaction markers for partitions this shard owns (`txn_markers.rs`).
    WriteMarkers(crate::txn_markers::Markers),
    /// A call for the transaction coordinator of `__transaction_state` partition
    /// `partition` (-1 with `List`: every coordinator of the shard).
    Txn {
        partition: i32,
        call: Box<crate::txn_glue::TxnCall>,
    },
    /// The producer state of a partition this node leads (DescribeProducers).
    Producers(Tp),
    /// Every partition log the shard has open, led or followed, with its size on disk
    /// (DescribeLogDirs).
    LogSizes,
    /// Move the log start of partitions this node leads (DeleteRecords; -1: the high
    /// watermark) and wait up to `timeout` for every ISR member's to follow.
    DeleteRecords {
        parts: Vec<(Tp, i64)>,
        timeout: std::time::Duration,
    },
}

/// The owner's answer.
#[derive(Debug)]
pub(crate) enum ShardResponse {
    Done,
    Metadata(MetadataOpResult),
    Produce(Vec<ProducePartResult>),
    Fetch(Vec<FetchPartResult>),
    ListOffsets(Vec<OffsetAnswer>),
    EpochEnds(Vec<(i16, i32, i64)>),
    Group(crate::groups_glue::GroupAnswer),
    Metrics(Box<crate::metrics::ShardSnapshot>),
    /// An error code per partition of a `WriteMarkers`.
    Markers(Vec<i16>),
    /// Per partition of a `StartTxnVerification`: None (a transaction is under way, no
    /// need to ask), the guard to append under once the coordinator said yes, or an
    /// error code.
    TxnGuards(Vec<Result<Option<u64>, i16>>),
    Txn(crate::txn_glue::TxnAnswer),
    Producers(Result<Vec<sluice_storage::ProducerInfo>, i16>),
    /// (topic, partition, bytes in its segments) of each log the shard has open.
    LogSizes(Vec<(String, i32, u64)>),
    /// (error code, low watermark) per partition, in request order.
    DeleteRecords(Vec<(i16, i64)>),
    /// The shard could not answer (it is shutting down).
    Unavailable,
}
