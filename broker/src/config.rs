//! Broker configuration, declared once. Every setting has its Kafka-style name, default,
//! bounds and a one-line description in `SETTINGS`; the same table renders `sluice --help`,
//! validates the TOML file and `--set name=value` flags, and fills `BrokerConfig`.
//! Precedence: defaults < `--config FILE` < `--set` < dedicated flags (`--listen`, ...).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};

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

const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}
const I32: i64 = i32::MAX as i64;

/// The values of `cleanup.policy` (and `log.cleanup.policy`).
pub(crate) const CLEANUP_POLICIES: &[&str] =
    &["delete", "compact", "compact,delete", "delete,compact"];

/// The table. Kafka's names wherever Kafka has the setting.
pub(crate) const SETTINGS: &[Setting] = &[
    Setting {
        name: "listeners",
        default: "PLAINTEXT://127.0.0.1:9092",
        kind: Kind::Listeners,
        unit: "NAME://ip:port,...",
        doc: "Kafka listeners, bound on every shard (SO_REUSEPORT); each name's security protocol comes from listener.security.protocol.map. A bare ip:port is the listener PLAINTEXT.",
    },
    Setting {
        name: "listener.security.protocol.map",
        default: crate::listeners::DEFAULT_PROTOCOL_MAP,
        kind: Kind::Str,
        unit: "NAME:PROTOCOL,...",
        doc: "Security protocol of each listener name: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. CONTROLLER (the controller listener of controller.quorum.voters) takes SSL (mutual TLS), SASL_PLAINTEXT or SASL_SSL (SASL PLAIN, see sasl.mechanism.controller.protocol).",
    },
    Setting {
        name: "inter.broker.listener.name",
        default: "",
        kind: Kind::Str,
        unit: "name",
        doc: "The listener other brokers connect to (replication, transaction markers, lag); empty means PLAINTEXT if there is one, else the first listener.",
    },
    Setting {
        name: "ssl.certificate.location",
        default: "",
        kind: Kind::Str,
        unit: "path",
        doc: "PEM file of the broker's certificate chain, for SSL and SASL_SSL listeners (read at start and on SIGHUP).",
    },
    Setting {
        name: "ssl.key.location",
        default: "",
        kind: Kind::Str,
        unit: "path",
        doc: "PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1, unencrypted).",
    },
    Setting {
        name: "ssl.ca.location",
        default: "",
        kind: Kind::Str,
        unit: "path",
        doc: "PEM file of the CA certificates that client certificates must chain to (needed unless ssl.client.auth=none).",
    },
    Setting {
        name: "ssl.client.auth",
        default: "none",
        kind: Kind::Choice(&["none", "requested", "required"]),
        unit: "",
        doc: "Client certificates on SSL listeners: none, requested (verified when sent), required. A verified certificate's subject becomes the principal (User:CN=...,O=...). SASL_SSL listeners authenticate with SASL and ask for none (as Kafka, KIP-684).",
    },
    Setting {
        name: "ssl.enabled.protocols",
        default: "TLSv1.2,TLSv1.3",
        kind: Kind::Str,
        unit: "versions",
        doc: "TLS versions the TLS listeners accept: TLSv1.2, TLSv1.3 or both.",
    },
    Setting {
        name: "ssl.cipher.suites",
        default: "",
        kind: Kind::Str,
        unit: "suites",
        doc: "Cipher suites the TLS listeners accept, by IANA name (TLS_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, ...), comma-separated, most preferred first; the listed order wins over the client's. Empty: every suite rustls offers (TLS 1.3: AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305; TLS 1.2: the ECDHE AEAD suites), the client's preference deciding. A TLS version none of whose suites is listed is not negotiated (only TLS 1.3 suites: TLS 1.3 only). The broker's own TLS clients (inter-broker, controller) offer every suite; the server's list decides.",
    },
    Setting {
        name: "sasl.enabled.mechanisms",
        default: "SCRAM-SHA-256,SCRAM-SHA-512",
        kind: Kind::Str,
        unit: "mechanisms",
        doc: "SASL mechanisms SASL_PLAINTEXT and SASL_SSL listeners accept: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (all check the SCRAM credentials of the metadata log).",
    },
    Setting {
        name: "connections.max.reauth.ms",
        default: "0",
        kind: int(0, I32),
        unit: "ms",
        doc: "SASL session lifetime (KIP-368): clients must re-authenticate within it or their connection is closed at their next request; 0 means sessions never expire.",
    },
    Setting {
        name: "connection.failed.authentication.delay.ms",
        default: "100",
        kind: int(0, 60_000),
        unit: "ms",
        doc: "Delay before a failed SASL login is answered (and its connection closed), to slow password guessing.",
    },
    Setting {
        name: "sasl.mechanism.inter.broker.protocol",
        default: "SCRAM-SHA-512",
        kind: Kind::Choice(&["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]),
        unit: "",
        doc: "SASL mechanism this broker logs in to other brokers with when the inter-broker listener is SASL_PLAINTEXT or SASL_SSL.",
    },
    Setting {
        name: "sasl.mechanism.controller.protocol",
        default: "PLAIN",
        kind: Kind::Choice(&["PLAIN"]),
        unit: "",
        doc: "SASL mechanism of the controller listener when listener.security.protocol.map has CONTROLLER:SASL_PLAINTEXT or CONTROLLER:SASL_SSL. Only PLAIN, with the users of listener.name.controller.plain.sasl.jaas.config: the controllers must authenticate each other before the metadata log (and its SCRAM credentials) can be read.",
    },
    Setting {
        name: "listener.name.controller.plain.sasl.jaas.config",
        default: "",
        kind: Kind::Str,
        unit: "JAAS",
        doc: "The controller listener's PLAIN login, as Kafka writes it: ...PlainLoginModule required username=\"n1\" password=\"...\" user_n1=\"...\" user_n2=\"...\"; username/password is this node's login toward the controllers, each user_NAME=\"PASSWORD\" a login the controller listener accepts.",
    },
    Setting {
        name: "sasl.jaas.config",
        default: "",
        kind: Kind::Str,
        unit: "JAAS",
        doc: "This broker's credentials toward other brokers on a SASL inter-broker listener, as Kafka writes them: ...ScramLoginModule required username=\"broker\" password=\"...\"; (only username and password are read).",
    },
    Setting {
        name: "authorizer.class.name",
        default: "",
        kind: Kind::Str,
        unit: "class",
        doc: "Turns on ACL authorization: org.apache.kafka.metadata.authorizer.StandardAuthorizer (or StandardAuthorizer); empty allows every request.",
    },
    Setting {
        name: "super.users",
        default: "",
        kind: Kind::Str,
        unit: "principals",
        doc: "Principals allowed everything whatever the ACLs, separated by ';' (User:admin;User:CN=broker1).",
    },
    Setting {
        name: "allow.everyone.if.no.acl.found",
        default: "false",
        kind: Kind::Bool,
        unit: "",
        doc: "With an authorizer: allow a request on a resource that no ACL names at all.",
    },
    Setting {
        name: "metrics.listen",
        default: "127.0.0.1:9644",
        kind: Kind::Str,
        unit: "ip:port",
        doc: "Address of the HTTP endpoint served by shard 0: GET /metrics (Prometheus text format), /health, /ready. Empty turns it off. If it cannot be bound the broker logs an error and serves without it.",
    },
    Setting {
        name: "advertised.listeners",
        default: "",
        kind: Kind::Listeners,
        unit: "NAME://host:port,...",
        doc: "Endpoints given to clients in Metadata, per listener name; a listener not named here advertises its bind address. A bare host:port names the only listener.",
    },
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
        doc: "Longest any request waits for its answer (JoinGroup and SyncGroup excepted: the group's rebalance timeout bounds them). Past it the request is logged and answered REQUEST_TIMED_OUT where its answer carries an error code (Produce, Fetch, ListOffsets, offsets and group listings), otherwise its connection is closed. The default exceeds every wait a client asks for by default (a 300 s rebalance).",
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

/// The metadata quorum as configured (see `BrokerConfig::quorum`).
#[derive(Debug, Clone)]
pub struct Quorum {
    pub node: i32,
    /// Roles: a broker serves Kafka clients; a controller is a voter of the quorum.
    pub broker: bool,
    pub controller: bool,
    /// Voter ids and their controller addresses; empty for a single-node quorum.
    pub voters: Vec<(i32, SocketAddr)>,
    /// Where this node's controller listener binds, if it has one.
    pub listener: Option<SocketAddr>,
    /// The configured or derived cluster id; `None` lets a single node pick a random one.
    pub cluster_id: Option<String>,
}

impl Quorum {
    /// Voter ids, this node alone for a single-node quorum.
    pub fn voter_ids(&self) -> Vec<i32> {
        if self.voters.is_empty() {
            vec![self.node]
        } else {
            self.voters.iter().map(|(id, _)| *id).collect()
        }
    }
}

fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .with_context(|| format!("'{addr}' is not host:port"))?
        .next()
        .ok_or_else(|| anyhow!("'{addr}' resolves to no address"))
}

/// A cluster id every voter derives alike from the voter list (FNV-1a, base64url).
fn derived_cluster_id(voters: &str) -> String {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in voters.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..22)
        .map(|i| ALPHABET[((h >> (i * 6)) & 63) as usize] as char)
        .collect()
}

/// The broker's resolved settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    values: BTreeMap<&'static str, String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            values: SETTINGS
                .iter()
                .map(|s| (s.name, s.default.to_string()))
                .collect(),
        }
    }
}

/// A setting whose value is a secret (a JAAS line holds passwords): DescribeConfigs
/// reports it as sensitive with no value, as Kafka does for its PASSWORD settings.
pub(crate) fn sensitive(name: &str) -> bool {
    name.ends_with("sasl.jaas.config") || name.contains("password")
}

fn setting(name: &str) -> anyhow::Result<&'static Setting> {
    SETTINGS
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| anyhow!("unknown setting '{name}' (see sluice --help)"))
}

fn validate(s: &Setting, value: &str) -> anyhow::Result<()> {
    match s.kind {
        Kind::Int { min, max } => {
            let v: i64 = value
                .trim()
                .parse()
                .with_context(|| format!("{} must be an integer, got '{value}'", s.name))?;
            if v < min || v > max {
                bail!("{} must be within [{min}, {max}], got {v}", s.name);
            }
        }
        Kind::Ratio => {
            let v: f64 = value
                .trim()
                .parse()
                .with_context(|| format!("{} must be a number, got '{value}'", s.name))?;
            if !(0.0..=1.0).contains(&v) {
                bail!("{} must be within [0, 1], got {v}", s.name);
            }
        }
        Kind::Choice(options) => {
            if !options.contains(&value) {
                bail!("{} must be one of {options:?}, got '{value}'", s.name);
            }
        }
        Kind::Bool => {
            if value != "true" && value != "false" {
                bail!("{} must be true or false, got '{value}'", s.name);
            }
        }
        Kind::Listeners => crate::listeners::validate_list(s.name, value)?,
        Kind::Str => {}
    }
    Ok(())
}

/// Where the shard threads run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinning {
    /// Each shard pinned to its own CPU, spread over every online CPU.
    Spread,
    /// Each shard pinned to its own CPU among these.
    Cpus(Vec<usize>),
    /// Not pinned: the kernel schedules the shard threads.
    Unpinned,
}

/// `""` → every CPU, `none` → unpinned, `0-3,6` → those CPUs.
fn parse_cpuset(value: &str) -> anyhow::Result<Pinning> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Pinning::Spread);
    }
    if value == "none" {
        return Ok(Pinning::Unpinned);
    }
    let cpu = |t: &str| -> anyhow::Result<usize> {
        t.trim()
            .parse::<usize>()
            .ok()
            .filter(|c| *c < 4096)
            .with_context(|| format!("cpuset: '{t}' is not a CPU number"))
    };
    let mut cpus = Vec::new();
    for part in value.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (cpu(a)?, cpu(b)?);
                if a > b {
                    bail!("cpuset: the range {a}-{b} is empty");
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(cpu(part)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(Pinning::Cpus(cpus))
}

impl BrokerConfig {
    /// Sets one setting by name, validating the value.
    pub fn set(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        let s = setting(name)?;
        validate(s, value)?;
        if s.name == "cpuset" {
            parse_cpuset(value)?;
        }
        if s.name == "ssl.enabled.protocols" {
            let ok = value
                .split(',')
                .all(|v| matches!(v.trim(), "TLSv1.2" | "TLSv1.3"));
            if !ok || value.trim().is_empty() {
                bail!("ssl.enabled.protocols must list TLSv1.2 and/or TLSv1.3, got '{value}'");
            }
        }
        if s.name == "ssl.cipher.suites" {
            crate::tls::provider(value)?;
        }
        if s.name == "sasl.enabled.mechanisms" {
            for m in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                if !crate::handlers::sasl::MECHANISMS.contains(&m.to_ascii_uppercase().as_str()) {
                    bail!("sasl.enabled.mechanisms: {m} is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)");
                }
            }
        }
        if s.name == "authorizer.class.name"
            && !value.trim().is_empty()
            && !crate::access::AUTHORIZERS.contains(&value.trim())
        {
            bail!(
                "authorizer.class.name: {value} is not supported (use {})",
                crate::access::AUTHORIZERS[0]
            );
        }
        if s.name == "super.users" {
            crate::security::principal::parse_super_users(value)
                .map_err(|e| anyhow!("super.users: {e}"))?;
        }
        if s.name == "listener.security.protocol.map" {
            crate::listeners::parse_protocol_map(value)?;
        }
        if s.name == "metrics.listen" && !value.trim().is_empty() {
            value.trim().parse::<SocketAddr>().with_context(|| {
                format!("metrics.listen must be ip:port or empty, got '{value}'")
            })?;
        }
        self.values.insert(s.name, value.to_string());
        Ok(())
    }

    /// Applies a TOML file of `name = value` pairs (Kafka names, quoted where they have dots).
    pub fn apply_toml(&mut self, text: &str) -> anyhow::Result<()> {
        let table: toml::Table = text.parse().context("config file is not valid TOML")?;
        for (k, v) in table {
            let value = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => bail!("setting '{k}' has an unsupported value {other}"),
            };
            self.set(&k, &value)?;
        }
        Ok(())
    }

    /// The current value of a setting as text.
    pub(crate) fn config_value(&self, name: &str) -> String {
        self.get(name).to_string()
    }
    fn get(&self, name: &str) -> &str {
        debug_assert!(
            SETTINGS.iter().any(|s| s.name == name),
            "setting '{name}' is not declared in SETTINGS"
        );
        self.values.get(name).map(String::as_str).unwrap_or("")
    }
    pub(crate) fn int(&self, name: &str) -> i64 {
        self.get(name).trim().parse().unwrap_or(0) // ok: validated on set
    }
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.get(name) == "true"
    }
    /// The listeners, checked together (see `listeners.rs`).
    pub(crate) fn listeners(&self) -> anyhow::Result<crate::listeners::Listeners> {
        crate::listeners::parse(
            self.get("listeners"),
            self.get("advertised.listeners"),
            self.get("listener.security.protocol.map"),
            self.get("inter.broker.listener.name"),
        )
    }
    /// Host and port other brokers reach this one on (the inter-broker listener's
    /// advertised endpoint); None when the listener settings do not parse.
    pub fn advertised(&self) -> Option<(String, i32)> {
        let l = self.listeners().ok()?;
        let ib = l.inter_broker();
        Some((ib.advertised_host.clone(), ib.advertised_port))
    }
    /// Where the metrics endpoint listens; None when `metrics.listen` is empty (off).
    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        self.get("metrics.listen").trim().parse().ok() // ok: validated on set
    }
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.get("log.dirs"))
    }
    pub fn cores(&self) -> usize {
        match (self.int("cores"), self.pinning()) {
            (0, Pinning::Cpus(cpus)) => cpus.len().max(1),
            (0, _) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            (n, _) => n as usize,
        }
    }
    /// Where the shard threads run (`cpuset`, validated when set).
    pub fn pinning(&self) -> Pinning {
        parse_cpuset(self.get("cpuset")).unwrap_or(Pinning::Spread) // ok: validated on set
    }
    pub(crate) fn node_id(&self) -> i32 {
        self.int("node.id") as i32
    }
    pub(crate) fn str_value(&self, name: &str) -> &str {
        self.get(name)
    }

    /// Settings that depend on each other: with `storage.flush.sync=journal`, a journal
    /// file holds at least 4 unflushed budgets (a cycle's record sets must fit the quarter
    /// of the active file a cycle leaves free; smaller, every cycle's logs would fail).
    pub fn check_storage(&self) -> anyhow::Result<()> {
        let (journal, budget) = (
            self.int("storage.journal.bytes"),
            self.int("storage.unflushed.max.bytes"),
        );
        if self.get("storage.flush.sync") == "journal" && journal < budget.saturating_mul(4) {
            bail!(
                "storage.journal.bytes ({journal}) must be at least 4 times storage.unflushed.max.bytes ({budget}) with storage.flush.sync=journal"
            );
        }
        Ok(())
    }

    /// The metadata quorum this node belongs to, checked: the voters parse, ids are unique,
    /// this node is one of them, roles are supported. Errors say what to fix.
    pub fn quorum(&self) -> anyhow::Result<Quorum> {
        let node = self.node_id();
        let roles: Vec<&str> = self
            .get("process.roles")
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .collect();
        if roles.iter().any(|r| *r != "broker" && *r != "controller") {
            bail!(
                "process.roles must name broker, controller or both, got '{}'",
                self.get("process.roles")
            );
        }
        let (broker, controller) = (roles.contains(&"broker"), roles.contains(&"controller"));
        if !broker && !controller {
            bail!("process.roles must name broker, controller or both");
        }
        if node < 1 {
            bail!("node.id must be at least 1 (raft ids are nonzero), got {node}");
        }
        let text = self.get("controller.quorum.voters").trim();
        let mut voters = Vec::new();
        if !text.is_empty() {
            for part in text.split(',') {
                let part = part.trim();
                let (id, addr) = part.split_once('@').ok_or_else(|| {
                    anyhow!("controller.quorum.voters: '{part}' is not id@host:port")
                })?;
                let id: i32 = id.trim().parse().map_err(|_| {
                    anyhow!("controller.quorum.voters: '{id}' in '{part}' is not a node id")
                })?;
                if id < 1 {
                    bail!("controller.quorum.voters: node ids start at 1, got {id}");
                }
                let addr: SocketAddr = resolve(addr.trim())
                    .with_context(|| format!("controller.quorum.voters: address of node {id}"))?;
                if voters.iter().any(|(v, _)| *v == id) {
                    bail!("controller.quorum.voters names node {id} twice");
                }
                voters.push((id, addr));
            }
            let voter = voters.iter().any(|(v, _)| *v == node);
            if controller && !voter {
                bail!(
                    "node.id={node} has the controller role but is not one of controller.quorum.voters ({text})"
                );
            }
            if !controller && voter {
                bail!(
                    "node.id={node} is one of controller.quorum.voters ({text}) but process.roles has no controller"
                );
            }
        } else if !(broker && controller) {
            bail!(
                "process.roles={} needs controller.quorum.voters: only a combined node can run alone",
                self.get("process.roles")
            );
        }
        let listener = match self.get("controller.listener").trim() {
            "" => voters.iter().find(|(v, _)| *v == node).map(|(_, a)| *a),
            a => Some(resolve(a).context("controller.listener")?),
        };
        if !voters.is_empty() && listener.is_none() {
            bail!("a broker-only node needs controller.listener (where the quorum's leader reaches it)");
        }
        let cluster_id = match self.get("cluster.id").trim() {
            "" if voters.is_empty() => None,
            "" => Some(derived_cluster_id(text)),
            id => {
                if id.len() > 64
                    || !id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    bail!("cluster.id must be 1..64 characters of [A-Za-z0-9_-], got '{id}'");
                }
                Some(id.to_string())
            }
        };
        Ok(Quorum {
            node,
            broker,
            controller,
            voters,
            listener,
            cluster_id,
        })
    }

    /// Renders the settings table for `--help` and docs.
    pub fn render_table() -> String {
        let mut out = String::from("SETTINGS (config file keys and --set NAME=VALUE):\n");
        for s in SETTINGS {
            let bounds = match s.kind {
                Kind::Int { min, max } => format!(" [{min}..{max}]"),
                Kind::Bool => " [true|false]".into(),
                Kind::Ratio => " [0..1]".into(),
                Kind::Choice(options) => format!(" [{}]", options.join("|")),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  {:<34} default {:?}{}{}\n      {}\n",
                s.name,
                s.default,
                if s.unit.is_empty() {
                    String::new()
                } else {
                    format!(" {}", s.unit)
                },
                bounds,
                s.doc
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuset_values() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.pinning(), Pinning::Spread);
        c.set("cpuset", "none").unwrap(); // ok: test
        assert_eq!(c.pinning(), Pinning::Unpinned);
        c.set("cpuset", "3,0-1,1").unwrap(); // ok: test
        assert_eq!(c.pinning(), Pinning::Cpus(vec![0, 1, 3]));
        assert_eq!(c.cores(), 3);
        c.set("cores", "2").unwrap(); // ok: test
        assert_eq!(c.cores(), 2);
        for bad in ["all", "2-1", "1,,2", "-1", "x-3", "5000"] {
            assert!(c.set("cpuset", bad).is_err(), "{bad}");
        }
        assert_eq!(c.pinning(), Pinning::Cpus(vec![0, 1, 3]));
    }

    #[test]
    fn a_journal_smaller_than_four_unflushed_budgets_is_refused() {
        let mut c = BrokerConfig::default();
        c.set("storage.flush.sync", "segment").unwrap(); // ok: test
        c.set("storage.journal.bytes", "16777216").unwrap(); // ok: test
        assert!(
            c.check_storage().is_ok(),
            "segment mode ignores the journal's size"
        );
        c.set("storage.flush.sync", "journal").unwrap(); // ok: test
        let e = c.check_storage().unwrap_err().to_string(); // ok: test
        assert!(e.contains("storage.journal.bytes"), "{e}");
        c.set("storage.unflushed.max.bytes", "4194304").unwrap(); // ok: test
        assert!(c.check_storage().is_ok());
        assert!(BrokerConfig::default().check_storage().is_ok());
    }

    #[test]
    fn metrics_listen_is_an_address_or_off() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.metrics_listen().map(|a| a.port()), Some(9644));
        c.set("metrics.listen", "").unwrap(); // ok: test
        assert_eq!(c.metrics_listen(), None);
        c.set("metrics.listen", "0.0.0.0:9100").unwrap(); // ok: test
        assert_eq!(c.metrics_listen().map(|a| a.port()), Some(9100));
        for bad in ["9644", "localhost", "1.2.3.4:x"] {
            assert!(c.set("metrics.listen", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_validate_and_layer() {
        for s in SETTINGS {
            validate(s, s.default).unwrap(); // ok: test
        }
        let mut c = BrokerConfig::default();
        assert_eq!(c.listeners().unwrap().inter_broker().bind.port(), 9092); // ok: test
        c.apply_toml("\"num.partitions\" = 3\n\"log.dirs\" = \"/x\"\n")
            .unwrap(); // ok: test
        assert_eq!(c.int("num.partitions"), 3);
        assert_eq!(c.data_dir(), PathBuf::from("/x"));
        assert!(c.set("num.partitions", "0").is_err());
        assert!(c.set("nope", "1").is_err());
        assert!(c.set("auto.create.topics.enable", "yes").is_err());
        let q = c.quorum().unwrap(); // ok: test
        assert!(q.voters.is_empty() && q.listener.is_none() && q.cluster_id.is_none());
        assert_eq!(q.voter_ids(), vec![1]);
        assert!(q.broker && q.controller);
        c.set(
            "controller.quorum.voters",
            "1@127.0.0.1:9093,2@127.0.0.1:9094",
        )
        .unwrap(); // ok: test
        let q = c.quorum().unwrap(); // ok: test
        assert_eq!(q.listener.map(|a| a.port()), Some(9093));
        assert!(q.cluster_id.is_some());
        c.set("node.id", "3").unwrap(); // ok: test
        assert!(c.quorum().is_err(), "a controller must be a voter");
        c.set("process.roles", "broker").unwrap(); // ok: test
        assert!(
            c.quorum().is_err(),
            "a broker-only node needs controller.listener"
        );
        c.set("controller.listener", "127.0.0.1:9095").unwrap(); // ok: test
        let q = c.quorum().unwrap(); // ok: test
        assert!(q.broker && !q.controller);
        c.set("node.id", "2").unwrap(); // ok: test
        assert!(c.quorum().is_err(), "a voter must have the controller role");
        c.set("controller.quorum.voters", "").unwrap(); // ok: test
        assert!(c.quorum().is_err(), "a broker alone has no quorum");
        c.set("advertised.listeners", "example:19092").unwrap(); // ok: test
        let l = c.listeners().unwrap(); // ok: test
        assert_eq!(l.all[0].advertised_host, "example");
        assert_eq!(l.all[0].advertised_port, 19092);
        assert!(BrokerConfig::render_table().contains("log.retention.ms"));
    }
}
