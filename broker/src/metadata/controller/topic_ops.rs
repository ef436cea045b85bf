//! The controller's topic operations (`ControllerLogic` methods, `controller.rs`):
//! CreateTopics with replica placement, DeleteTopics, CreatePartitions and
//! IncrementalAlterConfigs on topics, each validated against the speculative image and
//! turned into metadata records with one outcome per topic.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::ResponseError;
use sluice_proto::metadata::{
    ConfigRecord, MetadataRecord, Record, RemoveTopicRecord, TopicRecord,
};

use super::{
    validate_topic_name, ConfigChange, ControllerLogic, MetadataOpResult, NewPartitions, NewTopic,
    TopicOutcome, TopicRef,
};
use crate::config::BrokerConfig;
use crate::metadata::image::{MetadataImage, PartitionState, TopicId};
use crate::metadata::topic_config;

/// New partitions one request may still create: bounded per request
/// (`request.partitions.max`) and by the broker's total (`broker.partitions.max`).
pub(super) struct PartitionBudget {
    request_left: i64,
    broker_left: i64,
}

impl PartitionBudget {
    pub(super) fn new(image: &MetadataImage, config: &BrokerConfig) -> Self {
        let held: i64 = image.topics().map(|t| i64::from(t.partitions)).sum();
        Self {
            request_left: config.int("request.partitions.max"),
            broker_left: config.int("broker.partitions.max") - held,
        }
    }

    pub(super) fn take(&mut self, n: i64) -> Result<(), String> {
        if n > self.request_left {
            return Err(format!(
                "{n} new partitions exceed what this request may still create ({} of request.partitions.max).",
                self.request_left.max(0)
            ));
        }
        if n > self.broker_left {
            return Err(format!(
                "{n} new partitions exceed what this broker may still hold ({} of broker.partitions.max).",
                self.broker_left.max(0)
            ));
        }
        self.request_left -= n;
        self.broker_left -= n;
        Ok(())
    }
}

pub(super) fn random_topic_id() -> TopicId {
    let mut id: TopicId = rand::random();
    while id == [0; 16] {
        id = rand::random(); // the all-zero id means "no id" in Kafka's protocol
    }
    // RFC 4122 version 4 bits, as Kafka's Uuid.randomUuid.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

pub(super) fn outcome(name: &str, error: ResponseError, message: String) -> TopicOutcome {
    TopicOutcome {
        name: name.to_string(),
        error: error.code(),
        message: Some(message),
        ..Default::default()
    }
}

/// Replica lists chosen by a client: each non-empty, without repeats, of live brokers, and
/// all of one length (`rf` when given). The message is Kafka's INVALID_REPLICA_ASSIGNMENT
/// reason.
pub(super) fn check_assignments(
    image: &MetadataImage,
    lists: &[Vec<i32>],
    rf: Option<usize>,
) -> Result<(), String> {
    let want = rf.or_else(|| lists.first().map(Vec::len)).unwrap_or(0);
    for (p, list) in lists.iter().enumerate() {
        if list.is_empty() {
            return Err(format!("Partition {p} has no replicas."));
        }
        if list.len() != want {
            return Err(format!(
                "Partition {p} has {} replicas; every partition must have {want}.",
                list.len()
            ));
        }
        let unique: std::collections::BTreeSet<i32> = list.iter().copied().collect();
        if unique.len() != list.len() {
            return Err(format!("Partition {p} names a broker twice: {list:?}."));
        }
        if let Some(b) = list
            .iter()
            .find(|b| image.broker(**b).is_none_or(|b| b.fenced))
        {
            return Err(format!(
                "The manual partition assignment includes broker {b}, which is not live."
            ));
        }
    }
    Ok(())
}

/// A new partition: every replica in sync, the first one leads, at the image's first
/// leader epoch for new partitions (above every epoch of a removed topic, whose name this
/// one may reuse).
pub(super) fn new_partition(image: &MetadataImage, replicas: Vec<i32>) -> PartitionState {
    PartitionState {
        leader: replicas.first().copied().unwrap_or(-1),
        isr: replicas.clone(),
        replicas,
        leader_epoch: image.next_leader_epoch,
        partition_epoch: 0,
        adding: Vec::new(),
        removing: Vec::new(),
    }
}

pub(super) fn config_record(topic: &str, name: &str, value: Option<String>) -> MetadataRecord {
    MetadataRecord::new(Record::Config(ConfigRecord {
        resource_type: 2,
        resource_name: topic.to_string(),
        name: name.to_string(),
        value,
    }))
}

impl ControllerLogic {
    /// Replica lists for `count` new partitions with `rf` replicas each, from partition
    /// `first` on: round robin over the live brokers, ordered so that racks alternate (as
    /// Kafka's rack-aware assignment), starting where the last placement stopped so that
    /// leaders (the first replica) spread evenly. `None` when rf exceeds the live brokers.
    pub(super) fn place(
        &mut self,
        image: &MetadataImage,
        first: i32,
        count: i32,
        rf: usize,
    ) -> Option<Vec<Vec<i32>>> {
        let mut by_rack: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for b in image.live_brokers() {
            by_rack
                .entry(b.rack.clone().unwrap_or_default())
                .or_default()
                .push(b.node_id);
        }
        let mut order = Vec::new();
        let mut columns: Vec<std::vec::IntoIter<i32>> =
            by_rack.into_values().map(|v| v.into_iter()).collect();
        loop {
            let before = order.len();
            for c in columns.iter_mut() {
                order.extend(c.next());
            }
            if order.len() == before {
                break;
            }
        }
        let n = order.len();
        if rf == 0 || rf > n {
            return None;
        }
        let rack_of: HashMap<i32, Option<String>> = image
            .live_brokers()
            .map(|b| (b.node_id, b.rack.clone()))
            .collect();
        let racks = rack_of
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len();
        let start = self.placement_start;
        self.placement_start = self.placement_start.wrapping_add(count.max(0) as usize);
        Some(
            (0..count)
                .map(|i| {
                    let p = start.wrapping_add((first + i) as usize);
                    let lead = p % n;
                    // Kafka's replicaIndex: followers of one leader shift per round so
                    // they spread; from there, the first broker not chosen yet, on a rack
                    // not used yet while one is left
                    let shift = if n > 1 { (p / n) % (n - 1) } else { 0 };
                    let mut chosen = vec![order[lead]];
                    for k in 1..rf {
                        let from = (lead + 1 + (shift + k - 1) % (n - 1)) % n;
                        let used: std::collections::HashSet<&Option<String>> =
                            chosen.iter().filter_map(|b| rack_of.get(b)).collect();
                        let fresh_rack_left = used.len() < racks;
                        let pick = (0..n).map(|step| order[(from + step) % n]).find(|b| {
                            !chosen.contains(b)
                                && (!fresh_rack_left
                                    || rack_of.get(b).is_none_or(|r| !used.contains(r)))
                        });
                        chosen.extend(pick);
                    }
                    chosen
                })
                .collect(),
        )
    }

    pub(super) fn create_topics(
        &mut self,
        image: &mut MetadataImage,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> (Vec<MetadataRecord>, MetadataOpResult) {
        let mut records = Vec::new();
        let mut outcomes = Vec::new();
        let default_partitions = self.config.int("num.partitions") as i32;
        let default_rf = self.config.int("default.replication.factor");
        let mut budget = PartitionBudget::new(image, &self.config);
        for mut t in topics {
            for (k, v) in t.configs.iter_mut() {
                *v = topic_config::normalize(k, v);
            }
            if let Err(m) = validate_topic_name(&t.name) {
                outcomes.push(outcome(&t.name, ResponseError::InvalidTopicException, m));
                continue;
            }
            if image.topic(&t.name).is_some() {
                outcomes.push(outcome(
                    &t.name,
                    ResponseError::TopicAlreadyExists,
                    format!("Topic '{}' already exists.", t.name),
                ));
                continue;
            }
            if let Some(other) = image.colliding_topic(&t.name) {
                outcomes.push(outcome(
                    &t.name,
                    ResponseError::InvalidTopicException,
                    format!("Topic '{}' collides with existing topic: {other}", t.name),
                ));
                continue;
            }
            if !t.assignments.is_empty() {
                if let Err(m) = check_assignments(image, &t.assignments, None) {
                    outcomes.push(outcome(&t.name, ResponseError::InvalidReplicaAssignment, m));
                    continue;
                }
            }
            let partitions = if !t.assignments.is_empty() {
                t.assignments.len() as i32
            } else if t.partitions == -1 {
                default_partitions
            } else {
                t.partitions
            };
            if partitions < 1 {
                outcomes.push(outcome(
                    &t.name,
                    ResponseError::InvalidPartitions,
                    format!("Number of partitions must be at least 1, got {partitions}."),
                ));
                continue;
            }
            if let Err(m) = budget.take(i64::from(partitions)) {
                outcomes.push(outcome(&t.name, ResponseError::InvalidPartitions, m));
                continue;
            }
            let rf = if let Some(first) = t.assignments.first() {
                first.len() as i64
            } else if t.replication_factor == -1 {
                default_rf
            } else {
                i64::from(t.replication_factor)
            };
            let live = image.live_brokers().count();
            if rf < 1 || rf as usize > live {
                outcomes.push(outcome(
                    &t.name,
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "Replication factor {rf} must be at least 1 and at most the {live} live brokers."
                    ),
                ));
                continue;
            }
            if let Some(m) = t
                .configs
                .iter()
                .find_map(|(k, v)| topic_config::validate(k, v).err())
                .or_else(|| {
                    let all = t.configs.iter().cloned().collect();
                    topic_config::validate_together(&all, &self.config).err()
                })
            {
                outcomes.push(outcome(&t.name, ResponseError::InvalidConfig, m));
                continue;
            }
            let id = random_topic_id();
            outcomes.push(TopicOutcome {
                name: t.name.clone(),
                topic_id: id,
                error: 0,
                message: None,
                partitions,
                replication_factor: rf as i16,
            });
            if validate_only {
                continue;
            }
            let placed = if t.assignments.is_empty() {
                self.place(image, 0, partitions, rf as usize)
            } else {
                Some(t.assignments.clone())
            };
            let Some(placement) = placed else {
                continue; // unreachable: rf was checked against the live brokers
            };
            let mut recs = vec![MetadataRecord::new(Record::Topic(TopicRecord {
                name: t.name.clone(),
                topic_id: id.to_vec(),
            }))];
            recs.extend(
                placement
                    .into_iter()
                    .enumerate()
                    .map(|(p, replicas)| new_partition(image, replicas).to_record(&id, p as i32)),
            );
            recs.extend(
                t.configs
                    .iter()
                    .map(|(k, v)| config_record(&t.name, k, Some(v.clone()))),
            );
            for r in &recs {
                image.apply(0, r);
            }
            records.extend(recs);
        }
        (records, MetadataOpResult::Topics(outcomes))
    }

    pub(super) fn delete_topics(
        &mut self,
        image: &mut MetadataImage,
        topics: Vec<TopicRef>,
    ) -> (Vec<MetadataRecord>, MetadataOpResult) {
        let mut records = Vec::new();
        let mut outcomes = Vec::new();
        for t in topics {
            let found = match &t {
                TopicRef::Name(n) => image.topic(n).map(|i| (i.name.clone(), i.id)),
                TopicRef::Id(id) => image.topic_by_id(id).map(|i| (i.name.clone(), i.id)),
            };
            let Some((name, id)) = found else {
                outcomes.push(match t {
                    TopicRef::Name(n) => outcome(
                        &n,
                        ResponseError::UnknownTopicOrPartition,
                        "This server does not host this topic.".into(),
                    ),
                    // as Kafka's controller: an id it does not know is UNKNOWN_TOPIC_ID
                    TopicRef::Id(id) => TopicOutcome {
                        topic_id: id,
                        ..outcome(
                            "",
                            ResponseError::UnknownTopicId,
                            "This server does not host this topic ID.".into(),
                        )
                    },
                });
                continue;
            };
            if crate::metadata::is_internal(&name) {
                outcomes.push(outcome(
                    &name,
                    ResponseError::InvalidTopicException,
                    "Internal topics cannot be deleted.".into(),
                ));
                continue;
            }
            let r = MetadataRecord::new(Record::RemoveTopic(RemoveTopicRecord {
                topic_id: id.to_vec(),
            }));
            image.apply(0, &r);
            records.push(r);
            outcomes.push(TopicOutcome {
                name,
                topic_id: id,
                ..Default::default()
            });
        }
        (records, MetadataOpResult::Topics(outcomes))
    }

    pub(super) fn create_partitions(
        &mut self,
        image: &mut MetadataImage,
        topics: Vec<NewPartitions>,
        validate_only: bool,
    ) -> (Vec<MetadataRecord>, MetadataOpResult) {
        let mut records = Vec::new();
        let mut outcomes = Vec::new();
        let mut budget = PartitionBudget::new(image, &self.config);
        for NewPartitions {
            topic: name,
            count,
            assignments,
        } in topics
        {
            if crate::metadata::is_internal(&name) {
                outcomes.push(outcome(
                    &name,
                    ResponseError::InvalidRequest,
                    format!("Internal topic '{name}' cannot get more partitions."),
                ));
                continue;
            }
            let Some(t) = image.topic(&name).cloned() else {
                outcomes.push(outcome(
                    &name,
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic '{name}' does not exist."),
                ));
                continue;
            };
            if count <= t.partitions {
                outcomes.push(outcome(
                    &name,
                    ResponseError::InvalidPartitions,
                    format!(
                        "Topic currently has {} partitions, {count} would not be an increase.",
                        t.partitions
                    ),
                ));
                continue;
            }
            if let Err(m) = budget.take(i64::from(count - t.partitions)) {
                outcomes.push(outcome(&name, ResponseError::InvalidPartitions, m));
                continue;
            }
            // new partitions get as many replicas as the topic's first partition
            let rf = t.parts.first().map_or(1, |p| p.replicas.len().max(1));
            let adding = count - t.partitions;
            if !assignments.is_empty() {
                let checked = if assignments.len() != adding as usize {
                    Err(format!(
                        "Increasing the number of partitions by {adding} but {} assignments provided.",
                        assignments.len()
                    ))
                } else {
                    check_assignments(image, &assignments, Some(rf))
                };
                if let Err(m) = checked {
                    outcomes.push(outcome(&name, ResponseError::InvalidReplicaAssignment, m));
                    continue;
                }
            }
            let placed = if assignments.is_empty() {
                self.place(image, t.partitions, adding, rf)
            } else {
                Some(assignments)
            };
            let Some(placement) = placed else {
                outcomes.push(outcome(
                    &name,
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "The topic's replication factor {rf} exceeds the {} live brokers.",
                        image.live_brokers().count()
                    ),
                ));
                continue;
            };
            outcomes.push(TopicOutcome {
                name: name.clone(),
                topic_id: t.id,
                partitions: count,
                ..Default::default()
            });
            if validate_only {
                continue;
            }
            for (i, replicas) in placement.into_iter().enumerate() {
                let r = new_partition(image, replicas).to_record(&t.id, t.partitions + i as i32);
                image.apply(0, &r);
                records.push(r);
            }
        }
        (records, MetadataOpResult::Topics(outcomes))
    }

    pub(super) fn alter_configs(
        &mut self,
        image: &mut MetadataImage,
        changes: Vec<ConfigChange>,
        validate_only: bool,
    ) -> (Vec<MetadataRecord>, MetadataOpResult) {
        let mut records = Vec::new();
        let mut outcomes = Vec::new();
        for mut c in changes {
            for (k, v) in c.set.iter_mut() {
                if let Some(v) = v {
                    *v = topic_config::normalize(k, v);
                }
            }
            if crate::metadata::is_internal(&c.topic) {
                outcomes.push(outcome(
                    &c.topic,
                    ResponseError::InvalidRequest,
                    format!("Internal topic '{}' cannot be reconfigured.", c.topic),
                ));
                continue;
            }
            let Some(t) = image.topic(&c.topic) else {
                outcomes.push(outcome(
                    &c.topic,
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic '{}' does not exist.", c.topic),
                ));
                continue;
            };
            // DELETE of a name no topic can have changes nothing, as in Kafka (no
            // record; validation sees only the values that are set)
            if let Some(m) = c.set.iter().find_map(|(k, v)| match v {
                Some(v) => topic_config::validate(k, v).err(),
                None => None,
            }) {
                outcomes.push(outcome(&c.topic, ResponseError::InvalidConfig, m));
                continue;
            }
            let mut target: BTreeMap<String, Option<String>> = BTreeMap::new();
            if c.replace_all {
                for k in t.configs.keys() {
                    target.insert(k.clone(), None);
                }
            }
            for (k, v) in &c.set {
                target.insert(k.clone(), v.clone());
            }
            let mut after = t.configs.clone();
            for (k, v) in &target {
                match v {
                    Some(v) => after.insert(k.clone(), v.clone()),
                    None => after.remove(k),
                };
            }
            if let Err(m) = topic_config::validate_together(&after, &self.config) {
                outcomes.push(outcome(&c.topic, ResponseError::InvalidConfig, m));
                continue;
            }
            outcomes.push(TopicOutcome {
                name: c.topic.clone(),
                topic_id: t.id,
                ..Default::default()
            });
            if validate_only {
                continue;
            }
            let target: Vec<_> = target
                .into_iter()
                .filter(|(k, v)| v.is_some() || t.configs.contains_key(k))
                .collect();
            for (k, v) in target {
                let r = config_record(&c.topic, &k, v);
                image.apply(0, &r);
                records.push(r);
            }
        }
        (records, MetadataOpResult::Topics(outcomes))
    }
}
