//! The settings table: every setting the broker takes, with its Kafka-style name, default,
//! bounds, unit and one-line description (`config.rs` validates values against it, fills
//! `BrokerConfig` from it and renders `sluice --help` and the docs with it). Declarative
//! only: adding a setting is one entry here.

/// What a setting's value must look like.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Int {
        min: i64,
        max: i64,
    },
    /// A decimal number within [0, 1].
    Ratio,
    /// One of these words.
    Choice(&'static [&'static str]),
    Bool,
    Str,
    /// `NAME://host:port,...` (see `listeners.rs`).
    Listeners,
}

/// One declared setting.
#[derive(Debug)]
pub(crate) struct Setting {
    pub(crate) name: &'static str,
    pub(crate) default: &'static str,
    pub(crate) kind: Kind,
    pub(crate) unit: &'static str,
    pub(crate) doc: &'static str,
}

pub(super) const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}
pub(super) const I32: i64 = i32::MAX as i64;

/// The values of `log.cleanup.policy` (the topic setting is a list: `topic_config`).
pub(crate) const CLEANUP_POLICIES: &[&str] =
    &["delete", "compact", "compact,delete", "delete,compact"];

/// Values of `compression.type` (topic and broker), Kafka's: `producer`, or the codec the
/// broker stores batches in.
pub(crate) const COMPRESSION_TYPES: &[&str] =
    &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

/// The codec a `compression.type` value stores batches in (the batch attributes' codec
/// bits), or None for `producer` (and anything else).
pub(crate) fn compression_codec(value: &str) -> Option<u8> {
    match value {
        "uncompressed" => Some(0),
        "gzip" => Some(1),
        "snappy" => Some(2),
        "lz4" => Some(3),
        "zstd" => Some(4),
        _ => None,
    }
}

/// Every setting, in the order `--help` lists them: the listeners' and security's
/// (`listener_settings.rs`), then the rest.
pub(crate) fn all() -> impl Iterator<Item = &'static Setting> {
    super::listener_settings::LISTENER_SETTINGS
        .iter()
        .chain(SETTINGS)
}

/// The table, after the listeners' and security's. Kafka's names wherever Kafka has the
/// setting.
const SETTINGS: &[Setting] = &[
    Setting {
        name: "log.dirs",
        default: "./sluice-data",
        kind: Kind::Str,
        unit: "path",
        doc: "Data directory: metadata log and one directory per partition.",
    },
    Setting {
        name: "cores",
        default: "0",
        kind: int(0, 1024),
        unit: "shards",
        doc: "Shards (one thread each); 0 means one per available core (per CPU of cpuset when it lists CPUs).",
    },
    Setting {
        name: "cpuset",
        default: "",
        kind: Kind::Str,
        unit: "cpus",
        doc: "CPUs the shard threads are pinned to, one shard per CPU as far apart as the topology allows: empty means every online CPU, a list such as 0-3,6 names them, and none leaves the shards unpinned (several brokers sharing one machine's cores).",
    },
    Setting {
        name: "node.id",
        default: "1",
        kind: int(0, I32),
        unit: "",
        doc: "This node's id, unique in the cluster (the broker id and the raft voter id); kept in meta.properties and checked at every start.",
    },
    Setting {
        name: "process.roles",
        default: "broker,controller",
        kind: Kind::Str,
        unit: "roles",
        doc: "broker, controller, or both (combined). A controller is a voter of the metadata quorum (listed in controller.quorum.voters); a broker-only node follows the quorum as a raft learner and needs controller.listener.",
    },
    Setting {
        name: "controller.quorum.voters",
        default: "",
        kind: Kind::Str,
        unit: "id@host:port,...",
        doc: "The metadata quorum: every voter's node id and controller address. Empty: a single-node quorum of this node, with no controller listener.",
    },
    Setting {
        name: "controller.listener",
        default: "",
        kind: Kind::Str,
        unit: "host:port",
        doc: "Address the controller listener binds (raft messages and broker-to-controller calls); empty means this node's address in controller.quorum.voters.",
    },
    Setting {
        name: "cluster.id",
        default: "",
        kind: Kind::Str,
        unit: "",
        doc: "The cluster's id, the same on every node (written to meta.properties at first start and checked after). Empty: a random one for a single node, else derived from controller.quorum.voters.",
    },
    Setting {
        name: "controller.quorum.election.timeout.ms",
        default: "1000",
        kind: int(200, 60_000),
        unit: "ms",
        doc: "Time without hearing from a leader before a voter starts an election (randomized up to twice this).",
    },
    Setting {
        name: "controller.quorum.tick.ms",
        default: "100",
        kind: int(10, 1000),
        unit: "ms",
        doc: "The raft clock; the leader heartbeats every two ticks.",
    },
    Setting {
        name: "controller.snapshot.interval.records",
        default: "1024",
        kind: int(1, I32),
        unit: "entries",
        doc: "Metadata-log entries between snapshots of the metadata image; the log is compacted behind each.",
    },
    Setting {
        name: "broker.heartbeat.interval.ms",
        default: "2000",
        kind: int(10, 60_000),
        unit: "ms",
        doc: "How often a broker heartbeats to the active controller.",
    },
    Setting {
        name: "broker.session.timeout.ms",
        default: "9000",
        kind: int(100, 600_000),
        unit: "ms",
        doc: "A broker that has not heartbeaten for this long is fenced: it leads no partition and is in no ISR until it heartbeats again.",
    },
    Setting {
        name: "broker.rack",
        default: "",
        kind: Kind::Str,
        unit: "",
        doc: "This broker's rack; replicas of a partition are spread across racks when brokers name them.",
    },
    Setting {
        name: "min.insync.replicas",
        default: "1",
        kind: int(1, 32767),
        unit: "replicas",
        doc: "Topics without an override: an acks=all produce to a partition whose ISR is smaller is refused with NOT_ENOUGH_REPLICAS.",
    },
    Setting {
        name: "unclean.leader.election.enable",
        default: "false",
        kind: Kind::Bool,
        unit: "",
        doc: "Topics without an override: a partition whose in-sync replicas are all gone is led by a live out-of-sync replica (losing what it lacks) instead of staying offline.",
    },
    Setting {
        name: "replica.lag.time.max.ms",
        default: "30000",
        kind: int(100, i64::MAX),
        unit: "ms",
        doc: "A follower that has not caught up with its leader for this long leaves the ISR (the leader asks the controller); it rejoins once caught up.",
    },
    Setting {
        name: "auto.leader.rebalance.enable",
        default: "true",
        kind: Kind::Bool,
        unit: "",
        doc: "The active controller gives each partition back to its preferred (first) replica once that replica is alive and in sync, every leader.imbalance.check.interval.seconds.",
    },
    Setting {
        name: "leader.imbalance.check.interval.seconds",
        default: "300",
        kind: int(1, 86400 * 365),
        unit: "s",
        doc: "How often the active controller restores preferred leaders (auto.leader.rebalance.enable).",
    },
    Setting {
        name: "controlled.shutdown.enable",
        default: "true",
        kind: Kind::Bool,
        unit: "",
        doc: "On SIGTERM, ask the active controller to move this broker's leaderships to other in-sync replicas (at most broker.session.timeout.ms) before stopping.",
    },
    Setting {
        name: "offsets.topic.replication.factor",
        default: "3",
        kind: int(1, 32767),
        unit: "",
        doc: "Replication factor of __consumer_offsets; the active controller creates it once that many brokers are live (when the controller is a combined node: at most the number of voters).",
    },
    Setting {
        name: "socket.request.max.bytes",
        default: "104857600",
        kind: int(1024, I32),
        unit: "bytes",
        doc: "Largest request frame accepted; larger ones close the connection.",
    },
    Setting {
        name: "queued.max.requests",
        default: "500",
        kind: int(1, 100_000),
        unit: "requests",
        doc: "Requests in flight per connection before reading pauses.",
    },
    Setting {
        name: "connection.inflight.max.bytes",
        default: "33554432",
        kind: int(1024, I32),
        unit: "bytes",
        doc: "Bytes of one connection's requests and their answers not yet written before reading pauses (TCP then pushes back); one request is always admitted.",
    },
    Setting {
        name: "max.connections",
        default: "2147483647",
        kind: int(1, I32),
        unit: "connections",
        doc: "Client connections the broker keeps at once, and never more than half the open-file limit; a connection past it is closed on accept and logged.",
    },
    Setting {
        name: "max.connections.per.ip",
        default: "2147483647",
        kind: int(1, I32),
        unit: "connections",
        doc: "Client connections from one IP address at once; past it new ones are closed on accept and logged.",
    },
    Setting {
        name: "connections.max.idle.ms",
        default: "600000",
        kind: int(1, i64::MAX),
        unit: "ms",
        doc: "Close a connection that sent no complete request and has none in flight for this long (a slowly dribbled frame does not count).",
    },
    Setting {
        name: "storage.unflushed.max.bytes",
        default: "8388608",
        kind: int(1, i64::MAX),
        unit: "bytes",
        doc: "Per-shard budget of produced bytes appended but not yet fsynced; while it is spent, produce requests wait (connections in turn, each connection's requests in order) and their connections stop reading.",
    },
    Setting {
        name: "fetch.max.bytes",
        default: "57671680",
        kind: int(1024, I32),
        unit: "bytes",
        doc: "Largest Fetch response the broker builds, whatever max_bytes the client asks for.",
    },
    Setting {
        name: "fetch.max.wait.ms",
        default: "30000",
        kind: int(0, I32),
        unit: "ms",
        doc: "Longest a Fetch long poll waits, whatever max_wait_ms the client asks for.",
    },
    Setting {
        name: "request.partitions.max",
        default: "10000",
        kind: int(1, I32),
        unit: "partitions",
        doc: "Partitions one CreateTopics or CreatePartitions request may create in all; past it the topics get INVALID_PARTITIONS.",
    },
    Setting {
        name: "broker.partitions.max",
        default: "20000",
        kind: int(1, I32),
        unit: "partitions",
        doc: "Partitions the broker holds in all topics; creations past it get INVALID_PARTITIONS.",
    },
    Setting {
        name: "request.deadline.ms",
        default: "330000",
        kind: int(1000, I32),
        unit: "ms",
        doc: "Longest any request waits for its answer (JoinGroup and SyncGroup excepted: the group's rebalance timeout bounds them). Past it the request is logged and answered REQUEST_TIMED_OUT where its answer carries an error code (Produce, Fetch, ListOffsets, DeleteRecords, offsets and group listings), otherwise its connection is closed. The default exceeds every wait a client asks for by default (a 300 s rebalance).",
    },
    Setting {
        name: "request.watchdog.ms",
        default: "60000",
        kind: int(100, I32),
        unit: "ms",
        doc: "A request unanswered for this long is logged as a warning with its API, client and correlation id.",
    },
    Setting {
        name: "auto.create.topics.enable",
        default: "true",
        kind: Kind::Bool,
        unit: "",
        doc: "Create unknown topics on Metadata or Produce.",
    },
    Setting {
        name: "num.partitions",
        default: "1",
        kind: int(1, 1_000_000),
        unit: "",
        doc: "Partitions of auto-created topics and of CreateTopics with -1.",
    },
    Setting {
        name: "default.replication.factor",
        default: "1",
        kind: int(1, 32767),
        unit: "",
        doc: "Replication factor of topics created without one; at most the live brokers.",
    },
    Setting {
        name: "message.max.bytes",
        default: "1048588",
        kind: int(0, I32),
        unit: "bytes",
        doc: "Default max.message.bytes of topics: largest record batch accepted.",
    },
    Setting {
        name: "log.segment.bytes",
        default: "1073741824",
        kind: int(14, I32),
        unit: "bytes",
        doc: "Default segment.bytes: roll a segment at this size.",
    },
    Setting {
        name: "log.roll.ms",
        default: "604800000",
        kind: int(1, i64::MAX),
        unit: "ms",
        doc: "Default segment.ms: roll a segment after this age.",
    },
    Setting {
        name: "log.retention.ms",
        default: "604800000",
        kind: int(-1, i64::MAX),
        unit: "ms",
        doc: "Default retention.ms; -1 keeps data forever.",
    },
    Setting {
        name: "log.retention.bytes",
        default: "-1",
        kind: int(-1, i64::MAX),
        unit: "bytes",
        doc: "Default retention.bytes per partition; -1 is unlimited.",
    },
    Setting {
        name: "log.message.timestamp.before.max.ms",
        default: "9223372036854775807",
        kind: int(0, i64::MAX),
        unit: "ms",
        doc: "Default message.timestamp.before.max.ms: a CreateTime record older than this is rejected with INVALID_TIMESTAMP.",
    },
    Setting {
        name: "log.message.timestamp.after.max.ms",
        default: "3600000",
        kind: int(0, i64::MAX),
        unit: "ms",
        doc: "Default message.timestamp.after.max.ms: a CreateTime record further in the future than this is rejected with INVALID_TIMESTAMP (Kafka 4.0's default).",
    },
    Setting {
        name: "log.index.interval.bytes",
        default: "4096",
        kind: int(0, I32),
        unit: "bytes",
        doc: "Default index.interval.bytes: bytes between sparse index entries.",
    },
    Setting {
        name: "log.retention.check.interval.ms",
        default: "300000",
        kind: int(1, i64::MAX),
        unit: "ms",
        doc: "How often each shard applies retention.",
    },
    Setting {
        name: "log.cleanup.policy",
        default: "delete",
        kind: Kind::Choice(CLEANUP_POLICIES),
        unit: "",
        doc: "Default cleanup.policy of topics: delete (retention), compact (keep the latest record per key), or both.",
    },
    Setting {
        name: "compression.type",
        default: "producer",
        kind: Kind::Choice(COMPRESSION_TYPES),
        unit: "",
        doc: "Default compression.type of topics: producer keeps batches as the producer compressed them; a codec (or uncompressed) has the broker recompress every batch in another codec before storing it.",
    },
    Setting {
        name: "compression.gzip.level",
        default: "-1",
        kind: int(-1, 9),
        unit: "",
        doc: "Default compression.gzip.level of topics: the gzip level the broker compresses at, 1-9, or -1 for zlib's default (6).",
    },
    Setting {
        name: "compression.lz4.level",
        default: "9",
        kind: int(1, 17),
        unit: "",
        doc: "Default compression.lz4.level of topics: 9 is LZ4's fast compressor, any other level its high-compression mode (past 12 as 12).",
    },
    Setting {
        name: "compression.zstd.level",
        default: "3",
        kind: int(-131_072, 22),
        unit: "",
        doc: "Default compression.zstd.level of topics: the zstd level the broker compresses at.",
    },
    Setting {
        name: "log.message.timestamp.type",
        default: "CreateTime",
        kind: Kind::Choice(&["CreateTime", "LogAppendTime"]),
        unit: "",
        doc: "Default message.timestamp.type: the producer's timestamps, or the broker's clock at append.",
    },
    Setting {
        name: "log.cleaner.enable",
        default: "true",
        kind: Kind::Bool,
        unit: "",
        doc: "Run the log cleaner (compaction of topics with cleanup.policy compact) on every shard.",
    },
    Setting {
        name: "log.cleaner.backoff.ms",
        default: "15000",
        kind: int(10, i64::MAX),
        unit: "ms",
        doc: "How long a shard's cleaner sleeps when no log needs cleaning.",
    },
    Setting {
        name: "log.cleaner.dedupe.buffer.size",
        default: "134217728",
        kind: int(1 << 20, i64::MAX),
        unit: "bytes",
        doc: "Per-shard memory for the cleaner's key map; a dirty section with more keys is cleaned in several passes.",
    },
    Setting {
        name: "log.cleaner.io.max.bytes.per.second",
        default: "9223372036854775807",
        kind: int(1, i64::MAX),
        unit: "bytes/s",
        doc: "Per-shard bound on the cleaner's reads plus writes.",
    },
    Setting {
        name: "log.cleaner.io.buffer.size",
        default: "524288",
        kind: int(8192, 1 << 30),
        unit: "bytes",
        doc: "Memory of a cleaner pass's I/O buffers: half for each segment read, half gathered before each write. Smaller reads delay produce's flushes less.",
    },
    Setting {
        name: "log.cleaner.min.cleanable.ratio",
        default: "0.5",
        kind: Kind::Ratio,
        unit: "",
        doc: "Default min.cleanable.dirty.ratio: clean a log once this share of it has not been cleaned.",
    },
    Setting {
        name: "log.cleaner.delete.retention.ms",
        default: "86400000",
        kind: int(0, i64::MAX),
        unit: "ms",
        doc: "Default delete.retention.ms: how long a tombstone stays readable after its segment was cleaned.",
    },
    Setting {
        name: "log.cleaner.min.compaction.lag.ms",
        default: "0",
        kind: int(0, i64::MAX),
        unit: "ms",
        doc: "Default min.compaction.lag.ms: records younger than this are never compacted.",
    },
    Setting {
        name: "log.cleaner.max.compaction.lag.ms",
        default: "9223372036854775807",
        kind: int(1, i64::MAX),
        unit: "ms",
        doc: "Default max.compaction.lag.ms: a log whose oldest uncleaned record is older than this is cleaned whatever its dirty ratio.",
    },
    Setting {
        name: "offsets.topic.segment.bytes",
        default: "104857600",
        kind: int(14, I32),
        unit: "bytes",
        doc: "segment.bytes of __consumer_offsets (kept small so the cleaner can compact it).",
    },
    Setting {
        name: "storage.cache.bytes",
        default: "268435456",
        kind: int(0, i64::MAX),
        unit: "bytes",
        doc: "Per-shard cache of recent batches served to fetches.",
    },
    Setting {
        name: "storage.readahead.bytes",
        default: "134217728",
        kind: int(0, i64::MAX),
        unit: "bytes",
        doc: "Per-shard bytes of read-ahead for sequential cold readers, held apart from the cache; 0 is off.",
    },
    Setting {
        name: "storage.max.open.files",
        default: "4096",
        kind: int(16, 1_000_000),
        unit: "files",
        doc: "Per-shard bound on open segment files; idle ones close first.",
    },
    Setting {
        name: "storage.flush.sync",
        default: "journal",
        kind: Kind::Choice(&["segment", "filesystem", "journal"]),
        unit: "",
        doc: "How a group commit makes what it wrote durable: segment (one fdatasync per segment written, a window of 64 logs at a time), filesystem (every log written, then one syncfs per data filesystem per cycle; that also writes back other processes' dirty pages on the filesystem) or journal (the default: a group commit of storage.journal.min.partitions partitions or more makes one write and one fdatasync in a per-shard write-ahead journal under <log.dirs>/__journal, the segments written behind and synced at checkpoints, replayed at start; smaller ones sync their segments as segment does).",
    },
    Setting {
        name: "storage.journal.bytes",
        default: "1073741824",
        kind: int(1 << 20, 1 << 40),
        unit: "bytes",
        doc: "With storage.flush.sync=journal: size of each of a shard's two journal files (created and filled with zeros the first time a group commit writes storage.journal.min.partitions partitions; kept for later starts); a checkpoint starts when the active one is half full, and cycles wait for it when the next one is three quarters full. At least 4 times storage.unflushed.max.bytes (checked at start).",
    },
    Setting {
        name: "storage.journal.min.partitions",
        default: "32",
        kind: int(1, 1_000_000),
        unit: "partitions",
        doc: "With storage.flush.sync=journal: a group commit that writes fewer partitions than this syncs their segment files as storage.flush.sync=segment does; from this many on it writes one journal record set and syncs only the journal. With few partitions the per-segment syncs are few, and the journal's second copy of every byte costs more CPU than they do. 1 journals every group commit.",
    },
    Setting {
        name: "storage.journal.behind.max.bytes",
        default: "268435456",
        kind: int(0, 1 << 40),
        unit: "bytes",
        doc: "With storage.flush.sync=journal: bytes per shard that are durable in the journal but not yet written into their segment files, held in memory (and readable from it) until the write-behind task writes them; beyond this, produce waits as it does at storage.unflushed.max.bytes. Larger values let the write-behind coalesce more records per partition (fewer, larger segment writes with many partitions).",
    },
    Setting {
        name: "storage.blocking.threads",
        default: "8",
        kind: int(1, 256),
        unit: "threads",
        doc: "Helper threads per shard for the file-system calls io_uring does not offer (directory fsyncs, small atomic files, renames, removals); one directory's calls run one at a time, different directories' in parallel, so many partitions' first segments and marks do not queue behind one fsync each.",
    },
    Setting {
        name: "offsets.topic.num.partitions",
        default: "50",
        kind: int(1, 1000),
        unit: "",
        doc: "Partitions of __consumer_offsets (fixed once created).",
    },
    Setting {
        name: "transaction.state.log.num.partitions",
        default: "50",
        kind: int(1, 1000),
        unit: "",
        doc: "Partitions of __transaction_state (fixed once created; it is created at the first FindCoordinator for a transactional id).",
    },
    Setting {
        name: "transaction.state.log.replication.factor",
        default: "3",
        kind: int(1, 32767),
        unit: "",
        doc: "Replication factor of __transaction_state (at most the live brokers when it is created).",
    },
    Setting {
        name: "transaction.state.log.min.isr",
        default: "2",
        kind: int(1, 32767),
        unit: "",
        doc: "min.insync.replicas of __transaction_state (at most its replication factor).",
    },
    Setting {
        name: "transaction.state.log.segment.bytes",
        default: "104857600",
        kind: int(14, I32),
        unit: "bytes",
        doc: "segment.bytes of __transaction_state (kept small so the cleaner can compact it).",
    },
    Setting {
        name: "transaction.max.timeout.ms",
        default: "900000",
        kind: int(1, I32),
        unit: "ms",
        doc: "Largest transaction.timeout.ms a producer may ask for (INVALID_TRANSACTION_TIMEOUT above it).",
    },
    Setting {
        name: "transaction.partition.verification.enable",
        default: "true",
        kind: Kind::Bool,
        unit: "",
        doc: "A partition leader asks the coordinator before a transactional batch starts its producer's transaction there (KIP-890), so a late batch cannot open a transaction nobody ends.",
    },
    Setting {
        name: "transactional.id.expiration.ms",
        default: "604800000",
        kind: int(1, I32),
        unit: "ms",
        doc: "A transactional id with no transaction for this long is forgotten by its coordinator.",
    },
    Setting {
        name: "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        default: "10000",
        kind: int(1, I32),
        unit: "ms",
        doc: "How often a transaction coordinator aborts transactions open past their timeout.",
    },
    Setting {
        name: "transaction.remove.expired.transaction.cleanup.interval.ms",
        default: "3600000",
        kind: int(1, I32),
        unit: "ms",
        doc: "How often a transaction coordinator forgets expired transactional ids.",
    },
    Setting {
        name: "group.max.size",
        default: "2147483647",
        kind: int(1, I32),
        unit: "",
        doc: "Most members a consumer group may have; a JoinGroup past it is GROUP_MAX_SIZE_REACHED, and a group loaded with more members (the setting lowered) rebalances.",
    },
    Setting {
        name: "offset.metadata.max.bytes",
        default: "4096",
        kind: int(0, I32),
        unit: "bytes",
        doc: "Longest metadata string an offset commit may carry; a longer one is OFFSET_METADATA_TOO_LARGE.",
    },
    Setting {
        name: "offsets.retention.minutes",
        default: "10080",
        kind: int(1, I32),
        unit: "min",
        doc: "Committed offsets of empty groups expire after this.",
    },
    Setting {
        name: "offsets.retention.check.interval.ms",
        default: "600000",
        kind: int(1, i64::MAX),
        unit: "ms",
        doc: "How often each shard expires committed offsets of empty groups.",
    },
    Setting {
        name: "group.initial.rebalance.delay.ms",
        default: "3000",
        kind: int(0, I32),
        unit: "ms",
        doc: "Wait for more members before the first rebalance of an empty group.",
    },
    Setting {
        name: "group.min.session.timeout.ms",
        default: "6000",
        kind: int(0, I32),
        unit: "ms",
        doc: "Smallest session.timeout.ms a member may ask for.",
    },
    Setting {
        name: "group.max.session.timeout.ms",
        default: "1800000",
        kind: int(0, I32),
        unit: "ms",
        doc: "Largest session.timeout.ms a member may ask for.",
    },
];
