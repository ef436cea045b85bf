//! The metadata image: topics, partition counts and topic configs, derived by applying
//! metadata records in log order. Each shard owns its own copy (never shared); shard 0's
//! controller keeps the authoritative one it validates changes against.

use std::collections::{BTreeMap, HashMap};

use sluice_proto::metadata::{MetadataRecord, Record, TopicRecord};

/// A topic id: 16 random bytes, as Kafka's topic UUIDs.
pub(crate) type TopicId = [u8; 16];

/// One topic as the image knows it.
#[derive(Debug, Clone)]
pub(crate) struct TopicInfo {
    pub(crate) name: String,
    pub(crate) id: TopicId,
    pub(crate) partitions: i32,
    /// Topic-level overrides only; defaults come from the broker config.
    pub(crate) configs: BTreeMap<String, String>,
}

/// What applying a record changed, for the shard to act on.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    PartitionAdded {
        topic: String,
        id: TopicId,
        partition: i32,
    },
    TopicRemoved {
        topic: String,
        id: TopicId,
        partitions: i32,
    },
    ConfigChanged {
        topic: String,
    },
}

/// Owned by one shard; never crosses cores (changes arrive as records).
#[derive(Debug, Default, Clone)]
pub(crate) struct MetadataImage {
    topics: HashMap<String, TopicInfo>,
    names_by_id: HashMap<TopicId, String>,
    pub(crate) next_producer_id: i64,
}

pub(crate) fn topic_id_of(bytes: &[u8]) -> Option<TopicId> {
    bytes.try_into().ok()
}

impl MetadataImage {
    pub(crate) fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.get(name)
    }
    pub(crate) fn topic_by_id(&self, id: &TopicId) -> Option<&TopicInfo> {
        self.names_by_id.get(id).and_then(|n| self.topics.get(n))
    }
    pub(crate) fn topics(&self) -> impl Iterator<Item = &TopicInfo> {
        self.topics.values()
    }

    /// Applies one record; unknown references are ignored (the log is the truth).
    pub(crate) fn apply(&mut self, record: &MetadataRecord) -> Vec<Change> {
        let Some(r) = &record.record else {
            return Vec::new();
        };
        match r {
            Record::Topic(TopicRecord { name, topic_id }) => {
                if let Some(id) = topic_id_of(topic_id) {
                    self.names_by_id.insert(id, name.clone());
                    self.topics.insert(
                        name.clone(),
                        TopicInfo {
                            name: name.clone(),
                            id,
                            partitions: 0,
                            configs: BTreeMap::new(),
                        },
                    );
                }
                Vec::new()
            }
            Record::Partition(p) => {
                let Some(id) = topic_id_of(&p.topic_id) else {
                    return Vec::new();
                };
                let Some(name) = self.names_by_id.get(&id).cloned() else {
                    return Vec::new();
                };
                let Some(t) = self.topics.get_mut(&name) else {
                    return Vec::new();
                };
                if p.partition_id < t.partitions {
                    return Vec::new();
                }
                t.partitions = p.partition_id + 1;
                vec![Change::PartitionAdded {
                    topic: name,
                    id,
                    partition: p.partition_id,
                }]
            }
            Record::Config(c) => {
                let Some(t) = self.topics.get_mut(&c.resource_name) else {
                    return Vec::new();
                };
                match &c.value {
                    Some(v) => t.configs.insert(c.name.clone(), v.clone()),
                    None => t.configs.remove(&c.name),
                };
                vec![Change::ConfigChanged {
                    topic: c.resource_name.clone(),
                }]
            }
            Record::RemoveTopic(r) => {
                let Some(id) = topic_id_of(&r.topic_id) else {
                    return Vec::new();
                };
                let Some(name) = self.names_by_id.remove(&id) else {
                    return Vec::new();
                };
                match self.topics.remove(&name) {
                    Some(t) => vec![Change::TopicRemoved {
                        topic: name,
                        id,
                        partitions: t.partitions,
                    }],
                    None => Vec::new(),
                }
            }
            Record::ProducerIds(p) => {
                self.next_producer_id = self.next_producer_id.max(p.next_producer_id);
                Vec::new()
            }
        }
    }

    /// Records that rebuild this image from nothing (a snapshot for a freshly started shard).
    pub(crate) fn to_records(&self) -> Vec<MetadataRecord> {
        use sluice_proto::metadata::{ConfigRecord, PartitionRecord, ProducerIdsRecord};
        let mut out = Vec::new();
        let mut topics: Vec<_> = self.topics.values().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        for t in topics {
            out.push(MetadataRecord::new(Record::Topic(TopicRecord {
                name: t.name.clone(),
                topic_id: t.id.to_vec(),
            })));
            for p in 0..t.partitions {
                out.push(MetadataRecord::new(Record::Partition(PartitionRecord {
                    topic_id: t.id.to_vec(),
                    partition_id: p,
                    replicas: Vec::new(),
                    leader: 0,
                    leader_epoch: 0,
                })));
            }
            for (k, v) in &t.configs {
                out.push(MetadataRecord::new(Record::Config(ConfigRecord {
                    resource_type: 2,
                    resource_name: t.name.clone(),
                    name: k.clone(),
                    value: Some(v.clone()),
                })));
            }
        }
        out.push(MetadataRecord::new(Record::ProducerIds(
            ProducerIdsRecord {
                next_producer_id: self.next_producer_id,
            },
        )));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::metadata::{ConfigRecord, PartitionRecord, RemoveTopicRecord};

    fn topic(name: &str, id: u8, parts: i32) -> Vec<MetadataRecord> {
        let mut v = vec![MetadataRecord::new(Record::Topic(TopicRecord {
            name: name.into(),
            topic_id: vec![id; 16],
        }))];
        for p in 0..parts {
            v.push(MetadataRecord::new(Record::Partition(PartitionRecord {
                topic_id: vec![id; 16],
                partition_id: p,
                ..Default::default()
            })));
        }
        v
    }

    #[test]
    fn apply_and_snapshot_roundtrip() {
        let mut img = MetadataImage::default();
        let mut changes = Vec::new();
        for r in topic("a", 1, 3).iter().chain(topic("b", 2, 1).iter()) {
            changes.extend(img.apply(r));
        }
        assert_eq!(changes.len(), 4);
        img.apply(&MetadataRecord::new(Record::Config(ConfigRecord {
            resource_type: 2,
            resource_name: "a".into(),
            name: "retention.ms".into(),
            value: Some("5".into()),
        })));
        let removed = img.apply(&MetadataRecord::new(Record::RemoveTopic(
            RemoveTopicRecord {
                topic_id: vec![2; 16],
            },
        )));
        assert!(matches!(
            &removed[..],
            [Change::TopicRemoved { partitions: 1, .. }]
        ));
        assert!(img.topic("b").is_none());
        let mut copy = MetadataImage::default();
        for r in img.to_records() {
            copy.apply(&r);
        }
        let a = copy.topic("a").unwrap(); // ok: test
        assert_eq!(a.partitions, 3);
        assert_eq!(a.configs.get("retention.ms").map(String::as_str), Some("5"));
        assert_eq!(copy.topic_by_id(&[1; 16]).unwrap().name, "a"); // ok: test
    }
}
