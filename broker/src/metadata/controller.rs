//! The single-node controller, owned by shard 0: validates topic and config changes against
//! its authoritative image, appends them as one batch to the metadata log
//! (`<data_dir>/__cluster_metadata-0`), waits until durable, then broadcasts the records to
//! every shard. Validation and the append happen before the first `.await`, so concurrent
//! requests are serialized exactly in log order.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use prost::Message;
use sluice_proto::batch::{build_batch, decode_records, SimpleRecord};
use sluice_proto::metadata::{
    ConfigRecord, MetadataRecord, PartitionRecord, ProducerIdsRecord, Record, RemoveTopicRecord,
    TopicRecord,
};
use sluice_storage::{LogConfig, PartitionLog, ShardStorage};

use super::image::{MetadataImage, TopicId};
use super::topic_config;
use crate::errors::now_ms;
use crate::shard::{Limits, ShardCtx};

/// Directory name of the metadata log inside the data dir.
pub(crate) const METADATA_LOG_DIR: &str = "__cluster_metadata-0";
/// Producer ids are handed out from blocks of this size, one record per block.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// A topic to create.
#[derive(Debug, Clone)]
pub(crate) struct NewTopic {
    pub(crate) name: String,
    pub(crate) partitions: i32,
    pub(crate) replication_factor: i16,
    pub(crate) configs: Vec<(String, String)>,
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
        topics: Vec<(String, i32)>,
        validate_only: bool,
    },
    AlterConfigs {
        changes: Vec<ConfigChange>,
        validate_only: bool,
    },
    AllocateProducerId,
}

/// Per-topic (or per-resource) outcome.
#[derive(Debug, Clone, Default)]
pub(crate) struct TopicOutcome {
    pub(crate) name: String,
    pub(crate) topic_id: TopicId,
    pub(crate) error: i16,
    pub(crate) message: Option<String>,
    pub(crate) partitions: i32,
}

#[derive(Debug, Clone)]
pub(crate) enum MetadataOpResult {
    Topics(Vec<TopicOutcome>),
    ProducerId(i64),
    Failed(i16, String),
}

/// Owned by shard 0; never crosses cores.
pub(crate) struct Controller {
    log: PartitionLog,
    image: RefCell<MetadataImage>,
    /// Producer ids handed out in memory; `image.next_producer_id` is the durable block end.
    next_pid: RefCell<i64>,
}

/// New partitions one request may still create: bounded per request
/// (`request.partitions.max`) and by the broker's total (`broker.partitions.max`).
struct PartitionBudget {
    request_left: i64,
    broker_left: i64,
}

impl PartitionBudget {
    fn new(image: &MetadataImage, limits: &Limits) -> Self {
        let held: i64 = image.topics().map(|t| i64::from(t.partitions)).sum();
        Self {
            request_left: limits.request_partitions_max,
            broker_left: limits.broker_partitions_max - held,
        }
    }

    fn take(&mut self, n: i64) -> Result<(), String> {
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

fn random_topic_id() -> TopicId {
    let mut id: TopicId = rand::random();
    while id == [0; 16] {
        id = rand::random(); // the all-zero id means "no id" in Kafka's protocol
    }
    // RFC 4122 version 4 bits, as Kafka's Uuid.randomUuid.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

fn outcome(name: &str, error: ResponseError, message: String) -> TopicOutcome {
    TopicOutcome {
        name: name.to_string(),
        error: error.code(),
        message: Some(message),
        ..Default::default()
    }
}

impl Controller {
    /// Opens the metadata log and replays it. Returns the controller and the full record list.
    pub(crate) async fn load(
        storage: &Rc<ShardStorage>,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Controller> {
        let log = PartitionLog::open(
            storage,
            data_dir.join(METADATA_LOG_DIR),
            LogConfig {
                retention_ms: -1,
                retention_bytes: -1,
                ..LogConfig::default()
            },
        )
        .await?;
        let mut image = MetadataImage::default();
        let mut offset = log.log_start_offset();
        let end = log.log_end_offset();
        while offset < end {
            let batches = log.read(offset, end, 1 << 20, true).await?;
            if batches.is_empty() {
                break;
            }
            for batch in &batches {
                for rec in decode_records(batch)? {
                    offset = rec.offset + 1;
                    if let Some(v) = rec.value {
                        let r = MetadataRecord::decode(v).map_err(|e| {
                            anyhow::anyhow!("metadata record at {}: {e}", rec.offset)
                        })?;
                        image.apply(&r);
                    }
                }
            }
        }
        let next = image.next_producer_id;
        Ok(Controller {
            log,
            image: RefCell::new(image),
            next_pid: RefCell::new(next),
        })
    }

    /// Records that rebuild the current state on a shard.
    pub(crate) fn snapshot(&self) -> Vec<MetadataRecord> {
        self.image.borrow().to_records()
    }

    pub(crate) async fn close(&self) {
        if let Err(e) = self.log.close().await {
            tracing::warn!(error = %e, "closing the metadata log");
        }
    }

    /// Validates and appends `op`; the returned future completes after the records are
    /// durable and applied on every shard.
    pub(crate) fn start(
        &self,
        ctx: &Rc<ShardCtx>,
        op: MetadataOp,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = MetadataOpResult>>> {
        let (records, result) = {
            let mut image = self.image.borrow_mut();
            match op {
                MetadataOp::CreateTopics {
                    topics,
                    validate_only,
                } => self.create_topics(&mut image, ctx, topics, validate_only),
                MetadataOp::DeleteTopics { topics } => self.delete_topics(&mut image, topics),
                MetadataOp::CreatePartitions {
                    topics,
                    validate_only,
                } => self.create_partitions(&mut image, &ctx.limits, topics, validate_only),
                MetadataOp::AlterConfigs {
                    changes,
                    validate_only,
                } => self.alter_configs(&mut image, changes, validate_only),
                MetadataOp::AllocateProducerId => {
                    let mut next = self.next_pid.borrow_mut();
                    let pid = *next;
                    *next += 1;
                    let mut recs = Vec::new();
                    if *next > image.next_producer_id {
                        let r = MetadataRecord::new(Record::ProducerIds(ProducerIdsRecord {
                            next_producer_id: pid + PRODUCER_ID_BLOCK,
                        }));
                        image.apply(&r);
                        recs.push(r);
                    }
                    (recs, MetadataOpResult::ProducerId(pid))
                }
            }
        };
        if records.is_empty() {
            return Box::pin(async move { result });
        }
        let values: Vec<Vec<u8>> = records.iter().map(|r| r.encode_to_vec()).collect();
        let now = now_ms();
        let simple: Vec<SimpleRecord<'_>> = values
            .iter()
            .map(|v| SimpleRecord {
                key: None,
                value: Some(v),
                timestamp: now,
                headers: &[],
            })
            .collect();
        let batch: Bytes = build_batch(0, &simple);
        let appended = self.log.append(batch, now);
        let log = self.log.clone();
        let ctx = ctx.clone();
        Box::pin(async move {
            let info = match appended {
                Ok(info) => info,
                Err(e) => {
                    return MetadataOpResult::Failed(
                        crate::errors::storage_error_code(&e),
                        e.to_string(),
                    )
                }
            };
            if let Err(e) = log.wait_durable(info.last_offset).await {
                return MetadataOpResult::Failed(
                    crate::errors::storage_error_code(&e),
                    e.to_string(),
                );
            }
            ctx.broadcast_apply(records).await;
            result
        })
    }

    fn create_topics(
        &self,
        image: &mut MetadataImage,
        ctx: &ShardCtx,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> (Vec<MetadataRecord>, MetadataOpResult) {
        let mut records = Vec::new();
        let mut outcomes = Vec::new();
        let default_partitions = ctx.config.int("num.partitions") as i32;
        let mut budget = PartitionBudget::new(image, &ctx.limits);
        for t in topics {
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
            let partitions = if t.partitions == -1 {
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
            if t.replication_factor != -1 && t.replication_factor != 1 {
                outcomes.push(outcome(
                    &t.name,
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "Replication factor {} is larger than the 1 available broker.",
                        t.replication_factor
                    ),
                ));
                continue;
            }
            if let Some(m) = t
                .configs
                .iter()
                .find_map(|(k, v)| topic_config::validate(k, v).err())
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
            });
            if validate_only {
                continue;
            }
            let mut recs = vec![MetadataRecord::new(Record::Topic(TopicRecord {
                name: t.name.clone(),
                topic_id: id.to_vec(),
            }))];
            recs.extend((0..partitions).map(|p| partition_record(&id, p)));
            recs.extend(
                t.configs
                    .iter()
                    .map(|(k, v)| config_record(&t.name, k, Some(v.clone()))),
            );
            for r in &recs {
                image.apply(r);
            }
            records.extend(recs);
        }
        (records, MetadataOpResult::Topics(outcomes))
    }

    fn delete_topics(
        &self,
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
                let name = match t {
                    TopicRef::Name(n) => n,
                    TopicRef::Id(_) => String::new(),
                };
                outcomes.push(outcome(
                    &name,
                    ResponseError::UnknownTopicOrPartition,
                    "This server does not host this topic.".into(),
                ));
                continue;
            };
            if super::is_internal(&name) {
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
            image.apply(&r);
            records.push(r);
            outcomes.push(TopicOutcome {
                name,
                topic_id: id,
                ..Default::default()
            });
        }
        (records, MetadataOpResult::Topics(outcomes))
    }

    fn create_partitions(
        &self,
        image: &mut MetadataImage,
        limits: &Limits,
        topics: Vec<(String, i32)>,
        validate_only: bool,
    ) -> (Vec<MetadataRecord>, MetadataOpResult) {
        let mut records = Vec::new();
        let mut outcomes = Vec::new();
        let mut budget = PartitionBudget::new(image, limits);
        for (name, count) in topics {
            if super::is_internal(&name) {
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
            outcomes.push(TopicOutcome {
                name: name.clone(),
                topic_id: t.id,
                partitions: count,
                ..Default::default()
            });
            if validate_only {
                continue;
            }
            for p in t.partitions..count {
                let r = partition_record(&t.id, p);
                image.apply(&r);
                records.push(r);
            }
        }
        (records, MetadataOpResult::Topics(outcomes))
    }

    fn alter_configs(
        &self,
        image: &mut MetadataImage,
        changes: Vec<ConfigChange>,
        validate_only: bool,
    ) -> (Vec<MetadataRecord>, MetadataOpResult) {
        let mut records = Vec::new();
        let mut outcomes = Vec::new();
        for c in changes {
            if super::is_internal(&c.topic) {
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
            if let Some(m) = c.set.iter().find_map(|(k, v)| match v {
                Some(v) => topic_config::validate(k, v).err(),
                None => topic_config::topic_setting(k)
                    .is_none()
                    .then(|| format!("unknown topic config '{k}'")),
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
            outcomes.push(TopicOutcome {
                name: c.topic.clone(),
                topic_id: t.id,
                ..Default::default()
            });
            if validate_only {
                continue;
            }
            for (k, v) in target {
                let r = config_record(&c.topic, &k, v);
                image.apply(&r);
                records.push(r);
            }
        }
        (records, MetadataOpResult::Topics(outcomes))
    }
}

fn partition_record(id: &TopicId, p: i32) -> MetadataRecord {
    MetadataRecord::new(Record::Partition(PartitionRecord {
        topic_id: id.to_vec(),
        partition_id: p,
        replicas: Vec::new(),
        leader: 0,
        leader_epoch: 0,
    }))
}

fn config_record(topic: &str, name: &str, value: Option<String>) -> MetadataRecord {
    MetadataRecord::new(Record::Config(ConfigRecord {
        resource_type: 2,
        resource_name: topic.to_string(),
        name: name.to_string(),
        value,
    }))
}

#[cfg(test)]
mod tests {
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
