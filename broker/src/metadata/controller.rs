//! The controller's decisions, made by the active controller (the raft leader) against
//! its speculative image (committed state plus its own proposals in flight): validate a
//! topic or config change and turn it into metadata records, place replicas, register,
//! fence and unfence brokers and move partition leadership. Pure logic: the quorum thread
//! (`crate::quorum`) proposes the records and answers once they commit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use sluice_proto::metadata::{
    FenceBrokerRecord, MetadataRecord, ProducerIdsRecord, Record, RegisterBrokerRecord,
    UnfenceBrokerRecord,
};

use super::elections::{self, Election, Reassignment};
use super::image::{MetadataImage, TopicId};
use crate::config::BrokerConfig;
use crate::groups::OFFSETS_TOPIC;

mod topic_ops;
/// Producer ids are handed out from blocks of this size, one record per block.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// A topic to create.
#[derive(Debug, Clone, Default)]
pub(crate) struct NewTopic {
    pub(crate) name: String,
    pub(crate) partitions: i32,
    pub(crate) replication_factor: i16,
    pub(crate) configs: Vec<(String, String)>,
    /// Replicas of each partition, chosen by the client (then `partitions` and
    /// `replication_factor` are -1); empty: the controller places them.
    pub(crate) assignments: Vec<Vec<i32>>,
}

/// Partitions to add to a topic.
#[derive(Debug, Clone, Default)]
pub(crate) struct NewPartitions {
    pub(crate) topic: String,
    /// The topic's partition count afterwards.
    pub(crate) count: i32,
    /// Replicas of each new partition, chosen by the client; empty: placed.
    pub(crate) assignments: Vec<Vec<i32>>,
}

/// A topic named by name or id.
#[derive(Debug, Clone)]
pub(crate) enum TopicRef {
    Name(String),
    Id(TopicId),
}

/// A config change on one topic: `None` value deletes the override.
#[derive(Debug, Clone)]
pub(crate) struct ConfigChange {
    pub(crate) topic: String,
    pub(crate) set: Vec<(String, Option<String>)>,
    /// Non-incremental AlterConfigs: overrides not named are removed.
    pub(crate) replace_all: bool,
}

/// Requests to the controller (sent to shard 0).
#[derive(Debug, Clone)]
pub(crate) enum MetadataOp {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        topics: Vec<TopicRef>,
    },
    CreatePartitions {
        topics: Vec<NewPartitions>,
        validate_only: bool,
    },
    AlterConfigs {
        changes: Vec<ConfigChange>,
        validate_only: bool,
    },
    AllocateProducerId,
    /// A broker's heartbeat (its first one registers it).
    Heartbeat(BrokerHeartbeat),
    /// A broker stopping cleanly: move its leaderships away now, keep it fenced.
    ControlledShutdown {
        node_id: i32,
        incarnation: Vec<u8>,
    },
    /// A partition's leader changes its ISR (Kafka's AlterPartition): valid only from the
    /// current leader at the current leader and partition epochs.
    AlterPartition(IsrChange),
    /// ElectLeaders: the named partitions, or every partition.
    ElectLeaders {
        election: Election,
        partitions: Option<Vec<(String, i32)>>,
    },
    /// AlterPartitionReassignments.
    Reassign(Vec<Reassignment>),
    /// SCRAM credentials and ACLs (`security_ops.rs`).
    Security(super::security_ops::SecurityOp),
}

/// What a leader asks of the controller about one partition's ISR.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IsrChange {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) leader: i32,
    pub(crate) leader_epoch: i32,
    pub(crate) partition_epoch: i32,
    pub(crate) isr: Vec<i32>,
}

/// What a broker tells the controller every `broker.heartbeat.interval.ms`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BrokerHeartbeat {
    pub(crate) node_id: i32,
    /// Random per process start: a new one means the broker restarted.
    pub(crate) incarnation: Vec<u8>,
    pub(crate) host: String,
    pub(crate) port: i32,
    pub(crate) rack: Option<String>,
    /// The metadata-log index the broker's shards have applied.
    pub(crate) applied: u64,
    /// A broker-only node's controller listener, where the leader sends it the log.
    pub(crate) controller_addr: Option<String>,
    /// Every listener's advertised endpoint.
    pub(crate) endpoints: Vec<sluice_proto::metadata::BrokerEndpoint>,
}

/// Per-topic (or per-resource) outcome.
#[derive(Debug, Clone, Default)]
pub(crate) struct TopicOutcome {
    pub(crate) name: String,
    pub(crate) topic_id: TopicId,
    pub(crate) error: i16,
    pub(crate) message: Option<String>,
    pub(crate) partitions: i32,
    pub(crate) replication_factor: i16,
}

#[derive(Debug, Clone)]
pub(crate) enum MetadataOpResult {
    Topics(Vec<TopicOutcome>),
    ProducerId(i64),
    /// The broker's registration epoch and whether it is still fenced.
    Heartbeat {
        epoch: i64,
        fenced: bool,
    },
    /// Per-partition outcomes (ElectLeaders, AlterPartitionReassignments).
    Partitions(Vec<PartitionOutcome>),
    /// Per user, ACL creation or deletion filter (`security_ops.rs`).
    Security(Vec<super::security_ops::SecurityOutcome>),
    Failed(i16, String),
}

/// One partition's outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PartitionOutcome {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) error: i16,
    pub(crate) message: Option<String>,
}

/// The active controller's state besides the image: producer ids handed out in memory
/// (`image.next_producer_id` is the durable block end) and when each broker last
/// heartbeat. Rebuilt by each new leader.
pub(crate) struct ControllerLogic {
    config: BrokerConfig,
    next_pid: i64,
    last_heartbeat: HashMap<i32, Instant>,
    session_timeout: Duration,
    /// Rotates where partition placement starts, so leaders spread across topics.
    placement_start: usize,
    /// Broker incarnations that asked to shut down: never unfenced again.
    shutting_down: std::collections::HashSet<(i32, Vec<u8>)>,
    /// When preferred leaders are next restored (`auto.leader.rebalance.enable`).
    next_rebalance: Instant,
    /// The previous `tick`: a long gap means this controller did not run (see `tick`).
    last_tick: Option<Instant>,
}

/// Kafka's legal topic names: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub(crate) fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!(
            "topic name must be 1..249 characters, got {}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "topic name '{name}' has characters outside [a-zA-Z0-9._-]"
        ));
    }
    Ok(())
}

impl ControllerLogic {
    /// A new leader's state: every registered broker gets a full session from `now`.
    pub(crate) fn new(config: BrokerConfig, image: &MetadataImage, now: Instant) -> Self {
        let session_timeout = Duration::from_millis(config.int("broker.session.timeout.ms") as u64);
        Self {
            next_pid: image.next_producer_id,
            last_heartbeat: image.brokers().map(|b| (b.node_id, now)).collect(),
            session_timeout,
            placement_start: rand::random::<u32>() as usize,
            shutting_down: Default::default(),
            next_rebalance: now + rebalance_interval(&config),
            last_tick: None,
            config,
        }
    }

    /// Validates `op` against `image` (the speculative image: committed plus proposed) and
    /// returns the records to propose as the entry at `index`, already applied to `image`,
    /// and the answer to give once they commit.
    pub(crate) fn decide(
        &mut self,
        image: &mut MetadataImage,
        index: u64,
        op: MetadataOp,
        now: Instant,
    ) -> (Vec<MetadataRecord>, MetadataOpResult) {
        let (records, result) = match op {
            MetadataOp::CreateTopics {
                topics,
                validate_only,
            } => self.create_topics(image, topics, validate_only),
            MetadataOp::DeleteTopics { topics } => self.delete_topics(image, topics),
            MetadataOp::CreatePartitions {
                topics,
                validate_only,
            } => self.create_partitions(image, topics, validate_only),
            MetadataOp::AlterConfigs {
                changes,
                validate_only,
            } => self.alter_configs(image, changes, validate_only),
            MetadataOp::AllocateProducerId => {
                let pid = self.next_pid.max(image.next_producer_id);
                self.next_pid = pid + 1;
                let mut recs = Vec::new();
                if self.next_pid > image.next_producer_id {
                    recs.push(MetadataRecord::new(Record::ProducerIds(
                        ProducerIdsRecord {
                            next_producer_id: pid + PRODUCER_ID_BLOCK,
                        },
                    )));
                }
                (recs, MetadataOpResult::ProducerId(pid))
            }
            MetadataOp::Heartbeat(hb) => return self.heartbeat(image, index, hb, now),
            MetadataOp::AlterPartition(change) => alter_partition(image, change),
            MetadataOp::ElectLeaders {
                election,
                partitions,
            } => {
                let (records, outcomes) =
                    elections::elect_leaders(image, index, election, partitions);
                (records, MetadataOpResult::Partitions(outcomes))
            }
            MetadataOp::Reassign(requests) => {
                let (records, outcomes) = elections::reassign(image, index, requests);
                (records, MetadataOpResult::Partitions(outcomes))
            }
            MetadataOp::Security(op) => {
                let (records, outcomes) = super::security_ops::apply(image, op);
                (records, MetadataOpResult::Security(outcomes))
            }
            MetadataOp::ControlledShutdown {
                node_id,
                incarnation,
            } => {
                let Some(b) = image.broker(node_id).cloned() else {
                    return (
                        Vec::new(),
                        MetadataOpResult::Heartbeat {
                            epoch: -1,
                            fenced: true,
                        },
                    );
                };
                if b.incarnation != incarnation {
                    return (
                        Vec::new(),
                        MetadataOpResult::Heartbeat {
                            epoch: b.epoch,
                            fenced: b.fenced,
                        },
                    );
                }
                self.shutting_down.insert((node_id, incarnation));
                let records = if b.fenced {
                    Vec::new()
                } else {
                    tracing::info!(
                        node = node_id,
                        "controlled shutdown: moving the broker's leaderships"
                    );
                    fence_records(image, node_id, b.epoch)
                };
                (
                    records,
                    MetadataOpResult::Heartbeat {
                        epoch: b.epoch,
                        fenced: true,
                    },
                )
            }
        };
        for r in &records {
            image.apply(index, r);
        }
        (records, result)
    }

    /// A broker's heartbeat: registers a new incarnation (fenced; the old one, if it led
    /// anything, loses its leaderships first), unfences a registered broker once its shards
    /// have applied the log up to its registration.
    fn heartbeat(
        &mut self,
        image: &mut MetadataImage,
        index: u64,
        hb: BrokerHeartbeat,
        now: Instant,
    ) -> (Vec<MetadataRecord>, MetadataOpResult) {
        self.last_heartbeat.insert(hb.node_id, now);
        let mut records = Vec::new();
        let current = image.broker(hb.node_id).cloned();
        let same = current.as_ref().is_some_and(|b| {
            b.incarnation == hb.incarnation
                && b.host == hb.host
                && b.port == hb.port
                && b.rack == hb.rack
                && b.controller_addr == hb.controller_addr
                && b.endpoints == hb.endpoints
        });
        if !same {
            if let Some(old) = current.as_ref().filter(|b| !b.fenced) {
                records.extend(fence_records(image, old.node_id, old.epoch));
            }
            let epoch = i64::try_from(index).unwrap_or(i64::MAX);
            records.push(MetadataRecord::new(Record::RegisterBroker(
                RegisterBrokerRecord {
                    node_id: hb.node_id,
                    incarnation_id: hb.incarnation,
                    epoch,
                    host: hb.host,
                    port: hb.port,
                    rack: hb.rack,
                    fenced: true,
                    controller_addr: hb.controller_addr,
                    endpoints: hb.endpoints,
                },
            )));
            for r in &records {
                image.apply(index, r);
            }
            tracing::info!(
                node = hb.node_id,
                epoch,
                "broker registered (fenced until caught up)"
            );
            return (
                records,
                MetadataOpResult::Heartbeat {
                    epoch,
                    fenced: true,
                },
            );
        }
        let Some(b) = current else {
            return (
                Vec::new(),
                MetadataOpResult::Heartbeat {
                    epoch: -1,
                    fenced: true,
                },
            );
        };
        let leaving = self
            .shutting_down
            .contains(&(b.node_id, b.incarnation.clone()));
        if b.fenced && !leaving && hb.applied >= u64::try_from(b.epoch).unwrap_or(u64::MAX) {
            records = unfence_records(image, b.node_id, b.epoch);
            for r in &records {
                image.apply(index, r);
            }
            tracing::info!(node = b.node_id, epoch = b.epoch, "broker unfenced");
            return (
                records,
                MetadataOpResult::Heartbeat {
                    epoch: b.epoch,
                    fenced: false,
                },
            );
        }
        (
            Vec::new(),
            MetadataOpResult::Heartbeat {
                epoch: b.epoch,
                fenced: b.fenced,
            },
        )
    }

    /// A tick more than half a session (and three raft ticks) after the previous one
    /// means this controller did not run meanwhile (a stopped or starved process): the brokers' heartbeats may be
    /// waiting unread in its sockets, so every session is credited the gap beyond that
    /// bound instead of all of them expiring at once, which would fence every broker and
    /// shrink every ISR (a broker that really died is fenced at most that much later, and
    /// still fenced when every tick comes late).
    fn credit_own_stall(&mut self, now: Instant) {
        let gap = self
            .last_tick
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last_tick = Some(now);
        // ticks come every controller.quorum.tick.ms: a few of those is no stall
        let tick = Duration::from_millis(self.config.int("controller.quorum.tick.ms") as u64);
        let threshold = (self.session_timeout / 2).max(tick * 3);
        if gap <= threshold {
            return;
        }
        // only the excess: a silent broker's age still grows by the threshold per late
        // tick, so one that died is fenced even if every tick comes late
        let credit = gap - threshold;
        tracing::warn!(
            gap_ms = gap.as_millis() as u64,
            credit_ms = credit.as_millis() as u64,
            "the active controller did not run for a while: broker sessions are credited the gap"
        );
        for t in self.last_heartbeat.values_mut() {
            *t = (*t + credit).min(now);
        }
    }

    /// Periodic duties of the active controller, as records for the entry at `index`:
    /// fence brokers whose session expired (their leaderships move to another in-sync
    /// replica), unclean elections where allowed, preferred leaders back every
    /// `leader.imbalance.check.interval.seconds` (when `auto.leader.rebalance.enable`),
    /// and create `__consumer_offsets` once enough brokers are alive.
    pub(crate) fn tick(
        &mut self,
        image: &mut MetadataImage,
        index: u64,
        now: Instant,
        voters: usize,
    ) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        self.credit_own_stall(now);
        let expired: Vec<(i32, i64)> = image
            .live_brokers()
            .filter(|b| {
                self.last_heartbeat
                    .get(&b.node_id)
                    .is_none_or(|t| now.duration_since(*t) > self.session_timeout)
            })
            .map(|b| (b.node_id, b.epoch))
            .collect();
        for (node, epoch) in expired {
            tracing::warn!(node, epoch, "broker session expired: fencing it");
            let recs = fence_records(image, node, epoch);
            for r in &recs {
                image.apply(index, r);
            }
            records.extend(recs);
        }
        let unclean = self.unclean_elections(image);
        for r in &unclean {
            image.apply(index, r);
        }
        records.extend(unclean);
        if now >= self.next_rebalance {
            self.next_rebalance = now + rebalance_interval(&self.config);
            if self.config.flag("auto.leader.rebalance.enable") {
                records.extend(elections::rebalance_leaders(image, index));
            }
        }
        if image.topic(OFFSETS_TOPIC).is_none() {
            let live = image.live_brokers().count();
            let want = (self.config.int("offsets.topic.replication.factor") as usize).min(voters);
            if live >= want.max(1) {
                let topic = NewTopic {
                    name: OFFSETS_TOPIC.to_string(),
                    partitions: self.config.int("offsets.topic.num.partitions") as i32,
                    replication_factor: want.min(live) as i16,
                    // compacted, as Kafka's: a coordinator loads the latest offsets only;
                    // and stored as written whatever the broker's compression.type
                    configs: vec![
                        ("cleanup.policy".into(), "compact".into()),
                        ("compression.type".into(), "producer".into()),
                        (
                            "segment.bytes".into(),
                            self.config.config_value("offsets.topic.segment.bytes"),
                        ),
                    ],
                    assignments: Vec::new(),
                };
                let (recs, result) = self.create_topics(image, vec![topic], false);
                if let MetadataOpResult::Topics(t) = &result {
                    if let Some(o) = t.iter().find(|o| o.error != 0) {
                        tracing::error!(error = o.error, message = ?o.message, "cannot create {OFFSETS_TOPIC}");
                    }
                }
                for r in &recs {
                    image.apply(index, r);
                }
                records.extend(recs);
            }
        }
        records
    }

    /// Partitions without a leader whose topic allows `unclean.leader.election.enable`
    /// (topic setting, else the broker's): the first live replica leads, alone in the ISR,
    /// with whatever its log holds. Records lost to that are Kafka's documented price.
    fn unclean_elections(&self, image: &MetadataImage) -> Vec<MetadataRecord> {
        let broker_default = self.config.flag("unclean.leader.election.enable");
        let mut out = Vec::new();
        for t in image.topics() {
            let allowed = t
                .configs
                .get("unclean.leader.election.enable")
                .map_or(broker_default, |v| v == "true");
            if !allowed {
                continue;
            }
            for (p, s) in t.parts.iter().enumerate() {
                if s.leader != -1 {
                    continue;
                }
                let Some(live) = s
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| image.broker(*r).is_some_and(|b| !b.fenced))
                else {
                    continue;
                };
                tracing::warn!(topic = %t.name, partition = p, leader = live, "unclean leader election: an out-of-sync replica leads");
                let mut next = s.clone();
                next.leader = live;
                next.isr = vec![live];
                next.leader_epoch += 1;
                next.partition_epoch += 1;
                out.push(next.to_record(&t.id, p as i32));
            }
        }
        out
    }
}

fn rebalance_interval(config: &BrokerConfig) -> Duration {
    Duration::from_secs(config.int("leader.imbalance.check.interval.seconds") as u64)
}

/// The partitions `node` leads or is in the ISR of, and their new state once it is
/// fenced: out of every ISR it shares, and its leaderships passed to the first other
/// in-sync replica that is alive (leader -1 if none; it then stays the last ISR member,
/// as Kafka keeps it).
fn fence_records(image: &MetadataImage, node: i32, epoch: i64) -> Vec<MetadataRecord> {
    let mut out = vec![MetadataRecord::new(Record::FenceBroker(
        FenceBrokerRecord {
            node_id: node,
            epoch,
        },
    ))];
    let alive = |n: i32| n != node && image.broker(n).is_some_and(|b| !b.fenced);
    for t in image.topics() {
        for (p, s) in t.parts.iter().enumerate() {
            if s.leader != node && !s.isr.contains(&node) {
                continue;
            }
            let mut next = s.clone();
            let others: Vec<i32> = s.isr.iter().copied().filter(|n| *n != node).collect();
            if !others.is_empty() {
                next.isr = others;
            }
            if s.leader == node {
                next.leader = next.isr.iter().copied().find(|n| alive(*n)).unwrap_or(-1);
                next.leader_epoch += 1;
            }
            next.partition_epoch += 1;
            out.push(next.to_record(&t.id, p as i32));
        }
    }
    out
}

/// Validates an ISR change from a partition's leader and gives its record: the leader and
/// both epochs must be current (a stale leader cannot change the ISR), the new ISR must
/// hold the leader and only replicas, and no fenced broker may join. The errors are
/// Kafka's AlterPartition errors.
fn alter_partition(image: &MetadataImage, c: IsrChange) -> (Vec<MetadataRecord>, MetadataOpResult) {
    let fail = |e: ResponseError, m: String| (Vec::new(), MetadataOpResult::Failed(e.code(), m));
    let Some(t) = image.topic(&c.topic) else {
        return fail(
            ResponseError::UnknownTopicOrPartition,
            format!("no topic {}", c.topic),
        );
    };
    let Some(s) = usize::try_from(c.partition)
        .ok()
        .and_then(|p| t.parts.get(p))
    else {
        return fail(
            ResponseError::UnknownTopicOrPartition,
            format!("no partition {}", c.partition),
        );
    };
    if s.leader != c.leader {
        return fail(
            ResponseError::NotLeaderOrFollower,
            format!("node {} does not lead it", c.leader),
        );
    }
    if s.leader_epoch != c.leader_epoch {
        return fail(
            ResponseError::FencedLeaderEpoch,
            format!("leader epoch {} is not {}", c.leader_epoch, s.leader_epoch),
        );
    }
    if s.partition_epoch != c.partition_epoch {
        return fail(
            ResponseError::InvalidUpdateVersion,
            format!(
                "partition epoch {} is not {}",
                c.partition_epoch, s.partition_epoch
            ),
        );
    }
    if !c.isr.contains(&c.leader) || c.isr.iter().any(|r| !s.replicas.contains(r)) {
        return fail(
            ResponseError::InvalidRequest,
            format!(
                "ISR {:?} must hold the leader and only replicas {:?}",
                c.isr, s.replicas
            ),
        );
    }
    if c.isr
        .iter()
        .any(|r| !s.isr.contains(r) && image.broker(*r).is_none_or(|b| b.fenced))
    {
        return fail(
            ResponseError::IneligibleReplica,
            format!("ISR {:?} names a fenced broker", c.isr),
        );
    }
    let mut next = s.clone();
    next.isr = c.isr;
    let mut next = elections::complete_if_ready(image, &next);
    next.partition_epoch = s.partition_epoch + 1;
    (
        vec![next.to_record(&t.id, c.partition)],
        MetadataOpResult::Topics(Vec::new()),
    )
}

/// A broker back in service leads every partition left without a leader whose last ISR
/// member it was. It rejoins other ISRs only when their leaders see it caught up
/// (AlterPartition), so a replica that missed writes never becomes leader.
fn unfence_records(image: &MetadataImage, node: i32, epoch: i64) -> Vec<MetadataRecord> {
    let mut out = vec![MetadataRecord::new(Record::UnfenceBroker(
        UnfenceBrokerRecord {
            node_id: node,
            epoch,
        },
    ))];
    for t in image.topics() {
        for (p, s) in t.parts.iter().enumerate() {
            if !s.replicas.contains(&node) {
                continue;
            }
            let mut next = s.clone();
            if next.leader == -1 && next.isr.contains(&node) {
                next.leader = node;
                next.leader_epoch += 1;
            }
            if next != *s {
                next.partition_epoch += 1;
                out.push(next.to_record(&t.id, p as i32));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::topic_ops::random_topic_id;
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a b", "ä", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
        let a = random_topic_id();
        assert_ne!(a, random_topic_id());
        assert_eq!(a[6] >> 4, 4);
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod logic_tests;
